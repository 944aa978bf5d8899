"""The heartbeat channel: one small memory-mapped file ("slot") per rank, in a private directory.

The launcher creates the directory (mode 0700, so no other user can read or forge heartbeats) and,
before starting each rank, a fresh 64-byte slot named after the rank's global rank. The rank's
`RankMonitorClient` maps the slot and writes into it; the launcher maps it and reads. A heartbeat is
one `struct.pack_into` of a counter and `time.monotonic()` (CLOCK_MONOTONIC is system-wide on Linux,
so both sides compare timestamps directly): no syscall, no pickle, no socket.

Slot layout (native byte order, 8-byte aligned fields)::

    0  u64  heartbeat count        (client; written together with the next field)
    8  f64  last heartbeat time    (client, monotonic seconds)
    16 f64  rank start time        (launcher, monotonic seconds, just before the rank starts)
    24 i64  client pid             (client, at init)
    32 u32  flags                  (client: CONNECTED, DUMP_HANDLER, SHUTDOWN)
    36 u32  magic                  (launcher)
    40 f64  requested initial timeout     (client; NaN = none requested, +inf = no timeout)
    48 f64  requested subsequent timeout  (client; same encoding)
    56 u64  timeouts sequence number      (client, bumped after each timeouts update)

Torn reads: the reader copies the slot twice and accepts the copy only when both agree.
"""

from __future__ import annotations

import math
import mmap
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

SLOT_SIZE = 64
MAGIC = 0x46545331  # "FTS1"

FLAG_CONNECTED = 1
FLAG_DUMP_HANDLER = 2
FLAG_SHUTDOWN = 4

#: File a rank creates in the IPC directory when the ranks agreed to stop (GracefulShutdown).
STOP_VOTED_FILE = "stop-voted"

HEARTBEAT = struct.Struct("@Qd")  # offset 0
START_TIME = struct.Struct("@d")  # offset 16
PID = struct.Struct("@q")  # offset 24
FLAGS_MAGIC = struct.Struct("@II")  # offset 32
TIMEOUTS = struct.Struct("@dd")  # offset 40
TIMEOUTS_SEQ = struct.Struct("@Q")  # offset 56
WHOLE = struct.Struct("@QddqIIddQ")
assert WHOLE.size == SLOT_SIZE


def slot_path(ipc_dir: str | Path, global_rank: int) -> Path:
    """Where the slot of `global_rank` lives inside the launcher's IPC directory."""
    return Path(ipc_dir) / f"rank-{global_rank}.slot"


def make_private_dir(prefix: str = "ftslurm-ft-") -> Path:
    """Create a fresh directory only the current user can enter (mode 0700).

    Prefers /dev/shm (memory-backed) and falls back to $TMPDIR.
    """
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getuid()}-", dir=base))
    os.chmod(path, 0o700)
    return path


def encode_timeout(value: float | None) -> float:
    """Slot encoding of a requested timeout: `None` (no timeout) is +inf."""
    return math.inf if value is None else float(value)


def decode_timeout(value: float) -> float | bool | None:
    """Inverse of `encode_timeout`; NaN (nothing requested) decodes to `False`."""
    if math.isnan(value):
        return False
    return None if math.isinf(value) else value


@dataclass(frozen=True)
class SlotState:
    """A consistent snapshot of one slot."""

    heartbeat_count: int
    last_heartbeat: float
    start_time: float
    pid: int
    flags: int
    magic: int
    requested_initial: float
    requested_subsequent: float
    timeouts_seq: int

    @property
    def connected(self) -> bool:
        return bool(self.flags & FLAG_CONNECTED)

    @property
    def has_dump_handler(self) -> bool:
        return bool(self.flags & FLAG_DUMP_HANDLER)

    @property
    def shut_down(self) -> bool:
        return bool(self.flags & FLAG_SHUTDOWN)


class Slot:
    """A mapped slot file: the launcher makes it with `create`, the client maps it with `open`."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        try:
            self._mmap = mmap.mmap(fd, SLOT_SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        #: Writable view for `struct.pack_into` (kept for the hot path of `send_heartbeat`).
        self.buffer = memoryview(self._mmap)

    @classmethod
    def create(cls, path: Path, start_time: float) -> Slot:
        """Create a fresh slot (replacing an old one) stamped with the rank's start time."""
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        os.ftruncate(fd, SLOT_SIZE)
        slot = cls(path, fd)
        WHOLE.pack_into(slot.buffer, 0, 0, 0.0, start_time, 0, 0, MAGIC, math.nan, math.nan, 0)
        return slot

    @classmethod
    def open(cls, path: Path) -> Slot:
        """Map an existing slot (client side); checks size and magic."""
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
        if os.fstat(fd).st_size != SLOT_SIZE:
            os.close(fd)
            raise ValueError(f"{path} is not a heartbeat slot (wrong size)")
        slot = cls(path, fd)
        if FLAGS_MAGIC.unpack_from(slot.buffer, 32)[1] != MAGIC:
            slot.close()
            raise ValueError(f"{path} is not a heartbeat slot (bad magic)")
        return slot

    def read(self) -> SlotState:
        """A consistent snapshot (two identical copies in a row)."""
        previous = bytes(self.buffer)
        while True:
            current = bytes(self.buffer)
            if current == previous:
                return SlotState(*WHOLE.unpack(current))
            previous = current

    def set_client(self, pid: int, flags: int) -> None:
        """Client: record its pid and flags (e.g. at `init_workload_monitoring`)."""
        PID.pack_into(self.buffer, 24, pid)
        magic = FLAGS_MAGIC.unpack_from(self.buffer, 32)[1]
        FLAGS_MAGIC.pack_into(self.buffer, 32, flags, magic)

    def add_flags(self, flags: int) -> None:
        """Client: set more flag bits."""
        current, magic = FLAGS_MAGIC.unpack_from(self.buffer, 32)
        FLAGS_MAGIC.pack_into(self.buffer, 32, current | flags, magic)

    def set_timeouts(self, initial: float | None, subsequent: float | None) -> None:
        """Client: ask the launcher to use these timeouts for this rank (None = no timeout)."""
        TIMEOUTS.pack_into(self.buffer, 40, encode_timeout(initial), encode_timeout(subsequent))
        seq = TIMEOUTS_SEQ.unpack_from(self.buffer, 56)[0]
        TIMEOUTS_SEQ.pack_into(self.buffer, 56, seq + 1)

    def close(self) -> None:
        """Unmap the slot (the file stays until the launcher removes it)."""
        self.buffer.release()
        self._mmap.close()


__all__ = [
    "FLAGS_MAGIC",
    "FLAG_CONNECTED",
    "FLAG_DUMP_HANDLER",
    "FLAG_SHUTDOWN",
    "HEARTBEAT",
    "MAGIC",
    "PID",
    "SLOT_SIZE",
    "START_TIME",
    "STOP_VOTED_FILE",
    "TIMEOUTS",
    "TIMEOUTS_SEQ",
    "WHOLE",
    "Slot",
    "SlotState",
    "decode_timeout",
    "encode_timeout",
    "make_private_dir",
    "slot_path",
]
