"""Pytest plugin: under CI=true a skipped `slurm` test fails (CI must use the real cluster)."""

from __future__ import annotations

import os

import pytest


def running_in_ci() -> bool:
    """True when CI is set to true/1/yes: slurm tests must run, never skip."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Turn the skip of a slurm-marked test into a failure when running in CI."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and running_in_ci() and item.get_closest_marker("slurm"):
        report.outcome = "failed"
        report.longrepr = f"slurm test skipped under CI=true (forbidden): {report.longrepr}"
