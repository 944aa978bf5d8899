"""A node lost under a 2-node attempt, on a 3-node cluster of its own (issue 12): the scheduler
names the node, the chain blames and excludes it, and the run finishes on the other two.

The dev cluster runs with `ReturnToService=2`, so a node set DOWN is back within the second:
by the time anybody asks `scontrol`, it looks healthy. The blame comes from slurmdbd's node
events (`sacctmgr show event`), and a successor that SLURM started on the node before the blame
reached it steps aside for the next one, which is kept off the node.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ftslurm.chain.ledger import Ledger
from ftslurm.chain.outcome import AttemptStatus
from ftslurm.slurm import SlurmClient, SlurmCommandError
from tests.slurm.chain_util import ftslurm, no_jobs_left, ran, run_ended, submit, wait_for
from tests.slurm.dev_cluster import DEV_CLUSTER

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "examples" / "ddp_resume" / "train.py"
#: Ports of this module's cluster: clear of the session's dev cluster and test_dev_cluster's.
BASE_PORT = "18900"
DOWN_REASON = "ftslurm-node-failure-test"


def _cluster_script(*args: str, cluster_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(DEV_CLUSTER), *args, "--dir", str(cluster_dir)],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def three_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A 3-node dev cluster for this module; SLURM_CONF points at it while the module runs."""
    cluster_dir = tmp_path_factory.mktemp("three-nodes")
    up = _cluster_script("up", "--nodes", "3", "--base-port", BASE_PORT, cluster_dir=cluster_dir)
    assert up.returncode == 0, up.stdout + up.stderr
    conf = cluster_dir / "etc" / "slurm.conf"
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)
    try:
        yield conf
    finally:
        if before is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = before
        down = _cluster_script("down", cluster_dir=cluster_dir)
        assert down.returncode == 0, down.stdout + down.stderr


def write_spec(tmp_path: Path) -> Path:
    """2 nodes x 1 rank of the DDP example: ~15 s of training, a checkpoint every 20 steps."""
    path = tmp_path / "job.yaml"
    path.write_text("\n".join([
        "name: node-failure",
        "nodes: 2",
        "nproc_per_node: 1",
        'time: "10:00"',
        "launcher: ft",
        "max_restarts: 0",
        f"python: {sys.executable}",
        f"run_dir: {tmp_path / 'run'}",
        f"command: [{TRAIN}, --steps, '300', --step-time, '0.05', --ckpt-every, '20']",
        "env: {OMP_NUM_THREADS: '1'}",
        "autoresume: {max_failures: 2}",
    ]) + "\n")
    return path


def test_a_lost_node_is_blamed_excluded_and_the_run_finishes_on_the_others(
        tmp_path: Path, three_nodes: Path) -> None:
    run_dir = submit(write_spec(tmp_path))
    wait_for(lambda: (run_dir / "checkpoints" / "last.pt").exists(), "attempt 1 to train")
    first = Ledger.open(run_dir).state().attempt(1)
    assert first is not None and len(first.nodes) == 2, first
    lost = first.nodes[-1]
    client = SlurmClient()
    client.update_node(lost, State="DOWN", Reason=DOWN_REASON)
    try:
        wait_for(lambda: Ledger.open(run_dir).state().attempt(1).status is AttemptStatus.ENDED,
                 "attempt 1's end to be recorded")
    finally:
        with contextlib.suppress(SlurmCommandError):  # back already (ReturnToService=2)
            client.update_node(lost, State="RESUME")
    data = run_ended(run_dir)
    assert no_jobs_left(run_dir)

    assert data["state"] == "finished", data
    attempts = ran(data)
    failed, *between, last = attempts
    assert (failed["outcome"], failed["counted_failure"]) == ("node_fail", False)
    assert failed["blamed_nodes"] == [lost]  # only the node the scheduler names
    assert failed["cause"] == f"node {lost} lost (NODE_FAIL)"
    # A successor SLURM started on the node before the blame reached it steps aside; the next
    # one is kept off the node.
    assert all(a["outcome"] == "stopped" and "which the chain now excludes" in a["reason"]
               and lost in a["nodes"] for a in between), between
    assert last["outcome"] == "finished" and lost not in last["nodes"], last
    assert len(last["nodes"]) == 2
    assert data["excluded_nodes"] == [lost] and data["failures_left"] == 2

    explained = ftslurm("explain", str(run_dir), "--attempt", "1", "--json")
    assert explained.returncode == 0, explained.stderr
    record = json.loads(explained.stdout)
    assert [(e["node"], e["kind"]) for e in record["node_evidence"]] == [(lost, "node_fail")]
    assert f"DOWN ({DOWN_REASON})" in record["node_evidence"][0]["detail"]
    # the decision, written by the successor that settled attempt 1 (its own end hook died
    # with the job): not counted, the run goes on without the node
    assert record["decision"]["counted"] is False, record["decision"]
    assert record["decision"]["excluded_nodes"] == [lost], record["decision"]
