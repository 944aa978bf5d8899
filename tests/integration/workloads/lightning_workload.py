"""A tiny Lightning DDP (gloo, CPU) workload for tests/integration/test_lightning.py.

Run under `ftslurm launch --nproc-per-node=2`. It trains a linear model on synthetic data with
`FaultToleranceCallback`, checkpoints `last.ckpt` every `--ckpt-every` steps and resumes from it.
Each rank appends its global step to `<out>/progress.<rank>` after every step and, when `fit`
returns, writes `<out>/result.<rank>.<restart>.json`. `--hang RANK:STEP` blocks that rank forever
in its training step (first launcher round only); `--crash RANK:STEP` raises there.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ftslurm import env_vars
from ftslurm.fault_tolerance.heartbeat import Slot, slot_path
from ftslurm.lightning import FaultToleranceCallback

RANK = int(os.environ.get("RANK", "0"))
RESTART = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def at(spec: str | None) -> int | None:
    """`RANK:STEP` -> STEP when it names this rank in the first round, else None."""
    if not spec or RESTART != 0:
        return None
    rank, step = spec.split(":")
    return int(step) if int(rank) == RANK else None


def hang_forever_in_training_step() -> None:
    """Block like a rank stuck in a collective that never completes."""
    threading.Event().wait()


class Model(pl.LightningModule):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__()
        self.args = args
        self.layer = nn.Linear(8, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        step = self.trainer.global_step
        if at(self.args.hang) == step:
            print(f"rank {RANK}: hanging at step {step}", flush=True)
            hang_forever_in_training_step()
        if at(self.args.crash) == step:
            raise RuntimeError(f"injected crash at step {step}")
        x, y = batch
        return nn.functional.mse_loss(self.layer(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self.layer(x), y), sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class Probe(pl.Callback):
    """Records what the test checks: progress, the start step and the heartbeats in the slot."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.start_step = -1
        self.heartbeats = -1

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start_step = trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        with open(self.out / f"progress.{RANK}", "a") as handle:
            handle.write(f"{trainer.global_step}\n")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        ipc_dir = os.environ.get(env_vars.FT_IPC_DIR)
        if ipc_dir:  # what the launcher's monitor reads
            slot = Slot.open(slot_path(ipc_dir, RANK))
            self.heartbeats = slot.read().heartbeat_count
            slot.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--ckpt-dir", type=Path, required=True)
    parser.add_argument("--exp-dir", type=Path, default=None)
    parser.add_argument("--max-steps", type=int, default=12)
    parser.add_argument("--ckpt-every", type=int, default=2)
    parser.add_argument("--val-batches", type=int, default=0)
    parser.add_argument("--calculate-timeouts", action="store_true")
    parser.add_argument("--min-train-iters", type=int, default=4)
    parser.add_argument("--hang", default=None, help="RANK:STEP")
    parser.add_argument("--crash", default=None, help="RANK:STEP")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(0)
    x = torch.randn(64, 8)
    data = TensorDataset(x, x.sum(dim=1, keepdim=True))
    ft = FaultToleranceCallback(autoresume=True, calculate_timeouts=args.calculate_timeouts,
                                exp_dir=args.exp_dir, min_train_iters=args.min_train_iters)
    probe = Probe(args.out)
    trainer = pl.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_steps=args.max_steps,
        callbacks=[ft, probe,
                   ModelCheckpoint(dirpath=args.ckpt_dir, every_n_train_steps=args.ckpt_every,
                                   save_top_k=0, save_last=True)],
        limit_val_batches=args.val_batches, num_sanity_val_steps=0,
        enable_progress_bar=False, enable_model_summary=False, logger=False,
        default_root_dir=args.out,
    )
    trainer.fit(Model(args), DataLoader(data, batch_size=4), DataLoader(data, batch_size=4),
                ckpt_path="last")
    result = {
        "rank": RANK, "restart": RESTART, "start_step": probe.start_step,
        "global_step": trainer.global_step, "stopped_by_signal": ft.stopped_by_signal,
        "wrote_flag": ft.wrote_finished_flag, "loaded_state": ft.loaded_state,
        "saved_state": ft.saved_state, "heartbeats": probe.heartbeats,
        "stop_checkpoint": ft.stop_checkpoint_path, "state_dir": str(ft.state_dir),
    }
    (args.out / f"result.{RANK}.{RESTART}.json").write_text(json.dumps(result))
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
