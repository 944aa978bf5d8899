"""SlurmClient's command running: errors, retries, clean environment, sacct fallback (what needs
no command run: tests/unit/test_slurm_commands.py).

SLURM's commands are replaced by small real executables on PATH (no mocks of our code); they
record their arguments and environment so the tests see exactly what ftslurm ran.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from ftslurm import exit_codes
from ftslurm.slurm import SlurmClient, SlurmCommandError
from tests.helpers import REPO_ROOT

#: Recorded and hand-written SLURM outputs (shared with the parser tests).
FIXTURES = REPO_ROOT / "tests" / "unit" / "fixtures" / "slurm"


@pytest.fixture()
def fake_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory put first on PATH where tests drop fake SLURM commands."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def fake_command(bin_dir: Path, name: str, body: str) -> Path:
    """Write an executable shell script `name`; it logs argv and env as JSON to <name>.calls."""
    log = bin_dir / f"{name}.calls"
    path = bin_dir / name
    path.write_text(
        "#!/bin/sh\n"
        f'python3 -c \'import json,os,sys; print(json.dumps({{"argv": sys.argv[1:], '
        f'"env": dict(os.environ)}}))\' "$@" >> "{log}"\n'
        f'calls=$(wc -l < "{log}")\n'
        f"{body}\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return log


def calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_failure_carries_command_exit_code_and_stderr(fake_bin: Path) -> None:
    fake_command(fake_bin, "scancel", 'echo "scancel: error: Invalid job id 9 x" >&2; exit 1')
    with pytest.raises(SlurmCommandError) as info:
        SlurmClient(backoff=0).cancel("9", signal="TERM", batch=True)
    error = info.value
    assert error.command == "scancel --signal=TERM --batch 9"
    assert error.returncode == 1
    assert error.exit_code == exit_codes.SLURM_ERROR
    text = str(error)
    assert "scancel --signal=TERM --batch 9" in text
    assert "exited with code 1" in text
    assert "Invalid job id 9 x" in text


def test_transient_errors_are_retried(fake_bin: Path) -> None:
    log = fake_command(
        fake_bin, "scontrol",
        'if [ "$calls" -lt 3 ]; then '
        'echo "scontrol: error: Unable to contact slurm controller (connect failure)" >&2; '
        "exit 1; fi\nexit 0",
    )
    SlurmClient(retries=3, backoff=0).update_job("5", StartTime="now")
    assert [c["argv"] for c in calls(log)] == [["update", "JobId=5", "StartTime=now"]] * 3


def test_retries_are_bounded(fake_bin: Path) -> None:
    log = fake_command(fake_bin, "sacct",
                       'echo "sacct: error: Socket timed out on send/recv" >&2; exit 1')
    with pytest.raises(SlurmCommandError, match="Socket timed out"):
        SlurmClient(retries=2, backoff=0).job_states(["1"])
    assert len(calls(log)) == 3


def test_permanent_errors_are_not_retried(fake_bin: Path) -> None:
    log = fake_command(fake_bin, "scontrol",
                       'echo "scontrol: error: Invalid job id specified" >&2; exit 1')
    with pytest.raises(SlurmCommandError, match="Invalid job id"):
        SlurmClient(retries=3, backoff=0).requeue("5")
    assert len(calls(log)) == 1


def test_sbatch_is_not_retried_when_the_job_may_exist(fake_bin: Path, tmp_path: Path) -> None:
    log = fake_command(fake_bin, "sbatch",
                       'echo "sbatch: error: Socket timed out on send/recv operation" >&2; exit 1')
    with pytest.raises(SlurmCommandError):
        SlurmClient(retries=3, backoff=0).submit(tmp_path / "job.sh")
    assert len(calls(log)) == 1


def test_submit_cleans_the_environment_but_keeps_slurm_conf(
    fake_bin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = fake_command(fake_bin, "sbatch", 'echo "77;clusterA"')
    for name, value in {
        "SLURM_CONF": "/etc/x/slurm.conf", "SLURM_JOB_ID": "5", "SLURM_NNODES": "2",
        "SBATCH_PARTITION": "p", "SRUN_CPUS_PER_TASK": "4", "RANK": "3", "KEEP_ME": "yes",
    }.items():
        monkeypatch.setenv(name, value)
    job = SlurmClient().submit(
        tmp_path / "job.sh", extra_args=["--chdir", str(tmp_path)], dependency="afterany:5",
        env={"FTSLURM_ATTEMPT": "2"}, cwd=tmp_path,
    )
    assert (job.job_id, job.cluster) == ("77", "clusterA")
    (call,) = calls(log)
    assert call["argv"] == ["--parsable", "--dependency=afterany:5", "--chdir", str(tmp_path),
                            str(tmp_path / "job.sh")]
    env = call["env"]
    assert env["SLURM_CONF"] == "/etc/x/slurm.conf"
    assert env["KEEP_ME"] == "yes" and env["FTSLURM_ATTEMPT"] == "2"
    for name in ("SLURM_JOB_ID", "SLURM_NNODES", "SBATCH_PARTITION", "SRUN_CPUS_PER_TASK",
                 "RANK"):
        assert name not in env
    assert os.environ["SLURM_JOB_ID"] == "5", "the caller's environment must be left alone"


def test_one_sacct_call_for_many_jobs(fake_bin: Path) -> None:
    log = fake_command(fake_bin, "sacct", f'cat "{FIXTURES / "hand_sacct_states.txt"}"')
    states = SlurmClient().job_states(["41", "50", "60+1", "50_2"])
    (call,) = calls(log)
    assert "--duplicates" in call["argv"] and "--jobs=41,50,60+1,50_2" in call["argv"]
    assert call["env"]["SLURM_TIME_FORMAT"] == "standard"
    assert {r.allocation_id for r in states["41"]} == {"41"}
    assert {r.allocation_id for r in states["50"]} == {"50_1", "50_2", "50_[3-5%2]"}
    assert [r.allocation_id for r in states["50_2"]] == ["50_2"]
    assert [r.allocation_id for r in states["60+1"]] == ["60+1"]


def test_falls_back_to_scontrol_without_accounting(fake_bin: Path) -> None:
    fake_command(fake_bin, "sacct",
                 'echo "sacct: error: Slurm accounting storage is disabled" >&2; exit 1')
    log = fake_command(fake_bin, "scontrol", f'cat "{FIXTURES / "hand_scontrol_show_job.txt"}"')
    summaries = SlurmClient().job_summaries(["40", "47", "999"])
    assert [c["argv"] for c in calls(log)] == [["show", "job", "--oneliner"]]
    assert summaries["40"].allocation.restart_index == 2
    assert summaries["47"].state == "CANCELLED"
    assert "999" not in summaries


def test_jobs_unknown_to_sacct_yet_come_from_scontrol(fake_bin: Path) -> None:
    fake_command(fake_bin, "sacct", "exit 0")
    fake_command(fake_bin, "scontrol", f'cat "{FIXTURES / "hand_scontrol_show_job.txt"}"')
    states = SlurmClient().job_states(["47"])
    assert [(r.state, r.source) for r in states["47"]] == [("CANCELLED", "scontrol")]


def test_placeholder_accounting_record_is_completed_from_the_controller(fake_bin: Path) -> None:
    fake_command(fake_bin, "sacct", f'cat "{FIXTURES / "rec_sacct_placeholder.txt"}"')
    fake_command(fake_bin, "scontrol",
                 f'cat "{FIXTURES / "rec_scontrol_show_job_placeholder.txt"}"')
    summary = SlurmClient().job_summaries(["5"])["5"]
    assert (summary.state, summary.allocation.exit_code) == ("FAILED", 3)
    assert summary.allocation.nodes == ("n1", "n2")
    assert summary.allocation.partition == "batch"
    assert {s.step for s in summary.steps} == {"batch", "0"}
