"""`ftslurm validate` and `ftslurm render` (placeholder until the job-spec issue lands)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the job-spec subcommands."""
