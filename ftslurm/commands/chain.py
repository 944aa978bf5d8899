"""`ftslurm submit | watch | status | cancel | logs`, and the hidden hooks the attempt's script
calls (`ftslurm chain-start`, `ftslurm chain-end --status N`). See docs/autoresume.md."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console

from ftslurm import exit_codes
from ftslurm.api import (
    CANCEL_WAIT_S,
    SYNC_TIMEOUT_S,
    cancel_all,
    cancel_run,
    log_file,
    prepare_sweep,
    start_sweep,
    submit_prepared,
    synced_state,
)
from ftslurm.chain import hooks
from ftslurm.chain.fleet import Fleet, find_runs
from ftslurm.chain.ledger import Ledger
from ftslurm.chain.loop import Watcher
from ftslurm.chain.outcome import AttemptStatus, RunStatus
from ftslurm.chain.run import check_reuse, prepare_run
from ftslurm.chain.runstate import RunState
from ftslurm.chain.settings import ChainSettings, load_settings
from ftslurm.chain.view import LiveView, PlainReporter, print_status, status_data
from ftslurm.commands.fleet import fleet_json, watch_fleet
from ftslurm.commands.run_dir_arg import existing_run_dir
from ftslurm.errors import FtslurmError, UsageError
from ftslurm.rundir import RunDir
from ftslurm.spec.sweep import SweepPlan, placeholders, plan_sweep


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
    submit.add_argument("--sweep", action="append", default=[], metavar="KEY=v1,v2",
                        help="run one chain per value (repeat for a grid); KEY is a dotted spec "
                             "key: nodes, autoresume.max_failures, env.LR; {{KEY}} in the spec "
                             "takes the point's value (docs/sweeps.md)")
    submit.add_argument("--max-parallel", type=int, default=None, metavar="N",
                        help="a sweep keeps at most N chains queued or running; the other "
                             "points wait their turn (default: the spec's sweep.max_parallel, "
                             "else all at once)")
    submit.set_defaults(handler=run_submit)

    watch = subparsers.add_parser(
        "watch", help="attach the auto-resume loop to a run (or every run under DIR) until done",
        description="Poll the run's attempts, record how they end, and submit the next one "
        "until the run ends. Given a directory of runs (a sweep), follow them all in one table "
        "with one batched scheduler query per poll, repair stalled chains and start the sweep's "
        "waiting points. Safe to run twice or to kill at any moment.")
    watch.add_argument("run_dir", metavar="RUN_DIR|DIR")
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

    cancel = subparsers.add_parser(
        "cancel", help="cancel a run, or every run under DIR (their running and queued jobs)")
    cancel.add_argument("run_dir", metavar="RUN_DIR|DIR")
    cancel.add_argument("--json", action="store_true", help="print the final status as JSON")
    cancel.add_argument("--yes", action="store_true",
                        help="cancel every run under DIR without asking")
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
    """`ftslurm submit JOB_YAML [--sweep KEY=v1,v2 ...] [--max-parallel N]`."""
    plan = plan_sweep(args.spec, args.sweep, args.max_parallel)
    if plan is not None:
        return _submit_sweep(args, plan)
    if args.max_parallel is not None:
        raise UsageError("--max-parallel is for sweeps",
                         hint="add --sweep KEY=v1,v2 (or a sweep: section) or leave it out")
    found = placeholders(args.spec)
    if found:
        raise UsageError(f"{args.spec}: {{{{{found[0]}}}}} outside a sweep",
                         hint="sweep that key (--sweep KEY=v1,v2) or write the value itself")
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
    print(f"run dir: {settings.run_dir}", flush=True)
    job, what = submit_prepared(prepared, resume=args.resume)
    print(what + (f" ({settings.backend}, {how})" if job else ""), flush=True)
    state = Ledger.open(settings.run_dir).state()
    if settings.mode == "loop" and (state.run_status is RunStatus.RUNNING or job):
        return _watch(Path(settings.run_dir), settings)
    return _exit_code(state) if state.run_status is not RunStatus.RUNNING else exit_codes.OK


def _submit_sweep(args: argparse.Namespace, plan: SweepPlan) -> int:
    """Every point validated and prepared before anything is written or submitted."""
    prepared = prepare_sweep(plan, max_failures=args.max_failures, backend=args.backend,
                             resume=args.resume, watch=args.watch)
    limit = plan.max_parallel
    settings = prepared[0].settings
    print(f"sweep: {len(plan.points)} points in {plan.sweep_dir} ("
          + (f"at most {limit} at once" if limit else "all at once") + ")", flush=True)
    for point in plan.points:
        print(f"  {point.number:>3}  {point.name}", flush=True)
    if args.dry_run:
        print(f"dry run: nothing written or submitted (backend {settings.backend})")
        return exit_codes.OK
    start_sweep(plan, prepared, resume=args.resume)
    if settings.mode == "loop":
        return watch_fleet([plan.sweep_dir])
    return exit_codes.OK


def _holds_runs(path: str) -> bool:
    """Whether `path` is a directory of runs (a sweep, say) rather than one run directory."""
    return (not RunDir(path).is_run and Path(path).is_dir()
            and bool(find_runs([path])))


def run_watch(args: argparse.Namespace) -> int:
    """`ftslurm watch RUN_DIR | DIR`."""
    if _holds_runs(args.run_dir):
        if args.once:
            poll = Fleet([args.run_dir]).poll_once()
            print(json.dumps(fleet_json(poll), indent=1))
            return exit_codes.OK
        return watch_fleet([Path(args.run_dir)])
    run_dir = existing_run_dir(args.run_dir)
    settings = load_settings(run_dir)
    if args.once:
        update = Watcher(run_dir).poll_once()
        print(json.dumps(status_data(update.state, settings, update.jobs), indent=1))
        return exit_codes.OK
    return _watch(run_dir, settings)


def run_status(args: argparse.Namespace) -> int:
    """`ftslurm status RUN_DIR [--json]`."""
    run_dir = existing_run_dir(args.run_dir)
    settings = load_settings(run_dir)
    state, jobs, scheduler = synced_state(run_dir, settings, sync=not args.no_sync,
                                     timeout=args.sync_timeout)
    data = status_data(state, settings, jobs, scheduler=scheduler)
    if args.json:
        print(json.dumps(data, indent=1))
    else:
        print_status(data)
    return exit_codes.OK


def run_cancel(args: argparse.Namespace) -> int:
    """`ftslurm cancel RUN_DIR | DIR [--yes]`: record the request, cancel every job in flight,
    wait for them. Under a DIR of runs, every run (after a confirmation unless --yes)."""
    console = Console(stderr=True)
    if _holds_runs(args.run_dir):
        run_dirs = find_runs([args.run_dir])
        going = [r for r in run_dirs if Ledger.open(r).state().run_status is RunStatus.RUNNING]
        if not args.yes:
            if not sys.stdin.isatty():
                raise UsageError(f"cancelling {len(going)} running run(s) under {args.run_dir} "
                                 "needs a confirmation", hint="pass --yes")
            answer = input(f"cancel {len(going)} running run(s) of {len(run_dirs)} under "
                           f"{args.run_dir}? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                console.print("nothing cancelled")
                return exit_codes.OK
        with console.status(f"cancelling {len(run_dirs)} run(s)..."):
            results = cancel_all([args.run_dir])
        if args.json:
            print(json.dumps(results, indent=1))
        else:
            for data in results:
                console.print(f"{data['run_dir']}: {data['state']}")
        return exit_codes.OK
    run_dir = existing_run_dir(args.run_dir)
    state = Ledger.open(run_dir).state()
    if state.run_status is not RunStatus.RUNNING and not any(a.in_flight for a in state.attempts):
        console.print(f"the run has already {state.run_status}; nothing to cancel")
        return exit_codes.OK
    with console.status("waiting for the cancelled jobs to end...") as spinner:
        data = cancel_run(run_dir, wait_s=CANCEL_WAIT_S, on_wait=spinner.update)
    left = data.pop("not_ended_yet", [])
    if left:
        console.print(f"job(s) {', '.join(j or '?' for j in left)} not ended yet; "
                      f"`ftslurm status {run_dir}` completes their records later")
    print(json.dumps(data, indent=1)) if args.json else print_status(data)
    return exit_codes.OK


def run_logs(args: argparse.Namespace) -> int:
    """`ftslurm logs RUN_DIR [--attempt N] [-f]`."""
    run_dir = existing_run_dir(args.run_dir)
    settings = load_settings(run_dir)
    ledger = Ledger.open(run_dir)
    number, path = log_file(run_dir, settings, ledger.state(), args.attempt)
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
