"""`ftslurm ls [DIR ...] [--json]`: every run under some directories, a line each; and the live
table of `ftslurm watch DIR` (a whole sweep followed with one scheduler query per poll)."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ftslurm import exit_codes
from ftslurm.chain.fleet import Fleet, FleetPoll, RunRow, find_runs, rows
from ftslurm.chain.loop import Backoff
from ftslurm.timefmt import clock

_STATE_STYLE = {"running": "bold cyan", "finished": "bold green", "failed": "bold red",
                "cancelled": "bold yellow", "waiting": "dim", "broken": "bold red"}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `ftslurm ls`."""
    ls = subparsers.add_parser(
        "ls", help="list every run under some directories, one line each",
        description="Every run at or under DIR (default: the current directory): state, "
        "attempts, failures left, the last attempt's cause, goodput, ETA and whether it is "
        "stalled. Reads the run directories only; asks the scheduler nothing.")
    ls.add_argument("dirs", nargs="*", metavar="DIR", default=["."])
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.set_defaults(handler=run_ls)


def _relative(path: str, bases: Sequence[Path]) -> str:
    for base in bases:
        try:
            return str(Path(path).relative_to(base)) or "."
        except ValueError:
            continue
    return path


def _goodput_text(row: RunRow) -> str:
    return "-" if row.goodput is None else f"{row.goodput:.0%}"


def _progress_text(row: RunRow) -> str:
    if row.last_step is None:
        return "-"
    return f"{row.last_step}/{row.total_steps}" if row.total_steps else str(row.last_step)


def fleet_table(found: Sequence[RunRow], bases: Sequence[Path], *, title: str | None = None
                ) -> Table:
    """The rich table of `ls` and of `watch DIR`."""
    table = Table(title=title, title_justify="left", expand=False)
    names = [_relative(row.run_dir, bases) for row in found]
    # the run's name is what people look for: never squeezed (up to 40 columns); the cause
    # wraps instead
    table.add_column("run", no_wrap=True, min_width=min(40, max(map(len, names), default=3)))
    table.add_column("state", no_wrap=True)
    for name in ("attempts", "failures left", "step", "goodput", "ETA"):
        table.add_column(name, justify="right")
    table.add_column("last cause", ratio=1)
    for row in found:
        state = Text(row.state, style=_STATE_STYLE.get(row.state, ""))
        if row.stalled:
            state = Text(f"{row.state} (stalled)", style="bold red")
        elif row.job_status == "submitted" and row.state == "running":
            state = Text("queued", style="cyan")
        # a failed or cancelled run without a failed attempt says why it ended
        cause = row.error or row.last_cause or (
            row.reason if row.state in ("failed", "cancelled") else "")
        table.add_row(names[len(table.rows)], state, str(row.attempts),
                      "-" if row.failures_left is None else str(row.failures_left),
                      _progress_text(row), _goodput_text(row),
                      clock(row.eta) if row.eta else "-", cause or "")
    return table


def _totals(found: Sequence[RunRow]) -> str:
    counts: dict[str, int] = {}
    for row in found:
        key = "stalled" if row.stalled else row.state
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{count} {state}" for state, count in sorted(counts.items()))


def run_ls(args: argparse.Namespace) -> int:
    """`ftslurm ls [DIR ...] [--json]`."""
    run_dirs = find_runs(args.dirs)
    found = rows(run_dirs)
    if args.json:
        print(json.dumps({"runs": [row.to_json() for row in found]}, indent=1))
        return exit_codes.OK
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    if not found:
        console.print(f"no run under {', '.join(args.dirs)}")
        return exit_codes.OK
    bases = [Path(d).resolve() for d in args.dirs]
    console.print(fleet_table(found, bases))
    console.print(f"{len(found)} runs: {_totals(found)}")
    return exit_codes.OK


def fleet_json(poll: FleetPoll) -> dict[str, Any]:
    """What `ftslurm watch --once DIR` prints."""
    return {"runs": [row.to_json() for row in poll.rows], "queries": poll.queries,
            "scheduler_error": poll.scheduler_error, "started_points": poll.started_points}


def watch_fleet(dirs: Sequence[Path], *, backoff: Backoff | None = None) -> int:
    """Follow every run under `dirs` until all have ended: one batched scheduler query per
    poll, stalled chains repaired, the sweeps' waiting points started in turn."""
    fleet = Fleet(dirs)
    bases = [Path(d).resolve() for d in dirs]
    backoff = backoff or Backoff(5.0, 1.5, 60.0)
    interval = backoff.initial
    console = Console()
    last: tuple[object, ...] | None = None

    def title(poll: FleetPoll) -> str:
        error = f"; scheduler: {poll.scheduler_error}" if poll.scheduler_error else ""
        return (f"{len(poll.rows)} runs under {', '.join(map(str, dirs))}: "
                f"{_totals(poll.rows)} ({time.strftime('%H:%M:%S')}{error})")

    live = Live(console=console, auto_refresh=False) if console.is_terminal else None
    if live is not None:
        live.start()
    try:
        while True:
            poll = fleet.poll_once()
            signature = tuple((r.run_dir, r.state, r.attempts, r.job_status, bool(r.stalled))
                              for r in poll.rows)
            changed = signature != last
            if live is not None:
                live.update(fleet_table(poll.rows, bases, title=title(poll)), refresh=True)
            elif changed:
                print(title(poll), flush=True)
                for row in poll.rows:
                    print(f"  {_relative(row.run_dir, bases)}: {row.state}"
                          + (" (stalled)" if row.stalled else "")
                          + f", {row.attempts} attempt(s)"
                          + (f", last cause: {row.last_cause}" if row.last_cause else ""),
                          flush=True)
            last = signature
            if poll.done:
                break
            interval = backoff.next(interval, changed)
            time.sleep(interval)  # the poll interval (with backoff), not a synchronization
    finally:
        if live is not None:
            live.stop()
    failed = [row for row in poll.rows if row.state != "finished"]
    print(f"all {len(poll.rows)} runs ended: {_totals(poll.rows)}", flush=True)
    return exit_codes.FAILED if failed else exit_codes.OK


__all__ = ["fleet_json", "fleet_table", "register", "run_ls", "watch_fleet"]
