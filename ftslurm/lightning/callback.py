"""PyTorch Lightning integration: `FaultToleranceCallback` (`pip install 'ftslurm[lightning]'`).

Drop-in for nvidia-resiliency-ext's callback of the same name::

    from ftslurm.lightning.callback import FaultToleranceCallback

    trainer = L.Trainer(..., callbacks=[FaultToleranceCallback(autoresume=True,
                                                               calculate_timeouts=True)])
    trainer.fit(model, ckpt_path="last")

Under `ftslurm launch` (or `ft_launcher`) the callback connects each rank to the launcher's rank
monitor, sends a heartbeat after every training and validation step, learns heartbeat timeouts
(optional), turns SIGTERM/SIGINT/SIGUSR1 into a stop at the same step on every rank with a
checkpoint, and writes `$FAULT_TOL_FINISHED_FLAG_FILE` when training really completed. Outside the
launcher it warns once and only keeps the finished flag. See docs/lightning.md.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # Type-checked against `lightning` (the `lightning` extra); at run time the standalone
    # `pytorch_lightning` package works as well: both have the same classes under two names.
    from lightning.pytorch import LightningModule, Trainer
    from lightning.pytorch.callbacks import Callback, ModelCheckpoint
else:
    try:
        from lightning.pytorch import LightningModule, Trainer
        from lightning.pytorch.callbacks import Callback, ModelCheckpoint
    except ImportError:  # pragma: no cover - depends on what is installed
        try:
            from pytorch_lightning import LightningModule, Trainer
            from pytorch_lightning.callbacks import Callback, ModelCheckpoint
        except ImportError as error:
            raise ImportError(
                "ftslurm.lightning.callback needs PyTorch Lightning: "
                "pip install 'ftslurm[lightning]'"
            ) from error

from ftslurm import env_vars
from ftslurm.fault_tolerance.client import RankMonitorClient
from ftslurm.fault_tolerance.shutdown import DEFAULT_SIGNALS, GracefulShutdown
from ftslurm.fault_tolerance.status import node_name
from ftslurm.fault_tolerance.timeouts import (
    HeartbeatTimeouts,
    learned_path,
    load_learned,
    merge,
    save_learned,
)
from ftslurm.lightning.state import (
    flag_path_from_env,
    load_legacy_timeouts,
    write_flag,
)
from ftslurm.progress import ProgressReporter, reporter_from_env
from ftslurm.rundir import RunDir

_warned_outside_launcher = False


class FaultToleranceCallbackError(RuntimeError):
    """The callback is misconfigured (e.g. `autoresume=True` without the finished-flag variable)."""


class _TrainerShutdown(GracefulShutdown):
    """`GracefulShutdown` that can take its signals back from the Trainer.

    Lightning registers its own SIGTERM handler right before running the loops (it broadcasts from
    inside the handler and then raises `SIGTERMException`, which ends the attempt as a crash);
    `take_over()` makes our handler the active one again, without chaining to Lightning's.
    """

    def take_over(self) -> None:
        """Re-install our handler for every signal someone replaced since `install()`."""
        if self._closed:
            return
        for sig in self.signals:
            if signal.getsignal(sig) != self._on_signal:
                signal.signal(sig, self._on_signal)

    def hand_back(self, trainer: Trainer) -> None:
        """Close, and make Lightning's own teardown restore the handlers from before fit.

        After a failed fit Lightning restores the handlers it saw when it registered its own,
        which are ours, after our last hook has run; point its record at the originals instead.
        (A closed handler left behind would still be transparent; this just leaves none.)
        """
        self.close()
        saved = getattr(getattr(trainer, "_signal_connector", None), "_original_handlers", None)
        if isinstance(saved, dict):
            for signum, handler in list(saved.items()):
                if getattr(handler, "__self__", None) is self:
                    saved[signum] = self.original_handler(signum)


def _total_steps(trainer: Trainer) -> int | None:
    """The global step at which the fit ends, for the ETA: `max_steps`, else Lightning's
    estimate from the epochs and the data; None when neither is finite."""
    if trainer.max_steps is not None and trainer.max_steps > 0:
        return int(trainer.max_steps)
    try:
        estimate = float(trainer.estimated_stepping_batches)
    except Exception:  # an iterable dataset without a length, or no limit at all
        return None
    return int(estimate) if math.isfinite(estimate) and estimate > 0 else None


class FaultToleranceCallback(Callback):
    """Heartbeats, learned timeouts, synchronized stop and the finished flag for `Trainer.fit`.

    Args:
        autoresume: write `$FAULT_TOL_FINISHED_FLAG_FILE` (global rank 0) when training completed:
            `max_steps`/`max_epochs` reached or `trainer.should_stop` set by your code or a
            callback (EarlyStopping, Timer); never after a signal stop or an exception. Under the
            launcher a missing variable is an error at setup.
        calculate_timeouts: learn the heartbeat timeouts from the intervals observed (once at
            least `min_train_iters` steps and a checkpoint save were seen) and keep them in
            `exp_dir` (the learned-timeouts file the launcher writes too, see
            `ftslurm.fault_tolerance.timeouts`); the next run loads them at setup.
        simulated_fault_params: accepted for signature compatibility with nvidia-resiliency-ext;
            must be None (inject faults in your own code).
        exp_dir: folder of the learned timeouts, the same for every attempt. Default: the run
            directory (`ftslurm submit` / `ftslurm launch` pass it in the environment) when
            set, else `<trainer.default_root_dir>/ft_state`.
        logger_name: name of the `logging` logger the callback reports to.
        min_train_iters: training steps to observe before learning timeouts.
        stop_signals: signals that ask for a synchronized stop.
        stop_check_every: vote on a stop every k-th training step (same k on every rank).
        peer_timeout: seconds to wait for the peers in a stop vote before `PeerLostError`.
        stop_checkpoint_path: where the stop checkpoint goes. Default: `last.ckpt` in the first
            `ModelCheckpoint`'s folder (so `fit(ckpt_path="last")` resumes from it), else
            `<exp_dir>/last.ckpt`.
    """

    #: Default number of training steps observed before timeouts are learned (as nvidia's).
    MIN_TRAIN_ITERS_FOR_TIMEOUTS = 16

    def __init__(
        self,
        autoresume: bool,
        calculate_timeouts: bool,
        simulated_fault_params: Any = None,
        exp_dir: str | os.PathLike[str] | None = None,
        logger_name: str | None = "ftslurm.lightning.callback",
        *,
        min_train_iters: int = MIN_TRAIN_ITERS_FOR_TIMEOUTS,
        stop_signals: Iterable[int] = DEFAULT_SIGNALS,
        stop_check_every: int = 1,
        peer_timeout: float = 120.0,
        stop_checkpoint_path: str | os.PathLike[str] | None = None,
    ) -> None:
        if simulated_fault_params is not None:
            raise FaultToleranceCallbackError(
                "simulated_fault_params is not supported by ftslurm: inject faults in your "
                "training code instead (see examples/lightning/train.py --crash-at-step)"
            )
        if min_train_iters < 1:
            raise ValueError(f"min_train_iters must be at least 1, got {min_train_iters}")
        super().__init__()
        self.autoresume = autoresume
        self.calculate_timeouts = calculate_timeouts
        self.exp_dir: Path | None = Path(exp_dir) if exp_dir is not None else None
        self.logger = logging.getLogger(logger_name or "ftslurm.lightning.callback")
        self.min_train_iters = min_train_iters
        self.stop_signals = tuple(stop_signals)
        self.stop_check_every = stop_check_every
        self.peer_timeout = peer_timeout
        self._stop_checkpoint_path = stop_checkpoint_path
        self._reset()

    def _reset(self) -> None:
        self._client: RankMonitorClient | None = None
        self._stopper: _TrainerShutdown | None = None
        self._state_dir: Path | None = None
        self._flag: Path | None = None
        self._loaded: HeartbeatTimeouts | None = None
        self._train_iters = 0
        self._total_steps: int | None = None
        self._progress: ProgressReporter | None = None
        self._pending: set[str] = set()
        self._observed: set[str] = set()
        self._learned_mid_run = False
        self._crashed = False
        #: True once the ranks agreed to stop on a signal (the attempt is "stopped", not finished).
        self.stopped_by_signal = False
        #: Where the stop checkpoint was written, after a signal stop.
        self.stop_checkpoint_path: str | None = None
        #: The learned timeouts loaded at setup, as `RankMonitorClient.state_dict()` (`{}` if none).
        self.loaded_state: dict[str, Any] = {}
        #: The learned timeouts this fit saved, as `RankMonitorClient.state_dict()` (`{}` if none).
        self.saved_state: dict[str, Any] = {}
        #: Whether this fit wrote the finished flag.
        self.wrote_finished_flag = False

    @property
    def is_monitoring(self) -> bool:
        """Whether this rank is connected to the launcher's rank monitor."""
        return self._client is not None and self._client.is_initialized

    @property
    def state_dir(self) -> Path | None:
        """The folder of the learned timeouts for the current fit (resolved at setup)."""
        return self._state_dir

    # ---- set up and tear down ------------------------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._reset()
        self._state_dir = self._resolve_state_dir(trainer)
        self._flag = flag_path_from_env() if self.autoresume else None
        if not os.environ.get(env_vars.FT_IPC_DIR):
            _warn_outside_launcher()
            return
        if self.autoresume and self._flag is None:
            flag_env = env_vars.FINISHED_FLAG_FILE
            raise FaultToleranceCallbackError(
                f"FaultToleranceCallback(autoresume=True) needs ${flag_env}: the file to create "
                "when training has finished. `ftslurm submit` sets it (autoresume.flag_file in "
                f"job.yaml); with a hand-written script, export {flag_env}=/shared/path/finished"
                ".flag, or pass autoresume=False"
            )
        client = RankMonitorClient()
        if self.calculate_timeouts:
            self._loaded = self._load_learned()
            client.load_state_dict(self.loaded_state)
        client.init_workload_monitoring()
        self._client = client
        self._stopper = _TrainerShutdown(
            self.stop_signals, check_every=self.stop_check_every, peer_timeout=self.peer_timeout
        )

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if self._client is not None:
            self._client.shutdown_workload_monitoring()
        if self._stopper is not None:
            self._stopper.close()

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        # No flag, and the signals go back to their owners. The rank stays watched: if it hangs
        # on its way out, the launcher still finds it.
        self._crashed = True
        if self._stopper is not None:
            self._stopper.hand_back(trainer)

    # ---- heartbeats ----------------------------------------------------------------------------
    def on_sanity_check_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._take_over_signals()
        self._beat()

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._take_over_signals()
        self._beat()
        self._total_steps = _total_steps(trainer)
        self._progress = reporter_from_env() if trainer.is_global_zero else None

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule,
                                outputs: Any, batch: Any, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        self._beat()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._pending.add("validation")

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._pending.add("epoch")

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        self._pending.add("save")
        if self._progress is not None:
            self._progress.report(trainer.global_step, total=self._total_steps, checkpointed=True)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._progress is not None:
            self._progress.report(trainer.global_step, total=self._total_steps)
        if self._client is None:
            return
        self._beat()
        self._train_iters += 1
        # Both calls below are collectives: every rank makes them at the same step, in this order.
        if self.calculate_timeouts and not self._learned_mid_run and self._ready(trainer, True):
            self._learned_mid_run = self._learn(trainer)
        if (self._stopper is not None and not self.stopped_by_signal
                and self._stopper.should_stop()):
            self._stop(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Relearn with everything this fit saw (timeouts only grow); a collective on every rank.
        if self._client is not None and self.calculate_timeouts and self._ready(trainer, False):
            self._learn(trainer)
        self._beat()  # what follows (the final save, teardown) starts a fresh interval

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # on_fit_end also runs when the fit loop was skipped because a resumed checkpoint was
        # already complete, so a crash between "done" and the flag cannot loop the chain forever.
        self._beat()
        if self._progress is not None:
            self._progress.flush()
        if self._flag is None or self.stopped_by_signal or self._crashed:
            return
        if not (_limits_reached(trainer) or trainer.should_stop):
            self.logger.info("training did not reach max_steps/max_epochs: no finished flag")
            return
        if trainer.is_global_zero:
            write_flag(self._flag)
            self.wrote_finished_flag = True
            self.logger.info("training finished: wrote %s", self._flag)

    # ---- internals -----------------------------------------------------------------------------
    def _beat(self) -> None:
        if self._client is not None and self._client.is_initialized:
            self._client.send_heartbeat()
            self._observed |= self._pending
            self._pending.clear()

    def _take_over_signals(self) -> None:
        if self._stopper is not None:
            self._stopper.take_over()

    def _ready(self, trainer: Trainer, mid_run: bool) -> bool:
        """Enough intervals seen to learn timeouts (same answer on every rank).

        Always: `min_train_iters` steps and a checkpoint save followed by a heartbeat. During the
        run also an epoch boundary and (if the trainer validates) a validation pass, so that the
        learned timeout does not kill the rank at its first epoch end; otherwise learning waits
        for the end of training.
        """
        if self._train_iters < self.min_train_iters or "save" not in self._observed:
            return False
        if not mid_run:
            return True
        needed = {"epoch", "validation"} if trainer.enable_validation else {"epoch"}
        return needed <= self._observed

    def _learn(self, trainer: Trainer) -> bool:
        assert self._client is not None
        if not self._client.calculate_and_set_hb_timeouts(skip_if_not_ready=True):
            return False
        assert self._client.hb_timeouts is not None
        merged = merge(self._loaded, self._client.hb_timeouts)
        if merged != self._client.hb_timeouts:
            self._client.load_state_dict(_state_dict(merged))
        state = _state_dict(merged)
        if trainer.is_global_zero and state != self.saved_state:
            assert self._state_dir is not None
            # Merged once more with the file: the launchers write it too (same rule).
            try:
                kept = save_learned(self._state_dir, merged,
                                    source=f"FaultToleranceCallback on {node_name()}")
            except OSError as error:  # the next attempt learns again; never fail training
                self.logger.warning("could not save the learned timeouts to %s: %s",
                                    learned_path(self._state_dir), error)
            else:
                self.logger.info("learned heartbeat timeouts %s, saved to %s (file now holds %s)",
                                 merged.to_dict(), learned_path(self._state_dir), kept.to_dict())
        self.saved_state = state
        return True

    def _stop(self, trainer: Trainer) -> None:
        """All ranks agreed to stop at this step: end the fit and save a checkpoint here."""
        self.stopped_by_signal = True
        trainer.should_stop = True
        # Lightning ignores should_stop before min_steps/min_epochs: a signal stop must win.
        trainer.fit_loop.min_epochs = None
        trainer.fit_loop.epoch_loop.min_steps = None
        path = self._stop_path(trainer)
        if trainer.is_global_zero and os.path.islink(path):
            os.unlink(path)  # ModelCheckpoint(save_last="link"): do not write through the link
        received = self._stopper.received_signal if self._stopper else None
        self.logger.warning("stop requested (%s): all ranks stop at step %d; saving %s",
                            received.name if received else "by a peer", trainer.global_step, path)
        trainer.save_checkpoint(path)
        self.stop_checkpoint_path = path
        self._beat()

    def _stop_path(self, trainer: Trainer) -> str:
        if self._stop_checkpoint_path is not None:
            return os.fspath(self._stop_checkpoint_path)
        callback = trainer.checkpoint_callback
        if isinstance(callback, ModelCheckpoint) and callback.dirpath:
            name = f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
            return os.path.join(os.fspath(callback.dirpath), name)
        assert self._state_dir is not None
        return os.fspath(self._state_dir / "last.ckpt")

    def _resolve_state_dir(self, trainer: Trainer) -> Path:
        if self.exp_dir is not None:
            return self.exp_dir
        run_dir = os.environ.get(env_vars.RUN_DIR)
        if run_dir:
            return Path(run_dir)
        return Path(trainer.default_root_dir) / "ft_state"

    def _load_learned(self) -> HeartbeatTimeouts | None:
        """The learned timeouts of the state folder; the old callback's file if there are none."""
        assert self._state_dir is not None
        path = learned_path(self._state_dir)
        try:
            learned = load_learned(self._state_dir)
            if learned is None:
                path = RunDir(self._state_dir).legacy_lightning_state
                learned = load_legacy_timeouts(self._state_dir)
        except (OSError, ValueError) as error:
            self.logger.warning("ignoring the saved heartbeat timeouts: %s", error)
            return None
        if learned is not None:
            self.logger.info("loaded heartbeat timeouts %s from %s", learned.to_dict(), path)
            self.loaded_state = _state_dict(learned)
        return learned


def _state_dict(timeouts: HeartbeatTimeouts) -> dict[str, Any]:
    """`timeouts` in the shape of `RankMonitorClient.state_dict()`."""
    return {"hb_timeouts": timeouts.to_dict()}


def _limits_reached(trainer: Trainer) -> bool:
    """`max_steps` or `max_epochs` reached (a negative limit means none)."""
    max_steps = trainer.max_steps
    if max_steps is not None and max_steps >= 0 and trainer.global_step >= max_steps:
        return True
    max_epochs = trainer.max_epochs
    return max_epochs is not None and max_epochs >= 0 and trainer.current_epoch >= max_epochs


def _warn_outside_launcher() -> None:
    global _warned_outside_launcher
    if _warned_outside_launcher:
        return
    _warned_outside_launcher = True
    warnings.warn(
        "FaultToleranceCallback: not started by `ftslurm launch` / `ft_launcher` "
        f"(${env_vars.FT_IPC_DIR} is not set): no heartbeats, no timeouts, no signal handling; "
        f"only the finished flag is written (if ${env_vars.FINISHED_FLAG_FILE} is set)",
        UserWarning,
        stacklevel=3,
    )


__all__ = ["FaultToleranceCallback", "FaultToleranceCallbackError"]
