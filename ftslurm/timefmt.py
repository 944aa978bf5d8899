"""Durations and clock times as the goodput views print them."""

from __future__ import annotations

import time

__all__ = ["clock", "duration"]


def duration(seconds: float | None) -> str:
    """`12.3s`, `3m05s`, `1h02m`; `-` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def clock(at: float, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """Epoch seconds as local time."""
    return time.strftime(fmt, time.localtime(at))
