"""RankMonitorClient: misuse messages, heartbeats into the slot, learned timeouts and state_dict."""

from __future__ import annotations

from pathlib import Path

import pytest

from ftslurm import env_vars
from ftslurm.fault_tolerance import RankMonitorClient, RankMonitorClientError
from ftslurm.fault_tolerance.heartbeat import Slot, decode_timeout, slot_path
from ftslurm.fault_tolerance.timeouts import HeartbeatTimeouts


@pytest.fixture
def launcher_slot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Slot:
    """What the launcher prepares for rank 0: the env and a fresh slot started 'now'."""
    monkeypatch.setenv(env_vars.FT_IPC_DIR, str(tmp_path))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("FTSLURM_FT_SAFETY_FACTOR", "2.0")
    slot = Slot.create(slot_path(tmp_path, 0), start_time=100.0)
    yield slot
    slot.close()


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_outside_the_launcher_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(env_vars.FT_IPC_DIR, raising=False)
    with pytest.raises(RankMonitorClientError, match="ftslurm launch"):
        RankMonitorClient().init_workload_monitoring()


def test_heartbeat_before_init() -> None:
    with pytest.raises(RankMonitorClientError, match=r"init_workload_monitoring\(\) first"):
        RankMonitorClient().send_heartbeat()


def test_init_twice(launcher_slot: Slot) -> None:
    client = RankMonitorClient()
    client.init_workload_monitoring()
    with pytest.raises(RankMonitorClientError, match="already called"):
        client.init_workload_monitoring()
    client.shutdown_workload_monitoring()


def test_heartbeats_reach_the_slot(launcher_slot: Slot) -> None:
    client = RankMonitorClient()
    client.init_workload_monitoring()
    state = launcher_slot.read()
    assert state.connected and state.has_dump_handler and state.heartbeat_count == 0
    client.send_heartbeat()
    client.send_heartbeat()
    state = launcher_slot.read()
    assert state.heartbeat_count == 2 and state.last_heartbeat > 0
    client.shutdown_workload_monitoring()
    assert launcher_slot.read().shut_down
    with pytest.raises(RankMonitorClientError):
        client.send_heartbeat()


def test_calculate_timeouts_and_state_dict_round_trip(launcher_slot: Slot) -> None:
    client = RankMonitorClient()
    clock = FakeClock(103.0)
    client._monotonic = clock  # deterministic intervals: first heartbeat 3 s after start
    client.init_workload_monitoring()
    assert client.calculate_and_set_hb_timeouts(skip_if_not_ready=True) is False
    with pytest.raises(RankMonitorClientError, match="not enough heartbeats"):
        client.calculate_and_set_hb_timeouts()
    for now in (103.0, 104.0, 104.5):
        clock.now = now
        client.send_heartbeat()
    assert client.calculate_and_set_hb_timeouts() is True
    assert client.hb_timeouts == HeartbeatTimeouts(initial=6.0, subsequent=2.0)  # x2 safety
    state = launcher_slot.read()
    assert decode_timeout(state.requested_initial) == 6.0
    assert decode_timeout(state.requested_subsequent) == 2.0
    saved = client.state_dict()
    client.shutdown_workload_monitoring()

    fresh_slot = Slot.create(launcher_slot.path, start_time=200.0)
    restored = RankMonitorClient()
    restored.load_state_dict(saved)  # before init: applied when it connects
    restored.init_workload_monitoring()
    state = fresh_slot.read()
    assert decode_timeout(state.requested_subsequent) == 2.0
    assert restored.state_dict() == saved
    restored.shutdown_workload_monitoring()
    fresh_slot.close()


def test_load_state_dict_rejects_garbage() -> None:
    with pytest.raises(RankMonitorClientError, match="state_dict"):
        RankMonitorClient().load_state_dict({"something": 1})
