"""Heartbeat timeouts: the pair the monitor enforces, how they are learned, and how they persist.

`calculate_and_set_hb_timeouts()` (in the client) turns observed intervals into timeouts with
`compute_timeouts`. Whoever keeps learned timeouts for the next attempt (the launcher's agent in
the run directory, the Lightning callback in its state folder) goes through this module, so there
is one file, one rule and one reader:

* the file is `RunDir(folder).learned_timeouts`, a JSON object
  `{"initial": s|null, "subsequent": s|null, "source": "who wrote last", "updated_at": unix time}`;
* the rule is `merge`: per timeout the larger, and null (no timeout) is the largest, so learned
  timeouts only grow whoever writes them;
* `save_learned` merges into the file under a file lock next to it (read, merge, write a temp
  file, fsync, rename), so writers on several nodes at once lose nothing;
* `load_learned` reads it;
* `apply_floor` raises learned timeouts to the launcher's `min_learned_timeout` where they are
  used (the file keeps what was learned).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftslurm.atomic import write_json_atomic
from ftslurm.rundir import RunDir

logger = logging.getLogger(__name__)

#: Longest wait (seconds) for another writer of the learned timeouts to release the lock.
LOCK_TIMEOUT = 10.0


@dataclass(frozen=True)
class HeartbeatTimeouts:
    """The two timeouts the monitor enforces (seconds; None = no timeout)."""

    initial: float | None
    subsequent: float | None

    def to_dict(self) -> dict[str, float | None]:
        return {"initial": self.initial, "subsequent": self.subsequent}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HeartbeatTimeouts:
        """Inverse of `to_dict`; raises ValueError on a malformed mapping."""
        values = []
        for key in ("initial", "subsequent"):
            raw = data.get(key)
            if raw is not None and (isinstance(raw, bool) or not isinstance(raw, int | float)):
                raise ValueError(f"learned timeout {key!r} must be a number or null, got {raw!r}")
            if raw is not None and not (raw > 0 and math.isfinite(raw)):
                raise ValueError(f"learned timeout {key!r} must be positive, got {raw!r}")
            values.append(None if raw is None else float(raw))
        return cls(*values)


def compute_timeouts(
    initial_interval: float | None, max_interval: float | None, safety_factor: float
) -> HeartbeatTimeouts | None:
    """Timeouts from observed intervals times the safety factor; None when nothing was observed.

    `initial_interval` is the time from the rank's start to its first heartbeat, `max_interval`
    the longest gap between two heartbeats. A missing interval leaves that timeout unset (None
    here means "not learned"; callers keep the configured value for it).
    """
    if initial_interval is None or max_interval is None:
        return None
    return HeartbeatTimeouts(
        initial=max(initial_interval, 1e-3) * safety_factor,
        subsequent=max(max_interval, 1e-3) * safety_factor,
    )


def merge(old: HeartbeatTimeouts | None, new: HeartbeatTimeouts) -> HeartbeatTimeouts:
    """The one rule for learned timeouts: per timeout the larger; None (no timeout) is largest.

    Learned timeouts only grow across attempts and writers: an attempt that started from scratch
    did not load a checkpoint, the next one did, and both must fit; a node whose ranks learned a
    shorter timeout must not shorten what another node learned. `old` None: nothing learned yet.
    """
    if old is None:
        return new
    return HeartbeatTimeouts(
        initial=_larger(old.initial, new.initial),
        subsequent=_larger(old.subsequent, new.subsequent),
    )


def apply_floor(timeouts: HeartbeatTimeouts, floor: float | None) -> HeartbeatTimeouts:
    """Learned `timeouts` raised to at least `floor` seconds each (`floor` None: unchanged).

    None (no timeout) stays None: it is larger than any floor. Only for learned timeouts (those
    the ranks request, those loaded from a learned-timeouts file); configured ones are the
    user's word and are never floored.
    """
    if floor is None:
        return timeouts
    return HeartbeatTimeouts(
        initial=None if timeouts.initial is None else max(timeouts.initial, floor),
        subsequent=None if timeouts.subsequent is None else max(timeouts.subsequent, floor),
    )


def _larger(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else max(a, b)


def learned_path(folder: str | os.PathLike[str]) -> Path:
    """Where the learned timeouts of a run directory (or the callback's state folder) live."""
    return RunDir(folder).learned_timeouts


def lock_path(folder: str | os.PathLike[str]) -> Path:
    """The lock `save_learned` holds while it reads, merges and writes (next to the file)."""
    return RunDir(folder).learned_timeouts_lock


def save_learned(
    folder: str | os.PathLike[str], timeouts: HeartbeatTimeouts, *, source: str
) -> HeartbeatTimeouts:
    """Merge `timeouts` into the folder's learned timeouts (`merge`); return what the file holds.

    Under the lock: read the file, merge, and write it atomically (temp file + fsync + rename)
    when that changed anything; `source` names the writer. A file that cannot be read is
    replaced (with a warning). Raises `filelock.Timeout` (an OSError) when the lock stays taken
    for `LOCK_TIMEOUT` seconds.
    """
    path = learned_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    import filelock  # here, not at the top: the workload's `import ftslurm` stays light

    with filelock.FileLock(str(lock_path(folder)), timeout=LOCK_TIMEOUT):
        try:
            current = load_learned(folder)
        except ValueError as error:
            logger.warning("replacing unreadable learned timeouts: %s", error)
            current = None
        merged = merge(current, timeouts)
        if merged != current:
            payload = {**merged.to_dict(), "source": source, "updated_at": time.time()}
            write_json_atomic(path, payload, indent=2, sort_keys=False)
    return merged


def load_learned(folder: str | os.PathLike[str]) -> HeartbeatTimeouts | None:
    """The learned timeouts of a run directory (or state folder), or None if there are none.

    Raises ValueError (naming the file) when the file exists but is not valid.
    """
    path = learned_path(folder)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    try:
        return HeartbeatTimeouts.from_dict(data)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error


__all__ = [
    "HeartbeatTimeouts",
    "apply_floor",
    "compute_timeouts",
    "learned_path",
    "load_learned",
    "lock_path",
    "merge",
    "save_learned",
]
