"""ftslurm: long PyTorch training runs on SLURM that finish on their own.

Importing the package is cheap: heavy parts (torch, the launcher, Lightning) load only when used.
"""

__version__ = "0.1.0"
