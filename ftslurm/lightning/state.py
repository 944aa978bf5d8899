"""What the Lightning callback keeps between attempts, beyond the learned timeouts; no Lightning
import here.

* the finished flag (its path comes from the environment, `env_vars.FINISHED_FLAG_FILE`) that
  ends the auto-resume chain;
* the reader of the callback's state file of earlier ftslurm versions, `ft_state.json` in the
  state folder (the client's `state_dict()`, `{"hb_timeouts": {...}}`). The learned timeouts
  themselves live in the file of `ftslurm.fault_tolerance.timeouts`, which the launcher writes
  too; the old file is read only when that one is absent (an upgraded run keeps what it learned).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ftslurm import env_vars
from ftslurm.fault_tolerance.timeouts import HeartbeatTimeouts
from ftslurm.rundir import RunDir

#: Name of the callback's state file in ftslurm versions before the shared learned-timeouts file.
LEGACY_STATE_FILE = RunDir(".").legacy_lightning_state.name


def load_legacy_timeouts(state_dir: Path) -> HeartbeatTimeouts | None:
    """The timeouts in `state_dir/ft_state.json` (old callback versions), or None if none.

    Raises ValueError naming the file when it exists but is not a valid `state_dict()`.
    """
    path = RunDir(state_dir).legacy_lightning_state
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        state = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error}); delete it to start over") from error
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(state).__name__}")
    if not state:
        return None
    timeouts = state.get("hb_timeouts")
    if not isinstance(timeouts, dict):
        raise ValueError(f"{path}: expected {{\"hb_timeouts\": {{...}}}}, got {state!r}")
    try:
        return HeartbeatTimeouts.from_dict(timeouts)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error


def flag_path_from_env() -> Path | None:
    """The finished flag's path from the environment (`env_vars.FINISHED_FLAG_FILE`), or None
    if unset or empty."""
    value = os.environ.get(env_vars.FINISHED_FLAG_FILE, "").strip()
    return Path(value) if value else None


def write_flag(path: Path) -> None:
    """Create the finished flag (and its folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


__all__ = ["LEGACY_STATE_FILE", "flag_path_from_env", "load_legacy_timeouts", "write_flag"]
