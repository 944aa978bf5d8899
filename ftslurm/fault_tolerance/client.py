"""`RankMonitorClient`: the workload side of the heartbeat monitor.

Names follow nvidia-resiliency-ext so workloads migrate by changing an import.

Typical use in a training script started by `ftslurm launch` (or `ft_launcher`)::

    client = RankMonitorClient()
    client.init_workload_monitoring()
    client.load_state_dict(checkpoint.get("ft_client", {}))   # optional
    for step in ...:
        train_step()
        client.send_heartbeat()
        if step == 100:
            client.calculate_and_set_hb_timeouts()            # optional
    checkpoint["ft_client"] = client.state_dict()
    client.shutdown_workload_monitoring()
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from ftslurm import env_vars
from ftslurm.fault_tolerance.heartbeat import (
    FLAG_CONNECTED,
    FLAG_DUMP_HANDLER,
    FLAG_SHUTDOWN,
    HEARTBEAT,
    START_TIME,
    Slot,
    slot_path,
)
from ftslurm.fault_tolerance.timeouts import HeartbeatTimeouts, compute_timeouts

#: Signal on which a connected rank dumps the Python stacks of all its threads to its stderr.
DUMP_SIGNAL = signal.SIGUSR2
_DEFAULT_SAFETY_FACTOR = 5.0

_NOT_LAUNCHED_HINT = (
    "start the workload with `ftslurm launch ...` (or `ft_launcher ...`), which accepts torchrun's "
    "command line; plain `python` or `torchrun` do not run a heartbeat monitor"
)


class RankMonitorClientError(Exception):
    """Misuse of `RankMonitorClient` or a broken connection to the launcher's monitor."""


class RankMonitorClient:
    """Sends this rank's heartbeats to the launcher and manages its heartbeat timeouts.

    A heartbeat is a single write into shared memory: cheap enough to call every step.
    """

    def __init__(self) -> None:
        self._slot: Slot | None = None
        self._pack = HEARTBEAT.pack_into
        self._buffer: Any = None
        self._monotonic = time.monotonic
        self._count = 0
        self._first_heartbeat: float | None = None
        self._last_heartbeat: float | None = None
        self._max_gap: float | None = None
        self._start_time: float | None = None
        self._loaded_timeouts: HeartbeatTimeouts | None = None
        self._dump_registered = False
        #: Timeouts computed by `calculate_and_set_hb_timeouts` or restored by `load_state_dict`.
        self.hb_timeouts: HeartbeatTimeouts | None = None

    @property
    def is_initialized(self) -> bool:
        """True between `init_workload_monitoring` and `shutdown_workload_monitoring`."""
        return self._slot is not None

    def init_workload_monitoring(self) -> None:
        """Connect to the launcher's monitor of this rank and start being watched.

        Also installs a handler that dumps every thread's Python stack to stderr when the launcher
        finds this rank hung (signal `DUMP_SIGNAL`), so the rank's log shows where it hung.
        """
        if self._slot is not None:
            raise RankMonitorClientError(
                "init_workload_monitoring() was already called on this client; call it once per "
                "process (call shutdown_workload_monitoring() first to reconnect)"
            )
        ipc_dir = os.environ.get(env_vars.FT_IPC_DIR)
        rank = os.environ.get(env_vars.RANK)
        if not ipc_dir or rank is None:
            raise RankMonitorClientError(
                f"this process was not started by the fault-tolerant launcher "
                f"(${env_vars.FT_IPC_DIR} or ${env_vars.RANK} is not set): {_NOT_LAUNCHED_HINT}"
            )
        path = slot_path(ipc_dir, int(rank))
        try:
            slot = Slot.open(Path(path))
        except (OSError, ValueError) as error:
            raise RankMonitorClientError(
                f"cannot open the heartbeat slot {path}: {error}; {_NOT_LAUNCHED_HINT}"
            ) from error
        self._start_time = START_TIME.unpack_from(slot.buffer, 16)[0]
        flags = FLAG_CONNECTED
        if self._register_dump_handler():
            flags |= FLAG_DUMP_HANDLER
        slot.set_client(os.getpid(), flags)
        self._slot = slot
        self._buffer = slot.buffer
        if self._loaded_timeouts is not None:
            slot.set_timeouts(self._loaded_timeouts.initial, self._loaded_timeouts.subsequent)

    def send_heartbeat(self) -> None:
        """Tell the monitor this rank is alive and making progress (one shared-memory write)."""
        buffer = self._buffer
        if buffer is None:
            raise RankMonitorClientError(
                "send_heartbeat() called before init_workload_monitoring() (or after "
                "shutdown_workload_monitoring()): call client.init_workload_monitoring() first"
            )
        now = self._monotonic()
        last = self._last_heartbeat
        if last is None:
            self._first_heartbeat = now
        elif self._max_gap is None or now - last > self._max_gap:
            self._max_gap = now - last
        self._last_heartbeat = now
        self._count += 1
        self._pack(buffer, 0, self._count, now)

    def calculate_and_set_hb_timeouts(self, skip_if_not_ready: bool = False) -> bool:
        """Learn timeouts from the observed heartbeat intervals and apply them to the monitor.

        The initial timeout comes from the time between this rank's start and its first heartbeat,
        the subsequent one from the longest gap between heartbeats, both times the safety factor
        (`safety_factor` of the FT config). If `torch.distributed` is initialized, the intervals
        are agreed across ranks (maximum over all ranks), so every rank sets the same timeouts;
        every rank must then call this together, like a collective.

        Returns True if timeouts were set. Returns False if not enough heartbeats were seen yet
        (at least two on every rank) and `skip_if_not_ready` is True; raises otherwise.
        """
        if self._slot is None:
            raise RankMonitorClientError(
                "calculate_and_set_hb_timeouts() needs init_workload_monitoring() first"
            )
        initial = None
        if self._first_heartbeat is not None and self._start_time:
            initial = self._first_heartbeat - self._start_time
        initial, max_gap = _agree_across_ranks(initial, self._max_gap)
        timeouts = compute_timeouts(initial, max_gap, _safety_factor())
        if timeouts is None:
            if skip_if_not_ready:
                return False
            raise RankMonitorClientError(
                "calculate_and_set_hb_timeouts(): not enough heartbeats observed yet (every rank "
                "needs at least two); call it later or pass skip_if_not_ready=True"
            )
        self.hb_timeouts = timeouts
        self._slot.set_timeouts(timeouts.initial, timeouts.subsequent)
        return True

    def state_dict(self) -> dict[str, Any]:
        """The client's state to keep in a checkpoint: the learned timeouts, if any."""
        if self.hb_timeouts is None:
            return {}
        return {"hb_timeouts": self.hb_timeouts.to_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()` output; learned timeouts are applied to the monitor at once
        (or at `init_workload_monitoring` if not connected yet)."""
        if not state:
            return
        if not isinstance(state, dict) or "hb_timeouts" not in state:
            raise RankMonitorClientError(
                f"load_state_dict() expects the dict returned by state_dict(), got {state!r}"
            )
        try:
            timeouts = HeartbeatTimeouts.from_dict(state["hb_timeouts"])
        except (ValueError, AttributeError) as error:
            raise RankMonitorClientError(f"load_state_dict(): {error}") from error
        self.hb_timeouts = timeouts
        self._loaded_timeouts = timeouts
        if self._slot is not None:
            self._slot.set_timeouts(timeouts.initial, timeouts.subsequent)

    def shutdown_workload_monitoring(self) -> None:
        """Stop being watched (e.g. before a long final save or at exit) and disconnect."""
        if self._slot is None:
            return
        self._slot.add_flags(FLAG_SHUTDOWN)
        self._buffer = None
        self._slot.close()
        self._slot = None
        if self._dump_registered:
            faulthandler.unregister(DUMP_SIGNAL)
            self._dump_registered = False

    def _register_dump_handler(self) -> bool:
        """Dump all threads' stacks to stderr on DUMP_SIGNAL; chain to a user handler if any."""
        try:
            previous = signal.getsignal(DUMP_SIGNAL)
            chain = callable(previous)
            try:
                target: Any = sys.stderr if sys.stderr.fileno() >= 0 else 2
            except (AttributeError, OSError, ValueError):
                target = 2
            faulthandler.register(DUMP_SIGNAL, file=target, all_threads=True, chain=chain)
        except (RuntimeError, ValueError, OSError):
            return False
        self._dump_registered = True
        return True


def _safety_factor() -> float:
    raw = os.environ.get(env_vars.FT_SAFETY_FACTOR)
    try:
        return float(raw) if raw else _DEFAULT_SAFETY_FACTOR
    except ValueError:
        return _DEFAULT_SAFETY_FACTOR


def _agree_across_ranks(
    initial: float | None, max_gap: float | None
) -> tuple[float | None, float | None]:
    """Maximum of both intervals over all ranks; None if any rank lacks one."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return initial, max_gap
    if dist.get_world_size() == 1:
        return initial, max_gap
    import torch

    device = "cpu"
    if dist.get_backend() == "nccl":
        device = f"cuda:{torch.cuda.current_device()}"
    missing = 1.0 if initial is None or max_gap is None else 0.0
    values = torch.tensor(
        [initial or 0.0, max_gap or 0.0, missing], dtype=torch.float64, device=device
    )
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    agreed_initial, agreed_gap, any_missing = values.tolist()
    if any_missing > 0:
        return None, None
    return agreed_initial, agreed_gap


__all__ = [
    "DUMP_SIGNAL",
    "RankMonitorClient",
    "RankMonitorClientError",
]
