"""A small Lightning run (DDP on gloo, CPU) that survives crashes, hangs and preemption.

Run it with `ftslurm submit examples/lightning/job.yaml`, under `ftslurm launch` by hand, or
plainly (`python train.py`, one process, no fault tolerance). Every attempt resumes from
`<ckpt-dir>/last.ckpt` (`fit(ckpt_path="last")`); `FaultToleranceCallback` sends the heartbeats,
learns the timeouts, stops every rank at the same step with a checkpoint on SIGTERM, and writes
$FAULT_TOL_FINISHED_FLAG_FILE only when `--max-steps` is reached.

Fault injection for demos and tests (ATTEMPT is $FTSLURM_ATTEMPT, 1 when unset):
  --crash-at ATTEMPT:STEP   rank --fault-rank raises at STEP in every launcher round of ATTEMPT,
                            so the in-place restarts run out and the attempt fails
  --hang-at ATTEMPT:STEP    rank --fault-rank blocks forever at STEP, once in ATTEMPT (the
                            launcher finds it and restarts the ranks in place)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ftslurm.lightning import FaultToleranceCallback

ATTEMPT = int(os.environ.get("FTSLURM_ATTEMPT", "1"))
RANK = int(os.environ.get("RANK", "0"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--ckpt-dir", type=Path, default=None,
                        help="checkpoint folder (default: $FTSLURM_RUN_DIR/checkpoints)")
    parser.add_argument("--ckpt-every", type=int, default=25, help="periodic checkpoint interval")
    parser.add_argument("--step-time", type=float, default=0.0, help="extra seconds per step")
    parser.add_argument("--crash-at", default=None, metavar="ATTEMPT:STEP")
    parser.add_argument("--hang-at", default=None, metavar="ATTEMPT:STEP")
    parser.add_argument("--fault-rank", type=int, default=0)
    return parser.parse_args(argv)


class Synthetic(Dataset):
    """y = x . w + noise, where sample i is generated from i alone (the same on every attempt)."""

    def __len__(self) -> int:
        return 4096

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(index)
        x = torch.randn(16, generator=gen)
        noise = 0.1 * torch.randn(1, generator=gen)
        return x, (x * torch.arange(16.0)).sum(0, keepdim=True) + noise


class Regressor(pl.LightningModule):
    def __init__(self, args: argparse.Namespace, ckpt_dir: Path) -> None:
        super().__init__()
        self.args, self.ckpt_dir = args, ckpt_dir
        self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self._inject_faults(self.trainer.global_step)
        if self.args.step_time:
            threading.Event().wait(self.args.step_time)
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self.net(x), y), sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=1e-3, momentum=0.9)

    def _inject_faults(self, step: int) -> None:
        if self.args.fault_rank != RANK:
            return
        if _names(self.args.crash_at, step):
            print(f"attempt {ATTEMPT}: injecting a crash at step {step}", flush=True)
            raise RuntimeError(f"injected crash at step {step}")
        marker = self.ckpt_dir / f"injected-hang-attempt-{ATTEMPT}"
        if _names(self.args.hang_at, step) and not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
            print(f"attempt {ATTEMPT}: injecting a hang at step {step}", flush=True)
            threading.Event().wait()  # a rank stuck forever, like a lost collective


def _names(spec: str | None, step: int) -> bool:
    """Whether `ATTEMPT:STEP` names this attempt and step."""
    if not spec:
        return False
    attempt, at = spec.split(":")
    return int(attempt) == ATTEMPT and int(at) == step


def main() -> None:
    args = parse_args()
    run_dir = Path(os.environ.get("FTSLURM_RUN_DIR", "."))
    ckpt_dir = args.ckpt_dir or run_dir / "checkpoints"
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    pl.seed_everything(1234, workers=True)
    trainer = pl.Trainer(
        accelerator="cpu", strategy="ddp" if world > 1 else "auto",
        devices=local_world, num_nodes=world // local_world, max_steps=args.max_steps,
        val_check_interval=100, check_val_every_n_epoch=None, limit_val_batches=4,
        num_sanity_val_steps=0,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=run_dir,
        callbacks=[
            FaultToleranceCallback(autoresume=True, calculate_timeouts=True),
            ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=args.ckpt_every,
                            save_top_k=0, save_last=True),
        ],
    )
    model = Regressor(args, ckpt_dir)
    data = Synthetic()
    if trainer.is_global_zero:
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        print(f"attempt {ATTEMPT} (restart {restart}): resuming from {ckpt_dir}/last.ckpt if any",
              flush=True)
    trainer.fit(model, DataLoader(data, batch_size=32, shuffle=True),
                DataLoader(data, batch_size=32), ckpt_path="last")
    if trainer.is_global_zero:
        digest = hashlib.sha256(b"".join(
            p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()[:16]
        print(f"fit returned at step {trainer.global_step} of {args.max_steps}; "
              f"params {digest}", flush=True)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
