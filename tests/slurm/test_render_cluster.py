"""A rendered 2-node script, submitted by `ftslurm submit`, runs a gloo all-reduce to completion
on the real dev cluster.

`launcher: torchrun` and `launcher: none` (srun + ftslurm.slurm.srun_env); the ft launcher has
its own cluster tests. Every rank must see the right RANK / WORLD_SIZE / LOCAL_RANK and the
arguments exactly as written in the spec, hostile ones included (they pass through sbatch, bash,
srun and the launcher).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from ftslurm.spec import load_spec
from tests.slurm.chain_util import ftslurm, run_ended

REPO = Path(__file__).resolve().parents[2]
ALLREDUCE = REPO / "examples" / "allreduce" / "allreduce.py"
NODES, NPROC = 2, 2
HOSTILE_ARGS = ["two words", "$(touch pwned)", "`touch pwned`", "a;b", "it's", "ünï ✓"]


def _submit_and_wait(spec: Path, run_dir: Path) -> dict:
    """`ftslurm submit` the spec (one attempt: `autoresume.max_attempts: 1`) and wait until the
    run ended; the status JSON. A script submitted by plain sbatch would not train: the ledger
    must confirm every job as the run's attempt."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = ftslurm("submit", "--backend", "slurm", str(spec), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return run_ended(run_dir)


@pytest.mark.slurm
@pytest.mark.parametrize("launcher", ["torchrun", "none"])
def test_two_node_allreduce_runs_to_completion(launcher: str, tmp_path: Path) -> None:
    project = tmp_path / "project dir"  # a space in every path of the job
    project.mkdir()
    shutil.copy(ALLREDUCE, project / "allreduce.py")
    out_dir = project / "out $x"
    spec_data = {
        "name": f"allreduce-{launcher}",
        "nodes": NODES,
        "nproc_per_node": NPROC,
        "time": "10:00",
        "launcher": launcher,
        "python": sys.executable,
        "command": ["allreduce.py", str(out_dir), *HOSTILE_ARGS],
        "env": {"GLOO_SOCKET_IFNAME": "lo"},
        "autoresume": {"max_attempts": 1},
    }
    if launcher != "none":
        spec_data["max_restarts"] = 0
    (project / "job.yaml").write_text(yaml.safe_dump(spec_data), encoding="utf-8")
    spec = load_spec(project / "job.yaml")

    data = _submit_and_wait(project / "job.yaml", spec.run_dir)

    logs = "\n".join(path.read_text(errors="replace") for path in spec.logs_dir.glob("*.out"))
    first = data["attempts"][0]
    assert (first["outcome"], first["exit_code"]) == ("stopped", 0), f"{first}\n{logs}"
    records = sorted(
        (json.loads(path.read_text()) for path in out_dir.glob("rank-*.json")),
        key=lambda record: record["rank"],
    )
    world_size = NODES * NPROC
    assert [record["rank"] for record in records] == list(range(world_size)), logs
    for record in records:
        env = record["env"]
        assert env["RANK"] == str(record["rank"])
        assert env["WORLD_SIZE"] == str(world_size)
        assert env["LOCAL_RANK"] == str(record["rank"] % NPROC)
        assert env["LOCAL_WORLD_SIZE"] == str(NPROC)
        assert env["FTSLURM_RUN_DIR"] == str(spec.run_dir)
        assert env["FAULT_TOL_FINISHED_FLAG_FILE"] == str(spec.autoresume.flag_file)
        assert record["sum"] == record["expected"]
        assert record["args"] == HOSTILE_ARGS
    assert not list(project.rglob("pwned")) and not (spec.workdir / "pwned").exists()
