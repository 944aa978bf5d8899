"""Launcher benchmarks, side by side with plain torchrun (same torch); prints JSON.

    python benchmarks/bench_launcher.py [--repeats 3] [--idle-ranks 32] [--idle-window 10]

- startup: wall time of a trivial 2-rank job under `torchrun` and under `ft_launcher`.
- hang: a rank stops heartbeating with a 2 s timeout; from the status file: last heartbeat to
  the termination signal (target <= timeout + 0.5 s) and last heartbeat to the first line printed
  by the last of the restarted ranks (target <= timeout + 1.5 s). torchrun has no hang detection.
- idle CPU: launcher process CPU use (utime+stime from /proc) with N idle ranks on one node.
nvidia-resiliency-ext cannot be installed in this environment, so it is not measured.
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

ROOT = Path(__file__).resolve().parent.parent
WORKLOAD = ROOT / "tests" / "integration" / "workloads" / "ft_workload.py"
BIN = Path(sys.executable).parent
ENV = {**os.environ, "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1", "OMP_NUM_THREADS": "1"}

TRIVIAL = "import os\nprint('rank', os.environ['RANK'], flush=True)\n"
IDLE = """
import os, sys, threading, time
print('up', flush=True)
with open(sys.argv[1], 'a') as f:
    f.write(os.environ['RANK'] + '\\n')
client = None
if os.environ.get('FTSLURM_FT_IPC_DIR'):
    from ftslurm.fault_tolerance import RankMonitorClient
    client = RankMonitorClient()
    client.init_workload_monitoring()
stop = threading.Event()
while not stop.wait(1.0):
    if client:
        client.send_heartbeat()
"""


def launcher(kind: str, *args: str) -> list[str]:
    exe = BIN / ("torchrun" if kind == "torchrun" else "ft_launcher")
    return [str(exe), "--standalone", *args]


def bench_startup(tmp: Path, repeats: int) -> dict:
    script = tmp / "trivial.py"
    script.write_text(TRIVIAL)
    out: dict[str, float] = {}
    for kind in ("torchrun", "ft_launcher"):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run(launcher(kind, "--nproc-per-node", "2", str(script)), env=ENV,
                           check=True, capture_output=True)
            times.append(time.perf_counter() - start)
        out[f"{kind}_median_s"] = round(statistics.median(times), 3)
    out["overhead_s"] = round(out["ft_launcher_median_s"] - out["torchrun_median_s"], 3)
    return out


def bench_hang(tmp: Path, repeats: int) -> dict:
    detect, restart = [], []
    for i in range(repeats):
        out = tmp / f"hang{i}"
        out.mkdir()
        status = out / "status.json"
        subprocess.run(
            launcher("ft_launcher", "--nproc-per-node", "2", "--max-restarts", "1",
                     "--ft-rank-heartbeat-timeout", "2", "--ft-status-file", str(status),
                     str(WORKLOAD), "--out", str(out), "--steps", "40", "--step-time", "0.02",
                     "--hang", "1:0"),
            env=ENV, check=True, capture_output=True,
        )
        events = json.loads(status.read_text())["events"]
        hang = next(e for e in events if e["kind"] == "hang" and e["rank"] == 1)
        detect.append(hang["stop_latency"])
        restarted = [float(f[4]) for f in (row.split() for row in (out / "started").read_text()
                                           .splitlines()) if f[1] == "1"]
        restart.append(max(restarted) - hang["last_heartbeat_at"])
    return {
        "timeout_s": 2.0,
        "last_heartbeat_to_stop_s": {"median": round(statistics.median(detect), 3),
                                     "max": round(max(detect), 3), "target": 2.5},
        "last_heartbeat_to_all_restarted_s": {"median": round(statistics.median(restart), 3),
                                              "max": round(max(restart), 3), "target": 3.5},
        "torchrun": "no hang detection: a hung rank blocks the job until SLURM's time limit",
    }


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_idle_cpu(tmp: Path, ranks: int, window: float) -> dict:
    script = tmp / "idle.py"
    script.write_text(IDLE)
    result = {"ranks": ranks, "window_s": window}
    for kind in ("torchrun", "ft_launcher"):
        marker = tmp / f"idle-{kind}"
        proc = subprocess.Popen(launcher(kind, "--nproc-per-node", str(ranks), str(script),
                                         str(marker)), env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while not marker.exists() or len(marker.read_text().split()) < ranks:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{kind}: ranks did not start")
            time.sleep(0.2)
        time.sleep(2.0)  # let the launch settle before the measurement window
        before, t0 = _cpu_seconds(proc.pid), time.monotonic()
        time.sleep(window)
        used, elapsed = _cpu_seconds(proc.pid) - before, time.monotonic() - t0
        proc.terminate()
        proc.wait(timeout=120)
        result[f"{kind}_cpu_percent"] = round(100 * used / elapsed, 2)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--idle-ranks", type=int, default=32)
    parser.add_argument("--idle-window", type=float, default=10.0)
    parser.add_argument("--only", choices=["startup", "hang", "idle"], action="append")
    args = parser.parse_args()
    only = set(args.only or ["startup", "hang", "idle"])
    import torch

    report: dict = {"torch": torch.__version__, "cpus": os.cpu_count(),
                    "nvidia_resiliency_ext": "not measured: cannot be installed here"}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if "startup" in only:
            report["startup_2_ranks"] = bench_startup(tmp, args.repeats)
        if "hang" in only:
            report["hang_2s_timeout"] = bench_hang(tmp, args.repeats)
        if "idle" in only:
            report["idle_cpu"] = bench_idle_cpu(tmp, args.idle_ranks, args.idle_window)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
