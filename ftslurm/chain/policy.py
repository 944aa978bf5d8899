"""The chain's policy, as pure functions: classify how an attempt ended, decide what comes next.

The self-chaining sbatch script (through `ftslurm` subcommands), the login-node loop and the local
backend all call these, so the rules live here once. docs/autoresume.md has the tables in prose.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ftslurm import exit_codes
from ftslurm.chain.outcome import Action, AttemptStatus, Outcome, RunStatus
from ftslurm.chain.runstate import RunState
from ftslurm.errors import UsageError
from ftslurm.signals import signal_text
from ftslurm.slurm.parse import parse_state
from ftslurm.spec.sections import (
    AUTORESUME_BOUNDS,
    AUTORESUME_SWITCHES,
    AutoResume,
    autoresume_problem,
)

#: Scheduler states of a job that has not ended yet; classifying one is a programming error.
ACTIVE_STATES = frozenset({
    "PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "STOPPED", "RESIZING",
    "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD",
})

#: Final scheduler state -> outcome, for the states that decide the outcome by themselves.
STATE_OUTCOMES: dict[str, Outcome] = {
    "TIMEOUT": Outcome.TIMEOUT,
    "DEADLINE": Outcome.TIMEOUT,
    "PREEMPTED": Outcome.PREEMPTED,
    "REQUEUED": Outcome.PREEMPTED,
    "NODE_FAIL": Outcome.NODE_FAIL,
    "BOOT_FAIL": Outcome.NODE_FAIL,
    "OUT_OF_MEMORY": Outcome.FAILED,
}


@dataclass(frozen=True)
class ChainConfig:
    """The chain's limits (from the job spec's `autoresume:` and `--max-failures`)."""

    #: Stop after this many consecutive failed attempts.
    max_failures: int = 3
    #: Never run more than this many attempts in all.
    max_attempts: int = 100
    #: The exit code that means "do not retry" (nvidia-resiliency-ext's 93).
    do_not_retry_exit_code: int = exit_codes.DO_NOT_RETRY
    #: At most this many blamed nodes are excluded from the next attempt (the most recent ones).
    max_excluded_nodes: int = 2
    #: Stop once this many attempts since the last resume ended in node_fail; None: no limit.
    max_node_failures: int | None = None
    #: Stop on a crash loop: two failed attempts in a row with the same failure signature, the
    #: second without progress (`outcome.repeats_failure`).
    stop_on_repeated_failure: bool = True

    def __post_init__(self) -> None:
        for name in (*AUTORESUME_BOUNDS, *AUTORESUME_SWITCHES):
            problem = autoresume_problem(name, getattr(self, name))
            if problem:
                raise UsageError(problem)
        value = self.max_excluded_nodes
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise UsageError(
                f"autoresume.max_excluded_nodes must be an integer >= 0, got {value!r}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> ChainConfig:
        """Build from a mapping such as the ledger's settings; keys it does not know are left to
        their owners (e.g. `flag_file`)."""
        known = ("max_failures", "max_attempts", "do_not_retry_exit_code", "max_excluded_nodes",
                 "max_node_failures", "stop_on_repeated_failure")
        return cls(**{key: values[key] for key in known if values.get(key) is not None})

    @classmethod
    def from_autoresume(cls, auto: AutoResume) -> ChainConfig:
        """The limits of a job spec's `autoresume:` section (`max_excluded_nodes` is not one)."""
        return cls(max_failures=auto.max_failures, max_attempts=auto.max_attempts,
                   do_not_retry_exit_code=auto.do_not_retry_exit_code,
                   max_node_failures=auto.max_node_failures,
                   stop_on_repeated_failure=auto.stop_on_repeated_failure)

    def to_dict(self) -> dict[str, int | bool | None]:
        """The settings to store in the ledger header and chain.json (`from_mapping` reads them
        back; a mapping written before a key existed gets its default)."""
        return {
            "max_failures": self.max_failures,
            "max_attempts": self.max_attempts,
            "do_not_retry_exit_code": self.do_not_retry_exit_code,
            "max_excluded_nodes": self.max_excluded_nodes,
            "max_node_failures": self.max_node_failures,
            "stop_on_repeated_failure": self.stop_on_repeated_failure,
        }


@dataclass(frozen=True)
class Classification:
    """An attempt's outcome with the reason in words; `provisional` when a scheduler state
    arriving later may change it (the attempt died of a signal and no scheduler state was given)."""

    outcome: Outcome
    reason: str
    provisional: bool = False


def classify(
    *,
    exit_code: int | None,
    flag_exists: bool,
    scheduler_state: str | None = None,
    signal: int | None = None,
    do_not_retry_exit_code: int = exit_codes.DO_NOT_RETRY,
    owner_uid: int | None = None,
    cancelled_by: int | None = None,
) -> Classification:
    """Classify one ended attempt.

    exit_code: the launcher's / command's exit code (None if unknown); signal: the signal that
    killed it, if any (sacct's `0:9`); scheduler_state: the scheduler's final state (sacct State,
    e.g. "CANCELLED by 1000"), None when the attempt records its own end; cancelled_by: the uid
    that cancelled it, when the state string does not say; owner_uid: the run's owner, so a
    cancel by somebody else (an admin) reads as preemption.
    """
    if flag_exists:
        return Classification(Outcome.FINISHED, "the finished flag file exists")
    if exit_code == do_not_retry_exit_code:
        return Classification(Outcome.FATAL, f"exit code {exit_code} means do not retry")
    if scheduler_state is None:
        return _classify_exit(exit_code, signal)
    state, by = parse_state(scheduler_state) if scheduler_state.strip() else ("", None)
    by = by if by is not None else cancelled_by
    if state in ACTIVE_STATES:
        raise ValueError(f"job state {scheduler_state!r} is not final")
    if state in STATE_OUTCOMES:
        return Classification(STATE_OUTCOMES[state], f"the scheduler reports {state}")
    if state == "CANCELLED":
        if by is not None and owner_uid is not None and by != owner_uid:
            return Classification(
                Outcome.PREEMPTED, f"cancelled by uid {by}, not the run's owner: like preemption"
            )
        return Classification(Outcome.CANCELLED, f"the scheduler reports {scheduler_state.strip()}")
    if state == "COMPLETED":
        return Classification(Outcome.STOPPED, "exited 0 without the finished flag")
    if state == "FAILED":
        if exit_code == exit_codes.STOPPED:
            return Classification(Outcome.STOPPED, "the launcher stopped the ranks on a signal")
        return _classify_exit(exit_code, signal, provisional_on_signal=False)
    return Classification(Outcome.FAILED, f"unexpected scheduler state {scheduler_state!r}")


def _classify_exit(
    exit_code: int | None, signal: int | None, *, provisional_on_signal: bool = True
) -> Classification:
    if signal:
        return Classification(Outcome.FAILED, f"killed by {signal_text(signal)}",
                              provisional=provisional_on_signal)
    if exit_code is None:
        return Classification(Outcome.FAILED, "ended without an exit code", provisional=True)
    if exit_code == 0:
        return Classification(Outcome.STOPPED, "exited 0 without the finished flag")
    if exit_code == exit_codes.STOPPED:
        return Classification(Outcome.STOPPED, "the launcher stopped the ranks on a signal")
    if exit_code > 128:
        return Classification(Outcome.FAILED, f"killed by {signal_text(exit_code - 128)}",
                              provisional=provisional_on_signal)
    return Classification(Outcome.FAILED, f"exit code {exit_code}")


#: Kinds of node evidence: each blames the node it names. `node_fail`: the scheduler reports
#: the node failed (NODE_FAIL, or down / drained / not responding); `external_kill`: something
#: outside the workload killed its processes on that node; `hang_repeat`: ranks on the node hung
#: more than once. An application crash (a Python exception, `exit 7`, a signal the workload
#: raised itself) and a single hang are not node evidence: they blame nothing.
NODE_EVIDENCE_KINDS = frozenset({"node_fail", "external_kill", "hang_repeat"})


def blame_from_evidence(evidence: Iterable[Mapping[str, object]]) -> tuple[str, ...]:
    """The nodes to blame: every node an item of node evidence names, once, in order.

    Items are `{"node": ..., "kind": ..., "detail": ...}` (an incident's `node_evidence`);
    items of another kind, without a node, or not mappings at all blame nothing.
    """
    nodes: list[str] = []
    for item in evidence:
        if not isinstance(item, Mapping) or item.get("kind") not in NODE_EVIDENCE_KINDS:
            continue
        node = item.get("node")
        if isinstance(node, str) and node.strip():
            nodes.append(node.strip())
    return tuple(dict.fromkeys(nodes))


def node_fail_evidence(
    outcome: Outcome,
    *,
    attempt_nodes: Sequence[str] = (),
    down_nodes: Iterable[str] | None = None,
) -> tuple[dict[str, str], ...]:
    """The node evidence an outcome gives by itself: for node_fail, the attempt's nodes that
    the scheduler reports down (`down_nodes`), or its only node when the scheduler names none;
    nothing for any other outcome (and nothing for a node failure of a multi-node attempt that
    names no node: blaming all of its nodes would be a guess)."""
    if outcome is not Outcome.NODE_FAIL:
        return ()
    down = set(down_nodes or ())
    nodes = tuple(node for node in attempt_nodes if node in down)
    if not nodes and len(attempt_nodes) == 1:
        nodes = tuple(attempt_nodes)
    return tuple({"node": node, "kind": "node_fail",
                  "detail": "the scheduler reports the attempt ended in a node failure"}
                 for node in nodes)


def blame_nodes(
    outcome: Outcome,
    *,
    attempt_nodes: Sequence[str] = (),
    evidence: Iterable[Mapping[str, object]] = (),
    down_nodes: Iterable[str] | None = None,
) -> tuple[str, ...]:
    """The nodes to blame for an attempt: those the node evidence names (`blame_from_evidence`),
    with the evidence a node_fail outcome gives by itself (`node_fail_evidence`). Only node
    evidence blames: a crash, however often, never does."""
    return blame_from_evidence(
        (*node_fail_evidence(outcome, attempt_nodes=attempt_nodes, down_nodes=down_nodes),
         *evidence))


def exclusions(state: RunState, config: ChainConfig) -> tuple[str, ...]:
    """The nodes the next attempt excludes: the most recently blamed, at most max_excluded_nodes."""
    if config.max_excluded_nodes == 0:
        return ()
    return state.blamed_nodes[-config.max_excluded_nodes:]


@dataclass(frozen=True)
class Decision:
    """What the chain does next.

    submit: submit `attempt` (excluding `exclude_nodes`); wait: an attempt is still in flight, or
    nothing may be submitted ahead of it; stop: the run is over (`run_status`); `stop_run`
    withdraws what never started (`RunState.never_started`).
    """

    action: Action
    reason: str
    attempt: int | None = None
    exclude_nodes: tuple[str, ...] = ()
    run_status: RunStatus | None = None


def decide(
    state: RunState,
    config: ChainConfig,
    *,
    flag_exists: bool = False,
    ahead_of: int | None = None,
    queue_depth: int = 1,
) -> Decision:
    """Continue or stop.

    ahead_of: the running attempt that wants to pre-schedule its successors (self-chaining
    scripts); it is treated as if it will end well, and the next successor is the decision's
    attempt while fewer than `queue_depth` attempts are in flight behind it.
    """
    ahead = state.attempt(ahead_of) if ahead_of is not None else None

    def stop(status: RunStatus, reason: str) -> Decision:
        return Decision(Action.STOP, reason, run_status=status)

    if state.run_status is not RunStatus.RUNNING:
        return stop(state.run_status, state.end_reason or f"the run is {state.run_status}")
    current = state.current_attempts
    if flag_exists or any(a.outcome is Outcome.FINISHED for a in current):
        return stop(RunStatus.FINISHED, "the finished flag file exists")
    if state.cancel_requested is not None:
        return stop(RunStatus.CANCELLED, f"cancelled: {state.cancel_requested}")
    last = state.last_ended
    if last is not None and last.number <= state.resumed_after:
        last = None
    if last is not None and last.outcome is Outcome.FATAL:
        return stop(RunStatus.FAILED, f"attempt {last.number}: {last.reason}")
    if last is not None and last.outcome is Outcome.CANCELLED:
        return stop(RunStatus.CANCELLED, f"attempt {last.number} was cancelled ({last.reason})")
    failures = state.consecutive_failures
    if ahead is not None and ahead.provisional and ahead.counted_failure:
        failures -= 1  # its end is not known yet: treated as if it ended well
    if failures >= config.max_failures:
        return stop(RunStatus.FAILED, f"{failures} consecutive failed attempts "
                              f"(max_failures {config.max_failures})")
    if config.stop_on_repeated_failure and last is not None and last.repeats_attempt is not None:
        return stop(RunStatus.FAILED, f"crash loop: attempts {last.repeats_attempt} and "
                                      f"{last.number} both failed with {last.signature!r}, the "
                                      "second without progress (stop_on_repeated_failure)")
    if config.max_node_failures is not None and state.node_failures >= config.max_node_failures:
        return stop(RunStatus.FAILED, f"{state.node_failures} attempts ended in a node failure "
                                      f"(max_node_failures {config.max_node_failures})")
    pending = [a for a in state.in_flight if ahead is None or a.number != ahead.number]
    unsubmitted = [a for a in pending if a.status is AttemptStatus.RESERVED]
    if unsubmitted:  # its watcher died or its submission failed: reconcile, then submit
        number = unsubmitted[0].number
        return Decision(Action.SUBMIT, f"attempt {number} was reserved but never submitted",
                        attempt=number, exclude_nodes=exclusions(state, config))
    if pending and (ahead is None or len(pending) >= queue_depth):
        numbers = ", ".join(str(a.number) for a in pending)
        return Decision(Action.WAIT, f"attempt {numbers} is in flight")
    if state.used_attempts >= config.max_attempts:
        if ahead is not None:
            return Decision(Action.WAIT, f"attempt {current[-1].number} is the last one "
                                    "(max_attempts)")
        return stop(RunStatus.FAILED, f"all {config.max_attempts} attempts used (max_attempts)")
    nodes = exclusions(state, config)
    reason = f"attempt {state.next_attempt}" + (f", excluding {', '.join(nodes)}" if nodes else "")
    return Decision(Action.SUBMIT, reason, attempt=state.next_attempt, exclude_nodes=nodes)


__all__ = [
    "ACTIVE_STATES",
    "NODE_EVIDENCE_KINDS",
    "STATE_OUTCOMES",
    "ChainConfig",
    "Classification",
    "Decision",
    "blame_from_evidence",
    "blame_nodes",
    "classify",
    "decide",
    "exclusions",
    "node_fail_evidence",
]
