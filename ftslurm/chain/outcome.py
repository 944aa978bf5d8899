"""The chain's one vocabulary (outcomes, attempt and run statuses, decisions) and the two rules
every part of the chain shares.

docs/autoresume.md is the prose version of this module; keep the two in step.
"""

from __future__ import annotations

from ftslurm.vocabulary import Vocabulary


class Outcome(Vocabulary):
    """How one attempt of the chain ended."""

    #: The finished flag file exists: the run is done.
    FINISHED = "finished"
    #: The workload stopped cleanly without finishing (graceful stop, clean exit): resume.
    STOPPED = "stopped"
    #: The scheduler took the allocation away (preemption, requeue, admin cancel): resume.
    PREEMPTED = "preempted"
    #: The time limit (or deadline) ended the attempt: resume.
    TIMEOUT = "timeout"
    #: A node died or never booted: resume elsewhere; never a failure (`max_node_failures` bounds
    #: how many a run takes).
    NODE_FAIL = "node_fail"
    #: The workload or the launcher failed (non-zero exit, out of memory, killed).
    FAILED = "failed"
    #: The workload exited with the do-not-retry code: the run stops at once.
    FATAL = "fatal"
    #: The user cancelled the attempt: the run stops.
    CANCELLED = "cancelled"


class AttemptStatus(Vocabulary):
    """Where one attempt is in its life."""

    #: Numbered in the ledger, not (yet) accepted by the scheduler.
    RESERVED = "reserved"
    #: Queued in the scheduler.
    SUBMITTED = "submitted"
    #: Its job started (its chain-start hook ran).
    RUNNING = "running"
    #: Its end is recorded (an outcome, or withdrawn before it started).
    ENDED = "ended"


#: Statuses of an attempt that has not ended.
IN_FLIGHT = frozenset({AttemptStatus.RESERVED, AttemptStatus.SUBMITTED, AttemptStatus.RUNNING})


class RunStatus(Vocabulary):
    """Where the whole run is."""

    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Action(Vocabulary):
    """What the policy decided to do next."""

    #: Submit the attempt the decision names.
    SUBMIT = "submit"
    #: Nothing: an attempt is in flight, or enough are queued.
    WAIT = "wait"
    #: End the run (with a `RunStatus`) and withdraw what is queued.
    STOP = "stop"


#: Outcomes that mean the workload ran on and can resume: they count as progress by themselves.
PROGRESS_OUTCOMES = frozenset(
    {Outcome.FINISHED, Outcome.STOPPED, Outcome.PREEMPTED, Outcome.TIMEOUT}
)

#: Outcomes that count against `max_failures` (`counts_as_failure`).
FAILURE_OUTCOMES = frozenset({Outcome.FAILED, Outcome.FATAL})


def made_progress(outcome: Outcome, before: int | None, after: int | None) -> bool:
    """Whether an attempt advanced the run.

    `before` and `after` are the run's progress marker (an integer that only grows, see
    `ftslurm.chain.ledger.read_progress`) when the attempt started and ended; None means unknown.
    An attempt that ended in finished / stopped / preempted / timeout made progress by definition.
    """
    if outcome in PROGRESS_OUTCOMES:
        return True
    if after is None:
        return False
    return before is None or after > before


def counts_as_failure(outcome: Outcome) -> bool:
    """Whether an attempt counts against `max_failures`: only failed and fatal ones do.

    Preemption, time limit, node failures (`max_node_failures` bounds those), graceful stops and
    cancellation never do, with or without progress.
    """
    return outcome in FAILURE_OUTCOMES


def next_consecutive_failures(count: int, outcome: Outcome, progressed: bool) -> int:
    """The consecutive-failure count after one more ended attempt.

    Progress resets the count to zero; then a counting failure adds one. So a failed attempt that
    advanced the workload leaves the count at 1, and an attempt that neither progressed nor counts
    (a cancelled one, a node failure) leaves it unchanged.
    """
    if progressed:
        count = 0
    return count + 1 if counts_as_failure(outcome) else count


def repeats_failure(
    *,
    earlier_counted: bool,
    earlier_signature: str | None,
    counted: bool,
    progressed: bool,
    signature: str | None,
) -> bool:
    """Whether an ended attempt repeats the failure of the ended attempt just before it: both
    counted as failures, this one made no progress, and both failed with the same signature
    ("ValueError: boom", "exit 7", "SIGSEGV"). An unknown signature (None) never matches. Such
    a pair is a crash loop: retrying again would fail the same way (`policy.decide` stops).
    """
    return (earlier_counted and counted and not progressed and signature is not None
            and signature == earlier_signature)


__all__ = [
    "FAILURE_OUTCOMES",
    "IN_FLIGHT",
    "PROGRESS_OUTCOMES",
    "Action",
    "AttemptStatus",
    "Outcome",
    "RunStatus",
    "counts_as_failure",
    "made_progress",
    "next_consecutive_failures",
    "repeats_failure",
]
