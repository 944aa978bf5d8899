"""`ftslurm submit | watch | status | cancel | logs`, and the hidden hooks the attempt's script
calls (`ftslurm chain-start`, `ftslurm chain-end --status N`). See docs/autoresume.md."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from ftslurm import exit_codes
from ftslurm.backends.base import JobState
from ftslurm.chain import hooks
from ftslurm.chain.actions import (
    apply_job_states,
    make_scheduler,
    query_scheduler,
    stop_run,
    submit_attempt,
    sync_with_scheduler,
    withdraw_leftovers,
)
from ftslurm.chain.ledger import Ledger, LedgerLockError
from ftslurm.chain.loop import Watcher
from ftslurm.chain.outcome import Action, AttemptStatus, RunStatus
from ftslurm.chain.policy import decide
from ftslurm.chain.run import check_reuse, prepare_run, write_run
from ftslurm.chain.runstate import RunState
from ftslurm.chain.settings import ChainSettings, load_settings
from ftslurm.chain.view import (
    LiveView,
    PlainReporter,
    SchedulerView,
    print_status,
    status_data,
)
from ftslurm.commands.run_dir_arg import existing_run_dir
from ftslurm.errors import FtslurmError, UsageError
from ftslurm.rundir import RunDir

#: How long `ftslurm cancel` waits for cancelled jobs to be reported ended.
CANCEL_WAIT_S = 180.0
#: How long `ftslurm status` waits for the scheduler before answering from the run directory.
SYNC_TIMEOUT_S = 1.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the chain subcommands."""
    submit = subparsers.add_parser(
        "submit", help="start a run: submit its first attempt and keep it going until done",
        description="Create the run directory of JOB_YAML and submit the first attempt. With "
        "SLURM each attempt pre-schedules the next one (self-chaining); with --watch, or with "
        "the local backend (used when sbatch is not on PATH), this command stays in the "
        "foreground and runs the auto-resume loop until the run ends.")
    submit.add_argument("spec", metavar="JOB_YAML", help="the job spec, e.g. job.yaml")
    submit.add_argument("--max-failures", type=int, default=None, metavar="N",
                        help="stop after N consecutive failed attempts (default: the spec's "
                             "autoresume.max_failures, 3)")
    submit.add_argument("--watch", action="store_true",
                        help="run the auto-resume loop here instead of self-chaining jobs")
    submit.add_argument("--backend", choices=("auto", "slurm", "local"), default="auto",
                        help="slurm, or local (this machine); auto: slurm when sbatch is on PATH")
    submit.add_argument("--dry-run", action="store_true",
                        help="check everything and show what would be done; write nothing")
    submit.add_argument("--resume", action="store_true",
                        help="reuse the run dir even if the run ended or its job spec changed")
    submit.set_defaults(handler=run_submit)

    watch = subparsers.add_parser(
        "watch", help="attach the auto-resume loop to a run until it ends",
        description="Poll the run's attempts, record how they end, and submit the next one "
        "until the run ends. Safe to run twice or to kill at any moment.")
    watch.add_argument("run_dir", metavar="RUN_DIR")
    watch.add_argument("--once", action="store_true", help="poll once and exit")
    watch.set_defaults(handler=run_watch)

    status = subparsers.add_parser("status", help="show a run's attempts and state",
                                   description="One table: every attempt and the run's state.")
    status.add_argument("run_dir", metavar="RUN_DIR")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.add_argument("--no-sync", action="store_true",
                        help="show the ledger only; do not ask the scheduler")
    status.add_argument("--sync-timeout", type=float, default=SYNC_TIMEOUT_S, metavar="S",
                        help="wait at most S seconds for the scheduler, then show the run "
                             "directory's view and say it is stale (default: %(default)s)")
    status.set_defaults(handler=run_status)

    cancel = subparsers.add_parser("cancel", help="cancel a run (its running and queued jobs)")
    cancel.add_argument("run_dir", metavar="RUN_DIR")
    cancel.add_argument("--json", action="store_true", help="print the final status as JSON")
    cancel.set_defaults(handler=run_cancel)

    logs = subparsers.add_parser("logs", help="print an attempt's output")
    logs.add_argument("run_dir", metavar="RUN_DIR")
    logs.add_argument("--attempt", type=int, default=None, metavar="N",
                      help="the attempt (default: the latest that has output)")
    logs.add_argument("-f", "--follow", action="store_true",
                      help="keep printing new output until the attempt ends")
    logs.set_defaults(handler=run_logs)

    start = subparsers.add_parser("chain-start")  # no help: hidden, for the script only
    start.set_defaults(handler=lambda args: hooks.chain_start(hooks.JobContext.from_env()))
    adopt = subparsers.add_parser("chain-adopt")  # hidden: a job submitted by hand
    adopt.set_defaults(handler=lambda args: hooks.adopt_job())
    keeper = subparsers.add_parser("chain-keep-queue")
    keeper.set_defaults(handler=lambda args: hooks.keep_queue(hooks.JobContext.from_env()))
    end = subparsers.add_parser("chain-end")
    end.add_argument("--status", type=int, required=True)
    end.add_argument("--warned", type=int, default=0)
    end.set_defaults(handler=lambda args: hooks.chain_end(
        hooks.JobContext.from_env(), args.status, warned=bool(args.warned)))


def _exit_code(state: RunState) -> int:
    return exit_codes.OK if state.run_status is RunStatus.FINISHED else exit_codes.FAILED


def _watch(run_dir: Path, settings: ChainSettings) -> int:
    """Run the loop with a live view on a terminal, plain lines otherwise."""
    console = Console()
    if console.is_terminal:
        with LiveView(settings, console) as view:
            state = Watcher(run_dir, on_update=view).run()
    else:
        state = Watcher(run_dir, on_update=PlainReporter(settings, sys.stdout)).run()
    print(f"run {state.run_status}: {state.end_reason}", flush=True)
    return _exit_code(state)


def run_submit(args: argparse.Namespace) -> int:
    """`ftslurm submit JOB_YAML`."""
    prepared = prepare_run(args.spec, max_failures=args.max_failures, backend=args.backend,
                           watch=args.watch)
    check_reuse(prepared, resume=args.resume)
    settings = prepared.settings
    how = "self-chaining" if settings.mode == "self" else "watch loop in the foreground"
    if args.dry_run:
        print(f"dry run: nothing written or submitted\nrun dir: {settings.run_dir}\n"
              f"backend: {settings.backend} ({how})\nscript:  {settings.script}\n"
              f"limits:  max_failures {settings.config.max_failures}, max_attempts "
              f"{settings.config.max_attempts}; finished when {settings.flag_file} exists")
        return exit_codes.OK
    ledger = write_run(prepared, resume=args.resume)
    scheduler = make_scheduler(settings, since=time.time() - 3600)
    state = ledger.state()
    decision = decide(state, settings.config, flag_exists=settings.flag_exists())
    print(f"run dir: {settings.run_dir}", flush=True)
    if decision.action is Action.STOP:
        state = stop_run(ledger, scheduler, decision)
        print(f"nothing submitted: the run is {state.run_status} ({decision.reason})")
        return _exit_code(state)
    if decision.action is Action.SUBMIT and decision.attempt is not None:
        job = submit_attempt(ledger, settings, scheduler, decision)
        print(f"attempt {decision.attempt}: job {job} ({settings.backend}, {how})", flush=True)
        if settings.mode == "self" and job is not None:
            # One attempt queued behind the first from the start: a first job killed before its
            # chain-start ran still leaves the run going.
            hooks.ensure_queue(settings, ledger, scheduler, behind=decision.attempt, job_id=job,
                               depth=1)
    else:
        print(f"nothing submitted: {decision.reason}", flush=True)
    if settings.mode == "loop":
        return _watch(Path(settings.run_dir), settings)
    return exit_codes.OK


def run_watch(args: argparse.Namespace) -> int:
    """`ftslurm watch RUN_DIR`."""
    run_dir = existing_run_dir(args.run_dir)
    settings = load_settings(run_dir)
    if args.once:
        update = Watcher(run_dir).poll_once()
        print(json.dumps(status_data(update.state, settings, update.jobs), indent=1))
        return exit_codes.OK
    return _watch(run_dir, settings)


def _synced(run_dir: Path, settings: ChainSettings, *, sync: bool, timeout: float
            ) -> tuple[RunState, dict[str, JobState], SchedulerView]:
    """The run's state, brought up to date from the scheduler when it answers within `timeout`
    seconds; otherwise the run directory's view, marked stale. Never blocks longer: the query
    runs in a daemon thread that is left behind when the scheduler does not answer."""
    ledger = Ledger.open(run_dir)
    state = ledger.state()
    if not sync:
        return state, {}, SchedulerView(asked=False)
    if not any(a.in_flight or a.provisional for a in state.attempts):
        return state, {}, SchedulerView()
    scheduler = make_scheduler(settings, since=state.created_at - 3600)
    answer: dict[str, Any] = {}

    def query() -> None:
        try:
            answer["jobs"] = query_scheduler(scheduler, state)
        except FtslurmError as error:
            answer["error"] = error

    worker = threading.Thread(target=query, daemon=True, name="status-sync")
    worker.start()
    worker.join(timeout)
    if "jobs" not in answer:
        error = answer.get("error")
        why = (f"no answer within {timeout:g} s" if error is None
               else str(getattr(error, "message", error)))
        return state, {}, SchedulerView(stale=True, error=why)
    jobs = answer["jobs"]
    try:
        state = apply_job_states(ledger, settings, jobs, source="status")
    except LedgerLockError as error:  # a teammate without write access still sees the jobs
        return state, jobs, SchedulerView(error=f"not recorded: {error.message}")
    return state, jobs, SchedulerView()


def run_status(args: argparse.Namespace) -> int:
    """`ftslurm status RUN_DIR [--json]`."""
    run_dir = existing_run_dir(args.run_dir)
    settings = load_settings(run_dir)
    state, jobs, scheduler = _synced(run_dir, settings, sync=not args.no_sync,
                                     timeout=args.sync_timeout)
    data = status_data(state, settings, jobs, scheduler=scheduler)
    if args.json:
        print(json.dumps(data, indent=1))
    else:
        print_status(data)
    return exit_codes.OK


def run_cancel(args: argparse.Namespace) -> int:
    """`ftslurm cancel RUN_DIR`: record the request, cancel every job in flight, wait for them.
    The request is recorded first, so a job that starts meanwhile skips its launch; no lock is
    held while the scheduler is called."""
    run_dir = existing_run_dir(args.run_dir)
    settings = load_settings(run_dir)
    ledger = Ledger.open(run_dir)
    scheduler = make_scheduler(settings, since=ledger.state().created_at - 3600)
    console = Console(stderr=True)
    state = ledger.state()
    if state.run_status is not RunStatus.RUNNING and not any(a.in_flight for a in state.attempts):
        console.print(f"the run has already {state.run_status}; nothing to cancel")
        return exit_codes.OK
    if state.run_status is RunStatus.RUNNING:
        state = ledger.record_cancel("cancelled by `ftslurm cancel`")
    for view in state.attempts:
        if view.status is AttemptStatus.RUNNING and view.job_id:
            scheduler.cancel(view.job_id)
    stop_run(ledger, scheduler, decide(state, settings.config))
    deadline = time.monotonic() + CANCEL_WAIT_S
    with console.status("waiting for the cancelled jobs to end...") as spinner:
        while True:
            state, _ = sync_with_scheduler(ledger, settings, scheduler, ledger.state(),
                                           source="cancel")
            if state.never_started:
                # a submission in flight ended (its submitter recorded a job, or died)
                state = withdraw_leftovers(ledger, scheduler, "cancelled by `ftslurm cancel`")
            left = [a for a in state.attempts if a.in_flight or a.provisional]
            if not left or time.monotonic() > deadline:
                break
            spinner.update(f"waiting for job(s) {', '.join(a.job_id or '?' for a in left)}")
            time.sleep(1.0)  # polling the scheduler, bounded by the deadline
    if left:
        console.print(f"job(s) {', '.join(a.job_id or '?' for a in left)} not ended yet; "
                      f"`ftslurm status {run_dir}` completes their records later")
    data = status_data(state, settings)
    print(json.dumps(data, indent=1)) if args.json else print_status(data)
    return exit_codes.OK


def _log_file(run_dir: Path, settings: ChainSettings, state: RunState, attempt: int | None
              ) -> tuple[int, Path]:
    views = [a for a in state.attempts if a.job_id and (attempt is None or a.number == attempt)]
    if not views:
        raise UsageError(f"{run_dir}: no attempt {attempt} with a job" if attempt
                         else f"{run_dir}: no attempt has been submitted yet")
    view = views[-1]
    assert view.job_id is not None  # views with a job only
    if settings.backend == "local":
        return view.number, RunDir(run_dir).attempt_log(view.number)
    return view.number, RunDir(run_dir).job_log(view.job_id)


def run_logs(args: argparse.Namespace) -> int:
    """`ftslurm logs RUN_DIR [--attempt N] [-f]`."""
    run_dir = existing_run_dir(args.run_dir)
    settings = load_settings(run_dir)
    ledger = Ledger.open(run_dir)
    number, path = _log_file(run_dir, settings, ledger.state(), args.attempt)
    offset = 0
    while True:
        try:
            with open(path, "rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
        except FileNotFoundError:
            chunk = b""
            if not args.follow:
                raise FtslurmError(f"attempt {number} has no output yet ({path})") from None
        if chunk:
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
            offset += len(chunk)
        view = ledger.state().attempt(number)
        ended = view is not None and view.status is AttemptStatus.ENDED
        if not args.follow or (ended and not chunk):
            return exit_codes.OK
        time.sleep(0.5)  # following a file: poll for new output


__all__ = [
    "CANCEL_WAIT_S",
    "SYNC_TIMEOUT_S",
    "register",
    "run_cancel",
    "run_logs",
    "run_status",
    "run_submit",
    "run_watch",
]
