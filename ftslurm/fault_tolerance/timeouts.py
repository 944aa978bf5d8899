"""Heartbeat timeouts: the pair the monitor enforces, how they are learned, and how they persist.

`calculate_and_set_hb_timeouts()` (in the client) turns observed intervals into timeouts with
`compute_timeouts`; the launcher stores what ranks learned in
`$FTSLURM_RUN_DIR/ft_learned_timeouts.json` (`save_learned` / `load_learned`, atomic writes) so the
next attempt of a chain starts with them.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftslurm.atomic import write_json_atomic

#: File name of the learned timeouts inside the run directory.
LEARNED_FILE = "ft_learned_timeouts.json"


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


def learned_path(run_dir: str | Path) -> Path:
    """Where the learned timeouts of a run directory live."""
    return Path(run_dir) / LEARNED_FILE


def save_learned(run_dir: str | Path, timeouts: HeartbeatTimeouts, *, source: str) -> Path:
    """Atomically write the learned timeouts (temp file + fsync + rename)."""
    path = learned_path(run_dir)
    payload = {**timeouts.to_dict(), "source": source, "updated_at": time.time()}
    write_json_atomic(path, payload, indent=2, sort_keys=False)
    return path


def load_learned(run_dir: str | Path) -> HeartbeatTimeouts | None:
    """The learned timeouts of a run directory, or None if there are none.

    Raises ValueError (naming the file) when the file exists but is not valid.
    """
    path = learned_path(run_dir)
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
