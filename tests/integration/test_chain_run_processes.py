"""`ftslurm submit`'s rendered scripts under shellcheck, and `ftslurm status` as a process
against a scheduler that hangs (the in-process tests: tests/unit/test_chain_run.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ftslurm.chain.run import prepare_run
from tests.helpers import slurm_run, spec_file


@pytest.mark.parametrize("launcher", ["ft", "torchrun", "none"])
def test_scripts_pass_shellcheck(tmp_path: Path, launcher: str) -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (scripts/install installs it)")
    for backend in ("local", "slurm"):
        script = prepare_run(spec_file(tmp_path, launcher=launcher), backend=backend).script_text
        assert "-m ftslurm.cli chain-start" in script and "chain-end --status" in script
        result = subprocess.run(["shellcheck", "-"], input=script, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout


HANGING_SLURM = "#!/bin/sh\nexec sleep 600\n"


def test_status_answers_from_the_run_dir_when_the_scheduler_hangs(tmp_path: Path) -> None:
    """sacct and scontrol that never answer (slurmdbd and slurmctld down): `status` returns after
    its sync timeout with the ledger's view, marked stale, and claims no stall."""
    run_dir = slurm_run(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("sacct", "scontrol", "squeue"):
        (bin_dir / name).write_text(HANGING_SLURM)
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "ftslurm.cli", "status", str(run_dir), "--json",
         "--sync-timeout", "0.5"], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["scheduler"]["stale"] and "no answer within 0.5 s" in data["scheduler"]["error"]
    assert data["stalled"] is None and data["attempts"][0]["status"] == "submitted"
