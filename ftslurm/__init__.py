"""ftslurm: long PyTorch training runs on SLURM that finish on their own.

Importing the package is cheap: it imports nothing else of ftslurm until a name is used, and the
heavy parts (torch, the launcher, Lightning) load only when used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ftslurm.api import Run, Sweep, runs, submit
    from ftslurm.fault_tolerance.shutdown import GracefulShutdown, PeerLostError
    from ftslurm.function import FunctionRun, submit_function
    from ftslurm.progress import report_progress

__version__ = "0.1.0"

#: The workload's API and the runs' API (docs/python-api.md), and the module each name comes
#: from (imported on first use).
_LAZY = {
    "GracefulShutdown": "ftslurm.fault_tolerance.shutdown",
    "PeerLostError": "ftslurm.fault_tolerance.shutdown",
    "report_progress": "ftslurm.progress",
    "submit": "ftslurm.api",
    "runs": "ftslurm.api",
    "Run": "ftslurm.api",
    "Sweep": "ftslurm.api",
    "submit_function": "ftslurm.function",
    "FunctionRun": "ftslurm.function",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ftslurm' has no attribute {name!r}")


__all__ = ["FunctionRun", "GracefulShutdown", "PeerLostError", "Run", "Sweep", "__version__",
           "report_progress", "runs", "submit", "submit_function"]
