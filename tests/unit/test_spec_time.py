"""SLURM time limits: every format sbatch accepts, and clear errors for the rest."""

from __future__ import annotations

import pytest

from ftslurm.spec.duration import TimeFormatError, format_seconds, parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("60", 3600), ("90:30", 5430), ("1:30:00", 5400), ("48:00:00", 172800),
    ("2-12", 216000), ("2-12:30", 217800), ("2-12:30:15", 217815), ("0-00:00:01", 1),
    ("infinite", None), ("UNLIMITED", None),
])
def test_valid_formats(text: str, seconds: int | None) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(("text", "message"), [
    ("-5", "negative"), ("0", "zero"), ("1:60", "below 60"), ("1:61:00", "below 60"),
    ("2-24", "below 24"), ("abc", "not a time limit"), ("1:2:3:4", "not a time limit"),
    ("", "not a time limit"), ("1.5", "not a time limit"),
])
def test_invalid_formats(text: str, message: str) -> None:
    with pytest.raises(TimeFormatError, match=message):
        parse_duration(text)


def test_format_round_trips() -> None:
    for seconds in (1, 59, 3600, 86399, 86400, 200000):
        assert parse_duration(format_seconds(seconds)) == seconds
    assert format_seconds(90061) == "1-01:01:01"
