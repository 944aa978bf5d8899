"""`ftslurm validate` and `ftslurm render` on the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from ftslurm.chain.ledger import Ledger
from ftslurm.chain.outcome import RunStatus
from ftslurm.chain.settings import load_settings
from ftslurm.cli import main
from ftslurm.rundir import RunDir

GOOD = "name: demo\nnodes: 2\nnproc_per_node: 2\ntime: '1:00:00'\ncommand: train.py\n"
BAD = "name: demo\nnodes: 0\ncommand: train.py\nlaunchr: ft\n"


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(GOOD)
    return path


@pytest.fixture
def bad(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    return path


def test_validate_prints_ok_and_a_summary(good: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(good)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"ok: {good}\n")
    assert "2 node(s) x 2 rank(s) = 4 rank(s)" in out


def test_validate_lists_all_errors_and_exits_2(bad: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2: nodes: expected an integer >= 1, got 0" in err
    assert f'{bad}:4: launchr: unknown key (did you mean "launcher"?)' in err


def test_render_prints_the_script(good: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", str(good)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("#!/bin/bash\n") and "#SBATCH --nodes=2" in out
    assert not (good.parent / "runs").exists()


def test_render_to_a_file_prepares_the_run_for_sbatch(good: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "job.sbatch"
    assert main(["render", str(good), "-o", str(target)]) == 0
    text = target.read_text()
    assert text.startswith("#!/bin/bash\n") and "`sbatch` on this script is supported" in text
    assert target.stat().st_mode & 0o100
    run_dir = RunDir(tmp_path / "runs" / "demo")
    # SLURM opens the job's output file in the log folder before the script runs
    assert f"#SBATCH --output={run_dir.logs}/%j.out" in text and run_dir.logs.is_dir()
    state = Ledger.open(run_dir.root).state()
    assert state.attempts == () and state.run_status is RunStatus.RUNNING
    assert load_settings(run_dir.root).mode == "self"
    assert "starts (or joins) the run" in capsys.readouterr().err

    # again with the same spec: the run directory is left as it is
    ledger_before = run_dir.ledger.read_bytes()
    assert main(["render", str(good), "-o", str(target)]) == 0
    assert run_dir.ledger.read_bytes() == ledger_before
    assert "it was left as it is" in capsys.readouterr().err

    # another spec for the same run directory: refused, nothing written
    good.write_text(GOOD.replace("nproc_per_node: 2", "nproc_per_node: 4"))
    other = tmp_path / "other.sbatch"
    assert main(["render", str(good), "-o", str(other)]) == 2
    assert "holds a run of a different job spec" in capsys.readouterr().err
    assert not other.exists() and run_dir.ledger.read_bytes() == ledger_before


def test_bad_spec_writes_nothing(bad: Path, tmp_path: Path) -> None:
    target = tmp_path / "job.sbatch"
    assert main(["render", str(bad), "-o", str(target)]) == 2
    assert not target.exists()


def test_bad_template_is_reported_with_its_line(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "my.sbatch").write_text("#!/bin/bash\n{{ sbatch_directives }}\n{{ comand }}\n")
    (tmp_path / "job.yaml").write_text(GOOD + "template: my.sbatch\n")
    assert main(["validate", str(tmp_path / "job.yaml")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'my.sbatch'}:3: unknown placeholder {{{{ comand }}}}" in err
    assert 'did you mean "command"?' in err


def test_custom_template_is_used(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "my.sbatch").write_text(
        "#!/bin/bash\n{{ sbatch_directives }}\n{{ environment }}\nsrun {{ command }}\n"
    )
    (tmp_path / "job.yaml").write_text(GOOD + "template: my.sbatch\n")
    assert main(["render", str(tmp_path / "job.yaml")]) == 0
    assert capsys.readouterr().out.endswith("\nsrun python3 train.py\n")


@pytest.mark.parametrize(("extra", "expected"), [
    ("sbatch: !!python/object:os.system {a: 1}\n",
     ":6: sbatch: the YAML tag '!!python/object:os.system' is not allowed"),
    ("sbatch: {array: 0-3}\n", ":6: sbatch.array: --array breaks the chain"),
    ("env: {PATH: /opt/bin}\n", ":6: env.PATH: "),
    ("autoresume: {flag_file: runs/demo/ledger.json}\n",
     ":6: autoresume.flag_file: "),
    ("a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
     "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n",
     ":9: d: the YAML expands to more than"),
])
def test_validate_refuses_what_breaks_the_chain(tmp_path: Path, extra: str, expected: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(GOOD + extra)
    assert main(["validate", str(path)]) == 2
    captured = capsys.readouterr()
    assert f"{path}{expected}" in captured.err
    assert "ok:" not in captured.out
    assert not (tmp_path / "runs").exists()


def test_validate_refuses_a_command_with_an_empty_program(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(GOOD.replace("command: train.py", 'command: [""]'))
    assert main(["validate", str(path)]) == 2
    assert f"{path}:5: command: the program (the first word) is empty" in capsys.readouterr().err


def test_validate_warns_about_a_huge_node_count_and_still_passes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(GOOD.replace("nodes: 2", "nodes: 1000000000"))
    assert main(["validate", str(path)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"ok: {path}\n")
    assert f"ftslurm: warning: {path}:2: nodes: 1000000000 nodes is more than 4096" in captured.err


def test_render_to_a_place_that_cannot_be_written_prepares_nothing(
        good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", str(good), "-o", "/proc/job.sbatch"]) == 2
    assert "cannot write the script" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # the run directory was never touched
