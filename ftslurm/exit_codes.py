"""Every exit code of the `ftslurm` command and of the fault-tolerant launcher, in one place.

docs/exit-codes.md documents these; keep the two in step.
"""

OK = 0
#: The run or the command failed (for the launcher: ranks failed and restarts are exhausted).
FAILED = 1
#: Bad input: a YAML file, a command-line option or an environment variable is wrong.
USAGE = 2
#: A SLURM command (sbatch, sacct, ...) failed; its command line and stderr were printed.
SLURM_ERROR = 3
#: `ftslurm chain-start` (the script's hook): the run is over, skip the launch and exit 0.
SKIP_LAUNCH = 10
#: The workload asked not to be retried (nvidia-resiliency-ext's default, eases migration).
DO_NOT_RETRY = 93
#: The launcher stopped the ranks because it was asked to (SIGTERM, SIGINT, the warning signal).
STOPPED = 94
