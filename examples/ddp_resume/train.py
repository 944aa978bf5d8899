"""A small DDP training job (gloo, CPU) that survives crashes, hangs and preemption.

Run it under `ftslurm launch` / `torchrun` (or `ftslurm submit examples/ddp_resume/job.yaml`).
Every attempt resumes from the last checkpoint; a synchronized stop (SIGTERM, preemption, the
time-limit warning) saves a checkpoint at the same step on every rank; the run writes the
finished flag ($FAULT_TOL_FINISHED_FLAG_FILE) only when all steps are done. The data of step s is
generated from (seed, s), so a resumed run ends with bitwise the same parameters as an
uninterrupted one.

It reports every step to ftslurm (`ftslurm.report_progress`: the goodput accounting and the
ETA of `ftslurm report`), marking the steps it checkpointed.

Fault injection for demos and tests (each fires once per run, remembered in the checkpoint dir):
  --crash-at-step S   rank --fault-rank exits with code 1 at step S
  --hang-at-step S    rank --fault-rank stops making progress (sleeps forever) at step S
  --step-log FILE     rank 0 appends "<time> <step> <attempt> <restart>" after every step: the
                      workload's own account, to check `ftslurm report` against
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ftslurm import GracefulShutdown, report_progress


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="total training steps")
    parser.add_argument("--ckpt-dir", type=Path, default=None,
                        help="checkpoint folder (default: $FTSLURM_RUN_DIR/checkpoints)")
    parser.add_argument("--ckpt-every", type=int, default=20, help="periodic checkpoint interval")
    parser.add_argument("--step-time", type=float, default=0.0, help="extra seconds per step")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--crash-at-step", type=int, default=None)
    parser.add_argument("--hang-at-step", type=int, default=None)
    parser.add_argument("--fault-rank", type=int, default=0, help="the rank that crashes/hangs")
    parser.add_argument("--step-log", type=Path, default=None,
                        help="rank 0 appends '<time> <step> <attempt> <restart>' per step")
    return parser.parse_args(argv)


def checkpoint_dir(args: argparse.Namespace) -> Path:
    if args.ckpt_dir is not None:
        return args.ckpt_dir
    return Path(os.environ.get("FTSLURM_RUN_DIR", ".")) / "checkpoints"


def batch(seed: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The (same on every attempt) synthetic batch of a step, split across ranks."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    x = torch.randn(64, 8, generator=gen)
    y = x @ torch.arange(1.0, 9.0).unsqueeze(1) + 0.1 * torch.randn(64, 1, generator=gen)
    rank, world = dist.get_rank(), dist.get_world_size()
    return x[rank::world], y[rank::world]


def save(ckpt: Path, step: int, model: nn.Module, opt: torch.optim.Optimizer) -> None:
    """Rank 0 writes the checkpoint atomically (temp file + rename)."""
    if dist.get_rank() == 0:
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        tmp = ckpt.with_suffix(".tmp")
        torch.save({"step": step, "model": model.state_dict(), "opt": opt.state_dict()}, tmp)
        os.replace(tmp, ckpt)
    dist.barrier()


def params_digest(model: nn.Module) -> str:
    data = b"".join(p.detach().numpy().tobytes() for p in model.parameters())
    return hashlib.sha256(data).hexdigest()[:16]


def inject_fault(args: argparse.Namespace, step: int, ckpt_dir: Path) -> None:
    """Crash or hang once per run at the requested step on the requested rank."""
    for kind, at in (("crash", args.crash_at_step), ("hang", args.hang_at_step)):
        marker = ckpt_dir / f"injected-{kind}"
        if at != step or dist.get_rank() != args.fault_rank or marker.exists():
            continue
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        print(f"injecting a {kind} at step {step} on rank {dist.get_rank()}", flush=True)
        if kind == "crash":
            os._exit(1)
        while True:
            time.sleep(3600)


def heartbeat_client():
    """The launcher's rank monitor client under `ftslurm launch`; None under plain torchrun."""
    from ftslurm.fault_tolerance import RankMonitorClient, RankMonitorClientError

    client = RankMonitorClient()
    try:
        client.init_workload_monitoring()
    except RankMonitorClientError as error:
        if dist.get_rank() == 0:
            print(f"running without heartbeats: {error}", flush=True)
        return None
    return client


def train(args: argparse.Namespace) -> int:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    stopper = GracefulShutdown()
    client = heartbeat_client()
    ckpt_dir = checkpoint_dir(args)
    ckpt = ckpt_dir / "last.pt"

    torch.manual_seed(args.seed)
    model = DistributedDataParallel(nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    start = 0
    if ckpt.exists():
        state = torch.load(ckpt)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start = state["step"]
    if rank == 0:
        attempt = os.environ.get("FTSLURM_ATTEMPT", "?")
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        print(f"attempt {attempt} (restart {restart}): resuming at step {start} of {args.steps}",
              flush=True)

    step = start
    while step < args.steps:
        inject_fault(args, step, ckpt_dir)
        x, y = batch(args.seed, step)
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        step += 1
        if client is not None:
            client.send_heartbeat()
        if args.step_time:
            time.sleep(args.step_time)
        if rank == 0 and args.step_log is not None:
            with args.step_log.open("a") as out:
                out.write(f"{time.time():.3f} {step} {os.environ.get('FTSLURM_ATTEMPT', '?')} "
                          f"{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}\n")
        if stopper.should_stop():
            save(ckpt, step, model, opt)
            report_progress(step, total=args.steps, checkpointed=True)
            if rank == 0:
                cause = stopper.received_signal.name if stopper.received_signal else "a peer"
                print(f"stopped by {cause} at step {step}; "
                      "checkpoint saved", flush=True)
            break
        saved = step % args.ckpt_every == 0
        if saved:
            save(ckpt, step, model, opt)
        report_progress(step, total=args.steps, checkpointed=saved)
    else:
        save(ckpt, step, model, opt)
        report_progress(step, total=args.steps, checkpointed=True)
        flag = os.environ.get("FAULT_TOL_FINISHED_FLAG_FILE")
        if rank == 0:
            print(f"finished {step} steps; params {params_digest(model)}", flush=True)
            if flag:
                Path(flag).parent.mkdir(parents=True, exist_ok=True)
                Path(flag).touch()
    if client is not None:
        client.shutdown_workload_monitoring()
    stopper.close()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(train(parse_args()))
