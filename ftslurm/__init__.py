"""ftslurm: long PyTorch training runs on SLURM that finish on their own.

Importing the package is cheap: heavy parts (torch, the launcher, Lightning) load only when used.
"""

from ftslurm.fault_tolerance.shutdown import GracefulShutdown, PeerLostError

__version__ = "0.1.0"

__all__ = ["GracefulShutdown", "PeerLostError", "__version__"]
