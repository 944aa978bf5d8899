"""`FaultToleranceCallback` in one process: real Trainer, real signals, a real heartbeat slot.

The "launcher" here is only the heartbeat channel: a slot file in a private folder, exactly what
`ftslurm launch` gives a rank (`$FTSLURM_FT_IPC_DIR` and `$RANK`). The multi-rank behaviour under
the real launcher is in test_lightning.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

pl = pytest.importorskip("lightning.pytorch")

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import ftslurm.lightning.callback as ftl  # noqa: E402
from ftslurm.fault_tolerance.agent import FaultTolerantAgent  # noqa: E402
from ftslurm.fault_tolerance.config import FaultToleranceConfig  # noqa: E402
from ftslurm.fault_tolerance.heartbeat import STOP_VOTED_FILE, Slot, slot_path  # noqa: E402
from ftslurm.fault_tolerance.launcher import effective_timeouts  # noqa: E402
from ftslurm.fault_tolerance.status import StatusFile  # noqa: E402
from ftslurm.fault_tolerance.timeouts import (  # noqa: E402
    HeartbeatTimeouts,
    learned_path,
    load_learned,
    merge,
)
from ftslurm.lightning import FaultToleranceCallback, FaultToleranceCallbackError  # noqa: E402
from ftslurm.lightning.state import LEGACY_STATE_FILE, load_legacy_timeouts  # noqa: E402
from ftslurm.progress import read_step_log  # noqa: E402

pytestmark = pytest.mark.timeout(120)


class Model(pl.LightningModule):
    def __init__(self, signal_at: int | None = None, crash_at: int | None = None) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 1)
        self.signal_at, self.crash_at = signal_at, crash_at

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.trainer.global_step == self.signal_at:
            os.kill(os.getpid(), signal.SIGTERM)
        if self.trainer.global_step == self.crash_at:
            raise RuntimeError("injected crash")
        x, y = batch
        return nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _loader() -> DataLoader:
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
    return DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=4)


def _fit(tmp_path: Path, callback: FaultToleranceCallback, model: Model | None = None,
         max_steps: int = 6, ckpt_path: str | None = None) -> pl.Trainer:
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_steps=max_steps, logger=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        default_root_dir=tmp_path,
        callbacks=[callback, pl.callbacks.ModelCheckpoint(
            dirpath=tmp_path / "ckpt", save_top_k=0, save_last=True, every_n_train_steps=2)],
    )
    trainer.fit(model or Model(), _loader(), ckpt_path=ckpt_path)
    return trainer


@pytest.fixture
def flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "done" / "finished.flag"
    monkeypatch.setenv("FAULT_TOL_FINISHED_FLAG_FILE", str(path))
    return path


@pytest.fixture
def slot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Slot:
    """This process as rank 0 of a launcher: a fresh heartbeat slot in a private folder."""
    ipc = tmp_path / "ipc"
    ipc.mkdir(mode=0o700)
    created = Slot.create(slot_path(ipc, 0), time.monotonic())
    monkeypatch.setenv("FTSLURM_FT_IPC_DIR", str(ipc))
    monkeypatch.setenv("RANK", "0")
    yield created
    created.close()


def test_outside_the_launcher_it_warns_once_and_only_writes_the_flag(
        tmp_path: Path, flag: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FTSLURM_FT_IPC_DIR", raising=False)
    monkeypatch.setattr(ftl, "_warned_outside_launcher", False)
    callback = FaultToleranceCallback(autoresume=True, calculate_timeouts=True)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.warns(UserWarning, match="not started by `ftslurm launch`"):
        _fit(tmp_path, callback)
    assert not callback.is_monitoring and flag.exists()
    assert signal.getsignal(signal.SIGTERM) == before
    flag.unlink()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*not started by")
        _fit(tmp_path / "again", FaultToleranceCallback(autoresume=True, calculate_timeouts=False))
    assert flag.exists()


def test_heartbeats_flow_into_the_slot_and_the_flag_marks_completion(
        tmp_path: Path, flag: Path, slot: Slot) -> None:
    callback = FaultToleranceCallback(autoresume=True, calculate_timeouts=False)
    trainer = _fit(tmp_path, callback)
    state = slot.read()
    assert state.connected and state.shut_down  # connected during fit, disconnected at its end
    # train start, every step, train end, fit end
    assert state.heartbeat_count == 1 + trainer.global_step + 2 == 9
    assert callback.wrote_finished_flag and flag.exists()


def test_the_global_steps_and_checkpoints_are_reported_as_progress(
        tmp_path: Path, flag: Path, slot: Slot, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = tmp_path / "run"
    monkeypatch.setenv("FTSLURM_RUN_DIR", str(run_dir))
    monkeypatch.setenv("FTSLURM_ATTEMPT", "2")
    monkeypatch.setenv("RANK", "0")
    _fit(tmp_path, FaultToleranceCallback(autoresume=True, calculate_timeouts=False),
         max_steps=6)
    points = read_step_log(run_dir, 2)
    assert points[0].step == 1 and points[-1].step == 6
    assert all(p.total == 6 for p in points)
    # ModelCheckpoint saves every 2 steps: each save is reported as checkpointed at once
    assert [p.step for p in points if p.checkpointed == p.step] == [2, 4, 6]


def test_sigterm_stops_at_the_next_step_saves_and_writes_no_flag(
        tmp_path: Path, flag: Path, slot: Slot) -> None:
    callback = FaultToleranceCallback(autoresume=True, calculate_timeouts=False)
    before = signal.getsignal(signal.SIGTERM)
    trainer = _fit(tmp_path, callback, Model(signal_at=2), max_steps=100)
    # Lightning's own SIGTERM handler never saw it (it would have raised SIGTERMException).
    assert not trainer.received_sigterm
    assert callback.stopped_by_signal and trainer.global_step == 3
    assert not flag.exists() and not callback.wrote_finished_flag
    saved = torch.load(callback.stop_checkpoint_path, weights_only=False)
    assert saved["global_step"] == 3
    assert callback.stop_checkpoint_path == str(tmp_path / "ckpt" / "last.ckpt")
    assert (Path(os.environ["FTSLURM_FT_IPC_DIR"]) / STOP_VOTED_FILE).exists()
    assert signal.getsignal(signal.SIGTERM) == before

    resumed = _fit(tmp_path, FaultToleranceCallback(autoresume=True, calculate_timeouts=False),
                   max_steps=5, ckpt_path="last")
    assert resumed.global_step == 5 and flag.exists()


def test_a_crash_writes_no_flag(tmp_path: Path, flag: Path, slot: Slot) -> None:
    callback = FaultToleranceCallback(autoresume=True, calculate_timeouts=False)
    with pytest.raises(RuntimeError, match="injected crash"):
        _fit(tmp_path, callback, Model(crash_at=2))
    assert not flag.exists() and not callback.wrote_finished_flag


def test_a_resumed_run_that_was_already_complete_writes_the_flag(
        tmp_path: Path, flag: Path, slot: Slot) -> None:
    _fit(tmp_path, FaultToleranceCallback(autoresume=False, calculate_timeouts=False))
    assert not flag.exists()
    callback = FaultToleranceCallback(autoresume=True, calculate_timeouts=False)
    _fit(tmp_path, callback, ckpt_path="last")  # the fit loop is skipped: nothing left to do
    assert flag.exists()


def test_missing_flag_variable_under_the_launcher_is_an_error_at_setup(
        tmp_path: Path, slot: Slot, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAULT_TOL_FINISHED_FLAG_FILE", raising=False)
    with pytest.raises(FaultToleranceCallbackError, match="FAULT_TOL_FINISHED_FLAG_FILE"):
        _fit(tmp_path, FaultToleranceCallback(autoresume=True, calculate_timeouts=False))
    assert not slot.read().connected


def _learned_state(folder: Path) -> dict[str, Any]:
    """The learned timeouts of `folder` in the shape of `RankMonitorClient.state_dict()`."""
    learned = load_learned(folder)
    return {} if learned is None else {"hb_timeouts": learned.to_dict()}


def _adopt_as_launcher(run_dir: Path, timeouts: HeartbeatTimeouts, node: str) -> None:
    """What the launcher of `node` does when its ranks set `timeouts` (only the state
    `FaultTolerantAgent._adopt_timeouts` reads: its monitor, status file and run directory)."""
    agent = SimpleNamespace(_monitor=SimpleNamespace(timeouts=None), _run_dir=run_dir,
                            _status=StatusFile(None, node=node, max_restarts=0))
    FaultTolerantAgent._adopt_timeouts(agent, timeouts)  # type: ignore[arg-type]


def test_learned_timeouts_are_saved_and_loaded(tmp_path: Path, flag: Path, slot: Slot) -> None:
    exp = tmp_path / "exp"
    first = FaultToleranceCallback(autoresume=True, calculate_timeouts=True, exp_dir=exp,
                                   min_train_iters=3)
    _fit(tmp_path, first, max_steps=12)  # 8 steps per epoch: an epoch end and saves were seen
    saved = _learned_state(exp)
    assert saved == first.saved_state and set(saved["hb_timeouts"]) == {"initial", "subsequent"}
    assert slot.read().requested_subsequent == saved["hb_timeouts"]["subsequent"]

    second = FaultToleranceCallback(autoresume=True, calculate_timeouts=True, exp_dir=exp,
                                    min_train_iters=1000)
    _fit(tmp_path / "second", second)
    assert second.loaded_state == saved and _learned_state(exp) == saved
    assert not (exp / LEGACY_STATE_FILE).exists()


def test_the_launcher_and_the_callback_keep_one_learned_timeouts_file(
        tmp_path: Path, flag: Path, slot: Slot, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = tmp_path / "run"
    monkeypatch.setenv("FTSLURM_RUN_DIR", str(run_dir))
    # Node n1's launcher saw its ranks set timeouts: a long initial one, a tiny subsequent one.
    _adopt_as_launcher(run_dir, HeartbeatTimeouts(900.0, 0.001), "n1")
    assert _learned_state(run_dir) == {"hb_timeouts": {"initial": 900.0, "subsequent": 0.001}}

    # The callback (no exp_dir: the run directory) loads that file and merges into it.
    callback = FaultToleranceCallback(autoresume=True, calculate_timeouts=True,
                                      min_train_iters=3)
    _fit(tmp_path, callback, max_steps=12)
    assert callback.state_dir == run_dir
    assert callback.loaded_state == {"hb_timeouts": {"initial": 900.0, "subsequent": 0.001}}
    learned = load_learned(run_dir)
    assert learned is not None and callback.saved_state == _learned_state(run_dir)
    # The callback learned a shorter initial timeout (kept: 900) and a longer subsequent one.
    assert learned.initial == 900.0 and learned.subsequent is not None
    assert learned.subsequent > 0.001
    assert "FaultToleranceCallback" in json.loads(learned_path(run_dir).read_text())["source"]

    # Another node's launcher with smaller timeouts lowers nothing; no timeout (None) wins.
    _adopt_as_launcher(run_dir, HeartbeatTimeouts(1.0, 0.001), "n2")
    assert load_learned(run_dir) == learned
    _adopt_as_launcher(run_dir, HeartbeatTimeouts(None, 0.001), "n2")
    assert load_learned(run_dir) == HeartbeatTimeouts(None, learned.subsequent)
    _adopt_as_launcher(run_dir, HeartbeatTimeouts(5.0, 0.001), "n1")
    assert load_learned(run_dir) == HeartbeatTimeouts(None, learned.subsequent)

    # The next attempt's launcher and callback both start from that one file.
    # no floor: this test is about the file and its merge rule
    assert effective_timeouts(FaultToleranceConfig(min_learned_timeout=None), run_dir) == (
        load_learned(run_dir))
    second = FaultToleranceCallback(autoresume=True, calculate_timeouts=True,
                                    min_train_iters=1000)
    _fit(tmp_path / "second", second)
    assert second.loaded_state == {"hb_timeouts": {"initial": None,
                                                   "subsequent": learned.subsequent}}
    assert sorted(p.name for p in run_dir.glob("*.json")) == [learned_path(run_dir).name]


def test_an_upgraded_run_starts_from_the_old_state_file(
        tmp_path: Path, flag: Path, slot: Slot) -> None:
    exp = tmp_path / "exp"
    exp.mkdir()
    old = {"hb_timeouts": {"initial": 1000.0, "subsequent": 500.0}}
    (exp / LEGACY_STATE_FILE).write_text(json.dumps(old))
    first = FaultToleranceCallback(autoresume=True, calculate_timeouts=True, exp_dir=exp,
                                   min_train_iters=3)
    _fit(tmp_path, first, max_steps=12)
    # Loaded from the old file and merged: what the old file held was larger, so it stays.
    assert first.loaded_state == old and first.saved_state == old
    assert _learned_state(exp) == old
    assert slot.read().requested_initial == 1000.0

    # Once the new file exists, the old one is not read any more.
    (exp / LEGACY_STATE_FILE).write_text(json.dumps({"hb_timeouts": {"initial": 7.0,
                                                                      "subsequent": 7.0}}))
    second = FaultToleranceCallback(autoresume=True, calculate_timeouts=True, exp_dir=exp,
                                    min_train_iters=1000)
    _fit(tmp_path / "second", second)
    assert second.loaded_state == old


def test_state_file_helpers(tmp_path: Path) -> None:
    assert load_legacy_timeouts(tmp_path) is None
    (tmp_path / LEGACY_STATE_FILE).write_text(
        json.dumps({"hb_timeouts": {"initial": 10.0, "subsequent": 2.0}}))
    loaded = load_legacy_timeouts(tmp_path)
    assert loaded == HeartbeatTimeouts(10.0, 2.0)
    merged = merge(loaded, HeartbeatTimeouts(5.0, 3.0))
    assert merged == HeartbeatTimeouts(10.0, 3.0)
    assert merge(None, merged) == merged == merge(merged, merged)
    assert merge(merged, HeartbeatTimeouts(None, 1.0)) == HeartbeatTimeouts(None, 3.0)
    (tmp_path / LEGACY_STATE_FILE).write_text("{}")
    assert load_legacy_timeouts(tmp_path) is None
    (tmp_path / LEGACY_STATE_FILE).write_text("{broken")
    with pytest.raises(ValueError, match=r"ft_state\.json"):
        load_legacy_timeouts(tmp_path)
    (tmp_path / LEGACY_STATE_FILE).write_text('{"hb_timeouts": {"initial": -1}}')
    with pytest.raises(ValueError, match=r"ft_state\.json"):
        load_legacy_timeouts(tmp_path)


def test_unsupported_simulated_faults_are_refused() -> None:
    with pytest.raises(FaultToleranceCallbackError, match="simulated_fault_params"):
        FaultToleranceCallback(autoresume=False, calculate_timeouts=False,
                               simulated_fault_params={"fault_type": "rank_hung"})


def test_ftslurm_imports_without_lightning() -> None:
    code = (
        "import sys\n"
        "sys.modules['lightning'] = sys.modules['pytorch_lightning'] = None\n"
        "import ftslurm, ftslurm.fault_tolerance, ftslurm.lightning.state\n"
        "try:\n"
        "    from ftslurm.lightning import FaultToleranceCallback\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "pip install 'ftslurm[lightning]'" in out
