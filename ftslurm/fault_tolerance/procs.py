"""Process helpers for the monitor (Linux): liveness, stack dumps, termination with a grace period.

Nothing here sleeps blindly: every wait polls a condition with a deadline.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

_POLL = 0.005


def process_alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    # Field 3 (after the parenthesised command name, which may contain spaces) is the state.
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X")


def _signal_bits(pid: int, signum: int) -> tuple[bool, set[str]]:
    """(is `signum` pending for the process or a thread, the threads that block it now)."""
    bit = 1 << (signum - 1)
    pending, blocking = False, set[str]()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False, blocking
    for tid in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key in ("SigPnd", "ShdPnd", "SigBlk") and int(value.strip(), 16) & bit:
                if key == "SigBlk":
                    blocking.add(tid)
                else:
                    pending = True
    return pending, blocking


def dump_stacks_all(pids: list[int], signum: int, timeout: float) -> dict[int, bool]:
    """`dump_stacks` for several processes at once: signal them all, then wait for all.

    Returns pid -> whether its handler ran to completion within `timeout` seconds (all of them
    share the one deadline, so N ranks take as long as the slowest, not N times as long).
    """
    blocked_before = {pid: _signal_bits(pid, signum)[1] for pid in pids}
    waiting: set[int] = set()
    done: dict[int, bool] = {}
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            done[pid] = False
        else:
            waiting.add(pid)
    deadline = time.monotonic() + timeout
    while waiting:
        for pid in sorted(waiting):
            if not process_alive(pid):
                done[pid] = False
                waiting.discard(pid)
                continue
            pending, blocking = _signal_bits(pid, signum)
            if not pending and not (blocking - blocked_before[pid]):
                done[pid] = True
                waiting.discard(pid)
        if not waiting or time.monotonic() >= deadline:
            break
        time.sleep(_POLL)
    done.update(dict.fromkeys(waiting, False))
    return done


def dump_stacks(pid: int, signum: int, timeout: float) -> bool:
    """Send `signum` (the rank's registered faulthandler signal) and wait until it was handled.

    Returns True if the handler ran to completion within `timeout` seconds.
    While a handler runs, the kernel adds the signal to the running thread's blocked mask; so the
    handler is done when the signal is pending nowhere and no thread blocks it that did not
    already block it before (library threads often block every signal for their whole life).
    """
    _, blocked_before = _signal_bits(pid, signum)
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return False
        pending, blocking = _signal_bits(pid, signum)
        if not pending and not (blocking - blocked_before):
            return True
        time.sleep(_POLL)
    return False


def terminate(pid: int, sig: int, grace: float, *, group: bool = True) -> str:
    """Send `sig` to the process (group), wait up to `grace` s for it to exit, then SIGKILL.

    Returns "exited" or "killed" (SIGKILL was needed) or "gone" (already dead).
    """
    if not process_alive(pid):
        return "gone"
    _send(pid, sig, group)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return "exited"
        time.sleep(_POLL)
    if not process_alive(pid):
        return "exited"
    _send(pid, signal.SIGKILL, group)
    return "killed"


def _send(pid: int, sig: int, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            try:
                os.killpg(pid, sig)
                return
            except (ProcessLookupError, PermissionError):
                pass
        os.kill(pid, sig)


__all__ = [
    "dump_stacks",
    "dump_stacks_all",
    "process_alive",
    "terminate",
]
