"""Folding the ledger's records into an immutable `RunState` (pure: no files, no clock; only
`AttemptView.claimed` asks whether a claiming process of this host is still alive).

The ledger (ftslurm.chain.ledger) stores events; this module says what they mean. Every record is a
dict with a `type` and the fields listed in `RECORD_FIELDS`; an unknown type or a missing field is
corruption and raises `LedgerError` naming the record.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ftslurm.chain.outcome import (
    IN_FLIGHT,
    AttemptStatus,
    Outcome,
    RunStatus,
    counts_as_failure,
    made_progress,
    next_consecutive_failures,
    repeats_failure,
)
from ftslurm.errors import FtslurmError

#: Required fields of each record type (all records also carry `type` and `at`).
RECORD_FIELDS: dict[str, tuple[str, ...]] = {
    "intent": ("attempt", "tag"),
    "submitted": ("attempt", "job_id"),
    "submit_failed": ("attempt", "error"),
    "claim": ("attempt", "owner", "until"),
    "started": ("attempt", "job_id", "nodes", "requeue_count", "progress"),
    "ended": ("attempt", "job_id", "outcome", "reason", "exit_code", "signal",
              "scheduler_state", "progress", "blamed_nodes", "source", "provisional"),
    "progress": ("attempt", "value"),
    "cancel": ("reason",),
    "run_end": ("state", "reason"),
    "resume": ("reason", "spec_fingerprint"),
}
#: Fields a record may carry beyond the required ones; a ledger written before they existed
#: lacks them, and they read as None.
OPTIONAL_FIELDS: dict[str, tuple[str, ...]] = {
    "submitted": ("by_hand",),
    "started": ("note",),
    "ended": ("signature",),
}


class LedgerError(FtslurmError):
    """The ledger is missing, corrupted, foreign, or asked to do something inconsistent."""


@dataclass(frozen=True)
class AttemptView:
    """Everything the ledger knows about one attempt (one scheduler job, maybe requeued)."""

    number: int
    tag: str
    status: AttemptStatus = AttemptStatus.RESERVED
    job_id: str | None = None
    nodes: tuple[str, ...] = ()
    requeue_count: int = 0
    reserved_at: float | None = None
    submitted_at: float | None = None
    started_at: float | None = None
    #: True for a job somebody submitted by hand (`sbatch` on a rendered script) that the run
    #: adopted as this attempt (`Ledger.record_adopted`).
    by_hand: bool = False
    #: Why the attempt trains although the chain would rather it did not (it runs on a node the
    #: chain excludes, because the exclusion cannot be honoured): a decision, with its reason.
    start_note: str | None = None
    ended_at: float | None = None
    outcome: Outcome | None = None
    reason: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    scheduler_state: str | None = None
    source: str | None = None
    #: How the attempt failed, in a few words ("ValueError: boom", "exit 7", "SIGSEGV"), when
    #: known: two failed attempts in a row with the same signature are a crash loop.
    signature: str | None = None
    #: True when the end was recorded without the scheduler's final state and may be completed.
    provisional: bool = False
    submit_error: str | None = None
    #: Who is submitting this reserved attempt right now, and until when (epoch s) the claim
    #: holds: nobody else reconciles or submits it before then (`Ledger.submit_attempt`).
    claim_owner: str | None = None
    claim_until: float | None = None
    progress_before: int | None = None
    progress_after: int | None = None
    progressed: bool | None = None
    counted_failure: bool = False
    #: The run's consecutive-failure count once this attempt ended (or as it stood before it,
    #: while it has not). The one derivation: `fold` computes it, policy and views read it.
    consecutive_failures: int = 0
    #: Attempts since the last resume that ended in node_fail, once this attempt ended (or as
    #: the count stood before it, while it has not). `fold` computes it, like the failures.
    node_failures: int = 0
    #: The earlier attempt whose failure this one repeats (`outcome.repeats_failure`: same
    #: signature, no progress in between): the two are a crash loop. None otherwise.
    repeats_attempt: int | None = None
    blamed_nodes: tuple[str, ...] = ()
    #: Outcomes of the earlier runs of a requeued job (same job id), oldest first.
    requeued_outcomes: tuple[str, ...] = ()

    @property
    def in_flight(self) -> bool:
        """Reserved, submitted or running: not ended."""
        return self.status in IN_FLIGHT

    def claimed(self, now: float) -> bool:
        """Somebody is submitting this reserved attempt right now: its claim has not expired and
        its owner (`host:pid`) is not a process of this host that is gone."""
        if self.claim_until is None or self.claim_until <= now or not self.claim_owner:
            return False
        host, _, pid = self.claim_owner.rpartition(":")
        if host != socket.gethostname() or not pid.isdigit():
            return True  # another host's process: trust the claim until it expires
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # alive, another user's
            return True
        return True


@dataclass(frozen=True)
class RunState:
    """The whole run as the ledger tells it, attempts in order."""

    run_id: str
    spec_fingerprint: str
    settings: Mapping[str, Any]
    created_at: float
    attempts: tuple[AttemptView, ...]
    consecutive_failures: int
    #: Nodes blamed on node evidence, oldest first, each once (at its latest blame).
    blamed_nodes: tuple[str, ...]
    cancel_requested: str | None
    run_status: RunStatus
    end_reason: str | None
    last_progress: int | None
    #: Attempts up to this number belong to before the last `ftslurm submit --resume`: they do
    #: not count against the limits and their outcomes do not stop the resumed run.
    resumed_after: int = 0
    #: Attempts since the last resume that ended in node_fail (bounded by max_node_failures).
    node_failures: int = 0

    @property
    def next_attempt(self) -> int:
        """The number the next reservation gets."""
        return self.attempts[-1].number + 1 if self.attempts else 1

    @property
    def current_attempts(self) -> tuple[AttemptView, ...]:
        """The attempts since the last `ftslurm submit --resume` (all of them without one)."""
        return tuple(a for a in self.attempts if a.number > self.resumed_after)

    @property
    def used_attempts(self) -> int:
        """Attempts reserved since the last resume (each may run, so each counts against
        max_attempts)."""
        return len(self.current_attempts)

    def failures_left(self, max_failures: int) -> int:
        """How many more consecutive failures the run takes before it stops."""
        return max_failures - self.consecutive_failures

    def node_failures_left(self, max_node_failures: int | None) -> int | None:
        """How many more node failures the run takes before it stops; None: no limit."""
        if max_node_failures is None:
            return None
        return max_node_failures - self.node_failures

    @property
    def in_flight(self) -> tuple[AttemptView, ...]:
        """Attempts reserved, submitted or running."""
        return tuple(a for a in self.attempts if a.in_flight)

    @property
    def never_started(self) -> tuple[AttemptView, ...]:
        """Attempts reserved or queued that have not started: what stopping the run withdraws."""
        return tuple(a for a in self.attempts
                     if a.status in (AttemptStatus.RESERVED, AttemptStatus.SUBMITTED))

    @property
    def last_ended(self) -> AttemptView | None:
        """The highest-numbered ended attempt, if any."""
        ended = [a for a in self.attempts if a.status is AttemptStatus.ENDED]
        return ended[-1] if ended else None

    def attempt(self, number: int) -> AttemptView | None:
        """The attempt with this number, or None."""
        for view in self.attempts:
            if view.number == number:
                return view
        return None


def validate_record(index: int, record: object) -> dict[str, Any]:
    """Check one record's shape; raise `LedgerError` naming it if it is not a known record."""
    if not isinstance(record, dict) or not isinstance(record.get("type"), str):
        raise LedgerError(f"ledger record #{index} is not an object with a 'type'")
    kind = record["type"]
    if kind not in RECORD_FIELDS:
        raise LedgerError(f"ledger record #{index} has unknown type {kind!r}")
    missing = [name for name in ("at", *RECORD_FIELDS[kind]) if name not in record]
    if missing:
        raise LedgerError(f"ledger record #{index} ({kind}) lacks field(s) {', '.join(missing)}")
    if "attempt" in record and not (isinstance(record["attempt"], int) and record["attempt"] > 0):
        raise LedgerError(f"ledger record #{index} ({kind}) has a bad attempt number")
    return record


def _apply(views: dict[int, AttemptView], index: int, rec: dict[str, Any]) -> None:
    kind, at = rec["type"], rec["at"]
    number: int = rec["attempt"]  # every record `_apply` gets names its attempt (RECORD_FIELDS)
    if kind == "intent":
        views[number] = AttemptView(number=number, tag=rec["tag"], reserved_at=at)
        return
    view = views.get(number)
    if view is None:
        raise LedgerError(f"ledger record #{index} ({kind}) names attempt {number}, never reserved")
    replace = dataclasses.replace
    if kind == "submitted":
        status = (AttemptStatus.SUBMITTED if view.status is AttemptStatus.RESERVED
                  else view.status)
        views[number] = replace(view, job_id=rec["job_id"], submitted_at=at, status=status,
                                claim_owner=None, claim_until=None,
                                by_hand=bool(rec.get("by_hand")))
    elif kind == "submit_failed":  # still reserved: retried, by anybody
        views[number] = replace(view, submit_error=rec["error"], claim_owner=None,
                                claim_until=None)
    elif kind == "claim":
        views[number] = replace(view, claim_owner=rec["owner"], claim_until=rec["until"])
    elif kind == "started":
        # A requeued job starts again under the same attempt: its earlier end is cleared (and
        # its outcome kept in `requeued_outcomes`).
        cleared: dict[str, Any] = {}
        if view.status is AttemptStatus.ENDED and view.outcome is not None:
            cleared = {**_CLEARED_END,
                       "requeued_outcomes": (*view.requeued_outcomes, view.outcome.value)}
        before = view.progress_before if view.progress_before is not None else rec["progress"]
        views[number] = replace(
            view, status=AttemptStatus.RUNNING, job_id=rec["job_id"], nodes=tuple(rec["nodes"]),
            requeue_count=rec["requeue_count"], started_at=at, progress_before=before,
            start_note=rec.get("note"), **cleared,
        )
    elif kind == "ended":
        if view.status is AttemptStatus.ENDED and not view.provisional:
            return  # the first final end wins; later ones are kept on disk for the record only
        signature = rec.get("signature")  # optional: older ledgers lack it
        if signature is not None and not isinstance(signature, str):
            raise TypeError(f"signature must be a string or null, got {signature!r}")
        # Completing a provisional end keeps its time: the job ended then; the final record
        # may be written much later (by the next attempt's start hook, hours of queue later).
        ended_at = view.ended_at if view.status is AttemptStatus.ENDED and view.provisional \
            and view.ended_at is not None else at
        views[number] = replace(
            view, status=AttemptStatus.ENDED, job_id=rec["job_id"] or view.job_id,
            ended_at=ended_at,
            outcome=Outcome(rec["outcome"]), reason=rec["reason"], exit_code=rec["exit_code"],
            signal=rec["signal"], scheduler_state=rec["scheduler_state"], source=rec["source"],
            provisional=rec["provisional"], progress_after=rec["progress"],
            blamed_nodes=tuple(rec["blamed_nodes"]), signature=signature,
        )
    elif kind == "progress":
        views[number] = replace(view, progress_after=rec["value"])


_CLEARED_END: dict[str, Any] = {
    "ended_at": None, "outcome": None, "reason": None, "exit_code": None, "signal": None,
    "scheduler_state": None, "source": None, "provisional": False, "progress_after": None,
    "blamed_nodes": (), "signature": None,
}


def fold(header: Mapping[str, Any], records: Sequence[Any]) -> RunState:
    """Replay the records in order into a `RunState`."""
    views: dict[int, AttemptView] = {}
    cancel: str | None = None
    run_end: tuple[RunStatus, str] | None = None
    fingerprint, resumed_after = header["spec_fingerprint"], 0
    for index, raw in enumerate(records):
        rec = validate_record(index, raw)
        try:
            if rec["type"] == "resume":  # the run goes on: earlier ends and cancels are history
                cancel, run_end, fingerprint = None, None, rec["spec_fingerprint"]
                resumed_after = max(views, default=0)
            elif rec["type"] == "cancel":
                cancel = cancel or rec["reason"]
            elif rec["type"] == "run_end":
                run_end = run_end or (RunStatus(rec["state"]), rec["reason"])
            else:
                _apply(views, index, rec)
        except (TypeError, ValueError) as error:
            message = f"ledger record #{index} ({rec['type']}) is malformed: {error}"
            raise LedgerError(message) from None

    attempts: list[AttemptView] = []
    failures = node_failures = 0
    blamed: list[str] = []
    known: int | None = None
    earlier: AttemptView | None = None  # the ended attempt before this one, since the resume
    for number in sorted(views):
        view = views[number]
        if view.status is AttemptStatus.ENDED:
            assert view.outcome is not None
            before = view.progress_before if view.progress_before is not None else known
            progressed = made_progress(view.outcome, before, view.progress_after)
            counted = counts_as_failure(view.outcome)
            failures = next_consecutive_failures(failures, view.outcome, progressed)
            repeats: int | None = None
            if number <= resumed_after:  # the resume forgave it: it no longer counts
                failures = 0
            else:
                if view.outcome is Outcome.NODE_FAIL:
                    node_failures += 1
                # A provisional end may still turn out a time limit or a preemption: it never
                # takes part in a crash loop, on either side.
                if (earlier is not None and not earlier.provisional and not view.provisional
                        and repeats_failure(earlier_counted=earlier.counted_failure,
                                            earlier_signature=earlier.signature,
                                            counted=counted, progressed=progressed,
                                            signature=view.signature)):
                    repeats = earlier.number
            view = dataclasses.replace(
                view, progress_before=before, progressed=progressed, counted_failure=counted,
                repeats_attempt=repeats,
            )
            if number > resumed_after:
                earlier = view
            for node in view.blamed_nodes:
                if node in blamed:
                    blamed.remove(node)
                blamed.append(node)
        view = dataclasses.replace(view, consecutive_failures=failures,
                                   node_failures=node_failures)
        for value in (view.progress_before, view.progress_after):
            if value is not None:
                known = value if known is None else max(known, value)
        attempts.append(view)

    return RunState(
        run_id=header["run_id"], spec_fingerprint=fingerprint, resumed_after=resumed_after,
        settings=dict(header.get("settings") or {}), created_at=header["created_at"],
        attempts=tuple(attempts), consecutive_failures=failures, blamed_nodes=tuple(blamed),
        node_failures=node_failures,
        cancel_requested=cancel, run_status=run_end[0] if run_end else RunStatus.RUNNING,
        end_reason=run_end[1] if run_end else None, last_progress=known,
    )


__all__ = [
    "OPTIONAL_FIELDS",
    "RECORD_FIELDS",
    "AttemptView",
    "LedgerError",
    "RunState",
    "fold",
    "validate_record",
]
