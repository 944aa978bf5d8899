"""Graceful stop on the real cluster, with real training: examples/ddp_resume/train.py on 2 nodes
under the ft launcher. The time-limit warning and a preemption each make every rank stop at the
same step and save a checkpoint; the next attempt resumes from exactly that step; the ledger
counts no failure."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from ftslurm.slurm import SlurmClient
from tests.slurm.chain_util import (
    REPO,
    ftslurm,
    no_jobs_left,
    ran,
    run_ended,
    status,
    submit,
    wait_for,
)

pytestmark = pytest.mark.slurm

TRAIN = REPO / "examples" / "ddp_resume" / "train.py"


def write_spec(tmp_path: Path, *, time_limit: str, warning_time: int) -> Path:
    """2 nodes x 1 rank of train.py, long enough never to finish within one attempt."""
    path = tmp_path / "job.yaml"
    path.write_text("\n".join([
        "name: graceful",
        "nodes: 2",
        "nproc_per_node: 1",
        f'time: "{time_limit}"',
        "launcher: ft",
        "max_restarts: 0",
        f"python: {sys.executable}",
        f"run_dir: {tmp_path / 'run'}",
        f"command: [{TRAIN}, --steps, '1000000', --ckpt-every, '50', --step-time, '0.02']",
        "env: {OMP_NUM_THREADS: '1'}",
        f"signals: {{warning_time: {warning_time}, stop_grace: 30}}",
    ]) + "\n")
    return path


def attempt_log(run_dir: Path, attempt: int) -> str:
    result = ftslurm("logs", str(run_dir), "--attempt", str(attempt))
    return result.stdout if result.returncode == 0 else ""


def stopped_step(run_dir: Path, attempt: int) -> int | None:
    # "stopped by SIGTERM at step N", or "stopped by a peer ..." on a rank the signal missed
    found = re.search(r"stopped by (?:a peer|\S+) at step (\d+); checkpoint saved",
                      attempt_log(run_dir, attempt))
    return int(found.group(1)) if found else None


def resumed_step(run_dir: Path, attempt: int) -> int | None:
    found = re.search(r"resuming at step (\d+) of", attempt_log(run_dir, attempt))
    return int(found.group(1)) if found else None


def second_attempt_resumes(run_dir: Path) -> tuple[int, int]:
    """Wait until attempt 2 has resumed; return (step attempt 1 stopped at, step resumed at)."""
    wait_for(lambda: resumed_step(run_dir, 2) is not None, "attempt 2 to resume")
    return stopped_step(run_dir, 1) or -1, resumed_step(run_dir, 2) or -1


def end_the_run(run_dir: Path) -> dict:
    result = ftslurm("cancel", str(run_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    return run_ended(run_dir)


@pytest.mark.slow
def test_time_limit_warning_stops_checkpoints_and_resumes(tmp_path: Path) -> None:
    # time 3 min, warning 60 s before: it comes 60-120 s in (SLURM may send it a minute early).
    run_dir = submit(write_spec(tmp_path, time_limit="3", warning_time=60))
    try:
        stopped, resumed = second_attempt_resumes(run_dir)
    finally:
        data = end_the_run(run_dir)
    assert stopped > 0 and resumed == stopped, attempt_log(run_dir, 1)[-3000:]
    first = ran(data)[0]
    assert first["outcome"] in {"stopped", "timeout"} and first["exit_code"] == 94, first
    assert not any(a["counted_failure"] for a in ran(data))
    assert no_jobs_left(run_dir)


def test_preemption_stops_checkpoints_and_resumes(tmp_path: Path, slurm_cluster) -> None:
    run_dir = submit(write_spec(tmp_path, time_limit="10:00", warning_time=60))
    checkpoint = run_dir / "checkpoints" / "last.pt"
    client = SlurmClient()
    urgent = None
    try:
        wait_for(checkpoint.exists, "attempt 1 to train (its first periodic checkpoint)")
        urgent = client.run([
            "sbatch", "--parsable", f"--partition={slurm_cluster.high_priority_partition}",
            "--nodes=2", "--exclusive", "--output=/dev/null", "--wrap=sleep 5"]).strip()
        stopped, resumed = second_attempt_resumes(run_dir)
    finally:
        if urgent:
            client.cancel(urgent)
        data = end_the_run(run_dir)
    assert stopped > 0 and resumed == stopped, attempt_log(run_dir, 1)[-3000:]
    first = ran(data)[0]
    assert first["outcome"] in {"preempted", "stopped"}, first
    assert not any(a["counted_failure"] for a in ran(data))
    assert status(run_dir)["state"] == "cancelled"
    assert no_jobs_left(run_dir)
