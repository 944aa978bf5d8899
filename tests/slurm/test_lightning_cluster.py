"""Issue 7's acceptance run on the real dev cluster: examples/lightning/train.py (Lightning DDP on
gloo with `FaultToleranceCallback`) on 2 nodes x 1 rank under the ft launcher, driven by
`ftslurm submit --max-failures 3`, survives one fault of each kind, one per attempt:

1. a rank crashes at the same step after every in-place restart: the launcher gives up, the
   attempt fails (counted);
2. a rank hangs once: the launcher finds it and restarts the ranks in place, training goes on;
   then the time-limit warning ends the attempt with a synchronized stop and checkpoint (not
   counted). To keep the test deterministic the warning is delivered by hand, exactly as SLURM's
   `--signal=B:USR1@warning_time` does it (`scancel --signal=USR1 --batch`), instead of waiting
   for the time limit;
3. a job in the high-priority partition preempts it (not counted);
4. it runs to `--max-steps` and writes the finished flag.

The run reaches the same final step as an uninterrupted run of the same command (run here under
`ftslurm launch --standalone`), and `ftslurm status` tells the story attempt by attempt. The data
order after a mid-epoch resume differs from the uninterrupted run's (plain DataLoader, see
docs/lightning.md), so parameters are not compared.

Nothing waits on wall-clock luck: each fault is keyed by $FTSLURM_ATTEMPT (and the hang by a
marker file, so it happens once), and the test intervenes only after polling for the state it
needs (launcher events, checkpoint steps, ledger records) with generous deadlines.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ftslurm.chain.ledger import Ledger
from ftslurm.slurm import SlurmClient
from tests.slurm.chain_util import (
    DEADLINE_S,
    REPO,
    ftslurm,
    no_jobs_left,
    ran,
    run_ended,
    status,
    submit,
    wait_for,
)

pytest.importorskip("lightning")
import torch  # after the skip: Lightning brings torch

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(3600)]

TRAIN = REPO / "examples" / "lightning" / "train.py"
MAX_STEPS = 400
CRASH_STEP = 30  # attempt 1: after the periodic checkpoint of step 25, in every launcher round
HANG_STEP = 40  # attempt 2 resumes at 25 and hangs here once; the restarted ranks resume at 25
TRAIN_ARGS = ["--max-steps", str(MAX_STEPS), "--ckpt-every", "25", "--step-time", "0.05"]
FAULT_ARGS = ["--crash-at", f"1:{CRASH_STEP}", "--hang-at", f"2:{HANG_STEP}", "--fault-rank", "1"]


def write_spec(tmp_path: Path) -> Path:
    path = tmp_path / "job.yaml"
    command = [str(TRAIN), *TRAIN_ARGS, *FAULT_ARGS]
    path.write_text("\n".join([
        "name: lightning-e2e",
        "nodes: 2",
        "nproc_per_node: 1",
        'time: "20:00"',
        "launcher: ft",
        "max_restarts: 1",
        f"python: {sys.executable}",
        f"run_dir: {tmp_path / 'run'}",
        f"command: {json.dumps(command)}",
        "env: {OMP_NUM_THREADS: '1'}",
        # Explicit timeouts until learned; a large factor so learned ones don't trip on a busy
        # machine. The injected hang is found with the configured 10 s (nothing learned yet).
        "fault_tolerance: {initial_rank_heartbeat_timeout: 120, rank_heartbeat_timeout: 10,"
        " safety_factor: 200}",
        "signals: {warning_time: 60, stop_grace: 30}",
    ]) + "\n")
    return path


def reference_final_step(tmp_path: Path) -> tuple[int, int]:
    """An uninterrupted run of the same command (no faults) on this machine, 2 ranks under
    `ftslurm launch`: (the step `fit` returned at, the final checkpoint's global_step)."""
    ref = tmp_path / "reference"
    ref.mkdir()
    env = {**os.environ, "FTSLURM_RUN_DIR": str(ref), "OMP_NUM_THREADS": "1",
           "FAULT_TOL_FINISHED_FLAG_FILE": str(ref / "finished.flag"), "PYTHONUNBUFFERED": "1"}
    env.pop("FTSLURM_ATTEMPT", None)
    result = subprocess.run(
        [sys.executable, "-m", "ftslurm.cli", "launch", "--standalone", "--nproc-per-node=2",
         "--max-restarts=0", "--ft-initial-rank-heartbeat-timeout=300",
         "--ft-rank-heartbeat-timeout=60", "--ft-safety-factor=200", str(TRAIN), *TRAIN_ARGS],
        env=env, cwd=ref, capture_output=True, text=True, timeout=DEADLINE_S)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (ref / "finished.flag").exists()
    returned = fit_returned_at(result.stdout)
    assert returned is not None, result.stdout[-3000:]
    step = checkpoint_step(ref / "checkpoints" / "last.ckpt")
    assert step is not None
    return returned, step


def checkpoint_step(path: Path) -> int | None:
    """The global_step of a Lightning checkpoint; None while it is missing or being written."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])
    except Exception:  # absent, or half written (Lightning does not save atomically)
        return None


def fit_returned_at(log: str) -> int | None:
    found = re.search(r"fit returned at step (\d+) of", log)
    return int(found.group(1)) if found else None


def attempt_log(run_dir: Path, attempt: int) -> str:
    result = ftslurm("logs", str(run_dir), "--attempt", str(attempt))
    return result.stdout if result.returncode == 0 else ""


def launcher_statuses(run_dir: Path, attempt: int) -> list[dict]:
    found = []
    for path in sorted((run_dir / "launcher_status").glob(f"attempt-{attempt}.*.json")):
        try:
            found.append(json.loads(path.read_text()))
        except ValueError:  # replaced atomically, but be safe
            continue
    return found


def events(run_dir: Path, attempt: int, kind: str) -> list[dict]:
    return [event for data in launcher_statuses(run_dir, attempt)
            for event in data.get("events", []) if event.get("kind") == kind]


def attempt_view(run_dir: Path, number: int):
    return Ledger.open(run_dir).state().attempt(number)


def attempt_ended(run_dir: Path, number: int) -> bool:
    rows = [a for a in status(run_dir)["attempts"] if a["attempt"] == number]
    return bool(rows) and rows[0]["status"] == "ended" and not rows[0]["provisional"]


def attempt_started(run_dir: Path, number: int) -> bool:
    view = attempt_view(run_dir, number)
    return view is not None and view.started_at is not None


def test_crash_hang_warning_preemption_then_finish(tmp_path: Path, slurm_cluster) -> None:
    ref_returned, ref_step = reference_final_step(tmp_path)
    assert ref_returned == ref_step == MAX_STEPS

    run_dir = submit(write_spec(tmp_path), "--max-failures", "3")
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    client = SlurmClient()
    urgent = None
    try:
        # Attempt 1 crashes in both launcher rounds and fails.
        wait_for(lambda: attempt_ended(run_dir, 1), "attempt 1 to end")

        # Attempt 2: the hang is found and the ranks restarted in place; once the restarted
        # ranks trained past the hang step, the time-limit warning.
        wait_for(lambda: any(e.get("action") == "restart" for e in events(run_dir, 2, "hang")),
                 "attempt 2's launcher to find the hang and restart in place")
        wait_for(lambda: (checkpoint_step(ckpt) or 0) > HANG_STEP,
                 "attempt 2 to train past the hang step after its restart")
        job2 = attempt_view(run_dir, 2).job_id
        client.run(["scancel", "--signal=USR1", "--batch", str(job2)])
        wait_for(lambda: attempt_ended(run_dir, 2), "attempt 2 to stop")
        stop2 = re.search(r"all ranks stop at step (\d+)", attempt_log(run_dir, 2))
        assert stop2, attempt_log(run_dir, 2)[-3000:]
        stopped_at = int(stop2.group(1))

        # Attempt 3: once it trains beyond where attempt 2 stopped, preempt it.
        wait_for(lambda: attempt_started(run_dir, 3), "attempt 3 to start")
        wait_for(lambda: (checkpoint_step(ckpt) or 0) > stopped_at,
                 "attempt 3 to train past attempt 2's stop checkpoint")
        urgent = client.run([
            "sbatch", "--parsable", f"--partition={slurm_cluster.high_priority_partition}",
            "--nodes=2", "--exclusive", "--output=/dev/null", "--wrap=sleep 5"]).strip()

        # Attempt 4 runs to the end.
        data = run_ended(run_dir)
    finally:
        if urgent:
            client.cancel(urgent)
        if status(run_dir)["state"] == "running":
            ftslurm("cancel", str(run_dir))

    table = ftslurm("status", str(run_dir))
    print(table.stdout)
    story = json.dumps(data["attempts"], indent=1)
    assert data["state"] == "finished", story
    attempts = ran(data)
    assert len(attempts) == 4, story
    first, second, third, fourth = attempts
    assert (first["outcome"], first["counted_failure"]) == ("failed", True), story
    assert (second["outcome"], second["counted_failure"]) in {
        ("stopped", False), ("timeout", False)}, story
    assert second["exit_code"] == 94, story
    assert (third["outcome"], third["counted_failure"]) in {
        ("preempted", False), ("stopped", False)}, story
    assert (fourth["outcome"], fourth["counted_failure"]) == ("finished", False), story
    assert data["failures_left"] == 3 and (run_dir / "finished.flag").exists()

    # What the launchers did in place (status --json does not show it: read their files).
    crashes = events(run_dir, 1, "crash")
    assert {e["action"] for e in crashes} == {"restart", "give_up"}, crashes
    assert max(d["restart_count"] for d in launcher_statuses(run_dir, 1)) == 1
    hangs = events(run_dir, 2, "hang")
    assert hangs and {e["action"] for e in hangs} == {"restart"}, hangs
    second_status = launcher_statuses(run_dir, 2)
    assert {d["exit_code"] for d in second_status} == {94}, second_status
    assert all(d["restart_count"] == 1 for d in second_status), second_status
    assert "(restart 1)" in attempt_log(run_dir, 2)

    # The same final step as the uninterrupted run.
    final_log = attempt_log(run_dir, 4)
    assert fit_returned_at(final_log) == ref_returned, final_log[-3000:]
    assert checkpoint_step(ckpt) == ref_step
    assert no_jobs_left(run_dir)
