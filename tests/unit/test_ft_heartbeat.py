"""The shared-memory heartbeat slot and the private IPC directory."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ftslurm.fault_tolerance.heartbeat import (
    FLAG_CONNECTED,
    HEARTBEAT,
    Slot,
    decode_timeout,
    encode_timeout,
    make_private_dir,
    slot_path,
)


def test_private_dir_is_0700() -> None:
    path = make_private_dir()
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
        assert os.stat(path).st_uid == os.getuid()
    finally:
        path.rmdir()


def test_slot_round_trip(tmp_path: Path) -> None:
    path = slot_path(tmp_path, 3)
    launcher = Slot.create(path, start_time=12.5)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    client = Slot.open(path)
    state = launcher.read()
    assert (state.heartbeat_count, state.start_time, state.connected) == (0, 12.5, False)
    client.set_client(pid=4242, flags=FLAG_CONNECTED)
    HEARTBEAT.pack_into(client.buffer, 0, 7, 99.25)
    client.set_timeouts(10.0, None)
    state = launcher.read()
    assert (state.heartbeat_count, state.last_heartbeat, state.pid) == (7, 99.25, 4242)
    assert state.connected and not state.shut_down
    assert decode_timeout(state.requested_initial) == 10.0
    assert decode_timeout(state.requested_subsequent) is None
    assert state.timeouts_seq == 1
    client.close()
    launcher.close()


def test_unrequested_timeout_decodes_to_false(tmp_path: Path) -> None:
    slot = Slot.create(slot_path(tmp_path, 0), start_time=1.0)
    assert decode_timeout(slot.read().requested_initial) is False
    assert decode_timeout(encode_timeout(None)) is None
    slot.close()


def test_open_rejects_a_foreign_file(tmp_path: Path) -> None:
    path = tmp_path / "rank-0.slot"
    path.write_bytes(b"x" * 64)
    with pytest.raises(ValueError, match="magic"):
        Slot.open(path)
