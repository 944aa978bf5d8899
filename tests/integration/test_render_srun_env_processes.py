"""`python -m ftslurm.slurm.srun_env` as a process: it execs the command with torchrun's
variables, and outside srun it is a usage error (the functions: tests/unit/test_render_srun_env.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

TASK = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_NODEID": "2",
        "SLURM_STEP_TASKS_PER_NODE": "2(x3),2", "MASTER_ADDR": "n1", "MASTER_PORT": "24242"}


# The old module name: scripts rendered before the move keep calling it.
@pytest.mark.parametrize("module", ["ftslurm.slurm.srun_env", "ftslurm.srun_env"])
def test_main_execs_the_command_with_the_rank_environment(module: str) -> None:
    code = "import json, os; print(json.dumps({k: os.environ[k] for k in ('RANK', 'WORLD_SIZE')}))"
    result = subprocess.run(
        [sys.executable, "-m", module, "--", sys.executable, "-c", code],
        env={**os.environ, **TASK}, capture_output=True, text=True, check=True,
    )
    assert json.loads(result.stdout) == {"RANK": "5", "WORLD_SIZE": "8"}


def test_main_outside_srun_is_a_usage_error() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    result = subprocess.run([sys.executable, "-m", "ftslurm.slurm.srun_env", "--", "true"],
                            env=env, capture_output=True, text=True)
    assert result.returncode == 2 and "SLURM_PROCID" in result.stderr
