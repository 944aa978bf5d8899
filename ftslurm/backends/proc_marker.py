"""Find and signal every process that carries an environment marker (`NAME=VALUE`).

A local job's supervisor sets a unique marker in its script's environment; every descendant
inherits it, including processes that left the script's process group or session (torch's ranks
run in sessions of their own), so scanning `/proc/<pid>/environ` finds the whole job, the way a
SLURM cgroup does. Processes whose environment cannot be read (other users', kernel threads) and
zombies (their environment reads empty) are skipped. Signals go through a pidfd opened before the
marker is checked again, so a pid reused meanwhile is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

PROC = Path("/proc")


def has_marker(pid: int, needle: bytes) -> bool:
    """True when process `pid`'s initial environment holds the entry `needle` (b"NAME=VALUE")."""
    try:
        environ = (PROC / str(pid) / "environ").read_bytes()
    except OSError:  # gone, or not ours to read
        return False
    return needle in environ.split(b"\0")


def marked_pids(name: str, value: str) -> list[int]:
    """Pids of the live processes whose environment has NAME=VALUE, this process excluded."""
    needle = f"{name}={value}".encode()
    pids = (int(entry.name) for entry in PROC.iterdir() if entry.name.isdigit())
    return [pid for pid in pids if pid != os.getpid() and has_marker(pid, needle)]


def signal_marked(name: str, value: str, sig: int) -> list[int]:
    """Send `sig` to every process carrying NAME=VALUE and to its process group; return the pids
    signalled."""
    needle = f"{name}={value}".encode()
    signalled = []
    for pid in marked_pids(name, value):
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:  # already gone
            continue
        try:
            if not has_marker(pid, needle):  # the pid was reused between the scan and the open
                continue
            with contextlib.suppress(OSError):
                pgid = os.getpgid(pid)
                signal.pidfd_send_signal(pidfd, sig)
                signalled.append(pid)
                # members of its group that dropped the marker (e.g. started with `env -i`)
                os.killpg(pgid, sig)
        finally:
            os.close(pidfd)
    return signalled


def wait_unmarked(name: str, value: str, deadline: float, interval: float = 0.1) -> bool:
    """Wait until no process carries NAME=VALUE or `time.monotonic()` passes `deadline`; True
    when none is left."""
    while marked_pids(name, value):
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


def kill_marked(name: str, value: str, timeout: float = 10.0, interval: float = 0.05) -> bool:
    """SIGKILL every process carrying NAME=VALUE, again and again (they may fork meanwhile) until
    none is left or `timeout` s passed; True when none is left."""
    deadline = time.monotonic() + timeout
    while signal_marked(name, value, signal.SIGKILL):
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


__all__ = [
    "PROC",
    "has_marker",
    "kill_marked",
    "marked_pids",
    "signal_marked",
    "wait_unmarked",
]
