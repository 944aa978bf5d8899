"""The chain's policy: every outcome class, and the budget rules, table-driven."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from ftslurm.chain.actions import launcher_node_evidence, record_outcome
from ftslurm.chain.ledger import Ledger
from ftslurm.chain.outcome import (
    Outcome,
    counts_as_failure,
    made_progress,
    next_consecutive_failures,
    repeats_failure,
)
from ftslurm.chain.policy import (
    ChainConfig,
    Classification,
    blame_from_evidence,
    blame_nodes,
    classify,
    decide,
    node_fail_evidence,
)
from ftslurm.chain.settings import ChainSettings
from ftslurm.errors import UsageError
from ftslurm.rundir import RunDir
from ftslurm.spec.sections import AutoResume

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
    # a node failure never counts against max_failures, with or without progress
    (Oc.NODE_FAIL, 5, 5, False, False),
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
    assert counts_as_failure(outcome) is counts


def test_consecutive_failure_arithmetic() -> None:
    assert next_consecutive_failures(2, Oc.FAILED, False) == 3
    assert next_consecutive_failures(2, Oc.FAILED, True) == 1  # progress resets, then it counts
    assert next_consecutive_failures(2, Oc.TIMEOUT, True) == 0
    assert next_consecutive_failures(2, Oc.CANCELLED, False) == 2
    assert next_consecutive_failures(2, Oc.NODE_FAIL, False) == 2  # neither counts nor resets
    assert next_consecutive_failures(2, Oc.NODE_FAIL, True) == 0


# (earlier counted, earlier signature, counted, progressed, signature, repeats)
REPEAT_TABLE = [
    (True, "exit 7", True, False, "exit 7", True),
    (True, "exit 7", True, False, "exit 8", False),  # another failure
    (True, "exit 7", True, True, "exit 7", False),  # the second made progress
    (False, "exit 7", True, False, "exit 7", False),  # the first did not count
    (True, "exit 7", False, False, "exit 7", False),  # the second did not count
    (True, None, True, False, None, False),  # unknown signatures never match
    (True, "SIGSEGV", True, False, None, False),
]


@pytest.mark.parametrize(("earlier_counted", "earlier_sig", "counted", "progressed", "sig",
                          "repeats"), REPEAT_TABLE)
def test_repeats_failure_rule(earlier_counted, earlier_sig, counted, progressed, sig,
                              repeats) -> None:
    assert repeats_failure(earlier_counted=earlier_counted, earlier_signature=earlier_sig,
                           counted=counted, progressed=progressed, signature=sig) is repeats


@pytest.mark.parametrize(
    "values",
    [{"max_failures": 0}, {"max_attempts": 0}, {"max_excluded_nodes": -1},
     {"do_not_retry_exit_code": 0}, {"max_failures": True}, {"max_failures": "3"},
     {"max_node_failures": 0}, {"max_node_failures": True}, {"max_node_failures": "2"},
     {"stop_on_repeated_failure": 1}, {"stop_on_repeated_failure": "false"}],
)
def test_config_rejects_bad_values(values) -> None:
    with pytest.raises(UsageError, match="autoresume"):
        ChainConfig(**values)


@pytest.mark.parametrize("config", [
    ChainConfig(max_failures=5, max_attempts=7),
    ChainConfig(max_node_failures=2, stop_on_repeated_failure=False),
    ChainConfig(max_node_failures=None, stop_on_repeated_failure=True),
])
def test_config_round_trip(config: ChainConfig) -> None:
    stored = json.loads(json.dumps(config.to_dict()))  # as chain.json and the ledger keep it
    assert ChainConfig.from_mapping({**stored, "flag_file": "x"}) == config


def test_config_defaults_and_older_settings() -> None:
    config = ChainConfig()
    assert config.max_node_failures is None and config.stop_on_repeated_failure is True
    # settings written before the keys existed read with the defaults
    old = {"max_failures": 2, "max_attempts": 9, "do_not_retry_exit_code": 93,
           "max_excluded_nodes": 2}
    assert ChainConfig.from_mapping(old) == ChainConfig(max_failures=2, max_attempts=9)


def test_config_from_the_spec_section(tmp_path: Path) -> None:
    auto = AutoResume(flag_file=tmp_path / "f", max_failures=4, max_node_failures=3,
                      stop_on_repeated_failure=False)
    config = ChainConfig.from_autoresume(auto)
    assert (config.max_failures, config.max_node_failures, config.stop_on_repeated_failure) == (
        4, 3, False)
    assert ChainConfig.from_autoresume(AutoResume(flag_file=tmp_path / "f")) == ChainConfig()


# -- blame: only node evidence blames a node ------------------------------------------------

def ev(node: str, kind: str) -> dict[str, str]:
    return {"node": node, "kind": kind, "detail": "test"}


# (evidence, blamed)
EVIDENCE_TABLE = [
    ([], ()),
    ([ev("n1", "node_fail")], ("n1",)),
    ([ev("n1", "external_kill")], ("n1",)),
    ([ev("n1", "hang_repeat")], ("n1",)),
    ([ev("n2", "hang_repeat"), ev("n1", "node_fail"), ev("n2", "external_kill")], ("n2", "n1")),
    # an application crash, a single hang, anything else: no blame
    ([ev("n1", "crash")], ()),
    ([ev("n1", "hang")], ()),
    ([ev("n1", "exit 7")], ()),
    ([{"kind": "node_fail"}, {"node": "", "kind": "node_fail"}, {"node": 3, "kind": "node_fail"},
      "n1", None], ()),
]


@pytest.mark.parametrize(("evidence", "blamed"), EVIDENCE_TABLE)
def test_blame_from_evidence(evidence, blamed) -> None:
    assert blame_from_evidence(evidence) == blamed


def test_blame_nodes() -> None:
    crash = [ev("a", "crash"), ev("b", "crash")]
    assert blame_nodes(Oc.FAILED, attempt_nodes=("a", "b"), evidence=crash) == ()
    assert blame_nodes(Oc.FAILED, attempt_nodes=("a", "b"),
                       evidence=[ev("b", "external_kill")]) == ("b",)
    assert blame_nodes(Oc.NODE_FAIL, attempt_nodes=("a", "b"), down_nodes=("b", "z")) == ("b",)
    assert blame_nodes(Oc.NODE_FAIL, attempt_nodes=("a",)) == ("a",)
    assert blame_nodes(Oc.NODE_FAIL, attempt_nodes=("a", "b")) == ()
    assert blame_nodes(Oc.NODE_FAIL, attempt_nodes=("a", "b"),
                       evidence=[ev("a", "node_fail")]) == ("a",)
    assert blame_nodes(Oc.TIMEOUT, attempt_nodes=("a",)) == ()
    assert node_fail_evidence(Oc.FAILED, attempt_nodes=("a",)) == ()
    [item] = node_fail_evidence(Oc.NODE_FAIL, attempt_nodes=("a",))
    assert (item["node"], item["kind"]) == ("a", "node_fail") and item["detail"]


def _status_file(run_dir: Path, attempt: int, node: str, events: list[dict[str, object]]) -> None:
    path = RunDir(run_dir).launcher_status(attempt, node)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"node": node, "events": events}))


def test_launcher_crash_events_are_not_node_evidence(tmp_path: Path) -> None:
    crash = {"kind": "crash", "node": "n1", "rank": 0, "restart_count": 0}
    _status_file(tmp_path, 1, "n1", [crash, {**crash, "restart_count": 1},
                                      {**crash, "restart_count": 2}])
    assert launcher_node_evidence(tmp_path, 1) == []


def test_a_single_hang_blames_nothing_a_repeated_one_does(tmp_path: Path) -> None:
    hang = {"kind": "hang", "node": "n1", "rank": 0, "restart_count": 0}
    # one round in which two ranks of n1 hung: one hang
    _status_file(tmp_path, 1, "n1", [hang, {**hang, "rank": 1}])
    assert launcher_node_evidence(tmp_path, 1) == []
    # n2 hung in two rounds: a repeated hang; a broken file is skipped, never fatal
    _status_file(tmp_path, 2, "n1", [hang])
    _status_file(tmp_path, 2, "n2", [{**hang, "node": "n2"},
                                      {**hang, "node": "n2", "restart_count": 1}])
    RunDir(tmp_path).launcher_status(2, "n9").write_text("{not json")
    [item] = launcher_node_evidence(tmp_path, 2)
    assert (item["node"], item["kind"]) == ("n2", "hang_repeat") and "2 rounds" in item["detail"]
    assert blame_from_evidence(launcher_node_evidence(tmp_path, 2)) == ("n2",)
    _status_file(tmp_path, 1, "n3", [hang])  # another attempt's file never counts
    assert blame_from_evidence(launcher_node_evidence(tmp_path, 2)) == ("n2",)


def _settings(run_dir: Path) -> ChainSettings:
    return ChainSettings(
        run_dir=str(run_dir), backend="slurm", mode="self", script=str(run_dir / "job.sbatch"),
        workdir=str(run_dir), job_name="t", flag_file=str(run_dir / "finished.flag"),
        config=ChainConfig(), owner_uid=os.getuid(), bin_dir="/usr/bin")


@pytest.mark.parametrize(("outcome", "evidence", "blamed"), [
    # the launcher says n1's rank crashed: the application's failure, no blame
    (Oc.FAILED, None, ()),
    (Oc.FAILED, [ev("n1", "crash")], ()),
    (Oc.FAILED, [ev("n2", "external_kill")], ("n2",)),
    (Oc.FAILED, [ev("n2", "node_fail")], ("n2",)),
    # node_fail on a one-node attempt blames its node, with or without a list
    (Oc.NODE_FAIL, None, ("n1",)),
    (Oc.NODE_FAIL, [], ("n1",)),
])
def test_record_outcome_blames_on_node_evidence_only(tmp_path: Path, outcome, evidence,
                                                     blamed) -> None:
    ledger = Ledger.create(tmp_path, spec_fingerprint="fp")
    ledger.reserve(1)
    view = ledger.record_start(1, "100", nodes=["n1"], progress=0)
    _status_file(tmp_path, 1, "n1", [{"kind": "crash", "node": "n1", "rank": 0,
                                      "restart_count": r} for r in range(3)])
    record_outcome(ledger, _settings(tmp_path), view, Classification(outcome, "test"),
                   exit_code=1, source="test", progress=0, node_evidence=evidence)
    state = ledger.state()
    assert state.attempt(1).blamed_nodes == blamed and state.blamed_nodes == blamed


# -- decide: build real ledgers with a sequence of attempt outcomes -------------------------

#: outcome, progress at start, progress at end[, failure signature]
Step = tuple[Outcome, int | None, int | None] | tuple[Outcome, int | None, int | None, str | None]


def add_steps(ledger: Ledger, steps: list[Step],
              blamed: dict[int, tuple[str, ...]] | None = None) -> None:
    """Attempts that start and end as `steps`, numbered after the ledger's last one."""
    for step in steps:
        outcome, before, after = step[:3]
        signature = step[3] if len(step) > 3 else None
        number = ledger.state().next_attempt
        ledger.reserve(number)
        ledger.record_start(number, str(100 + number), nodes=["n1"], progress=before)
        ledger.record_end(number, outcome=outcome, reason="test", progress=after,
                          blamed_nodes=(blamed or {}).get(number, ()), signature=signature)


def run_with(tmp_path: Path, steps: list[Step], blamed: dict[int, tuple[str, ...]] | None = None,
             in_flight: str | None = None) -> Ledger:
    """A ledger whose attempts ended as `steps`; then optionally one more attempt left
    'reserved', 'submitted' or 'running'."""
    ledger = Ledger.create(tmp_path / "run", spec_fingerprint="fp")
    add_steps(ledger, steps, blamed)
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
    # node_fail never counts against max_failures, with or without progress, and does not reset
    # the count either unless the workload advanced
    ([(N, 0, 0), (N, 0, 0)], {"max_failures": 2}, "submit", None, 0),
    ([(N, 0, 0), (N, 0, 4)], {"max_failures": 2}, "submit", None, 0),
    ([(N, 0, 0)] * 5, {"max_failures": 1}, "submit", None, 0),
    ([(F, 0, 0), (N, 0, 0), (F, 0, 0)], {"max_failures": 2}, "stop", "failed", 2),
    ([(F, 0, 0), (N, 0, 3), (F, 3, 3)], {"max_failures": 2}, "submit", None, 1),
    # max_node_failures bounds the node failures since the resume, in a row or not
    ([(N, 0, 0)] * 2, {"max_node_failures": 3}, "submit", None, 0),
    ([(N, 0, 0)] * 3, {"max_node_failures": 3}, "stop", "failed", 0),
    ([(N, 0, 0), (T, 0, 0), (N, 0, 5)], {"max_node_failures": 2}, "stop", "failed", 0),
    ([(N, 0, 0)] * 10, {"max_node_failures": None}, "submit", None, 0),
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


def test_node_failures_are_counted_once_in_the_fold(tmp_path) -> None:
    state = run_with(tmp_path, [(N, 0, 0), (F, 0, 0), (N, 0, 0), (T, 0, 0)],
                     in_flight="running").state()
    assert state.node_failures == 2
    assert [a.node_failures for a in state.attempts] == [1, 1, 2, 2, 2]
    assert [a.counted_failure for a in state.attempts[:4]] == [False, True, False, False]
    assert state.node_failures_left(3) == 1 and state.node_failures_left(None) is None
    decision = decide(state, ChainConfig(max_node_failures=2))
    assert (decision.action, decision.run_status) == ("stop", "failed")
    assert decision.reason == "2 attempts ended in a node failure (max_node_failures 2)"


def test_a_resume_forgives_node_failures(tmp_path) -> None:
    ledger = run_with(tmp_path, [(N, 0, 0)] * 2)
    assert decide(ledger.state(), ChainConfig(max_node_failures=2)).action == "stop"
    ledger.record_resume("ftslurm submit --resume", "fp")
    add_steps(ledger, [(N, 0, 0)])
    state = ledger.state()
    assert state.node_failures == 1
    assert decide(state, ChainConfig(max_node_failures=2)).action == "submit"


# -- crash loops: two failures in a row with one signature, the second without progress -------

BOOM, EXIT7 = "ValueError: boom", "exit 7"

# (steps, config, crash loop: (earlier, later) attempts or None)
CRASH_LOOP_TABLE = [
    # the same signature twice, no progress: stops after 2 attempts, with budget left
    ([(F, 0, 0, BOOM), (F, 0, 0, BOOM)], {"max_failures": 5}, (1, 2)),
    ([(F, 0, 0, EXIT7), (F, 0, 0, EXIT7)], {"max_failures": 5}, (1, 2)),
    # the first may have advanced; only the second must not have
    ([(F, 0, 4, BOOM), (F, 4, 4, BOOM)], {"max_failures": 5}, (1, 2)),
    # different signatures: no loop
    ([(F, 0, 0, BOOM), (F, 0, 0, EXIT7)], {"max_failures": 5}, None),
    ([(F, 0, 0, BOOM), (F, 0, 0, EXIT7), (F, 0, 0, BOOM)], {"max_failures": 5}, None),
    # progress in the second breaks it; a later repeat without progress is a loop again
    ([(F, 0, 0, BOOM), (F, 0, 3, BOOM)], {"max_failures": 5}, None),
    ([(F, 0, 0, BOOM), (F, 0, 3, BOOM), (F, 3, 3, BOOM)], {"max_failures": 5}, (2, 3)),
    # an attempt in between that did not fail (made progress) breaks it
    ([(F, 0, 0, BOOM), (T, 0, 0), (F, 0, 0, BOOM)], {"max_failures": 5}, None),
    ([(F, 0, 0, BOOM), (P, 0, 0), (F, 0, 0, BOOM)], {"max_failures": 5}, None),
    ([(F, 0, 0, BOOM), (N, 0, 0), (F, 0, 0, BOOM)], {"max_failures": 5}, None),
    # no signature: never a loop
    ([(F, 0, 0, None), (F, 0, 0, None)], {"max_failures": 5}, None),
    ([(F, 0, 0, BOOM), (F, 0, 0, None)], {"max_failures": 5}, None),
    # turned off: only max_failures stops
    ([(F, 0, 0, BOOM), (F, 0, 0, BOOM)], {"max_failures": 5, "stop_on_repeated_failure": False},
     None),
]


@pytest.mark.parametrize(("steps", "config", "loop"), CRASH_LOOP_TABLE)
def test_crash_loop_table(tmp_path, steps, config, loop) -> None:
    state = run_with(tmp_path, steps).state()
    decision = decide(state, ChainConfig(**config))
    assert state.consecutive_failures < config["max_failures"]  # budget left in every row
    if loop is None:
        assert (decision.action, decision.attempt) == ("submit", len(steps) + 1), decision.reason
        return
    earlier, later = loop
    assert (decision.action, decision.run_status) == ("stop", "failed")
    assert decision.reason.startswith(f"crash loop: attempts {earlier} and {later} ")
    assert repr(steps[-1][3]) in decision.reason
    assert state.attempt(later).repeats_attempt == earlier


def test_crash_loop_stops_with_max_failures_5_and_off_spends_the_budget(tmp_path) -> None:
    config = ChainConfig(max_failures=5)
    ledger = run_with(tmp_path, [(F, 0, 0, BOOM)])
    assert decide(ledger.state(), config).action == "submit"
    add_steps(ledger, [(F, 0, 0, BOOM)])
    decision = decide(ledger.state(), config)
    assert (decision.action, decision.run_status) == ("stop", "failed")
    assert decision.reason == ("crash loop: attempts 1 and 2 both failed with 'ValueError: boom', "
                               "the second without progress (stop_on_repeated_failure)")
    off = ChainConfig(max_failures=5, stop_on_repeated_failure=False)
    add_steps(ledger, [(F, 0, 0, BOOM)] * 2)
    assert decide(ledger.state(), off).action == "submit"
    add_steps(ledger, [(F, 0, 0, BOOM)])
    assert decide(ledger.state(), off).reason == "5 consecutive failed attempts (max_failures 5)"


def test_a_provisional_end_is_never_part_of_a_crash_loop(tmp_path) -> None:
    ledger = run_with(tmp_path, [(F, 0, 0, "SIGTERM")])
    ledger.reserve(2)
    ledger.record_start(2, "102", progress=0)
    ledger.record_end(2, outcome=Oc.FAILED, reason="killed by SIGTERM", progress=0,
                      provisional=True, signature="SIGTERM")
    assert ledger.state().attempt(2).repeats_attempt is None
    assert decide(ledger.state(), ChainConfig(max_failures=5)).action != "stop"
    # completed from the scheduler: a final failure with the same signature is a loop
    ledger.record_end(2, outcome=Oc.FAILED, reason="FAILED", scheduler_state="FAILED",
                      progress=0, signature="SIGTERM")
    assert ledger.state().attempt(2).repeats_attempt == 1
    assert decide(ledger.state(), ChainConfig(max_failures=5)).reason.startswith("crash loop:")


def test_a_resume_breaks_a_crash_loop(tmp_path) -> None:
    ledger = run_with(tmp_path, [(F, 0, 0, BOOM)] * 2)
    assert decide(ledger.state(), ChainConfig(max_failures=5)).action == "stop"
    ledger.record_resume("ftslurm submit --resume", "fp")
    add_steps(ledger, [(F, 0, 0, BOOM)])
    state = ledger.state()
    assert state.attempt(3).repeats_attempt is None
    assert decide(state, ChainConfig(max_failures=5)).action == "submit"
    add_steps(ledger, [(F, 0, 0, BOOM)])
    assert ledger.state().attempt(4).repeats_attempt == 3


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
