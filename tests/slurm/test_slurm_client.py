"""SlurmClient against the real dev cluster (scripts/slurm-dev-cluster): exit codes and nodes,
preemption with requeue, cancellation."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ftslurm.slurm import JobSummary, SlurmClient, SlurmCommandError, SubmittedJob
from tests import waiting

pytestmark = pytest.mark.slurm

T = TypeVar("T")
DEADLINE_S = 240.0  # generous: other engineers' jobs may hold the two nodes for a while
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
            "PREEMPTED", "BOOT_FAIL", "DEADLINE"}


def wait_for(predicate: Callable[[], T], what: str, timeout: float = DEADLINE_S) -> T:
    """Poll every 0.5 s (each poll asks SLURM) until `predicate` returns something truthy."""
    return waiting.wait_for(predicate, what, timeout=timeout, interval=0.5)


@pytest.fixture()
def client() -> SlurmClient:
    return SlurmClient(timeout=60)


@pytest.fixture()
def submit(client: SlurmClient) -> Iterator[Callable[..., SubmittedJob]]:
    """`client.submit`, cancelling every job it submitted when the test ends."""
    submitted: list[str] = []

    def _submit(path: Path, **kwargs: Any) -> SubmittedJob:
        job = client.submit(path, **kwargs)
        submitted.append(job.job_id)
        return job

    yield _submit
    for job_id in submitted:
        with contextlib.suppress(SlurmCommandError):  # already gone
            client.cancel(job_id)


def script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    return path


def job_args(tmp_path: Path, *extra: str) -> list[str]:
    """Output and working directory under the test's tmp_path."""
    return ["--chdir", str(tmp_path), "-o", str(tmp_path / "%x-%j.out"), *extra]


def summary_of(client: SlurmClient, job_id: str) -> JobSummary | None:
    return client.job_summaries([job_id]).get(job_id)


def test_two_node_job_exiting_3_is_failed_with_code_3_on_both_nodes(
    client: SlurmClient, submit: Callable[..., SubmittedJob], tmp_path: Path, slurm_cluster
) -> None:
    job = submit(
        script(tmp_path, "fail.sh", "srun true\nexit 3"),
        extra_args=job_args(tmp_path, "-N", "2", "-p", slurm_cluster.default_partition),
    )

    def finished() -> JobSummary | None:
        summary = summary_of(client, job.job_id)
        # sacct may list the allocation as ended while its batch step is still RUNNING, or
        # before it lists the batch step at all
        done = (summary and summary.state in TERMINAL and summary.allocation.end is not None
                and any(step.step == "batch" for step in summary.steps)
                and all(step.end is not None for step in summary.steps))
        return summary if done else None

    summary = wait_for(finished, f"job {job.job_id} to end")
    assert summary.state == "FAILED"
    assert (summary.allocation.exit_code, summary.allocation.signal) == (3, 0)
    assert summary.allocation.nodes == tuple(slurm_cluster.nodes)
    batch = {s.step: s for s in summary.steps}["batch"]
    assert batch.exit_code == 3
    srun_step = {s.step: s for s in summary.steps}["0"]
    assert (srun_step.state, srun_step.nodes) == ("COMPLETED", tuple(slurm_cluster.nodes))


def test_job_preempted_by_urgent_partition_is_requeued(
    client: SlurmClient, submit: Callable[..., SubmittedJob], tmp_path: Path, slurm_cluster
) -> None:
    whole_cluster = ["-N", str(len(slurm_cluster.nodes)), "--exclusive"]
    low = submit(
        script(tmp_path, "low.sh", "exec sleep 600"),
        extra_args=job_args(tmp_path, *whole_cluster, "--requeue",
                            "-p", slurm_cluster.default_partition),
    )
    wait_for(lambda: (s := summary_of(client, low.job_id)) and s.state == "RUNNING",
             f"job {low.job_id} to run")

    submit(
        script(tmp_path, "urgent.sh", "true"),
        extra_args=job_args(tmp_path, *whole_cluster, "-p", slurm_cluster.high_priority_partition),
    )

    def requeued() -> JobSummary | None:
        summary = summary_of(client, low.job_id)
        return summary if summary and summary.earlier_runs else None

    summary = wait_for(requeued, f"job {low.job_id} to be preempted and requeued")
    assert summary.earlier_runs[0].state in {"PREEMPTED", "REQUEUED"}
    assert summary.earlier_runs[0].nodes == tuple(slurm_cluster.nodes)
    assert summary.state == "PENDING"
    assert summary.allocation.restart_index == 1

    # A requeued job waits ~2 minutes (BeginTime) unless told to start now.
    client.update_job(low.job_id, StartTime="now")
    wait_for(lambda: (s := summary_of(client, low.job_id)) and s.state == "RUNNING",
             f"requeued job {low.job_id} to run again")


def test_cancelled_running_job_is_cancelled(
    client: SlurmClient, submit: Callable[..., SubmittedJob], tmp_path: Path, slurm_cluster
) -> None:
    job = submit(
        script(tmp_path, "sleep.sh", "exec sleep 600"),
        extra_args=job_args(tmp_path, "-p", slurm_cluster.default_partition),
    )
    wait_for(lambda: (s := summary_of(client, job.job_id)) and s.state == "RUNNING",
             f"job {job.job_id} to run")
    client.cancel(job.job_id)
    summary = wait_for(
        lambda: (s := summary_of(client, job.job_id)) and s.state in TERMINAL and s,
        f"job {job.job_id} to end",
    )
    assert summary.state == "CANCELLED"
    # Accounting catches up with the controller: sacct then also names who cancelled.
    settled = wait_for(
        lambda: (s := summary_of(client, job.job_id)) and s.allocation.source == "sacct" and s,
        f"accounting of job {job.job_id}",
    )
    assert (settled.state, settled.allocation.cancelled_by) == ("CANCELLED", os.getuid())


def test_signal_to_batch_shell_lets_the_job_stop_cleanly(
    client: SlurmClient, submit: Callable[..., SubmittedJob], tmp_path: Path, slurm_cluster
) -> None:
    marker, ready = tmp_path / "got-usr1", tmp_path / "trap-installed"
    job = submit(
        script(tmp_path, "trap.sh",
               f"trap 'echo USR1 > {marker}; exit 0' USR1\ntouch {ready}\nsleep 600 &\nwait"),
        extra_args=job_args(tmp_path, "-p", slurm_cluster.default_partition),
    )
    # RUNNING comes before the batch shell runs: a signal sent then finds no trap yet.
    wait_for(ready.exists, f"job {job.job_id}'s batch shell to install its trap")
    client.cancel(job.job_id, signal="USR1", batch=True)
    summary = wait_for(
        lambda: (s := summary_of(client, job.job_id)) and s.state in TERMINAL and s,
        f"job {job.job_id} to end after USR1",
    )
    assert summary.state == "COMPLETED"
    assert marker.read_text().strip() == "USR1"
