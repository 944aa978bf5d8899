"""A sweep's runs on disk, and who starts the points that wait their turn (docs/sweeps.md).

`sweep.json` lists the points; each point is an ordinary run directory, written at submit time,
whose ledger is empty until the point starts. `--max-parallel N` keeps at most N points *active*
(an attempt reserved, queued or running, and the run not over). Whoever ends a run of the sweep
(the final attempt's end hook, a watcher, `cancel`) calls `advance`: under the sweep's lock it
counts the active points and reserves the next waiting ones (a reserved attempt counts as
active, so two callers never start more than N); then, with every lock released, it submits
them. A point started from a job's end hook waits (`afterany`) for that job, so its allocation
never overlaps the one it replaces.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import filelock

from ftslurm.atomic import write_json_atomic
from ftslurm.backends.base import Scheduler
from ftslurm.chain.actions import make_scheduler, submit_attempt
from ftslurm.chain.ledger import Ledger
from ftslurm.chain.outcome import Action, AttemptStatus, RunStatus
from ftslurm.chain.policy import decide
from ftslurm.chain.runstate import RunState
from ftslurm.chain.settings import load_settings
from ftslurm.errors import FtslurmError, UsageError
from ftslurm.rundir import RunDir, SweepDir
from ftslurm.spec.sweep import SweepPlan

log = logging.getLogger(__name__)

FORMAT = "ftslurm-sweep"
VERSION = 1
#: How long `advance` waits for the sweep lock (it is held for file reads and writes only).
LOCK_TIMEOUT_S = 60.0


class Phase(str, Enum):
    """Where a point of a sweep is."""

    WAITING = "waiting"   # its turn has not come (nothing reserved or submitted)
    ACTIVE = "active"     # an attempt reserved, queued or running; the run not over
    ENDED = "ended"       # the run is over (finished, failed or cancelled)

    def __str__(self) -> str:
        return self.value


def phase(state: RunState) -> Phase:
    """The phase of a point from its run's state."""
    if state.run_status is not RunStatus.RUNNING:
        return Phase.ENDED
    return Phase.ACTIVE if state.attempts else Phase.WAITING


@dataclass(frozen=True)
class Point:
    """One point of a sweep as recorded in sweep.json."""

    number: int
    name: str
    values: dict[str, str]

    @property
    def label(self) -> str:
        return " ".join(f"{key}={value}" for key, value in self.values.items())


@dataclass(frozen=True)
class Sweep:
    """A sweep directory's manifest."""

    root: Path
    source: str
    name: str
    max_parallel: int | None
    created_at: float
    points: tuple[Point, ...]
    cancelled: bool = False

    def run_dir(self, point: Point) -> Path:
        return SweepDir(self.root).point(point.name).root

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": VERSION, "source": self.source, "name": self.name,
            "max_parallel": self.max_parallel, "created_at": self.created_at,
            "cancelled": self.cancelled,
            "points": [{"number": p.number, "name": p.name, "values": p.values}
                       for p in self.points],
        }


def manifest_for(plan: SweepPlan) -> Sweep:
    """The manifest of a planned sweep."""
    return Sweep(
        root=plan.sweep_dir, source=str(plan.source), name=plan.name,
        max_parallel=plan.max_parallel, created_at=time.time(),
        points=tuple(Point(p.number, p.name, dict(p.values)) for p in plan.points))


def save_sweep(sweep: Sweep) -> None:
    """Write sweep.json atomically."""
    sweep.root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(SweepDir(sweep.root).manifest, sweep.to_json(), sync_dir=True)


def load_sweep(root: str | Path) -> Sweep:
    """Read `<root>/sweep.json`; UsageError naming the file when it is unusable."""
    path = SweepDir(root).manifest
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("format") != FORMAT or doc.get("version", 0) > VERSION:
            raise ValueError("not an ftslurm sweep file of a version this ftslurm reads")
        points = tuple(Point(int(p["number"]), str(p["name"]),
                             {str(k): str(v) for k, v in p["values"].items()})
                       for p in doc["points"])
        return Sweep(Path(root).resolve(), str(doc["source"]), str(doc["name"]),
                     doc.get("max_parallel"), float(doc["created_at"]), points,
                     bool(doc.get("cancelled", False)))
    except FileNotFoundError:
        raise UsageError(f"no sweep in {root} ({path.name} is missing)") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise UsageError(f"{path} is unusable: {error}",
                         hint="it is written by `ftslurm submit --sweep`; move a broken one "
                              "aside") from None


def _lock(root: Path) -> filelock.FileLock:
    return filelock.FileLock(str(SweepDir(root).lock), timeout=LOCK_TIMEOUT_S)


def point_states(sweep: Sweep) -> dict[str, RunState | None]:
    """Each point's run state (None when its run dir has no ledger yet)."""
    states: dict[str, RunState | None] = {}
    for point in sweep.points:
        run_dir = sweep.run_dir(point)
        states[point.name] = (Ledger.open(run_dir).state() if RunDir(run_dir).ledger.exists()
                              else None)
    return states


def mark_cancelled(root: Path) -> Sweep:
    """Record that the whole sweep is cancelled: no waiting point starts any more."""
    with _lock(root):
        sweep = load_sweep(root)
        if not sweep.cancelled:
            sweep = Sweep(sweep.root, sweep.source, sweep.name, sweep.max_parallel,
                          sweep.created_at, sweep.points, cancelled=True)
            save_sweep(sweep)
        return sweep


def _reserve_turns(root: Path) -> tuple[Sweep, list[Point]]:
    """Under the sweep's lock: the waiting points whose turn it is, each with attempt 1 reserved
    (so it counts as active for the next caller)."""
    try:
        lock = _lock(root)
        lock.acquire()
    except filelock.Timeout:
        raise FtslurmError(f"{SweepDir(root).lock} stayed locked for {LOCK_TIMEOUT_S:.0f} s",
                           hint="another ftslurm process holds it") from None
    try:
        sweep = load_sweep(root)
        if sweep.cancelled:
            return sweep, []
        states = point_states(sweep)
        phases = {name: (phase(state) if state is not None else None)
                  for name, state in states.items()}
        active = sum(1 for p in phases.values() if p is Phase.ACTIVE)
        waiting = [point for point in sweep.points if phases[point.name] is Phase.WAITING]
        free = len(waiting) if sweep.max_parallel is None else sweep.max_parallel - active
        turns = waiting[:max(0, free)]
        for point in turns:
            Ledger.open(sweep.run_dir(point)).reserve(1)
        # An active point with nothing running or queued (a resumed point, a chain whose end
        # hook died) holds its slot: it goes on with its next attempt.
        idle = [point for point in sweep.points if phases[point.name] is Phase.ACTIVE
                and _idle(sweep.run_dir(point), states[point.name])]
        return sweep, turns + idle
    finally:
        lock.release()


def _idle(run_dir: Path, state: RunState | None) -> bool:
    """Nothing of the run is reserved, queued, running or ending (an end still provisional: its
    own hook queues what comes next). A reservation is being submitted by whoever made it; one
    whose submitter died is `ftslurm watch`'s to submit (`status` calls the run stalled)."""
    if state is None:
        return False
    return not any(a.status in (AttemptStatus.RESERVED, AttemptStatus.SUBMITTED,
                                AttemptStatus.RUNNING) or a.provisional for a in state.attempts)


def start_point(run_dir: Path, *, after: str | None = None,
                scheduler: Scheduler | None = None) -> str | None:
    """Submit a point's next attempt (its first, reserved by `advance`; or the next of a point
    that went idle): exactly once, like `ftslurm submit`, with one attempt queued behind it.
    Returns the job id or None."""
    from ftslurm.chain.hooks import ensure_queue  # hooks imports this module

    settings = load_settings(run_dir)
    ledger = Ledger.open(run_dir)
    state = ledger.state()
    scheduler = scheduler or make_scheduler(settings, since=state.created_at - 3600)
    decision = decide(state, settings.config, flag_exists=settings.flag_exists())
    if decision.action is not Action.SUBMIT or decision.attempt is None:
        return None
    job = submit_attempt(ledger, settings, scheduler, decision, after=after)
    if job is not None and settings.mode == "self":
        ensure_queue(settings, ledger, scheduler, behind=decision.attempt, job_id=job, depth=1)
    return job


def advance(root: str | Path, *, after: str | None = None,
            scheduler: Scheduler | None = None) -> list[tuple[Point, str | None]]:
    """Start the waiting points whose turn has come (at most `max_parallel` active). `after`:
    the job whose end frees the slot (the new point's first attempt waits for it). Returns the
    points started with their job ids; a point whose submission failed stays reserved, and the
    next `advance` or `ftslurm watch` submits it."""
    root = Path(root)
    sweep, turns = _reserve_turns(root)
    started: list[tuple[Point, str | None]] = []
    for point in turns:
        try:
            job = start_point(sweep.run_dir(point), after=after, scheduler=scheduler)
        except FtslurmError as error:
            print(f"ftslurm: sweep {root}: could not start point {point.number} "
                  f"({point.label}): {error}", flush=True)
            job = None
        else:
            print(f"ftslurm: sweep {root}: point {point.number} ({point.label}) started"
                  + (f" as job {job}" if job else ""), flush=True)
        started.append((point, job))
    return started


def reserved_unsubmitted(sweep: Sweep, states: dict[str, RunState | None]) -> list[Point]:
    """Points whose first attempt was reserved by `advance` but never submitted (the advancer
    died, or its sbatch failed): `ftslurm watch` submits them."""
    found = []
    for point in sweep.points:
        state = states.get(point.name)
        if state is not None and state.run_status is RunStatus.RUNNING and \
                len(state.attempts) == 1 and state.attempts[0].job_id is None:
            found.append(point)
    return found


def is_point_waiting(run_dir: str | Path, state: RunState) -> bool:
    """Whether the run is a sweep point whose turn has not come: nobody but `advance` may
    submit it."""
    settings_sweep = load_settings(run_dir).sweep_dir
    return settings_sweep is not None and phase(state) is Phase.WAITING


def sweeps_of(run_dirs: Sequence[Path]) -> list[Path]:
    """The sweep directories the runs belong to (each once, in order)."""
    found: dict[Path, None] = {}
    for run_dir in run_dirs:
        try:
            sweep_dir = load_settings(run_dir).sweep_dir
        except FtslurmError:
            continue
        if sweep_dir:
            found[Path(sweep_dir)] = None
    return list(found)


__all__ = [
    "Phase",
    "Point",
    "Sweep",
    "advance",
    "is_point_waiting",
    "load_sweep",
    "manifest_for",
    "mark_cancelled",
    "phase",
    "point_states",
    "reserved_unsubmitted",
    "save_sweep",
    "start_point",
    "sweeps_of",
]
