"""Synchronized stop with 4 real gloo ranks: signals reach a random subset at a random moment,
and every rank still stops at the same step with one complete checkpoint."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.waiting import wait_for

WORKLOAD = Path(__file__).parent / "workloads" / "stop_vote.py"
WORLD = 4
DEADLINE = 120.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


def _spawn_ranks(out: Path) -> list[subprocess.Popen]:
    port = _free_port()
    procs = []
    for rank in range(WORLD):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(WORLD),
               "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "STOP_VOTE_DIR": str(out)}
        log = open(out / f"rank-{rank}.log", "w")  # noqa: SIM115 (closed with the test dir)
        procs.append(subprocess.Popen([sys.executable, str(WORKLOAD)], env=env,
                                      stdout=log, stderr=subprocess.STDOUT))
    return procs


@pytest.mark.parametrize("trial", range(4))
def test_random_subset_of_ranks_signalled_all_stop_at_same_step(
    tmp_path: Path, trial: int
) -> None:
    rng = random.Random(1000 + trial)
    targets = rng.sample(range(WORLD), rng.randint(1, WORLD))
    start_after = rng.randint(1, 40)
    procs = _spawn_ranks(tmp_path)
    try:
        wait_for(lambda: all((_read_int(tmp_path / f"progress-{r}") or 0) >= start_after
                             for r in range(WORLD)),
                 f"every rank to pass step {start_after}", timeout=DEADLINE, interval=0.01)
        for r in targets:
            procs[r].send_signal(signal.SIGTERM)
        wait_for(lambda: all(p.poll() is not None for p in procs), "the ranks to exit",
                 timeout=DEADLINE, interval=0.01)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    logs = {r: (tmp_path / f"rank-{r}.log").read_text() for r in range(WORLD)}
    assert [p.returncode for p in procs] == [0] * WORLD, logs
    stopped = {_read_int(tmp_path / f"stopped-{r}") for r in range(WORLD)}
    assert len(stopped) == 1, f"ranks stopped at different steps: {stopped}"
    (step,) = stopped
    assert step is not None and step >= start_after
    checkpoint = torch.load(tmp_path / "checkpoint.pt")
    assert checkpoint["step"] == step
