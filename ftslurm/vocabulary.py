"""The base of ftslurm's named vocabularies (outcomes, statuses, launcher events)."""

from __future__ import annotations

import enum


class Vocabulary(str, enum.Enum):
    """A name that is equal to its text and is formatted and dumped (JSON) as its text."""

    def __str__(self) -> str:
        return str(self.value)


__all__ = ["Vocabulary"]
