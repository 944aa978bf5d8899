"""Issue 15 on the real dev cluster: the Python API does what the command line does — submit a
run and a sweep, wait for them, read status, explain, report, logs and the fleet rows, cancel."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import ftslurm
from ftslurm.api import Run, Sweep
from tests.slurm.chain_util import fault_trial_spec, no_jobs_left

pytestmark = pytest.mark.slurm



def write_spec(tmp_path: Path, plan: dict[str, str], extra: str = "") -> Path:
    trial = tmp_path / "trial"
    trial.mkdir()
    (trial / "plan.json").write_text(json.dumps(plan))
    spec = tmp_path / "job.yaml"
    spec.write_text(fault_trial_spec("api", tmp_path / "run", str(trial), extra))
    return spec


def test_a_run_submitted_waited_for_and_explained_from_python(tmp_path: Path) -> None:
    run = ftslurm.submit(write_spec(tmp_path, {"1": "crash"}), max_failures=3, backend="slurm")
    assert isinstance(run, Run) and run.run_dir == tmp_path / "run"
    final = run.wait(timeout=400, interval=2)
    assert final["state"] == "finished", final
    assert no_jobs_left(run.run_dir)
    assert [a["outcome"] for a in final["attempts"] if not a["withdrawn"]] == [
        "failed", "finished"]
    assert run.status()["state"] == "finished"
    # why attempt 1 ended: the rank's exit, from its incident record
    record = run.explain(1)
    assert record["attempt"] == 1 and record["culprit"]["rank"] == 0, record["culprit"]
    assert run.explain()["attempt"] == 2  # the last that ended
    report = run.report()
    assert [a["attempt"] for a in report["attempts"]] == [1, 2]
    assert "attempt 2" in run.logs()
    row = run.summary()
    assert (row.state, row.attempts, row.failures_left) == ("finished", 2, 3)
    assert ftslurm.runs(tmp_path) == [run]


def test_a_sweep_driven_from_python_and_a_run_cancelled(tmp_path: Path) -> None:
    # point 2 crashes in its first two attempts (a crash loop: it fails), point 1 finishes
    spec = write_spec(tmp_path, {})
    for point, plan in (("1", {}), ("2", {"1": "crash", "2": "crash"})):
        (tmp_path / f"trial{point}").mkdir()
        (tmp_path / f"trial{point}" / "plan.json").write_text(json.dumps(plan))
    spec.write_text(spec.read_text().replace(f"'{tmp_path / 'trial'}'",
                                             f"'{tmp_path / 'trial'}{{{{POINT}}}}'"))
    sweep = ftslurm.submit(spec, sweep={"env.POINT": [1, 2]}, max_parallel=1, backend="slurm")
    assert isinstance(sweep, Sweep) and sweep.root == tmp_path / "run"
    assert [r.run_dir.name for r in sweep.runs()] == ["POINT=1", "POINT=2"]
    assert [row.state for row in sweep.summary()] == ["running", "waiting"]
    rows = sweep.wait(timeout=400, interval=2)
    assert [(row.state, row.attempts) for row in rows] == [("finished", 1), ("failed", 2)]
    # fixed: --resume goes on with the point that did not finish, and leaves the other alone
    (tmp_path / "trial2" / "plan.json").write_text("{}")
    again = ftslurm.submit(spec, sweep={"env.POINT": [1, 2]}, max_parallel=1, backend="slurm",
                           resume=True)
    assert isinstance(again, Sweep)
    rows = again.wait(timeout=400, interval=2)
    assert [(row.state, row.attempts) for row in rows] == [("finished", 1), ("finished", 3)]

    held = tmp_path / "held"
    held.mkdir()
    run = ftslurm.submit(write_spec(held, {}, extra="sbatch: {begin: now+1hour}"),
                         backend="slurm")
    assert isinstance(run, Run)
    assert run.summary().job_status == "submitted"
    data = run.cancel()
    assert data["state"] == "cancelled" and data["not_ended_yet"] == []
    assert run.summary().state == "cancelled"
