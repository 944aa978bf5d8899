"""Learned timeouts: computation and persistence in the run directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from ftslurm.fault_tolerance.timeouts import (
    HeartbeatTimeouts,
    compute_timeouts,
    learned_path,
    load_learned,
    save_learned,
)


def test_compute_uses_the_safety_factor() -> None:
    assert compute_timeouts(2.0, 0.5, 5.0) == HeartbeatTimeouts(10.0, 2.5)
    assert compute_timeouts(None, 0.5, 5.0) is None


def test_save_and_load(tmp_path: Path) -> None:
    assert load_learned(tmp_path) is None
    save_learned(tmp_path, HeartbeatTimeouts(10.0, 2.5), source="n1")
    assert load_learned(tmp_path) == HeartbeatTimeouts(10.0, 2.5)
    assert [p.name for p in tmp_path.iterdir()] == [learned_path(tmp_path).name]


def test_bad_file_is_reported(tmp_path: Path) -> None:
    learned_path(tmp_path).write_text('{"initial": "soon"}')
    with pytest.raises(ValueError, match=r"ft_learned_timeouts\.json"):
        load_learned(tmp_path)
