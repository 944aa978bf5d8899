"""What the attempt's script calls as it starts and as it ends (`ftslurm chain-start` and
`ftslurm chain-end`): the self-chaining half of the chain.

The invariant they keep: while a self-chaining run is not over, an attempt is running or one is
queued, whatever kills a job and whenever. `ftslurm submit` queues the first attempt; each
attempt's chain-start keeps QUEUE_DEPTH attempts queued behind the running one (`afterany` on
every job before it), so a job killed at any moment, even before its own chain-start ran, still
leaves a successor queued; that successor completes the dead job's record from the scheduler.

chain-start runs first in the script, before anything that can fail. It confirms the job against
the ledger (the job is an attempt of this run, not withdrawn, no earlier attempt still running in
the scheduler), records the start, and returns 0 (launch), SKIP_LAUNCH (the run is over, or this
job may not train: the script exits 0 without launching), or fails (the ledger cannot confirm the
job: the script exits without launching). A scheduler error never stops a confirmed attempt from
training: pre-scheduling is retried by chain-end, `ftslurm watch` and flagged by `status`.

chain-end runs from the script's EXIT trap, so a failing setup line, a failing launch or a
SIGTERM all reach it (only SIGKILL does not; the queued successor covers that). It classifies the
launch's exit status with the flag file, records it, and stops the run (withdrawing the queued
attempts), keeps blamed nodes off the queued attempts, or submits a successor when none is queued.
An end classified *provisionally* (the launch died of a signal: time limit, preemption or cancel
look alike from inside) only makes sure a successor is queued; the successor or the loop
completes the record from the scheduler's final state.

No lock is held across a scheduler call or a wait (ftslurm.chain.actions). In loop mode
(`ftslurm submit --watch`, the local backend) the hooks only confirm and record; the loop submits.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ftslurm import env_vars, exit_codes
from ftslurm.backends.base import Scheduler
from ftslurm.chain.actions import (
    classify_exit,
    launch_status,
    make_scheduler,
    note_decision,
    record_outcome,
    stop_run,
    submit_attempt,
    sync_with_scheduler,
)
from ftslurm.chain.fleet import keep_row
from ftslurm.chain.ledger import Ledger, read_progress
from ftslurm.chain.outcome import Action, AttemptStatus, Outcome, RunStatus
from ftslurm.chain.policy import Classification, decide, exclusions
from ftslurm.chain.runstate import AttemptView, RunState
from ftslurm.chain.settings import ChainSettings, load_settings
from ftslurm.chain.sweep import advance
from ftslurm.errors import FtslurmError, UsageError
from ftslurm.rundir import RunDir
from ftslurm.slurm.hostlist import expand_hostlist

log = logging.getLogger(__name__)

#: chain-start's exit code telling the script not to launch (the run is over).
SKIP_LAUNCH = exit_codes.SKIP_LAUNCH
#: How long chain-start waits for the scheduler to report a predecessor's final state.
PREDECESSOR_WAIT_S = 60.0
#: Attempts kept queued behind the running one. Two: a job killed at any moment, even before its
#: own chain-start queued anything, still leaves one queued.
QUEUE_DEPTH = 2
#: While the queue behind a running attempt is short (sbatch failed), a keeper process inside
#: the job retries every KEEPER_INTERVAL_S seconds (growing x1.5 up to KEEPER_MAX_INTERVAL_S).
KEEPER_INTERVAL_S = 2.0
KEEPER_MAX_INTERVAL_S = 30.0
#: How long chain-end keeps trying to submit a successor when nothing at all is queued behind
#: the attempt and the run is not over (else the run would stall): the allocation is held that
#: long at most, and only in that case.
END_RETRY_S = 300.0
#: How many attempts in a row may step aside because they were allocated on a node the chain
#: excludes; the next one trains there (with a note) rather than let the run loop forever.
MAX_EXCLUDED_SKIPS = 2
_NOT_LAUNCHED = "not launched: "
_EXCLUDED_ALLOCATION = "allocated on "
T = TypeVar("T")


@dataclass(frozen=True)
class JobContext:
    """Who is calling: the run dir, the attempt and its job, from the job's environment."""

    run_dir: str
    attempt: int
    job_id: str
    nodes: tuple[str, ...] = ()
    requeue_count: int = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> JobContext:
        """Read FTSLURM_RUN_DIR, FTSLURM_ATTEMPT, SLURM_JOB_ID (or FTSLURM_LOCAL_JOB_ID),
        SLURM_JOB_NODELIST and SLURM_RESTART_COUNT."""
        env = os.environ if environ is None else environ
        missing = [n for n in (env_vars.RUN_DIR, env_vars.ATTEMPT) if not env.get(n)]
        job_id = env.get(env_vars.SLURM_JOB_ID) or env.get(env_vars.LOCAL_JOB_ID)
        if missing or not job_id:
            names = ", ".join(missing or [env_vars.SLURM_JOB_ID])
            raise UsageError(f"chain hook: ${names} not set",
                             hint="the chain hooks run inside an attempt's script only")
        attempt = env[env_vars.ATTEMPT]
        if not attempt.isdigit() or int(attempt) < 1:
            raise UsageError(f"chain hook: ${env_vars.ATTEMPT} is {attempt!r}, not a number >= 1")
        restarts = env.get(env_vars.SLURM_RESTART_COUNT, "0")
        nodelist = env.get(env_vars.SLURM_JOB_NODELIST)
        return cls(
            run_dir=env[env_vars.RUN_DIR], attempt=int(attempt), job_id=job_id,
            nodes=tuple(expand_hostlist(nodelist)) if nodelist else (socket.gethostname(),),
            requeue_count=int(restarts) if restarts.isdigit() else 0,
        )


def _settle_predecessors(settings: ChainSettings, ledger: Ledger, scheduler: Scheduler,
                         ctx: JobContext, state: RunState) -> tuple[RunState, list[AttemptView]]:
    """Complete the records of earlier attempts from the scheduler, waiting up to
    PREDECESSOR_WAIT_S for those it still reports active (accounting lags behind `afterany`).
    Returns the state and the earlier attempts the scheduler still reports active. A scheduler
    that does not answer leaves the ledger as it is: the `afterany` dependency is trusted."""
    deadline = time.monotonic() + PREDECESSOR_WAIT_S
    while True:
        earlier = [a.number for a in state.attempts
                   if a.number < ctx.attempt and (a.in_flight or a.provisional)]
        if not earlier:
            return state, []
        try:
            state, jobs = sync_with_scheduler(ledger, settings, scheduler, state,
                                              source="successor", only=earlier)
        except FtslurmError as error:
            print(f"ftslurm: the scheduler did not answer ({error}); trusting the dependency "
                  "on the earlier attempts", flush=True)
            return state, []
        active = [a for a in state.attempts if a.number in earlier and a.job_id in jobs
                  and not jobs[a.job_id].is_final]
        if not active or time.monotonic() >= deadline:
            return state, active
        time.sleep(2.0)  # polling the scheduler; the deadline above bounds it


class Refused(FtslurmError):
    """A job submitted by hand that the run does not adopt (it must not train)."""


def adopt_job(environ: Mapping[str, str] | None = None, *,
              scheduler: Scheduler | None = None) -> int:
    """`ftslurm chain-adopt`: make a job submitted by hand (`sbatch` on a rendered script, so
    no $FTSLURM_ATTEMPT) the run's next attempt. Prints the attempt number on stdout (the script
    exports it) and returns 0; or explains on stderr why the job may not train and returns
    SKIP_LAUNCH: the run is over, or another attempt is running or queued (never two trainings
    at once). A job the ledger already knows (requeued) keeps its attempt."""
    env = os.environ if environ is None else environ
    run_dir, job_id = env.get(env_vars.RUN_DIR), env.get(env_vars.SLURM_JOB_ID)
    if not run_dir or not job_id:
        missing = env_vars.RUN_DIR if not run_dir else env_vars.SLURM_JOB_ID
        raise UsageError(f"chain-adopt: ${missing} not set",
                         hint="it runs inside a job of a rendered script only")
    if not RunDir(run_dir).ledger.exists():
        raise UsageError(f"{run_dir} is not prepared for a run (it has no ledger)",
                         hint="write the script with `ftslurm render JOB_YAML -o FILE` (which "
                              "prepares the run directory) or use `ftslurm submit`")
    settings = load_settings(run_dir)
    ledger = Ledger.open(run_dir)
    try:
        view = _adopt(settings, ledger, scheduler or make_scheduler(
            settings, since=ledger.state().created_at - 3600), job_id)
    except Refused as refusal:
        print(f"ftslurm: job {job_id} (submitted by hand) does not train: {refusal.message}",
              file=sys.stderr, flush=True)
        if refusal.hint:
            print(f"  hint: {refusal.hint}", file=sys.stderr, flush=True)
        return SKIP_LAUNCH
    print(f"ftslurm: job {job_id} (submitted by hand) is attempt {view.number} of the run in "
          f"{run_dir}", file=sys.stderr, flush=True)
    print(view.number, flush=True)
    return 0


def _adopt(settings: ChainSettings, ledger: Ledger, scheduler: Scheduler,
           job_id: str) -> AttemptView:
    known = [a for a in ledger.state().attempts if a.job_id == job_id]
    if known:
        return known[-1]
    if settings.mode != "self":
        raise Refused(f"the run in {settings.run_dir} is driven by `ftslurm watch` "
                      f"({settings.backend} backend), not by its jobs")
    state = ledger.state()
    if state.in_flight:  # the ledger may be behind: ask the scheduler first (no lock held)
        try:
            state, _ = sync_with_scheduler(ledger, settings, scheduler, state, source="adopt")
        except FtslurmError as error:
            raise Refused(f"the scheduler did not answer ({error.message}), so it cannot be "
                          "told whether another attempt is training",
                          hint="submit the script again later") from None
    with ledger.locked():
        state = ledger.state()
        decision = decide(state, settings.config, flag_exists=settings.flag_exists())
        if decision.action is Action.STOP:
            raise Refused(f"the run is over ({decision.run_status}: {decision.reason})",
                          hint=f"`ftslurm submit --resume` continues it; `ftslurm status "
                               f"{settings.run_dir}` shows it")
        busy = [a for a in state.in_flight if a.job_id != job_id]
        if busy:
            what = ", ".join(f"attempt {a.number} (job {a.job_id or '?'}, {a.status})"
                             for a in busy)
            raise Refused(f"{what} of the same run is already running or queued; two attempts "
                          "never train at once",
                          hint=f"the run goes on by itself: `ftslurm status {settings.run_dir}`")
        if state.used_attempts >= settings.config.max_attempts:
            raise Refused(f"all {settings.config.max_attempts} attempts are used (max_attempts)")
        return ledger.record_adopted(job_id)


def _open_run(ctx: JobContext, scheduler: Scheduler | None
              ) -> tuple[ChainSettings, Ledger, Scheduler]:
    """The run's settings, ledger and scheduler (the one given, or the run's backend)."""
    settings = load_settings(ctx.run_dir)
    ledger = Ledger.open(ctx.run_dir)
    scheduler = scheduler or make_scheduler(settings, since=ledger.state().created_at - 3600)
    return settings, ledger, scheduler


def _attempt_in(state: RunState, ctx: JobContext) -> AttemptView:
    """This job's attempt in the ledger; a job the chain did not submit is a usage error."""
    view = state.attempt(ctx.attempt)
    if view is None:
        raise UsageError(f"attempt {ctx.attempt} is not in the ledger of {ctx.run_dir}",
                         hint="submit runs with `ftslurm submit`, not sbatch by hand")
    return view


def _not_launched(ledger: Ledger, ctx: JobContext, outcome: Outcome, reason: str) -> int:
    ledger.record_end(ctx.attempt, outcome=outcome, job_id=ctx.job_id, source="job",
                      reason=f"{_NOT_LAUNCHED}{reason}", exit_code=0)
    print(f"ftslurm: attempt {ctx.attempt} not launched: {reason}", flush=True)
    return SKIP_LAUNCH


def chain_start(ctx: JobContext, *, scheduler: Scheduler | None = None,
                keeper: Callable[[JobContext], None] | None = None) -> int:
    """The start hook; returns 0 (launch) or SKIP_LAUNCH. Raises when the ledger cannot confirm
    that this job is the run's current attempt (the script then does not launch). `keeper` is
    started when the queue behind this attempt stays short (default: `start_queue_keeper`)."""
    settings, ledger, scheduler = _open_run(ctx, scheduler)
    view = _attempt_in(ledger.state(), ctx)
    if view.status is AttemptStatus.ENDED and ctx.requeue_count <= view.requeue_count:
        return _not_launched(ledger, ctx, Outcome.CANCELLED,
                             f"the chain withdrew this job ({view.reason})")
    state = ledger.state()
    blamed_before = set(state.blamed_nodes)
    state, active = _settle_predecessors(settings, ledger, scheduler, ctx, state)
    if active:  # never two attempts training at once
        busy = ", ".join(f"attempt {a.number} (job {a.job_id})" for a in active)
        return _not_launched(ledger, ctx, Outcome.STOPPED,
                             f"{busy} still active in the scheduler")
    last = state.last_ended
    if last is not None and last.number < ctx.attempt and not last.provisional:
        # Its own end hook may never have run (a lost node): say here what the chain did next.
        note_decision(settings, state, last.number,
                      decide(state, settings.config, flag_exists=settings.flag_exists()))
    view = _attempt_in(state, ctx)
    skip, note = (_excluded_allocation(settings, state, scheduler, ctx, blamed_before)
                  if settings.mode == "self" else (None, None))
    if view.status is AttemptStatus.RUNNING and ctx.requeue_count > view.requeue_count:
        ledger.record_end(ctx.attempt, outcome=Outcome.PREEMPTED, job_id=ctx.job_id,
                          reason=f"requeued by the scheduler (restart {ctx.requeue_count})",
                          source="requeue", progress=read_progress(ctx.run_dir))
    if view.status is not AttemptStatus.RUNNING or ctx.requeue_count > view.requeue_count:
        view = ledger.record_start(ctx.attempt, ctx.job_id, nodes=ctx.nodes,
                                   requeue_count=ctx.requeue_count,
                                   progress=read_progress(ctx.run_dir), note=note)
        if view.status is AttemptStatus.ENDED:  # withdrawn while we settled the predecessors
            return _not_launched(ledger, ctx, Outcome.CANCELLED,
                                 f"the chain withdrew this job ({view.reason})")
    flag = settings.flag_exists()
    ahead = decide(ledger.state(), settings.config, flag_exists=flag, ahead_of=ctx.attempt)
    if ahead.action is Action.STOP:
        # The run is over (finished before we ran, out of budget, cancelled): don't launch.
        code = _not_launched(ledger, ctx, Outcome.FINISHED if flag else Outcome.CANCELLED,
                             ahead.reason)
        _tolerant(stop_run, ledger, scheduler, ahead, what="withdraw the queued attempts")
        if settings.sweep_dir:
            _tolerant(advance, settings.sweep_dir, after=ctx.job_id, what="start the sweep's "
                      "next point")
        return code
    if settings.mode == "self":
        if skip is not None:
            # Queued before the blame, this job landed on a node the chain now avoids: the next
            # queued attempt (already kept off it) runs instead; this one never trains.
            code = _not_launched(ledger, ctx, Outcome.STOPPED, skip)
            _queue_after_end(settings, ledger, scheduler, ctx)
            return code
        if note:
            print(f"ftslurm: attempt {ctx.attempt} {note}", flush=True)
        if not ensure_queue(settings, ledger, scheduler, behind=ctx.attempt, job_id=ctx.job_id):
            (keeper or start_queue_keeper)(ctx)
    print(f"ftslurm: attempt {ctx.attempt} (job {ctx.job_id}) starts", flush=True)
    return 0


def _excluded_allocation(settings: ChainSettings, state: RunState, scheduler: Scheduler,
                         ctx: JobContext, blamed_before: set[str]) -> tuple[str | None, str | None]:
    """Whether this job, allocated on nodes the chain now excludes, steps aside for a successor
    kept off them: (the reason it does not train, None), or (None, a note saying why it trains
    there anyway), or (None, None) when its nodes are fine. Also passes a blame that came in
    since the job was queued on to the queued successors.

    It trains anyway when the exclusion cannot be honoured: the scheduler refuses it for the
    queued successors (too few nodes would be left), or `MAX_EXCLUDED_SKIPS` attempts in a row
    already stepped aside (each landed there again). A successor that can never avoid the
    nodes would otherwise step aside forever, and the run would never train again."""
    excluded = exclusions(state, settings.config)
    bad = [node for node in ctx.nodes if node in excluded]
    honoured = True
    if bad or set(state.blamed_nodes) - blamed_before:  # a node was blamed before we ran
        honoured = _exclude_on_successors(state, scheduler, excluded, after=ctx.attempt)
    if not bad:
        return None, None
    nodes = ", ".join(bad)
    skipped = _stepped_aside_in_a_row(state, ctx.attempt)
    if not honoured:
        return None, (f"trains on {nodes} although the chain excludes it: the scheduler did not "
                      "take the exclusion for the queued attempts (too few nodes would be left, "
                      "or it did not answer)")
    if skipped >= MAX_EXCLUDED_SKIPS:
        return None, (f"trains on {nodes} although the chain excludes it: {skipped} attempts "
                      "in a row were allocated there and stepped aside")
    return f"{_EXCLUDED_ALLOCATION}{nodes}, which the chain now excludes", None


def _stepped_aside_in_a_row(state: RunState, attempt: int) -> int:
    """How many attempts right before `attempt` (among those that started) stepped aside
    because they were allocated on an excluded node."""
    count = 0
    for view in sorted(state.attempts, key=lambda a: a.number, reverse=True):
        if view.number >= attempt or view.started_at is None:
            continue
        if not (view.reason or "").startswith(f"{_NOT_LAUNCHED}{_EXCLUDED_ALLOCATION}"):
            break
        count += 1
    return count


def ensure_queue(settings: ChainSettings, ledger: Ledger, scheduler: Scheduler, *,
                 behind: int, job_id: str, depth: int = QUEUE_DEPTH) -> bool:
    """Keep `depth` attempts queued behind attempt `behind` (job `job_id`), each with `afterany`
    on every job in flight before it. A scheduler error is printed, not raised: the caller sees
    False (the queue is short) and retries later. True when nothing more is to be queued."""
    for _ in range(depth):
        state = ledger.state()
        decision = decide(state, settings.config, flag_exists=settings.flag_exists(),
                          ahead_of=behind, queue_depth=depth)
        if decision.action is not Action.SUBMIT or decision.attempt is None:
            return True
        before = [a.job_id for a in state.attempts if a.job_id and a.in_flight
                  and behind < a.number < decision.attempt]
        after = ":".join(dict.fromkeys([job_id, *before]))
        job = _tolerant(submit_attempt, ledger, settings, scheduler, decision, after=after,
                        what=f"queue attempt {decision.attempt}")
        if job is None:
            return False
        print(f"ftslurm: attempt {decision.attempt} queued as job {job} (after job(s) "
              f"{after.replace(':', ', ')})", flush=True)
    return True


def start_queue_keeper(ctx: JobContext) -> None:
    """Retry queueing in a process of its own while this attempt trains (`ftslurm
    chain-keep-queue`): it lives in the job, so it ends with it at the latest."""
    env = {**os.environ, env_vars.RUN_DIR: ctx.run_dir, env_vars.ATTEMPT: str(ctx.attempt),
           env_vars.SLURM_JOB_ID: ctx.job_id}
    subprocess.Popen([sys.executable, "-m", "ftslurm.cli", "chain-keep-queue"], env=env,
                     stdin=subprocess.DEVNULL, close_fds=True)
    print(f"ftslurm: attempt {ctx.attempt}: the queue behind it is short; retrying in the "
          "background", flush=True)


def keep_queue(ctx: JobContext, *, scheduler: Scheduler | None = None,
               interval: float = KEEPER_INTERVAL_S) -> int:
    """The keeper: retry `ensure_queue` with backoff until the queue is full, the attempt has
    ended or the run is over. Returns 0."""
    settings, ledger, scheduler = _open_run(ctx, scheduler)
    while True:
        time.sleep(interval)  # retrying the scheduler with backoff, not a synchronization
        view = ledger.state().attempt(ctx.attempt)
        if (view is None or view.status is not AttemptStatus.RUNNING
                or ledger.state().run_status is not RunStatus.RUNNING):
            return 0
        if ensure_queue(settings, ledger, scheduler, behind=ctx.attempt, job_id=ctx.job_id):
            return 0
        interval = min(interval * 1.5, KEEPER_MAX_INTERVAL_S)


def _queue_after_end(settings: ChainSettings, ledger: Ledger, scheduler: Scheduler,
                     ctx: JobContext) -> None:
    """After this attempt's end: when the run goes on and nothing is queued behind it, keep
    trying (up to END_RETRY_S) to queue a successor; the run would stall otherwise."""
    deadline = time.monotonic() + END_RETRY_S
    interval = KEEPER_INTERVAL_S
    while not ensure_queue(settings, ledger, scheduler, behind=ctx.attempt, job_id=ctx.job_id):
        state = ledger.state()
        if any(a.number > ctx.attempt and a.job_id and a.in_flight for a in state.attempts):
            return  # one is queued: the run goes on; its chain-start queues the rest
        if time.monotonic() >= deadline:
            print("ftslurm: nothing could be queued after this attempt; `ftslurm status` flags "
                  "the run as stalled and `ftslurm watch --once` repairs it", flush=True)
            return
        time.sleep(interval)  # retrying the scheduler with backoff, bounded by the deadline
        interval = min(interval * 1.5, KEEPER_MAX_INTERVAL_S)


def _tolerant(action: Callable[..., T], *args: Any, what: str, **kwargs: Any) -> T | None:
    """Run a chain action whose failure must not stop the training or the hook: print it."""
    try:
        return action(*args, **kwargs)
    except FtslurmError as error:
        print(f"ftslurm: could not {what}: {error}", flush=True)
        return None


def chain_end(ctx: JobContext, status: int, *, warned: bool = False,
              scheduler: Scheduler | None = None) -> int:
    """The end hook: record the outcome and continue or stop the chain. Returns the status the
    job should exit with (`job_exit_status`): 0 for a clean end, else the script's `status`."""
    settings, ledger, scheduler = _open_run(ctx, scheduler)
    view = _attempt_in(ledger.state(), ctx)
    script_status = status
    status = launch_status(ctx.run_dir, ctx.attempt, status)
    result = classify_exit(settings, status, warned=warned)
    record_outcome(ledger, settings, view, result, exit_code=status, source="job")
    print(f"ftslurm: attempt {ctx.attempt} ended: {result.outcome.value} ({result.reason})",
          flush=True)
    # The ledger's end, which may be another process's (the first final end wins), decides.
    recorded = ledger.state().attempt(ctx.attempt)
    if recorded is not None and recorded.outcome is not None:
        result = Classification(recorded.outcome, recorded.reason or result.reason,
                                provisional=recorded.provisional)
    job_status = job_exit_status(result, script_status)
    if settings.mode != "self":
        return job_status
    if result.provisional:  # the scheduler's final state decides; a successor must be queued
        _queue_after_end(settings, ledger, scheduler, ctx)
        return job_status
    state = ledger.state()
    decision = decide(state, settings.config, flag_exists=settings.flag_exists())
    note_decision(settings, state, ctx.attempt, decision)
    if decision.action is Action.STOP:
        _tolerant(stop_run, ledger, scheduler, decision, what="withdraw the queued attempts")
        print(f"ftslurm: the run is {decision.run_status}: {decision.reason}", flush=True)
        _tolerant(keep_row, ctx.run_dir, what="keep the run's row for `ftslurm ls`")
        if settings.sweep_dir:  # this run's slot is free: the sweep's next point may start
            _tolerant(advance, settings.sweep_dir, after=ctx.job_id, what="start the sweep's "
                      "next point")
        return job_status
    if decision.action is Action.WAIT:
        _exclude_on_successors(state, scheduler, exclusions(state, settings.config))
    _queue_after_end(settings, ledger, scheduler, ctx)  # a successor, if none is queued yet
    return job_status


#: Ends that are no failure: the job exits 0 after them, so the scheduler's accounting (what
#: site dashboards count) shows a healthy attempt stopped for its time limit as COMPLETED.
_CLEAN_ENDS = frozenset({Outcome.FINISHED, Outcome.STOPPED, Outcome.TIMEOUT, Outcome.PREEMPTED})


def job_exit_status(result: Classification, status: int) -> int:
    """The status the attempt's job exits with: 0 for a clean end the chain has recorded for
    good (finished, a graceful stop, the time limit after its warning), else the script's own
    `status`. A provisional end keeps its status: the scheduler's final state must still tell
    what happened, and a job that exits 0 would read as a clean stop."""
    if result.outcome in _CLEAN_ENDS and not result.provisional:
        return 0
    return status


def _exclude_on_successors(state: RunState, scheduler: Scheduler, nodes: Sequence[str], *,
                           after: int = 0) -> bool:
    """Keep blamed nodes off the pre-scheduled successors of attempt `after` (SLURM: scontrol
    update ExcNodeList). False when the scheduler refused it for one of them (printed)."""
    if not nodes:
        return True
    honoured = True
    for view in state.attempts:
        if view.number > after and view.status is AttemptStatus.SUBMITTED and view.job_id:
            try:
                scheduler.exclude_nodes(view.job_id, list(nodes))
                print(f"ftslurm: attempt {view.number} will avoid {', '.join(nodes)}", flush=True)
            except Exception as error:
                honoured = False
                print(f"ftslurm: could not exclude {', '.join(nodes)}: {error}", flush=True)
    return honoured


__all__ = [
    "MAX_EXCLUDED_SKIPS",
    "PREDECESSOR_WAIT_S",
    "QUEUE_DEPTH",
    "SKIP_LAUNCH",
    "JobContext",
    "Refused",
    "adopt_job",
    "chain_end",
    "chain_start",
    "ensure_queue",
    "job_exit_status",
    "keep_queue",
    "start_queue_keeper",
]
