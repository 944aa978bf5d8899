"""The chain's actions, shared by the in-job hooks (`ftslurm chain-start/chain-end`), the
login-node loop (`ftslurm watch`) and `ftslurm cancel`: record an outcome, bring the ledger up to
date with the scheduler, submit the next attempt, stop the run.

Callers hold `Ledger.locked()` around a read-decide-act sequence so that no other process can
interleave with it; every function here re-enters that lock.
"""

from __future__ import annotations

import json
import logging
import signal as signals
from collections.abc import Sequence
from pathlib import Path

from ftslurm import exit_codes
from ftslurm.chain.ledger import Ledger, read_progress
from ftslurm.chain.outcome import Outcome
from ftslurm.chain.policy import Classification, Decision, blame_nodes, classify
from ftslurm.chain.runstate import AttemptView, RunState
from ftslurm.chain.settings import ChainSettings
from ftslurm.chain.slurm_scheduler import SlurmScheduler
from ftslurm.scheduler import AttemptRequest, JobState, LocalScheduler, Scheduler

log = logging.getLogger(__name__)

#: Launcher status event kinds that blame the node they happened on.
BLAMING_EVENTS = ("crash", "hang")
LOCAL_JOBS_DIR = "local_jobs"
LAUNCHER_STATUS_DIR = "launcher_status"


def make_scheduler(settings: ChainSettings, *, since: float | None = None) -> Scheduler:
    """The scheduler of the run's backend."""
    if settings.backend == "local":
        return LocalScheduler(Path(settings.run_dir) / LOCAL_JOBS_DIR)
    return SlurmScheduler(since=since)


def launcher_event_nodes(run_dir: str | Path, attempt: int) -> list[str]:
    """Nodes named by crash or hang events in the launchers' status files of an attempt
    (`<run_dir>/launcher_status/attempt-<N>.<node>.json`, see ftslurm.fault_tolerance.status).
    An unreadable file is skipped with a warning: blame is a hint, never a reason to fail."""
    nodes: list[str] = []
    for path in sorted((Path(run_dir) / LAUNCHER_STATUS_DIR).glob(f"attempt-{attempt}.*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            events = data.get("events") or []
        except (OSError, ValueError, AttributeError) as error:
            log.warning("ignoring launcher status %s: %s", path, error)
            continue
        for event in events:
            if not isinstance(event, dict) or event.get("kind") not in BLAMING_EVENTS:
                continue
            if event.get("node"):
                nodes.append(str(event["node"]))
    return list(dict.fromkeys(nodes))


def _launcher_statuses(run_dir: str | Path, attempt: int) -> list[dict]:
    """The readable launcher status files of an attempt (one per node); others are skipped."""
    found = []
    for path in sorted((Path(run_dir) / LAUNCHER_STATUS_DIR).glob(f"attempt-{attempt}.*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            log.warning("ignoring launcher status %s: %s", path, error)
            continue
        if isinstance(data, dict):
            found.append(data)
    return found


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
    codes = {data.get("exit_code") for data in _launcher_statuses(run_dir, attempt)}
    for decided in (exit_codes.DO_NOT_RETRY, exit_codes.FAILED, exit_codes.STOPPED):
        if decided in codes:
            return decided
    return srun_status


def classify_job(settings: ChainSettings, job: JobState) -> Classification:
    """Classify an ended job from the scheduler's final state."""
    return classify(
        exit_code=job.exit_code, signal=job.signal, flag_exists=settings.flag_exists(),
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
) -> bool:
    """Record how attempt `view` ended (with blame); False when it already had a final end."""
    nodes = (job.nodes if job is not None else ()) or view.nodes
    blamed = blame_nodes(result.outcome, attempt_nodes=nodes,
                         event_nodes=launcher_event_nodes(settings.run_dir, view.number))
    _, written = ledger.record_end(
        view.number, outcome=result.outcome, reason=result.reason, job_id=view.job_id,
        exit_code=job.exit_code if job is not None else exit_code,
        signal=job.signal if job is not None else None,
        scheduler_state=job.state if job is not None else None,
        progress=read_progress(settings.run_dir), blamed_nodes=blamed, source=source,
        provisional=result.provisional,
    )
    return written


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
    query: record starts, requeues and final ends. Returns the new state and the job states."""
    targets = [a for a in state.attempts if a.job_id and (a.in_flight or a.provisional)
               and (only is None or a.number in only)]
    if not targets:
        return state, {}
    jobs = scheduler.states([a.job_id for a in targets if a.job_id])
    for view in targets:
        job = jobs.get(str(view.job_id))
        if job is None:
            continue  # just submitted: the scheduler may not list it yet
        if view.status == "running" and job.requeues > view.requeue_count and not job.is_final:
            if job.state == "RUNNING":
                _record_requeue(ledger, settings, view, job, source=source)
            continue
        if job.is_final:
            record_outcome(ledger, settings, view, classify_job(settings, job), job=job,
                           source=source)
        elif job.state == "RUNNING" and view.status == "submitted":
            ledger.record_start(view.number, job.job_id, nodes=job.nodes,
                                requeue_count=job.requeues,
                                progress=read_progress(settings.run_dir))
    return ledger.state(), jobs


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
        stdout = Path(settings.run_dir) / "logs" / f"attempt-{attempt}.out"
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
) -> str:
    """Submit the decision's attempt exactly once (reserve, reconcile by tag, submit, record)."""
    assert decision.action == "submit" and decision.attempt is not None
    number = decision.attempt

    def submit(tag: str) -> str:
        return scheduler.submit(attempt_request(settings, number, tag,
                                                exclude=decision.exclude_nodes, after=after))

    return ledger.submit_attempt(number, submit, scheduler.find)


def stop_run(ledger: Ledger, scheduler: Scheduler, decision: Decision) -> RunState:
    """Record the run's end first (so a successor starting now skips its launch), then cancel
    the pre-scheduled successors and record them as withdrawn."""
    assert decision.run_status is not None and decision.run_status != "running"
    state = ledger.record_run_end(decision.run_status, decision.reason)
    for job_id in decision.cancel:
        scheduler.cancel(job_id)
        for view in state.attempts:
            if view.job_id == job_id and view.status == "submitted":
                ledger.record_end(view.number, outcome=Outcome.CANCELLED, job_id=job_id,
                                  reason=f"withdrawn before it started: {decision.reason}",
                                  source="chain")
    return ledger.state()


def signal_name(number: int | None) -> str:
    """`15` -> `SIGTERM` (for messages)."""
    if number is None:
        return "-"
    try:
        return signals.Signals(number).name
    except ValueError:
        return str(number)


__all__ = [
    "attempt_request",
    "classify_exit",
    "classify_job",
    "launcher_event_nodes",
    "make_scheduler",
    "record_outcome",
    "stop_run",
    "submit_attempt",
    "sync_with_scheduler",
]
