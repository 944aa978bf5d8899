"""Issue 12 on the real dev cluster: `ftslurm explain` names the rank that failed first, its node
and its error; its peers are victims; no node is blamed; the same crash twice is a crash loop."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.slurm.chain_util import ftslurm, no_jobs_left, ran, run_ended, submit

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
WORKLOAD = REPO / "tests" / "integration" / "workloads" / "ft_workload.py"


def write_spec(tmp_path: Path, fault: str, extra: str = "") -> Path:
    """2 nodes x 2 ranks of the ft workload; `fault` is its fault option, e.g. `--boom, 3:0`."""
    out = tmp_path / "out"
    out.mkdir()
    path = tmp_path / "job.yaml"
    path.write_text("\n".join([
        "name: explain",
        "nodes: 2",
        "nproc_per_node: 2",
        'time: "5:00"',
        "launcher: ft",
        "max_restarts: 0",
        f"python: {sys.executable}",
        f"run_dir: {tmp_path / 'run'}",
        f"command: [{WORKLOAD}, --out, {out}, --steps, '400', --step-time, '0.05', {fault}]",
        "env: {OMP_NUM_THREADS: '1'}",
        "signals: {warning_time: 90, stop_grace: 30}",
        "autoresume: {max_failures: 5}",
        extra,
    ]) + "\n")
    return path


def explain(run_dir: Path, attempt: int) -> dict:
    result = ftslurm("explain", str(run_dir), "--attempt", str(attempt), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_the_rank_that_raised_is_the_culprit_and_the_same_crash_twice_stops(
        tmp_path: Path) -> None:
    # rank 3 (node n2, local rank 1) raises ValueError("boom") in every attempt
    run_dir = submit(write_spec(tmp_path, "--boom, '3:0'"))
    data = run_ended(run_dir)
    assert no_jobs_left(run_dir)

    record = explain(run_dir, 1)
    culprit = record["culprit"]
    assert (culprit["rank"], culprit["error"]["line"]) == (3, "ValueError: boom"), culprit
    node = culprit["node"]
    assert node in ("n1", "n2")
    assert sorted(v["rank"] for v in record["victims"]) == [0, 1, 2], record["victims"]
    assert record["node_evidence"] == [] and record["signature"] == "ValueError: boom"
    story = ftslurm("explain", str(run_dir), "--attempt", "1").stdout
    assert f"rank 3 @ {node}" in story and "ValueError: boom" in story

    # an application error blames no node; the same crash twice without progress stops the run
    attempts = ran(data)
    assert all(a["blamed_nodes"] == [] for a in attempts) and data["excluded_nodes"] == []
    assert [a["outcome"] for a in attempts] == ["failed", "failed"]
    assert data["state"] == "failed" and data["reason"].startswith("crash loop:"), data["reason"]
    assert data["failures_left"] == 3
    assert attempts[0]["cause"] == f"rank 3 @ {node}: ValueError: boom"


def test_a_hung_rank_is_named_with_the_stacks_of_its_nodes_ranks(tmp_path: Path) -> None:
    # rank 3 stops heartbeating (blocked, like a rank stuck in a collective) in every attempt
    run_dir = submit(write_spec(tmp_path, "--hang, '3:0'", extra=(
        "fault_tolerance: {initial_rank_heartbeat_timeout: 120, rank_heartbeat_timeout: 3}")))
    data = run_ended(run_dir)
    assert no_jobs_left(run_dir)

    first, second = explain(run_dir, 1), explain(run_dir, 2)
    hang = first["hang"]
    # Its peers stop heartbeating too (they wait in the all_reduce rank 3 never joins): the
    # culprit is the hung rank that is not waiting in a collective.
    assert hang is not None and hang["rank"] == 3, first
    assert hang["timeout"] == 3 and hang["timeout_source"] == "written"
    # every rank of the hung rank's node dumped its stacks: who waits on whom
    node_ranks = {str(r["rank"]) for r in first["ranks"] if r["node"] == hang["node"]}
    assert node_ranks <= set(hang["stacks"]) and "3" in node_ranks, sorted(hang["stacks"])
    assert "hang_forever_in_here" in hang["stacks"]["3"]
    # Its node-mates were dumped before anything was stopped: they wait in the all_reduce. (The
    # other node may dump too, but its ranks may already be failing in a collective the stopped
    # node broke, so their stacks need not show the all_reduce.)
    waiting = {rank: hang["stacks"][rank] for rank in node_ranks - {"3"}}
    assert waiting and all("all_reduce" in text for text in waiting.values()), waiting
    assert first["culprit"]["rank"] == 3 and first["signature"] == "hang"
    # one hang blames no node; the same hang on the same node in the next attempt does, and the
    # same hang twice without progress is a crash loop
    attempts = ran(data)
    assert attempts[0]["blamed_nodes"] == []
    same_node = second["hang"]["node"] == hang["node"]
    assert attempts[1]["blamed_nodes"] == ([hang["node"]] if same_node else [])
    assert data["state"] == "failed" and data["reason"].startswith("crash loop:"), data["reason"]
