"""The chain's policy: every outcome class, and the budget rules, table-driven."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from ftslurm.chain.ledger import Ledger
from ftslurm.chain.outcome import (
    Outcome,
    counts_as_failure,
    made_progress,
    next_consecutive_failures,
)
from ftslurm.chain.policy import (
    ChainConfig,
    blame_nodes,
    classify,
    decide,
)
from ftslurm.errors import UsageError

Oc = Outcome

# (exit_code, signal, scheduler_state, flag_exists, expected outcome, provisional)
CLASSIFY_TABLE = [
    # the flag wins over everything
    (1, None, "FAILED", True, Oc.FINISHED, False),
    (None, None, "TIMEOUT", True, Oc.FINISHED, False),
    (0, None, None, True, Oc.FINISHED, False),
    # the do-not-retry code is fatal, whatever the scheduler says
    (93, None, "FAILED", False, Oc.FATAL, False),
    (93, None, None, False, Oc.FATAL, False),
    (93, None, "TIMEOUT", False, Oc.FATAL, False),
    # scheduler states
    (0, None, "COMPLETED", False, Oc.STOPPED, False),
    (1, None, "FAILED", False, Oc.FAILED, False),
    (94, None, "FAILED", False, Oc.STOPPED, False),
    (0, 9, "FAILED", False, Oc.FAILED, False),
    (None, None, "CANCELLED", False, Oc.CANCELLED, False),
    (0, 15, "CANCELLED by 1000", False, Oc.CANCELLED, False),
    (94, None, "CANCELLED+", False, Oc.CANCELLED, False),
    (0, 15, "TIMEOUT", False, Oc.TIMEOUT, False),
    (94, None, "TIMEOUT", False, Oc.TIMEOUT, False),
    (None, None, "DEADLINE", False, Oc.TIMEOUT, False),
    (0, 15, "PREEMPTED", False, Oc.PREEMPTED, False),
    (None, None, "REQUEUED", False, Oc.PREEMPTED, False),
    (None, None, "NODE_FAIL", False, Oc.NODE_FAIL, False),
    (None, None, "BOOT_FAIL", False, Oc.NODE_FAIL, False),
    (0, 9, "OUT_OF_MEMORY", False, Oc.FAILED, False),
    (1, None, "SPECIAL_EXIT", False, Oc.FAILED, False),
    # the attempt records its own end: exit code and signal only
    (0, None, None, False, Oc.STOPPED, False),
    (94, None, None, False, Oc.STOPPED, False),
    (1, None, None, False, Oc.FAILED, False),
    (3, None, None, False, Oc.FAILED, False),
    (137, None, None, False, Oc.FAILED, True),
    (None, int(signal.SIGTERM), None, False, Oc.FAILED, True),
    (None, None, None, False, Oc.FAILED, True),
]


@pytest.mark.parametrize(("exit_code", "sig", "state", "flag", "expected", "provisional"),
                         CLASSIFY_TABLE)
def test_classify_table(exit_code, sig, state, flag, expected, provisional) -> None:
    result = classify(exit_code=exit_code, signal=sig, scheduler_state=state, flag_exists=flag)
    assert result.outcome is expected
    assert result.provisional is provisional
    assert result.reason


def test_every_outcome_class_is_reachable() -> None:
    assert {row[4] for row in CLASSIFY_TABLE} == set(Outcome)


def test_custom_do_not_retry_code() -> None:
    assert classify(exit_code=42, flag_exists=False, do_not_retry_exit_code=42).outcome is Oc.FATAL
    assert classify(exit_code=93, flag_exists=False, do_not_retry_exit_code=42).outcome is Oc.FAILED


def test_cancel_by_someone_else_is_preemption() -> None:
    def run(by_uid: int) -> Outcome:
        return classify(exit_code=0, scheduler_state=f"CANCELLED by {by_uid}",
                        flag_exists=False, owner_uid=1000).outcome

    assert run(0) is Oc.PREEMPTED
    assert run(1000) is Oc.CANCELLED
    assert classify(exit_code=0, scheduler_state="CANCELLED", cancelled_by=0, owner_uid=1000,
                    flag_exists=False).outcome is Oc.PREEMPTED


@pytest.mark.parametrize("state", ["PENDING", "RUNNING", "COMPLETING", "SUSPENDED"])
def test_active_state_is_not_classified(state: str) -> None:
    with pytest.raises(ValueError, match="not final"):
        classify(exit_code=None, scheduler_state=state, flag_exists=False)


def test_states_as_the_ledger_and_the_local_backend_write_them() -> None:
    from ftslurm.slurm.parse import parse_state

    assert parse_state("CANCELLED by 0") == ("CANCELLED", 0)
    assert parse_state(" timeout ") == ("TIMEOUT", None)
    assert parse_state("CANCELLED+") == ("CANCELLED", None)


# (outcome, before, after, progressed, counts_as_failure)
PROGRESS_TABLE = [
    (Oc.FAILED, 5, 5, False, True),
    (Oc.FAILED, 5, 9, True, True),
    (Oc.FAILED, None, 3, True, True),
    (Oc.FAILED, None, None, False, True),
    (Oc.NODE_FAIL, 5, 5, False, True),
    (Oc.NODE_FAIL, 5, 6, True, False),
    (Oc.FATAL, 1, 2, True, True),
    (Oc.STOPPED, 5, 5, True, False),
    (Oc.PREEMPTED, None, None, True, False),
    (Oc.TIMEOUT, 5, 5, True, False),
    (Oc.CANCELLED, 5, 5, False, False),
    (Oc.FINISHED, None, None, True, False),
]


@pytest.mark.parametrize(("outcome", "before", "after", "progressed", "counts"), PROGRESS_TABLE)
def test_progress_and_failure_rules(outcome, before, after, progressed, counts) -> None:
    assert made_progress(outcome, before, after) is progressed
    assert counts_as_failure(outcome, progressed) is counts


def test_consecutive_failure_arithmetic() -> None:
    assert next_consecutive_failures(2, Oc.FAILED, False) == 3
    assert next_consecutive_failures(2, Oc.FAILED, True) == 1  # progress resets, then it counts
    assert next_consecutive_failures(2, Oc.TIMEOUT, True) == 0
    assert next_consecutive_failures(2, Oc.CANCELLED, False) == 2


@pytest.mark.parametrize(
    "values",
    [{"max_failures": 0}, {"max_attempts": 0}, {"max_excluded_nodes": -1},
     {"do_not_retry_exit_code": 0}, {"max_failures": True}, {"max_failures": "3"}],
)
def test_config_rejects_bad_values(values) -> None:
    with pytest.raises(UsageError, match="autoresume"):
        ChainConfig(**values)


def test_config_round_trip() -> None:
    config = ChainConfig(max_failures=5, max_attempts=7)
    assert ChainConfig.from_mapping({**config.to_dict(), "flag_file": "x"}) == config


def test_blame_nodes() -> None:
    assert blame_nodes(Oc.FAILED, attempt_nodes=("a", "b"), event_nodes=("b", "b")) == ("b",)
    assert blame_nodes(Oc.NODE_FAIL, attempt_nodes=("a", "b"), down_nodes=("b", "z")) == ("b",)
    assert blame_nodes(Oc.NODE_FAIL, attempt_nodes=("a",)) == ("a",)
    assert blame_nodes(Oc.NODE_FAIL, attempt_nodes=("a", "b")) == ()
    assert blame_nodes(Oc.TIMEOUT, attempt_nodes=("a",), event_nodes=("a",)) == ()


# -- decide: build real ledgers with a sequence of attempt outcomes -------------------------

Step = tuple[Outcome, int | None, int | None]  # outcome, progress at start, progress at end


def run_with(tmp_path: Path, steps: list[Step], blamed: dict[int, tuple[str, ...]] | None = None,
             in_flight: str | None = None) -> Ledger:
    """A ledger whose attempts ended as `steps`; then optionally one more attempt left
    'reserved', 'submitted' or 'running'."""
    ledger = Ledger.create(tmp_path / "run", spec_fingerprint="fp")
    for number, (outcome, before, after) in enumerate(steps, start=1):
        ledger.reserve(number)
        ledger.record_start(number, str(100 + number), nodes=["n1"], progress=before)
        ledger.record_end(number, outcome=outcome, reason="test", progress=after,
                          blamed_nodes=(blamed or {}).get(number, ()))
    if in_flight:
        number = len(steps) + 1
        ledger.reserve(number)
        if in_flight in ("submitted", "running"):
            ledger.record_submitted(number, str(100 + number))
        if in_flight == "running":
            ledger.record_start(number, str(100 + number))
    return ledger


F, T, P, S, N = Oc.FAILED, Oc.TIMEOUT, Oc.PREEMPTED, Oc.STOPPED, Oc.NODE_FAIL

# (steps, config kwargs, expected action, expected run status, failures)
DECIDE_TABLE = [
    ([], {}, "submit", None, 0),
    ([(F, 0, 0)], {"max_failures": 2}, "submit", None, 1),
    ([(F, 0, 0), (F, 0, 0)], {"max_failures": 2}, "stop", "failed", 2),
    # preemption, time limit and graceful stops reset the count and never count
    ([(F, 0, 0), (T, 0, 0), (F, 0, 0)], {"max_failures": 2}, "submit", None, 1),
    ([(F, 0, 0), (P, 0, 0), (S, 0, 0), (F, 0, 0)], {"max_failures": 2}, "submit", None, 1),
    ([(P, 0, 0)] * 5, {"max_failures": 1}, "submit", None, 0),
    # progress of the workload resets the count; the failure itself still counts
    ([(F, 0, 0), (F, 0, 10)], {"max_failures": 2}, "submit", None, 1),
    ([(F, 0, 0), (F, 0, 10), (F, 10, 10)], {"max_failures": 2}, "stop", "failed", 2),
    # node_fail counts only without progress
    ([(N, 0, 0), (N, 0, 0)], {"max_failures": 2}, "stop", "failed", 2),
    ([(N, 0, 0), (N, 0, 4)], {"max_failures": 2}, "submit", None, 0),
    # fatal stops at once, whatever the budget
    ([(Oc.FATAL, 0, 9)], {"max_failures": 10}, "stop", "failed", 1),
    ([(Oc.FINISHED, 0, 9)], {}, "stop", "finished", 0),
    ([(Oc.CANCELLED, 0, 0)], {}, "stop", "cancelled", 0),
    # max_attempts bounds everything
    ([(T, 0, 0)] * 3, {"max_attempts": 3}, "stop", "failed", 0),
    ([(T, 0, 0)] * 2, {"max_attempts": 3}, "submit", None, 0),
]


@pytest.mark.parametrize(("steps", "config", "action", "status", "failures"), DECIDE_TABLE)
def test_decide_table(tmp_path, steps, config, action, status, failures) -> None:
    state = run_with(tmp_path, steps).state()
    decision = decide(state, ChainConfig(**config))
    assert state.consecutive_failures == failures
    assert (decision.action, decision.run_status) == (action, status), decision.reason
    if action == "submit":
        assert decision.attempt == len(steps) + 1


def test_decide_flag_and_cancel_request(tmp_path) -> None:
    ledger = run_with(tmp_path, [(T, 0, 0)])
    assert decide(ledger.state(), ChainConfig(), flag_exists=True).run_status == "finished"
    ledger.record_cancel("user asked")
    decision = decide(ledger.state(), ChainConfig())
    assert (decision.action, decision.run_status) == ("stop", "cancelled")
    assert "user asked" in decision.reason


@pytest.mark.parametrize("in_flight", ["submitted", "running"])
def test_decide_waits_for_in_flight_attempt(tmp_path, in_flight) -> None:
    ledger = run_with(tmp_path, [(T, 0, 0)], in_flight=in_flight)
    assert decide(ledger.state(), ChainConfig()).action == "wait"


def test_decide_resumes_a_reservation_never_submitted(tmp_path) -> None:
    ledger = run_with(tmp_path, [(T, 0, 0)], in_flight="reserved")
    decision = decide(ledger.state(), ChainConfig())
    assert (decision.action, decision.attempt) == ("submit", 2)
    assert decide(ledger.state(), ChainConfig(), ahead_of=1).attempt == 2


def test_decide_ahead_pre_schedules_successor_once(tmp_path) -> None:
    ledger = run_with(tmp_path, [(T, 0, 0)], in_flight="running")
    decision = decide(ledger.state(), ChainConfig(), ahead_of=2)
    assert (decision.action, decision.attempt) == ("submit", 3)
    ledger.reserve(3)
    ledger.record_submitted(3, "103")
    # the same job requeued (same attempt, restart count 1) must not make a second successor
    ledger.record_start(2, "102", requeue_count=1)
    assert decide(ledger.state(), ChainConfig(), ahead_of=2).action == "wait"


def test_decide_ahead_respects_max_attempts(tmp_path) -> None:
    ledger = run_with(tmp_path, [(T, 0, 0)], in_flight="running")
    assert decide(ledger.state(), ChainConfig(max_attempts=2), ahead_of=2).action == "wait"


def test_stop_cancels_pre_scheduled_successor(tmp_path) -> None:
    ledger = run_with(tmp_path, [(F, 0, 0)], in_flight="running")
    ledger.reserve(3)
    ledger.record_submitted(3, "103")
    ledger.record_end(2, outcome=Oc.FAILED, reason="crash", progress=0)
    decision = decide(ledger.state(), ChainConfig(max_failures=2))
    assert decision.action == "stop"
    # what stopping withdraws: the queued successor, never the attempt that just ended
    assert [a.job_id for a in ledger.state().never_started] == ["103"]


def test_exclusions_are_bounded_most_recent_first(tmp_path) -> None:
    blamed = {1: ("a",), 2: ("b",), 3: ("c", "a")}
    state = run_with(tmp_path, [(F, 0, 1)] * 3, blamed=blamed).state()
    assert state.blamed_nodes == ("b", "c", "a")
    decision = decide(state, ChainConfig(max_failures=5, max_excluded_nodes=2))
    assert decision.exclude_nodes == ("c", "a")
    assert "excluding c, a" in decision.reason
    assert decide(state, ChainConfig(max_failures=5, max_excluded_nodes=0)).exclude_nodes == ()
