"""How a run looks to people and to programs: the status table (rich), its JSON twin, the live
view of `ftslurm watch` on a terminal, and plain timestamped lines otherwise."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ftslurm.backends.base import JobState
from ftslurm.chain.goodput import run_cost, summary_line
from ftslurm.chain.incident import incident_cause
from ftslurm.chain.loop import WatchUpdate
from ftslurm.chain.outcome import AttemptStatus, Outcome, RunStatus
from ftslurm.chain.policy import exclusions
from ftslurm.chain.runstate import RunState
from ftslurm.chain.settings import ChainSettings
from ftslurm.signals import signal_text

_OUTCOME_STYLE: dict[str, str] = {
    Outcome.FINISHED: "bold green", Outcome.STOPPED: "cyan", Outcome.PREEMPTED: "yellow",
    Outcome.TIMEOUT: "yellow", Outcome.NODE_FAIL: "magenta", Outcome.FAILED: "red",
    Outcome.FATAL: "bold red", Outcome.CANCELLED: "dim",
}
_RUN_STYLE: dict[str, str] = {
    RunStatus.RUNNING: "bold cyan", RunStatus.FINISHED: "bold green",
    RunStatus.FAILED: "bold red", RunStatus.CANCELLED: "bold yellow",
}


#: How long a watch-loop run may have nothing running or queued before `status` calls it stalled:
#: the loop submits the next attempt at its next poll (at most a minute away).
LOOP_STALL_GRACE_S = 120.0


@dataclass(frozen=True)
class SchedulerView:
    """How fresh the scheduler's side of a status is: `asked` False with --no-sync; `stale` when
    the scheduler did not answer (the table is the run directory's view); `error` says why."""

    asked: bool = True
    stale: bool = False
    error: str | None = None
    unreachable_since: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The `scheduler` object of `status --json`."""
        return {"asked": self.asked, "stale": self.stale, "error": self.error,
                "unreachable_since": self.unreachable_since}


def stall(state: RunState, settings: ChainSettings, *, now: float | None = None
          ) -> dict[str, Any] | None:
    """A run that is not over with no attempt running or queued (and none being submitted) is
    stalled: nothing will start it again. Returns since when and the command that repairs it,
    or None."""
    if state.run_status is not RunStatus.RUNNING:
        return None
    if settings.sweep_dir is not None and not state.attempts:
        return None  # a sweep point waiting its turn: the sweep starts it (max_parallel)
    now = time.time() if now is None else now
    for view in state.attempts:
        if view.status in (AttemptStatus.SUBMITTED, AttemptStatus.RUNNING):
            return None
        if view.status is AttemptStatus.RESERVED and view.claimed(now):
            return None  # being submitted right now
    times = [t for a in state.attempts for t in (a.ended_at, a.reserved_at) if t]
    since = max(times, default=state.created_at)
    if settings.mode == "loop" and now - since < LOOP_STALL_GRACE_S:
        return None  # the loop submits at its next poll
    repair = (f"ftslurm watch --once {settings.run_dir}" if settings.mode == "self"
              else f"ftslurm watch {settings.run_dir}")
    return {"since": since, "repair": repair}


def _clock(at: float | None) -> str:
    if not at:
        return "-"
    same_day = time.localtime(at)[:3] == time.localtime()[:3]
    return time.strftime("%H:%M:%S" if same_day else "%m-%d %H:%M", time.localtime(at))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def attempt_rows(state: RunState, settings: ChainSettings,
                 jobs: Mapping[str, JobState] | None = None) -> list[dict[str, Any]]:
    """One dict per attempt: what `ftslurm status --json` prints under "attempts"."""
    jobs = jobs or {}
    rows = []
    now = time.time()
    for view in state.attempts:
        job = jobs.get(view.job_id or "")
        end = view.ended_at if view.status is AttemptStatus.ENDED else None
        started = view.started_at
        rows.append({
            "attempt": view.number,
            "job_id": view.job_id,
            "status": view.status,
            "scheduler_state": job.state if job is not None else view.scheduler_state,
            "nodes": list(view.nodes or (job.nodes if job is not None else ())),
            "start": started,
            "duration_s": None if started is None else (end or now) - started,
            "outcome": view.outcome.value if view.outcome is not None else None,
            "exit_code": view.exit_code,
            "signal": view.signal,
            "reason": view.reason or view.submit_error,
            "note": view.start_note,
            "submitted_by_hand": view.by_hand,
            # From the attempt's incident record, when one was written: "rank 3 @ n2: ValueError".
            "cause": incident_cause(settings.run_dir, view.number),
            "provisional": view.provisional,
            "counted_failure": view.counted_failure,
            "failures_left": settings.config.max_failures - view.consecutive_failures,
            "requeued_outcomes": list(view.requeued_outcomes),
            "blamed_nodes": list(view.blamed_nodes),
            "withdrawn": view.status is AttemptStatus.ENDED and started is None,
            "pending_reason": job.reason if job is not None and job.state == "PENDING"
            and job.reason not in (None, "", "None") else None,
        })
    return rows


def status_data(state: RunState, settings: ChainSettings,
                jobs: Mapping[str, JobState] | None = None, *,
                scheduler: SchedulerView | None = None) -> dict[str, Any]:
    """The whole status as JSON-ready data."""
    scheduler = scheduler or SchedulerView()
    return {
        "run_dir": settings.run_dir,
        "run_id": state.run_id,
        "state": state.run_status,
        "reason": state.end_reason or state.cancel_requested,
        "backend": settings.backend,
        "mode": settings.mode,
        "finished_flag": settings.flag_file,
        "flag_exists": settings.flag_exists(),
        "max_failures": settings.config.max_failures,
        "max_attempts": settings.config.max_attempts,
        "consecutive_failures": state.consecutive_failures,
        "failures_left": state.failures_left(settings.config.max_failures),
        "attempts_used": state.used_attempts,
        # One local node: nothing can be excluded there.
        "excluded_nodes": list(exclusions(state, settings.config))
        if settings.backend == "slurm" else [],
        "blamed_nodes": list(state.blamed_nodes),
        "last_progress": state.last_progress,
        "stalled": None if scheduler.stale else stall(state, settings),
        "scheduler": scheduler.to_json(),
        "goodput": _goodput(state, settings),
        "attempts": attempt_rows(state, settings, jobs),
    }


def _goodput(state: RunState, settings: ChainSettings) -> dict[str, Any]:
    """The run's goodput, time lost by cause and ETA in brief (`ftslurm report` has it all).
    The accounting never stops a status view: a failure is shown, not raised."""
    try:
        cost = run_cost(settings.run_dir, state).to_json()
    except Exception as error:  # a bug or a hand-edited file must not hide the run's status
        return {"goodput": None, "line": f"goodput not available: {error!r}"}
    return {"goodput": cost["totals"]["goodput"], "allocated_s": cost["totals"]["allocated_s"],
            "progress_known": cost["progress_known"], "lost_by_cause": cost["lost_by_cause"],
            "eta": cost["eta"], "total_steps": cost["total_steps"],
            "last_step": cost["last_step"], "line": summary_line(cost)}


def _row_cells(row: dict[str, Any]) -> list[Text]:
    outcome = row["outcome"] or (row["scheduler_state"] or row["status"]).lower()
    if row["withdrawn"]:
        outcome = "withdrawn"
    elif row["provisional"]:
        outcome += "?"
    if row["requeued_outcomes"]:
        outcome = "+".join(row["requeued_outcomes"]) + ", " + outcome
    style = _OUTCOME_STYLE.get(row["outcome"] or "", "cyan") if not row["withdrawn"] else "dim"
    code = "-" if row["exit_code"] is None else str(row["exit_code"])
    if row["signal"]:
        code += f" ({signal_text(row['signal'])})"
    counted = "yes" if row["counted_failure"] else ("no" if row["outcome"] else "-")
    reason = (row.get("cause") or row["reason"] or row.get("note")
              or ("submitted by hand" if row.get("submitted_by_hand") else "-"))
    if row["pending_reason"]:
        reason = f"pending: {row['pending_reason']}"
    if row["blamed_nodes"]:
        reason += f" [blamed {', '.join(row['blamed_nodes'])}]"
    cells = [str(row["attempt"]), row["job_id"] or "-", ",".join(row["nodes"]) or "-",
             _clock(row["start"]), _duration(row["duration_s"]), outcome, code, reason, counted,
             str(row["failures_left"])]
    # Text, not markup: reasons may hold brackets ("[blamed n1]") that rich would eat.
    return [Text(cell, style=style if index == 5 else "") for index, cell in enumerate(cells)]


def status_table(data: dict[str, Any]) -> Group:
    """The status as a rich renderable: a one-line summary and the attempts table."""
    state = data["state"]
    summary = Text.assemble(
        ("run ", ""), (state, _RUN_STYLE.get(state, "")),
        (f"  {data['reason']}" if data["reason"] else "", "dim"),
        f"\n{data['run_dir']}  ({data['backend']}, "
        f"{'self-chaining' if data['mode'] == 'self' else 'watch loop'})"
        f"\nattempts {data['attempts_used']}/{data['max_attempts']}, failures left "
        f"{data['failures_left']}/{data['max_failures']}"
        + (f", excluding {', '.join(data['excluded_nodes'])}" if data["excluded_nodes"] else "")
        + (", finished flag present" if data["flag_exists"] else ""),
    )
    if data.get("goodput") and data["attempts"]:
        summary.append(f"\n{data['goodput']['line']}", style="dim")
    scheduler, stalled = data["scheduler"], data["stalled"]
    if scheduler["stale"] or scheduler["error"]:
        summary.append(f"\nscheduler view stale: {scheduler['error']} (shown from the run "
                       "directory)", style="yellow")
    if scheduler["unreachable_since"]:
        summary.append(f"\nscheduler unreachable since {_clock(scheduler['unreachable_since'])}",
                       style="yellow")
    if stalled:
        summary.append(f"\nSTALLED: nothing running or queued since {_clock(stalled['since'])}; "
                       f"repair: {stalled['repair']}", style="bold red")
    table = Table(show_lines=False, header_style="bold")
    for name, justify in (("#", "right"), ("job", "left"), ("nodes", "left"),
                          ("start", "left"), ("took", "right"), ("outcome", "left"),
                          ("exit", "right"), ("reason", "left"), ("failure", "left"),
                          ("left", "right")):
        table.add_column(name, justify=justify, no_wrap=name != "reason",  # type: ignore[arg-type]
                         ratio=1 if name == "reason" else None)
    for row in data["attempts"]:
        table.add_row(*_row_cells(row))
    return Group(summary, table)


def print_status(data: dict[str, Any], console: Console | None = None) -> None:
    """Print the status table."""
    if console is None:
        console = Console()
        if not console.is_terminal:  # a file or a pipe: don't squeeze into 80 columns
            console = Console(width=140)
    console.print(status_table(data))


def _scheduler_view(update: WatchUpdate) -> SchedulerView:
    return SchedulerView(stale=update.scheduler_error is not None, error=update.scheduler_error,
                         unreachable_since=update.unreachable_since)


class LiveView:
    """`ftslurm watch` on a terminal: the status table, refreshed at every poll."""

    def __init__(self, settings: ChainSettings, console: Console | None = None) -> None:
        self.settings = settings
        self.last_event = "watching"
        self.live = Live(console=console or Console(), auto_refresh=False, transient=False)

    def __enter__(self) -> LiveView:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(None, None, None)

    def __call__(self, update: WatchUpdate) -> None:
        """Redraw after a poll."""
        if update.submitted or update.changed:
            self.last_event = f"{time.strftime('%H:%M:%S')} {update.decision.reason}"
        data = status_data(update.state, self.settings, update.jobs,
                           scheduler=_scheduler_view(update))
        footer = Text(f"last event: {self.last_event}", style="dim")
        self.live.update(Group(status_table(data), footer), refresh=True)


class PlainReporter:
    """`ftslurm watch` without a terminal: one timestamped line per change."""

    def __init__(self, settings: ChainSettings, stream: TextIO) -> None:
        self.settings = settings
        self.stream = stream
        self._seen: dict[int, tuple[object, ...]] = {}
        self._run: str | None = None
        self._unreachable = False

    def __call__(self, update: WatchUpdate) -> None:
        """Print what changed since the previous poll."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        data = status_data(update.state, self.settings, update.jobs)
        ended = False
        for row in data["attempts"]:
            key = (row["status"], row["scheduler_state"], row["outcome"], row["provisional"])
            if self._seen.get(row["attempt"]) == key:
                continue
            self._seen[row["attempt"]] = key
            what = row["outcome"] or (row["scheduler_state"] or row["status"]).lower()
            why = row.get("cause") or row["reason"]
            detail = f" ({why})" if row["outcome"] and why else ""
            ended = ended or (row["outcome"] is not None and not row["withdrawn"])
            print(f"{stamp} attempt {row['attempt']} job {row['job_id'] or '-'}: {what}{detail}"
                  f"; failures left {row['failures_left']}", file=self.stream, flush=True)
        if ended:  # what the run has cost so far, after each end
            print(f"{stamp} {data['goodput']['line']}", file=self.stream, flush=True)
        unreachable = update.unreachable_since is not None
        if unreachable != self._unreachable:
            self._unreachable = unreachable
            what = (f"scheduler unreachable since {_clock(update.unreachable_since)}: "
                    f"{update.scheduler_error}" if unreachable else "scheduler answers again")
            print(f"{stamp} {what}", file=self.stream, flush=True)
        if update.state.run_status != self._run:
            self._run = update.state.run_status
            reason = update.state.end_reason or update.decision.reason
            print(f"{stamp} run {self._run}: {reason}", file=self.stream, flush=True)


__all__ = ["LiveView", "PlainReporter", "SchedulerView", "attempt_rows", "print_status", "stall",
           "status_data", "status_table"]
