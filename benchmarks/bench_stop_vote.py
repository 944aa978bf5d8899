"""Cost of one `GracefulShutdown.should_stop()` vote across ranks (gloo, CPU); prints JSON.

    python benchmarks/bench_stop_vote.py [--ranks 4] [--calls 2000] [--check-every 1 10]

Starts the ranks as real processes on this machine (gloo over loopback). Each rank times every
`should_stop()` call; rank 0 reports the median and p99 per call, and the mean cost per step
(amortised over `check_every` steps), next to a bare `dist.all_reduce` of one int32 for scale.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time


def _rank_main(calls: int, check_every: int) -> None:
    import torch
    import torch.distributed as dist

    from ftslurm import GracefulShutdown

    dist.init_process_group("gloo")
    stopper = GracefulShutdown(check_every=check_every)
    flag = torch.zeros(1, dtype=torch.int32)
    for _ in range(200):  # warm-up
        stopper.should_stop()
    dist.barrier()
    vote_ns = []
    for _ in range(calls):
        start = time.perf_counter_ns()
        stopper.should_stop()
        vote_ns.append(time.perf_counter_ns() - start)
    dist.barrier()
    bare_ns = []
    for _ in range(calls):
        start = time.perf_counter_ns()
        dist.all_reduce(flag)
        bare_ns.append(time.perf_counter_ns() - start)
    stopper.close()
    if dist.get_rank() == 0:
        vote_ns.sort()
        print(json.dumps({
            "check_every": check_every,
            "median_us": round(statistics.median(vote_ns) / 1e3, 2),
            "p99_us": round(vote_ns[int(0.99 * len(vote_ns))] / 1e3, 2),
            "mean_per_step_us": round(statistics.fmean(vote_ns) / 1e3, 2),
            "bare_allreduce_median_us": round(statistics.median(bare_ns) / 1e3, 2),
        }))
    dist.destroy_process_group()


def _run(ranks: int, calls: int, check_every: int) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(ranks):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(ranks),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen(
            [sys.executable, __file__, "--rank-main", str(calls), str(check_every)],
            env=env, stdout=subprocess.PIPE if rank == 0 else subprocess.DEVNULL, text=True))
    out, _ = procs[0].communicate()
    for proc in procs[1:]:
        proc.wait()
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--rank-main":
        _rank_main(int(sys.argv[2]), int(sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ranks", type=int, default=4)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--check-every", type=int, nargs="+", default=[1, 10])
    args = parser.parse_args()
    import torch

    results = [_run(args.ranks, args.calls, k) for k in args.check_every]
    print(json.dumps({
        "benchmark": "stop_vote", "ranks": args.ranks, "calls": args.calls,
        "backend": "gloo", "torch": torch.__version__, "python": platform.python_version(),
        "cpus": os.cpu_count(), "results": results,
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
