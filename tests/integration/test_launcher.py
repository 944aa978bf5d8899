"""The fault-tolerant launcher end to end: real ranks, real gloo, real hangs, signals and restarts.

Each test runs `ftslurm launch` with 2 ranks of tests/integration/workloads/ft_workload.py, which
injects one fault in a chosen rank and restart. Nothing here depends on how long things take:
timeouts are configuration, waits poll files with generous deadlines.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ftslurm import exit_codes
from ftslurm.fault_tolerance.procs import process_alive
from tests.waiting import wait_for

WORKLOAD = Path(__file__).parent / "workloads" / "ft_workload.py"
pytestmark = pytest.mark.timeout(180)


def launch_cmd(tmp_path: Path, *options: str, workload: tuple[str, ...] = (),
               status_file: bool = True) -> list[str]:
    status = ["--ft-status-file", str(tmp_path / "status.json")] if status_file else []
    return [
        sys.executable, "-m", "ftslurm.cli", "launch", "--standalone", "--nproc-per-node", "2",
        "--monitor-interval", "0.1", "--ft-rank-heartbeat-timeout", "2",
        "--ft-initial-rank-heartbeat-timeout", "60", *status, *options,
        str(WORKLOAD), "--out", str(tmp_path), *workload,
    ]


def launch(tmp_path: Path, *options: str, workload: tuple[str, ...] = (),
           env: dict[str, str] | None = None,
           status_file: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        launch_cmd(tmp_path, *options, workload=workload, status_file=status_file),
        capture_output=True, text=True,
        timeout=150, env={**os.environ, **(env or {})},
    )


def lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def restarts_seen(tmp_path: Path, name: str) -> set[tuple[int, int]]:
    return {(int(rank), int(restart)) for rank, restart, *_ in lines(tmp_path / name)}


def status(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "status.json").read_text())


def test_hung_rank_is_dumped_killed_and_the_group_restarts(tmp_path: Path) -> None:
    result = launch(tmp_path, "--max-restarts", "2", "--log-dir", str(tmp_path / "logs"),
                    "--redirects", "3", workload=("--hang", "1:0"))
    assert result.returncode == exit_codes.OK, result.stderr
    assert restarts_seen(tmp_path, "finished") == {(0, 1), (1, 1)}
    # The hung rank's own log holds the stack dump naming the function where it hung.
    [log] = (tmp_path / "logs").glob("*/attempt_0/1/stderr.log")
    assert "in hang_forever_in_here" in log.read_text()
    hangs = [e for e in status(tmp_path)["events"] if e["kind"] == "hang"]
    assert 1 in {e["rank"] for e in hangs}
    hang = next(e for e in hangs if e["rank"] == 1)
    assert hang["phase"] == "subsequent" and hang["action"] == "restart"
    assert hang["heartbeat_age"] > hang["timeout"] == 2.0 and hang["stack_dumped"]
    assert status(tmp_path)["state"] == "succeeded"
    assert "rank 1 (local rank 1" in result.stderr and "is hung" in result.stderr


def test_rank_hung_before_init_is_caught_by_the_initial_timeout(tmp_path: Path) -> None:
    # The other rank blocks in gloo's init waiting for rank 0: a long subsequent timeout keeps
    # it from being the one that is caught.
    result = launch(tmp_path, "--max-restarts", "1", "--ft-initial-rank-heartbeat-timeout", "15",
                    "--ft-rank-heartbeat-timeout", "120", workload=("--hang-before-init", "0:0"))
    assert result.returncode == exit_codes.OK, result.stderr
    assert restarts_seen(tmp_path, "finished") == {(0, 1), (1, 1)}
    [hang] = [e for e in status(tmp_path)["events"] if e["kind"] == "hang" and e["rank"] == 0]
    assert hang["phase"] == "initial" and hang["heartbeat_age"] > 15


def test_crashed_rank_restarts_the_group(tmp_path: Path) -> None:
    result = launch(tmp_path, "--max-restarts", "1", workload=("--crash", "0:0"))
    assert result.returncode == exit_codes.OK, result.stderr
    assert restarts_seen(tmp_path, "finished") == {(0, 1), (1, 1)}
    crash = [e for e in status(tmp_path)["events"] if e["kind"] == "crash"]
    assert {e["rank"] for e in crash} >= {0}


def test_restarts_stop_at_max_restarts(tmp_path: Path) -> None:
    result = launch(tmp_path, "--max-restarts", "1", workload=("--crash", "1:*"))
    assert result.returncode == exit_codes.FAILED
    assert {restart for _, restart in restarts_seen(tmp_path, "started")} == {0, 1}
    final = status(tmp_path)
    assert final["state"] == "failed" and final["exit_code"] == exit_codes.FAILED
    assert final["events"][-1]["action"] == "give_up"


def test_do_not_retry_exit_code_is_not_restarted(tmp_path: Path) -> None:
    result = launch(tmp_path, "--max-restarts", "3", workload=("--exit-code", "1:0:93"))
    assert result.returncode == exit_codes.DO_NOT_RETRY
    assert {restart for _, restart in restarts_seen(tmp_path, "started")} == {0}
    assert status(tmp_path)["state"] == "do_not_retry"


def test_sigterm_stops_the_ranks_and_exits_94(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        launch_cmd(tmp_path, "--max-restarts", "3",
                   workload=("--steps", "100000", "--step-time", "0.05")),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    wait_for(lambda: len(lines(tmp_path / "started")) >= 2 or proc.poll() is not None,
             "both ranks to start", 120)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == exit_codes.STOPPED, output
    pids = [int(fields[2]) for fields in lines(tmp_path / "started")]
    assert not any(process_alive(pid) for pid in pids)
    assert status(tmp_path)["state"] == "stopped"
    assert {restart for _, restart in restarts_seen(tmp_path, "started")} == {0}


def test_learned_timeouts_are_kept_in_the_run_dir(tmp_path: Path) -> None:
    run_dir, state = tmp_path / "run", tmp_path / "client_state.json"
    env = {"FTSLURM_RUN_DIR": str(run_dir), "FTSLURM_ATTEMPT": "1"}
    # A big safety factor: the second run (on a busy machine) must not trip the learned timeouts.
    first = launch(tmp_path, "--ft-safety-factor", "200",
                   workload=("--learn", "--state", str(state)), env=env)
    assert first.returncode == exit_codes.OK, first.stderr
    learned = json.loads((run_dir / "ft_learned_timeouts.json").read_text())
    saved = json.loads(state.read_text())["hb_timeouts"]
    assert learned["subsequent"] == saved["subsequent"] and learned["initial"] == saved["initial"]

    env["FTSLURM_ATTEMPT"] = "2"
    # No floor: this checks that the learned timeouts themselves are the ones in force.
    second = launch(tmp_path, "--ft-min-learned-timeout", "null", workload=("--state", str(state)),
                    env=env, status_file=False)
    assert second.returncode == exit_codes.OK, second.stderr
    assert "using learned heartbeat timeouts" in second.stderr
    [status_file] = (run_dir / "launcher_status").glob("attempt-2.*.json")
    timeouts = json.loads(status_file.read_text())["timeouts"]
    assert timeouts == {"initial": learned["initial"], "subsequent": learned["subsequent"]}
    loaded = [json.loads(" ".join(rest)) for _, _, *rest in lines(tmp_path / "loaded")]
    assert loaded and all(item == {"hb_timeouts": saved} for item in loaded)
