"""SlurmClient without running a command: a missing binary, the submission environment, and
merging the controller's live view into accounting records.

The command running itself (errors, retries, clean environment, sacct fallback), against small
real executables on PATH: tests/integration/test_slurm_commands_processes.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ftslurm.slurm import SlurmClient, SlurmCommandError, submission_env


def test_missing_binary_is_a_slurm_command_error(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SlurmCommandError, match="`sacct` is not on PATH") as info:
        SlurmClient().job_states(["1"])
    assert info.value.returncode is None


def test_submission_env_without_slurm_conf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_CONF", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "5")
    assert not any(name.startswith("SLURM_") for name in submission_env())


def test_a_pending_job_gets_the_controllers_reason() -> None:
    """sacct keeps the reason stored at submission ("None"); the controller has the live one."""
    from ftslurm.slurm.client import _merge_live
    from ftslurm.slurm.parse import JobRecord

    accounted = [JobRecord("7", None, None, None, "PENDING", reason="None", raw_id="7",
                           partition="batch")]
    live = [JobRecord("7", None, None, None, "PENDING", reason="BeginTime", raw_id="7",
                      source="scontrol")]
    merged = _merge_live(accounted, live)
    assert [(r.state, r.reason, r.source) for r in merged] == [("PENDING", "BeginTime", "sacct")]
