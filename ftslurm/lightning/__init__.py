"""PyTorch Lightning integration: `FaultToleranceCallback` (needs the `lightning` extra)."""

from ftslurm.lightning.callback import FaultToleranceCallback, FaultToleranceCallbackError

__all__ = ["FaultToleranceCallback", "FaultToleranceCallbackError"]
