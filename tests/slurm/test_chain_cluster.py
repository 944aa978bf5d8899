"""The auto-resume chain on the real SLURM dev cluster: self-chaining jobs and the watch loop,
failures, the failure budget, do-not-retry, preemption, a node going down, a time limit."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import pytest

from ftslurm.chain.ledger import Ledger
from ftslurm.slurm import SlurmClient, SlurmCommandError
from tests.slurm.chain_util import no_jobs_left, ran, run_ended, submit, wait_for

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
WORKLOAD = REPO / "tests" / "integration" / "workloads" / "chain_workload.sh"


def write_spec(tmp_path: Path, mode: str, *, time_limit: str = "5:00", warning: int = 90,
               extra: str = "") -> Path:
    path = tmp_path / "job.yaml"
    path.write_text("\n".join([
        f"name: chain-{mode}",
        "nodes: 1",
        "nproc_per_node: 1",
        f'time: "{time_limit}"',
        "launcher: none",
        f"python: {sys.executable}",
        f"run_dir: {tmp_path / 'run'}",
        f"command: [bash, {WORKLOAD}, {mode}]",
        f"signals: {{warning_time: {warning}}}",
        extra,
    ]) + "\n")
    return path


@pytest.mark.parametrize("watch", [False, True], ids=["self-chaining", "watch-loop"])
def test_fails_twice_then_finishes(tmp_path: Path, watch: bool) -> None:
    # the same failure twice would be a crash loop: this test is about the failure budget
    spec = write_spec(tmp_path, "fail-twice", extra="autoresume: {stop_on_repeated_failure: false}")
    run_dir = submit(spec, "--max-failures", "3", *(["--watch"] if watch else []))
    data = run_ended(run_dir)
    assert data["state"] == "finished"
    attempts = ran(data)
    assert [(a["outcome"], a["counted_failure"]) for a in attempts] == [
        ("failed", True), ("failed", True), ("finished", False)]
    assert len({a["job_id"] for a in attempts}) == 3
    assert (run_dir / "runs").read_text().strip() == "3"
    assert no_jobs_left(run_dir)
    if not watch:  # the successor pre-scheduled by attempt 3 was withdrawn
        assert all(a["outcome"] == "cancelled" for a in data["attempts"][3:])


def test_a_crash_whose_message_differs_each_time_is_not_a_crash_loop(tmp_path: Path) -> None:
    # the same exception type with another message each time: not "the same crash" (issue 12)
    run_dir = submit(write_spec(tmp_path, "raise-varying"), "--max-failures", "5")
    data = run_ended(run_dir)
    assert data["state"] == "finished", data["reason"]
    attempts = ran(data)
    assert [(a["outcome"], a["counted_failure"]) for a in attempts] == [
        ("failed", True), ("failed", True), ("finished", False)]
    causes = [a["cause"] or "" for a in attempts[:2]]
    assert causes[0].endswith("ValueError: loss is nan at step 100"), causes
    assert causes[1].endswith("ValueError: loss is nan at step 200"), causes
    assert no_jobs_left(run_dir)


def test_max_failures_stops_with_no_successor_left(tmp_path: Path) -> None:
    run_dir = submit(write_spec(tmp_path, "always-fail"), "--max-failures", "2")
    data = run_ended(run_dir)
    assert data["state"] == "failed" and data["failures_left"] == 0
    assert [a["outcome"] for a in ran(data)] == ["failed", "failed"]
    assert (run_dir / "runs").read_text().strip() == "2"
    assert no_jobs_left(run_dir)


def test_do_not_retry_stops_at_once(tmp_path: Path) -> None:
    run_dir = submit(write_spec(tmp_path, "fatal"))
    data = run_ended(run_dir)
    assert data["state"] == "failed"
    assert [(a["outcome"], a["exit_code"]) for a in ran(data)] == [("fatal", 93)]
    assert no_jobs_left(run_dir)


def test_flag_present_before_the_attempt_starts(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "always-fail", extra="sbatch: {begin: now+600}")
    run_dir = submit(spec)
    (run_dir / "finished.flag").touch()  # the attempt is held for 10 min: start it now
    job = Ledger.open(run_dir).state().attempts[0].job_id
    SlurmClient().update_job(str(job), StartTime="now")
    data = run_ended(run_dir)
    assert data["state"] == "finished"
    assert [(a["outcome"], a["reason"][:12]) for a in ran(data)] == [("finished", "not launched")]
    assert not (run_dir / "runs").exists()  # the workload never ran
    assert no_jobs_left(run_dir)


def _holding_attempt(run_dir: Path) -> tuple[str, str]:
    """Wait until attempt 1's workload runs; return its job id and node."""
    wait_for(lambda: (run_dir / "progress").exists(), "the workload to make progress")
    view = Ledger.open(run_dir).state().attempts[0]
    assert view.job_id and view.nodes
    return view.job_id, view.nodes[0]


def test_preemption_by_the_high_priority_partition(tmp_path: Path, slurm_cluster) -> None:
    run_dir = submit(write_spec(tmp_path, "hold"))
    job, node = _holding_attempt(run_dir)
    client = SlurmClient()
    partition = slurm_cluster.high_priority_partition
    urgent = client.run(["sbatch", "--parsable", f"--partition={partition}",
                         f"--nodelist={node}", "--exclusive", "--output=/dev/null",
                         "--wrap=sleep 5"]).strip()
    try:
        data = run_ended(run_dir)
    finally:
        client.cancel(urgent)
    assert data["state"] == "finished"
    attempts = ran(data)
    assert [(a["outcome"], a["counted_failure"]) for a in attempts] == [
        ("preempted", False), ("finished", False)]
    assert attempts[0]["job_id"] == job
    assert no_jobs_left(run_dir)


def test_node_down_under_a_running_attempt(tmp_path: Path) -> None:
    """The workload made progress before its node died: node_fail, not a failure."""
    run_dir = submit(write_spec(tmp_path, "hold"))
    _, node = _holding_attempt(run_dir)
    client = SlurmClient()
    try:
        client.update_node(node, State="DOWN", Reason="ftslurm-chain-test")
        data = run_ended(run_dir)
    finally:
        with contextlib.suppress(SlurmCommandError):  # already back (ReturnToService)
            client.update_node(node, State="RESUME")
    assert data["state"] == "finished"
    attempts = ran(data)
    first, *between, last = attempts
    assert (first["outcome"], first["counted_failure"]) == ("node_fail", False)
    assert first["blamed_nodes"] == [node]
    # A successor queued before the blame may land on the node again once it is back: it does
    # not train there (issue 12), and the next one runs elsewhere.
    assert all(a["outcome"] == "stopped" and "which the chain now excludes" in a["reason"]
               and a["nodes"] == [node] for a in between), between
    assert (last["outcome"], last["counted_failure"]) == ("finished", False)
    assert node not in last["nodes"]
    assert data["excluded_nodes"] == [node]  # for every attempt submitted from now on
    assert no_jobs_left(run_dir)


@pytest.mark.slow
def test_time_limit(tmp_path: Path) -> None:
    """time: 2 min; the workload ignores the stop, so SLURM's time limit ends attempt 1.

    The warning is due 50 s in and SLURM may send it up to ~30 s early (its timer runs every
    30 s): with a 90 s warning it once came 1 s in, before the workload ignored SIGTERM. 70 s
    keeps it at least ~20 s in, well after the workload's first line."""
    run_dir = submit(write_spec(tmp_path, "hold", time_limit="2", warning=70))
    data = run_ended(run_dir)
    assert data["state"] == "finished"
    assert [(a["outcome"], a["counted_failure"]) for a in ran(data)] == [
        ("timeout", False), ("finished", False)], json.dumps(data["attempts"], indent=1)
    assert no_jobs_left(run_dir)
