"""Synchronized graceful stop: every rank stops at the same step when any of them was asked to.

SLURM asks a job to leave with a signal (preemption, scancel, the time-limit warning) and kills it
after a grace period. The signal reaches ranks at different moments (or only the launcher, which
forwards it), so a rank that stops on its own at step k while its peers enter the collective of step
k+1 deadlocks them. `GracefulShutdown.should_stop()` turns the per-rank "I got a signal" flag into
one answer agreed by all ranks with a single tiny all-reduce (MAX) at a step boundary:

    stopper = GracefulShutdown()            # after init_process_group, once per rank
    for step in range(start, total):
        train_step()
        if stopper.should_stop():           # same answer on every rank, at the same step
            save_checkpoint(step)
            break
    stopper.close()

Without torch.distributed (or with a world of one) it is a plain local flag. The all-reduce never
blocks forever: if a peer does not join within `peer_timeout` seconds, `PeerLostError` is raised.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from types import FrameType
from typing import Any

from ftslurm import env_vars

DEFAULT_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)

_Handler = Callable[[int, FrameType | None], Any] | int | None


class PeerLostError(RuntimeError):
    """A peer did not join the stop vote in time: it is gone or hung. Exit instead of hanging."""


class GracefulShutdown:
    """Per-rank signal flag plus a synchronized decision across the process group.

    Args:
        signals: signals that request a stop (default SIGTERM, SIGINT, SIGUSR1).
        check_every: vote only on every k-th call of `should_stop()` (all ranks must use the same
            k and call it at the same step boundaries); other calls return False without
            communicating.
        peer_timeout: seconds to wait for the peers in a vote before raising `PeerLostError`.
        process_group: the torch.distributed group to vote in (default: the default group).
        install: install the signal handlers now (else call `install()`).
    """

    def __init__(
        self,
        signals: Iterable[int] = DEFAULT_SIGNALS,
        *,
        check_every: int = 1,
        peer_timeout: float = 120.0,
        process_group: Any = None,
        install: bool = True,
    ) -> None:
        if check_every < 1:
            raise ValueError(f"check_every must be at least 1, got {check_every}")
        if peer_timeout <= 0:
            raise ValueError(f"peer_timeout must be positive, got {peer_timeout}")
        self.signals = tuple(signal.Signals(s) for s in signals)
        self.check_every = check_every
        self.peer_timeout = peer_timeout
        self.process_group = process_group
        self._requested = threading.Event()
        self._received: signal.Signals | None = None
        self._previous: dict[signal.Signals, _Handler] = {}
        self._originals: dict[signal.Signals, _Handler] = {}
        self._closed = False
        self._calls = 0
        self._decided = False
        if install:
            self.install()

    # ---- signals ------------------------------------------------------------------------------
    def install(self) -> GracefulShutdown:
        """Install the handlers (main thread only); previous handlers are kept and chained to."""
        if self._previous:
            return self
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("GracefulShutdown must be installed from the main thread")
        for sig in self.signals:
            self._previous[sig] = _see_through(sig, signal.signal(sig, self._on_signal))
        self._closed = False
        return self

    def close(self) -> None:
        """Restore the handlers that were in place before `install()`."""
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._originals = dict(self._previous)
        self._previous.clear()
        self._closed = True

    def original_handler(self, sig: int) -> _Handler:
        """The handler that was in place before `install()` (for a closed instance)."""
        return self._originals.get(signal.Signals(sig), signal.SIG_DFL)

    def __enter__(self) -> GracefulShutdown:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._closed:
            # Someone re-installed this handler after close() (Lightning does, after a failed
            # fit): be transparent: put the original back and hand it the signal.
            original = self.original_handler(signum)
            signal.signal(signum, original if original is not None else signal.SIG_DFL)
            if callable(original):
                original(signum, frame)
            elif original in (signal.SIG_DFL, None):
                signal.raise_signal(signum)
            return
        self._received = signal.Signals(signum)
        self._requested.set()
        previous = self._previous.get(signal.Signals(signum))
        # Chain to a handler the user installed; never to SIG_DFL (that would kill the rank
        # before it can save) or SIG_IGN.
        if callable(previous):
            previous(signum, frame)

    def request(self) -> None:
        """Ask for a stop from code (as if a signal had arrived on this rank)."""
        self._requested.set()

    @property
    def requested_locally(self) -> bool:
        """Whether this rank itself received a stop signal (or `request()`)."""
        return self._requested.is_set()

    @property
    def received_signal(self) -> signal.Signals | None:
        """The last stop signal this rank received, if any."""
        return self._received

    # ---- the vote -----------------------------------------------------------------------------
    def should_stop(self) -> bool:
        """Whether all ranks stop now. Call at the same step boundary on every rank.

        Once it has returned True it keeps returning True without communicating.
        """
        if self._decided:
            return True
        self._calls += 1
        if self._calls % self.check_every:
            return False
        self._decided = self._vote(self._requested.is_set())
        if self._decided:
            _tell_launcher()
        return self._decided

    def _vote(self, local: bool) -> bool:
        dist = _distributed()
        if dist is None or dist.get_world_size(self.process_group) == 1:
            return local
        import torch

        backend = dist.get_backend(self.process_group)
        device = "cuda" if backend == "nccl" else "cpu"
        if device == "cuda":
            device = f"cuda:{torch.cuda.current_device()}"
        flag = torch.tensor([1 if local else 0], dtype=torch.int32, device=device)
        work = dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.process_group,
                               async_op=True)
        self._wait(work)
        return bool(flag.item())

    def _wait(self, work: Any) -> None:
        # gloo and NCCL both honour a timeout here (NCCL blocks the CPU thread until done).
        try:
            work.wait(timeout=datetime.timedelta(seconds=self.peer_timeout))
        except RuntimeError as error:
            raise PeerLostError(
                f"the stop vote failed: a peer did not join within {self.peer_timeout:g} s or "
                f"is gone ({error}); exiting instead of waiting forever"
            ) from error


def _see_through(sig: int, handler: _Handler) -> _Handler:
    """The handler that really acts for `sig`: a closed GracefulShutdown's handler stands for
    the one that was there before it."""
    owner = getattr(handler, "__self__", None)
    while isinstance(owner, GracefulShutdown) and owner._closed:
        handler = owner.original_handler(sig)
        owner = getattr(handler, "__self__", None)
    return handler


def _tell_launcher() -> None:
    """Under `ftslurm launch`, leave the stop-voted marker so the launcher exits "stopped"."""
    from ftslurm.fault_tolerance.heartbeat import STOP_VOTED_FILE

    ipc_dir = os.environ.get(env_vars.FT_IPC_DIR)
    if ipc_dir:
        with contextlib.suppress(OSError):
            (Path(ipc_dir) / STOP_VOTED_FILE).touch()


def _distributed() -> Any:
    """torch.distributed if it is importable and initialized, else None."""
    try:
        import torch.distributed as dist
    except ImportError:
        return None
    if not dist.is_available() or not dist.is_initialized():
        return None
    return dist


__all__ = ["DEFAULT_SIGNALS", "GracefulShutdown", "PeerLostError"]
