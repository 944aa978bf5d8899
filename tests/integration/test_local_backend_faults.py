"""The local backend against processes that escape the script's process group, and against a
second local run on the same machine: real processes, real signals, real torch launches."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from ftslurm import env_vars
from ftslurm.backends import AttemptRequest, JobState, LocalScheduler
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
DEADLINE_S = 180.0


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.fixture
def strays() -> Iterator[list[int]]:
    """Pids the test expects to be killed; whatever is left when it ends is killed here."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(OSError):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def final_state(scheduler: LocalScheduler, job_id: str) -> JobState:
    def done() -> JobState | None:
        state = scheduler.states([job_id]).get(job_id)
        return state if state is not None and state.is_final else None

    return wait_for(done, f"job {job_id} to end", timeout=DEADLINE_S)


def submit(scheduler: LocalScheduler, tmp_path: Path, body: str, **kwargs) -> str:
    path = tmp_path / f"{kwargs.get('tag', 'run.1')}.sh"
    path.write_text("set -u\n" + textwrap.dedent(body))
    kwargs.setdefault("tag", "run.1")
    return scheduler.submit(AttemptRequest(script=path, workdir=tmp_path / "work", **kwargs))


def read_pid(path: Path) -> int | None:
    """The pid in `path` once it has been written whole (None before)."""
    with contextlib.suppress(FileNotFoundError, ValueError):
        text = path.read_text()
        if text.endswith("\n"):
            return int(text)
    return None


def stubborn_child(pid_file: Path) -> str:
    """Bash lines that start a child in a session of its own (`setsid`) that ignores SIGTERM and
    sleeps forever, write its pid to `pid_file`, and wait for it."""
    return (f"setsid bash -c \"trap '' TERM; echo \\$\\$ > {pid_file}.tmp; "
            f"mv {pid_file}.tmp {pid_file}; exec sleep 100000\" &\n"
            "wait\n")


def started_child(pid_file: Path, strays: list[int]) -> int:
    pid = wait_for(lambda: read_pid(pid_file), "the child in its own session to start",
                   timeout=DEADLINE_S)
    strays.append(pid)
    assert os.getsid(pid) != os.getsid(os.getpid()) and alive(pid)
    return pid


def test_cancel_kills_a_child_in_a_session_of_its_own(tmp_path: Path, strays: list[int]) -> None:
    scheduler = LocalScheduler(tmp_path / "jobs")
    pid_file = tmp_path / "child.pid"
    job_id = submit(scheduler, tmp_path, stubborn_child(pid_file), kill_wait_s=1)
    pid = started_child(pid_file, strays)
    scheduler.cancel(job_id)
    state = final_state(scheduler, job_id)
    assert state.state == "CANCELLED"
    # the job is recorded as ended only once every process of it is gone
    assert not alive(pid), "a process of a cancelled job outlived the job"


def test_time_limit_kills_a_child_in_a_session_of_its_own(tmp_path: Path,
                                                          strays: list[int]) -> None:
    scheduler = LocalScheduler(tmp_path / "jobs")
    pid_file = tmp_path / "child.pid"
    job_id = submit(scheduler, tmp_path, stubborn_child(pid_file), time_limit_s=3,
                    kill_wait_s=1)
    pid = started_child(pid_file, strays)
    state = final_state(scheduler, job_id)
    assert state.state == "TIMEOUT"
    assert not alive(pid), "a process of a timed-out job outlived the job"


def test_end_of_the_script_kills_what_it_left_in_other_sessions(tmp_path: Path,
                                                                strays: list[int]) -> None:
    scheduler = LocalScheduler(tmp_path / "jobs")
    pid_file = tmp_path / "child.pid"
    release = tmp_path / "release"
    job_id = submit(scheduler, tmp_path, stubborn_child(pid_file).replace(
        "wait\n", f"while [ ! -e {release} ]; do sleep 0.05; done\nexit 0\n"))
    pid = started_child(pid_file, strays)
    release.touch()
    state = final_state(scheduler, job_id)
    assert (state.state, state.exit_code) == ("COMPLETED", 0)
    assert not alive(pid), "a process the script left behind outlived the job"


STUBBORN_RANK = """\
import os, signal
from pathlib import Path
signal.signal(signal.SIGTERM, signal.SIG_IGN)
out = Path(os.environ["RANK_PID_DIR"]) / f"rank-{os.environ['RANK']}"
tmp = out.with_suffix(".tmp")
tmp.write_text(f"{os.getpid()}\\n")
os.replace(tmp, out)
while True:
    signal.pause()
"""


def test_cancel_kills_torchrun_ranks_that_ignore_sigterm(tmp_path: Path,
                                                         strays: list[int]) -> None:
    """torch.distributed.elastic starts each rank in a session of its own; when the launcher is
    killed before it kills them, the ranks must still end with the job."""
    rank_py = tmp_path / "rank.py"
    rank_py.write_text(STUBBORN_RANK)
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    scheduler = LocalScheduler(tmp_path / "jobs")
    job_id = submit(
        scheduler, tmp_path,
        f"{sys.executable} -m torch.distributed.run --standalone --nnodes=1 --nproc-per-node=2 "
        f"{rank_py}\n",
        env={"RANK_PID_DIR": str(pid_dir), "OMP_NUM_THREADS": "1"}, kill_wait_s=2,
    )
    pids = [wait_for(lambda rank=rank: read_pid(pid_dir / f"rank-{rank}"), f"rank {rank}",
                     timeout=DEADLINE_S) for rank in (0, 1)]
    strays.extend(pids)
    assert all(os.getsid(pid) == pid for pid in pids)  # torch's ranks lead their own sessions
    scheduler.cancel(job_id)
    assert final_state(scheduler, job_id).state == "CANCELLED"
    assert not any(alive(pid) for pid in pids), "torchrun's ranks outlived the cancelled job"


def test_concurrent_jobs_of_two_runs_get_different_ports(tmp_path: Path) -> None:
    """Both runs' first job has id 1; each still gets a port of its own."""
    release = tmp_path / "release"
    jobs = {}
    for run in ("a", "b"):
        scheduler = LocalScheduler(tmp_path / run / "local_jobs")
        port_file = tmp_path / f"port-{run}"
        jobs[run] = (scheduler, submit(scheduler, tmp_path, f"""
            echo "${env_vars.RDZV_PORT}" > {port_file}.tmp && mv {port_file}.tmp {port_file}
            while [ ! -e {release} ]; do sleep 0.05; done
            """, tag=f"{run}.1"))

    def port_of(run: str) -> int | None:
        scheduler, job_id = jobs[run]
        port = read_pid(tmp_path / f"port-{run}")
        assert port is not None or not scheduler.states([job_id])[job_id].is_final, \
            (tmp_path / run / "local_jobs" / job_id / "output.log").read_text()
        return port

    ports = {run: wait_for(lambda run=run: port_of(run), f"run {run}'s port", timeout=DEADLINE_S)
             for run in jobs}
    release.touch()
    assert jobs["a"][1] == jobs["b"][1] == "1"
    assert ports["a"] != ports["b"] and all(1024 <= port < 65536 for port in ports.values())
    for run, (scheduler, job_id) in jobs.items():
        assert final_state(scheduler, job_id).state == "COMPLETED"
        state = json.loads((tmp_path / run / "local_jobs" / job_id / "state.json").read_text())
        assert state["rdzv_port"] == ports[run]


GLOO_PAIR = """\
import datetime, os, sys, time
from pathlib import Path
import torch
import torch.distributed as dist

pair, name = Path(os.environ["PAIR_DIR"]), os.environ["PAIR_NAME"]
dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
rank = dist.get_rank()
total = torch.ones(1) * (rank + 1)
dist.all_reduce(total)
assert total.item() == 3, total
(pair / f"{name}-{rank}").write_text(os.environ["MASTER_PORT"])
deadline = time.monotonic() + 120
while len(list(pair.glob("*-*"))) < 4:  # both runs' ranks are up at the same time
    if time.monotonic() > deadline:
        sys.exit("the other run never came up")
    time.sleep(0.05)
dist.barrier()
dist.destroy_process_group()
if rank == 0:
    Path(os.environ["FAULT_TOL_FINISHED_FLAG_FILE"]).touch()
"""


def write_gloo_spec(tmp_path: Path, name: str, workload: Path, pair_dir: Path) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text("\n".join([
        f"name: {name}", "nodes: 1", "nproc_per_node: 2", 'time: "10:00"', "launcher: none",
        f"python: {sys.executable}", f"run_dir: {tmp_path / name}",
        f"command: [{sys.executable}, {workload}]",
        "env:", f"  PAIR_DIR: {pair_dir}", f"  PAIR_NAME: {name}", '  OMP_NUM_THREADS: "1"',
    ]) + "\n")
    return path


def test_two_concurrent_local_runs_of_gloo_ranks_both_finish(tmp_path: Path) -> None:
    """Two runs on this machine at once, `launcher: none` (MASTER_PORT from the local script):
    neither attacks the other's store, and both finish in their first attempt."""
    workload = tmp_path / "gloo_pair.py"
    workload.write_text(GLOO_PAIR)
    pair_dir = tmp_path / "pair"
    pair_dir.mkdir()
    watchers = [subprocess.Popen(
        [sys.executable, "-m", "ftslurm.cli", "submit", "--backend", "local", "--max-failures",
         "1", str(write_gloo_spec(tmp_path, name, workload, pair_dir))],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    ) for name in ("first", "second")]
    try:
        outputs = [watcher.communicate(timeout=DEADLINE_S)[0] for watcher in watchers]
    finally:
        for watcher in watchers:
            if watcher.poll() is None:
                watcher.kill()
    for name, watcher, output in zip(("first", "second"), watchers, outputs, strict=True):
        assert watcher.returncode == 0, f"{name}:\n{output}"
        ledger = json.loads(subprocess.run(
            [sys.executable, "-m", "ftslurm.cli", "status", str(tmp_path / name), "--json"],
            cwd=REPO, capture_output=True, text=True, check=True).stdout)
        assert [a["outcome"] for a in ledger["attempts"]] == ["finished"], f"{name}:\n{output}"
    ports = {path.name: path.read_text() for path in pair_dir.iterdir()}
    assert ports["first-0"] == ports["first-1"] != ports["second-0"] == ports["second-1"]
