"""`python -m ftslurm.slurm.srun_env`: torchrun's variables from SLURM's, for launcher none.

(The module run as a process: tests/integration/test_render_srun_env_processes.py.)"""

from __future__ import annotations

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
