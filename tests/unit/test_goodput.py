"""The goodput accounting on a hand-built run: every attempt's allocation is cut into parts that
add up to it, lost work is the steps redone, and each part has its cause (issue 14)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ftslurm import env_vars, progress
from ftslurm.chain.goodput import run_cost
from ftslurm.chain.runstate import RunState, fold
from ftslurm.progress import (
    ProgressPoint,
    ProgressReporter,
    format_line,
    read_step_log,
    report_progress,
)
from ftslurm.rundir import RunDir

T0 = 1_800_000_000.0
HEADER = {"format": "ftslurm.ledger", "version": 1, "run_id": "r", "spec_fingerprint": "x",
          "settings": {}, "created_at": T0}


def attempt_records(number: int, job: str, *, submitted: float, started: float, ended: float,
                    outcome: str, nodes: tuple[str, ...] = ("n1", "n2"),
                    signature: str | None = None) -> list[dict[str, Any]]:
    end = {"type": "ended", "at": ended, "attempt": number, "job_id": job, "outcome": outcome,
           "reason": outcome, "exit_code": 0, "signal": None, "scheduler_state": None,
           "progress": None, "blamed_nodes": [], "source": "job", "provisional": False}
    if signature is not None:
        end["signature"] = signature
    return [
        {"type": "intent", "at": submitted, "attempt": number, "tag": f"r.{number}"},
        {"type": "submitted", "at": submitted, "attempt": number, "job_id": job},
        {"type": "started", "at": started, "attempt": number, "job_id": job, "nodes": list(nodes),
         "requeue_count": 0, "progress": None},
        end,
    ]


def write_steps(run_dir: Path, attempt: int, points: list[tuple[float, int, int | None, int]]
                ) -> None:
    path = RunDir(run_dir).step_log(attempt)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(format_line(ProgressPoint(t, s, c, 100, r)) for t, s, c, r in points))


def steps(start_t: float, first: int, last: int, *, every: float = 1.0, restart: int = 0,
          ckpt: int | None = None) -> list[tuple[float, int, int | None, int]]:
    """One report a second from step `first` to `last` (one step a second)."""
    return [(start_t + (s - first) * every, s, ckpt if ckpt is not None and s >= ckpt else None,
             restart) for s in range(first, last + 1)]


@pytest.fixture
def run(tmp_path: Path) -> tuple[Path, RunState]:
    """Attempt 1 (2 nodes): queued 10 s, starts up 5 s, trains steps 1..40 with a hang at step
    20 restarted in place (resumed from the checkpoint at step 15), checkpoints at 30, crashes
    after step 40 and takes 3 s to end. Attempt 2 waits 7 s in the queue after it, starts up
    4 s, resumes at step 30 and finishes at step 100, ending 2 s after its last report."""
    # attempt 1: round 0 steps 1..20 at T0+15..T0+34; the hang is caught and the ranks restart:
    # round 1 reports from step 16 at T0+40 (resumed at 15): steps 16..20 are redone.
    round0 = steps(T0 + 15, 1, 20)
    round1 = steps(T0 + 40, 16, 40, restart=1, ckpt=30)
    write_steps(tmp_path, 1, round0 + round1)
    a1_end = T0 + 64 + 3  # last report T0+64 (step 40)
    write_steps(tmp_path, 2, steps(a1_end + 7 + 4, 31, 100))
    a2_last = a1_end + 11 + 69
    records = [*attempt_records(1, "100", submitted=T0, started=T0 + 10, ended=a1_end,
                                outcome="failed"),
               *attempt_records(2, "101", submitted=T0 + 1, started=a1_end + 7,
                                ended=a2_last + 2, outcome="finished", nodes=("n1",)),
               {"type": "run_end", "at": a2_last + 2, "state": "finished", "reason": "flag"}]
    status = RunDir(tmp_path).launcher_status(1, "n1")
    status.parent.mkdir(parents=True)
    status.write_text(json.dumps({"node": "n1", "events": [
        {"time": T0 + 37.0, "kind": "hang", "rank": 0, "action": "restart"}]}))
    return tmp_path, fold(HEADER, records)


def test_the_parts_of_each_attempt_add_up_to_its_allocation(run) -> None:
    run_dir, state = run
    cost = run_cost(run_dir, state, now=T0 + 1000)
    first, second = cost.attempts
    assert first.queue_s == 10 and first.allocated_s == 57 and first.allocated_node_s == 114
    assert first.startup_s == 5  # start T0+10, first report T0+15
    assert first.restarts[0].cause == "hang"  # from the launcher's event in the gap
    assert first.restarts[0].gap_s == 6  # last report of round 0 T0+34, round 1's first T0+40
    assert (first.restarts[0].lost_steps, first.restarts[0].lost_s) == (5, 5)  # 16..20 redone
    assert first.stop_s == 3 and first.cause == "crash"
    # the crash: attempt 2 resumed at 30 (reported 31 first): steps 31..40 of attempt 1 are lost
    assert first.lost_steps == 5 + 10 and first.lost_s == 5 + 10
    parts = (first.startup_s + first.productive_s + first.lost_s + first.restart_s
             + first.stop_s)
    assert parts == pytest.approx(first.allocated_s)
    assert second.queue_s == 7  # eligible when attempt 1 ended, not when it was submitted
    assert (second.startup_s, second.stop_s, second.lost_s) == (4, 2, 0)
    assert second.productive_s == 69 and second.cause == "finish"


def test_run_totals_and_time_lost_by_cause(run) -> None:
    run_dir, state = run
    cost = run_cost(run_dir, state, now=T0 + 1000)
    totals = cost.totals
    assert totals["allocated_s"] == 57 + 75
    assert totals["productive_s"] == pytest.approx(19 + 24 - 15 + 69)
    assert totals["goodput"] == pytest.approx(totals["productive_s"] / totals["allocated_s"])
    assert cost.lost_by_cause == {"crash": 7 + 4 + 10 + 3, "start": 15, "hang": 6 + 5, "finish": 2}
    assert cost.progress_known and cost.total_steps == 100 and cost.last_step == 100
    assert cost.eta is None  # the run is over
    assert [point[2] for point in cost.curve[:1]] == [1]
    document = json.loads(json.dumps(cost.to_json()))
    assert document["format"] == "ftslurm.goodput" and len(document["attempts"]) == 2


def test_without_progress_reports_only_what_the_chain_knows(run) -> None:
    run_dir, state = run
    for path in RunDir(run_dir).step_logs.iterdir():
        path.unlink()
    cost = run_cost(run_dir, state, now=T0 + 1000)
    assert not cost.progress_known
    assert cost.totals["goodput"] is None and cost.totals["lost_s"] is None
    assert cost.totals["allocated_s"] == 57 + 75 and cost.totals["queue_s"] == 17
    assert cost.lost_by_cause == {"start": 10, "crash": 7}


def test_the_eta_of_a_running_run(tmp_path: Path) -> None:
    write_steps(tmp_path, 1, steps(T0 + 10, 1, 50))  # one step a second, total 100
    state = fold(HEADER, attempt_records(1, "100", submitted=T0, started=T0 + 5, ended=0,
                                         outcome="failed")[:3])
    cost = run_cost(tmp_path, state, now=T0 + 60)
    assert cost.eta is not None and cost.eta.remaining_steps == 50
    assert cost.eta.steps_per_s == pytest.approx(49 / 49)
    # 49 s of training in the 60 s since submission: 50 more steps take 50 / (49/60) s
    assert cost.eta.finish_at == pytest.approx(T0 + 60 + 50 / (49 / 60), abs=0.01)
    assert cost.attempts[0].ended_at is None and cost.attempts[0].stop_s == 1  # now - last


def test_report_progress_writes_rank_0s_steps_once_a_second(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(env_vars.RUN_DIR, str(tmp_path))
    monkeypatch.setenv(env_vars.ATTEMPT, "3")
    monkeypatch.setenv(env_vars.RANK, "0")
    monkeypatch.setattr(progress, "_reporter", None)
    monkeypatch.setattr(progress, "_disabled", False)
    for step in range(1, 1001):
        report_progress(step, total=5000, checkpointed=step == 500)
    progress._reporter.flush()
    points = read_step_log(tmp_path, 3)
    # the first call, the checkpoint and the last flush; not one line per step
    assert [(p.step, p.checkpointed) for p in points][:1] == [(1, None)]
    assert (500, 500) in [(p.step, p.checkpointed) for p in points]
    assert points[-1].step == 1000 and points[-1].total == 5000 and len(points) < 10
    assert RunDir(tmp_path).progress.read_text() == "1000\n"  # the chain's marker follows


def test_report_progress_ignores_other_ranks_and_runs(tmp_path: Path, monkeypatch) -> None:
    for env in ({env_vars.RUN_DIR: str(tmp_path), env_vars.ATTEMPT: "1", env_vars.RANK: "3"},
                {env_vars.RANK: "0"}):
        for name in (env_vars.RUN_DIR, env_vars.ATTEMPT, env_vars.RANK):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(progress, "_reporter", None)
        monkeypatch.setattr(progress, "_disabled", False)
        report_progress(7)
        assert progress._reporter is None
    assert not RunDir(tmp_path).step_logs.exists()


def test_a_reporter_that_cannot_write_never_raises(tmp_path: Path) -> None:
    (tmp_path / "step_logs").write_text("a file where the folder should be")
    reporter = ProgressReporter(tmp_path, "1")
    reporter.report(1, checkpointed=True)
    reporter.report(2)
    reporter.flush()
    assert read_step_log(tmp_path, 1) == []


def test_a_cut_line_is_skipped(tmp_path: Path) -> None:
    write_steps(tmp_path, 1, steps(T0, 1, 3))
    with RunDir(tmp_path).step_log(1).open("a") as out:
        out.write("1800000003.000 4 - 10")
    assert [p.step for p in read_step_log(tmp_path, 1)] == [1, 2, 3]


def test_the_latest_report_survives_without_a_flush(tmp_path: Path) -> None:
    # a rank that dies (os._exit, SIGKILL) between two lines: its slot still holds the step
    reporter = ProgressReporter(tmp_path, "2", restart=1, interval=3600)
    for step in range(1, 51):
        reporter.report(step, checkpointed=step == 40)
    points = read_step_log(tmp_path, 2)
    assert [(p.step, p.restart) for p in points] == [(1, 1), (40, 1), (50, 1)]  # 40: checkpoint
    assert points[-1].checkpointed == 40


def test_the_slot_is_newer_than_a_line_whose_rounded_time_reads_later(tmp_path: Path) -> None:
    # a line's time is rounded to the millisecond: step 40's line may read later than the
    # slot's step 50, reported 20 microseconds after it; step 50 is still the latest report
    reporter = ProgressReporter(tmp_path, "1", interval=3600)
    reporter.report(40, checkpointed=True)
    reporter.report(50)
    log = RunDir(tmp_path).step_log(1)
    at, *rest = log.read_text().split(" ")
    log.write_text(" ".join([f"{float(at) + 0.0009:.3f}", *rest]))  # rounded up, later
    points = read_step_log(tmp_path, 1)
    assert [p.step for p in points] == [40, 50]
    assert points[0].time <= points[1].time


def test_lost_work_is_measured_against_the_next_attempt_that_trained(tmp_path: Path) -> None:
    # attempt 2 stepped aside (started, never reported); attempt 3 resumed from step 20
    write_steps(tmp_path, 1, steps(T0 + 5, 1, 30, ckpt=20))
    write_steps(tmp_path, 3, steps(T0 + 60, 21, 40))
    records = [*attempt_records(1, "1", submitted=T0, started=T0, ended=T0 + 40,
                                outcome="failed"),
               *attempt_records(2, "2", submitted=T0, started=T0 + 41, ended=T0 + 42,
                                outcome="stopped"),
               *attempt_records(3, "3", submitted=T0, started=T0 + 50, ended=T0 + 80,
                                outcome="finished")]
    cost = run_cost(tmp_path, fold(HEADER, records), now=T0 + 100)
    first, second, third = cost.attempts
    assert (first.lost_steps, first.lost_s) == (10, 10)  # 21..30 redone by attempt 3
    assert second.startup_s is None and second.allocated_s == 1
    # the last attempt finished: its last steps were kept, not lost to the "finish"
    assert third.lost_steps == 0 and third.stop_s == 1 and third.kept_steps == 19


def test_reports_outside_the_allocation_are_moved_into_it(tmp_path: Path) -> None:
    write_steps(tmp_path, 1, steps(T0 + 9.5, 1, 11))  # last report at T0+19.5, end at T0+19
    records = attempt_records(1, "1", submitted=T0, started=T0 + 10, ended=T0 + 19,
                              outcome="failed")
    [cost] = run_cost(tmp_path, fold(HEADER, records), now=T0 + 100).attempts
    parts = cost.startup_s + cost.productive_s + cost.lost_s + cost.restart_s + cost.stop_s
    assert parts == pytest.approx(cost.allocated_s) and cost.stop_s == 0


def test_the_eta_counts_steps_redone_inside_an_attempt_once(tmp_path: Path) -> None:
    # round 0: steps 1..100; round 1 resumes at 50 and reaches 200 (one step a second)
    write_steps(tmp_path, 1, steps(T0, 1, 100) + steps(T0 + 105, 51, 200, restart=1))
    state = fold({**HEADER}, attempt_records(1, "1", submitted=T0, started=T0, ended=0,
                                             outcome="failed")[:3])
    cost = run_cost(tmp_path, state, now=T0 + 255)
    [attempt] = cost.attempts
    assert attempt.lost_steps == 50 and attempt.kept_steps == 99 + 149 - 50
    assert cost.eta is not None and cost.eta.steps_per_s == pytest.approx(1.0)


def test_a_step_reported_again_is_not_new_progress(tmp_path: Path) -> None:
    # a save at the end of training reports the last step again: the slot holds it later
    reporter = ProgressReporter(tmp_path, "1", interval=3600)
    reporter.report(6, checkpointed=True)
    reporter.report(6, checkpointed=True)  # not written again: nothing new
    assert [(p.step, p.checkpointed) for p in read_step_log(tmp_path, 1)] == [(6, 6)]
