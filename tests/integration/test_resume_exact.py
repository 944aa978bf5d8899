"""A run stopped by SIGTERM and resumed ends bitwise where an uninterrupted run ends.

Uses examples/ddp_resume/train.py (2 gloo ranks under `ftslurm launch`): the stopped attempt
checkpoints at the agreed step and the launcher exits "stopped"; the next attempt resumes from
that checkpoint and finishes with the same parameters (sha256 of the raw bytes) as a run that was
never interrupted.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ftslurm import exit_codes
from tests.helpers import REPO_ROOT
from tests.waiting import wait_for

TRAIN = REPO_ROOT / "examples" / "ddp_resume" / "train.py"
STEPS = 120
DEADLINE = 180.0


def _launch(ckpt: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "FAULT_TOL_FINISHED_FLAG_FILE": str(ckpt / "finished.flag"),
           "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "ftslurm.cli", "launch", "--standalone", "--nproc-per-node=2",
         "--max-restarts=0", "--monitor-interval=0.1", str(TRAIN), "--steps", str(STEPS),
         "--ckpt-dir", str(ckpt), "--ckpt-every", "1000", "--step-time", "0.02"],
        env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )


def _wait(proc: subprocess.Popen, log: Path) -> int:
    try:
        return proc.wait(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"launcher still running after {DEADLINE:.0f} s\n{log.read_text()[-3000:]}")


def _final_digest(log: Path) -> str:
    found = re.findall(rf"finished {STEPS} steps; params ([0-9a-f]+)", log.read_text())
    assert found, log.read_text()[-3000:]
    return found[-1]


def test_stopped_and_resumed_run_matches_uninterrupted_run(tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    straight.mkdir()
    assert _wait(_launch(straight, tmp_path / "straight.log"), tmp_path / "straight.log") == 0
    expected = _final_digest(tmp_path / "straight.log")

    resumed = tmp_path / "resumed"
    resumed.mkdir()
    first_log = tmp_path / "first.log"
    first = _launch(resumed, first_log)

    def training() -> bool:
        text = first_log.read_text()
        started = "resuming at step 0" in text
        assert started or first.poll() is None, text  # the launcher exited before training
        return started

    wait_for(training, "the first attempt to start training", timeout=DEADLINE,
             details=first_log.read_text)
    first.send_signal(signal.SIGTERM)
    assert _wait(first, first_log) == exit_codes.STOPPED, first_log.read_text()[-3000:]
    stopped_at = re.search(r"stopped by \S+ at step (\d+); checkpoint saved", first_log.read_text())
    assert stopped_at, first_log.read_text()[-3000:]
    assert not (resumed / "finished.flag").exists()

    second_log = tmp_path / "second.log"
    assert _wait(_launch(resumed, second_log), second_log) == 0, second_log.read_text()[-3000:]
    assert f"resuming at step {stopped_at.group(1)} of {STEPS}" in second_log.read_text()
    assert _final_digest(second_log) == expected
    assert (resumed / "finished.flag").exists()
