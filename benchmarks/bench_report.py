"""Cost of `ftslurm.report_progress()` per call, next to `send_heartbeat()`, and of `ftslurm
report` on a run of many attempts; prints JSON.

    python benchmarks/bench_report.py [--calls 1000] [--batches 500] [--attempts 1000]

- report_progress: the median over batches of the mean per-call time of rank 0's
  `report_progress(step, total=...)` in a run directory between two step-log lines (the hot
  path), of a checkpointed report (written at once: a step-log line and the progress marker,
  fsynced), and of `send_heartbeat()` on a real slot, measured the same way in one process.
- report: a generated ledger of N attempts (each started, reported progress for 60 steps with a
  checkpoint, crashed or was preempted, the next one queued behind it), then the wall time of
  `ftslurm report RUN_DIR --json` as a process (median of 3) and of the in-process
  `run_cost(...)` alone. Target: under a second for 1,000 attempts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ftslurm import env_vars, progress
from ftslurm.atomic import write_json_atomic
from ftslurm.chain.goodput import run_cost
from ftslurm.chain.ledger import Ledger
from ftslurm.fault_tolerance import RankMonitorClient
from ftslurm.fault_tolerance.heartbeat import Slot, make_private_dir, slot_path
from ftslurm.progress import ProgressPoint, format_line
from ftslurm.rundir import RunDir


def per_call(function: Any, calls: int, batches: int) -> dict[str, float]:
    means = []
    for batch in range(batches):
        start = time.perf_counter()
        for i in range(calls):
            function(batch * calls + i)
        means.append((time.perf_counter() - start) / calls * 1e6)
    means.sort()
    return {"median_us": round(statistics.median(means), 3),
            "p99_us": round(means[int(0.99 * (len(means) - 1))], 3)}


def bench_calls(tmp: Path, calls: int, batches: int) -> dict[str, Any]:
    os.environ.update({env_vars.RUN_DIR: str(tmp / "run"), env_vars.ATTEMPT: "1",
                       env_vars.RANK: "0"})
    progress._reporter, progress._disabled = None, False
    # the hot path: a step between two step-log lines (a line is due once a second)
    result = {"report_progress": per_call(
        lambda step: progress.report_progress(step, total=10**9), calls, batches)}
    # a report that writes at once: a checkpoint (a step-log line, the progress marker)
    result["report_progress_checkpointed"] = per_call(
        lambda step: progress.report_progress(step, total=10**9, checkpointed=True), 20, 20)
    ipc = make_private_dir(tmp / "ipc")
    slot = Slot.create(slot_path(ipc, 0), time.monotonic())
    os.environ.update({env_vars.FT_IPC_DIR: str(ipc), env_vars.LOCAL_RANK: "0"})
    client = RankMonitorClient()
    client.init_workload_monitoring()
    result["send_heartbeat"] = per_call(lambda _: client.send_heartbeat(), calls, batches)
    client.shutdown_workload_monitoring()
    slot.close()
    lines = len(RunDir(tmp / "run").step_log(1).read_text().splitlines())
    result["step_log_lines"] = lines
    result["calls"] = calls * batches
    return result


def generate_run(root: Path, attempts: int) -> Path:
    """A run directory of `attempts` ended attempts with their step logs."""
    run_dir = root / "big"
    ledger = Ledger.create(run_dir, spec_fingerprint="sha256:bench", run_id="bench")
    t = time.time() - attempts * 100.0
    records: list[dict[str, Any]] = []
    step = 0
    for number in range(1, attempts + 1):
        job = str(1000 + number)
        start, end = t + 5, t + 80
        outcome = "failed" if number % 3 else "preempted"
        records += [
            {"type": "intent", "at": t, "attempt": number, "tag": f"bench.{number}"},
            {"type": "submitted", "at": t, "attempt": number, "job_id": job},
            {"type": "started", "at": start, "attempt": number, "job_id": job, "nodes": ["n1"],
             "requeue_count": 0, "progress": step},
            {"type": "ended", "at": end, "attempt": number, "job_id": job, "outcome": outcome,
             "reason": outcome, "exit_code": 1, "signal": None, "scheduler_state": None,
             "progress": step + 60, "blamed_nodes": [], "source": "job", "provisional": False,
             "signature": f"exit {number}"},
        ]
        lines = [format_line(ProgressPoint(start + 10 + i, step + i + 1,
                                           step + 50 if i >= 49 else None, attempts * 60 + 10))
                 for i in range(60)]
        path = RunDir(run_dir).step_log(number)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(lines))
        step += 50  # the next attempt resumes from the checkpoint: 10 steps redone
        t += 100.0
    header = json.loads(ledger.path.read_text())
    write_json_atomic(ledger.path, {**header, "records": records})
    return run_dir


def bench_report(tmp: Path, attempts: int) -> dict[str, Any]:
    run_dir = generate_run(tmp, attempts)
    state = Ledger.open(run_dir).state()
    start = time.perf_counter()
    cost = run_cost(run_dir, state)
    in_process = time.perf_counter() - start
    walls = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ftslurm.cli", "report", str(run_dir), "--json"],
                       check=True, capture_output=True)
        walls.append(time.perf_counter() - start)
    return {"attempts": attempts, "run_cost_s": round(in_process, 3),
            "ftslurm_report_json_s": round(statistics.median(walls), 3), "target_s": 1.0,
            "lost_steps": sum(a.lost_steps or 0 for a in cost.attempts)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=500)
    parser.add_argument("--attempts", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        report = {"per_call": bench_calls(tmp, args.calls, args.batches),
                  "report": bench_report(tmp, args.attempts)}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
