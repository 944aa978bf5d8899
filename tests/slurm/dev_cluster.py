"""The SLURM dev cluster (scripts/slurm-dev-cluster) as the tests see it: where it is, whether
it answers, its environment. The `slurm_cluster` fixture (tests/conftest.py) uses these."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import REPO_ROOT

DEV_CLUSTER = REPO_ROOT / "scripts" / "slurm-dev-cluster"


@dataclass(frozen=True)
class DevCluster:
    """What tests need to know about the running SLURM cluster."""

    conf: Path
    nodes: tuple[str, ...] = ("n1", "n2")
    default_partition: str = "batch"
    high_priority_partition: str = "urgent"
    env: dict[str, str] = field(default_factory=dict)


def healthy(conf: str) -> bool:
    """Whether the controller of the cluster configured by `conf` answers `scontrol ping`."""
    env = {**os.environ, "SLURM_CONF": conf}
    try:
        result = subprocess.run(
            ["scontrol", "ping"], env=env, capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and "UP" in result.stdout


def env_from_script() -> dict[str, str]:
    """The dev cluster's environment (SLURM_CONF, ...), as `slurm-dev-cluster env` prints it."""
    out = subprocess.run(
        [sys.executable, str(DEV_CLUSTER), "env", "--format", "lines"],
        capture_output=True, text=True, check=True,
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
