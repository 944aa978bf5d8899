"""Many runs at once: find the runs under directories, one summary row per run (`ftslurm ls`),
and a fleet poll that brings every run up to date with ONE scheduler query (`ftslurm watch DIR`).

A row is read from the run directory alone (no scheduler call): the ledger, the last attempt's
incident record, and the progress files for goodput and ETA. The fleet poll is the watch loop's
poll for many runs: one batched `Scheduler.states()` for every job in flight in any of them
(per backend), then each run records, decides and acts as `Watcher` does, and every sweep whose
slot freed starts its next points.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ftslurm.atomic import write_json_atomic
from ftslurm.backends.base import JobState, Scheduler
from ftslurm.chain.actions import make_scheduler, query_scheduler
from ftslurm.chain.goodput import run_cost
from ftslurm.chain.incident import incident_cause
from ftslurm.chain.ledger import Ledger
from ftslurm.chain.loop import Watcher, WatchUpdate
from ftslurm.chain.outcome import AttemptStatus, Outcome, RunStatus
from ftslurm.chain.runstate import RunState
from ftslurm.chain.settings import ChainSettings, load_settings
from ftslurm.chain.sweep import Phase, advance, load_sweep, phase
from ftslurm.chain.view import stall
from ftslurm.errors import FtslurmError, UsageError
from ftslurm.rundir import RunDir, SweepDir
from ftslurm.slurm.client import SlurmCommandError

#: How deep `find_runs` looks under each directory given (a sweep of sweeps is 2 deep).
MAX_DEPTH = 4


def find_runs(dirs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Every run directory at or under `dirs` (at most MAX_DEPTH levels down), sorted, each once.
    UsageError (exit 2) for a directory that does not exist."""
    found: dict[Path, None] = {}
    for given in dirs:
        root = Path(given)
        if not root.is_dir():
            raise UsageError(f"{given}: no such directory",
                             hint="give a run directory or a directory holding runs")
        _walk(root.resolve(), 0, found)
    return sorted(found)


def _walk(folder: Path, depth: int, found: dict[Path, None]) -> None:
    if RunDir(folder).is_run:
        found[folder] = None
        return  # a run's own folders hold no runs
    if depth >= MAX_DEPTH:
        return
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
            _walk(Path(entry.path), depth + 1, found)


@dataclass(frozen=True)
class RunRow:
    """One run in a line: what `ftslurm ls --json` prints for it."""

    run_dir: str
    #: running, finished, failed, cancelled; `waiting` for a sweep point whose turn has not
    #: come; `broken` when the run dir cannot be read (`error` says why).
    state: str
    #: Attempts that started (queued ones are not counted until they start).
    attempts: int = 0
    failures_left: int | None = None
    #: Why the last attempt that did not finish ended (its incident record), else its reason.
    last_cause: str | None = None
    goodput: float | None = None
    eta: float | None = None
    last_step: int | None = None
    total_steps: int | None = None
    #: Since when nothing is running or queued, and the command that repairs it; None if not.
    #: (A sweep's waiting point is stalled when nothing of its sweep is in flight.)
    stalled: dict[str, Any] | None = None
    #: The job of the attempt in flight and its status (submitted = queued, running).
    job_id: str | None = None
    job_status: str | None = None
    sweep: str | None = None
    #: When the run's latest attempt ended (epoch s), if one did.
    last_end: float | None = None
    reason: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _last_cause(run_dir: Path, state: RunState) -> str | None:
    """Why the last attempt that did not finish ended: its incident record's cause (`ftslurm
    explain`), else the ledger's reason."""
    ended = [a for a in state.attempts if a.status is AttemptStatus.ENDED and a.started_at
             and a.outcome is not Outcome.FINISHED]
    if not ended:
        return None
    last = ended[-1]
    return incident_cause(run_dir, last.number) or last.reason


#: The format of `summary.json`; a cache written by another version is recomputed.
SUMMARY_FORMAT = "ftslurm.summary/1"


#: A sweep's waiting points are stalled when nothing of the sweep has been in flight for this
#: long (the end hook that starts the next point runs a moment after its run's end).
SWEEP_STALL_GRACE_S = 120.0
#: How long a running run's kept row stands in for it while its ledger, incident records and
#: launcher status files are unchanged (its step logs grow every second; reading them all is
#: what costs): its goodput, step and ETA may be this old in `ls` and `watch DIR`.
RUNNING_ROW_TTL_S = 60.0


def _inputs_key(run_dir: Path) -> list[list[Any]]:
    """(name, size, mtime_ns) of every file a row is read from."""
    key = []
    for path in RunDir(run_dir).summary_inputs():
        try:
            info = path.stat()
        except OSError:
            continue
        key.append([str(path.relative_to(run_dir)), info.st_size, info.st_mtime_ns])
    return key


def _state_key(inputs: list[list[Any]]) -> list[list[Any]]:
    """The inputs but the progress reports: what changes when the run's state does."""
    steps = RunDir(".").step_logs.name
    return [entry for entry in inputs if not str(entry[0]).startswith(steps)]


def cached_row(run_dir: Path, *, now: float | None = None) -> RunRow | None:
    """The run's row kept in `summary.json`: an ended run's while none of its inputs changed; a
    running run's for RUNNING_ROW_TTL_S while only its progress reports grew."""
    try:
        doc = json.loads(RunDir(run_dir).summary.read_text(encoding="utf-8"))
        if doc.get("format") != SUMMARY_FORMAT:
            return None
        inputs = _inputs_key(run_dir)
        row = RunRow(**{**doc["row"], "run_dir": str(run_dir)})
        if doc.get("inputs") == inputs:
            return row
        now = time.time() if now is None else now
        fresh = now - float(doc.get("written_at", 0.0)) < RUNNING_ROW_TTL_S
        if row.state == "running" and fresh and _state_key(doc["inputs"]) == _state_key(inputs):
            return row
        return None
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        return None


def save_row(run_dir: Path, row: RunRow, *, now: float | None = None) -> None:
    """Keep the run's row (best effort: a reader without write access just recomputes)."""
    if row.state in ("waiting", "broken"):
        return
    with contextlib.suppress(OSError):
        write_json_atomic(RunDir(run_dir).summary, {
            "format": SUMMARY_FORMAT, "written_at": time.time() if now is None else now,
            "inputs": _inputs_key(run_dir), "row": row.to_json()})


def keep_row(run_dir: str | os.PathLike[str]) -> None:
    """Compute and keep an ended run's row now (its last end hook), so that `ftslurm ls` over a
    finished sweep reads one small file per run."""
    run_row(Path(run_dir), use_cache=True)


def run_row(run_dir: Path, *, state: RunState | None = None,
            settings: ChainSettings | None = None, now: float | None = None,
            use_cache: bool = True) -> RunRow:
    """The row of one run, from its run directory only; never raises for a broken run dir. The
    row is kept in `summary.json` and read from there while the run's files are unchanged, or
    for RUNNING_ROW_TTL_S while only a running run's progress reports grew (the goodput of a
    long run reads every progress report)."""
    if use_cache and state is None:
        cached = cached_row(run_dir)
        if cached is not None:
            return cached
    row = _compute_row(run_dir, state=state, settings=settings, now=now)
    if use_cache:
        save_row(run_dir, row)
    return row


def _compute_row(run_dir: Path, *, state: RunState | None, settings: ChainSettings | None,
                 now: float | None) -> RunRow:
    try:
        settings = settings or load_settings(run_dir)
        state = state or Ledger(run_dir).state()
    except FtslurmError as error:
        return RunRow(str(run_dir), "broken", error=error.message)
    now = time.time() if now is None else now
    waiting = settings.sweep_dir is not None and phase(state) is Phase.WAITING
    # the attempt running, else the next one queued
    running = [a for a in state.in_flight if a.status is AttemptStatus.RUNNING]
    queued = running or list(state.in_flight)
    current = queued[0] if queued else None
    goodput = eta = None
    last_step = total = None
    if any(a.started_at for a in state.attempts):
        try:
            cost = run_cost(run_dir, state, now=now)
        except Exception:  # a hand-edited file must not hide the row
            cost = None
        if cost is not None:
            goodput = cost.totals.get("goodput")
            eta = cost.eta.finish_at if cost.eta is not None else None
            last_step, total = cost.last_step, cost.total_steps
    return RunRow(
        run_dir=str(run_dir),
        state="waiting" if waiting else str(state.run_status),
        attempts=sum(1 for a in state.attempts if a.started_at is not None),
        failures_left=state.failures_left(settings.config.max_failures),
        last_cause=_last_cause(run_dir, state),
        goodput=goodput, eta=eta, last_step=last_step, total_steps=total,
        stalled=None if waiting else stall(state, settings, now=now),
        job_id=current.job_id if current else None,
        job_status=str(current.status) if current else None,
        sweep=settings.sweep_dir,
        last_end=max((a.ended_at for a in state.attempts if a.ended_at), default=None),
        reason=state.end_reason or state.cancel_requested,
    )


def rows(run_dirs: Sequence[Path]) -> list[RunRow]:
    """The rows of `run_dirs`, in order. The waiting points of a sweep with nothing in flight
    are stalled: no end hook is left to start them."""
    now = time.time()
    found = [run_row(run_dir, now=now) for run_dir in run_dirs]
    busy = {row.sweep for row in found if row.sweep and row.job_id}
    last_end: dict[str, float] = {}
    for row in found:
        if row.sweep:
            last_end[row.sweep] = max(last_end.get(row.sweep, 0.0), row.last_end or 0.0)
    return [dataclasses.replace(row, stalled={
                "since": last_end[row.sweep], "repair": f"ftslurm watch --once {row.sweep}"})
            if row.state == "waiting" and row.sweep and row.sweep not in busy
            and now - last_end[row.sweep] > SWEEP_STALL_GRACE_S else row for row in found]


@dataclass
class FleetPoll:
    """What one fleet poll saw and did."""

    rows: list[RunRow]
    #: run dir -> its poll's update (None for a run that could not be read).
    updates: dict[str, WatchUpdate | None] = field(default_factory=dict)
    #: How many `Scheduler.states()` queries the poll made (one per backend with jobs).
    queries: int = 0
    scheduler_error: str | None = None
    started_points: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        """Every run over, with nothing in flight."""
        return all(u is not None and u.state.run_status is not RunStatus.RUNNING
                   and not any(a.in_flight or a.provisional for a in u.state.attempts)
                   for u in self.updates.values()) or not self.updates


class _PrefetchedScheduler:
    """A scheduler whose `states()` answers from one batched query made for the whole fleet;
    every other operation goes to the real scheduler."""

    def __init__(self, real: Scheduler, jobs: dict[str, JobState]) -> None:
        self._real = real
        self._jobs = jobs

    def states(self, job_ids: Iterable[str]) -> dict[str, JobState]:
        return {job_id: self._jobs[job_id] for job_id in job_ids if job_id in self._jobs}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class Fleet:
    """Drives every run under some directories: one batched scheduler query per poll."""

    def __init__(self, dirs: Sequence[str | os.PathLike[str]], *,
                 scheduler_for: Callable[[ChainSettings], Scheduler] | None = None) -> None:
        self.dirs = [Path(d) for d in dirs]
        self._scheduler_for = scheduler_for
        self._schedulers: dict[str, Scheduler] = {}

    def _scheduler(self, settings: ChainSettings, since: float) -> Scheduler:
        if settings.backend not in self._schedulers:
            self._schedulers[settings.backend] = (
                self._scheduler_for(settings) if self._scheduler_for is not None
                else make_scheduler(settings, since=since))
        return self._schedulers[settings.backend]

    def poll_once(self) -> FleetPoll:
        """Record, decide and act for every run, after ONE `states()` query per backend."""
        run_dirs = find_runs(self.dirs)
        loaded: dict[Path, tuple[ChainSettings, RunState]] = {}
        for run_dir in run_dirs:
            try:
                loaded[run_dir] = (load_settings(run_dir), Ledger.open(run_dir).state())
            except FtslurmError:
                continue
        since = min((state.created_at for _, state in loaded.values()), default=time.time())
        # One query per backend for every job in flight in any run.
        wanted: dict[str, list[RunState]] = {}
        for settings, state in loaded.values():
            wanted.setdefault(settings.backend, []).append(state)
        poll = FleetPoll(rows=[])
        jobs: dict[str, dict[str, JobState]] = {}
        for backend, states in wanted.items():
            settings = next(s for s, _ in loaded.values() if s.backend == backend)
            scheduler = self._scheduler(settings, since - 3600)
            merged = _merged(states)
            if not merged.attempts:
                jobs[backend] = {}
                continue
            try:
                jobs[backend] = query_scheduler(scheduler, merged)
                poll.queries += 1
            except SlurmCommandError as error:
                poll.scheduler_error = str(error)
                jobs[backend] = {}
        sweeps: dict[str, None] = {}
        for run_dir, (settings, _state) in loaded.items():
            real = self._scheduler(settings, since - 3600)
            prefetched = _PrefetchedScheduler(real, jobs.get(settings.backend, {}))
            try:
                watcher = Watcher(run_dir, scheduler=prefetched, advance_sweep=False)
                poll.updates[str(run_dir)] = watcher.poll_once()
            except FtslurmError:
                poll.updates[str(run_dir)] = None
            if settings.sweep_dir:
                sweeps[settings.sweep_dir] = None
        for sweep_dir in sweeps:
            if not SweepDir(sweep_dir).is_sweep:
                continue
            try:
                started = advance(sweep_dir)
            except FtslurmError as error:
                poll.scheduler_error = poll.scheduler_error or str(error)
                continue
            poll.started_points += [f"{sweep_dir}/{point.name}" for point, _ in started]
        poll.rows = rows(run_dirs)
        return poll


def _merged(states: Sequence[RunState]) -> RunState:
    """One RunState holding every run's attempts (for the one batched query)."""
    first = states[0]
    attempts = tuple(a for state in states for a in state.attempts)
    return dataclasses.replace(first, attempts=attempts)


def sweep_summary(sweep_dir: Path) -> dict[str, Any]:
    """A sweep's manifest with each point's phase (for `ls` and the API)."""
    sweep = load_sweep(sweep_dir)
    points = []
    for point in sweep.points:
        run_dir = sweep.run_dir(point)
        try:
            state = Ledger.open(run_dir).state()
            where = str(phase(state))
        except FtslurmError:
            where = "broken"
        points.append({"number": point.number, "name": point.name, "values": point.values,
                       "run_dir": str(run_dir), "phase": where})
    return {"sweep_dir": str(sweep.root), "max_parallel": sweep.max_parallel,
            "cancelled": sweep.cancelled, "points": points}


__all__ = [
    "MAX_DEPTH",
    "RUNNING_ROW_TTL_S",
    "SUMMARY_FORMAT",
    "SWEEP_STALL_GRACE_S",
    "Fleet",
    "FleetPoll",
    "RunRow",
    "cached_row",
    "find_runs",
    "keep_row",
    "rows",
    "run_row",
    "save_row",
    "sweep_summary",
]
