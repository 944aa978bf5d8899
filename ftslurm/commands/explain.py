"""`ftslurm explain RUN_DIR [--attempt N] [--json]`: how an attempt ended, with its evidence.

Reads the attempt's incident record (`chain/incident.py`, written as the attempt ends), or builds
one from the run directory's files when there is none (nothing is written). docs/explain.md.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.text import Text

from ftslurm import exit_codes
from ftslurm.api import pick_attempt
from ftslurm.chain.incident import (
    NODE_FAIL_STATES,
    EvidenceKind,
    RankEndCause,
    build_incident,
    read_incident,
)
from ftslurm.chain.ledger import Ledger
from ftslurm.chain.outcome import AttemptStatus
from ftslurm.chain.runstate import AttemptView
from ftslurm.chain.tracebacks import is_connection_error
from ftslurm.commands.run_dir_arg import existing_run_dir

#: Lines of the hung rank's stack printed (the whole stacks are in the record).
STACK_LINES = 30


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `ftslurm explain`."""
    explain = subparsers.add_parser(
        "explain", help="explain how an attempt ended: culprit rank, error, evidence",
        description="Tell how an attempt ended: the rank that failed first and its error, the "
        "ranks that failed because of it, a hang with the hung rank's stack, evidence against a "
        "node, and what the chain decided. Reads the attempt's incident record, or builds one "
        "from the run directory when there is none.")
    explain.add_argument("run_dir", metavar="RUN_DIR")
    explain.add_argument("--attempt", type=int, default=None, metavar="N",
                         help="the attempt (default: the last one that ended)")
    explain.add_argument("--json", action="store_true", help="print the incident record as JSON")
    explain.set_defaults(handler=run_explain)


def _clock(at: Any) -> str:
    if not isinstance(at, int | float):
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def _who(entry: Mapping[str, Any]) -> str:
    rank, node = entry.get("rank"), entry.get("node")
    if rank is None:
        return f"node {node}" if node else "the job"
    return f"rank {rank} @ {node}" if node else f"rank {rank}"


def _how(entry: Mapping[str, Any]) -> str:
    """How a rank ended, without its error: "exit 1", "SIGKILL", "hung, stopped"."""
    if entry.get("cause") == RankEndCause.HANG_STOPPED:
        return "hung, stopped by its launcher"
    if entry.get("signal"):
        return str(entry["signal"])
    code = entry.get("exit_code")
    return f"exit {code}" if code is not None else "ended"


_BASIS = {
    "rank_ends": "the ranks' ends as their launchers recorded them",
    "events": "the launchers' crash and hang events (no per-rank ends recorded)",
    "scheduler": "the scheduler's record and the job's log (no launcher evidence)",
}


def story(record: Mapping[str, Any], *, view: AttemptView | None = None,
          saved: bool = True) -> list[Text]:
    """The record as lines for people."""
    lines: list[Text] = []
    head = Text(f"attempt {record.get('attempt')}", style="bold")
    head.append(f" (job {record.get('job_id') or '-'})")
    outcome = record.get("outcome")
    if outcome:
        head.append(f": {outcome}", style="bold red" if outcome in ("failed", "fatal") else "")
        if record.get("reason"):
            head.append(f", {record['reason']}")
    elif view is not None and view.status is not AttemptStatus.ENDED:
        head.append(f": not ended yet ({view.status}); what its files say so far",
                    style="yellow")
    lines.append(head)
    scheduler = record.get("scheduler")
    if scheduler:
        what = f"scheduler: {scheduler.get('state')}"
        if scheduler.get("exit_code") is not None:
            what += f", exit code {scheduler['exit_code']}"
        if scheduler.get("signal"):
            what += f", {scheduler['signal']}"
        if scheduler.get("nodes"):
            what += f" on {','.join(scheduler['nodes'])}"
        lines.append(Text(what, style="dim"))

    culprit = record.get("culprit")
    if culprit:
        line = Text("culprit: ", style="bold")
        lost = [str(e.get("node")) for e in record.get("node_evidence") or []
                if e.get("kind") == EvidenceKind.NODE_FAIL]
        who = _who(culprit)
        if culprit.get("rank") is None and lost:
            who = f"the lost node{'s' if len(lost) > 1 else ''} {', '.join(lost)}"
        elif culprit.get("rank") is None and (scheduler or {}).get("state") in NODE_FAIL_STATES:
            who = "a lost node (the scheduler named none)"
        line.append(who, style="bold red")
        if culprit.get("local_rank") is not None:
            line.append(f" (local rank {culprit['local_rank']})")
        line.append(f", {_how(culprit)}")
        if culprit.get("time") is not None:
            line.append(f", at {_clock(culprit['time'])}")
        lines.append(line)
        basis = _BASIS.get(str(culprit.get("basis")), str(culprit.get("basis")))
        lines.append(Text(f"  found from {basis}", style="dim"))
        error = culprit.get("error")
        if error:
            lines.append(Text(f"  {error['line']}", style="bold"))
        if culprit.get("tail"):
            lines.append(Text(f"  last lines of {culprit.get('log') or 'its output'}:",
                              style="dim"))
            lines += [Text(f"    | {text}") for text in culprit["tail"]]
    else:
        cause = "nothing failed" if record.get("outcome") else "no failure found in the files"
        lines.append(Text(f"culprit: none ({cause})"))

    victims = record.get("victims") or []
    if victims:
        names = ", ".join(_who(v) for v in victims)
        connection = sum(1 for v in victims if is_connection_error(v.get("error")))
        summary = Text(f"victims: {len(victims)} rank(s) failed after it: {names}")
        times = [v["time"] for v in victims if isinstance(v.get("time"), int | float)]
        start = (culprit or {}).get("time")
        if times and isinstance(start, int | float):
            summary.append(f" (within {max(times) - start:.1f} s)")
        if connection:
            summary.append(f"; {connection} with connection/collective errors")
        first = next((v["error"]["line"] for v in victims if v.get("error")), None)
        if first:
            summary.append(f" (e.g. {first})", style="dim")
        lines.append(summary)
    stopped = [e for e in record.get("ranks") or []
               if isinstance(e, dict) and e.get("cause") == RankEndCause.STOPPED_BY_LAUNCHER]
    if stopped:
        lines.append(Text(f"stopped by their launchers: {', '.join(_who(e) for e in stopped)}",
                          style="dim"))

    hang = record.get("hang")
    if hang:
        what = f"hang: {_who(hang)} stopped heartbeating"
        if hang.get("since") is not None:
            what += f" after {_clock(hang['since'])}"
        if hang.get("timeout") is not None:
            source = f", {hang['timeout_source']}" if hang.get("timeout_source") else ""
            what += f" (timeout {hang['timeout']:g} s{source})"
        lines.append(Text(what, style="bold yellow"))
        stacks = hang.get("stacks") or {}
        own = stacks.get(str(hang.get("rank")))
        if own:
            stack = str(own).rstrip().splitlines()
            lines.append(Text(f"  stack of rank {hang.get('rank')}:", style="dim"))
            lines += [Text(f"    | {text}") for text in stack[-STACK_LINES:]]
        else:
            lines.append(Text("  no stack of the hung rank was recorded", style="dim"))
        others = sorted((r for r in stacks if r != str(hang.get("rank"))), key=_rank_order)
        if others:
            lines.append(Text(f"  the stacks of rank(s) {', '.join(others)} are in the record "
                              "(`--json`)", style="dim"))

    for evidence in record.get("node_evidence") or []:
        kind = evidence.get("kind")
        style = "magenta" if kind == EvidenceKind.NODE_FAIL else "yellow"
        lines.append(Text(f"node {evidence.get('node')}: {kind}: {evidence.get('detail')}",
                          style=style))

    decision = record.get("decision")
    if decision:
        what = f"decision: {decision.get('action')}: {decision.get('reason')}"
        if decision.get("counted") is not None:
            what += "; counted as a failure" if decision["counted"] else "; not a failure"
        if decision.get("excluded_nodes"):
            what += f"; excluding {', '.join(decision['excluded_nodes'])}"
        lines.append(Text(what))
    elif view is not None and view.outcome is not None:
        counted = "counted as a failure" if view.counted_failure else "not counted as a failure"
        lines.append(Text(f"ledger: {counted}"))
    if record.get("signature"):
        lines.append(Text(f"signature: {record['signature']}", style="dim"))
    if not saved:
        lines.append(Text("(no incident record was written for this attempt: built now from "
                          "the run directory)", style="dim"))
    return lines


def _rank_order(text: str) -> tuple[int, str]:
    return (int(text), "") if text.isdigit() else (1 << 30, text)


def run_explain(args: argparse.Namespace) -> int:
    """`ftslurm explain RUN_DIR [--attempt N] [--json]`."""
    run_dir = existing_run_dir(args.run_dir)
    state = Ledger.open(run_dir).state()
    view = pick_attempt(run_dir, state, args.attempt)
    record = read_incident(run_dir, view.number)
    saved = record is not None
    if record is None:
        previous = read_incident(run_dir, view.number - 1) if view.number > 1 else None
        record = build_incident(run_dir, view.number, view=view, previous=previous,
                                written_by="explain")
    if args.json:
        print(json.dumps(record, indent=1))
        return exit_codes.OK
    console = Console()
    if not console.is_terminal:  # a file or a pipe: don't squeeze into 80 columns
        console = Console(width=140)
    for line in story(record, view=view, saved=saved):
        console.print(line, soft_wrap=True)
    return exit_codes.OK


__all__ = ["STACK_LINES", "register", "run_explain", "story"]
