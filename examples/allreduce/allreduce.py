"""A tiny gloo all-reduce: every rank adds its rank number and checks the sum.

Started by any launcher that sets torchrun's variables (ftslurm launch, torchrun, or
`python -m ftslurm.slurm.srun_env` under srun). Each rank writes OUT_DIR/rank-<RANK>.json with
what it saw (its environment, the sum, its command-line arguments), so a test can check every
rank.

    python allreduce.py OUT_DIR [EXTRA_ARGS...]
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist


def main(argv: list[str]) -> int:
    """Run the all-reduce; exit 0 when the sum is right on this rank."""
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    out_dir = Path(argv[0])
    dist.init_process_group("gloo")  # env:// (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)
    rank, world_size = dist.get_rank(), dist.get_world_size()
    value = torch.tensor([float(rank)])
    dist.all_reduce(value)
    expected = world_size * (world_size - 1) / 2
    record = {
        "env": {name: os.environ.get(name) for name in
                ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                 "MASTER_PORT", "FTSLURM_RUN_DIR", "FAULT_TOL_FINISHED_FLAG_FILE")},
        "rank": rank,
        "world_size": world_size,
        "sum": value.item(),
        "expected": expected,
        "args": argv[1:],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".rank-{rank}.json.tmp"
    tmp.write_text(json.dumps(record), encoding="utf-8")
    tmp.replace(out_dir / f"rank-{rank}.json")
    print(f"rank {rank}/{world_size}: sum {value.item()} (expected {expected})", flush=True)
    dist.destroy_process_group()
    return 0 if value.item() == expected else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
