"""Subcommand modules of the `ftslurm` command; each exposes `register(subparsers)`."""
