"""Golden-file tests of rendered sbatch scripts, and shellcheck on every one of them.

Each spec in tests/unit/specs/ is copied to a temporary project directory, rendered, and compared
with tests/unit/golden/<spec>.sbatch after the project path is replaced by /home/user/project.

Regenerate the goldens after an intended change (then review the diff):

    UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_render_golden.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ftslurm.render import ft_config_text, prepare_run_dir, render
from ftslurm.spec import load_spec
from tests.conftest import running_in_ci

HERE = Path(__file__).parent
SPECS = HERE / "specs"
GOLDEN = HERE / "golden"
PROJECT = "/home/user/project"
SPEC_NAMES = sorted(path.stem for path in SPECS.glob("*.yaml"))
#: SC1090/SC1091: setup lines may `source` files shellcheck cannot follow (info, not a problem);
#: SC2016: a value that looks like `$(...)` is single-quoted on purpose, so it never expands.
SHELLCHECK_EXCLUDES = "SC1090,SC1091,SC2016"


def _render_in_project(name: str, tmp_path: Path) -> tuple[str, Path]:
    project = tmp_path / "project"
    shutil.copytree(SPECS, project)
    script = render(load_spec(project / f"{name}.yaml"))
    return script, project


def _normalized(script: str, project: Path) -> str:
    return script.replace(str(project), PROJECT)


def test_there_are_goldens_for_the_required_cases() -> None:
    required = {"single_node", "two_nodes", "torchrun", "srun_only", "container", "extra_sbatch"}
    assert required <= set(SPEC_NAMES)


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_rendered_script_matches_golden(name: str, tmp_path: Path) -> None:
    script, project = _render_in_project(name, tmp_path)
    actual = _normalized(script, project)
    golden = GOLDEN / f"{name}.sbatch"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(actual, encoding="utf-8")
    assert golden.exists(), f"no golden file {golden}; run with UPDATE_GOLDEN=1 to create it"
    assert actual == golden.read_text(encoding="utf-8"), (
        f"{name}: the rendered script differs from {golden}; if the change is intended, "
        "regenerate with UPDATE_GOLDEN=1 and review the diff"
    )


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_rendered_script_passes_shellcheck(name: str, tmp_path: Path) -> None:
    if shutil.which("shellcheck") is None:
        if running_in_ci():
            pytest.fail("shellcheck is not installed (apt-get install shellcheck)")
        pytest.skip("shellcheck is not installed")
    script, _ = _render_in_project(name, tmp_path)
    path = tmp_path / f"{name}.sbatch"
    path.write_text(script, encoding="utf-8")
    result = subprocess.run(
        ["shellcheck", "--shell=bash", "--severity=style", f"--exclude={SHELLCHECK_EXCLUDES}",
         str(path)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_rendering_is_deterministic(tmp_path: Path) -> None:
    first, _ = _render_in_project("two_nodes", tmp_path / "a")
    second, _ = _render_in_project("two_nodes", tmp_path / "b")
    assert first.replace(str(tmp_path / "a"), "") == second.replace(str(tmp_path / "b"), "")


def test_render_writes_nothing(tmp_path: Path) -> None:
    _, project = _render_in_project("two_nodes", tmp_path)
    assert not (project / "runs").exists()


def test_prepare_run_dir_writes_the_ft_config(tmp_path: Path) -> None:
    _, project = _render_in_project("two_nodes", tmp_path)
    spec = load_spec(project / "two_nodes.yaml")
    prepare_run_dir(spec)
    assert spec.logs_dir.is_dir()
    text = spec.ft_config_path.read_text()
    assert text == ft_config_text(spec)
    assert text.startswith("fault_tolerance:\n")
    assert "initial_rank_heartbeat_timeout: 1800" in text
    assert "rank_heartbeat_timeout: null" in text
