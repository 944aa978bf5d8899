"""Synchronized stop through the launcher: SIGTERM to the launcher or to a random subset of its 4
gloo ranks, at a random step. Every trial must end with all ranks stopped at the same step, one
complete checkpoint, and the launcher's "stopped" exit code; a trial past its deadline fails."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ftslurm import exit_codes
from tests.waiting import poll

WORKLOAD = Path(__file__).parent / "workloads" / "stop_vote.py"
WORLD = 4
TRIALS = 30
DEADLINE = 180.0


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


def _launch(out: Path) -> subprocess.Popen:
    env = {**os.environ, "STOP_VOTE_DIR": str(out), "PYTHONUNBUFFERED": "1"}
    log = open(out / "launcher.log", "w")  # noqa: SIM115 (lives as long as the trial)
    return subprocess.Popen(
        [sys.executable, "-m", "ftslurm.cli", "launch", "--standalone",
         f"--nproc-per-node={WORLD}", "--max-restarts=0", "--shutdown-timeout=60",
         "--monitor-interval=0.1", str(WORKLOAD)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )


def _poll(predicate, deadline: float, what: str, launcher: subprocess.Popen, out: Path) -> None:
    if not poll(predicate, max(0.0, deadline - time.monotonic()), interval=0.01):
        os.killpg(launcher.pid, signal.SIGKILL)
        log = (out / "launcher.log").read_text()[-4000:]
        pytest.fail(f"trial exceeded its deadline waiting for {what}\n{log}")


def run_trial(out: Path, seed: int) -> None:
    """One trial; fails the test on any broken promise."""
    rng = random.Random(seed)
    to_launcher = rng.random() < 0.3
    targets = [] if to_launcher else rng.sample(range(WORLD), rng.randint(1, WORLD))
    start_after = rng.randint(1, 30)
    deadline = time.monotonic() + DEADLINE
    launcher = _launch(out)
    try:
        _poll(lambda: all((_read_int(out / f"progress-{r}") or 0) >= start_after
                          for r in range(WORLD)),
              deadline, f"every rank to pass step {start_after}", launcher, out)
        if to_launcher:
            launcher.send_signal(signal.SIGTERM)
        for r in targets:
            os.kill(_read_int(out / f"pid-{r}"), signal.SIGTERM)
        _poll(lambda: launcher.poll() is not None, deadline, "the launcher to exit",
              launcher, out)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
    log = (out / "launcher.log").read_text()[-4000:]
    target = "the launcher" if to_launcher else f"ranks {targets}"
    assert launcher.returncode == exit_codes.STOPPED, f"SIGTERM to {target}\n{log}"
    stopped = {_read_int(out / f"stopped-{r}") for r in range(WORLD)}
    assert len(stopped) == 1 and None not in stopped, (
        f"SIGTERM to {target}: ranks stopped at steps {stopped}\n{log}")
    checkpoint = torch.load(out / "checkpoint.pt")
    assert checkpoint["step"] == stopped.pop() >= start_after


@pytest.mark.parametrize("trial", range(TRIALS))
def test_stop_reaches_every_rank_at_the_same_step(tmp_path: Path, trial: int) -> None:
    run_trial(tmp_path, seed=trial)


@pytest.mark.slow
def test_stop_many_more_trials(tmp_path: Path) -> None:
    """Set FTSLURM_STOP_TRIALS=N for a longer randomized run (skipped by default)."""
    extra = int(os.environ.get("FTSLURM_STOP_TRIALS", "0"))
    if not extra:
        pytest.skip("set FTSLURM_STOP_TRIALS=N to run N more randomized stop trials")
    for trial in range(extra):
        out = tmp_path / f"trial-{trial}"
        out.mkdir()
        run_trial(out, seed=10_000 + trial)
