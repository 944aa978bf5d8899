"""`HeartbeatMonitor`: the launcher-side view of one node's ranks and their heartbeat slots.

It creates a fresh slot for every rank just before the rank starts, then `check()` compares each
live rank's heartbeat age with its timeout: the initial timeout counts from the rank's start until
its first heartbeat (so a rank that hangs before it ever connects is caught too), the subsequent
timeout from its last heartbeat. Timeouts a rank asks for (learned or restored by its client) are
picked up from its slot, raised to `min_learned_timeout` (the floor of learned timeouts).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ftslurm.fault_tolerance.heartbeat import Slot, SlotState, decode_timeout, slot_path
from ftslurm.fault_tolerance.procs import process_alive
from ftslurm.fault_tolerance.status import TimeoutSource
from ftslurm.fault_tolerance.timeouts import HeartbeatTimeouts


@dataclass(frozen=True)
class Hang:
    """A rank whose heartbeat is overdue."""

    global_rank: int
    local_rank: int
    pid: int
    client_pid: int
    #: "initial" (no heartbeat yet since start) or "subsequent".
    phase: str
    #: Seconds since the last heartbeat (or since the rank started, for "initial").
    heartbeat_age: float
    timeout: float
    connected: bool
    has_dump_handler: bool
    #: Monotonic time the age counts from: the last heartbeat, or the rank's start ("initial").
    since: float = 0.0
    #: Whether `timeout` was the configured one or a learned one.
    timeout_source: TimeoutSource = TimeoutSource.WRITTEN


@dataclass(frozen=True)
class DumpTarget:
    """A live rank that installed the stack-dump handler and is still watched."""

    global_rank: int
    local_rank: int
    #: The process that installed the handler (the client's pid).
    pid: int


@dataclass
class _Rank:
    global_rank: int
    local_rank: int
    slot: Slot
    pid: int = 0
    seen_timeouts_seq: int = 0
    #: What the rank requested, after the floor; None: the monitor's own timeouts apply.
    timeouts: HeartbeatTimeouts | None = None


class HeartbeatMonitor:
    """Watches the heartbeat slots of the ranks of one node."""

    def __init__(
        self,
        ipc_dir: Path,
        timeouts: HeartbeatTimeouts,
        *,
        timeouts_source: TimeoutSource = TimeoutSource.WRITTEN,
        min_learned_timeout: float | None = None,
    ) -> None:
        self.ipc_dir = ipc_dir
        #: Timeouts applied to ranks that did not ask for their own.
        self.timeouts = timeouts
        #: Where `timeouts` came from: configured ("written") or learned.
        self.timeouts_source = timeouts_source
        #: The least a timeout a rank requests may be (None: no floor).
        self.min_learned_timeout = min_learned_timeout
        self._ranks: dict[int, _Rank] = {}

    def prepare(self, ranks: list[tuple[int, int]]) -> None:
        """Create fresh slots for (global_rank, local_rank) pairs; call just before they start."""
        self.release()
        start = time.monotonic()
        for global_rank, local_rank in ranks:
            slot = Slot.create(slot_path(self.ipc_dir, global_rank), start)
            self._ranks[local_rank] = _Rank(global_rank, local_rank, slot)

    def set_pids(self, pids: dict[int, int]) -> None:
        """Record the pid of each local rank's process (as returned by the process context)."""
        for local_rank, pid in pids.items():
            if local_rank in self._ranks:
                self._ranks[local_rank].pid = pid

    def check(self, now: float | None = None) -> tuple[list[Hang], HeartbeatTimeouts | None]:
        """Find overdue ranks; also return newly requested timeouts (None if none changed).

        The requested timeouts are returned as the rank asked for them (before the floor), so
        they can be kept as learned; the monitor enforces them raised to the floor.
        """
        now = time.monotonic() if now is None else now
        hangs: list[Hang] = []
        requested: HeartbeatTimeouts | None = None
        for rank in self._ranks.values():
            state = rank.slot.read()
            if state.timeouts_seq != rank.seen_timeouts_seq:
                rank.seen_timeouts_seq = state.timeouts_seq
                requested = self._requested(state, floor=None)
                rank.timeouts = self._requested(state, floor=self.min_learned_timeout)
            if state.shut_down or not rank.pid or not process_alive(rank.pid):
                continue
            hang = self._overdue(rank, state, now)
            if hang is not None:
                hangs.append(hang)
        return hangs, requested

    def _requested(self, state: SlotState, *, floor: float | None) -> HeartbeatTimeouts:
        """The rank's requested pair; a timeout it did not request is the monitor's own."""

        def pick(raw: float, default: float | None) -> float | None:
            value = decode_timeout(raw)
            if value is False:
                return default
            if value is None or floor is None:
                return value
            return max(float(value), floor)

        return HeartbeatTimeouts(
            initial=pick(state.requested_initial, self.timeouts.initial),
            subsequent=pick(state.requested_subsequent, self.timeouts.subsequent),
        )

    def dumpable(self) -> list[DumpTarget]:
        """The live, still-watched ranks that installed the stack-dump handler."""
        targets = []
        for rank in self._ranks.values():
            state = rank.slot.read()
            pid = state.pid or rank.pid
            if (state.has_dump_handler and not state.shut_down and rank.pid
                    and process_alive(rank.pid) and process_alive(pid)):
                targets.append(DumpTarget(rank.global_rank, rank.local_rank, pid))
        return targets

    def _overdue(self, rank: _Rank, state: SlotState, now: float) -> Hang | None:
        timeouts = rank.timeouts or self.timeouts
        source = TimeoutSource.LEARNED if rank.timeouts is not None else self.timeouts_source
        if state.heartbeat_count == 0:
            phase, since, timeout = "initial", state.start_time, timeouts.initial
        else:
            phase, since, timeout = "subsequent", state.last_heartbeat, timeouts.subsequent
        if timeout is None or now - since <= timeout:
            return None
        return Hang(
            global_rank=rank.global_rank,
            local_rank=rank.local_rank,
            pid=rank.pid,
            client_pid=state.pid or rank.pid,
            phase=phase,
            heartbeat_age=now - since,
            timeout=timeout,
            connected=state.connected,
            has_dump_handler=state.has_dump_handler,
            since=since,
            timeout_source=source,
        )

    def release(self) -> None:
        """Unmap and delete the current slots."""
        for rank in self._ranks.values():
            rank.slot.close()
            rank.slot.path.unlink(missing_ok=True)
        self._ranks.clear()

    def close(self) -> None:
        """Release the slots and remove the private directory."""
        self.release()
        shutil.rmtree(self.ipc_dir, ignore_errors=True)


__all__ = [
    "DumpTarget",
    "Hang",
    "HeartbeatMonitor",
]
