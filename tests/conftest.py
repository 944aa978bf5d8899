"""Shared pytest fixtures: the real SLURM dev cluster (started here when needed).

Only fixtures and hooks live here; tests import helpers from helper modules (tests/helpers.py,
tests/waiting.py, tests/slurm/dev_cluster.py, ...), never from a conftest."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.plugins.slurm_ci import running_in_ci
from tests.slurm.dev_cluster import DEV_CLUSTER, DevCluster, env_from_script, healthy


@pytest.fixture(scope="session")
def slurm_cluster() -> DevCluster:
    """The real SLURM cluster: the one named by a healthy $SLURM_CONF, or the dev cluster (started
    here if needed). Sets SLURM_CONF in os.environ for the whole session so subprocesses see it."""
    conf = os.environ.get("SLURM_CONF")
    if conf and healthy(conf):
        return DevCluster(conf=Path(conf), env={"SLURM_CONF": conf})
    if shutil.which("slurmctld") is None and not running_in_ci() and os.geteuid() != 0:
        pytest.skip("SLURM is not installed and we are not root: run scripts/slurm-dev-cluster up")
    result = subprocess.run(
        [sys.executable, str(DEV_CLUSTER), "up"], capture_output=True, text=True
    )
    if result.returncode != 0:
        message = f"scripts/slurm-dev-cluster up failed:\n{result.stdout}\n{result.stderr}"
        if running_in_ci():
            pytest.fail(message)
        pytest.skip(message)
    env = env_from_script()
    os.environ.update(env)
    return DevCluster(conf=Path(env["SLURM_CONF"]), env=env)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test marked `slurm` gets the cluster fixture, so none can forget it."""
    for item in items:
        if item.get_closest_marker("slurm") and "slurm_cluster" not in getattr(
            item, "fixturenames", ()
        ):
            item.fixturenames.insert(0, "slurm_cluster")
