"""The in-job hooks (chain-start / chain-end) against an in-memory scheduler."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NoReturn

import pytest

from ftslurm.backends import AttemptRequest, JobState, Scheduler
from ftslurm.chain import actions, hooks
from ftslurm.chain.actions import apply_job_states, launch_status, submit_attempt
from ftslurm.chain.incident import read_incident
from ftslurm.chain.ledger import Ledger
from ftslurm.chain.outcome import AttemptStatus, Outcome
from ftslurm.chain.policy import ChainConfig, decide
from ftslurm.chain.settings import ChainSettings, ChainSettingsError, load_settings
from ftslurm.errors import UsageError
from ftslurm.slurm import SlurmCommandError


class FakeScheduler:
    """Jobs in a dict; tests set their states."""

    def __init__(self) -> None:
        self.jobs: dict[str, AttemptRequest] = {}
        self.job_states: dict[str, JobState] = {}
        self.cancelled: list[str] = []
        self.excluded: dict[str, list[str]] = {}
        #: node -> the scheduler's state and reason, for nodes it reports unusable
        self.down: dict[str, str] = {}
        self.node_queries: list[tuple[tuple[str, ...], float | None, float | None]] = []
        self.queries = 0
        self.refuse_exclusions = False

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

    def node_problems(self, nodes: Sequence[str], *, since: float | None = None,
                      until: float | None = None) -> dict[str, str]:
        self.node_queries.append((tuple(nodes), since, until))
        return {node: self.down[node] for node in nodes if node in self.down}

    def exclude_nodes(self, job_id: str, nodes: list[str]) -> None:
        if self.refuse_exclusions:
            raise SlurmCommandError(["sbatch", "--test-only"], 1,
                                    "Requested node configuration is not available")
        self.excluded[job_id] = list(nodes)


class BrokenScheduler:
    """A scheduler whose controller does not answer (every call fails like sbatch does)."""

    def __init__(self, inner: FakeScheduler) -> None:
        self.inner = inner

    def _down(self, *args: object) -> NoReturn:
        raise SlurmCommandError(["sbatch"], 1, "sbatch: error: Socket timed out")

    submit = states = cancel = find = exclude_nodes = _down


class FlakyScheduler(BrokenScheduler):
    """Submissions fail `failures` times, then work."""

    def __init__(self, inner: FakeScheduler, failures: int) -> None:
        super().__init__(inner)
        self.failures = failures
        self.states = inner.states
        self.cancel = inner.cancel
        self.find = inner.find
        self.exclude_nodes = inner.exclude_nodes

    def submit(self, request: AttemptRequest) -> str:
        if self.failures:
            self.failures -= 1
            self._down()
        return self.inner.submit(request)


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


def ctx(run_dir: Path, attempt: int, job: str, requeue: int = 0,
        nodes: tuple[str, ...] = ("n1",)) -> hooks.JobContext:
    return hooks.JobContext(str(run_dir), attempt, job, nodes, requeue)


def test_start_keeps_two_attempts_queued(run) -> None:
    run_dir, _, ledger, sched = run
    assert isinstance(sched, Scheduler)
    assert hooks.chain_start(ctx(run_dir, 1, "100"), scheduler=sched) == 0
    assert list(sched.jobs) == ["100", "101", "102"]
    assert sched.jobs["101"].after == "100" and sched.jobs["101"].tag == "t-1.2"
    assert sched.jobs["102"].after == "100:101"  # never before either job ahead of it ended
    assert sched.jobs["101"].env["FTSLURM_ATTEMPT"] == "2"
    # the same job requeued: the earlier run is closed, no further successor
    assert hooks.chain_start(ctx(run_dir, 1, "100", requeue=1), scheduler=sched) == 0
    assert list(sched.jobs) == ["100", "101", "102"]
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
    assert list(sched.jobs) == ["100", "101", "102", "103"]
    hooks.chain_end(ctx(run_dir, 2, "101"), 1, scheduler=sched)
    state = ledger.state()
    assert state.run_status == "failed" and sched.cancelled == ["102", "103"]
    for number in (3, 4):
        view = state.attempt(number)
        assert view.outcome is Outcome.CANCELLED and view.started_at is None


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
    # a node failure is the node's fault, never the workload's: it does not count (issue 12)
    assert not first.counted_failure and first.node_failures == 1
    assert sched.excluded == {"102": ["n2"]}  # queued before the blame: updated
    assert sched.jobs["103"].exclude_nodes == ("n2",)  # queued after it


def test_a_node_failure_of_a_two_node_job_blames_the_node_the_scheduler_names(run) -> None:
    run_dir, _, ledger, sched = run
    hooks.chain_start(ctx(run_dir, 1, "100", nodes=("n1", "n2")), scheduler=sched)
    sched.job_states["100"] = JobState("100", "NODE_FAIL", nodes=("n1", "n2"), start=50.0,
                                       end=80.0)
    sched.down["n2"] = "DOWN (bad dimm) at 00:01:40"
    hooks.chain_start(ctx(run_dir, 2, "101", nodes=("n1", "n3")), scheduler=sched)
    first = ledger.state().attempt(1)
    assert first.outcome is Outcome.NODE_FAIL and first.blamed_nodes == ("n2",)
    # asked about the job's nodes over the time it ran (and a little after: events lag)
    assert sched.node_queries == [(("n1", "n2"), 50.0, 80.0 + actions.NODE_EVENT_SLACK_S)]
    incident = read_incident(run_dir, 1)
    assert incident["node_evidence"][0]["node"] == "n2"
    assert "DOWN (bad dimm)" in incident["node_evidence"][0]["detail"]
    # its own end hook never ran: the successor records what the chain decided
    assert incident["decision"]["counted"] is False
    assert incident["decision"]["excluded_nodes"] == ["n2"]


def test_a_node_failure_that_names_no_node_blames_none(run) -> None:
    run_dir, _, ledger, sched = run
    hooks.chain_start(ctx(run_dir, 1, "100", nodes=("n1", "n2")), scheduler=sched)
    sched.job_states["100"] = JobState("100", "NODE_FAIL", nodes=("n1", "n2"))
    hooks.chain_start(ctx(run_dir, 2, "101", nodes=("n1", "n2")), scheduler=sched)
    first = ledger.state().attempt(1)
    assert first.outcome is Outcome.NODE_FAIL and first.blamed_nodes == ()
    assert not first.counted_failure
    assert ledger.state().attempt(2).status is AttemptStatus.RUNNING  # it trains


def _blame_n2(run_dir: Path, sched: FakeScheduler) -> None:
    """Attempt 1 (job 100) runs on n2 and loses it: n2 is blamed."""
    hooks.chain_start(ctx(run_dir, 1, "100", nodes=("n2",)), scheduler=sched)
    sched.job_states["100"] = JobState("100", "NODE_FAIL", nodes=("n2",))


def test_a_successor_allocated_on_a_blamed_node_steps_aside(run) -> None:
    run_dir, _, ledger, sched = run
    _blame_n2(run_dir, sched)
    assert hooks.chain_start(ctx(run_dir, 2, "101", nodes=("n2",)),
                             scheduler=sched) == hooks.SKIP_LAUNCH
    second = ledger.state().attempt(2)
    assert second.outcome is Outcome.STOPPED and "which the chain now excludes" in second.reason
    assert sched.excluded["102"] == ["n2"]  # the one queued behind it is kept off n2


def test_it_trains_there_when_the_scheduler_cannot_keep_the_next_one_off(run) -> None:
    # Too few nodes would be left: a successor that steps aside would be followed by one that
    # lands there again, forever.
    run_dir, _, ledger, sched = run
    _blame_n2(run_dir, sched)
    sched.refuse_exclusions = True
    assert hooks.chain_start(ctx(run_dir, 2, "101", nodes=("n2",)), scheduler=sched) == 0
    second = ledger.state().attempt(2)
    assert second.status is AttemptStatus.RUNNING
    assert second.start_note.startswith("trains on n2 although the chain excludes it: the "
                                        "scheduler did not take the exclusion")


def test_after_two_attempts_in_a_row_stepped_aside_the_next_one_trains(run) -> None:
    run_dir, _, ledger, sched = run
    _blame_n2(run_dir, sched)
    for attempt in (2, 3):
        job = str(99 + attempt)
        assert hooks.chain_start(ctx(run_dir, attempt, job, nodes=("n2",)),
                                 scheduler=sched) == hooks.SKIP_LAUNCH
        sched.job_states[job] = JobState(job, "COMPLETED", nodes=("n2",))
    job = ledger.state().attempt(4).job_id
    assert hooks.chain_start(ctx(run_dir, 4, job, nodes=("n2",)), scheduler=sched) == 0
    fourth = ledger.state().attempt(4)
    assert fourth.status is AttemptStatus.RUNNING
    assert "2 attempts in a row were allocated there and stepped aside" in fourth.start_note


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
    assert sched.cancelled == ["101", "102"]


def test_an_application_crash_blames_no_node(run) -> None:
    run_dir, _, ledger, sched = run
    hooks.chain_start(ctx(run_dir, 1, "100"), scheduler=sched)
    status_dir = run_dir / "launcher_status"
    status_dir.mkdir()
    (status_dir / "attempt-1.n1.json").write_text(json.dumps(
        {"events": [{"kind": "crash", "node": "n1", "rank": 0}]}))
    (status_dir / "attempt-1.n9.json").write_text("{not json")  # skipped, never fatal
    hooks.chain_end(ctx(run_dir, 1, "100"), 1, scheduler=sched)
    # a Python exception is the workload's fault: the node stays in use (issue 12)
    assert ledger.state().blamed_nodes == ()
    assert sched.excluded == {}


def test_a_successor_allocated_on_a_blamed_node_does_not_train(run) -> None:
    run_dir, _, ledger, sched = run
    hooks.chain_start(ctx(run_dir, 1, "100"), scheduler=sched)
    # attempt 1's node failed; its job ended with it, before its end hook could run
    ledger.record_end(1, outcome=Outcome.NODE_FAIL, job_id="100", source="scheduler",
                      reason="NODE_FAIL", blamed_nodes=("n1",), progress=0)
    # attempt 2 was queued before the blame and SLURM put it on n1 again
    assert hooks.chain_start(ctx(run_dir, 2, "101"), scheduler=sched) == hooks.SKIP_LAUNCH
    state = ledger.state()
    two = state.attempt(2)
    assert two is not None and two.outcome is Outcome.STOPPED and "n1" in (two.reason or "")
    assert not two.counted_failure
    # the attempt queued behind it is kept off n1 and runs instead
    assert sched.excluded.get("102") == ["n1"]
    assert any(a.number > 2 and a.in_flight for a in state.attempts)


def test_provisional_end_with_nothing_queued_queues_a_successor(run) -> None:
    """sbatch failed in chain-start, then the launch died of a signal: chain-end must not leave
    the run with nothing queued (it used to decide nothing on a provisional end)."""
    run_dir, _, ledger, sched = run
    failing = BrokenScheduler(sched)
    keepers: list[hooks.JobContext] = []
    assert hooks.chain_start(ctx(run_dir, 1, "100"), scheduler=failing,
                             keeper=keepers.append) == 0  # still trains
    assert keepers == [ctx(run_dir, 1, "100")]  # and retries queueing in the background
    assert list(sched.jobs) == ["100"] and ledger.state().attempt(1).status == "running"
    hooks.chain_end(ctx(run_dir, 1, "100"), 137, scheduler=sched)  # SIGKILL
    assert ledger.state().attempt(1).provisional
    assert list(sched.jobs) == ["100", "101", "102"]


def test_provisional_end_queues_even_when_it_would_exhaust_the_budget(run) -> None:
    run_dir, settings, ledger, sched = run
    ledger.record_start(1, "100")
    ledger.record_end(1, outcome=Outcome.FAILED, reason="exit 1")  # one failure of two
    first = submit_attempt(ledger, settings, sched, decide(ledger.state(), settings.config))
    hooks.chain_end(ctx(run_dir, 2, first or ""), 143, scheduler=sched)
    assert ledger.state().run_status == "running"
    assert [a.status for a in ledger.state().attempts][2:] == ["submitted", "submitted"]


def test_a_job_never_trains_while_an_earlier_attempt_runs(run, monkeypatch) -> None:
    run_dir, _, ledger, sched = run
    monkeypatch.setattr(hooks, "PREDECESSOR_WAIT_S", 0.0)
    hooks.chain_start(ctx(run_dir, 1, "100"), scheduler=sched)
    sched.job_states["100"] = JobState("100", "RUNNING")  # e.g. its dependency was removed
    assert hooks.chain_start(ctx(run_dir, 2, "101"), scheduler=sched) == hooks.SKIP_LAUNCH
    view = ledger.state().attempt(2)
    assert view.status == "ended" and "attempt 1 (job 100) still active" in view.reason
    assert not view.counted_failure


def test_a_withdrawn_job_that_starts_anyway_does_not_train(run) -> None:
    run_dir, _, ledger, sched = run
    hooks.chain_start(ctx(run_dir, 1, "100"), scheduler=sched)
    Path(ledger.run_dir / "finished.flag").touch()
    hooks.chain_end(ctx(run_dir, 1, "100"), 0, scheduler=sched)
    assert ledger.state().run_status == "finished"
    assert hooks.chain_start(ctx(run_dir, 2, "101"), scheduler=sched) == hooks.SKIP_LAUNCH
    assert ledger.state().attempt(2).started_at is None  # still withdrawn, never started


def test_a_job_the_ledger_does_not_know_is_refused(run) -> None:
    run_dir, _, _, sched = run
    with pytest.raises(UsageError, match="not in the ledger"):
        hooks.chain_start(ctx(run_dir, 7, "999"), scheduler=sched)


def test_scheduler_down_at_start_still_trains_and_records(run) -> None:
    run_dir, _, ledger, sched = run
    hooks.chain_start(ctx(run_dir, 1, "100"), scheduler=sched)
    hooks.chain_end(ctx(run_dir, 1, "100"), 1, scheduler=sched)
    assert hooks.chain_start(ctx(run_dir, 2, "101"), scheduler=BrokenScheduler(sched),
                             keeper=lambda c: None) == 0
    assert ledger.state().attempt(2).status == "running"


def test_the_keeper_fills_the_queue_once_sbatch_works_again(run) -> None:
    run_dir, _, _, sched = run
    hooks.chain_start(ctx(run_dir, 1, "100"), scheduler=BrokenScheduler(sched),
                      keeper=lambda c: None)
    assert list(sched.jobs) == ["100"]
    assert hooks.keep_queue(ctx(run_dir, 1, "100"), scheduler=sched, interval=0.0) == 0
    assert list(sched.jobs) == ["100", "101", "102"]


def test_the_keeper_gives_up_when_the_attempt_ended(run) -> None:
    run_dir, _, ledger, sched = run
    hooks.chain_start(ctx(run_dir, 1, "100"), scheduler=BrokenScheduler(sched),
                      keeper=lambda c: None)
    ledger.record_end(1, outcome=Outcome.FAILED, reason="exit code 1")
    assert hooks.keep_queue(ctx(run_dir, 1, "100"), scheduler=BrokenScheduler(sched),
                            interval=0.0) == 0


def test_chain_end_keeps_trying_while_nothing_is_queued(run, monkeypatch) -> None:
    """sbatch down at the end of the only attempt: chain-end retries (bounded) rather than leave
    the run with nothing queued."""
    run_dir, _, ledger, sched = run
    monkeypatch.setattr(hooks, "KEEPER_INTERVAL_S", 0.0)
    hooks.chain_start(ctx(run_dir, 1, "100"), scheduler=BrokenScheduler(sched),
                      keeper=lambda c: None)
    flaky = FlakyScheduler(sched, failures=3)
    hooks.chain_end(ctx(run_dir, 1, "100"), 1, scheduler=flaky)
    assert flaky.failures == 0 and list(sched.jobs)[1:] == ["101", "102"]
    assert [a.status for a in ledger.state().attempts[1:]] == ["submitted", "submitted"]


def test_completing_a_record_later_keeps_what_was_true_at_its_end(run) -> None:
    """A killed attempt completed from the scheduler after its successor wrote the flag (or
    made progress) is not rewritten as finished (or as having progressed)."""
    run_dir, settings, ledger, sched = run
    hooks.chain_start(ctx(run_dir, 1, "100"), scheduler=sched)
    hooks.chain_end(ctx(run_dir, 1, "100"), 137, scheduler=sched)  # provisional
    ledger.record_start(2, "101", progress=None)
    Path(settings.flag_file).touch()  # attempt 2 finished the training
    (run_dir / "progress").write_text("500\n")
    sched.job_states["100"] = JobState("100", "FAILED", exit_code=0, signal=9)
    apply_job_states(ledger, settings, sched.states(["100"]), source="test")
    first = ledger.state().attempt(1)
    assert first.outcome is Outcome.FAILED and not first.provisional
    assert first.progress_after is None and first.counted_failure


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
