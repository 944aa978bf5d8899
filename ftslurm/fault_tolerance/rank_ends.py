"""When and how each rank process of a round ended, for the status file's `rank_ends`.

`RoundWatch` follows the processes of one restart round. A thread waits on a pidfd per process
(Linux >= 5.3: it becomes readable the moment the process exits, reaped or not, and names that
very process even once its pid is reused), so each end time is exact to the scheduler's latency,
whoever ended the process and whenever the launcher notices. Without pidfds the time is when
the launcher saw the end (torch's `ProcessFailure.timestamp` for a failure, else the moment the
round's ends are collected).

The cause is what the launcher did: a rank it stopped as hung is `hang_stopped`; a rank still
alive when the launcher stopped the round (another rank failed or hung, a restart, a stop signal)
is `stopped_by_launcher`; every other end is `exited`, the process's own doing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import threading
import time
from dataclasses import dataclass
from subprocess import Popen
from typing import Any

from ftslurm.fault_tolerance.status import RankEndCause

logger = logging.getLogger("ftslurm.launcher")


@dataclass
class RankProcess:
    """One rank's process in a round, and what is known about its end."""

    global_rank: int
    local_rank: int
    proc: Popen[Any]
    #: Its output files, None when it writes to the launcher's own streams.
    stdout: str | None
    stderr: str | None
    ended_at: float | None = None
    cause: RankEndCause | None = None
    reported: bool = False


def log_file(path: str | None) -> str | None:
    """A process context's output path, or None for the console or /dev/null."""
    return path if path and path != os.devnull else None


def signal_name(number: int) -> str:
    """`SIGKILL` for 9; `SIG<n>` for a number without a name."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"SIG{number}"


class RoundWatch:
    """The rank processes of one restart round on this node, watched until they all ended."""

    def __init__(self, ranks: list[RankProcess], *, restart_count: int, node: str) -> None:
        self.restart_count = restart_count
        self.node = node
        self._ranks = {rank.local_rank: rank for rank in ranks}
        self._fds: dict[int, int] = {}  # pidfd -> local rank
        self._wake_r, self._wake_w = os.pipe()
        self._closed = False
        for rank in ranks:
            try:
                self._fds[os.pidfd_open(rank.proc.pid)] = rank.local_rank
            except (OSError, AttributeError) as error:
                logger.debug("no pidfd for pid %d (%s): end times as observed",
                             rank.proc.pid, error)
        self._thread = threading.Thread(target=self._watch, name="ftslurm-rank-ends",
                                        daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        for fd in self._fds:
            poller.register(fd, select.POLLIN)
        left = set(self._fds)
        while left:
            try:
                events = poller.poll()
            except OSError:
                return
            now = time.time()
            for fd, _ in events:
                if fd == self._wake_r:
                    return
                rank = self._ranks[self._fds[fd]]
                if rank.ended_at is None:
                    rank.ended_at = now
                poller.unregister(fd)
                left.discard(fd)

    def alive(self, local_rank: int) -> bool:
        """Whether the process has not ended yet (as far as can be told without waiting)."""
        rank = self._ranks[local_rank]
        return rank.ended_at is None and rank.proc.poll() is None

    def mark(self, local_rank: int, cause: RankEndCause) -> None:
        """The launcher is about to stop this rank: its end, if it was alive, has `cause`."""
        rank = self._ranks.get(local_rank)
        if rank is not None and rank.cause is None and self.alive(local_rank):
            rank.cause = cause

    def mark_alive(self, cause: RankEndCause) -> None:
        """`mark` every rank that is still alive (the launcher stops them all)."""
        for local_rank in self._ranks:
            self.mark(local_rank, cause)

    def collect(self, failure_times: dict[int, float] | None = None,
                wait: float = 1.0) -> list[dict[str, Any]]:
        """Entries for the ranks that ended and were not reported yet (each is reported once).

        `failure_times`: local rank -> torch's time of its failure, used when no pidfd gave one.
        `wait`: how long to give the watcher to timestamp processes that are known to be dead.
        """
        ended = [rank for rank in self._ranks.values()
                 if not rank.reported and rank.proc.poll() is not None]
        deadline = time.monotonic() + wait
        while any(rank.ended_at is None and rank.local_rank in self._fds.values()
                  for rank in ended) and time.monotonic() < deadline:
            time.sleep(0.005)  # a dead process's pidfd is readable: the watcher is about to run
        entries = []
        for rank in sorted(ended, key=lambda r: r.local_rank):
            if rank.ended_at is None:
                rank.ended_at = (failure_times or {}).get(rank.local_rank, time.time())
            code = rank.proc.returncode
            entries.append({
                "rank": rank.global_rank,
                "local_rank": rank.local_rank,
                "node": self.node,
                "restart_count": self.restart_count,
                "exit_code": code if code >= 0 else None,
                "signal": signal_name(-code) if code < 0 else None,
                "time": round(rank.ended_at, 6),
                "stdout": rank.stdout,
                "stderr": rank.stderr,
                "cause": str(rank.cause or RankEndCause.EXITED),
            })
            rank.reported = True
        if all(rank.reported for rank in self._ranks.values()):
            self.close()
        return entries

    def close(self) -> None:
        """Stop the watcher thread and release the pidfds."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        self._thread.join(timeout=5.0)
        for fd in (*self._fds, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


__all__ = [
    "RankProcess",
    "RoundWatch",
    "log_file",
    "signal_name",
]
