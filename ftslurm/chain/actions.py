"""The chain's actions, shared by the in-job hooks (`ftslurm chain-start/chain-end`), the
login-node loop (`ftslurm watch`) and `ftslurm cancel`: record an outcome, bring the ledger up to
date with the scheduler, submit the next attempt, stop the run.

No lock is held across a scheduler call or a wait: each action reads the ledger, asks the
scheduler with the lock released, then records under the lock, re-checking against the ledger as
it is then (the `Ledger` methods are idempotent: the first final end wins, a reservation is
claimed before it is submitted). Scheduler errors propagate as `SlurmCommandError`; callers that
must go on through an outage (the hooks, the watch loop, `status`) catch them.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from ftslurm import exit_codes
from ftslurm.backends.base import AttemptRequest, JobState, Scheduler
from ftslurm.backends.local import LocalScheduler
from ftslurm.backends.slurm import SlurmScheduler
from ftslurm.chain.incident import (
    NODE_FAIL_STATES,
    build_incident,
    decision_entry,
    read_incident,
    write_incident,
)
from ftslurm.chain.ledger import Ledger, read_progress
from ftslurm.chain.outcome import FAILURE_OUTCOMES, Action, AttemptStatus, Outcome, RunStatus
from ftslurm.chain.policy import (
    Classification,
    Decision,
    blame_nodes,
    classify,
    exclusions,
)
from ftslurm.chain.runstate import AttemptView, RunState
from ftslurm.chain.settings import ChainSettings
from ftslurm.errors import FtslurmError
from ftslurm.fault_tolerance.status import EventKind, read_status_files
from ftslurm.rundir import RunDir

log = logging.getLogger(__name__)


def make_scheduler(settings: ChainSettings, *, since: float | None = None) -> Scheduler:
    """The scheduler of the run's backend."""
    if settings.backend == "local":
        return LocalScheduler(RunDir(settings.run_dir).local_jobs)
    return SlurmScheduler(since=since)


def launcher_node_evidence(run_dir: str | Path, attempt: int) -> list[dict[str, str]]:
    """The node evidence in the launchers' status files of an attempt (the fallback when its
    incident record cannot be built): `hang_repeat` for a node whose ranks hung in two or more
    rounds (restarts) of the attempt. A crash event is the application's failure, not the
    node's, and a single hang may be the workload's too: neither is node evidence. An
    unreadable file is no evidence: blame is a hint, never a reason to fail."""
    rounds: dict[str, set[object]] = {}
    for doc_index, doc in enumerate(read_status_files(run_dir, attempt)):
        events = doc.get("events")
        for index, event in enumerate(events if isinstance(events, list) else []):
            if not isinstance(event, dict) or event.get("kind") != EventKind.HANG:
                continue
            if event.get("node"):
                # Several ranks hanging in one round are one hang; an event without its round
                # counts as a round of its own.
                round_ = event.get("restart_count")
                rounds.setdefault(str(event["node"]), set()).add(
                    round_ if isinstance(round_, int) else (doc_index, index))
    return [{"node": node, "kind": "hang_repeat",
             "detail": f"ranks hung in {len(seen)} rounds of attempt {attempt}"}
            for node, seen in rounds.items() if len(seen) >= 2]


def launch_status(run_dir: str | Path, attempt: int, srun_status: int) -> int:
    """The launch's exit status, trusting the launchers' own record over srun's.

    srun reports the highest task exit code, or 128+N for a task it killed: with
    `--kill-on-bad-exit`, one launcher exiting 93 (do not retry) or 94 (stopped) makes srun kill
    the others, and the script sees 143. The status files say what the launchers decided: 93 if
    any launcher exited 93; else 1 if any gave up (restarts exhausted); else 94 if one stopped;
    otherwise (no status files: launcher none or torchrun) srun's status stands.
    """
    if srun_status == 0:
        return 0
    codes = {data.get("exit_code") for data in read_status_files(run_dir, attempt)}
    for decided in (exit_codes.DO_NOT_RETRY, exit_codes.FAILED, exit_codes.STOPPED):
        if decided in codes:
            return decided
    return srun_status


def classify_job(settings: ChainSettings, job: JobState, *, flag_exists: bool | None = None
                 ) -> Classification:
    """Classify an ended job from the scheduler's final state. `flag_exists`: whether the flag
    counts for this job (default: whether it exists now)."""
    if flag_exists is None:
        flag_exists = settings.flag_exists()
    return classify(
        exit_code=job.exit_code, signal=job.signal, flag_exists=flag_exists,
        scheduler_state=job.state, cancelled_by=job.cancelled_by, owner_uid=settings.owner_uid,
        do_not_retry_exit_code=settings.config.do_not_retry_exit_code,
    )


def classify_exit(settings: ChainSettings, status: int, *, warned: bool = False
                  ) -> Classification:
    """Classify an attempt from its own exit status (bash's `$status`: 128+N = signal N).
    `warned`: the time-limit warning came and the script asked the launch to stop, so a launch
    that then failed or was killed was stopped for the time limit (timeout, not a failure)."""
    sig = status - 128 if 128 < status < 128 + 65 else None
    result = classify(
        exit_code=status, signal=sig, flag_exists=settings.flag_exists(),
        do_not_retry_exit_code=settings.config.do_not_retry_exit_code,
    )
    if warned and result.outcome is Outcome.FAILED:
        return Classification(Outcome.TIMEOUT, "stopped after the time-limit warning "
                                               f"({result.reason})")
    return result


def record_outcome(
    ledger: Ledger,
    settings: ChainSettings,
    view: AttemptView,
    result: Classification,
    *,
    job: JobState | None = None,
    exit_code: int | None = None,
    source: str,
    progress: int | Literal["now"] | None = "now",
    node_evidence: Sequence[Mapping[str, object]] | None = None,
) -> bool:
    """Record how attempt `view` ended (with blame); False when it already had a final end.
    `progress`: the progress marker at the attempt's end ("now": read it now).

    Only node evidence blames a node (`policy.blame_nodes`): `node_evidence` (items `{"node",
    "kind": "node_fail"|"external_kill"|"hang_repeat", "detail"}`, an incident's
    `node_evidence`), or when the caller has none, what the launchers' status files show
    (`launcher_node_evidence`); a node_fail outcome blames the failed node either way."""
    nodes = (job.nodes if job is not None else ()) or view.nodes
    ended = dataclasses.replace(
        view, status=AttemptStatus.ENDED, outcome=result.outcome, reason=result.reason,
        exit_code=job.exit_code if job is not None else exit_code, nodes=nodes)
    incident = _incident(settings, ended, job, source)
    if node_evidence is None:
        node_evidence = (incident["node_evidence"] if incident is not None
                         else launcher_node_evidence(settings.run_dir, view.number))
    down = ([node for node, _ in job.node_problems]
            if job is not None and job.node_problems is not None else None)
    blamed = blame_nodes(result.outcome, attempt_nodes=nodes, evidence=node_evidence,
                         down_nodes=down)
    signature = incident.get("signature") if incident is not None else None
    _, written = ledger.record_end(
        view.number, outcome=result.outcome, reason=result.reason, job_id=view.job_id,
        exit_code=job.exit_code if job is not None else exit_code,
        signal=job.signal if job is not None else None,
        scheduler_state=job.state if job is not None else None,
        progress=read_progress(settings.run_dir) if progress == "now" else progress,
        blamed_nodes=blamed, source=source, provisional=result.provisional,
        signature=signature if result.outcome in FAILURE_OUTCOMES else None,
    )
    if written and incident is not None:
        _save_incident(settings, incident)
    return written


def _incident(settings: ChainSettings, view: AttemptView, job: JobState | None,
              source: str) -> dict[str, Any] | None:
    """The incident record of an attempt that is ending; None (with a warning) when it cannot
    be built: the record explains, it never stops the chain."""
    try:
        previous = read_incident(settings.run_dir, view.number - 1) if view.number > 1 else None
        return build_incident(settings.run_dir, view.number, job=job, view=view,
                              previous=previous,
                              written_by="chain-end" if source == "job" else "watch")
    except Exception as error:  # a bug here must not cost the run its records
        log.warning("could not build the incident record of attempt %d: %r", view.number, error)
        return None


def _save_incident(settings: ChainSettings, record: Mapping[str, Any]) -> None:
    try:
        write_incident(settings.run_dir, record)
    except OSError as error:
        log.warning("could not write the incident record: %s", error)


def note_decision(settings: ChainSettings, state: RunState, attempt: int,
                  decision: Decision) -> None:
    """Add what the chain decided after `attempt` ended to its incident record (once). A
    decision to go on names the nodes the next attempts are kept off."""
    view = state.attempt(attempt)
    record = read_incident(settings.run_dir, attempt)
    if view is None or record is None or record.get("decision") is not None:
        return
    if decision.action is not Action.STOP and not decision.exclude_nodes:
        decision = dataclasses.replace(decision,
                                       exclude_nodes=exclusions(state, settings.config))
    _save_incident(settings, {**record, "decision": decision_entry(decision, view)})


def _record_requeue(ledger: Ledger, settings: ChainSettings, view: AttemptView, job: JobState,
                    *, source: str) -> None:
    """The job was requeued and runs again: close the earlier run, open the new one."""
    earlier = job.earlier_states[-1] if job.earlier_states else "REQUEUED"
    try:
        result = classify(exit_code=None, flag_exists=False, scheduler_state=earlier,
                          owner_uid=settings.owner_uid)
    except ValueError:  # an odd earlier state: still a requeue
        result = Classification(Outcome.PREEMPTED, "requeued by the scheduler")
    ledger.record_end(view.number, outcome=result.outcome, reason=f"requeued: {result.reason}",
                      job_id=view.job_id, scheduler_state=earlier, source=source,
                      progress=read_progress(settings.run_dir))
    ledger.record_start(view.number, job.job_id, nodes=job.nodes, requeue_count=job.requeues,
                        progress=read_progress(settings.run_dir))


def _needs_sync(view: AttemptView, only: Sequence[int] | None) -> bool:
    return bool(view.job_id and (view.in_flight or view.provisional)
                and (only is None or view.number in only))


def query_scheduler(scheduler: Scheduler, state: RunState, *,
                    only: Sequence[int] | None = None) -> dict[str, JobState]:
    """ONE `states()` query for every attempt in flight or ended provisionally (no lock held);
    a job that ended in a node failure also gets the scheduler's word on which of its nodes
    failed (`with_node_problems`)."""
    ids = [str(a.job_id) for a in state.attempts if _needs_sync(a, only)]
    jobs = scheduler.states(ids) if ids else {}
    return {job_id: with_node_problems(scheduler, job) for job_id, job in jobs.items()}


#: Node events recorded up to this long after a job's end still explain it: the controller may
#: end the job a moment before it records why the node went down.
NODE_EVENT_SLACK_S = 60.0


def with_node_problems(scheduler: Scheduler, job: JobState) -> JobState:
    """`job`, with `node_problems` filled in when it ended in a node failure: the scheduler's
    record of which of its nodes went down, drained or failed while it ran. Node evidence for the
    blame, asked with no lock held; a scheduler that cannot tell leaves it None (no guess)."""
    if not (job.is_final and job.state in NODE_FAIL_STATES and job.nodes):
        return job
    until = (job.end or time.time()) + NODE_EVENT_SLACK_S
    try:
        problems = scheduler.node_problems(job.nodes, since=job.start, until=until)
    except FtslurmError as error:
        log.warning("could not ask which node of job %s failed: %s", job.job_id, error)
        return job
    return dataclasses.replace(job, node_problems=tuple(sorted(problems.items())))


def end_evidence(state: RunState, view: AttemptView, settings: ChainSettings
                 ) -> tuple[bool, int | Literal["now"] | None]:
    """What was true when `view` ended, for completing its record later: (flag counts, progress).

    An attempt's record must say what was true when it ended, not what is true now: a
    provisional end already wrote down its progress (and saw no flag, or it would have been
    final). An attempt with no end record (killed) may take the flag and progress as they are now
    only while no later attempt has started; otherwise they may be the later attempt's work, and
    its progress when it started is this attempt's progress at its end.
    """
    if view.status is AttemptStatus.ENDED:  # provisional: keep what it recorded
        return False, view.progress_after
    later = [a for a in state.attempts if a.number > view.number and a.started_at is not None]
    if not later:
        return settings.flag_exists(), "now"
    return False, later[0].progress_before


def apply_job_states(ledger: Ledger, settings: ChainSettings, jobs: Mapping[str, JobState], *,
                     source: str, only: Sequence[int] | None = None) -> RunState:
    """Record what the scheduler said (starts, requeues, final ends) against the ledger as it is
    now, under the lock: a record another process wrote meanwhile is never contradicted."""
    with ledger.locked():
        state = ledger.state()
        for view in state.attempts:
            job = jobs.get(str(view.job_id)) if _needs_sync(view, only) else None
            if job is None:
                continue  # just submitted: the scheduler may not list it yet
            if (view.status is AttemptStatus.RUNNING and job.requeues > view.requeue_count
                    and not job.is_final):
                if job.state == "RUNNING":
                    _record_requeue(ledger, settings, view, job, source=source)
                continue
            if job.is_final:
                flag, progress = end_evidence(state, view, settings)
                record_outcome(ledger, settings, view,
                               classify_job(settings, job, flag_exists=flag), job=job,
                               source=source, progress=progress)
            elif job.state == "RUNNING" and view.status is AttemptStatus.SUBMITTED:
                ledger.record_start(view.number, job.job_id, nodes=job.nodes,
                                    requeue_count=job.requeues,
                                    progress=read_progress(settings.run_dir))
        return ledger.state()


def sync_with_scheduler(
    ledger: Ledger,
    settings: ChainSettings,
    scheduler: Scheduler,
    state: RunState,
    *,
    source: str,
    only: Sequence[int] | None = None,
) -> tuple[RunState, dict[str, JobState]]:
    """Bring every attempt in flight (or ended provisionally) up to date with ONE `states()`
    query (lock released), then record starts, requeues and final ends (under the lock).
    Returns the new state and the job states."""
    jobs = query_scheduler(scheduler, state, only=only)
    if not jobs:
        return state, {}
    return apply_job_states(ledger, settings, jobs, source=source, only=only), jobs


def attempt_request(
    settings: ChainSettings,
    attempt: int,
    tag: str,
    *,
    exclude: Sequence[str] = (),
    after: str | None = None,
) -> AttemptRequest:
    """The scheduler request for one attempt."""
    stdout = None
    if settings.backend == "local":
        stdout = RunDir(settings.run_dir).attempt_log(attempt)
    return AttemptRequest(
        script=Path(settings.script), tag=tag, workdir=Path(settings.workdir),
        env=settings.attempt_env(attempt), job_name=settings.job_name,
        time_limit_s=settings.time_limit_s, warning_signal=settings.warning_signal,
        warning_lead_s=settings.warning_lead_s, warning_script_only=True,
        kill_wait_s=settings.kill_wait_s, exclude_nodes=tuple(exclude), after=after,
        stdout=stdout,
    )


def submit_attempt(
    ledger: Ledger,
    settings: ChainSettings,
    scheduler: Scheduler,
    decision: Decision,
    *,
    after: str | None = None,
) -> str | None:
    """Submit the decision's attempt exactly once (reserve and claim, reconcile by tag, submit,
    record; the lock is never held across the scheduler call). Returns its job id, or None when
    another process is submitting it right now. A job that lands after the run ended (a cancel
    or stop came in while sbatch ran) is cancelled again and recorded as withdrawn."""
    assert decision.action is Action.SUBMIT and decision.attempt is not None
    number = decision.attempt

    def submit(tag: str) -> str:
        return scheduler.submit(attempt_request(settings, number, tag,
                                                exclude=decision.exclude_nodes, after=after))

    job_id = ledger.submit_attempt(number, submit, scheduler.find)
    if job_id is not None and ledger.state().run_status is not RunStatus.RUNNING:
        withdraw_leftovers(ledger, scheduler, "the run ended while it was being submitted")
    return job_id


def withdraw_leftovers(ledger: Ledger, scheduler: Scheduler, reason: str) -> RunState:
    """Cancel the attempts of an ended run that never started (pre-scheduled successors, and
    reservations whose submission may have gone through: their tag is looked up) and record
    them as withdrawn. Running attempts are left to end (and be recorded) by themselves."""
    now = time.time()
    for view in ledger.state().never_started:
        if view.status is AttemptStatus.RESERVED:
            if view.claimed(now):
                continue  # being submitted right now: its submitter withdraws it (above)
            job_ids = list(scheduler.find(view.tag))
        elif view.job_id:
            job_ids = [view.job_id]
        else:
            continue
        for job_id in job_ids:
            scheduler.cancel(job_id)
        ledger.record_end(view.number, outcome=Outcome.CANCELLED,
                          job_id=job_ids[0] if job_ids else None, source="chain",
                          reason=f"withdrawn before it started: {reason}"
                          + ("" if job_ids else " (never submitted)"))
    return ledger.state()


def stop_run(ledger: Ledger, scheduler: Scheduler, decision: Decision) -> RunState:
    """Record the run's end first (so a successor starting now skips its launch), then cancel
    the attempts that never started and record them as withdrawn. Safe to repeat."""
    assert decision.run_status is not None and decision.run_status is not RunStatus.RUNNING
    ledger.record_run_end(decision.run_status, decision.reason)
    return withdraw_leftovers(ledger, scheduler, decision.reason)


__all__ = [
    "apply_job_states",
    "attempt_request",
    "classify_exit",
    "classify_job",
    "end_evidence",
    "launch_status",
    "launcher_node_evidence",
    "make_scheduler",
    "note_decision",
    "query_scheduler",
    "record_outcome",
    "stop_run",
    "submit_attempt",
    "sync_with_scheduler",
    "with_node_problems",
    "withdraw_leftovers",
]
