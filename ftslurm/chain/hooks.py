"""What the attempt's script calls as it starts and as it ends (`ftslurm chain-start` and
`ftslurm chain-end`): the self-chaining half of the chain.

chain-start: bring earlier attempts' records up to date (a predecessor killed before it could
record its end is completed from the scheduler), record this attempt's start (a requeued job
records the end of its earlier run first), and then either run (exit 0; in self-chaining mode
after pre-scheduling the successor with `afterany:<this job>`) or skip the launch (exit
`SKIP_LAUNCH`) when the run is already finished, failed or cancelled.

chain-end: classify the launch's exit status with the flag file, record it (with blamed nodes),
and then stop the run and withdraw the successor, keep blamed nodes off the successor, or submit
the successor if none was pre-scheduled. An end classified *provisionally* (the launch died of a
signal: time limit, preemption or cancel look alike from inside) decides nothing: the successor
or the loop completes it from the scheduler's final state.

In loop mode (`ftslurm submit --watch`, the local backend) the hooks only record; the loop submits.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ftslurm import env_vars, exit_codes
from ftslurm.chain.actions import (
    classify_exit,
    launch_status,
    make_scheduler,
    record_outcome,
    stop_run,
    submit_attempt,
    sync_with_scheduler,
)
from ftslurm.chain.ledger import Ledger, read_progress
from ftslurm.chain.outcome import Outcome
from ftslurm.chain.policy import decide, exclusions
from ftslurm.chain.runstate import AttemptView, RunState
from ftslurm.chain.settings import ChainSettings, load_settings
from ftslurm.errors import UsageError
from ftslurm.hostlist import expand_hostlist
from ftslurm.scheduler import Scheduler

log = logging.getLogger(__name__)

#: chain-start's exit code telling the script not to launch (the run is over).
SKIP_LAUNCH = exit_codes.SKIP_LAUNCH
#: How long chain-start waits for the scheduler to report a predecessor's final state.
PREDECESSOR_WAIT_S = 60.0


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
        job_id = env.get("SLURM_JOB_ID") or env.get(env_vars.LOCAL_JOB_ID)
        if missing or not job_id:
            names = ", ".join(missing or ["SLURM_JOB_ID"])
            raise UsageError(f"chain hook: ${names} not set",
                             hint="the chain hooks run inside an attempt's script only")
        attempt = env[env_vars.ATTEMPT]
        if not attempt.isdigit() or int(attempt) < 1:
            raise UsageError(f"chain hook: ${env_vars.ATTEMPT} is {attempt!r}, not a number >= 1")
        restarts = env.get("SLURM_RESTART_COUNT", "0")
        nodelist = env.get("SLURM_JOB_NODELIST")
        return cls(
            run_dir=env[env_vars.RUN_DIR], attempt=int(attempt), job_id=job_id,
            nodes=tuple(expand_hostlist(nodelist)) if nodelist else (socket.gethostname(),),
            requeue_count=int(restarts) if restarts.isdigit() else 0,
        )


def _settle_predecessors(ledger: Ledger, settings: ChainSettings, scheduler: Scheduler,
                         ctx: JobContext, state: RunState) -> RunState:
    """Complete the records of earlier attempts (they have ended: afterany), waiting up to
    PREDECESSOR_WAIT_S for the scheduler to report them final."""
    deadline = time.monotonic() + PREDECESSOR_WAIT_S
    while True:
        earlier = [a.number for a in state.attempts
                   if a.number < ctx.attempt and (a.in_flight or a.provisional)]
        if not earlier:
            return state
        state, _ = sync_with_scheduler(ledger, settings, scheduler, state, source="successor",
                                       only=earlier)
        if time.monotonic() >= deadline:
            log.warning("attempt(s) %s still not final in the scheduler; going on", earlier)
            return state
        if any(a.number in earlier and (a.in_flight or a.provisional) for a in state.attempts):
            time.sleep(2.0)  # polling the scheduler; the deadline above bounds it


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


def chain_start(ctx: JobContext, *, scheduler: Scheduler | None = None) -> int:
    """The start hook; returns 0 (launch) or SKIP_LAUNCH."""
    settings, ledger, scheduler = _open_run(ctx, scheduler)
    with ledger.locked():
        state = ledger.state()
        _attempt_in(state, ctx)
        state = _settle_predecessors(ledger, settings, scheduler, ctx, state)
        view = state.attempt(ctx.attempt)
        assert view is not None
        if view.status == "running" and ctx.requeue_count > view.requeue_count:
            ledger.record_end(ctx.attempt, outcome=Outcome.PREEMPTED, job_id=ctx.job_id,
                              reason=f"requeued by the scheduler (restart {ctx.requeue_count})",
                              source="requeue", progress=read_progress(ctx.run_dir))
        if view.status != "running" or ctx.requeue_count > view.requeue_count:
            ledger.record_start(ctx.attempt, ctx.job_id, nodes=ctx.nodes,
                                requeue_count=ctx.requeue_count,
                                progress=read_progress(ctx.run_dir))
        state = ledger.state()
        flag = settings.flag_exists()
        ahead = decide(state, settings.config, flag_exists=flag, ahead_of=ctx.attempt)
        if ahead.action == "stop":
            # The run is over (finished before we ran, out of budget, cancelled): don't launch.
            if state.run_status == "running":
                stop_run(ledger, scheduler, ahead)
            outcome = Outcome.FINISHED if flag else Outcome.CANCELLED
            ledger.record_end(ctx.attempt, outcome=outcome, job_id=ctx.job_id, source="job",
                              reason=f"not launched: {ahead.reason}", exit_code=0)
            print(f"ftslurm: attempt {ctx.attempt} not launched: {ahead.reason}", flush=True)
            return SKIP_LAUNCH
        if ahead.action == "submit" and settings.mode == "self":
            try:
                job = submit_attempt(ledger, settings, scheduler, ahead, after=ctx.job_id)
                print(f"ftslurm: attempt {ahead.attempt} pre-scheduled as job {job} "
                      f"({ahead.reason})", flush=True)
            except Exception as error:  # the training matters more; chain-end retries
                print(f"ftslurm: could not pre-schedule the next attempt: {error}", flush=True)
    print(f"ftslurm: attempt {ctx.attempt} (job {ctx.job_id}) starts", flush=True)
    return 0


def chain_end(ctx: JobContext, status: int, *, warned: bool = False,
              scheduler: Scheduler | None = None) -> int:
    """The end hook: record the outcome and continue or stop the chain. Returns 0."""
    settings, ledger, scheduler = _open_run(ctx, scheduler)
    with ledger.locked():
        view = _attempt_in(ledger.state(), ctx)
        status = launch_status(ctx.run_dir, ctx.attempt, status)
        result = classify_exit(settings, status, warned=warned)
        record_outcome(ledger, settings, view, result, exit_code=status, source="job")
        state = ledger.state()
        print(f"ftslurm: attempt {ctx.attempt} ended: {result.outcome.value} ({result.reason})",
              flush=True)
        if result.provisional or settings.mode != "self":
            return 0
        decision = decide(state, settings.config, flag_exists=settings.flag_exists())
        if decision.action == "stop":
            stop_run(ledger, scheduler, decision)
            print(f"ftslurm: the run is {decision.run_status}: {decision.reason}", flush=True)
        elif decision.action == "submit":  # no successor was pre-scheduled: submit it now
            job = submit_attempt(ledger, settings, scheduler, decision, after=ctx.job_id)
            print(f"ftslurm: attempt {decision.attempt} submitted as job {job}", flush=True)
        else:
            _exclude_on_successors(state, scheduler, exclusions(state, settings.config))
    return 0


def _exclude_on_successors(state: RunState, scheduler: Scheduler, nodes: Sequence[str]) -> None:
    """Keep blamed nodes off the pre-scheduled successor (SLURM: scontrol update ExcNodeList)."""
    update = getattr(scheduler, "exclude_nodes", None)
    if not nodes or update is None:
        return
    for view in state.attempts:
        if view.status == "submitted" and view.job_id:
            try:
                update(view.job_id, list(nodes))
                print(f"ftslurm: attempt {view.number} will avoid {', '.join(nodes)}", flush=True)
            except Exception as error:
                print(f"ftslurm: could not exclude {', '.join(nodes)}: {error}", flush=True)


__all__ = ["PREDECESSOR_WAIT_S", "SKIP_LAUNCH", "JobContext", "chain_end", "chain_start"]
