"""Test workload: train until a synchronized stop, then record the step and save one checkpoint.

Environment: torchrun's RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT, plus
STOP_VOTE_DIR: where each rank writes `progress-<rank>` (its current step, every step) and
`stopped-<rank>` (the step it stopped at) and `pid-<rank>`; rank 0 writes `checkpoint.pt`
atomically.
STOP_VOTE_MAX_STEPS: safety bound on the loop (default 100000).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from ftslurm import GracefulShutdown


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main() -> int:
    out = Path(os.environ["STOP_VOTE_DIR"])
    max_steps = int(os.environ.get("STOP_VOTE_MAX_STEPS", "100000"))
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    stopper = GracefulShutdown(peer_timeout=60)
    write_atomic(out / f"pid-{rank}", str(os.getpid()))
    torch.manual_seed(0)
    weights = torch.zeros(4)
    step = 0
    while step < max_steps:
        grad = torch.ones(4) * (rank + 1)
        dist.all_reduce(grad)  # the training step's collective
        weights -= 0.001 * grad
        step += 1
        write_atomic(out / f"progress-{rank}", str(step))
        if stopper.should_stop():
            break
    write_atomic(out / f"stopped-{rank}", str(step))
    if rank == 0:
        tmp = out / "checkpoint.pt.tmp"
        torch.save({"step": step, "weights": weights}, tmp)
        os.replace(tmp, out / "checkpoint.pt")
    dist.barrier()
    stopper.close()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
