"""The `--max-parallel` invariant under racing processes: however many processes advance a sweep
at the same moment (the end hooks of runs that end together, watchers), no more than
max_parallel points are ever reserved or active."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from ftslurm.api import prepare_sweep
from ftslurm.chain.ledger import Ledger
from ftslurm.chain.outcome import RunStatus
from ftslurm.chain.run import write_run
from ftslurm.chain.sweep import Phase, _reserve_turns, load_sweep, manifest_for, phase, save_sweep
from ftslurm.spec.sweep import plan_sweep

SPEC = """name: race
nodes: 1
time: "1:00:00"
command: [train.py]
"""


def make_sweep(tmp_path: Path, points: int, limit: int) -> Path:
    (tmp_path / "train.py").touch()
    spec = tmp_path / "job.yaml"
    spec.write_text(SPEC)
    plan = plan_sweep(spec, [f"env.P={','.join(str(n) for n in range(points))}"], limit)
    assert plan is not None
    for prepared in prepare_sweep(plan, backend="local"):
        write_run(prepared, resume=False)
    save_sweep(manifest_for(plan))
    return plan.sweep_dir


def reserve(root: str, start: multiprocessing.synchronize.Event, out: multiprocessing.Queue
            ) -> None:
    start.wait()
    out.put([point.name for point in _reserve_turns(Path(root)).points])


def race(root: Path, racers: int) -> list[str]:
    context = multiprocessing.get_context("spawn")
    start, out = context.Event(), context.Queue()
    procs = [context.Process(target=reserve, args=(str(root), start, out)) for _ in range(racers)]
    for proc in procs:
        proc.start()
    start.set()
    taken = [name for _ in procs for name in out.get(timeout=120)]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    return taken


def active(root: Path) -> list[str]:
    sweep = load_sweep(root)
    return [p.name for p in sweep.points
            if phase(Ledger.open(sweep.run_dir(p)).state()) is Phase.ACTIVE]


@pytest.mark.parametrize("racers", [6])
def test_racing_advancers_never_start_more_than_max_parallel(tmp_path: Path,
                                                             racers: int) -> None:
    root = make_sweep(tmp_path, points=10, limit=3)
    taken = race(root, racers)
    assert len(taken) == 3 and len(set(taken)) == 3, taken
    assert sorted(active(root)) == sorted(taken)
    # two runs end: the next racers take exactly their two slots, the first waiting in order
    sweep = load_sweep(root)
    for name in taken[:2]:
        Ledger.open(root / name).record_run_end(RunStatus.FINISHED, "test")
    again = race(root, racers)
    waiting = [p.name for p in sweep.points if p.name not in taken]
    assert sorted(again) == sorted(waiting[:2]), again
    assert len(active(root)) == 3
