"""Polling with a deadline, the tests' one way to wait for something to happen.

`wait_for` fails the test when its deadline passes; `poll` is the same loop for a best-effort
wait whose deadline is no failure (a background thread that then goes on). A predicate may raise
to fail at once, e.g. when the process it waits on has exited. Never sleep to let something
happen: wait for what it does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll(predicate: Callable[[], T], timeout: float, interval: float = 0.05) -> T:
    """Call `predicate` every `interval` s until it returns a truthy value, and return that; once
    `timeout` s have passed, return its last (falsy) value instead. It is called at least once."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= end:
            return value
        time.sleep(interval)


def wait_for(predicate: Callable[[], T], what: str, timeout: float = 60.0,
             interval: float = 0.05, *, details: Callable[[], str] | None = None) -> T:
    """Poll `predicate` until it returns a truthy value (returned); after `timeout` s fail with an
    AssertionError naming `what` was awaited, the predicate's last value and, when given, the
    text of `details()` (e.g. the tail of a log)."""
    value = poll(predicate, timeout, interval)
    if value:
        return value
    message = f"timed out after {timeout:g} s waiting for {what}; last value: {value!r}"
    if details is not None:
        message += "\n" + details()
    raise AssertionError(message)
