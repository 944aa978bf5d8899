"""shellcheck on every rendered golden-spec script (tests/unit/specs/, see
tests/unit/test_render_golden.py): a `shellcheck` process per script."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import SPEC_NAMES, render_in_project
from tests.plugins.slurm_ci import running_in_ci

#: SC1090/SC1091: setup lines may `source` files shellcheck cannot follow (info, not a problem);
#: SC2016: a value that looks like `$(...)` is single-quoted on purpose, so it never expands.
SHELLCHECK_EXCLUDES = "SC1090,SC1091,SC2016"


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_rendered_script_passes_shellcheck(name: str, tmp_path: Path) -> None:
    if shutil.which("shellcheck") is None:
        if running_in_ci():
            pytest.fail("shellcheck is not installed (apt-get install shellcheck)")
        pytest.skip("shellcheck is not installed")
    script, _ = render_in_project(name, tmp_path)
    path = tmp_path / f"{name}.sbatch"
    path.write_text(script, encoding="utf-8")
    result = subprocess.run(
        ["shellcheck", "--shell=bash", "--severity=style", f"--exclude={SHELLCHECK_EXCLUDES}",
         str(path)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
