"""The built wheel carries the sbatch templates and the console scripts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

FIND_TEMPLATES = (
    "import importlib.resources as r; "
    "print('\\n'.join(sorted(p.name for p in r.files('ftslurm.sbatch_templates').iterdir())))"
)


@pytest.mark.slow
def test_wheel_installs_templates_into_a_fresh_venv(tmp_path: Path) -> None:
    wheel_dir = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheel_dir),
         str(REPO_ROOT)],
        check=True, capture_output=True, text=True, timeout=600,
    )
    (wheel,) = wheel_dir.glob("ftslurm-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    # --no-deps: the point is what the wheel itself carries (and never pull a CUDA torch).
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--no-deps", str(wheel)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    shipped = subprocess.run(
        [str(venv / "bin" / "python"), "-c", FIND_TEMPLATES],
        check=True, capture_output=True, text=True, cwd=tmp_path, timeout=60,
    ).stdout.split()
    in_repo = sorted(
        p.name for p in (REPO_ROOT / "sbatch_templates").iterdir()
        if p.is_file() and p.suffix in {".sh", ".sbatch", ".j2", ".tmpl"}
    )
    assert in_repo, "the repository has no sbatch templates"
    assert set(in_repo) <= set(shipped)
    assert (venv / "bin" / "ftslurm").exists()
