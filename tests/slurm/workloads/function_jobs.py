"""Functions the `submit_function` cluster tests run (tests/slurm/test_function_cluster.py).

They run on the cluster's ranks, unpickled by reference: the job's workdir is the repository, so
`tests.slurm.workloads.function_jobs` imports there as it does in the test.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ftslurm import env_vars, report_progress

#: How long the held attempt waits to be preempted before it gives up and goes on.
HOLD_S = 240.0


def count_steps(folder: str, total: int = 40, crash_at: int = 10, hold_at: int = 25,
                step_time: float = 0.05) -> dict[str, Any]:
    """Count to `total`, resuming from the step checkpointed in `folder`. Attempt 1 crashes at
    step `crash_at`; the first later attempt to reach `hold_at` writes `folder/holding` (its
    attempt number) and waits there to be preempted. Returns the last step and the attempts
    that ran."""
    state = Path(folder)
    attempt = int(os.environ[env_vars.ATTEMPT])
    rank = int(os.environ.get(env_vars.RANK, "0"))
    checkpoint, ran, holding = state / "step", state / "attempts.json", state / "holding"
    step = int(checkpoint.read_text()) if checkpoint.exists() else 0
    attempts = json.loads(ran.read_text()) if ran.exists() else []
    if rank == 0 and attempt not in attempts:
        attempts.append(attempt)
        _write(ran, json.dumps(attempts))
    while step < total:
        time.sleep(step_time)  # a training step
        step += 1
        if rank == 0:
            _write(checkpoint, str(step))
        report_progress(step, total=total, checkpointed=True)
        if attempt == 1 and step == crash_at:
            raise RuntimeError(f"crash at step {step}")
        if attempt > 1 and step == hold_at and not holding.exists():
            _write(holding, str(attempt))
            deadline = time.monotonic() + HOLD_S
            while time.monotonic() < deadline:  # until the preemption ends this attempt
                time.sleep(0.5)
    return {"step": step, "attempts": attempts}


def bad_input(value: int) -> int:
    """Always raises."""
    raise ValueError("bad input")


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
