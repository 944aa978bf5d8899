"""`python -m ftslurm.slurm.srun_env`: torchrun's variables from SLURM's, for launcher none."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ftslurm.slurm.srun_env import SrunEnvError, rank_environment, tasks_per_node

TASK = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_NODEID": "2",
        "SLURM_STEP_TASKS_PER_NODE": "2(x3),2", "MASTER_ADDR": "n1", "MASTER_PORT": "24242"}


def test_tasks_per_node_expands_slurm_lists() -> None:
    assert tasks_per_node("2(x3),1") == [2, 2, 2, 1]
    assert tasks_per_node("4") == [4]
    with pytest.raises(SrunEnvError):
        tasks_per_node("2(x)")


def test_rank_environment() -> None:
    assert rank_environment(TASK) == {
        "RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
        "GROUP_RANK": "2", "NODE_RANK": "2", "MASTER_ADDR": "n1", "MASTER_PORT": "24242",
    }


def test_missing_variables_are_named() -> None:
    with pytest.raises(SrunEnvError, match=r"\$SLURM_PROCID is not set"):
        rank_environment({})
    with pytest.raises(SrunEnvError, match=r"\$MASTER_ADDR is not set"):
        rank_environment({k: v for k, v in TASK.items() if k != "MASTER_ADDR"})


def test_main_execs_the_command_with_the_rank_environment() -> None:
    code = "import json, os; print(json.dumps({k: os.environ[k] for k in ('RANK', 'WORLD_SIZE')}))"
    result = subprocess.run(
        [sys.executable, "-m", "ftslurm.slurm.srun_env", "--", sys.executable, "-c", code],
        env={**os.environ, **TASK}, capture_output=True, text=True, check=True,
    )
    assert json.loads(result.stdout) == {"RANK": "5", "WORLD_SIZE": "8"}


def test_main_outside_srun_is_a_usage_error() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    result = subprocess.run([sys.executable, "-m", "ftslurm.slurm.srun_env", "--", "true"],
                            env=env, capture_output=True, text=True)
    assert result.returncode == 2 and "SLURM_PROCID" in result.stderr
