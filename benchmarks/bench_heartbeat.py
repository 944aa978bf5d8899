"""Cost of one `RankMonitorClient.send_heartbeat()` call; prints JSON.

    python benchmarks/bench_heartbeat.py [--calls 1000] [--batches 2000]

The client is connected to a real slot (the launcher side is simulated by creating the slot the
way the launcher does). Reported: the median over batches of the mean per-call time, so timer
overhead is amortised. torchrun has no heartbeat to compare with; nvidia-resiliency-ext cannot be
installed here (no package for this environment), so its socket-based heartbeat is not measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

from ftslurm import env_vars
from ftslurm.fault_tolerance import RankMonitorClient
from ftslurm.fault_tolerance.heartbeat import Slot, make_private_dir, slot_path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1000, help="calls per timed batch")
    parser.add_argument("--batches", type=int, default=2000)
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
    print(json.dumps({
        "benchmark": "send_heartbeat",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "calls": args.calls * args.batches,
        "median_ns": round(statistics.median(per_call_ns), 1),
        "p99_ns": round(per_call_ns[int(0.99 * (len(per_call_ns) - 1))], 1),
        "empty_loop_ns": round(statistics.median(loop_ns), 1),
        "target_ns": 2000,
        "nvidia_resiliency_ext": "not measured: cannot be installed in this environment",
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
