"""Kept so a watch loop started before the move to `ftslurm.backends.local_supervisor` keeps
working: its LocalScheduler, already in memory, starts `python -m ftslurm.local_supervisor`."""

from ftslurm.backends.local_supervisor import main

if __name__ == "__main__":
    raise SystemExit(main())
