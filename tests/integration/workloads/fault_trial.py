"""The workload of the randomized fault trials (tests/slurm/test_chain_random_faults.py).

One rank under the fault-tolerant launcher. It trains only while it holds an exclusive flock on
`$FTSLURM_RUN_DIR/training.lock` (a second attempt training at the same time writes
`OVERLAP`), logs `start`/`end` lines with its attempt to `$FTSLURM_RUN_DIR/trainlog`, sends
heartbeats, and does what `$TRIAL_DIR/plan.json` says for its attempt: `ok` (finish: write the
flag), `crash` (exit 1) or `hang` (stop heartbeating; the launcher kills it).
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import threading
import time
from pathlib import Path

from ftslurm.fault_tolerance import RankMonitorClient

STEPS = 8


def log(run_dir: Path, text: str) -> None:
    with open(run_dir / "trainlog", "a") as handle:
        handle.write(f"{text} {time.time():.3f}\n")


def main() -> int:
    run_dir = Path(os.environ["FTSLURM_RUN_DIR"])
    attempt = os.environ["FTSLURM_ATTEMPT"]
    plan = json.loads((Path(os.environ["TRIAL_DIR"]) / "plan.json").read_text())
    fault = plan.get(attempt, "ok")
    lock = open(run_dir / "training.lock", "w")  # noqa: SIM115 (held until the process ends)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        (run_dir / "OVERLAP").write_text(f"attempt {attempt} found another one training\n")
        fcntl.flock(lock, fcntl.LOCK_EX)
    log(run_dir, f"start {attempt} {fault}")
    client = RankMonitorClient()
    client.init_workload_monitoring()
    for step in range(STEPS):
        client.send_heartbeat()
        if step == 3 and fault == "crash":
            log(run_dir, f"crash {attempt}")
            return 1
        if step == 3 and fault == "hang":
            log(run_dir, f"hang {attempt}")
            threading.Event().wait()
        time.sleep(0.25)
    Path(os.environ["FAULT_TOL_FINISHED_FLAG_FILE"]).touch()
    log(run_dir, f"end {attempt}")
    client.shutdown_workload_monitoring()
    return 0


if __name__ == "__main__":
    sys.exit(main())
