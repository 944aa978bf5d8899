"""What a run cost: goodput across its attempts, where the rest of the time went and why, and when
it will finish. Computed from the ledger, the workload's step logs (`ftslurm.report_progress`)
and the launchers' status files; nothing else runs to collect it.

Every started attempt's allocation (start to end, times its node count for node-seconds) is cut
into parts that add up to it exactly:

- **startup**: the job's start to the workload's first progress report (the first round);
- **productive**: time between progress reports whose steps were kept;
- **lost**: time spent on steps a later round or attempt had to redo (done after the checkpoint
  it resumed from);
- **restart**: gaps inside the attempt between one restart round's last report and the next
  round's first (hang detection, the restart, the new round's start-up);
- **stop**: the last report to the job's end (stopping, saving, tearing down; or a hang's
  detection when the attempt ended on it).

Queue wait comes on top, outside allocations: from when the attempt could run (submitted, or the
end of the attempt before it when it was queued behind it) to its start. Each part that is not
productive is attributed to a cause: the first attempt's queue and start-up to `start`; an
attempt's lost work and stop, and the next attempt's queue and start-up, to how the attempt ended
(`crash`, `hang`, `preemption`, `stop` (a graceful stop: the time-limit warning, a preemption
warning, a signal), `time limit`, `node failure`, `cancel`, `finish`); a restart gap and its lost
work to what the launcher restarted for (`crash`, `hang`). goodput = productive / allocated.

Without progress reports the parts inside an allocation are unknown (None): the allocated time,
queue wait and in-place restarts are still counted, and `progress_known` is False.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ftslurm.chain.outcome import AttemptStatus, Outcome
from ftslurm.chain.runstate import AttemptView, RunState
from ftslurm.fault_tolerance.status import EventKind, read_all_status_files
from ftslurm.progress import ProgressPoint, read_reports
from ftslurm.timefmt import clock, duration

__all__ = ["FORMAT", "VERSION", "AttemptCost", "Eta", "Restart", "RunCost", "attempt_cause",
           "estimate_eta",
           "run_cost", "summary_line"]

FORMAT = "ftslurm.goodput"
VERSION = 1

#: About how many points of the progress curve are kept, shared among the attempts (at least
#: CURVE_MIN_POINTS_PER_ATTEMPT each, every restart round's first and last among them): the
#: curve is for looking at.
CURVE_POINTS = 4000
CURVE_MIN_POINTS_PER_ATTEMPT = 8

_OUTCOME_CAUSE = {
    Outcome.FAILED: "crash", Outcome.FATAL: "crash", Outcome.PREEMPTED: "preemption",
    Outcome.TIMEOUT: "time limit", Outcome.NODE_FAIL: "node failure",
    Outcome.CANCELLED: "cancel", Outcome.STOPPED: "stop", Outcome.FINISHED: "finish",
}
_RESTART_KINDS = {EventKind.HANG.value: "hang", EventKind.CRASH.value: "crash",
                  EventKind.PEER_RESTART.value: "crash"}


def attempt_cause(view: AttemptView) -> str:
    """How an ended attempt's end is named in the accounting; "running" while it runs."""
    if view.outcome is None:
        return "running"
    if view.outcome is Outcome.FAILED and view.signature == "hang":
        return "hang"
    return _OUTCOME_CAUSE.get(view.outcome, str(view.outcome))


@dataclass
class Restart:
    """An in-place restart inside an attempt, as the step log and the launcher show it."""

    at: float
    cause: str
    gap_s: float
    lost_s: float
    lost_steps: int


@dataclass
class AttemptCost:
    """One started attempt's time, cut into parts (seconds; None when unknown)."""

    attempt: int
    job_id: str | None
    nodes: list[str]
    outcome: str | None
    cause: str
    eligible_at: float | None
    started_at: float
    ended_at: float | None
    queue_s: float | None
    allocated_s: float
    allocated_node_s: float
    startup_s: float | None = None
    productive_s: float | None = None
    lost_s: float | None = None
    lost_steps: int | None = None
    restart_s: float | None = None
    stop_s: float | None = None
    first_progress_at: float | None = None
    last_progress_at: float | None = None
    first_step: int | None = None
    last_step: int | None = None
    checkpointed_step: int | None = None
    #: Steps done in the productive time (each round's steps, less those redone later).
    kept_steps: int | None = None
    restarts: list[Restart] = field(default_factory=list)


@dataclass
class Eta:
    """When the run is expected to finish, and from what."""

    finish_at: float
    remaining_steps: int
    steps_per_s: float
    goodput: float
    basis: str


@dataclass
class RunCost:
    """The run's accounting: totals, time lost by cause, the ETA and every attempt's parts."""

    run_dir: str
    run_state: str
    generated_at: float
    progress_known: bool
    total_steps: int | None
    last_step: int | None
    totals: dict[str, float | None]
    lost_by_cause: dict[str, float]
    eta: Eta | None
    attempts: list[AttemptCost]
    #: [time, step, attempt, restart round], rank 0's reports, thinned per attempt.
    curve: list[list[float]]

    def to_json(self) -> dict[str, Any]:
        """The document `ftslurm report --json` prints."""
        return {"format": FORMAT, "version": VERSION, **asdict(self)}


def _segments(points: Sequence[ProgressPoint]) -> list[list[ProgressPoint]]:
    """The points of each restart round, in time order (a round is a run of points with one
    `restart` value). A step reported again (its checkpoint saved after it, say) is no new
    progress: it keeps the time the step was first reported, with the later report's
    checkpoint and total."""
    rounds: list[list[ProgressPoint]] = []
    for point in sorted(points, key=lambda p: p.time):
        if not rounds or rounds[-1][-1].restart != point.restart:
            rounds.append([point])
        elif rounds[-1][-1].step == point.step:
            rounds[-1][-1] = ProgressPoint(rounds[-1][-1].time, point.step, point.checkpointed,
                                           point.total, point.restart)
        else:
            rounds[-1].append(point)
    return rounds


def _time_at_step(points: Sequence[ProgressPoint], step: int) -> float:
    """When the round first reported `step` or a later one (its first point's time when it
    began past `step`; its last point's when it never got there)."""
    steps = [p.step for p in points]
    index = bisect.bisect_left(steps, step)
    return points[min(index, len(points) - 1)].time


def _lost(points: Sequence[ProgressPoint], resume_step: int | None) -> tuple[float, int]:
    """The time and steps of `points` (one round) after `resume_step`: redone by what followed."""
    if resume_step is None or not points:
        return 0.0, 0
    last = points[-1]
    if last.step <= resume_step:
        return 0.0, 0
    return last.time - _time_at_step(points, resume_step), last.step - resume_step


def _resume_step(next_points: Sequence[ProgressPoint] | None, checkpointed: int | None
                 ) -> int | None:
    """The step training resumed from: one before the next round's first report (a workload
    reports every step), else the last checkpoint; None when neither is known."""
    if next_points:
        return next_points[0].step - 1
    return checkpointed


def _restart_causes(docs: Sequence[Mapping[str, Any]]) -> list[tuple[float, str]]:
    """(time, cause) of the launchers' restarts in an attempt (its status files), in order."""
    found = []
    for doc in docs:
        events = doc.get("events")
        for event in events if isinstance(events, list) else []:
            if not isinstance(event, dict):
                continue
            cause = _RESTART_KINDS.get(str(event.get("kind")))
            if cause is not None and event.get("action") == "restart":
                try:
                    found.append((float(event["time"]), cause))
                except (KeyError, TypeError, ValueError):
                    continue
    return sorted(found)


def _attempt_cost(view: AttemptView, eligible_at: float | None, points: list[ProgressPoint],
                  next_first: list[ProgressPoint] | None, restart_causes: list[tuple[float, str]],
                  now: float) -> AttemptCost:
    assert view.started_at is not None
    ended = view.ended_at if view.status is AttemptStatus.ENDED else None
    end = ended if ended is not None else now
    allocated = max(0.0, end - view.started_at)
    cost = AttemptCost(
        attempt=view.number, job_id=view.job_id, nodes=list(view.nodes),
        outcome=view.outcome.value if view.outcome is not None else None,
        cause=attempt_cause(view), eligible_at=eligible_at, started_at=view.started_at,
        ended_at=ended,
        queue_s=None if eligible_at is None else max(0.0, view.started_at - eligible_at),
        allocated_s=allocated, allocated_node_s=allocated * max(1, len(view.nodes)))
    # Reports a moment outside the allocation (clocks of two nodes, a last flush) are moved
    # into it, so the parts still add up to it.
    start = view.started_at
    rounds = _segments([p if start <= p.time <= end
                        else dataclasses.replace(p, time=min(max(p.time, start), end))
                        for p in points if start - 1.0 <= p.time <= end + 1.0])
    if not rounds:
        return cost
    first, last = rounds[0][0], rounds[-1][-1]
    cost.first_progress_at, cost.last_progress_at = first.time, last.time
    cost.first_step, cost.last_step = first.step, last.step
    cost.checkpointed_step = max((p.checkpointed for p in rounds[-1] if p.checkpointed is not None),
                                 default=None)
    span = sum(r[-1].time - r[0].time for r in rounds)
    lost_s, lost_steps, restart_s = 0.0, 0, 0.0
    for before, after in itertools.pairwise(rounds):
        gap = after[0].time - before[-1].time
        r_lost_s, r_lost_steps = _lost(before, after[0].step - 1)
        cause = next((c for t, c in restart_causes if before[-1].time - 1.0 <= t <= after[0].time),
                     "crash")
        cost.restarts.append(Restart(at=before[-1].time, cause=cause, gap_s=gap,
                                     lost_s=r_lost_s, lost_steps=r_lost_steps))
        lost_s += r_lost_s
        lost_steps += r_lost_steps
        restart_s += gap
    if ended is not None and view.outcome is not Outcome.FINISHED:  # a finished run redoes none
        tail_lost_s, tail_lost_steps = _lost(rounds[-1],
                                             _resume_step(next_first, cost.checkpointed_step))
        lost_s, lost_steps = lost_s + tail_lost_s, lost_steps + tail_lost_steps
    cost.startup_s = max(0.0, first.time - view.started_at)
    cost.lost_s, cost.lost_steps, cost.restart_s = lost_s, lost_steps, restart_s
    cost.productive_s = max(0.0, span - lost_s)
    cost.stop_s = max(0.0, end - last.time)
    cost.kept_steps = max(0, sum(r[-1].step - r[0].step for r in rounds) - lost_steps)
    return cost


def _thin(points: Sequence[ProgressPoint], keep: int) -> list[ProgressPoint]:
    """About `keep` of an attempt's points, evenly spaced, with every restart round's first and
    last point (where the curve falls back)."""
    if len(points) <= keep:
        return list(points)
    rounds = _segments(points)
    share = max(2, keep // len(rounds))
    kept: list[ProgressPoint] = []
    for one in rounds:
        stride = max(1.0, (len(one) - 1) / (share - 1))
        picked = {0, len(one) - 1, *(min(len(one) - 1, int(i * stride)) for i in range(share))}
        kept += [one[i] for i in sorted(picked)]
    return kept


def estimate_eta(state: RunState, costs: Sequence[AttemptCost], total: int | None,
                 last_step: int | None, *, now: float) -> Eta | None:
    """The expected finish: remaining steps at the measured rate of productive training, slowed
    by the run's observed goodput (queue waits, start-ups, restarts and lost work so far recur at
    the same rate). None without a total, a rate, or when the run is over."""
    if total is None or last_step is None or state.run_status.value != "running":
        return None
    productive = sum(c.productive_s or 0.0 for c in costs)
    steps = sum(c.kept_steps or 0 for c in costs)
    if productive <= 0 or steps <= 0:
        return None
    rate = steps / productive
    spent = sum(c.allocated_s + (c.queue_s or 0.0) for c in costs)
    goodput = productive / spent if spent > 0 else 1.0
    remaining = max(0, total - last_step)
    return Eta(finish_at=now + remaining / rate / max(goodput, 1e-3), remaining_steps=remaining,
               steps_per_s=rate, goodput=goodput,
               basis=f"{rate:.3g} steps/s while training, goodput {goodput:.0%} so far")


def run_cost(run_dir: str | Path, state: RunState, *, now: float | None = None) -> RunCost:
    """The accounting of the run in `run_dir` (whose ledger folds to `state`)."""
    now = time.time() if now is None else now
    run_dir = str(run_dir)
    started = [a for a in state.attempts if a.started_at is not None]
    found = read_reports(run_dir, [a.number for a in started])
    logs = {a.number: found.get(a.number, []) for a in started}
    statuses = read_all_status_files(run_dir, [a.number for a in started])
    costs: list[AttemptCost] = []
    previous_end: float | None = None
    for index, view in enumerate(started):
        eligible = view.submitted_at or view.reserved_at
        if eligible is not None and previous_end is not None:
            eligible = max(eligible, previous_end)
        # what came next: the first later attempt that reported (one that stepped aside or
        # died before its first step resumed nothing)
        following = next((logs[a.number] for a in started[index + 1:] if logs[a.number]), None)
        next_points = _segments(following)[0] if following else None
        costs.append(_attempt_cost(view, eligible, logs[view.number], next_points,
                                   _restart_causes(statuses.get(view.number, [])), now))
        if view.ended_at is not None:
            previous_end = view.ended_at

    progress_known = any(logs.values())
    totals = _totals(costs, progress_known)
    lost_by_cause = _lost_by_cause(costs, progress_known)
    points = [p for a in started for p in logs[a.number]]
    total = max((p.total for p in points if p.total is not None), default=None)
    last_step = points[-1].step if points else None
    keep = max(CURVE_MIN_POINTS_PER_ATTEMPT, CURVE_POINTS // max(1, len(started)))
    curve = [[p.time, p.step, a.number, p.restart] for a in started
             for p in _thin(logs[a.number], keep)]
    return RunCost(
        run_dir=run_dir, run_state=state.run_status.value, generated_at=now,
        progress_known=progress_known, total_steps=total, last_step=last_step, totals=totals,
        lost_by_cause=lost_by_cause,
        eta=estimate_eta(state, costs, total, last_step, now=now), attempts=costs, curve=curve)


def _totals(costs: Sequence[AttemptCost], progress_known: bool) -> dict[str, float | None]:
    allocated = sum(c.allocated_s for c in costs)
    node_s = sum(c.allocated_node_s for c in costs)
    totals: dict[str, float | None] = {
        "allocated_s": allocated, "allocated_node_s": node_s,
        "queue_s": sum(c.queue_s or 0.0 for c in costs),
        "restarts": float(sum(len(c.restarts) for c in costs)),
    }
    if not progress_known:
        totals.update(startup_s=None, productive_s=None, lost_s=None, restart_s=None,
                      stop_s=None, goodput=None)
        return totals
    # An attempt without reports (it died before its first step) spent all of it starting.
    parts = {name: sum(getattr(c, name) or 0.0 for c in costs)
             for name in ("productive_s", "lost_s", "restart_s", "stop_s")}
    parts["startup_s"] = sum(c.startup_s if c.startup_s is not None else c.allocated_s
                             for c in costs)
    totals.update(parts)
    totals["goodput"] = parts["productive_s"] / allocated if allocated > 0 else None
    return totals


def _lost_by_cause(costs: Sequence[AttemptCost], progress_known: bool) -> dict[str, float]:
    """Seconds not spent training, by cause (queue wait included; without progress reports,
    only the queue wait is known)."""
    lost: dict[str, float] = {}

    def add(cause: str, seconds: float | None) -> None:
        if seconds:
            lost[cause] = lost.get(cause, 0.0) + seconds

    before = "start"
    for cost in costs:
        add(before, cost.queue_s)
        before_this, before = before, cost.cause
        if not progress_known:
            continue
        add(before_this, cost.startup_s if cost.startup_s is not None
            else (cost.allocated_s if cost.first_progress_at is None and cost.ended_at else None))
        for restart in cost.restarts:
            add(restart.cause, restart.gap_s + restart.lost_s)
        if cost.ended_at is not None:
            add(cost.cause, (cost.lost_s or 0.0) - sum(r.lost_s for r in cost.restarts))
            add(cost.cause, cost.stop_s)
    return dict(sorted(lost.items(), key=lambda item: -item[1]))


def summary_line(cost: RunCost | Mapping[str, Any]) -> str:
    """One line for `status` and `watch`: goodput, lost time and its main cause, ETA."""
    doc = cost.to_json() if isinstance(cost, RunCost) else cost
    totals = doc["totals"]
    if not doc["progress_known"]:
        return (f"goodput unknown (the workload reports no progress: ftslurm.report_progress); "
                f"{duration(totals['allocated_s'])} allocated")
    text = f"goodput {totals['goodput']:.0%}" if totals["goodput"] is not None else "goodput -"
    text += f" of {duration(totals['allocated_s'])} allocated"
    causes = doc["lost_by_cause"]
    if causes:
        cause, seconds = next(iter(causes.items()))
        text += f"; most lost to {cause} ({duration(seconds)})"
    eta = doc.get("eta")
    if eta:
        text += (f"; ETA {clock(eta['finish_at'])} "
                 f"({eta['remaining_steps']} steps left)")
    elif doc.get("total_steps") and doc.get("last_step") is not None:
        text += f"; step {doc['last_step']} of {doc['total_steps']}"
    return text
