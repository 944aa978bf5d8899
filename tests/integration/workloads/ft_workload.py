# ruff: noqa: E402  (the start time is taken before the heavy imports on purpose)
"""A small real gloo workload for the launcher's integration tests and benchmarks.

Every rank joins a gloo process group, then loops: all_reduce, heartbeat. Faults are injected by
command-line options, each only in the chosen rank and restart (TORCHELASTIC_RESTART_COUNT):
a hang in the loop (no more heartbeats), a hang before `init_workload_monitoring`, a crash, a
`ValueError("boom")`, or an exit with a given code. Every rank appends `<rank> <restart>` to
`<out>/started` and, on success, to `<out>/finished`, and says which rank it is on its stdout and
its stderr (`--say`). `--request-timeouts` asks the launcher for heartbeat timeouts as a restored
checkpoint would (`load_state_dict`).
"""

from __future__ import annotations

import time

T0 = time.time()  # before the heavy imports: when this rank's process began running Python
print(f"STARTED pid={__import__('os').getpid()} at={T0:.6f}", flush=True)

import argparse
import json
import os
import sys
import threading
from pathlib import Path

import torch
import torch.distributed as dist

from ftslurm import exit_codes
from ftslurm.fault_tolerance import RankMonitorClient, exit_do_not_retry

RANK = int(os.environ["RANK"])
RESTART = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def hang_forever_in_here() -> None:
    """Block this thread forever, like a rank stuck in a collective that never completes."""
    threading.Event().wait()


def hang_before_monitoring() -> None:
    """Block before the client ever connects (e.g. stuck loading a checkpoint)."""
    threading.Event().wait()


class _NoClient:
    """Stands in for RankMonitorClient under plain torchrun (benchmarks)."""

    def init_workload_monitoring(self) -> None: ...
    def send_heartbeat(self) -> None: ...
    def calculate_and_set_hb_timeouts(self) -> bool: return False
    def shutdown_workload_monitoring(self) -> None: ...
    def state_dict(self) -> dict: return {}


def note(out: Path, name: str, extra: str = "") -> None:
    with open(out / name, "a") as handle:
        handle.write(f"{RANK} {RESTART}{extra}\n")


def wanted(spec: str | None) -> bool:
    """`spec` is "<rank>:<restart>" (restart may be *); true when it names this rank/restart."""
    if not spec:
        return False
    rank, restart = spec.split(":")
    return int(rank) == RANK and restart in ("*", str(RESTART))


def on_node(spec: str | None) -> bool:
    """`spec` is "<node>:<restart>": local rank 1 of that node (SLURMD_NODENAME) and restart."""
    if not spec:
        return False
    node, restart = spec.rsplit(":", 1)
    return (os.environ.get("SLURMD_NODENAME") == node and os.environ.get("LOCAL_RANK") == "1"
            and restart in ("*", str(RESTART)))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--hang", help="rank:restart that stops heartbeating mid-loop")
    parser.add_argument("--hang-on-node", help="node:restart: local rank 1 on that SLURM node "
                        "stops heartbeating mid-loop")
    parser.add_argument("--hang-before-init", help="rank:restart that hangs before init")
    parser.add_argument("--crash", help="rank:restart that raises an exception mid-loop")
    parser.add_argument("--boom", help="rank:restart that raises ValueError('boom') mid-loop")
    parser.add_argument("--say", action="store_true",
                        help="print this rank's own line to stdout and to stderr")
    parser.add_argument("--request-timeouts", metavar="INITIAL:SUBSEQUENT",
                        help="ask the launcher for these heartbeat timeouts (seconds) at init")
    parser.add_argument("--exit-code", help="rank:restart:code that exits with code mid-loop")
    parser.add_argument("--learn", action="store_true", help="calculate_and_set_hb_timeouts")
    parser.add_argument("--state", type=Path, help="client state_dict file to load/save")
    parser.add_argument("--step-time", type=float, default=0.0, help="pace each step (s)")
    parser.add_argument("--no-ft", action="store_true", help="no client (for plain torchrun)")
    args = parser.parse_args()

    note(args.out, "started", f" {os.getpid()} {os.environ.get('SLURMD_NODENAME', '-')} {T0:.6f}")
    if wanted(args.hang_before_init):
        hang_before_monitoring()
    client = _NoClient() if args.no_ft else RankMonitorClient()
    client.init_workload_monitoring()
    if args.say:
        print(f"hello from rank {RANK} restart {RESTART} on stdout", flush=True)
        print(f"hello from rank {RANK} restart {RESTART} on stderr", file=sys.stderr, flush=True)
    if args.request_timeouts:
        initial, subsequent = (float(value) for value in args.request_timeouts.split(":"))
        client.load_state_dict({"hb_timeouts": {"initial": initial, "subsequent": subsequent}})
    if args.state is not None and args.state.exists():
        client.load_state_dict(json.loads(args.state.read_text()))
        note(args.out, "loaded", " " + json.dumps(client.state_dict()))
    # The first heartbeat comes after the (possibly slow) process-group setup, which the initial
    # timeout covers; from then on the short subsequent timeout applies.
    dist.init_process_group("gloo")
    client.send_heartbeat()
    value = torch.ones(1)
    for step in range(args.steps):
        dist.all_reduce(value)
        client.send_heartbeat()
        if args.step_time:
            time.sleep(args.step_time)
        if step == args.steps // 2:
            if wanted(args.hang) or on_node(args.hang_on_node):
                hang_forever_in_here()
            if wanted(args.crash):
                raise RuntimeError("injected crash")
            if wanted(args.boom):
                raise ValueError("boom")
            if args.exit_code and wanted(args.exit_code.rsplit(":", 1)[0]):
                code = int(args.exit_code.rsplit(":", 1)[1])
                if code == exit_codes.DO_NOT_RETRY:
                    exit_do_not_retry("injected")
                sys.exit(code)
    if args.learn:
        client.calculate_and_set_hb_timeouts()
        if args.state is not None and RANK == 0:
            args.state.write_text(json.dumps(client.state_dict()))
    dist.barrier()
    dist.destroy_process_group()
    client.shutdown_workload_monitoring()
    note(args.out, "finished")
    return 0


if __name__ == "__main__":
    try:
        code = main()
    except Exception:
        # Python's own report of the uncaught exception and its exit code 1, leaving through
        # os._exit: the interpreter's finalization with a live gloo group can abort the exit
        # ("terminate called without an active exception", SIGABRT) instead.
        sys.excepthook(*sys.exc_info())
        sys.stderr.flush()
        os._exit(1)
    sys.exit(code)
