"""PyTorch Lightning integration: `FaultToleranceCallback` (needs the `lightning` extra).

The callback module is imported on first use of its names, so the package's Lightning-free
modules (`ftslurm.lightning.state`) load without Lightning installed, and
`from ftslurm.lightning import FaultToleranceCallback` without it raises an ImportError that says
what to install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ftslurm.lightning.callback import FaultToleranceCallback, FaultToleranceCallbackError

__all__ = ["FaultToleranceCallback", "FaultToleranceCallbackError"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from ftslurm.lightning import callback

        return getattr(callback, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
