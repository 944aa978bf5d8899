"""The auto-resume chain end to end with the local backend: real `ftslurm` processes, real jobs
under the local supervisor, real signals (kill -9 of the watcher)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ftslurm.backends.local import LocalScheduler
from ftslurm.chain.ledger import Ledger
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
WORKLOAD = REPO / "tests" / "integration" / "workloads" / "chain_workload.sh"
DEADLINE_S = 120.0


def write_spec(tmp_path: Path, mode: str, **autoresume: int) -> Path:
    """A one-rank `launcher: none` job running the counter workload in MODE."""
    lines = [
        "name: chain-test",
        "nodes: 1",
        "nproc_per_node: 1",
        'time: "5:00"',
        "launcher: none",
        f"python: {sys.executable}",
        f"run_dir: {tmp_path / 'run'}",
        f"command: [bash, {WORKLOAD}, {mode}]",
        "signals: {warning_time: 90}",
    ]
    if autoresume:
        lines.append("autoresume: {" + ", ".join(f"{k}: {v}" for k, v in autoresume.items())
                     + "}")
    path = tmp_path / "job.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def ftslurm(*args: str, check: bool = False, timeout: float = DEADLINE_S
            ) -> subprocess.CompletedProcess[str]:
    """Run the real `ftslurm` command."""
    result = subprocess.run([sys.executable, "-m", "ftslurm.cli", *args], capture_output=True,
                            text=True, timeout=timeout, cwd=REPO)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def status(run_dir: Path) -> dict:
    return json.loads(ftslurm("status", str(run_dir), "--json", check=True).stdout)


def local_jobs(run_dir: Path) -> dict[str, str]:
    """Every local job ever submitted for the run: id -> final state (all must be final)."""
    scheduler = LocalScheduler(run_dir / "local_jobs")
    root = run_dir / "local_jobs"
    ids = sorted(p.name for p in root.iterdir() if p.name.isdigit()) if root.is_dir() else []
    return {job: state.state for job, state in scheduler.states(ids).items()}


def test_fails_twice_then_finishes(tmp_path: Path) -> None:
    # the same failure twice would be a crash loop: this test is about the failure budget
    spec = write_spec(tmp_path, "fail-twice", stop_on_repeated_failure="false")
    result = ftslurm("submit", "--backend", "local", "--max-failures", "3", str(spec))
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = tmp_path / "run"
    assert f"run dir: {run_dir}" in result.stdout
    data = status(run_dir)
    assert data["state"] == "finished"
    outcomes = [(a["outcome"], a["exit_code"], a["counted_failure"]) for a in data["attempts"]]
    assert outcomes == [("failed", 1, True), ("failed", 1, True), ("finished", 0, False)]
    assert [a["failures_left"] for a in data["attempts"]] == [2, 1, 3]
    assert local_jobs(run_dir) == {"1": "FAILED", "2": "FAILED", "3": "COMPLETED"}
    table = ftslurm("status", str(run_dir), check=True).stdout
    assert "run finished" in table and "exit code 1" in table


def test_the_same_failure_twice_stops_the_run_as_a_crash_loop(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "always-fail")
    result = ftslurm("submit", "--backend", "local", "--max-failures", "5", str(spec))
    assert result.returncode == 1, result.stdout + result.stderr
    data = status(tmp_path / "run")
    assert data["state"] == "failed" and data["reason"].startswith("crash loop:"), data["reason"]
    assert [a["outcome"] for a in data["attempts"]] == ["failed", "failed"]
    assert data["failures_left"] == 3  # stopped before the budget was spent
    explained = ftslurm("explain", str(tmp_path / "run"), "--json", check=True)
    assert json.loads(explained.stdout)["signature"] == "exit 1"


def test_a_different_failure_each_time_is_no_crash_loop(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "fail-varying")
    result = ftslurm("submit", "--backend", "local", "--max-failures", "5", str(spec))
    assert result.returncode == 0, result.stdout + result.stderr
    data = status(tmp_path / "run")
    assert data["state"] == "finished"
    assert [(a["outcome"], a["exit_code"]) for a in data["attempts"]] == [
        ("failed", 11), ("failed", 12), ("failed", 13), ("finished", 0)]


def test_max_failures_stops_the_run(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "always-fail")
    result = ftslurm("submit", "--backend", "local", "--max-failures", "2", str(spec))
    assert result.returncode == 1, result.stdout + result.stderr
    data = status(tmp_path / "run")
    assert data["state"] == "failed" and "2 consecutive failed attempts" in data["reason"]
    assert [a["outcome"] for a in data["attempts"]] == ["failed", "failed"]
    assert data["failures_left"] == 0
    assert set(local_jobs(tmp_path / "run").values()) == {"FAILED"}


def test_do_not_retry_ends_the_run_at_once(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "fatal")
    assert ftslurm("submit", "--backend", "local", str(spec)).returncode == 1
    data = status(tmp_path / "run")
    assert data["state"] == "failed"
    assert [(a["outcome"], a["exit_code"]) for a in data["attempts"]] == [("fatal", 93)]


def test_flag_present_before_submit_runs_nothing(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "always-fail")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "finished.flag").touch()
    result = ftslurm("submit", "--backend", "local", str(spec))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "nothing submitted" in result.stdout
    data = status(tmp_path / "run")
    assert data["state"] == "finished" and data["attempts"] == []
    assert not (tmp_path / "run" / "local_jobs").exists()


def test_refuses_a_changed_spec_unless_resume(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "finish")
    ftslurm("submit", "--backend", "local", str(spec), check=True)
    spec.write_text(spec.read_text().replace("finish]", "fail-twice]"))
    ledger_before = (tmp_path / "run" / "ledger.json").read_text()
    refused = ftslurm("submit", "--backend", "local", str(spec))
    assert refused.returncode == 2
    assert "different job spec" in refused.stderr and "--resume" in refused.stderr
    assert (tmp_path / "run" / "ledger.json").read_text() == ledger_before
    (tmp_path / "run" / "finished.flag").unlink()
    resumed = ftslurm("submit", "--backend", "local", "--resume", str(spec))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    data = status(tmp_path / "run")
    # the workload counts runs across the whole run dir: run 1 finished, 2 failed, 3 finished
    assert [a["outcome"] for a in data["attempts"]] == ["finished", "failed", "finished"]


def test_cancel_stops_a_running_attempt(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "hold")
    run_dir = tmp_path / "run"
    watcher = subprocess.Popen([sys.executable, "-m", "ftslurm.cli", "submit", "--backend",
                                "local", str(spec)], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        wait_for((run_dir / "holding").exists, "the workload to start", timeout=DEADLINE_S,
                 interval=0.1)
        result = ftslurm("cancel", str(run_dir), "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        assert watcher.wait(timeout=DEADLINE_S) == 1
    finally:
        if watcher.poll() is None:
            watcher.kill()
    data = status(run_dir)
    assert data["state"] == "cancelled"
    assert [a["outcome"] for a in data["attempts"]] == ["cancelled"]
    assert set(local_jobs(run_dir).values()) == {"CANCELLED"}


def _run_until_killed(command: list[str], delay: float) -> int | None:
    """Run an `ftslurm` command, SIGKILL it after `delay` s (None: it ended first)."""
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        return proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        return None


@pytest.mark.parametrize("seed", range(5))
def test_watch_killed_at_random_points_never_duplicates(tmp_path: Path, seed: int) -> None:
    """kill -9 the watch loop at random moments (python start-up, polling, submitting) and
    start it again: every attempt is submitted exactly once and the run finishes."""
    rng = random.Random(seed)
    spec = write_spec(tmp_path, "fail-twice", stop_on_repeated_failure="false")
    ftslurm("submit", "--backend", "local", "--dry-run", str(spec), check=True)
    run_dir = tmp_path / "run"
    submit = [sys.executable, "-m", "ftslurm.cli", "submit", "--backend", "local", str(spec)]
    watch = [sys.executable, "-m", "ftslurm.cli", "watch", str(run_dir)]
    kills = 0

    def one_more_round() -> bool:
        """Run `submit` or `watch`, killed at a random moment; True once one of them ended by
        itself (not killed) with the run over."""
        nonlocal kills
        # until the ledger exists, `submit` (killed too) creates the run; then `watch` drives it
        command = watch if (run_dir / "ledger.json").exists() else submit
        code = _run_until_killed(command, rng.uniform(0.2, 3.0) if kills < 12 else DEADLINE_S)
        kills += code is None
        ledger = run_dir / "ledger.json"
        return code is not None and ledger.exists() and Ledger.open(run_dir).state().run_status \
            != "running"

    wait_for(one_more_round, "the run to finish", timeout=4 * DEADLINE_S, interval=0)
    data = status(run_dir)
    assert data["state"] == "finished"
    assert [a["outcome"] for a in data["attempts"]] == ["failed", "failed", "finished"]
    jobs = local_jobs(run_dir)
    assert len(jobs) == 3, jobs  # no duplicate submission, ever
    assert sorted(a["job_id"] for a in data["attempts"]) == sorted(jobs)


def test_readme_main_command_on_a_machine_without_slurm(tmp_path: Path) -> None:
    """`ftslurm submit --max-failures 3 examples/ddp_resume/job.yaml` with no sbatch on PATH:
    the local backend trains, crashes once, resumes from the checkpoint and finishes."""
    example = tmp_path / "ddp_resume"
    shutil.copytree(REPO / "examples" / "ddp_resume", example,
                    ignore=shutil.ignore_patterns("runs"))
    bin_dir = Path(sys.executable).parent
    tools = tmp_path / "tools"  # a PATH with the basics but no SLURM commands
    tools.mkdir()
    for name in ("bash", "sh", "env", "cat", "hostname", "sleep", "touch", "mkdir", "rm", "uname"):
        found = shutil.which(name)
        if found:
            (tools / name).symlink_to(found)
    env = {**os.environ, "PATH": f"{bin_dir}:{tools}"}
    assert shutil.which("sbatch", path=env["PATH"]) is None
    result = subprocess.run([str(bin_dir / "ftslurm"), "submit", "--max-failures", "3",
                             str(example / "job.yaml")], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(local, watch loop" in result.stdout
    run_dir = example / "runs" / "ddp_resume"
    data = status(run_dir)
    assert data["state"] == "finished"
    assert [a["outcome"] for a in data["attempts"]] == ["failed", "finished"]
    log = ftslurm("logs", str(run_dir), "--attempt", "2", check=True).stdout
    assert "resuming at step 60 of 120" in log and "finished 120 steps" in log
    # the example reports its progress: the watch loop printed the goodput after each end, and
    # the report accounts for both attempts (crashed right after its checkpoint: nothing lost)
    assert result.stdout.count("goodput ") == 2 and "of 120" in result.stdout
    assert data["goodput"]["progress_known"] and 0 < data["goodput"]["goodput"] < 1
    report = json.loads(ftslurm("report", str(run_dir), "--json", check=True).stdout)
    assert [(a["cause"], a["first_step"], a["last_step"], a["lost_steps"])
            for a in report["attempts"]] == [("crash", 1, 60, 0), ("finish", 61, 120, 0)]
