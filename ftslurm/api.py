"""ftslurm's Python API: the operations of the command line, for notebooks and sweep drivers
(docs/python-api.md). The `ftslurm` commands are a thin layer over it.

    import ftslurm

    run = ftslurm.submit("job.yaml", max_failures=3)
    run.wait(timeout=3600)            # drives the run (repairs a stalled chain) until it ends
    print(run.status()["state"], run.report()["totals"]["goodput"])

    sweep = ftslurm.submit("job.yaml", sweep={"env.LR": ["1e-3", "3e-4"]}, max_parallel=2)
    for run in ftslurm.runs(sweep.root):
        print(run.summary())

Every call reads and writes the run directory only (no daemon); errors are `FtslurmError`s with
a message and a hint (a bad spec: `UsageError`, exit code 2 on the command line).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftslurm.backends.base import JobState
from ftslurm.chain import hooks
from ftslurm.chain.actions import (
    apply_job_states,
    make_scheduler,
    query_scheduler,
    stop_run,
    submit_attempt,
    sync_with_scheduler,
    withdraw_leftovers,
)
from ftslurm.chain.fleet import Fleet, FleetPoll, RunRow, find_runs, run_row
from ftslurm.chain.goodput import run_cost
from ftslurm.chain.incident import build_incident, read_incident
from ftslurm.chain.ledger import Ledger, LedgerLockError
from ftslurm.chain.loop import Watcher
from ftslurm.chain.outcome import Action, AttemptStatus, RunStatus
from ftslurm.chain.policy import decide
from ftslurm.chain.run import PreparedRun, check_reuse, prepare_run, prepare_spec, write_run
from ftslurm.chain.runstate import AttemptView, RunState
from ftslurm.chain.settings import ChainSettings, load_settings
from ftslurm.chain.sweep import advance, manifest_for, mark_cancelled, save_sweep
from ftslurm.chain.view import SchedulerView, status_data
from ftslurm.errors import FtslurmError, UsageError
from ftslurm.rundir import RunDir, SweepDir
from ftslurm.spec.sweep import SweepPlan, placeholders, plan_sweep

#: How long `Run.cancel` waits for the cancelled jobs to be reported ended.
CANCEL_WAIT_S = 180.0
#: How long `Run.status` waits for the scheduler before answering from the run directory.
SYNC_TIMEOUT_S = 1.0


class Run:
    """One run directory: an auto-resuming chain of attempts."""

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        path = Path(run_dir)
        if not RunDir(path).is_run:
            name = RunDir(path).chain_settings.name
            raise UsageError(f"{run_dir}: not a run directory (no {name})",
                             hint="give a directory made by `ftslurm submit`")
        self.run_dir = path.resolve()

    def __repr__(self) -> str:
        return f"Run({str(self.run_dir)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and other.run_dir == self.run_dir

    def __hash__(self) -> int:
        return hash(self.run_dir)

    @property
    def settings(self) -> ChainSettings:
        """How the run's attempts are submitted (chain.json)."""
        return load_settings(self.run_dir)

    def state(self) -> RunState:
        """The ledger's view (no scheduler call)."""
        return Ledger.open(self.run_dir).state()

    def summary(self) -> RunRow:
        """One line's worth (`ftslurm ls`): state, attempts, failures left, last cause, goodput,
        ETA, stalled. From the run directory only."""
        return run_row(self.run_dir)

    def status(self, *, sync: bool = True, timeout: float = SYNC_TIMEOUT_S) -> dict[str, Any]:
        """What `ftslurm status --json` prints: the run and every attempt, brought up to date
        from the scheduler when it answers within `timeout` seconds (else marked stale)."""
        settings = self.settings
        state, jobs, view = synced_state(self.run_dir, settings, sync=sync, timeout=timeout)
        return status_data(state, settings, jobs, scheduler=view)

    def poll(self) -> dict[str, Any]:
        """One poll of the auto-resume loop (`ftslurm watch --once`): record what the scheduler
        says, submit the next attempt or stop the run, repair a stalled chain."""
        update = Watcher(self.run_dir).poll_once()
        return status_data(update.state, self.settings, update.jobs)

    def wait(self, timeout: float | None = None, *, interval: float = 10.0) -> dict[str, Any]:
        """Poll (as `poll`) until the run has ended and its last attempts are recorded; returns
        the final status. TimeoutError after `timeout` seconds (the run goes on)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            data = self.poll()
            if data["state"] != RunStatus.RUNNING and not any(
                    row["status"] in (AttemptStatus.SUBMITTED, AttemptStatus.RUNNING)
                    or row["provisional"] for row in data["attempts"]):
                return data
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"{self.run_dir} is still {data['state']} after {timeout} s")
            pause = interval if deadline is None else min(interval, deadline - time.monotonic())
            time.sleep(max(0.0, pause))  # the poll interval of a wait, bounded by its deadline

    def cancel(self, *, wait_s: float = CANCEL_WAIT_S) -> dict[str, Any]:
        """Cancel the run: record the request, cancel every job in flight, wait (at most
        `wait_s`) for them to be reported ended. Returns the final status."""
        return cancel_run(self.run_dir, wait_s=wait_s)

    def explain(self, attempt: int | None = None) -> dict[str, Any]:
        """Why `attempt` (default: the last that ended) ended: the incident record that
        `ftslurm explain --json` prints (culprit, victims, hang stacks, node evidence)."""
        state = self.state()
        view = pick_attempt(self.run_dir, state, attempt)
        record = read_incident(self.run_dir, view.number)
        if record is None:
            previous = read_incident(self.run_dir, view.number - 1) if view.number > 1 else None
            record = build_incident(self.run_dir, view.number, view=view, previous=previous,
                                    written_by="explain")
        return record

    def report(self) -> dict[str, Any]:
        """What the run cost: the document `ftslurm report --json` prints."""
        return run_cost(self.run_dir, self.state()).to_json()

    def logs(self, attempt: int | None = None) -> str:
        """The output of `attempt` (default: the latest that has output)."""
        number, path = log_file(self.run_dir, self.settings, self.state(), attempt)
        try:
            return path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            raise FtslurmError(f"attempt {number} has no output yet ({path})") from None


@dataclass(frozen=True)
class Sweep:
    """A sweep directory: one run per point (docs/sweeps.md)."""

    root: Path

    def runs(self) -> list[Run]:
        """Every point's run, in point order."""
        from ftslurm.chain.sweep import load_sweep

        sweep = load_sweep(self.root)
        return [Run(sweep.run_dir(point)) for point in sweep.points]

    def summary(self) -> list[RunRow]:
        """One row per point (`ftslurm ls`)."""
        return [run.summary() for run in self.runs()]

    def poll(self) -> FleetPoll:
        """One fleet poll of every point (`ftslurm watch DIR`, one iteration)."""
        return Fleet([self.root]).poll_once()

    def wait(self, timeout: float | None = None, *, interval: float = 10.0) -> list[RunRow]:
        """Poll every point until all have ended; TimeoutError after `timeout` seconds."""
        return wait_fleet([self.root], timeout=timeout, interval=interval)

    def cancel(self, *, wait_s: float = CANCEL_WAIT_S) -> list[dict[str, Any]]:
        """Cancel every point (waiting points never start)."""
        return cancel_all([self.root], wait_s=wait_s)


def _sweep_options(sweep: Mapping[str, Sequence[Any]] | Sequence[str] | None) -> list[str]:
    if not sweep:
        return []
    if isinstance(sweep, Mapping):
        import yaml

        return [f"{key}={yaml.safe_dump(list(values), default_flow_style=True).strip()}"
                for key, values in sweep.items()]
    return [str(option) for option in sweep]


def submit(
    spec: str | os.PathLike[str],
    *,
    max_failures: int | None = None,
    sweep: Mapping[str, Sequence[Any]] | Sequence[str] | None = None,
    max_parallel: int | None = None,
    backend: str | None = None,
    resume: bool = False,
) -> Run | Sweep:
    """Submit the job spec at `spec` (`ftslurm submit`): a `Run`, or a `Sweep` when the spec has
    a `sweep:` section or `sweep` is given ({"env.LR": ["1e-3", "3e-4"]} or
    ["env.LR=1e-3,3e-4"]). With SLURM the chain then keeps itself going; with the local backend
    call `wait()` to drive it. Raises UsageError (nothing written or submitted) on bad input."""
    plan = plan_sweep(spec, _sweep_options(sweep), max_parallel)
    if plan is None:
        if max_parallel is not None:
            raise UsageError("max_parallel is for sweeps",
                             hint="add --sweep KEY=v1,v2 or a sweep: section, or leave it out")
        found = placeholders(spec)
        if found:
            raise UsageError(f"{spec}: {{{{{found[0]}}}}} outside a sweep",
                             hint="sweep that key (--sweep KEY=v1,v2) or write the value")
        prepared = prepare_run(spec, max_failures=max_failures, backend=backend)
        check_reuse(prepared, resume=resume)
        submit_prepared(prepared, resume=resume)
        return Run(prepared.settings.run_dir)
    prepared_points = prepare_sweep(plan, max_failures=max_failures, backend=backend,
                                    resume=resume)
    start_sweep(plan, prepared_points, resume=resume)
    return Sweep(plan.sweep_dir)


def prepare_sweep(plan: SweepPlan, *, max_failures: int | None = None,
                  backend: str | None = None, resume: bool = False,
                  watch: bool = False) -> list[PreparedRun]:
    """Every point prepared and checked (nothing written): one bad point refuses them all."""
    prepared = []
    for point in plan.points:
        one = prepare_spec(plan.spec(point), point.text, max_failures=max_failures,
                           backend=backend, watch=watch)
        one = _in_sweep(one, plan.sweep_dir)
        check_reuse(one, resume=resume)
        prepared.append(one)
    if not resume and SweepDir(plan.sweep_dir).is_sweep:
        raise UsageError(f"{plan.sweep_dir} already holds a sweep",
                         hint="pass --resume to continue it, or set run_dir: (or name:) for a "
                              "new sweep")
    return prepared


def _in_sweep(prepared: PreparedRun, sweep_dir: Path) -> PreparedRun:
    from dataclasses import replace

    return replace(prepared, settings=replace(prepared.settings, sweep_dir=str(sweep_dir)))


def start_sweep(plan: SweepPlan, prepared: Sequence[PreparedRun], *, resume: bool = False
                ) -> None:
    """Write every point's run dir (ledger last), then sweep.json, then start the points whose
    turn it is."""
    for one in prepared:
        if resume and one.existing is not None and \
                one.existing.run_status is RunStatus.FINISHED:
            continue  # --resume goes on with the points that did not finish
        write_run(one, resume=resume)
    save_sweep(manifest_for(plan))
    advance(plan.sweep_dir)


def submit_prepared(prepared: PreparedRun, *, resume: bool = False) -> tuple[str | None, str]:
    """Write the run dir and submit the first attempt (with one queued behind it when the
    chain is self-chaining). Returns (job id or None, what happened)."""
    settings = prepared.settings
    ledger = write_run(prepared, resume=resume)
    scheduler = make_scheduler(settings, since=time.time() - 3600)
    state = ledger.state()
    decision = decide(state, settings.config, flag_exists=settings.flag_exists())
    if decision.action is Action.STOP:
        state = stop_run(ledger, scheduler, decision)
        return None, f"nothing submitted: the run is {state.run_status} ({decision.reason})"
    if decision.action is Action.SUBMIT and decision.attempt is not None:
        job = submit_attempt(ledger, settings, scheduler, decision)
        if settings.mode == "self" and job is not None:
            # One attempt queued behind the first from the start: a first job killed before its
            # chain-start ran still leaves the run going.
            hooks.ensure_queue(settings, ledger, scheduler, behind=decision.attempt, job_id=job,
                               depth=1)
        return job, f"attempt {decision.attempt}: job {job}"
    return None, f"nothing submitted: {decision.reason}"


def runs(*dirs: str | os.PathLike[str]) -> list[Run]:
    """Every run at or under `dirs` (default: the current directory), sorted by path."""
    return [Run(path) for path in find_runs(dirs or (".",))]


def synced_state(run_dir: Path, settings: ChainSettings, *, sync: bool, timeout: float
                 ) -> tuple[RunState, dict[str, JobState], SchedulerView]:
    """The run's state, brought up to date from the scheduler when it answers within `timeout`
    seconds; otherwise the run directory's view, marked stale. Never blocks longer: the query
    runs in a daemon thread that is left behind when the scheduler does not answer."""
    ledger = Ledger.open(run_dir)
    state = ledger.state()
    if not sync:
        return state, {}, SchedulerView(asked=False)
    if not any(a.in_flight or a.provisional for a in state.attempts):
        return state, {}, SchedulerView()
    scheduler = make_scheduler(settings, since=state.created_at - 3600)
    answer: dict[str, Any] = {}

    def query() -> None:
        try:
            answer["jobs"] = query_scheduler(scheduler, state)
        except FtslurmError as error:
            answer["error"] = error

    worker = threading.Thread(target=query, daemon=True, name="status-sync")
    worker.start()
    worker.join(timeout)
    if "jobs" not in answer:
        error = answer.get("error")
        why = (f"no answer within {timeout:g} s" if error is None
               else str(getattr(error, "message", error)))
        return state, {}, SchedulerView(stale=True, error=why)
    jobs = answer["jobs"]
    try:
        state = apply_job_states(ledger, settings, jobs, source="status")
    except LedgerLockError as error:  # a teammate without write access still sees the jobs
        return state, jobs, SchedulerView(error=f"not recorded: {error.message}")
    return state, jobs, SchedulerView()


def cancel_run(run_dir: Path, *, wait_s: float = CANCEL_WAIT_S,
               on_wait: Any = None) -> dict[str, Any]:
    """Record the cancel request, cancel every job in flight, wait for them (at most `wait_s`).
    The request is recorded first, so a job that starts meanwhile skips its launch; no lock is
    held while the scheduler is called. `on_wait(text)` is told which jobs are awaited."""
    settings = load_settings(run_dir)
    ledger = Ledger.open(run_dir)
    scheduler = make_scheduler(settings, since=ledger.state().created_at - 3600)
    state = ledger.state()
    if state.run_status is not RunStatus.RUNNING and not any(a.in_flight for a in state.attempts):
        return status_data(state, settings)
    if state.run_status is RunStatus.RUNNING:
        state = ledger.record_cancel("cancelled by `ftslurm cancel`")
    for view in state.attempts:
        if view.status is AttemptStatus.RUNNING and view.job_id:
            scheduler.cancel(view.job_id)
    stop_run(ledger, scheduler, decide(state, settings.config))
    deadline = time.monotonic() + wait_s
    while True:
        state, _ = sync_with_scheduler(ledger, settings, scheduler, ledger.state(),
                                       source="cancel")
        if state.never_started:
            # a submission in flight ended (its submitter recorded a job, or died)
            state = withdraw_leftovers(ledger, scheduler, "cancelled by `ftslurm cancel`")
        left = [a for a in state.attempts if a.in_flight or a.provisional]
        if not left or time.monotonic() > deadline:
            break
        if on_wait is not None:
            on_wait(f"waiting for job(s) {', '.join(a.job_id or '?' for a in left)}")
        time.sleep(1.0)  # polling the scheduler, bounded by the deadline
    if settings.sweep_dir and SweepDir(settings.sweep_dir).is_sweep:
        advance(settings.sweep_dir)  # the slot is free for the sweep's next point
    data = status_data(state, settings)
    data["not_ended_yet"] = [a.job_id for a in left]
    return data


def cancel_all(dirs: Iterable[str | os.PathLike[str]], *, wait_s: float = CANCEL_WAIT_S
               ) -> list[dict[str, Any]]:
    """Cancel every run under `dirs`; the sweeps among them first start no waiting point."""
    run_dirs = find_runs(dirs)
    for sweep_dir in {load_settings(r).sweep_dir for r in run_dirs} - {None}:
        assert sweep_dir is not None
        if SweepDir(sweep_dir).is_sweep:
            mark_cancelled(Path(sweep_dir))
    return [cancel_run(run_dir, wait_s=wait_s) for run_dir in run_dirs]


def wait_fleet(dirs: Sequence[str | os.PathLike[str]], *, timeout: float | None = None,
               interval: float = 10.0) -> list[RunRow]:
    """Fleet polls (one scheduler query each) until every run under `dirs` has ended."""
    fleet = Fleet(dirs)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        poll = fleet.poll_once()
        if poll.done:
            return poll.rows
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"runs under {', '.join(map(str, dirs))} still going after "
                               f"{timeout} s")
        pause = interval if deadline is None else min(interval, deadline - time.monotonic())
        time.sleep(max(0.0, pause))  # the poll interval, bounded by the deadline


def pick_attempt(run_dir: Path, state: RunState, number: int | None) -> AttemptView:
    """The attempt asked for, or the last that ended (or has an incident record)."""
    if number is not None:
        view = state.attempt(number)
        if view is None:
            known = f"attempts 1 to {state.attempts[-1].number}" if state.attempts else "none yet"
            raise UsageError(f"{run_dir}: no attempt {number} ({known})")
        return view
    for view in reversed(state.attempts):
        ended = view.status is AttemptStatus.ENDED and view.started_at is not None
        if ended or RunDir(run_dir).incident(view.number).exists():
            return view
    raise UsageError(f"{run_dir}: no attempt has ended yet",
                     hint="`--attempt N` explains a running attempt from what its files say "
                          "so far")


def log_file(run_dir: Path, settings: ChainSettings, state: RunState, attempt: int | None
             ) -> tuple[int, Path]:
    """The output file of `attempt` (default: the latest that started; a queued successor that
    was withdrawn at the run's end never wrote any)."""
    views = [a for a in state.attempts if a.job_id and (attempt is None or a.number == attempt)]
    if attempt is None:
        views = [a for a in views if a.started_at is not None] or views
    if not views:
        raise UsageError(f"{run_dir}: no attempt {attempt} with a job" if attempt
                         else f"{run_dir}: no attempt has been submitted yet")
    view = views[-1]
    assert view.job_id is not None  # views with a job only
    if settings.backend == "local":
        return view.number, RunDir(run_dir).attempt_log(view.number)
    return view.number, RunDir(run_dir).job_log(view.job_id)


__all__ = [
    "CANCEL_WAIT_S",
    "SYNC_TIMEOUT_S",
    "Run",
    "Sweep",
    "cancel_all",
    "cancel_run",
    "log_file",
    "pick_attempt",
    "prepare_sweep",
    "runs",
    "start_sweep",
    "submit",
    "submit_prepared",
    "synced_state",
    "wait_fleet",
]
