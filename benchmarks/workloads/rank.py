# ruff: noqa: E402  (the start time is taken before the imports on purpose)
"""One rank of the launcher benchmarks, under torchrun, ftslurm's launcher or nvrx's ft_launcher.

    rank.py trivial                      print one line and exit
    rank.py idle MARKER                  heartbeat and print a line once a second, forever
    rank.py hang OUT                     rank 1 of round 0 stops heartbeating; round 1 finishes
    rank.py heartbeat OUT --calls N --batches M   time send_heartbeat(), write JSON to OUT

`$BENCH_FT_CLIENT` says whose `RankMonitorClient` to use, the one of the launcher that started
this rank: "ftslurm" (`ftslurm.fault_tolerance`), "nvrx" (`nvidia_resiliency_ext.
fault_tolerance`) or "none" (plain torchrun). Both clients have the same API.

Files written for the hang measurement, one line per event, epoch seconds (time.time()):
`OUT/started`: "<rank> <restart> <pid> <process start> <ready>" (ready = after importing torch,
`init_workload_monitoring()` and the first heartbeat); `OUT/last_heartbeat`: the time the hung
rank's last `send_heartbeat()` returned. Under nvrx, `OUT/effective_config.json` is the
`FaultToleranceConfig` its rank monitor sent to the client: the settings actually in force.
"""

from __future__ import annotations

import time

T0 = time.time()  # before the imports: when this rank's process began running Python

import argparse
import json
import os
import signal
import statistics
import sys
import threading
from pathlib import Path
from typing import Any

RANK = int(os.environ["RANK"])
RESTART = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
CLIENT = os.environ.get("BENCH_FT_CLIENT", "none")


def connect() -> Any:
    """The launcher's client, initialised, or None under plain torchrun."""
    if CLIENT == "ftslurm":
        from ftslurm.fault_tolerance import RankMonitorClient
    elif CLIENT == "nvrx":
        from nvidia_resiliency_ext.fault_tolerance import (  # type: ignore[import-not-found,no-redef]
            RankMonitorClient,
        )
    elif CLIENT == "none":
        return None
    else:
        raise SystemExit(f"unknown BENCH_FT_CLIENT={CLIENT!r}")
    client = RankMonitorClient()
    client.init_workload_monitoring()
    return client


def append(path: Path, line: str) -> None:
    with open(path, "a") as handle:
        handle.write(line + "\n")


def effective_config(client: Any) -> dict[str, Any]:
    """nvrx: the FaultToleranceConfig the rank monitor server sent at init (what is in force)."""
    cfg = getattr(client, "cfg", None)
    if cfg is None:
        return {}
    names = ("workload_check_interval", "initial_rank_heartbeat_timeout",
             "rank_heartbeat_timeout", "rank_termination_signal", "node_health_check_interval",
             "enable_nic_monitor", "restart_check_interval", "safety_factor",
             "rank_out_of_section_timeout")
    out = {}
    for name in names:
        value = getattr(cfg, name, None)
        out[name] = value.name if isinstance(value, signal.Signals) else value
    return out


def idle(marker: Path) -> None:
    client = connect()
    append(marker, f"{RANK} {os.getpid()}")
    beat = 0
    while True:
        time.sleep(1.0)
        if client is not None:
            client.send_heartbeat()
        beat += 1
        print(f"rank {RANK} beat {beat}", flush=True)  # something for a tee to copy


def hang(out: Path) -> None:
    import torch  # noqa: F401  (a real rank has it loaded before it heartbeats)

    client = connect()
    client.send_heartbeat()
    append(out / "started", f"{RANK} {RESTART} {os.getpid()} {T0:.6f} {time.time():.6f}")
    if RANK == 0 and RESTART == 0 and CLIENT == "nvrx":
        (out / "effective_config.json").write_text(json.dumps(effective_config(client)))
    if RESTART == 0 and RANK == 1:
        for _ in range(10):
            time.sleep(0.1)
            client.send_heartbeat()
        append(out / "last_heartbeat", f"{time.time():.6f}")
        threading.Event().wait()  # hung: no more heartbeats, until the launcher stops it
    # The other ranks keep heartbeating; in the next round every rank finishes after a second.
    for _ in range(10 if RESTART else 10**6):
        time.sleep(0.1)
        client.send_heartbeat()
    client.shutdown_workload_monitoring()


def heartbeat(out: Path, calls: int, batches: int) -> None:
    client = connect()
    heartbeat = client.send_heartbeat
    for _ in range(max(calls, 1000)):  # warm-up
        heartbeat()
    clock = time.perf_counter_ns
    per_call_ns = []
    for _ in range(batches):
        start = clock()
        for _ in range(calls):
            heartbeat()
        per_call_ns.append((clock() - start) / calls)
    client.shutdown_workload_monitoring()
    per_call_ns.sort()
    out.write_text(json.dumps({
        "client": CLIENT,
        "calls": calls * batches,
        "median_ns": round(statistics.median(per_call_ns), 1),
        "p99_ns": round(per_call_ns[int(0.99 * (len(per_call_ns) - 1))], 1),
        "effective_config": effective_config(client),
    }))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["trivial", "idle", "hang", "heartbeat"])
    parser.add_argument("path", nargs="?", type=Path)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--batches", type=int, default=100)
    args = parser.parse_args()
    if args.mode == "trivial":
        print("rank", RANK, flush=True)
    elif args.mode == "idle":
        idle(args.path)
    elif args.mode == "hang":
        hang(args.path)
    else:
        heartbeat(args.path, args.calls, args.batches)
    return 0


if __name__ == "__main__":
    sys.exit(main())
