"""The evidence the launcher leaves for each attempt: per-rank output files, every rank's end in
the status file (`rank_ends`), every rank's stacks in a hang event, and the floor of learned
timeouts.

Real `ftslurm launch` runs of 2 gloo ranks (tests/integration/workloads/ft_workload.py) in a run
directory (`$FTSLURM_RUN_DIR`, `$FTSLURM_ATTEMPT`). Nothing here depends on how long things take:
timeouts are configuration, and the order of the ranks' ends is causal (a rank stopped by the
launcher ends after the failure the launcher reacted to).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ftslurm import exit_codes
from ftslurm.rundir import RunDir

WORKLOAD = Path(__file__).parent / "workloads" / "ft_workload.py"
ATTEMPT = 3
pytestmark = pytest.mark.timeout(180)


def launch(tmp_path: Path, *options: str, workload: tuple[str, ...] = (),
           in_run: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    env.pop("FTSLURM_FT_CONFIG", None)
    if in_run:
        env.update(FTSLURM_RUN_DIR=str(tmp_path / "run"), FTSLURM_ATTEMPT=str(ATTEMPT))
    else:
        env.pop("FTSLURM_RUN_DIR", None)
        env.pop("FTSLURM_ATTEMPT", None)
        options = ("--ft-status-file", str(tmp_path / "status.json"), *options)
    return subprocess.run(
        [sys.executable, "-m", "ftslurm.cli", "launch", "--standalone", "--nproc-per-node", "2",
         "--monitor-interval", "0.1", "--ft-initial-rank-heartbeat-timeout", "120", *options,
         str(WORKLOAD), "--out", str(tmp_path), *workload],
        capture_output=True, text=True, timeout=150, env=env,
    )


def status(tmp_path: Path) -> dict:
    [path] = RunDir(tmp_path / "run").launcher_status_dir.glob(f"attempt-{ATTEMPT}.*.json")
    return json.loads(path.read_text())


def rank_log(tmp_path: Path, rank: int, restart: int, stream: str) -> Path:
    return RunDir(tmp_path / "run").rank_log(ATTEMPT, rank, restart, stream)


def ends(doc: dict, restart: int) -> dict[int, dict]:
    found = {end["rank"]: end for end in doc["rank_ends"] if end["restart_count"] == restart}
    assert len(found) == len([e for e in doc["rank_ends"] if e["restart_count"] == restart])
    return found


def test_each_rank_has_its_own_files_and_the_job_log_keeps_every_line(tmp_path: Path) -> None:
    result = launch(tmp_path, "--ft-rank-heartbeat-timeout", "60", workload=("--say",))
    assert result.returncode == exit_codes.OK, result.stderr
    for rank, other in ((0, 1), (1, 0)):
        out = rank_log(tmp_path, rank, 0, "out").read_text()
        err = rank_log(tmp_path, rank, 0, "err").read_text()
        assert f"hello from rank {rank} restart 0 on stdout" in out
        assert f"hello from rank {rank} restart 0 on stderr" in err
        assert f"rank {other}" not in out + err and "on stderr" not in out
        # ... and the launcher's own output still has every line, prefixed with the rank.
        assert f"[{rank}]:hello from rank {rank} restart 0 on stdout" in result.stdout
        assert f"[{rank}]:hello from rank {rank} restart 0 on stderr" in result.stderr
    doc = status(tmp_path)
    assert set(ends(doc, 0)) == {0, 1}
    for rank, end in ends(doc, 0).items():
        assert end == {
            "rank": rank, "local_rank": rank, "node": doc["node"], "restart_count": 0,
            "exit_code": 0, "signal": None, "time": end["time"],
            "stdout": str(rank_log(tmp_path, rank, 0, "out")),
            "stderr": str(rank_log(tmp_path, rank, 0, "err")), "cause": "exited",
        }
        assert doc["started_at"] < end["time"] <= doc["updated_at"]


def test_a_rank_that_raises_ends_first_and_the_others_after_it(tmp_path: Path) -> None:
    result = launch(tmp_path, "--max-restarts", "1", "--ft-rank-heartbeat-timeout", "60",
                    workload=("--boom", "0:0"))
    assert result.returncode == exit_codes.OK, result.stderr
    doc = status(tmp_path)
    first = ends(doc, 0)
    culprit = first[0]
    assert culprit["cause"] == "exited" and culprit["exit_code"] == 1
    assert culprit["signal"] is None
    victim = first[1]
    assert victim["cause"] in ("stopped_by_launcher", "exited"), victim
    if victim["cause"] == "stopped_by_launcher":
        # Stopped after the launcher saw rank 0's end, so strictly later.
        assert victim["time"] > culprit["time"]
    else:
        # Broken out of its collective by rank 0's death: not before it (one observation of
        # the launcher may see both ends).
        assert victim["time"] >= culprit["time"]
    traceback = Path(culprit["stderr"]).read_text()
    assert "Traceback (most recent call last)" in traceback and "ValueError: boom" in traceback
    assert "ValueError: boom" not in Path(victim["stderr"]).read_text()
    # The next round's ranks ended by themselves, successfully, with files of their own.
    assert {r: (e["cause"], e["exit_code"]) for r, e in ends(doc, 1).items()} == {
        0: ("exited", 0), 1: ("exited", 0)}
    assert ends(doc, 1)[0]["stderr"] == str(rank_log(tmp_path, 0, 1, "err"))
    assert "ValueError" not in rank_log(tmp_path, 0, 1, "err").read_text()
    # The events other code reads are unchanged.
    crash = [e for e in doc["events"] if e["kind"] == "crash"]
    assert {"rank": 0, "exit_code": 1}.items() <= crash[0].items()


def test_a_hang_event_holds_the_stacks_of_every_rank_of_the_node(tmp_path: Path) -> None:
    result = launch(tmp_path, "--max-restarts", "1", "--ft-rank-heartbeat-timeout", "2",
                    workload=("--hang", "1:0"))
    assert result.returncode == exit_codes.OK, result.stderr
    doc = status(tmp_path)
    hang = next(e for e in doc["events"] if e["kind"] == "hang" and e["rank"] == 1)
    assert hang["timeout_source"] == "written" and hang["timeout"] == 2.0
    assert hang["since"] < hang["time"] and hang["since"] >= doc["started_at"]
    assert set(hang["stacks"]) == {"0", "1"}
    assert "in hang_forever_in_here" in hang["stacks"]["1"]
    assert "in main" in hang["stacks"]["0"] and "hang_forever_in_here" not in hang["stacks"]["0"]
    # The dump is in the ranks' own stderr files too.
    assert "in hang_forever_in_here" in rank_log(tmp_path, 1, 0, "err").read_text()
    first = ends(doc, 0)
    assert first[1]["cause"] == "hang_stopped" and first[1]["signal"] == "SIGTERM"
    # Rank 0 waits for rank 1 in a collective: hung as well, or stopped with the round.
    assert first[0]["cause"] in ("hang_stopped", "stopped_by_launcher")
    assert all(end["time"] > hang["since"] for end in first.values())
    assert {end["cause"] for end in ends(doc, 1).values()} == {"exited"}


def test_stacks_come_from_the_files_torchrun_options_chose(tmp_path: Path) -> None:
    """--log-dir/--redirects keep torch's layout (no run-dir files), and the evidence with it."""
    logs = tmp_path / "logs"
    result = launch(tmp_path, "--max-restarts", "0", "--ft-rank-heartbeat-timeout", "2",
                    "--log-dir", str(logs), "--redirects", "3", workload=("--hang", "1:0"))
    assert result.returncode == exit_codes.FAILED, result.stderr
    assert not RunDir(tmp_path / "run").rank_logs(ATTEMPT).exists()
    doc = status(tmp_path)
    hang = next(e for e in doc["events"] if e["kind"] == "hang" and e["rank"] == 1)
    assert "in hang_forever_in_here" in hang["stacks"]["1"]
    [stderr] = logs.glob("*/attempt_0/1/stderr.log")
    assert ends(doc, 0)[1]["stderr"] == str(stderr)


def test_a_learned_timeout_below_the_floor_gets_the_floor(tmp_path: Path) -> None:
    # The ranks ask for a 1 s subsequent timeout (as if restored from a checkpoint); the floor
    # of 5 s is what the monitor enforces, and it is what catches the hang (the configured
    # timeout is 60 s).
    result = launch(tmp_path, "--max-restarts", "1", "--ft-rank-heartbeat-timeout", "60",
                    "--ft-min-learned-timeout", "5",
                    workload=("--request-timeouts", "600:1", "--hang", "1:0"), in_run=False)
    assert result.returncode == exit_codes.OK, result.stderr
    doc = json.loads((tmp_path / "status.json").read_text())
    assert doc["timeouts"] == {"initial": 600.0, "subsequent": 5.0}
    hang = next(e for e in doc["events"] if e["kind"] == "hang" and e["rank"] == 1)
    assert hang["timeout"] == 5.0 and hang["timeout_source"] == "learned"
    assert hang["heartbeat_age"] > 5.0
    assert ("ranks set heartbeat timeouts: initial=600.0 s, subsequent=1.0 s; in force with the "
            "floor of 5.0 s") in result.stderr
    # Outside a run directory the ranks write to the launcher's output: no files to name.
    assert {(e["stdout"], e["stderr"]) for e in doc["rank_ends"]} == {(None, None)}
    assert hang["stacks"] == {}


def test_learned_timeouts_from_the_run_dir_get_the_floor(tmp_path: Path) -> None:
    learned = RunDir(tmp_path / "run").learned_timeouts
    learned.parent.mkdir(parents=True)
    learned.write_text(json.dumps({"initial": 1.0, "subsequent": 0.5, "source": "test"}))
    result = launch(tmp_path, "--ft-min-learned-timeout", "90")
    assert result.returncode == exit_codes.OK, result.stderr
    assert status(tmp_path)["timeouts"] == {"initial": 90.0, "subsequent": 90.0}
    assert "raised to the floor of 90.0 s" in result.stderr
    # The file keeps what was learned.
    assert json.loads(learned.read_text())["subsequent"] == 0.5


def test_the_run_dir_layout_yields_to_torchrun_options_and_names_every_round(
        tmp_path: Path) -> None:
    """(No process.) Which layout a command line gets, and where each rank of a round writes."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs

    from ftslurm.fault_tolerance.launcher import build_parser
    from ftslurm.fault_tolerance.rank_logs import run_dir_logs_specs

    def specs(*options: str, run_dir: str | None = str(tmp_path), attempt: str | None = "3"):
        args = build_parser().parse_args([*options, "train.py"])
        return run_dir_logs_specs(args, DefaultLogsSpecs(log_dir=str(tmp_path / "torch")),
                                  run_dir, attempt)

    for explicit in (("--log-dir", str(tmp_path)), ("--redirects", "3"), ("--tee", "1"),
                     ("-r", "0:3")):
        assert specs(*explicit) is None, explicit
    assert specs(run_dir=None) is None and specs(attempt=None) is None
    chosen = specs("--local-ranks-filter", "0")
    assert chosen is not None
    envs = {local: {"RANK": str(4 + local), "TORCHELASTIC_RESTART_COUNT": "2",
                    "TORCHELASTIC_RUN_ID": "x"} for local in (0, 1)}
    dest = chosen.reify(envs)
    run = RunDir(tmp_path)
    for stream, found in (("out", dest.stdouts), ("err", dest.stderrs)):
        assert found == {local: str(run.rank_log(3, 4 + local, 2, stream)) for local in (0, 1)}
    # Only local rank 0 is copied to the launcher's output; both have their files.
    assert dest.tee_stdouts == {0: dest.stdouts[0]} and dest.tee_stderrs == {0: dest.stderrs[0]}
    assert run.rank_logs(3).is_dir()
    # torch's reply file (`@record`) stays where torch puts it.
    assert all(env["TORCHELASTIC_ERROR_FILE"].startswith(str(tmp_path / "torch"))
               for env in envs.values())
