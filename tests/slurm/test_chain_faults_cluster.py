"""Ordinary faults must never leave a self-chaining run stalled in silence (real cluster).

Each test is a fault seen on the dev cluster that used to leave a run "running" with nothing
running or queued, block `status`/`cancel`, or end the watch loop: a failing setup line, sbatch
failing and then the launch dying of SIGKILL, hooks that cannot run, a sbatch call that hangs
while the user cancels, a controller outage, a leftover reservation, racing submits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ftslurm.chain.ledger import Ledger
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
from tests.slurm.test_chain_cluster import write_spec

pytestmark = pytest.mark.slurm

DEV_CLUSTER = REPO / "scripts" / "slurm-dev-cluster"

#: sbatch in front of the real one, for attempts after the first (FTSLURM_ATTEMPT), steered by
#: files in $TEST_SHIM_DIR: `broken` fails them (a controller that does not answer); `hang N`
#: holds attempt N and later (a controller slow to answer); `lie N` submits attempt N and later
#: but reports "Socket timed out" (the job exists although sbatch failed).
SBATCH_SHIM = """#!/bin/bash
attempt=${FTSLURM_ATTEMPT:-1}
control=$TEST_SHIM_DIR
timed_out="sbatch: error: Batch job submission failed: Socket timed out on send/recv operation"
at_least() { [ -e "$control/$1" ] && [ "$attempt" -ge "$(cat "$control/$1")" ]; }
if [ "$attempt" != 1 ] && [ -e "$control/broken" ]; then echo "$timed_out" >&2; exit 1; fi
while at_least hang; do sleep 0.2; done
if at_least lie; then /usr/bin/sbatch "$@" >/dev/null && echo "$timed_out" >&2; exit 1; fi
exec /usr/bin/sbatch "$@"
"""


def shim_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a submit whose jobs (and their hooks) see the sbatch shim first; the
    jobs inherit it (sbatch's default --export=ALL), TEST_SHIM_DIR included."""
    bin_dir = tmp_path / "shim"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "sbatch").write_text(SBATCH_SHIM)
    (bin_dir / "sbatch").chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "TEST_SHIM_DIR": str(bin_dir)}


def submit_with_shim(tmp_path: Path, mode: str, control: str | None = None,
                     value: str = "") -> Path:
    """Submit `mode`'s spec with the sbatch shim in front, steered by the file `control`."""
    spec = write_spec(tmp_path, mode)
    env = shim_env(tmp_path)
    if control:
        (tmp_path / "shim" / control).write_text(value)
    result = ftslurm("submit", "--backend", "slurm", str(spec), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return tmp_path / "run"


def test_setup_line_failing_once_does_not_stall(tmp_path: Path) -> None:
    marker = tmp_path / "setup-failed-once"
    spec = write_spec(tmp_path, "finish", extra=(
        f'setup: ["test -e {marker} || {{ touch {marker}; false; }}"]'))
    run_dir = submit(spec)
    data = run_ended(run_dir)
    assert data["state"] == "finished", json.dumps(data["attempts"], indent=1)
    attempts = ran(data)
    assert [(a["outcome"], a["counted_failure"]) for a in attempts] == [
        ("failed", True), ("finished", False)]
    assert (run_dir / "runs").read_text().strip() == "1"  # the workload ran once, in attempt 2
    assert no_jobs_left(run_dir)


def test_sbatch_failing_then_the_launch_killed_does_not_stall(tmp_path: Path) -> None:
    """Nothing could be queued (sbatch broken in submit and in chain-start), then the launch died
    of SIGKILL: chain-end's provisional end must queue a successor."""
    run_dir = submit_with_shim(tmp_path, "kill-once", "broken")
    data = run_ended(run_dir)
    assert data["state"] == "finished", json.dumps(data["attempts"], indent=1)
    attempts = ran(data)
    assert attempts[0]["outcome"] == "failed" and attempts[0]["counted_failure"]
    assert attempts[-1]["outcome"] == "finished" and len(attempts) == 2
    log = (run_dir / "logs" / f"{attempts[0]['job_id']}.out").read_text()
    assert "could not queue attempt" in log  # the swallowed error is in the job's log
    assert no_jobs_left(run_dir)


def test_hooks_that_cannot_run_never_launch_and_the_stall_is_flagged(tmp_path: Path) -> None:
    """An interpreter that cannot run the hooks (as with `sbatch --export=NONE`): the training
    must not launch, and `status` flags the run that nothing keeps going."""
    python = tmp_path / "python"
    python.write_text(f'#!/bin/bash\nif [ "$1 $2" = "-m ftslurm.cli" ]; then\n'
                      f'  echo "no ftslurm here" >&2; exit 1\nfi\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    spec = write_spec(tmp_path, "finish")
    spec.write_text(spec.read_text().replace(f"python: {sys.executable}", f"python: {python}"))
    run_dir = submit(spec, "--max-failures", "2")
    data = wait_for(lambda: (d := status(run_dir))["stalled"] and d, "the stall to be flagged")
    assert not (run_dir / "runs").exists()  # the workload never ran
    assert [(a["outcome"], a["exit_code"]) for a in data["attempts"]] == [("failed", 1)] * 2
    assert data["stalled"]["repair"] == f"ftslurm watch --once {run_dir}"
    table = ftslurm("status", str(run_dir)).stdout
    assert "STALLED: nothing running or queued since" in table
    repaired = ftslurm("watch", "--once", str(run_dir))
    assert repaired.returncode == 0, repaired.stderr
    data = status(run_dir)
    assert data["state"] == "failed" and data["stalled"] is None
    assert "2 consecutive failed attempts" in data["reason"]


def test_cancel_while_a_submission_hangs_in_the_scheduler(tmp_path: Path) -> None:
    """chain-start queues attempt 3 through a sbatch that hangs: status and cancel must not wait
    for it (no lock across scheduler calls), and the reservation its killed submitter leaves is
    withdrawn, not left in flight."""
    run_dir = submit_with_shim(tmp_path, "wait-file", "hang", "3")
    wait_for(lambda: (view := Ledger.open(run_dir).state().attempt(3)) and view.claim_owner,
             "attempt 3's submission to hang")
    assert ftslurm("status", str(run_dir), "--no-sync", timeout=60).returncode == 0
    cancelled = ftslurm("cancel", str(run_dir), "--json", timeout=240)
    assert cancelled.returncode == 0, cancelled.stderr
    data = json.loads(cancelled.stdout)
    assert data["state"] == "cancelled"
    assert all(a["status"] == "ended" for a in data["attempts"]), data["attempts"]
    third = data["attempts"][2]
    assert third["withdrawn"] and "never submitted" in third["reason"], third
    assert not (run_dir / "go").exists() and no_jobs_left(run_dir)


def test_cancel_finds_a_job_whose_sbatch_reported_a_failure(tmp_path: Path) -> None:
    """sbatch said "Socket timed out" but the job exists: the cancel looks the reservation's tag
    up in the scheduler and cancels that job too."""
    run_dir = submit_with_shim(tmp_path, "wait-file", "lie", "3")
    wait_for(lambda: (view := Ledger.open(run_dir).state().attempt(3)) and view.submit_error,
             "attempt 3's submission to fail")
    cancelled = ftslurm("cancel", str(run_dir), "--json", timeout=240)
    assert cancelled.returncode == 0, cancelled.stderr
    third = json.loads(cancelled.stdout)["attempts"][2]
    assert third["withdrawn"] and third["job_id"], third  # found by its tag, cancelled
    assert no_jobs_left(run_dir)  # that job included


def cluster_daemon(action: str, daemon: str) -> None:
    subprocess.run([sys.executable, str(DEV_CLUSTER), action, daemon], check=True,
                   capture_output=True, timeout=120)


def test_controller_outage(tmp_path: Path) -> None:
    """slurmctld and slurmdbd down (a maintenance): `status` answers from the run dir and says
    its view is stale; the watch loop keeps going through the outage and finishes the run when
    the scheduler is back."""
    spec = write_spec(tmp_path, "wait-file")
    run_dir = tmp_path / "run"
    out = tmp_path / "watch.out"
    with open(out, "w") as sink:
        watcher = subprocess.Popen(
            [sys.executable, "-m", "ftslurm.cli", "submit", "--backend", "slurm", "--watch",
             str(spec)], cwd=REPO, stdout=sink, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: (run_dir / "progress").exists(), "the workload to run", timeout=300)
        cluster_daemon("stop", "slurmctld")
        cluster_daemon("stop", "slurmdbd")
        try:
            result = ftslurm("status", str(run_dir), "--json", timeout=30)
            assert result.returncode == 0, result.stderr
            data = json.loads(result.stdout)
            assert data["scheduler"]["stale"] and data["state"] == "running"
            assert data["stalled"] is None  # a stale view never claims a stall
            wait_for(lambda: "scheduler unreachable since" in out.read_text(),
                     "the watch loop to report the outage", timeout=300)
            assert watcher.poll() is None  # still watching
            (run_dir / "go").touch()
        finally:
            cluster_daemon("start", "slurmdbd")
            cluster_daemon("start", "slurmctld")
        watcher.wait(timeout=600)
    finally:
        if watcher.poll() is None:
            watcher.kill()
    output = out.read_text()
    assert watcher.returncode == 0, output
    assert "scheduler answers again" in output
    assert run_ended(run_dir)["state"] == "finished"


def test_watch_returns_on_a_finished_run_with_a_leftover_reservation(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "finish", extra="sbatch: {begin: now+600}")
    run_dir = submit(spec)
    ledger = Ledger.open(run_dir)
    # A watcher that died right after reserving the next attempt (before its sbatch).
    leftover, _ = ledger.reserve(ledger.state().next_attempt)
    (run_dir / "finished.flag").touch()
    SlurmClient().update_job(str(ledger.state().attempts[0].job_id), StartTime="now")
    wait_for(lambda: Ledger.open(run_dir).state().run_status == "finished", "the run to finish")
    watched = ftslurm("watch", str(run_dir), timeout=300)
    assert watched.returncode == 0, watched.stdout + watched.stderr
    view = Ledger.open(run_dir).state().attempt(leftover.number)
    assert view.status == "ended" and "never submitted" in (view.reason or "")
    assert no_jobs_left(run_dir)


def test_racing_submits_of_different_specs_into_one_run_dir(tmp_path: Path) -> None:
    specs = []
    for mode in ("finish", "fatal"):
        folder = tmp_path / mode
        folder.mkdir()
        path = write_spec(folder, mode)
        path.write_text(path.read_text().replace(f"run_dir: {folder / 'run'}",
                                                 f"run_dir: {tmp_path / 'run'}"))
        specs.append(path)
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda s: ftslurm("submit", "--backend", "slurm", str(s)), specs))
    codes = sorted(r.returncode for r in results)
    assert codes == [0, 2], [r.stdout + r.stderr for r in results]
    winner = specs[[r.returncode for r in results].index(0)]
    loser = results[[r.returncode for r in results].index(2)]
    run_dir = tmp_path / "run"
    assert str(run_dir) in loser.stderr
    assert (run_dir / "job.yaml").read_text() == winner.read_text()
    mode = winner.parent.name
    assert f"chain_workload.sh {mode}" in (run_dir / "job.sbatch").read_text()
    data = run_ended(run_dir)
    assert data["state"] == ("finished" if mode == "finish" else "failed")
    assert no_jobs_left(run_dir)


def test_flag_file_on_the_ledger_is_refused_before_anything_is_submitted(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "finish", extra="autoresume: {flag_file: run/ledger.json}")
    result = ftslurm("submit", "--backend", "slurm", str(spec))
    assert result.returncode == 2 and "flag_file" in result.stderr, result.stderr
    assert not (tmp_path / "run").exists()
    names = SlurmClient().run(["squeue", "-h", "-o", "%j"]).split()
    assert not [name for name in names if name.startswith("chain-finish")]


def test_unusable_lock_file(tmp_path: Path) -> None:
    """A lock file that cannot be locked: reading still works, changing names the file, exit 3."""
    run_dir = submit(write_spec(tmp_path, "finish"))
    run_ended(run_dir)
    lock = run_dir / "ledger.json.lock"
    lock.unlink()
    lock.mkdir()
    looked = ftslurm("status", str(run_dir), "--no-sync")
    assert looked.returncode == 0 and "finished" in looked.stdout, looked.stderr
    changed = ftslurm("submit", "--backend", "slurm", "--resume", str(tmp_path / "job.yaml"))
    assert changed.returncode == 3, changed.stderr
    assert str(lock) in changed.stderr and "Traceback" not in changed.stderr


def test_pending_reason_is_shown(tmp_path: Path) -> None:
    run_dir = submit(write_spec(tmp_path, "finish", extra="sbatch: {begin: now+600}"))
    data = wait_for(lambda: (d := status(run_dir))["attempts"][0]["pending_reason"] and d,
                    "the pending reason")
    assert data["attempts"][0]["pending_reason"] == "BeginTime"
    # SLURM's scheduling passes may blank the reason for a moment: poll the table too.
    wait_for(lambda: "pending: BeginTime" in ftslurm("status", str(run_dir), "--sync-timeout",
                                                     "60").stdout, "the table's pending reason")
    assert ftslurm("cancel", str(run_dir)).returncode == 0
    assert no_jobs_left(run_dir)
