"""Cost of one `RankMonitorClient.send_heartbeat()` call; prints JSON.

    python benchmarks/bench_heartbeat.py [--calls 1000] [--batches 2000]
                                         [--nvrx-venv .venv-nvrx] [--peer-calls 100]
                                         [--peer-batches 200]

The client is connected to a real slot (the launcher side is simulated by creating the slot the
way the launcher does). Reported: the median over batches of the mean per-call time, so timer
overhead is amortised. torchrun has no heartbeat to compare with.

Side by side (`under_launcher`): one rank started by each fault-tolerant launcher times its own
client with the same workload (benchmarks/workloads/rank.py heartbeat), ftslurm's and
nvidia-resiliency-ext's (from the venv of scripts/install-peer-nvrx; its heartbeat is a message
over a Unix socket to a rank monitor process, answered before `send_heartbeat()` returns, so
fewer calls are timed: --peer-calls x --peer-batches).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ftslurm import env_vars
from ftslurm.fault_tolerance import RankMonitorClient
from ftslurm.fault_tolerance.heartbeat import Slot, make_private_dir, slot_path

ROOT = Path(__file__).resolve().parent.parent
WORKLOAD = ROOT / "benchmarks" / "workloads" / "rank.py"


def under_launcher(launcher: Path, client: str, calls: int, batches: int,
                   extra: list[str]) -> dict[str, Any]:
    """One rank under `launcher` times its client's send_heartbeat() (rank.py heartbeat)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "heartbeat.json"
        env = {k: v for k, v in os.environ.items()
               if k not in (env_vars.FT_IPC_DIR, env_vars.RANK, env_vars.RUN_DIR)}
        env.update({"BENCH_FT_CLIENT": client, "OMP_NUM_THREADS": "1",
                    "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"})
        cmd = [str(launcher), "--standalone", "--nproc-per-node", "1", *extra,
               "--ft-rank-heartbeat-timeout", "600", "--ft-initial-rank-heartbeat-timeout", "600",
               str(WORKLOAD), "heartbeat", str(out), "--calls", str(calls),
               "--batches", str(batches)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise RuntimeError(f"{client}: exit code {done.returncode}\n{done.stdout[-3000:]}"
                               f"{done.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(out.read_text())
    result.pop("client", None)
    if not result.get("effective_config"):
        result.pop("effective_config", None)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1000, help="calls per timed batch")
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--nvrx-venv", type=Path, default=ROOT / ".venv-nvrx",
                        help="venv made by scripts/install-peer-nvrx (default: %(default)s)")
    parser.add_argument("--peer-calls", type=int, default=100,
                        help="calls per timed batch, under each launcher")
    parser.add_argument("--peer-batches", type=int, default=200)
    args = parser.parse_args()

    ipc_dir = make_private_dir()
    os.environ[env_vars.FT_IPC_DIR], os.environ[env_vars.RANK] = str(ipc_dir), "0"
    slot = Slot.create(slot_path(ipc_dir, 0), time.monotonic())
    client = RankMonitorClient()
    client.init_workload_monitoring()
    heartbeat = client.send_heartbeat
    for _ in range(10_000):  # warm-up
        heartbeat()
    per_call_ns = []
    clock = time.perf_counter_ns
    for _ in range(args.batches):
        start = clock()
        for _ in range(args.calls):
            heartbeat()
        per_call_ns.append((clock() - start) / args.calls)
    # The empty loop's own cost, to report the heartbeat alone as well.
    loop_ns = []
    for _ in range(200):
        start = clock()
        for _ in range(args.calls):
            pass
        loop_ns.append((clock() - start) / args.calls)
    client.shutdown_workload_monitoring()
    assert slot.read().heartbeat_count == 10_000 + args.calls * args.batches
    slot.close()
    for path in ipc_dir.iterdir():
        path.unlink()
    ipc_dir.rmdir()
    per_call_ns.sort()
    report: dict[str, Any] = {
        "benchmark": "send_heartbeat",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "calls": args.calls * args.batches,
        "median_ns": round(statistics.median(per_call_ns), 1),
        "p99_ns": round(per_call_ns[int(0.99 * (len(per_call_ns) - 1))], 1),
        "empty_loop_ns": round(statistics.median(loop_ns), 1),
        "target_ns": 2000,
    }
    side: dict[str, Any] = {"ftslurm": under_launcher(
        Path(sys.executable).parent / "ft_launcher", "ftslurm", args.peer_calls,
        args.peer_batches, [])}
    nvrx_launcher = args.nvrx_venv / "bin" / "ft_launcher"
    if nvrx_launcher.exists():
        side["nvrx"] = under_launcher(nvrx_launcher, "nvrx", args.peer_calls, args.peer_batches,
                                      ["--ft-enable-nic-monitor=false"])
        side["ratios"] = {"nvrx/ftslurm": round(side["nvrx"]["median_ns"]
                                                / side["ftslurm"]["median_ns"], 1)}
        report["nvidia_resiliency_ext"] = {
            "median_ns": side["nvrx"]["median_ns"], "p99_ns": side["nvrx"]["p99_ns"],
            "calls": side["nvrx"]["calls"], "venv": str(args.nvrx_venv),
        }
    else:
        report["nvidia_resiliency_ext"] = "not measured: run scripts/install-peer-nvrx"
    report["under_launcher"] = side
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
