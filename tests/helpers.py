"""Helpers the tests share (fixtures and hooks stay in conftest.py, helpers live here).

tests/conftest.py imports this module (through tests/slurm/dev_cluster.py): it imports ftslurm
only inside the helpers that need it, so a broken ftslurm module fails the tests that use it,
not the collection of every test.
"""

from __future__ import annotations

import shutil
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# -- job specs of `ftslurm submit` tests ------------------------------------------------------

CHAIN_SPEC = """\
name: unit
nodes: {nodes}
nproc_per_node: 2
time: "5:00"
launcher: {launcher}
command: [train.py, --steps, "10"]
signals: {{warning_time: 90}}
"""


def spec_file(tmp_path: Path, nodes: int = 1, launcher: str = "none") -> Path:
    """tmp_path/job.yaml: the run `unit` (its run dir is tmp_path/runs/unit)."""
    path = tmp_path / "job.yaml"
    path.write_text(CHAIN_SPEC.format(nodes=nodes, launcher=launcher))
    return path


def slurm_run(tmp_path: Path) -> Path:
    """A SLURM run dir with attempt 1 submitted as job 7 (no real scheduler asked)."""
    from ftslurm.chain.ledger import Ledger
    from ftslurm.chain.run import prepare_run, write_run

    write_run(prepare_run(spec_file(tmp_path), backend="slurm"), resume=False)
    run_dir = tmp_path / "runs" / "unit"
    ledger = Ledger.open(run_dir)
    ledger.submit_attempt(1, lambda tag: "7", lambda tag: [])
    return run_dir


# -- rendered sbatch scripts of the golden specs ----------------------------------------------

#: The golden tests' specs (tests/unit/specs/*.yaml) and expected scripts (tests/unit/golden/).
SPECS = REPO_ROOT / "tests" / "unit" / "specs"
GOLDEN = REPO_ROOT / "tests" / "unit" / "golden"
SPEC_NAMES = sorted(path.stem for path in SPECS.glob("*.yaml"))


def render_in_project(name: str, tmp_path: Path) -> tuple[str, Path]:
    """The script of spec `name`, rendered in a copy of the specs folder (tmp_path/project)."""
    from ftslurm.render import render
    from ftslurm.spec import load_spec

    project = tmp_path / "project"
    shutil.copytree(SPECS, project)
    script = render(load_spec(project / f"{name}.yaml"))
    return script, project
