"""Kept so scripts rendered before the move to `ftslurm.slurm.srun_env` keep working.

A self-chaining run submits the same rendered script for every attempt, so a run started with
an older ftslurm still calls `python -m ftslurm.srun_env` after an upgrade. New scripts call
`python -m ftslurm.slurm.srun_env`.
"""

from ftslurm.slurm.srun_env import main

if __name__ == "__main__":
    raise SystemExit(main())
