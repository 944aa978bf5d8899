"""How one attempt ended, with its evidence: the incident record (`incidents/attempt-<N>.json`).

`build_incident` assembles it from what exists on disk, so it works even for an attempt that was
killed before it could say anything: the launchers' status files (one per node: every rank's end,
crash and hang events, the hung ranks' stacks), each rank's output files, the job's log, plus
what the caller knows (the scheduler's record, the ledger's view, the chain's decision).
docs/explain.md describes the record, the culprit rule and the fallbacks; `ftslurm explain`
prints it and `ftslurm status` shows its one-line cause.

    {"format": "ftslurm.incident", "version": 1, "attempt": 3, "job_id": "1234",
     "written_at": 1700000000.0, "written_by": "chain-end|watch|explain",
     "outcome": "failed", "reason": "exit code 1",
     "scheduler": {"state", "reason", "exit_code", "signal", "nodes"} | null,
     "ranks": [the rank ends of every node's last round, by time],
     "culprit": {"basis": "rank_ends|events|scheduler", "rank", "node", "local_rank", "time",
                 "exit_code", "signal", "restart_count", "cause",
                 "error": {"type", "message", "line"} | null, "tail": [...], "log"} | null,
     "victims": [{"rank", "node", "time", "exit_code", "signal", "cause", "error"}],
     "hang": {"rank", "node", "since", "timeout", "timeout_source", "phase", "stacks"} | null,
     "node_evidence": [{"node", "kind": "node_fail|external_kill|hang_repeat", "detail"}],
     "signature": "ValueError: boom" | "exit 1" | "SIGKILL" | "hang" | null,
     "decision": {"action", "reason", "run_status", "counted", "excluded_nodes"} | null}
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftslurm.atomic import write_json_atomic
from ftslurm.chain import tracebacks
from ftslurm.chain.outcome import Outcome
from ftslurm.fault_tolerance.status import EventKind, LauncherState, RankEndCause
from ftslurm.rundir import RunDir
from ftslurm.signals import signal_text
from ftslurm.vocabulary import Vocabulary

if TYPE_CHECKING:
    from ftslurm.backends.base import JobState
    from ftslurm.chain.policy import Decision
    from ftslurm.chain.runstate import AttemptView

FORMAT = "ftslurm.incident"
VERSION = 1
#: Who may write a record: the attempt's own end hook, the watch loop, or `ftslurm explain`
#: building one on the fly (never saved).
WRITERS = ("chain-end", "watch", "explain")
#: Lines of the culprit's output kept in the record.
TAIL_LINES = 20
#: Bytes read from the end of an output file (tracebacks and tails are at the end).
READ_LIMIT = 256 * 1024
#: Victims whose errors are read (the first by time): with thousands of ranks, reading every
#: rank's output would make the end hook slow; the later victims' `error` is null.
MAX_VICTIM_ERRORS = 64
#: Failures this close (seconds) to the first one are a tie: the launchers notice a rank's end
#: by polling, and the nodes' clocks differ, so the first end recorded is not surely the first.
TIE_WINDOW_S = 1.0
#: Signals that end a rank from outside its launcher's control: the kernel's OOM killer, a bad
#: node (bus error, a segfault in a driver), or somebody's kill -9.
EXTERNAL_KILL_SIGNALS = ("SIGKILL", "SIGBUS", "SIGSEGV")
#: Scheduler states that say a node was lost.
NODE_FAIL_STATES = ("NODE_FAIL", "BOOT_FAIL")
#: Outcomes in which nothing failed: ranks that died then (SIGKILL after the time-limit grace,
#: a preemption) are no culprits.
_CLEAN_OUTCOMES = frozenset({Outcome.FINISHED, Outcome.STOPPED, Outcome.PREEMPTED,
                             Outcome.TIMEOUT, Outcome.CANCELLED})
_CLEAN_STATES = frozenset({"COMPLETED", "CANCELLED", "TIMEOUT", "PREEMPTED", "DEADLINE",
                           "REQUEUED"})
_FAILED_STATES = frozenset({"FAILED", "OUT_OF_MEMORY", *NODE_FAIL_STATES})
_FAILURE_EVENTS = frozenset({EventKind.CRASH, EventKind.HANG, EventKind.DO_NOT_RETRY})
#: Launcher states of a launcher that has not written its end (it died with its node).
_UNFINISHED_LAUNCHER = frozenset({LauncherState.STARTING, LauncherState.RUNNING})


class Basis(Vocabulary):
    """What the culprit was found from, best first."""

    #: Every rank's end, as its launcher recorded it.
    RANK_ENDS = "rank_ends"
    #: The launchers' crash and hang events (launchers without rank ends).
    EVENTS = "events"
    #: The scheduler's record and the job's log only (launcher none/torchrun, a lost node).
    SCHEDULER = "scheduler"


class EvidenceKind(Vocabulary):
    """What a `node_evidence` entry says about a node."""

    NODE_FAIL = "node_fail"
    EXTERNAL_KILL = "external_kill"
    HANG_REPEAT = "hang_repeat"


# -- reading the run directory -----------------------------------------------------------------


def _load_json(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def _read_end(path: Path | None) -> str:
    """The last READ_LIMIT bytes of a text file ("" when it cannot be read)."""
    if path is None:
        return ""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - READ_LIMIT))
            data = handle.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    if size > READ_LIMIT and "\n" in text:
        text = text.split("\n", 1)[1]  # a cut first line
    return text


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _time_key(end: Mapping[str, Any]) -> tuple[float, int]:
    at = _number(end.get("time"))
    return (math.inf if at is None else at, _int(end.get("rank")) or 0)


class _Launcher:
    """One node's launcher status file."""

    def __init__(self, path: Path, doc: dict[str, Any]) -> None:
        self.path = path
        self.node = str(doc.get("node") or path.stem.split(".", 1)[-1])
        self.state = doc.get("state")
        ends = [e for e in doc.get("rank_ends") or [] if isinstance(e, dict)]
        self.events = [e for e in doc.get("events") or [] if isinstance(e, dict)]
        # The round the launcher reached: its own count, or the latest its ends and events name
        # (a round killed before any rank ended has no ends: nothing of an earlier round counts).
        rounds = [_int(doc.get("restart_count")) or 0]
        rounds += [_int(e.get("restart_count")) or 0 for e in (*ends, *self.events)]
        self.last_round = max(rounds)
        self.rank_ends = [{**e, "node": e.get("node") or self.node} for e in ends
                          if (_int(e.get("restart_count")) or 0) == self.last_round]

    def last_round_events(self, kinds: Iterable[str]) -> list[dict[str, Any]]:
        wanted = set(kinds)
        return [{**e, "node": e.get("node") or self.node} for e in self.events
                if e.get("kind") in wanted
                and (_int(e.get("restart_count")) or 0) == self.last_round]


def _launchers(run_dir: RunDir, attempt: int) -> list[_Launcher]:
    found = []
    for path in run_dir.launcher_statuses(attempt):
        doc = _load_json(path)
        if doc is not None:
            found.append(_Launcher(path, doc))
    return found


class _Outputs:
    """The rank output files of one attempt, each read once."""

    def __init__(self, run_dir: RunDir, attempt: int) -> None:
        self.run_dir = run_dir
        self.attempt = attempt
        self._texts: dict[Path, str] = {}

    def path(self, end: Mapping[str, Any], stream: str) -> Path | None:
        """The rank's `stream` file ("out" or "err"): the path its end names, else the one
        RunDir names for its rank and round."""
        named = end.get("stdout" if stream == "out" else "stderr")
        if isinstance(named, str) and named:
            path = Path(named)
            path = path if path.is_absolute() else self.run_dir.root / path
            if path.exists():
                return path
        rank = _int(end.get("rank"))
        if rank is None:
            return None
        path = self.run_dir.rank_log(self.attempt, rank, _int(end.get("restart_count")) or 0,
                                     stream)
        return path if path.exists() else None

    def text(self, path: Path | None) -> str:
        if path is None:
            return ""
        if path not in self._texts:
            self._texts[path] = _read_end(path)
        return self._texts[path]

    def error(self, end: Mapping[str, Any]) -> tracebacks.ErrorLine | None:
        """The last exception in the rank's stderr, else in its stdout."""
        for stream in ("err", "out"):
            found = tracebacks.last_error(self.text(self.path(end, stream)))
            if found is not None:
                return found
        return None

    def tail(self, end: Mapping[str, Any]) -> tuple[list[str], str | None]:
        """The last lines of the rank's stderr, else of its stdout, and the file's path."""
        for stream in ("err", "out"):
            path = self.path(end, stream)
            lines = tracebacks.tail(self.text(path), TAIL_LINES)
            if lines:
                return lines, str(path)
        return [], None


def _job_log(run_dir: RunDir, attempt: int, job_id: str | None) -> Path | None:
    """The job's own output: SLURM's `<job id>.out`, or the local backend's attempt log."""
    candidates = ([run_dir.job_log(job_id)] if job_id else []) + [run_dir.attempt_log(attempt)]
    return next((path for path in candidates if path.is_file()), None)


# -- the pieces of the record ------------------------------------------------------------------


def _signal_name(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value
    number = _int(value)
    return signal_text(number) if number else None


def _failed(end: Mapping[str, Any]) -> bool:
    """A rank end that is a failure: a hung rank stopped, or an exit with an error or a signal."""
    if end.get("cause") == RankEndCause.HANG_STOPPED:
        return True
    if end.get("cause") != RankEndCause.EXITED:
        return False
    return bool(end.get("signal")) or (_int(end.get("exit_code")) or 0) != 0


def _from_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """A crash or hang event as a rank end (launchers without rank ends). torch reports a
    rank killed by a signal as a negative exit code."""
    code = _int(event.get("exit_code"))
    hang = event.get("kind") == EventKind.HANG
    return {
        "rank": _int(event.get("rank")), "local_rank": _int(event.get("local_rank")),
        "node": event.get("node"), "restart_count": _int(event.get("restart_count")) or 0,
        "exit_code": code, "signal": signal_text(-code) if code is not None and code < 0 else None,
        "time": _number(event.get("time")), "stdout": None, "stderr": None,
        "cause": RankEndCause.HANG_STOPPED.value if hang else RankEndCause.EXITED.value,
    }


def _pick_culprit(failures: Sequence[dict[str, Any]],
                  errors: Sequence[tracebacks.ErrorLine | None],
                  stacks: Mapping[str, str] | None = None) -> int:
    """The culprit among failed rank ends (sorted by time, `errors` in the same order): among
    the failures within TIE_WINDOW_S of the first, a hung rank whose stack is not waiting in
    torch.distributed (its peers hang in the collective it never joined), else a rank whose
    error is not a connection error, else one without a traceback (killed, or exited without
    one), else the first; a hung rank waiting in a collective comes last."""
    stacks = stacks or {}

    def suspicion(index: int) -> tuple[int, int]:
        end = failures[index]
        stack = stacks.get(str(end.get("rank")))
        if end.get("cause") == RankEndCause.HANG_STOPPED and stack is not None:
            return (3 if tracebacks.waits_in_collective(stack) else -1), index
        error = errors[index]
        if error is None:
            return 1, index
        return (2 if tracebacks.is_connection_error(error) else 0), index

    window = [index for index, end in enumerate(failures) if _in_window(failures, end)]
    return min(window, key=suspicion)


def _in_window(failures: Sequence[Mapping[str, Any]], end: Mapping[str, Any]) -> bool:
    """Whether `end` ties with the first failure (within TIE_WINDOW_S of it)."""
    first = _number(failures[0].get("time"))
    at = _number(end.get("time"))
    return first is None or end is failures[0] or (at is not None and at - first <= TIE_WINDOW_S)


def _error_json(error: tracebacks.ErrorLine | None) -> dict[str, str] | None:
    return None if error is None else error.to_json()


def _culprit_entry(end: Mapping[str, Any], basis: Basis, error: tracebacks.ErrorLine | None,
                   outputs: _Outputs) -> dict[str, Any]:
    lines, log = outputs.tail(end)
    return {
        "basis": basis.value, "rank": _int(end.get("rank")), "node": end.get("node"),
        "local_rank": _int(end.get("local_rank")), "time": _number(end.get("time")),
        "exit_code": _int(end.get("exit_code")), "signal": _signal_name(end.get("signal")),
        "restart_count": _int(end.get("restart_count")), "cause": end.get("cause"),
        "error": _error_json(error), "tail": lines, "log": log,
    }


def _victim_entry(end: Mapping[str, Any], error: tracebacks.ErrorLine | None) -> dict[str, Any]:
    return {
        "rank": _int(end.get("rank")), "node": end.get("node"), "time": _number(end.get("time")),
        "exit_code": _int(end.get("exit_code")), "signal": _signal_name(end.get("signal")),
        "cause": end.get("cause"), "error": _error_json(error),
    }


def _scheduler_entry(job: JobState | None, view: AttemptView | None) -> dict[str, Any] | None:
    if job is not None:
        entry: dict[str, Any] = {
            "state": job.state, "reason": job.reason, "exit_code": job.exit_code,
            "signal": _signal_name(job.signal), "nodes": list(job.nodes)}
        if job.node_problems is not None:
            entry["node_problems"] = dict(job.node_problems)
        return entry
    if view is not None and view.scheduler_state:
        return {"state": view.scheduler_state, "reason": None, "exit_code": view.exit_code,
                "signal": _signal_name(view.signal), "nodes": list(view.nodes)}
    return None


def _ended_clean(view: AttemptView | None, scheduler: Mapping[str, Any] | None) -> bool:
    """True when the attempt is known to have ended without a failure."""
    if view is not None and view.outcome is not None:
        return view.outcome in _CLEAN_OUTCOMES
    return scheduler is not None and str(scheduler.get("state")) in _CLEAN_STATES


def _ended_failed(view: AttemptView | None, scheduler: Mapping[str, Any] | None) -> bool:
    """True when the ledger or the scheduler says the attempt failed."""
    if view is not None and view.outcome is not None:
        return view.outcome in (Outcome.FAILED, Outcome.FATAL, Outcome.NODE_FAIL)
    if scheduler is None:
        return False
    return (str(scheduler.get("state")) in _FAILED_STATES
            or bool(scheduler.get("signal")) or (scheduler.get("exit_code") or 0) != 0)


def _scheduler_culprit(scheduler: Mapping[str, Any] | None, job: JobState | None,
                       view: AttemptView | None, log: Path | None, *, node: str | None
                       ) -> dict[str, Any]:
    """The culprit when no rank's end says anything: the job as the scheduler (or the ledger)
    saw it, and the cause the job's log suggests (the first rank's error that is not a
    connection error, when ranks prefix their lines)."""
    text = _read_end(log) if log is not None else ""
    found = tracebacks.first_cause(tracebacks.find_tracebacks(text))
    exit_code = scheduler.get("exit_code") if scheduler else (view.exit_code if view else None)
    signal = scheduler.get("signal") if scheduler else _signal_name(view.signal if view else None)
    return {
        "basis": Basis.SCHEDULER.value, "rank": found.rank if found is not None else None,
        "node": node, "local_rank": None,
        "time": (job.end if job is not None else None) or (view.ended_at if view else None),
        "exit_code": exit_code, "signal": signal, "restart_count": None, "cause": None,
        "error": _error_json(found.error if found is not None else None),
        "tail": tracebacks.tail(text, TAIL_LINES), "log": str(log) if log is not None else None,
    }


def _hang_entry(launchers: Sequence[_Launcher], culprit: Mapping[str, Any] | None
                ) -> dict[str, Any] | None:
    """The hang of the last round: the culprit's, else the first; stacks of every hang event."""
    events = sorted((e for launcher in launchers
                     for e in launcher.last_round_events([EventKind.HANG])), key=_time_key)
    if not events:
        return None
    chosen = events[0]
    if culprit is not None:
        chosen = next((e for e in events if _int(e.get("rank")) == culprit.get("rank")
                       and e.get("node") == culprit.get("node")), chosen)
    stacks: dict[str, str] = {}
    for event in [chosen, *events]:
        dumped = event.get("stacks")
        for rank, text in (dumped.items() if isinstance(dumped, dict) else ()):
            stacks.setdefault(str(rank), str(text))
    since = _number(chosen.get("since"))
    return {
        "rank": _int(chosen.get("rank")), "node": chosen.get("node"),
        "since": since if since is not None else _number(chosen.get("last_heartbeat_at")),
        "timeout": _number(chosen.get("timeout")), "timeout_source": chosen.get("timeout_source"),
        "phase": chosen.get("phase"), "stacks": stacks,
    }


def _lost_nodes(launchers: Sequence[_Launcher], job_nodes: Sequence[str],
                reported: Mapping[str, str]) -> list[str]:
    """The nodes a node failure names, on evidence only: those the scheduler reports failed,
    down or drained while the job ran (`reported`); else those whose launcher never wrote its
    end (or never wrote at all) while another node's launcher did; else the job's only node.
    An empty list when nothing tells the nodes apart: all of them would be a guess (and the
    ranks of the healthy nodes, cut off from the lost one, often fail first)."""
    named = [node for node in job_nodes if node in reported]
    if named:
        return named
    if launchers:
        written = {launcher.node for launcher in launchers}
        silent = [launcher.node for launcher in launchers
                  if launcher.state in _UNFINISHED_LAUNCHER]
        silent += [node for node in job_nodes if node not in written]
        silent = list(dict.fromkeys(silent))
        if silent and len(silent) < len(set(job_nodes) | written):
            return silent
    return list(job_nodes) if len(job_nodes) == 1 else []


def _external_kills(ranks: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    by_node: dict[str, list[str]] = {}
    for end in ranks:
        signal = _signal_name(end.get("signal"))
        if end.get("cause") == RankEndCause.EXITED and signal in EXTERNAL_KILL_SIGNALS:
            what = f"rank {end.get('rank')} ({signal})"
            by_node.setdefault(str(end.get("node")), []).append(what)
    return [{"node": node, "kind": EvidenceKind.EXTERNAL_KILL.value,
             "detail": f"{', '.join(what)} killed from outside its launcher (the OOM killer, a "
                       "bad node, or a kill -9)"}
            for node, what in by_node.items()]


def _signature(culprit: Mapping[str, Any] | None, node_lost: bool) -> str | None:
    """What makes two failures "the same" for the crash-loop rule: the culprit's exception line
    (type and message as printed), else "hang", else its signal or "exit <code>". None when
    nothing failed, or when a lost node is the cause (not the workload's failure)."""
    if culprit is None or node_lost:
        return None
    if culprit.get("cause") == RankEndCause.HANG_STOPPED:
        return "hang"
    error = culprit.get("error")
    if error:
        return str(error["line"])
    if culprit.get("signal"):
        return str(culprit["signal"])
    code = culprit.get("exit_code")
    return f"exit {code}" if code not in (None, 0) else None


def decision_entry(decision: Decision | None, view: AttemptView | None
                   ) -> dict[str, Any] | None:
    """The record's `decision`: what the chain did after the attempt ended, and why."""
    if decision is None:
        return None
    counted = (view.counted_failure if view is not None and view.outcome is not None else None)
    return {
        "action": str(decision.action), "reason": decision.reason,
        "run_status": str(decision.run_status) if decision.run_status is not None else None,
        "counted": counted, "excluded_nodes": list(decision.exclude_nodes),
    }


# -- the record ----------------------------------------------------------------------------------


def build_incident(
    run_dir: str | os.PathLike[str],
    attempt: int,
    *,
    job: JobState | None = None,
    view: AttemptView | None = None,
    decision: Decision | None = None,
    previous: Mapping[str, Any] | None = None,
    written_by: str,
) -> dict[str, Any]:
    """The incident record of `attempt`, from the run directory's files and what the caller
    knows: `job` the scheduler's record, `view` the ledger's, `decision` what the chain decided
    after it, `previous` the incident of the attempt before (for `hang_repeat`). Reads only;
    never raises for a missing or unreadable file."""
    if written_by not in WRITERS:
        raise ValueError(f"written_by must be one of {', '.join(WRITERS)}, got {written_by!r}")
    paths = RunDir(run_dir)
    launchers = _launchers(paths, attempt)
    outputs = _Outputs(paths, attempt)
    scheduler = _scheduler_entry(job, view)
    job_id = (view.job_id if view is not None else None) or (job.job_id if job else None)
    job_nodes = list((scheduler or {}).get("nodes") or (view.nodes if view else ()))
    clean = _ended_clean(view, scheduler)

    ranks = sorted((e for launcher in launchers for e in launcher.rank_ends), key=_time_key)
    if any(launcher.rank_ends for launcher in launchers):
        basis, ends = Basis.RANK_ENDS, ranks
    else:
        basis = Basis.EVENTS
        ends = sorted((_from_event(e) for launcher in launchers
                       for e in launcher.last_round_events(_FAILURE_EVENTS)), key=_time_key)
    # Every crash or hang event is a failure; a rank end only when it says so.
    failures = [] if clean else [end for end in ends if basis is Basis.EVENTS or _failed(end)]

    node_lost = ((scheduler is not None and str(scheduler.get("state")) in NODE_FAIL_STATES)
                 or (view is not None and view.outcome is Outcome.NODE_FAIL))
    evidence: list[dict[str, Any]] = []
    culprit: dict[str, Any] | None = None
    victims: list[dict[str, Any]] = []
    log = _job_log(paths, attempt, job_id)
    if node_lost:
        reported = dict((scheduler or {}).get("node_problems") or {})
        lost = _lost_nodes(launchers, job_nodes, reported)
        state = (scheduler or {}).get("state") or "a node failure"
        evidence += [{"node": node, "kind": EvidenceKind.NODE_FAIL.value,
                      "detail": f"the job ended in {state}"
                                + (f"; the scheduler reports the node {reported[node]}"
                                   if node in reported else
                                   "; its launcher never recorded an end" if len(job_nodes) > 1
                                   else "")}
                     for node in lost]
        culprit = _scheduler_culprit(scheduler, job, view, log,
                                     node=lost[0] if len(lost) == 1 else None)
        victims = [_victim_entry(end, outputs.error(end) if index < MAX_VICTIM_ERRORS else None)
                   for index, end in enumerate(failures)]
    elif failures:
        errors = [outputs.error(end) if index < MAX_VICTIM_ERRORS or _in_window(failures, end)
                  else None for index, end in enumerate(failures)]
        dumped: dict[str, str] = {}
        for launcher in launchers:
            for event in launcher.last_round_events([EventKind.HANG]):
                if isinstance(event.get("stacks"), dict):
                    dumped.update({str(k): str(v) for k, v in event["stacks"].items()})
        chosen = _pick_culprit(failures, errors, dumped)
        culprit = _culprit_entry(failures[chosen], basis, errors[chosen], outputs)
        victims = [_victim_entry(end, errors[index]) for index, end in enumerate(failures)
                   if index != chosen]
        # Ranks their launcher stopped after the culprit failed are its victims too.
        first = _number(failures[chosen].get("time")) or 0.0
        victims += [_victim_entry(end, None) for end in ends
                    if end.get("cause") == RankEndCause.STOPPED_BY_LAUNCHER
                    and (_number(end.get("time")) or 0.0) >= first]
        victims.sort(key=lambda victim: _number(victim.get("time")) or 0.0)
    elif not clean and _ended_failed(view, scheduler):
        culprit = _scheduler_culprit(scheduler, job, view, log,
                                     node=job_nodes[0] if len(job_nodes) == 1 else None)
    if not clean:
        evidence += _external_kills(ranks)
    record: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "attempt": attempt, "job_id": job_id,
        "written_at": time.time(), "written_by": written_by,
        "outcome": view.outcome.value if view is not None and view.outcome else None,
        "reason": view.reason if view is not None else None,
        "scheduler": scheduler, "ranks": ranks, "culprit": culprit, "victims": victims,
        "hang": _hang_entry(launchers, culprit), "node_evidence": evidence,
        "signature": _signature(culprit, node_lost), "decision": decision_entry(decision, view),
    }
    if previous is not None:  # needs the record's ranks and hang
        record["node_evidence"] += hang_repeat_evidence(previous, record)
    return record


def write_incident(run_dir: str | os.PathLike[str], record: Mapping[str, Any]) -> Path:
    """Write `record` to `RunDir(run_dir).incident(record["attempt"])`, atomically (a reader
    sees the old record or the new one); returns the path."""
    path = RunDir(run_dir).incident(int(record["attempt"]))
    write_json_atomic(path, record, indent=1, sort_keys=False)
    return path


def read_incident(run_dir: str | os.PathLike[str], attempt: int) -> dict[str, Any] | None:
    """The incident record of `attempt`, or None when there is none (or it is unreadable, not an
    incident, or of a newer format)."""
    doc = _load_json(RunDir(run_dir).incident(attempt))
    if doc is None or doc.get("format") != FORMAT:
        return None
    version = doc.get("version")
    if not isinstance(version, int) or version > VERSION:
        return None
    return doc


def _hang_nodes(record: Mapping[str, Any] | None) -> set[str]:
    if not record:
        return set()
    # The culprit's hang only: when one rank hangs, its peers stop heartbeating too (they wait
    # in the collective it never joined), and their nodes are not to blame.
    nodes: set[str] = set()
    hang = record.get("hang")
    if isinstance(hang, dict) and hang.get("node"):
        nodes.add(str(hang["node"]))
    return nodes


def repeated_hang_nodes(previous: Mapping[str, Any] | None, current: Mapping[str, Any] | None
                        ) -> list[str]:
    """Nodes on which a rank hung in both incidents (two attempts in a row, usually): each is a
    `hang_repeat` node evidence of the current one."""
    return sorted(_hang_nodes(previous) & _hang_nodes(current))


def hang_repeat_evidence(previous: Mapping[str, Any] | None, current: Mapping[str, Any]
                         ) -> list[dict[str, Any]]:
    """The `hang_repeat` node evidence entries of `current` (`repeated_hang_nodes`)."""
    earlier = (previous or {}).get("attempt")
    return [{"node": node, "kind": EvidenceKind.HANG_REPEAT.value,
             "detail": f"ranks hung on this node in attempts {earlier} and "
                       f"{current.get('attempt')}"}
            for node in repeated_hang_nodes(previous, current)]


#: `incident_cause`'s memory: path -> ((mtime_ns, size), cause line).
_CAUSES: dict[Path, tuple[tuple[int, int], str | None]] = {}


def incident_cause(run_dir: str | os.PathLike[str], attempt: int) -> str | None:
    """`cause_line` of the attempt's written record (None without one), read again only when
    the file changed: `ftslurm watch` redraws every attempt's row at every poll."""
    path = RunDir(run_dir).incident(attempt)
    try:
        info = path.stat()
    except OSError:
        _CAUSES.pop(path, None)
        return None
    key = (info.st_mtime_ns, info.st_size)
    cached = _CAUSES.get(path)
    if cached is not None and cached[0] == key:
        return cached[1]
    cause = cause_line(read_incident(run_dir, attempt))
    _CAUSES[path] = (key, cause)
    return cause


def cause_line(record: Mapping[str, Any] | None) -> str | None:
    """The record's cause in one line, for `ftslurm status`: "rank 3 @ n2: ValueError: boom",
    "rank 1 @ n1: hung (timeout 120 s)", "node n2 lost (NODE_FAIL)"; None when nothing failed,
    or when all that is known is the job's exit code (the ledger's reason says that already)."""
    if not record:
        return None
    culprit = record.get("culprit")
    if not isinstance(culprit, dict):
        return None
    lost = [e.get("node") for e in record.get("node_evidence") or []
            if isinstance(e, dict) and e.get("kind") == EvidenceKind.NODE_FAIL]
    scheduler_state = (record.get("scheduler") or {}).get("state")
    if lost:
        return f"node {', '.join(map(str, lost))} lost ({scheduler_state or 'node failure'})"
    if scheduler_state in NODE_FAIL_STATES:
        return f"a node lost ({scheduler_state}; the scheduler did not say which)"
    rank, node = culprit.get("rank"), culprit.get("node")
    error = culprit.get("error") or {}
    if rank is None and not error.get("line"):
        return None  # the scheduler's exit code only: the ledger's reason says as much
    if rank is not None:
        who = f"rank {rank} @ {node}" if node else f"rank {rank}"
    else:
        who = f"node {node}" if node else "job"
    if culprit.get("cause") == RankEndCause.HANG_STOPPED:
        timeout = (record.get("hang") or {}).get("timeout")
        what = f"hung (timeout {timeout:g} s)" if isinstance(timeout, int | float) else "hung"
    elif error.get("line"):
        what = str(error["line"])
    elif culprit.get("signal"):
        what = f"killed by {culprit['signal']}"
    elif culprit.get("exit_code") is not None:
        what = f"exit {culprit['exit_code']}"
    else:
        what = "failed"
    return f"{who}: {what}"


__all__ = [
    "EXTERNAL_KILL_SIGNALS",
    "FORMAT",
    "MAX_VICTIM_ERRORS",
    "NODE_FAIL_STATES",
    "READ_LIMIT",
    "TAIL_LINES",
    "TIE_WINDOW_S",
    "VERSION",
    "WRITERS",
    "Basis",
    "EvidenceKind",
    "RankEndCause",
    "build_incident",
    "cause_line",
    "decision_entry",
    "hang_repeat_evidence",
    "incident_cause",
    "read_incident",
    "repeated_hang_nodes",
    "write_incident",
]
