"""The exception types the CLI turns into clean messages and exit codes."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from ftslurm import exit_codes


class FtslurmError(Exception):
    """Base class of ftslurm's own errors: printed without a traceback."""

    exit_code: int = exit_codes.FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class UsageError(FtslurmError):
    """Bad input (YAML, CLI, environment): exit code 2, nothing submitted or changed."""

    exit_code = exit_codes.USAGE


class RunDirAccessError(FtslurmError):
    """A file of the run (the ledger, its lock, chain.json, a log) cannot be read or written:
    permissions, a lock file that is a directory, another user's file. Exit code 3, like the
    other failures of what surrounds the run rather than of the user's input."""

    exit_code = exit_codes.SLURM_ERROR


def suggestion(word: str, choices: Iterable[str]) -> str:
    """' (did you mean "x"?)' for the closest choice, or '' when none is close."""
    choices = list(choices)
    same_but_dashes = [c for c in choices if c.replace("-", "_") == word.replace("-", "_")]
    matches = same_but_dashes or difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f' (did you mean "{matches[0]}"?)' if matches else ""


__all__ = [
    "FtslurmError",
    "RunDirAccessError",
    "UsageError",
    "suggestion",
]
