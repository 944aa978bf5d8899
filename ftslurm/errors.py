"""The exception types the CLI turns into clean messages and exit codes."""

from __future__ import annotations

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
