"""Issue 14 on the real dev cluster: a run through a hang restarted in place, a crash, a
preemption and a time-limit stop; `ftslurm report` agrees with the workload's own step log.

The workload (examples/ddp_resume/train.py, 1 node x 2 ranks under the ft launcher) reports its
progress with `ftslurm.report_progress` and, independently, appends `<time> <step> <attempt>
<restart>` to a truth file after every step. Per attempt, the report's start-up, productive,
lost, restart and stop times must agree with what the truth file and the ledger's start and end
say within 2 s, its lost steps must be exactly the steps the truth shows were done twice, and the
queue wait must agree with sacct's Submit, Start and the previous job's End.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from ftslurm.chain.ledger import Ledger
from ftslurm.chain.outcome import AttemptStatus
from ftslurm.slurm import SlurmClient
from ftslurm.slurm.parse import parse_timestamp
from tests.slurm.chain_util import ftslurm, no_jobs_left, ran, run_ended, submit, wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "examples" / "ddp_resume" / "train.py"
TOLERANCE_S = 2.0


def write_spec(tmp_path: Path) -> Path:
    truth = tmp_path / "truth.txt"
    path = tmp_path / "job.yaml"
    path.write_text("\n".join([
        "name: goodput",
        "nodes: 1",
        "nproc_per_node: 2",
        'time: "10:00"',
        "launcher: ft",
        "max_restarts: 1",
        f"python: {sys.executable}",
        f"run_dir: {tmp_path / 'run'}",
        # rank 1 hangs at step 60 (restarted in place from the checkpoint at 50), then exits 1
        # at step 160 (no restart left: attempt 2 resumes from 150)
        f"command: [{TRAIN}, --steps, '450', --step-time, '0.04', --ckpt-every, '25', "
        f"--hang-at-step, '60', --crash-at-step, '160', --fault-rank, '1', --step-log, {truth}]",
        "env: {OMP_NUM_THREADS: '1'}",
        "fault_tolerance: {initial_rank_heartbeat_timeout: 120, rank_heartbeat_timeout: 3}",
        "signals: {warning_time: 90, stop_grace: 30}",
        "autoresume: {max_failures: 3}",
    ]) + "\n")
    return path


def truth_lines(path: Path) -> list[tuple[float, int, int, int]]:
    rows = []
    for line in path.read_text().splitlines():
        t, step, attempt, restart = line.split()
        rows.append((float(t), int(step), int(attempt), int(restart)))
    return rows


def training(truth: Path, attempt: int, steps: int = 20) -> bool:
    """Attempt `attempt` has done `steps` steps (by the workload's own count)."""
    if not truth.exists():
        return False
    return sum(1 for row in truth_lines(truth) if row[2] == attempt) >= steps


def sacct_times(job_ids: list[str]) -> dict[str, tuple[float, float, float]]:
    """Each job's (Submit, Start, End) as sacct reports its allocation (whole seconds)."""
    out = SlurmClient().run(["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids),
                             "--format=JobIDRaw,Submit,Start,End"])
    found = {}
    for line in out.splitlines():
        job, *times = line.split("|")
        submit, start, end = (parse_timestamp(t).timestamp() for t in times)
        found[job] = (submit, start, end)
    return found


def expected_parts(rows: list[tuple[float, int, int, int]], started: float, ended: float,
                   next_resume: int | None) -> dict[str, float]:
    """What the truth says about one attempt (its rows), its ledger start and end, and the step
    the next attempt resumed from: the same parts as the report, from the workload's count."""
    rounds: list[list[tuple[float, int]]] = []  # (time, step) per restart round
    previous_restart = None
    for t, step, _, restart in rows:
        if restart != previous_restart:
            rounds.append([])
            previous_restart = restart
        rounds[-1].append((t, step))

    def redone(points: list[tuple[float, int]], resume: int | None) -> tuple[float, int]:
        later = [(t, step) for t, step in points if resume is not None and step > resume]
        return (points[-1][0] - later[0][0], len(later)) if later else (0.0, 0)

    lost_s = restart_s = 0.0
    lost_steps = 0
    for before, after in itertools.pairwise(rounds):
        restart_s += after[0][0] - before[-1][0]
        seconds, steps = redone(before, after[0][1] - 1)
        lost_s, lost_steps = lost_s + seconds, lost_steps + steps
    seconds, steps = redone(rounds[-1], next_resume)
    lost_s, lost_steps = lost_s + seconds, lost_steps + steps
    span = sum(r[-1][0] - r[0][0] for r in rounds)
    return {"startup_s": rounds[0][0][0] - started, "productive_s": span - lost_s,
            "lost_s": lost_s, "restart_s": restart_s, "stop_s": ended - rounds[-1][-1][0],
            "lost_steps": lost_steps}


def test_the_report_agrees_with_the_workloads_own_account(tmp_path: Path, slurm_cluster) -> None:
    spec = write_spec(tmp_path)
    truth = tmp_path / "truth.txt"
    run_dir = submit(spec)
    client = SlurmClient()
    # attempt 1 hangs, restarts in place, crashes; attempt 2 is preempted while it trains
    wait_for(lambda: training(truth, 2), "attempt 2 to train")
    node = Ledger.open(run_dir).state().attempt(2).nodes[0]
    urgent = client.run(["sbatch", "--parsable",
                         f"--partition={slurm_cluster.high_priority_partition}",
                         f"--nodelist={node}", "--exclusive", "--output=/dev/null",
                         "--wrap=sleep 3"]).strip()
    try:
        wait_for(lambda: training(truth, 3), "attempt 3 to train")
    finally:
        client.cancel(urgent)
    # attempt 3 gets what SLURM sends at the time-limit warning (the script's signal, USR1)
    third = Ledger.open(run_dir).state().attempt(3)
    assert third is not None and third.status is AttemptStatus.RUNNING
    client.run(["scancel", "--batch", "--signal=USR1", str(third.job_id)])
    data = run_ended(run_dir)
    assert no_jobs_left(run_dir)
    assert data["state"] == "finished", data["reason"]
    attempts = ran(data)
    # a preempted attempt whose launcher stopped its ranks in time may record "stopped" first
    outcomes = [a["outcome"] for a in attempts]
    assert outcomes in (["failed", "preempted", "stopped", "finished"],
                        ["failed", "stopped", "stopped", "finished"]), \
        [(a["outcome"], a["reason"]) for a in attempts]

    result = ftslurm("report", str(run_dir), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["progress_known"] and report["run_state"] == "finished"
    costs = {a["attempt"]: a for a in report["attempts"]}
    rows = truth_lines(truth)
    by_attempt: dict[int, list[tuple[float, int, int, int]]] = defaultdict(list)
    for row in rows:
        by_attempt[row[2]].append(row)
    state = Ledger.open(run_dir).state()
    sacct = sacct_times([a["job_id"] for a in attempts])
    for a in attempts:
        number = a["attempt"]
        view = state.attempt(number)
        following = by_attempt.get(number + 1)
        expected = expected_parts(by_attempt[number], view.started_at, view.ended_at,
                                  following[0][1] - 1 if following else None)
        cost = costs[number]
        for part in ("startup_s", "productive_s", "lost_s", "restart_s", "stop_s"):
            assert cost[part] == pytest.approx(expected[part], abs=TOLERANCE_S), (number, part)
        assert cost["lost_steps"] == expected["lost_steps"], number
        # Queue wait, by SLURM's clock: from the submission, or the end of the job before (it
        # was queued behind it), to the start. (sacct's Eligible is when the scheduler noticed
        # the dependency was met, a scheduling cycle later.)
        submitted, start, _ = sacct[a["job_id"]]
        before = state.attempt(number - 1) if number > 1 else None
        could_run = max(submitted, sacct[before.job_id][2]) if before is not None else submitted
        assert cost["queue_s"] == pytest.approx(start - could_run, abs=TOLERANCE_S), number
    # attempt 1's in-place restart was for the hang; its end a crash
    assert [r["cause"] for r in costs[1]["restarts"]] == ["hang"]
    assert costs[1]["cause"] == "crash" and costs[2]["cause"] in ("preemption", "stop")
    # lost work is exactly the steps done twice
    seen: dict[int, int] = defaultdict(int)
    for _, step, _, _ in rows:
        seen[step] += 1
    redone = sum(count - 1 for count in seen.values())
    assert sum(c["lost_steps"] for c in report["attempts"]) == redone > 0
    assert set(report["lost_by_cause"]) >= {"start", "hang", "crash", "stop"}

    page = tmp_path / "report.html"
    assert ftslurm("report", str(run_dir), "--html", str(page)).returncode == 0
    assert "progress-curve" in page.read_text()
