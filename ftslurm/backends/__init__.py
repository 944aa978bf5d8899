"""Where attempts run: the `Scheduler` protocol and its two implementations.

`base` (the protocol, `AttemptRequest`, `JobState`), `slurm` (SlurmScheduler, over
`ftslurm.slurm`), `local` (LocalScheduler: a detached `local_supervisor` per job, no SLURM) and
`proc_marker` (how the local supervisor finds every process of its job).
"""

from ftslurm.backends.base import (
    FINAL_STATES,
    AttemptRequest,
    JobState,
    Scheduler,
    SchedulerError,
)
from ftslurm.backends.local import LocalScheduler
from ftslurm.backends.slurm import SlurmScheduler

__all__ = [
    "FINAL_STATES",
    "AttemptRequest",
    "JobState",
    "LocalScheduler",
    "Scheduler",
    "SchedulerError",
    "SlurmScheduler",
]
