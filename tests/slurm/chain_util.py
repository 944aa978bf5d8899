"""Helpers of the chain tests on the real cluster: run `ftslurm`, read `status --json`, poll."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ftslurm.chain.ledger import Ledger
from ftslurm.slurm import SlurmClient
from tests import waiting

REPO = Path(__file__).resolve().parents[2]
#: One rank that heartbeats, then does what `$TRIAL_DIR/plan.json` says for its attempt.
FAULT_TRIAL = REPO / "tests" / "integration" / "workloads" / "fault_trial.py"
#: Other tests' jobs may hold the nodes: generous.
DEADLINE_S = 420.0


def ftslurm(*args: str, timeout: float = DEADLINE_S, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ftslurm.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, env=env)


def status(run_dir: Path) -> dict:
    result = ftslurm("status", str(run_dir), "--json", "--sync-timeout", "60")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_for(predicate, what: str, timeout: float = DEADLINE_S):
    """Poll every 2 s (each poll may query SLURM) until `predicate` holds."""
    return waiting.wait_for(predicate, what, timeout=timeout, interval=2.0)


def run_ended(run_dir: Path) -> dict:
    """Poll `ftslurm status` (which completes records from sacct) until the run ended and no
    attempt is in flight."""
    def done() -> dict | None:
        data = status(run_dir)
        busy = [a for a in data["attempts"] if a["status"] != "ended" or a["provisional"]]
        return data if data["state"] != "running" and not busy else None
    return wait_for(done, f"the run in {run_dir} to end")


def queued_jobs(run_dir: Path) -> list[str]:
    """Jobs of the run still pending or running in SLURM."""
    ids = [a.job_id for a in Ledger.open(run_dir).state().attempts if a.job_id]
    summaries = SlurmClient().job_summaries(ids)
    return [job for job, s in summaries.items()
            if s.state in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING")]


def no_jobs_left(run_dir: Path) -> bool:
    """Wait until none of the run's jobs is pending or running (an attempt that recorded its own
    end is still exiting for a moment); True then, a timeout error otherwise."""
    wait_for(lambda: queued_jobs(run_dir) == [], f"the jobs of {run_dir} to leave the queue",
             timeout=120)
    return True


def ran(data: dict) -> list[dict]:
    """The attempts that started (withdrawn successors never did)."""
    return [a for a in data["attempts"] if not a["withdrawn"]]


def submit(spec: Path, *args: str) -> Path:
    result = ftslurm("submit", "--backend", "slurm", *args, str(spec))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "attempt 1: job" in result.stdout
    return spec.parent / "run"


def fault_trial_spec(name: str, run_dir: Path, trial_dir: str, *extra: str) -> str:
    """A job spec of one rank of `fault_trial.py` under the ft launcher (no restart in place:
    a fault ends the attempt), 3 s heartbeat timeout, `TRIAL_DIR` = `trial_dir`."""
    return "\n".join([
        f"name: {name}",
        "nodes: 1",
        "nproc_per_node: 1",
        'time: "10:00"',
        "signals: {warning_time: 120, stop_grace: 10}",
        "launcher: ft",
        "max_restarts: 0",
        f"python: {sys.executable}",
        f"run_dir: {run_dir}",
        f"command: [{FAULT_TRIAL}]",
        f"env: {{TRIAL_DIR: '{trial_dir}'}}",
        "fault_tolerance: {initial_rank_heartbeat_timeout: 60, rank_heartbeat_timeout: 3}",
        *extra,
    ]) + "\n"
