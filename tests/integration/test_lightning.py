"""`FaultToleranceCallback` end to end: 2 ranks under `ftslurm launch`, Lightning's DDP on gloo.

The workload is tests/integration/workloads/lightning_workload.py. A hang is a rank blocked forever
in its training step; a stop is a real SIGTERM to the launcher. Nothing depends on how long things
take: timeouts are configuration, waits poll files with generous deadlines.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lightning")

from ftslurm import exit_codes
from ftslurm.fault_tolerance.timeouts import learned_path, load_learned
from ftslurm.lightning.state import LEGACY_STATE_FILE
from tests.waiting import wait_for

WORKLOAD = Path(__file__).parent / "workloads" / "lightning_workload.py"
DEADLINE = 240.0
pytestmark = pytest.mark.timeout(600)


def _command(tmp_path: Path, *options: str, workload: tuple[str, ...] = ()) -> list[str]:
    return [
        sys.executable, "-m", "ftslurm.cli", "launch", "--standalone", "--nproc-per-node=2",
        "--monitor-interval=0.1", "--ft-initial-rank-heartbeat-timeout=300",
        "--ft-rank-heartbeat-timeout=60", f"--ft-status-file={tmp_path / 'status.json'}",
        *options, str(WORKLOAD), "--out", str(tmp_path / "out"),
        "--ckpt-dir", str(tmp_path / "ckpt"), *workload,
    ]


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "FAULT_TOL_FINISHED_FLAG_FILE": str(tmp_path / "finished.flag"),
            "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _launch(tmp_path: Path, *options: str, workload: tuple[str, ...] = (),
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_command(tmp_path, *options, workload=workload),
                          env={**_env(tmp_path), **(env or {})},
                          capture_output=True, text=True, timeout=DEADLINE)


def _results(tmp_path: Path, restart: int) -> list[dict]:
    return [json.loads((tmp_path / "out" / f"result.{rank}.{restart}.json").read_text())
            for rank in (0, 1)]


def _learned_state(folder: Path) -> dict:
    """The learned timeouts kept in `folder`, shaped like `RankMonitorClient.state_dict()`."""
    learned = load_learned(folder)
    assert learned is not None, f"no learned timeouts in {folder}"
    return {"hb_timeouts": learned.to_dict()}


def _events(tmp_path: Path, kind: str) -> list[dict]:
    status = json.loads((tmp_path / "status.json").read_text())
    return [event for event in status["events"] if event["kind"] == kind]


def test_heartbeats_reach_the_monitor_and_learned_timeouts_are_reloaded(tmp_path: Path) -> None:
    exp_dir = tmp_path / "exp"
    # A big safety factor: the learned timeouts must not trip on a busy machine. No floor: the
    # test compares the timeouts in force with the learned ones.
    options = ("--max-restarts=0", "--ft-safety-factor=200", "--ft-min-learned-timeout=null")
    workload = ("--exp-dir", str(exp_dir), "--calculate-timeouts", "--val-batches", "2")
    first = _launch(tmp_path, *options, workload=workload)
    assert first.returncode == exit_codes.OK, first.stderr[-3000:]
    results = _results(tmp_path, 0)
    # Every training step's heartbeat is in the slot the monitor reads (plus train start and the
    # validation batches).
    assert all(r["heartbeats"] >= r["global_step"] + 1 == 13 for r in results), results
    saved = _learned_state(exp_dir)
    assert all(r["saved_state"] == saved for r in results)
    assert not (exp_dir / LEGACY_STATE_FILE).exists()
    learned = saved["hb_timeouts"]
    assert learned["initial"] > 0 and learned["subsequent"] > 0
    assert f"ranks set heartbeat timeouts: initial={learned['initial']} s" in first.stderr
    assert (tmp_path / "finished.flag").exists()

    # Next run (fresh checkpoints, so it trains again; too few steps to learn anything new): the
    # callback loads the learned timeouts at setup and the launcher's monitor enforces them.
    (tmp_path / "finished.flag").unlink()
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    second = _launch(second_dir, *options, workload=(*workload[:3], "--min-train-iters", "1000"))
    assert second.returncode == exit_codes.OK, second.stderr[-3000:]
    assert all(r["loaded_state"] == saved and r["saved_state"] == {}
               for r in _results(second_dir, 0))
    status = json.loads((second_dir / "status.json").read_text())
    assert status["timeouts"] == learned
    assert (f"ranks set heartbeat timeouts: initial={learned['initial']} s, "
            f"subsequent={learned['subsequent']} s") in second.stderr
    assert _learned_state(exp_dir) == saved
    assert (second_dir / "finished.flag").exists()


def test_in_a_run_dir_the_launcher_and_the_callback_keep_one_learned_timeouts_file(
        tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    env = {"FTSLURM_RUN_DIR": str(run_dir), "FTSLURM_ATTEMPT": "1"}
    result = _launch(tmp_path, "--max-restarts=0", "--ft-safety-factor=200",
                     workload=("--calculate-timeouts", "--val-batches", "2"), env=env)
    assert result.returncode == exit_codes.OK, result.stderr[-3000:]
    results = _results(tmp_path, 0)
    # No exp_dir: the callback keeps its state in the run directory ...
    assert all(r["state_dir"] == str(run_dir) for r in results)
    # ... in the very file the launcher merges what the ranks set into.
    assert f"saved the learned timeouts to {learned_path(run_dir)}" in result.stderr
    saved = _learned_state(run_dir)
    assert all(r["saved_state"] == saved for r in results)
    assert sorted(p.name for p in run_dir.glob("*.json")) == [learned_path(run_dir).name]


def test_hang_in_a_training_step_is_detected_and_the_group_restarted(tmp_path: Path) -> None:
    result = _launch(tmp_path, "--max-restarts=2", "--ft-rank-heartbeat-timeout=10",
                     workload=("--hang", "1:5", "--max-steps", "10"))
    assert result.returncode == exit_codes.OK, result.stderr[-3000:]
    hang = next(e for e in _events(tmp_path, "hang") if e["rank"] == 1)
    # "subsequent": the monitor had seen this rank's heartbeats before it hung.
    assert hang["phase"] == "subsequent" and hang["action"] == "restart"
    assert hang["restart_count"] == 0 and hang["stack_dumped"]
    assert "hang_forever_in_training_step" in result.stderr
    last_round = max(int(p.name.split(".")[2]) for p in (tmp_path / "out").glob("result.*.json"))
    assert last_round >= 1
    restarted = _results(tmp_path, last_round)
    # The new round resumed from the last periodic checkpoint and finished.
    assert all(r["start_step"] == 4 and r["global_step"] == 10 for r in restarted), restarted
    assert (tmp_path / "finished.flag").exists()


def _wait_for_step(tmp_path: Path, proc: subprocess.Popen, step: int) -> None:
    progress = [tmp_path / "out" / f"progress.{rank}" for rank in (0, 1)]

    def reached() -> bool:
        assert proc.poll() is None, "the launcher exited before the ranks made progress"
        return all(p.exists() and len(p.read_text().split()) >= step for p in progress)

    wait_for(reached, f"both ranks to reach step {step}", DEADLINE)


def test_sigterm_stops_every_rank_at_one_step_and_the_next_run_resumes(tmp_path: Path) -> None:
    workload = ("--max-steps", "100000", "--ckpt-every", "100000")
    log = (tmp_path / "stopped.log").open("w")
    proc = subprocess.Popen(_command(tmp_path, "--max-restarts=0", workload=workload),
                            env=_env(tmp_path), stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_step(tmp_path, proc, 3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=DEADLINE) == exit_codes.STOPPED
    finally:
        if proc.poll() is None:
            proc.kill()
    stopped = _results(tmp_path, 0)
    assert {r["global_step"] for r in stopped} == {stopped[0]["global_step"]}
    assert all(r["stopped_by_signal"] and not r["wrote_flag"] for r in stopped)
    assert not (tmp_path / "finished.flag").exists()
    assert stopped[0]["stop_checkpoint"] == str(tmp_path / "ckpt" / "last.ckpt")
    stop_step = stopped[0]["global_step"]

    # The next attempt resumes at the step where every rank stopped and finishes.
    (tmp_path / "out").rename(tmp_path / "out.stopped")
    total = stop_step + 3
    resumed = _launch(tmp_path, "--max-restarts=0", workload=("--max-steps", str(total)))
    assert resumed.returncode == exit_codes.OK, resumed.stderr[-3000:]
    finished = _results(tmp_path, 0)
    assert all(r["start_step"] == stop_step and r["global_step"] == total for r in finished)
    assert (tmp_path / "finished.flag").exists()
