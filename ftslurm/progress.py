"""The workload's progress: `report_progress(step)` on the training side, what it leaves in the
run directory, and its reader for the goodput accounting (docs/goodput.md).

    from ftslurm import report_progress
    for step in range(start, total):
        train_step()
        report_progress(step + 1, total=total, checkpointed=saved_this_step)

Any rank may call it every step; only global rank 0's calls count, and outside a run
(`$FTSLURM_RUN_DIR` / `$FTSLURM_ATTEMPT` unset) it does nothing. A call costs about what
`RankMonitorClient.send_heartbeat()` costs: one `struct.pack_into` into a small file-backed
shared mapping (`RunDir.last_step_slot`, one per restart round), which keeps the latest report
even when the process dies the next instant (the kernel owns the page). A line goes to the
attempt's step log (`RunDir.step_log`) only when a second has passed since the last one, when a
checkpoint was saved, when the total changed, on the first call and at exit (`format_line`).
The same writes keep the chain's progress marker (`RunDir.progress`) at the step.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import mmap
import os
import struct
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ftslurm import env_vars
from ftslurm.atomic import write_atomic
from ftslurm.rundir import RunDir

__all__ = [
    "FLUSH_INTERVAL_S",
    "ProgressPoint",
    "ProgressReporter",
    "format_line",
    "read_reports",
    "read_step_log",
    "report_progress",
    "reporter_from_env",
]

#: At most one step-log line per this many seconds (checkpoints and exits are written at once).
FLUSH_INTERVAL_S = 1.0

#: The last-step slot: magic, version, time (epoch s), step, checkpointed step and total (-1 for
#: none), written with one `pack_into`. A reader racing a write may pair one report's time with
#: the next report's step (a second apart at most): good enough for an accounting to the second.
_SLOT = struct.Struct("<4sIdqqq")
_MAGIC = b"FTPG"
_VERSION = 1


@dataclass(frozen=True, slots=True)
class ProgressPoint:
    """One progress report."""

    time: float
    step: int
    checkpointed: int | None = None
    total: int | None = None
    restart: int = 0


class ProgressReporter:
    """Rank 0's reporter for one restart round of one attempt; `report_progress` uses one per
    process."""

    def __init__(self, run_dir: str | os.PathLike[str], attempt: str, *, restart: int = 0,
                 interval: float = FLUSH_INTERVAL_S) -> None:
        self._paths = RunDir(run_dir)
        self._log = self._paths.step_log(attempt)
        self._restart = restart
        self._interval = interval
        self._step: int | None = None
        self._checkpointed = -1
        self._total = -1
        self._written_step: int | None = None
        self._flushed: tuple[int, int, int] | None = None
        self._next_flush = 0.0
        self._broken = False
        self._time = 0.0
        #: A forked child inherits this object (and its atexit flush): only the process that
        #: made it writes.
        self._pid = os.getpid()
        self._slot: memoryview | None = None
        try:
            self._slot = _map_slot(self._paths.last_step_slot(attempt, restart))
        except OSError:  # no shared slot here: the step log still works
            self._slot = None

    def report(self, step: int, *, total: int | None = None, checkpointed: bool = False) -> None:
        """Record that training reached `step` (checkpointed at it when `checkpointed`)."""
        urgent = checkpointed or (total is not None and total != self._total)
        self._step = step
        if checkpointed:
            self._checkpointed = step
        if total is not None:
            self._total = total
        now = self._time = time.time()
        if self._slot is not None:
            _SLOT.pack_into(self._slot, 0, _MAGIC, _VERSION, now, step, self._checkpointed,
                            self._total)
        if urgent or now >= self._next_flush:
            self.flush()

    def flush(self) -> None:
        """Write the latest report to the step log (if it is new there), with the time it was
        made. Never raises: progress reporting must not stop a training; a run directory that
        cannot be written is left alone."""
        if self._step is None or self._broken or os.getpid() != self._pid:
            return
        now = self._time
        self._next_flush = now + self._interval
        latest = (self._step, self._checkpointed, self._total)
        if latest == self._flushed:
            return
        self._flushed = latest
        line = format_line(ProgressPoint(
            time=now, step=self._step,
            checkpointed=None if self._checkpointed < 0 else self._checkpointed,
            total=None if self._total < 0 else self._total, restart=self._restart))
        try:
            with self._log.open("a", encoding="utf-8") as out:
                out.write(line)
            if self._step != self._written_step:
                write_atomic(self._paths.progress, f"{int(self._step)}\n")
                self._written_step = self._step
        except OSError:
            self._broken = True


def _map_slot(path: Path) -> memoryview:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        os.ftruncate(fd, _SLOT.size)
        mapping = mmap.mmap(fd, _SLOT.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)
    return memoryview(mapping)


def reporter_from_env(environ: Mapping[str, str] | None = None) -> ProgressReporter | None:
    """A reporter for this process's attempt and restart round, or None when its reports do
    not count (not global rank 0, or not inside a run)."""
    env = os.environ if environ is None else environ
    run_dir, attempt = env.get(env_vars.RUN_DIR), env.get(env_vars.ATTEMPT)
    if not run_dir or not attempt or env.get(env_vars.RANK, "0") != "0":
        return None
    restart = env.get(env_vars.TORCHELASTIC_RESTART_COUNT, "0")
    return ProgressReporter(run_dir, attempt, restart=int(restart) if restart.isdigit() else 0)


_reporter: ProgressReporter | None = None
_disabled = False


def _global_reporter() -> ProgressReporter | None:
    global _reporter, _disabled
    if _reporter is not None or _disabled:
        return _reporter
    _reporter = reporter_from_env()
    if _reporter is None:
        _disabled = True
    else:
        atexit.register(_reporter.flush)
    return _reporter


def report_progress(step: int, *, total: int | None = None, checkpointed: bool = False) -> None:
    """Tell ftslurm that training reached `step` (an int that grows; the global step).

    `total`: the step at which training is done, when known (gives the ETA). `checkpointed`:
    a checkpoint holding this step was just saved (a later attempt resumes from it; steps after
    it that the next attempt redoes are lost work). Only global rank 0's calls count; outside a
    run this does nothing. Cheap enough for every step (docs/benchmarks.md)."""
    reporter = _reporter if _reporter is not None else _global_reporter()
    if reporter is not None:
        reporter.report(step, total=total, checkpointed=checkpointed)


def format_line(point: ProgressPoint) -> str:
    """One step-log line: `<epoch s> <step> <checkpointed step|-> <total|-> <restart round>`."""
    def text(value: int | None) -> str:
        return "-" if value is None else str(value)

    return (f"{point.time:.3f} {point.step} {text(point.checkpointed)} {text(point.total)} "
            f"{point.restart}\n")


def read_step_log(run_dir: str | os.PathLike[str], attempt: int) -> list[ProgressPoint]:
    """An attempt's progress reports in time order (`read_reports` for one attempt)."""
    return read_reports(run_dir, [attempt]).get(attempt, [])


def read_reports(run_dir: str | os.PathLike[str], attempts: Iterable[int]
                   ) -> dict[int, list[ProgressPoint]]:
    """The progress reports of each of `attempts`, in time order: its step log's lines, and
    each restart round's latest report from its slot when the log lacks it (the process died
    before its next line). Attempts without reports are left out; a line cut by a crash is
    skipped."""
    paths = RunDir(run_dir)
    slots = paths.last_step_slot_index()
    found = {}
    for attempt in attempts:
        points = list(_points(paths.step_log(attempt)))
        for restart, slot in sorted(slots.get(attempt, {}).items()):
            last = _slot_point(slot, restart)
            known = [p for p in points if p.restart == restart]
            if last is None:
                continue
            if not known:
                points.append(last)
            # The slot holds the round's latest report: it is new unless the log's last line
            # is that report. (Not by time: a line's time is rounded to the millisecond and
            # may read later than the slot's.)
            elif (last.step, last.checkpointed) != (known[-1].step, known[-1].checkpointed):
                points.append(ProgressPoint(max(last.time, known[-1].time), last.step,
                                            last.checkpointed, last.total, last.restart))
        if points:
            found[attempt] = sorted(points, key=lambda p: p.time)
    return found


def _slot_point(path: Path, restart: int) -> ProgressPoint | None:
    with contextlib.suppress(OSError):
        data = path.read_bytes()
        if len(data) >= _SLOT.size:
            magic, version, at, step, checkpointed, total = _SLOT.unpack_from(data)
            if magic == _MAGIC and version == _VERSION and math.isfinite(at) and at > 0:
                return ProgressPoint(time=at, step=step,
                                     checkpointed=None if checkpointed < 0 else checkpointed,
                                     total=None if total < 0 else total, restart=restart)
    return None


def _points(path: Path) -> Iterator[ProgressPoint]:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return
    for line in lines:
        fields = line.split()
        if len(fields) != 5:
            continue
        at, step, checkpointed, total, restart = fields
        try:
            point = ProgressPoint(float(at), int(step),
                                  None if checkpointed == "-" else int(checkpointed),
                                  None if total == "-" else int(total), int(restart))
        except ValueError:
            continue
        yield point
