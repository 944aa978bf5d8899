"""The in-job hooks (chain-start / chain-end) against an in-memory scheduler."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import pytest

from ftslurm.chain import hooks
from ftslurm.chain.actions import launch_status, submit_attempt
from ftslurm.chain.ledger import Ledger
from ftslurm.chain.outcome import Outcome
from ftslurm.chain.policy import ChainConfig, decide
from ftslurm.chain.settings import ChainSettings, ChainSettingsError, load_settings
from ftslurm.errors import UsageError
from ftslurm.scheduler import AttemptRequest, JobState, Scheduler


class FakeScheduler:
    """Jobs in a dict; tests set their states."""

    def __init__(self) -> None:
        self.jobs: dict[str, AttemptRequest] = {}
        self.job_states: dict[str, JobState] = {}
        self.cancelled: list[str] = []
        self.excluded: dict[str, list[str]] = {}
        self.queries = 0

    def submit(self, request: AttemptRequest) -> str:
        job_id = str(100 + len(self.jobs))
        self.jobs[job_id] = request
        self.job_states[job_id] = JobState(job_id, "PENDING")
        return job_id

    def states(self, job_ids: Iterable[str]) -> dict[str, JobState]:
        self.queries += 1
        return {j: self.job_states[j] for j in job_ids if j in self.job_states}

    def cancel(self, job_id: str) -> None:
        self.cancelled.append(job_id)
        self.job_states[job_id] = JobState(job_id, "CANCELLED")

    def find(self, tag: str) -> list[str]:
        return [j for j, r in self.jobs.items() if r.tag == tag]

    def exclude_nodes(self, job_id: str, nodes: list[str]) -> None:
        self.excluded[job_id] = list(nodes)


@pytest.fixture
def run(tmp_path: Path) -> tuple[Path, ChainSettings, Ledger, FakeScheduler]:
    settings = ChainSettings(
        run_dir=str(tmp_path), backend="slurm", mode="self", script=str(tmp_path / "job.sbatch"),
        workdir=str(tmp_path), job_name="t", flag_file=str(tmp_path / "finished.flag"),
        config=ChainConfig(max_failures=2), owner_uid=os.getuid(), bin_dir="/usr/bin")
    settings.save()
    ledger = Ledger.create(tmp_path, spec_fingerprint="sha256:x", run_id="t-1")
    scheduler = FakeScheduler()
    state = ledger.state()
    submit_attempt(ledger, settings, scheduler, decide(state, settings.config))
    return tmp_path, settings, ledger, scheduler


def ctx(run_dir: Path, attempt: int, job: str, requeue: int = 0) -> hooks.JobContext:
    return hooks.JobContext(str(run_dir), attempt, job, ("n1",), requeue)


def test_start_pre_schedules_one_successor(run) -> None:
    run_dir, _, ledger, sched = run
    assert isinstance(sched, Scheduler)
    assert hooks.chain_start(ctx(run_dir, 1, "100"), scheduler=sched) == 0
    assert list(sched.jobs) == ["100", "101"]
    assert sched.jobs["101"].after == "100" and sched.jobs["101"].tag == "t-1.2"
    assert sched.jobs["101"].env["FTSLURM_ATTEMPT"] == "2"
    # the same job requeued: the earlier run is closed, no second successor
    assert hooks.chain_start(ctx(run_dir, 1, "100", requeue=1), scheduler=sched) == 0
    assert list(sched.jobs) == ["100", "101"]
    view = ledger.state().attempt(1)
    assert view.status == "running" and view.requeue_count == 1
    assert view.requeued_outcomes == ("preempted",)


def test_flag_before_start_skips_the_launch(run) -> None:
    run_dir, settings, ledger, sched = run
    Path(settings.flag_file).touch()
    assert hooks.chain_start(ctx(run_dir, 1, "100"), scheduler=sched) == hooks.SKIP_LAUNCH
    state = ledger.state()
    assert state.run_status == "finished" and state.attempt(1).outcome is Outcome.FINISHED
    assert list(sched.jobs) == ["100"]


def test_failures_until_the_budget_then_stop_and_withdraw(run) -> None:
    run_dir, _, ledger, sched = run
    hooks.chain_start(ctx(run_dir, 1, "100"), scheduler=sched)
    hooks.chain_end(ctx(run_dir, 1, "100"), 1, scheduler=sched)
    assert ledger.state().run_status == "running" and sched.cancelled == []
    sched.job_states["100"] = JobState("100", "FAILED", exit_code=1)
    hooks.chain_start(ctx(run_dir, 2, "101"), scheduler=sched)
    assert list(sched.jobs) == ["100", "101", "102"]
    hooks.chain_end(ctx(run_dir, 2, "101"), 1, scheduler=sched)
    state = ledger.state()
    assert state.run_status == "failed" and sched.cancelled == ["102"]
    third = state.attempt(3)
    assert third.outcome is Outcome.CANCELLED and third.started_at is None


def test_provisional_end_decides_nothing_and_successor_completes_it(run) -> None:
    run_dir, _, ledger, sched = run
    hooks.chain_start(ctx(run_dir, 1, "100"), scheduler=sched)
    hooks.chain_end(ctx(run_dir, 1, "100"), 143, scheduler=sched)  # killed by SIGTERM
    view = ledger.state().attempt(1)
    assert view.provisional and view.outcome is Outcome.FAILED and sched.cancelled == []
    sched.job_states["100"] = JobState("100", "TIMEOUT", exit_code=0, signal=15)
    hooks.chain_start(ctx(run_dir, 2, "101"), scheduler=sched)
    view = ledger.state().attempt(1)
    assert view.outcome is Outcome.TIMEOUT and not view.provisional and not view.counted_failure


def test_predecessor_killed_hard_is_recorded_from_the_scheduler(run) -> None:
    run_dir, _, ledger, sched = run
    hooks.chain_start(ctx(run_dir, 1, "100"), scheduler=sched)
    sched.job_states["100"] = JobState("100", "NODE_FAIL", nodes=("n2",))
    hooks.chain_start(ctx(run_dir, 2, "101"), scheduler=sched)
    state = ledger.state()
    first = state.attempt(1)
    assert first.outcome is Outcome.NODE_FAIL and first.blamed_nodes == ("n2",)
    assert first.counted_failure  # node_fail without progress counts
    assert sched.jobs["102"].exclude_nodes == ("n2",)


def test_launch_killed_after_the_time_limit_warning_is_a_timeout(run) -> None:
    run_dir, _, ledger, sched = run
    hooks.chain_start(ctx(run_dir, 1, "100"), scheduler=sched)
    hooks.chain_end(ctx(run_dir, 1, "100"), 137, warned=True, scheduler=sched)
    view = ledger.state().attempt(1)
    assert view.outcome is Outcome.TIMEOUT and not view.provisional and not view.counted_failure
    assert "time-limit warning" in view.reason and ledger.state().run_status == "running"


def test_fatal_exit_stops_at_once(run) -> None:
    run_dir, _, ledger, sched = run
    hooks.chain_start(ctx(run_dir, 1, "100"), scheduler=sched)
    hooks.chain_end(ctx(run_dir, 1, "100"), 93, scheduler=sched)
    state = ledger.state()
    assert state.run_status == "failed" and state.attempt(1).outcome is Outcome.FATAL
    assert sched.cancelled == ["101"]


def test_launcher_crash_event_blames_node_and_excludes_it(run) -> None:
    run_dir, _, ledger, sched = run
    hooks.chain_start(ctx(run_dir, 1, "100"), scheduler=sched)
    status_dir = run_dir / "launcher_status"
    status_dir.mkdir()
    (status_dir / "attempt-1.n1.json").write_text(json.dumps(
        {"events": [{"kind": "crash", "node": "n1", "rank": 0}]}))
    (status_dir / "attempt-1.n9.json").write_text("{not json")  # skipped, never fatal
    hooks.chain_end(ctx(run_dir, 1, "100"), 1, scheduler=sched)
    assert ledger.state().blamed_nodes == ("n1",)
    assert sched.excluded == {"101": ["n1"]}


def test_context_from_env_and_errors(tmp_path: Path) -> None:
    env = {"FTSLURM_RUN_DIR": str(tmp_path), "FTSLURM_ATTEMPT": "3", "SLURM_JOB_ID": "7",
           "SLURM_JOB_NODELIST": "n[1-2]", "SLURM_RESTART_COUNT": "1"}
    assert hooks.JobContext.from_env(env) == hooks.JobContext(str(tmp_path), 3, "7",
                                                              ("n1", "n2"), 1)
    with pytest.raises(UsageError, match="FTSLURM_ATTEMPT"):
        hooks.JobContext.from_env({**env, "FTSLURM_ATTEMPT": ""})
    with pytest.raises(UsageError, match="not a number"):
        hooks.JobContext.from_env({**env, "FTSLURM_ATTEMPT": "x"})


@pytest.mark.parametrize("text", ["", "{", '{"format": "other"}', '{"format": "ftslurm.chain", '
                                  '"version": 99}', '{"format": "ftslurm.chain", "version": 1}'])
def test_corrupt_or_foreign_chain_file(tmp_path: Path, text: str) -> None:
    (tmp_path / "chain.json").write_text(text)
    with pytest.raises(ChainSettingsError, match="chain"):
        load_settings(tmp_path)


def _launcher_status(run_dir: Path, attempt: int, node: str, exit_code: int | None) -> None:
    folder = run_dir / "launcher_status"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"attempt-{attempt}.{node}.json").write_text(
        json.dumps({"node": node, "exit_code": exit_code}))


@pytest.mark.parametrize(
    ("codes", "srun_status", "expected"),
    [
        ({"n1": 93, "n2": None}, 143, 93),  # srun killed n2 after n1's do-not-retry
        ({"n1": 94, "n2": None}, 143, 94),  # srun killed n2 after n1 stopped
        ({"n1": 94, "n2": 94}, 94, 94),
        ({"n1": 94, "n2": 1}, 1, 1),  # a failed launcher is not hidden by a stopped one
        ({"n1": 1, "n2": None}, 143, 1),  # srun killed n2 after n1 gave up: a failure
        ({"n1": 1}, 1, 1),
        ({}, 137, 137),  # no status files (launcher none, torchrun): srun's word stands
        ({"n1": 94}, 0, 0),
    ],
)
def test_launch_status_trusts_the_launchers(
    tmp_path: Path, codes: dict[str, int | None], srun_status: int, expected: int
) -> None:
    for node, code in codes.items():
        _launcher_status(tmp_path, 2, node, code)
    _launcher_status(tmp_path, 1, "n1", 93)  # another attempt's file never counts
    assert launch_status(tmp_path, 2, srun_status) == expected
