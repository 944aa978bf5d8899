"""The CI rule: a skipped slurm test fails the run under CI=true and only skips outside CI."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

SKIPPING_TESTS = """
import pytest

@pytest.mark.slurm
def test_needs_cluster():
    pytest.skip("no SLURM here")

def test_plain_skip():
    pytest.skip("unrelated")
"""


@pytest.mark.parametrize(("ci", "failed", "skipped"), [("true", 1, 1), ("", 0, 2)])
def test_skipped_slurm_test_fails_only_in_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str, failed: int, skipped: int
) -> None:
    monkeypatch.setenv("CI", ci)
    pytester.makeini("[pytest]\nmarkers =\n    slurm: real cluster\n")
    pytester.makepyfile(SKIPPING_TESTS)
    result = pytester.runpytest("-p", "tests.plugins.slurm_ci")
    result.assert_outcomes(failed=failed, skipped=skipped)
