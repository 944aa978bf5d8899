"""The only code that runs sbatch, sacct, squeue, scontrol and scancel, and parses what they print.

`client` (SlurmClient, SlurmCommandError), `parse` (sacct/squeue/scontrol output), `hostlist`
(SLURM's compressed host lists), `srun_env` (torchrun's variables from SLURM's, for `launcher:
none`).
"""

from ftslurm.slurm.client import (
    JobRecord,
    JobSummary,
    SlurmClient,
    SlurmCommandError,
    SubmittedJob,
    submission_env,
)
from ftslurm.slurm.hostlist import compress_hostlist, expand_hostlist

__all__ = [
    "JobRecord",
    "JobSummary",
    "SlurmClient",
    "SlurmCommandError",
    "SubmittedJob",
    "compress_hostlist",
    "expand_hostlist",
    "submission_env",
]
