"""The RUN_DIR argument of the commands that read a run (status, watch, cancel, resume, explain)."""

from __future__ import annotations

from pathlib import Path

from ftslurm.errors import UsageError
from ftslurm.rundir import RunDir

__all__ = ["existing_run_dir"]

_HINT = "give the run_dir printed by `ftslurm submit`"


def existing_run_dir(text: str) -> Path:
    """`text` as the path of a run directory; a usage error (exit 2) when there is no such
    directory, or when it holds no ledger (not a run directory)."""
    path = Path(text)
    if not path.is_dir():
        raise UsageError(f"{text}: no such run directory", hint=_HINT)
    if not RunDir(path).ledger.exists():
        raise UsageError(f"{text}: not a run directory (it has no ledger)", hint=_HINT)
    return path
