"""Signal names, read and written one way everywhere (spec, launcher options, chain messages)."""

from __future__ import annotations

import signal


def parse_signal(raw: str | int | signal.Signals) -> signal.Signals:
    """A signal written "SIGUSR1", "USR1", "usr1", "10" or 10; ValueError naming it otherwise."""
    if isinstance(raw, signal.Signals):
        return raw
    text = str(raw).strip()
    try:
        if text.isdigit():
            return signal.Signals(int(text))
        name = text.upper()
        return signal.Signals[name if name.startswith("SIG") else f"SIG{name}"]
    except (KeyError, ValueError):
        raise ValueError(f"not a signal: {raw!r}") from None


def signal_text(number: int) -> str:
    """A signal number for people: `15` -> "SIGTERM", an unknown one -> "signal 99"."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


__all__ = ["parse_signal", "signal_text"]
