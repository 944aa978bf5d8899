"""SLURM time limits (`--time`): parse every format sbatch accepts, and format seconds back.

Accepted, as in `man sbatch`: "minutes", "minutes:seconds", "hours:minutes:seconds",
"days-hours", "days-hours:minutes", "days-hours:minutes:seconds", and "infinite"/"unlimited" (no
limit). In the multi-field forms, seconds and minutes are below 60 and hours below 24 when days
are given; a limit of zero means "no limit" to SLURM and is refused here, being almost always a
mistake in a job spec. So is a limit longer than `MAX_TIME_SECONDS` (365 days): SLURM reads a
huge number as "infinite", so a typo such as 20 digits would silently remove the limit.
"""

from __future__ import annotations

import re

UNLIMITED_WORDS = frozenset({"infinite", "unlimited"})
#: The longest finite time limit accepted: 365 days. Write "infinite" for no limit at all.
MAX_TIME_SECONDS = 365 * 24 * 3600
#: Digits allowed in one field; more is never a real limit (and bounds the int() conversion).
_MAX_DIGITS = 9

#: What a valid value looks like, for error messages.
EXPECTED = (
    'a SLURM time limit: "MM", "MM:SS", "HH:MM:SS", "D-HH", "D-HH:MM", "D-HH:MM:SS" '
    'or "infinite" (for example "2:00:00" or "1-12:00:00")'
)

_PATTERN = re.compile(r"(?:(?P<days>\d+)-)?(?P<clock>\d+(?::\d+){0,2})\Z")


class TimeFormatError(ValueError):
    """A string that is not a SLURM time limit; the message says what is wrong."""


def parse_duration(text: str) -> int | None:
    """Seconds in the SLURM time limit `text`, or None for an unlimited one.

    Raises TimeFormatError when `text` is not a time limit sbatch would accept.
    """
    value = text.strip()
    if value.lower() in UNLIMITED_WORDS:
        return None
    if value.startswith("-"):
        raise TimeFormatError(f"{text!r} is negative; expected {EXPECTED}")
    match = _PATTERN.match(value)
    if not match:
        raise TimeFormatError(f"{text!r} is not a time limit; expected {EXPECTED}")
    if any(len(part) > _MAX_DIGITS for part in re.split(r"[-:]", value)):
        raise _too_long(text)
    fields = [int(part) for part in match.group("clock").split(":")]
    has_days = match.group("days") is not None
    if has_days:
        days = int(match.group("days"))
        hours, minutes, seconds = [*fields, 0, 0][:3]
        if hours >= 24:
            raise TimeFormatError(f"{text!r}: hours must be below 24 after the days")
    else:
        days = 0
        if len(fields) == 1:
            hours, minutes, seconds = 0, fields[0], 0
        elif len(fields) == 2:
            hours, (minutes, seconds) = 0, fields
        else:
            hours, minutes, seconds = fields
    if len(fields) > 1 and (seconds >= 60 or (minutes >= 60 and (has_days or len(fields) == 3))):
        raise TimeFormatError(f"{text!r}: minutes and seconds must be below 60")
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total > MAX_TIME_SECONDS:
        raise _too_long(text)
    if total == 0:
        raise TimeFormatError(
            f"{text!r} is zero, which SLURM reads as 'no limit'; write \"infinite\" if you mean it"
        )
    return total


def _too_long(text: str) -> TimeFormatError:
    return TimeFormatError(
        f"{text[:30]!r} is longer than 365 days, the longest time limit accepted (SLURM would "
        'read a huge value as no limit); write a shorter limit, or "infinite" if you mean no limit'
    )


def format_seconds(seconds: int) -> str:
    """`seconds` as a SLURM time limit: "HH:MM:SS", or "D-HH:MM:SS" from one day on."""
    if seconds < 0:
        raise ValueError(f"negative duration: {seconds}")
    minutes, secs = divmod(seconds, 60)
    hours, mins = divmod(minutes, 60)
    days, hrs = divmod(hours, 24)
    clock = f"{hrs:02d}:{mins:02d}:{secs:02d}"
    return f"{days}-{clock}" if days else clock


__all__ = ["EXPECTED", "MAX_TIME_SECONDS", "TimeFormatError", "format_seconds", "parse_duration"]
