"""Leaving a rank with an exit code the launcher is sure to see."""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from ftslurm import exit_codes


def exit_do_not_retry(reason: str) -> NoReturn:
    """End this rank with the do-not-retry exit code (93): no restart, and the chain stops.

    Uses `os._exit` after flushing: a plain `sys.exit(93)` while a gloo or NCCL process group is
    alive can abort during interpreter finalization ("terminate called without an active
    exception"), and the launcher would then see SIGABRT, a crash it retries.
    """
    print(f"do not retry: {reason}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(exit_codes.DO_NOT_RETRY)


__all__ = [
    "exit_do_not_retry",
]
