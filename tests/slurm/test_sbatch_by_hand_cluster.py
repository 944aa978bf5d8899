"""Issue 13 on the real dev cluster: `ftslurm render -o job.sbatch && sbatch job.sbatch` starts a
self-resuming run; a second `sbatch` of the same script never trains beside the first; options
added on sbatch's command line hold for the job they were given to; a graceful stop for the time
limit ends COMPLETED in SLURM's accounting."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ftslurm.chain.ledger import Ledger
from ftslurm.slurm import SlurmClient
from tests.slurm.chain_util import ftslurm, no_jobs_left, ran, run_ended, wait_for
from tests.slurm.test_chain_cluster import write_spec

pytestmark = pytest.mark.slurm


def render_to_file(spec: Path) -> Path:
    script = spec.parent / "job.sbatch"
    result = ftslurm("render", str(spec), "-o", str(script))
    assert result.returncode == 0, result.stderr
    return script


def sbatch(script: Path, *options: str) -> str:
    """`sbatch` by hand, from the script's folder, as a user would; the job id."""
    out = subprocess.run(["sbatch", "--parsable", *options, script.name], cwd=script.parent,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return out.strip().split(";")[0]


def accounting(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """Each job's (State, Timelimit) as sacct reports its allocation."""
    out = SlurmClient().run(["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids),
                             "--format=JobIDRaw,State,Timelimit"])
    rows = (line.split("|") for line in out.splitlines() if line.strip())
    return {job: (state, limit) for job, state, limit in rows}


def test_sbatch_of_a_rendered_script_crashes_once_and_finishes(tmp_path: Path) -> None:
    script = render_to_file(write_spec(tmp_path, "fail-once", time_limit="10:00"))
    first_job = sbatch(script, "--time=00:05:00")  # an option added by hand
    run_dir = tmp_path / "run"
    data = run_ended(run_dir)
    assert no_jobs_left(run_dir)

    assert data["state"] == "finished", data["reason"]
    attempts = ran(data)
    assert [(a["job_id"], a["outcome"], a["counted_failure"], a["submitted_by_hand"])
            for a in attempts] == [(first_job, "failed", True, True),
                                   (attempts[1]["job_id"], "finished", False, False)]
    status = ftslurm("status", str(run_dir))
    assert status.returncode == 0 and first_job in status.stdout, status.stdout
    explained = ftslurm("explain", str(run_dir), "--attempt", "1")
    assert explained.returncode == 0 and f"attempt 1 (job {first_job}): failed" in \
        explained.stdout, explained.stdout + explained.stderr
    limits = accounting([a["job_id"] for a in attempts])
    assert limits[first_job][1] == "00:05:00"  # sbatch's own option held for its job
    assert limits[attempts[1]["job_id"]][1] == "00:10:00"  # the chain submits the script's


def test_two_sbatch_at_once_never_train_side_by_side(tmp_path: Path) -> None:
    script = render_to_file(write_spec(tmp_path, "wait-file", time_limit="10:00"))
    jobs = [sbatch(script), sbatch(script)]
    run_dir = tmp_path / "run"
    logs = run_dir / "logs"

    def refused() -> str | None:
        for job in jobs:
            log = logs / f"{job}.out"
            if log.exists() and "(submitted by hand) does not train" in log.read_text():
                return job
        return None

    loser = wait_for(refused, "one of the two jobs to be refused")
    (run_dir / "go").touch()
    data = run_ended(run_dir)
    assert no_jobs_left(run_dir)

    assert data["state"] == "finished", data["reason"]
    winner = next(job for job in jobs if job != loser)
    trained = [a for a in ran(data) if not (a["reason"] or "").startswith("not launched")]
    assert [(a["job_id"], a["outcome"], a["submitted_by_hand"]) for a in trained] == [
        (winner, "finished", True)]
    assert loser not in {a.job_id for a in Ledger.open(run_dir).state().attempts}
    assert "already running or queued; two attempts never train at once" in \
        (logs / f"{loser}.out").read_text()
    assert (run_dir / "runs").read_text().strip() == "1"  # the workload ran once
    assert all(not a["counted_failure"] for a in data["attempts"])
    assert accounting([loser])[loser][0] == "COMPLETED"  # refused is not a failure


def test_cancel_stops_a_run_started_by_hand(tmp_path: Path) -> None:
    script = render_to_file(write_spec(tmp_path, "wait-file", time_limit="10:00"))
    job = sbatch(script)
    run_dir = tmp_path / "run"
    wait_for(lambda: (run_dir / "progress").exists(), "the job submitted by hand to train")
    cancelled = ftslurm("cancel", str(run_dir))
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    data = run_ended(run_dir)
    assert no_jobs_left(run_dir)
    assert data["state"] == "cancelled"
    assert [(a["job_id"], a["submitted_by_hand"]) for a in ran(data)] == [(job, True)]
    assert all(a["outcome"] == "cancelled" for a in data["attempts"][1:])  # its successors


@pytest.mark.slow
def test_a_graceful_stop_for_the_time_limit_is_completed_in_sacct(tmp_path: Path) -> None:
    """time 2 min, warning 70 s before (SLURM may send it up to a minute early): attempt 1
    stops on it (exit 94 like a launcher that stopped its ranks); attempt 2 finishes."""
    script = render_to_file(write_spec(tmp_path, "stop-on-term", time_limit="2", warning=70))
    first_job = sbatch(script)
    run_dir = tmp_path / "run"
    data = run_ended(run_dir)
    assert no_jobs_left(run_dir)

    assert data["state"] == "finished", data["reason"]
    attempts = ran(data)
    assert [(a["outcome"], a["counted_failure"]) for a in attempts] == [
        ("stopped", False), ("finished", False)], attempts
    assert attempts[0]["job_id"] == first_job and attempts[0]["exit_code"] == 94
    states = accounting([a["job_id"] for a in attempts])
    assert [states[a["job_id"]][0] for a in attempts] == ["COMPLETED", "COMPLETED"], states
