"""Golden-file tests of rendered sbatch scripts (shellcheck on every one of them:
tests/integration/test_render_golden_processes.py).

Each spec in tests/unit/specs/ is copied to a temporary project directory, rendered, and compared
with tests/unit/golden/<spec>.sbatch after the project path is replaced by /home/user/project.

Regenerate the goldens after an intended change (then review the diff):

    UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_render_golden.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ftslurm.render import ft_config_text, prepare_run_dir
from ftslurm.spec import load_spec
from tests.helpers import GOLDEN, SPEC_NAMES, render_in_project

PROJECT = "/home/user/project"


def _normalized(script: str, project: Path) -> str:
    return script.replace(str(project), PROJECT)


def test_there_are_goldens_for_the_required_cases() -> None:
    required = {"single_node", "two_nodes", "torchrun", "srun_only", "container", "extra_sbatch"}
    assert required <= set(SPEC_NAMES)


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_rendered_script_matches_golden(name: str, tmp_path: Path) -> None:
    script, project = render_in_project(name, tmp_path)
    actual = _normalized(script, project)
    golden = GOLDEN / f"{name}.sbatch"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(actual, encoding="utf-8")
    assert golden.exists(), f"no golden file {golden}; run with UPDATE_GOLDEN=1 to create it"
    assert actual == golden.read_text(encoding="utf-8"), (
        f"{name}: the rendered script differs from {golden}; if the change is intended, "
        "regenerate with UPDATE_GOLDEN=1 and review the diff"
    )


def test_rendering_is_deterministic(tmp_path: Path) -> None:
    first, _ = render_in_project("two_nodes", tmp_path / "a")
    second, _ = render_in_project("two_nodes", tmp_path / "b")
    assert first.replace(str(tmp_path / "a"), "") == second.replace(str(tmp_path / "b"), "")


def test_render_writes_nothing(tmp_path: Path) -> None:
    _, project = render_in_project("two_nodes", tmp_path)
    assert not (project / "runs").exists()


def test_prepare_run_dir_writes_the_ft_config(tmp_path: Path) -> None:
    _, project = render_in_project("two_nodes", tmp_path)
    spec = load_spec(project / "two_nodes.yaml")
    prepare_run_dir(spec)
    assert spec.logs_dir.is_dir()
    text = spec.ft_config_path.read_text()
    assert text == ft_config_text(spec)
    assert text.startswith("fault_tolerance:\n")
    assert "initial_rank_heartbeat_timeout: 1800" in text
    assert "rank_heartbeat_timeout: null" in text
