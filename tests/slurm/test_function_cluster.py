"""`submit_function` on the real cluster: a function survives a crash and a preemption and
returns its value; a function that always raises gives up as a crash loop and `result()` raises
its error (submitit's FailedJobError)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from submitit.core.utils import FailedJobError

import ftslurm
from ftslurm.chain.ledger import Ledger
from ftslurm.slurm import SlurmClient
from tests.slurm.chain_util import REPO, no_jobs_left, ran, wait_for
from tests.slurm.workloads.function_jobs import bad_input, count_steps

pytestmark = pytest.mark.slurm

#: Longest wait for one run: other tests' jobs may hold the nodes.
RESULT_TIMEOUT_S = 400.0


def spec(tmp_path: Path, name: str, nproc: int = 1) -> dict[str, Any]:
    """A short single-node function run under the ft launcher; a crash fails the attempt."""
    return {
        "name": name, "nodes": 1, "nproc_per_node": nproc, "time": "5:00",
        "run_dir": str(tmp_path / "run"), "workdir": str(REPO), "python": sys.executable,
        "launcher": "ft", "max_restarts": 0, "env": {"OMP_NUM_THREADS": "1"},
        "signals": {"warning_time": 60, "stop_grace": 10},
    }


def test_a_function_survives_a_crash_and_a_preemption(tmp_path: Path, slurm_cluster) -> None:
    folder = tmp_path / "state"
    folder.mkdir()
    run = ftslurm.submit_function(count_steps, str(folder), spec=spec(tmp_path, "fn-resume"),
                                  backend="slurm")
    holding = folder / "holding"
    # attempt 1 crashed at step 10; attempt 2 resumed and now holds at step 25: preempt it
    wait_for(holding.exists, "a later attempt to hold at step 25", timeout=RESULT_TIMEOUT_S)
    view = Ledger.open(run.run_dir).state().attempt(int(holding.read_text()))
    assert view is not None and view.nodes, view
    client = SlurmClient()
    urgent = client.run(["sbatch", "--parsable",
                         f"--partition={slurm_cluster.high_priority_partition}",
                         f"--nodelist={view.nodes[0]}", "--exclusive", "--output=/dev/null",
                         "--wrap=sleep 5"]).strip()
    try:
        value = run.result(timeout=RESULT_TIMEOUT_S, interval=2.0)
    finally:
        client.cancel(urgent)
    assert value == {"step": 40, "attempts": [1, 2, 3]}
    data = run.status()
    assert data["state"] == "finished"
    outcomes = [(a["outcome"], a["counted_failure"]) for a in ran(data)]
    assert outcomes[0] == ("failed", True) and outcomes[2:] == [("finished", False)], outcomes
    assert outcomes[1] in {("preempted", False), ("stopped", False)}, outcomes
    assert run.done() and run.exception() is None
    assert no_jobs_left(run.run_dir)


def test_a_function_that_raises_returns_its_error_after_the_chain_gives_up(
        tmp_path: Path) -> None:
    run = ftslurm.submit_function(bad_input, 7, spec=spec(tmp_path, "fn-raise", nproc=2),
                                  backend="slurm")
    with pytest.raises(FailedJobError) as caught:
        run.result(timeout=RESULT_TIMEOUT_S, interval=2.0)
    message = str(caught.value)
    assert "ValueError: bad input" in message and str(run.run_dir) in message
    cause = caught.value.__cause__
    assert isinstance(cause, ValueError) and cause.args == ("bad input",)
    data = run.status()
    assert data["state"] == "failed", data["reason"]
    assert "stop_on_repeated_failure" in data["reason"]  # the crash loop: two identical crashes
    assert [(a["outcome"], a["counted_failure"]) for a in ran(data)] == [("failed", True)] * 2
    assert no_jobs_left(run.run_dir)
