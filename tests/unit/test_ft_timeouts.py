"""Learned timeouts: computation, the merge rule, and persistence in the run directory.

Concurrent writers in real processes: tests/integration/test_launcher_learned_timeouts.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import filelock
import pytest

from ftslurm.fault_tolerance import timeouts
from ftslurm.fault_tolerance.config import FaultToleranceConfig
from ftslurm.fault_tolerance.launcher import resolve_timeouts
from ftslurm.fault_tolerance.status import TimeoutSource
from ftslurm.fault_tolerance.timeouts import (
    HeartbeatTimeouts,
    apply_floor,
    compute_timeouts,
    learned_path,
    load_learned,
    lock_path,
    merge,
    save_learned,
)
from ftslurm.rundir import RunDir


def test_compute_uses_the_safety_factor() -> None:
    assert compute_timeouts(2.0, 0.5, 5.0) == HeartbeatTimeouts(10.0, 2.5)
    assert compute_timeouts(None, 0.5, 5.0) is None


def test_save_and_load(tmp_path: Path) -> None:
    assert load_learned(tmp_path) is None
    assert save_learned(tmp_path, HeartbeatTimeouts(10.0, 2.5), source="n1") == HeartbeatTimeouts(
        10.0, 2.5)
    assert load_learned(tmp_path) == HeartbeatTimeouts(10.0, 2.5)
    # The file and its lock, nothing half-written left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [learned_path(tmp_path).name, lock_path(tmp_path).name])
    assert learned_path(tmp_path) == RunDir(tmp_path).learned_timeouts
    assert lock_path(tmp_path) == RunDir(tmp_path).learned_timeouts_lock
    assert json.loads(learned_path(tmp_path).read_text())["source"] == "n1"


def test_bad_file_is_reported(tmp_path: Path) -> None:
    learned_path(tmp_path).write_text('{"initial": "soon"}')
    with pytest.raises(ValueError, match=r"ft_learned_timeouts\.json"):
        load_learned(tmp_path)


def test_merge_keeps_the_larger_timeout_and_none_is_largest() -> None:
    old = HeartbeatTimeouts(10.0, 2.0)
    assert merge(None, old) == old
    assert merge(old, HeartbeatTimeouts(5.0, 3.0)) == HeartbeatTimeouts(10.0, 3.0)
    assert merge(old, HeartbeatTimeouts(None, 1.0)) == HeartbeatTimeouts(None, 2.0)
    assert merge(HeartbeatTimeouts(None, None), old) == HeartbeatTimeouts(None, None)


def test_a_second_writer_never_lowers_a_learned_timeout(tmp_path: Path) -> None:
    save_learned(tmp_path, HeartbeatTimeouts(10.0, 2.0), source="n1")
    kept = save_learned(tmp_path, HeartbeatTimeouts(5.0, 3.0), source="n2")
    assert kept == load_learned(tmp_path) == HeartbeatTimeouts(10.0, 3.0)
    assert json.loads(learned_path(tmp_path).read_text())["source"] == "n2"
    # None (no timeout) stays None, whatever comes later.
    save_learned(tmp_path, HeartbeatTimeouts(None, 1.0), source="n1")
    save_learned(tmp_path, HeartbeatTimeouts(1.0, 1.0), source="n2")
    assert load_learned(tmp_path) == HeartbeatTimeouts(None, 3.0)
    # Nothing new: the file is left as it was (its last writer included).
    before = learned_path(tmp_path).read_text()
    save_learned(tmp_path, HeartbeatTimeouts(1.0, 1.0), source="n3")
    assert learned_path(tmp_path).read_text() == before


def test_an_unreadable_file_is_replaced(tmp_path: Path) -> None:
    learned_path(tmp_path).write_text("{broken")
    assert save_learned(tmp_path, HeartbeatTimeouts(4.0, 2.0), source="n1") == HeartbeatTimeouts(
        4.0, 2.0)
    assert load_learned(tmp_path) == HeartbeatTimeouts(4.0, 2.0)


def test_a_writer_needs_the_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Another process (here: another lock object) is in the middle of its read-merge-write.
    monkeypatch.setattr(timeouts, "LOCK_TIMEOUT", 0)
    with filelock.FileLock(str(lock_path(tmp_path))), pytest.raises(filelock.Timeout):
        save_learned(tmp_path, HeartbeatTimeouts(4.0, 2.0), source="n1")
    assert load_learned(tmp_path) is None



def test_the_floor_raises_learned_timeouts_and_keeps_no_timeout() -> None:
    assert apply_floor(HeartbeatTimeouts(1.0, 400.0), 300.0) == HeartbeatTimeouts(300.0, 400.0)
    assert apply_floor(HeartbeatTimeouts(None, 2.0), 300.0) == HeartbeatTimeouts(None, 300.0)
    assert apply_floor(HeartbeatTimeouts(1.0, 2.0), None) == HeartbeatTimeouts(1.0, 2.0)


def test_learned_timeouts_from_the_run_dir_are_floored_configured_ones_never(
        tmp_path: Path) -> None:
    small = FaultToleranceConfig(initial_rank_heartbeat_timeout=2.0, rank_heartbeat_timeout=1.0,
                                 min_learned_timeout=60.0)
    # Nothing learned: the configured timeouts, however small, as written.
    assert resolve_timeouts(small, tmp_path) == (HeartbeatTimeouts(2.0, 1.0),
                                                 TimeoutSource.WRITTEN)
    assert resolve_timeouts(small, None) == (HeartbeatTimeouts(2.0, 1.0), TimeoutSource.WRITTEN)
    save_learned(tmp_path, HeartbeatTimeouts(3.0, 120.0), source="n1")
    assert resolve_timeouts(small, tmp_path) == (HeartbeatTimeouts(60.0, 120.0),
                                                 TimeoutSource.LEARNED)
    no_floor = FaultToleranceConfig(min_learned_timeout=None)
    assert resolve_timeouts(no_floor, tmp_path)[0] == HeartbeatTimeouts(3.0, 120.0)
    assert load_learned(tmp_path) == HeartbeatTimeouts(3.0, 120.0)  # the file is untouched
