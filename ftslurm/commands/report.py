"""`ftslurm report RUN_DIR [--json] [--html FILE]`: what the run cost (docs/goodput.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ftslurm import exit_codes
from ftslurm.atomic import write_atomic
from ftslurm.chain.goodput import RunCost, run_cost, summary_line
from ftslurm.chain.ledger import Ledger
from ftslurm.commands.run_dir_arg import existing_run_dir
from ftslurm.errors import UsageError
from ftslurm.timefmt import duration

__all__ = ["register", "run_report"]

_PARTS = (("queue_s", "queue wait"), ("startup_s", "start-up"), ("productive_s", "productive"),
          ("lost_s", "lost work (redone)"), ("restart_s", "in-place restarts"),
          ("stop_s", "stopping"))


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `ftslurm report`."""
    report = subparsers.add_parser(
        "report", help="what the run cost: goodput, time lost by cause, ETA",
        description="Account for the run's time: allocated node-hours, queue wait, start-up, "
        "productive training, work lost to restarts (steps redone), in-place restarts and "
        "stopping, each by cause, the goodput (productive / allocated) and the expected finish. "
        "Progress comes from the workload's `ftslurm.report_progress` calls.")
    report.add_argument("run_dir", metavar="RUN_DIR")
    report.add_argument("--json", action="store_true", help="print the accounting as JSON")
    report.add_argument("--html", type=Path, default=None, metavar="FILE",
                        help="write a self-contained HTML page (timeline, progress curve)")
    report.set_defaults(handler=run_report)


def _summary(console: Console, cost: RunCost) -> None:
    doc = cost.to_json()
    console.print(f"[bold]{cost.run_dir}[/bold]  {cost.run_state}")
    console.print(summary_line(doc), soft_wrap=True)
    totals = doc["totals"]
    parts = Table(title="where the time went", title_justify="left")
    parts.add_column("part")
    parts.add_column("time", justify="right")
    parts.add_column("share of allocated", justify="right")
    allocated = totals["allocated_s"] or 0.0
    for key, name in _PARTS:
        value = totals.get(key)
        share = "-" if value is None or not allocated or key == "queue_s" else \
            f"{value / allocated:.0%}"
        parts.add_row(name, duration(value), share)
    parts.add_row("allocated", duration(allocated),
                  f"{totals['allocated_node_s'] / 3600:.2f} node-hours")
    console.print(parts)
    if doc["lost_by_cause"]:
        causes = Table(title="not training, by cause", title_justify="left")
        causes.add_column("cause")
        causes.add_column("time", justify="right")
        for cause, seconds in doc["lost_by_cause"].items():
            causes.add_row(cause, duration(seconds))
        console.print(causes)
    attempts = Table(title="attempts", title_justify="left")
    for name in ("#", "job", "nodes", "ended by", "queue", "start-up", "productive", "lost",
                 "restarts", "stop"):
        attempts.add_column(name, justify="left" if name in ("nodes", "ended by") else "right")
    for a in cost.attempts:
        lost = duration(a.lost_s) + (f" ({a.lost_steps} steps)" if a.lost_steps else "")
        restarts = f"{len(a.restarts)}: {duration(a.restart_s)}" if a.restarts else "-"
        attempts.add_row(str(a.attempt), a.job_id or "-", ",".join(a.nodes), a.cause,
                         duration(a.queue_s), duration(a.startup_s), duration(a.productive_s),
                         lost, restarts, duration(a.stop_s))
    console.print(attempts)
    if not cost.progress_known:
        console.print("The workload reports no progress (`ftslurm.report_progress`): start-up, "
                      "productive time and lost work are unknown; queue wait and allocations "
                      "are the chain's own.", style="yellow")


def run_report(args: argparse.Namespace) -> int:
    """`ftslurm report RUN_DIR [--json] [--html FILE]`."""
    run_dir = existing_run_dir(args.run_dir)
    if args.html is not None and not args.html.parent.is_dir():
        raise UsageError(f"--html {args.html}: the directory {args.html.parent} does not exist")
    cost = run_cost(run_dir, Ledger.open(run_dir).state())
    if args.html is not None:
        from ftslurm.chain.report_page import render_page  # only when a page is asked for

        try:
            write_atomic(args.html, render_page(cost.to_json()))
        except OSError as error:
            raise UsageError(f"--html {args.html}: cannot write: {error.strerror}") from None
    if args.json:
        print(json.dumps(cost.to_json(), indent=1))
    else:
        console = Console()
        if not console.is_terminal:
            console = Console(width=140)
        _summary(console, cost)
        if args.html is not None:
            console.print(f"wrote {args.html}")
    return exit_codes.OK
