"""Cost of `ftslurm ls` over many runs; prints JSON.

    python benchmarks/bench_ls.py [--runs 200] [--attempts 20] [--repeats 3]

Generates a directory of N run directories (a sweep's points: chain.json, a ledger of M ended
attempts each started, reporting 60 steps with a checkpoint, crashed or preempted, its incident
record, and the step logs of every attempt), then measures the wall time of
`ftslurm ls DIR --json` as a process (median of `--repeats`; the Python start-up included) and
of the in-process `find_runs` + `rows` alone, both cold (no run has kept its row in
`summary.json` yet: every goodput is computed from the progress reports) and warm (each ended
run's row kept, as the run's last end hook does on a cluster). Target: under a second for 200
runs of 20 attempts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ftslurm.atomic import write_json_atomic
from ftslurm.chain.fleet import find_runs, rows
from ftslurm.chain.ledger import Ledger
from ftslurm.chain.policy import ChainConfig
from ftslurm.chain.settings import ChainSettings
from ftslurm.progress import ProgressPoint, format_line
from ftslurm.rundir import RunDir


def generate_run(run_dir: Path, attempts: int, sweep_dir: Path) -> None:
    """One run directory of `attempts` ended attempts (the last one finished)."""
    ChainSettings(
        run_dir=str(run_dir), backend="slurm", mode="self", script=str(run_dir / "job.sbatch"),
        workdir=str(run_dir), job_name=run_dir.name, flag_file=str(run_dir / "finished.flag"),
        config=ChainConfig(max_failures=3), owner_uid=0, bin_dir=sys.prefix + "/bin",
        sweep_dir=str(sweep_dir)).save()
    ledger = Ledger.create(run_dir, spec_fingerprint="sha256:bench", run_id=run_dir.name)
    t = time.time() - attempts * 100.0
    records: list[dict[str, Any]] = []
    step = 0
    for number in range(1, attempts + 1):
        job = str(1000 + number)
        start, end = t + 5, t + 80
        last = number == attempts
        outcome = "finished" if last else ("failed" if number % 3 else "preempted")
        records += [
            {"type": "intent", "at": t, "attempt": number, "tag": f"{run_dir.name}.{number}"},
            {"type": "submitted", "at": t, "attempt": number, "job_id": job},
            {"type": "started", "at": start, "attempt": number, "job_id": job, "nodes": ["n1"],
             "requeue_count": 0, "progress": step},
            {"type": "ended", "at": end, "attempt": number, "job_id": job, "outcome": outcome,
             "reason": outcome, "exit_code": 0 if last else 1, "signal": None,
             "scheduler_state": None, "progress": step + 60, "blamed_nodes": [],
             "source": "job", "provisional": False, "signature": f"exit {number}"},
        ]
        paths = RunDir(run_dir)
        lines = [format_line(ProgressPoint(start + 10 + i, step + i + 1,
                                           step + 50 if i >= 49 else None, attempts * 60 + 10))
                 for i in range(60)]
        paths.step_log(number).parent.mkdir(parents=True, exist_ok=True)
        paths.step_log(number).write_text("".join(lines))
        if outcome == "failed":
            write_json_atomic(paths.incident(number), {
                "attempt": number, "culprit": {"rank": 3, "node": "n2", "error": {
                    "line": "ValueError: loss is nan", "type": "ValueError"}},
                "victims": [], "node_evidence": [], "signature": "ValueError: loss is nan"})
        step += 50
        t += 100.0
    records.append({"type": "run_end", "at": t, "state": "finished", "reason": "finished"})
    header = json.loads(ledger.path.read_text())
    write_json_atomic(ledger.path, {**header, "records": records})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--attempts", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        sweep_dir = Path(name) / "sweep"
        for index in range(args.runs):
            generate_run(sweep_dir / f"LR={index}", args.attempts, sweep_dir)
        start = time.perf_counter()
        found = rows(find_runs([sweep_dir]))
        in_process_cold = time.perf_counter() - start
        assert len(found) == args.runs and all(r.attempts == args.attempts for r in found), \
            found[:1]
        start = time.perf_counter()
        rows(find_runs([sweep_dir]))
        in_process_warm = time.perf_counter() - start

        def ls() -> tuple[float, list[dict[str, Any]]]:
            start = time.perf_counter()
            out = subprocess.run([sys.executable, "-m", "ftslurm.cli", "ls", str(sweep_dir),
                                  "--json"], check=True, capture_output=True, text=True).stdout
            return time.perf_counter() - start, json.loads(out)["runs"]

        # cold: no run has its summary yet (every goodput computed from the progress reports)
        colds = []
        for _ in range(args.repeats):
            for run_dir in find_runs([sweep_dir]):
                RunDir(run_dir).summary.unlink(missing_ok=True)
            colds.append(ls()[0])
        # warm: as on a cluster, where each run's last end hook kept its row
        walls, listed = [], []
        for _ in range(args.repeats):
            wall, listed = ls()
            walls.append(wall)
        print(json.dumps({
            "runs": args.runs, "attempts_per_run": args.attempts,
            "rows_in_process_cold_s": round(in_process_cold, 3),
            "rows_in_process_warm_s": round(in_process_warm, 3),
            "ftslurm_ls_json_cold_s": round(statistics.median(colds), 3),
            "ftslurm_ls_json_s": round(statistics.median(walls), 3),
            "ftslurm_ls_json_all_s": [round(w, 3) for w in walls],
            "target_s": 1.0,
            "states": sorted({row["state"] for row in listed}),
            "goodput_example": listed[0]["goodput"],
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
