"""A sweep's runs on disk, and who starts the points that wait their turn (docs/sweeps.md).

`sweep.json` lists the points; each point is an ordinary run directory, written at submit time,
whose ledger is empty until the point starts. `--max-parallel N` keeps at most N points *busy*
(an attempt reserved, queued, running or ending, and the run not over). Whoever ends a run of
the sweep (the final attempt's end hook, a watcher, `cancel`) calls `advance`: under the sweep's
lock it counts the busy points and reserves the next attempt of the points whose turn it is (a
reservation makes a point busy, so racing callers never start more than N); then, with every
lock released, it submits them. An end hook frees its own run's slot only, and the point it
starts waits (`afterany`) for the hook's job; a point started otherwise waits for the last jobs
of the runs that ended in the last two minutes: a new point's allocation never overlaps the one
it replaces.
"""

from __future__ import annotations

import json
import logging
import time
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
#: A point started without an end hook waits for the last jobs of runs that ended this recently
#: (well within SLURM's default MinJobAge of 300 s, after which a job id is unknown).
RECENT_END_S = 120.0


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


@dataclass(frozen=True)
class Turns:
    """What `_reserve_turns` reserved: the points to submit now, and the jobs they must wait
    for (`afterany`)."""

    sweep: Sweep
    points: list[Point]
    after: str | None


def _ending_jobs(sweep: Sweep, states: dict[str, RunState | None], now: float) -> list[str]:
    """The last jobs of the SLURM points whose runs ended in the last RECENT_END_S: a run is
    over when its ledger says so, but its last job may still be in its end hook for a moment;
    a point started meanwhile waits for it (a job long gone needs no waiting, and the
    controller forgets it after MinJobAge)."""
    jobs = []
    for point in sweep.points:
        state = states.get(point.name)
        if state is None or phase(state) is not Phase.ENDED:
            continue
        started = [a for a in state.attempts if a.started_at is not None and a.job_id]
        if started and (started[-1].ended_at or now) >= now - RECENT_END_S and \
                load_settings(sweep.run_dir(point)).backend == "slurm":
            jobs.append(str(started[-1].job_id))
    return jobs


def _reserve_turns(root: Path, *, freed_by: str | None = None) -> Turns:
    """Under the sweep's lock: the points whose turn it is, each with its next attempt reserved
    (so it is busy for the next caller). Busy points (an attempt reserved, queued, running or
    ending) hold their slots; the others take the free ones in order: points that ran before
    and went idle (resumed, or their chain's hooks died), then waiting points. `freed_by`: the
    job of an end hook, which frees one slot only (its own run's): a second run ending at the
    same moment frees its own from its own hook, with its own job to wait for."""
    try:
        lock = _lock(root)
        lock.acquire()
    except filelock.Timeout:
        raise FtslurmError(f"{SweepDir(root).lock} stayed locked for {LOCK_TIMEOUT_S:.0f} s",
                           hint="another ftslurm process holds it") from None
    try:
        sweep = load_sweep(root)
        if sweep.cancelled:
            return Turns(sweep, [], None)
        states = point_states(sweep)
        phases = {name: (phase(state) if state is not None else None)
                  for name, state in states.items()}
        idle = [point for point in sweep.points if phases[point.name] is Phase.ACTIVE
                and _idle(states[point.name])]
        busy = sum(1 for p in phases.values() if p is Phase.ACTIVE) - len(idle)
        waiting = [point for point in sweep.points if phases[point.name] is Phase.WAITING]
        candidates = idle + waiting
        free = len(candidates) if sweep.max_parallel is None else sweep.max_parallel - busy
        if freed_by is not None:
            free = min(free, 1)
        turns = candidates[:max(0, free)]
        for point in turns:
            state = states[point.name]
            assert state is not None  # idle or waiting: its ledger exists
            Ledger.open(sweep.run_dir(point)).reserve(state.next_attempt)
        if freed_by is not None:
            after: str | None = freed_by
        else:
            after = ":".join(_ending_jobs(sweep, states, time.time())) or None
        return Turns(sweep, turns, after)
    finally:
        lock.release()


def _idle(state: RunState | None) -> bool:
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
    if settings.backend != "slurm":
        after = None  # the local backend's jobs are its own run dir's: nothing to wait for
    decision = decide(state, settings.config, flag_exists=settings.flag_exists())
    if decision.action is not Action.SUBMIT or decision.attempt is None:
        return None
    job = submit_attempt(ledger, settings, scheduler, decision, after=after)
    if job is not None and settings.mode == "self":
        ensure_queue(settings, ledger, scheduler, behind=decision.attempt, job_id=job, depth=1)
    return job


def advance(root: str | Path, *, after: str | None = None,
            scheduler: Scheduler | None = None) -> list[tuple[Point, str | None]]:
    """Start the points whose turn has come (at most `max_parallel` busy). `after`: the job of
    the end hook calling (its run's slot is the one freed; the new point's first attempt waits
    for that job). Without it every free slot is filled, each new point waiting for the SLURM
    jobs of runs that ended in the last RECENT_END_S. Returns the points started with their job
    ids; a point whose submission failed stays reserved (`ftslurm watch` submits it)."""
    root = Path(root)
    turns = _reserve_turns(root, freed_by=after)
    started: list[tuple[Point, str | None]] = []
    for point in turns.points:
        try:
            job = start_point(turns.sweep.run_dir(point), after=turns.after, scheduler=scheduler)
        except FtslurmError as error:
            print(f"ftslurm: sweep {root}: could not start point {point.number} "
                  f"({point.label}): {error}", flush=True)
            job = None
        else:
            print(f"ftslurm: sweep {root}: point {point.number} ({point.label}) started"
                  + (f" as job {job}" if job else "")
                  + (f" (after job(s) {turns.after.replace(':', ', ')})" if turns.after else ""),
                  flush=True)
        started.append((point, job))
    return started


__all__ = [
    "RECENT_END_S",
    "Phase",
    "Point",
    "Sweep",
    "Turns",
    "advance",
    "load_sweep",
    "manifest_for",
    "mark_cancelled",
    "phase",
    "point_states",
    "save_sweep",
    "start_point",
]
