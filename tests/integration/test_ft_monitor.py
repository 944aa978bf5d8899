"""HeartbeatMonitor against real processes: initial and subsequent timeouts, exited ranks."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ftslurm.fault_tolerance.heartbeat import FLAG_CONNECTED, HEARTBEAT, Slot, slot_path
from ftslurm.fault_tolerance.monitor import HeartbeatMonitor
from ftslurm.fault_tolerance.timeouts import HeartbeatTimeouts


@pytest.fixture
def blocked_process() -> Iterator[subprocess.Popen]:
    """A real process that blocks until its stdin closes."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)
    yield proc
    proc.kill()
    proc.wait()


def _monitor(tmp_path: Path, proc: subprocess.Popen) -> tuple[HeartbeatMonitor, float]:
    monitor = HeartbeatMonitor(tmp_path, HeartbeatTimeouts(initial=10.0, subsequent=2.0))
    monitor.prepare([(5, 0)])
    monitor.set_pids({0: proc.pid})
    start = Slot.open(slot_path(tmp_path, 5)).read().start_time
    return monitor, start


def test_initial_timeout_counts_from_start(tmp_path: Path, blocked_process) -> None:
    monitor, start = _monitor(tmp_path, blocked_process)
    assert monitor.check(now=start + 9.0) == ([], None)
    hangs, _ = monitor.check(now=start + 10.5)
    assert [(h.global_rank, h.phase, h.connected) for h in hangs] == [(5, "initial", False)]
    assert hangs[0].heartbeat_age == pytest.approx(10.5)
    monitor.close()


def test_subsequent_timeout_counts_from_last_heartbeat(tmp_path: Path, blocked_process) -> None:
    monitor, start = _monitor(tmp_path, blocked_process)
    client = Slot.open(slot_path(tmp_path, 5))
    client.set_client(blocked_process.pid, FLAG_CONNECTED)
    HEARTBEAT.pack_into(client.buffer, 0, 1, start + 20.0)
    assert monitor.check(now=start + 21.5)[0] == []  # initial timeout no longer applies
    hangs, _ = monitor.check(now=start + 22.5)
    assert [(h.phase, h.timeout) for h in hangs] == [("subsequent", 2.0)]


def test_requested_timeouts_are_adopted(tmp_path: Path, blocked_process) -> None:
    monitor, start = _monitor(tmp_path, blocked_process)
    client = Slot.open(slot_path(tmp_path, 5))
    client.set_timeouts(30.0, None)
    hangs, requested = monitor.check(now=start + 11.0)
    assert requested == HeartbeatTimeouts(30.0, None) and hangs == []
    HEARTBEAT.pack_into(client.buffer, 0, 1, start + 1.0)
    assert monitor.check(now=start + 1000.0) == ([], None)  # no subsequent timeout


def test_exited_rank_is_not_a_hang(tmp_path: Path, blocked_process) -> None:
    monitor, start = _monitor(tmp_path, blocked_process)
    blocked_process.stdin.close()
    blocked_process.wait()
    assert monitor.check(now=start + 100.0)[0] == []
