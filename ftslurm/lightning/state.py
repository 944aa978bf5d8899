"""Files the Lightning callback keeps between attempts; no Lightning import here.

* `exp_dir/ft_state.json`: the `RankMonitorClient.state_dict()` (learned heartbeat timeouts),
  written atomically (temp file + rename) so a crash never leaves half a file;
* the finished flag (`$FAULT_TOL_FINISHED_FLAG_FILE`) that ends the auto-resume chain.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ftslurm.atomic import write_json_atomic

#: Name of the callback's state file inside `exp_dir`.
STATE_FILE = "ft_state.json"
#: Environment variable naming the finished flag (same name as nvidia-resiliency-ext).
FLAG_ENV = "FAULT_TOL_FINISHED_FLAG_FILE"


def load_state(exp_dir: Path) -> dict[str, Any]:
    """The saved client state, or `{}` when there is none yet.

    Raises ValueError naming the file when it exists but is not a JSON object.
    """
    path = exp_dir / STATE_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    try:
        state = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error}); delete it to start over") from error
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(state).__name__}")
    return state


def save_state(exp_dir: Path, state: dict[str, Any]) -> Path:
    """Write `state` to `exp_dir/ft_state.json` atomically; returns the path."""
    path = exp_dir / STATE_FILE
    write_json_atomic(path, state, indent=2)
    return path


def merge_timeouts(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Per timeout, the larger of two `state_dict()`s (None, i.e. no timeout, is the largest).

    Learned timeouts only grow across attempts: an attempt that started from scratch did not
    load a checkpoint, the next one did, and both must fit.
    """
    if not old.get("hb_timeouts"):
        return new
    if not new.get("hb_timeouts"):
        return old
    merged: dict[str, float | None] = {}
    for key in ("initial", "subsequent"):
        values = [old["hb_timeouts"].get(key), new["hb_timeouts"].get(key)]
        merged[key] = None if None in values else max(values, key=lambda v: v or -math.inf)
    return {"hb_timeouts": merged}


def flag_path_from_env() -> Path | None:
    """The finished flag's path from `$FAULT_TOL_FINISHED_FLAG_FILE`, or None if unset/empty."""
    value = os.environ.get(FLAG_ENV, "").strip()
    return Path(value) if value else None


def write_flag(path: Path) -> None:
    """Create the finished flag (and its folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


__all__ = [
    "FLAG_ENV",
    "STATE_FILE",
    "flag_path_from_env",
    "load_state",
    "merge_timeouts",
    "save_state",
    "write_flag",
]
