"""The launcher's stop signals: the first one stops the ranks, later ones never cut the grace short.

torch's process context installs a handler that raises `SignalException` on every handled signal.
A second SIGTERM during the grace would then interrupt the wait for the ranks and skip the final
SIGKILL. Our handler raises once and only logs the signals that follow (SIGKILL cannot be caught,
so it still ends everything at once).

Ranks can also decide to stop among themselves (`ftslurm.GracefulShutdown` when the signal reached
only some ranks): the rank that sees the vote leaves a marker in the launcher's private IPC
directory, so the launcher reports the attempt as stopped rather than finished.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType

from torch.distributed.elastic.multiprocessing import SignalException

from ftslurm.fault_tolerance.heartbeat import STOP_VOTED_FILE
from ftslurm.signals import parse_signal

logger = logging.getLogger("ftslurm.launcher")

_stopping = threading.Event()


def _on_stop_signal(signum: int, frame: FrameType | None) -> None:
    sig = signal.Signals(signum)
    if _stopping.is_set():
        logger.warning("got %s again while stopping the ranks; the grace period continues",
                       sig.name)
        return
    _stopping.set()
    raise SignalException(f"launcher got signal {sig.name}", sigval=sig)


def parse_signal_names(names: str) -> list[signal.Signals]:
    """`"SIGTERM,SIGINT"` -> signals; unknown names are skipped with a warning."""
    found = []
    for name in (n.strip() for n in names.split(",")):
        if not name:
            continue
        try:
            found.append(parse_signal(name))
        except ValueError:
            logger.warning("ignoring unknown signal name %r in --signals-to-handle", name)
    return found


def install(names: str) -> None:
    """Install the stop handler for the named signals (main thread only; else a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in parse_signal_names(names):
        signal.signal(sig, _on_stop_signal)


def stopping() -> bool:
    """Whether a stop signal has arrived."""
    return _stopping.is_set()


def reset() -> None:
    """Forget an earlier stop signal (for tests that run several launches in one process)."""
    _stopping.clear()


def stop_was_voted(ipc_dir: Path) -> bool:
    """Whether the ranks of this launcher agreed to stop."""
    return (ipc_dir / STOP_VOTED_FILE).exists()


def clear_stop_vote(ipc_dir: Path) -> None:
    """Forget a vote of an earlier worker group (a restart starts afresh)."""
    (ipc_dir / STOP_VOTED_FILE).unlink(missing_ok=True)


__all__ = [
    "clear_stop_vote",
    "install",
    "parse_signal_names",
    "reset",
    "stop_was_voted",
    "stopping",
]
