"""Hostile values never execute: they arrive at srun and in the environment exactly as given.

The property test renders the real templates with hostile strings (tests/hostile.py) in the name,
the command and its arguments, env values, srun/launcher args, the interpreter path and the run
directory, then runs the script with bash, `srun` and `scontrol` being stubs that record what they
receive. `#SBATCH` lines are read back with a port of sbatch's own tokenizer (slurm
src/sbatch/opt.c). The in-process quoting tests: tests/unit/test_render_quoting.py.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftslurm import env_vars
from ftslurm.render import launcher_command, render, srun_options
from ftslurm.render import quoting as shell
from ftslurm.spec import parse_spec
from ftslurm.spec.model import BASH_BUILTINS
from tests.hostile import hostile_text, path_component, sbatch_tokens

SRUN_STUB = """#!/bin/sh
printf '%s\\0' "$@" > "$STUB_OUT/argv"
env -0 > "$STUB_OUT/env"
"""
SCONTROL_STUB = "#!/bin/sh\necho n1\n"
#: The interpreter: the chain hooks must be called with it (and succeed) for the launch to run.
PYTHON_STUB = """#!/bin/sh
printf '%s\\n' "$3" >> "$STUB_OUT/hooks"
"""


def _stubs(tmp_path: Path, python: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("srun", SRUN_STUB), ("scontrol", SCONTROL_STUB), (python, PYTHON_STUB)):
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def _run_script(script: str, tmp_path: Path, python: str
                ) -> tuple[list[str], dict[str, str], list[str]]:
    out = tmp_path / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    path = tmp_path / "job.sbatch"
    path.write_text(script, encoding="utf-8")
    # as the chain submits an attempt (a job submitted by hand first runs chain-adopt)
    env = {"PATH": f"{_stubs(tmp_path, python)}:/usr/bin:/bin", "STUB_OUT": str(out),
           "HOME": "/nonexistent", "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "n[1-2]",
           "LC_ALL": "C.UTF-8", env_vars.ATTEMPT: "1"}
    result = subprocess.run(["bash", str(path)], cwd=tmp_path, env=env, capture_output=True)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    argv = (out / "argv").read_bytes().decode("utf-8", "surrogateescape").split("\0")[:-1]
    environ = dict(
        item.split("=", 1)
        for item in (out / "env").read_bytes().decode("utf-8", "surrogateescape").split("\0")[:-1]
    )
    hooks = (out / "hooks").read_text(encoding="utf-8").split()
    return argv, environ, hooks


@pytest.mark.parametrize("launcher", ["ft", "torchrun", "none"])
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    name=path_component,
    run_dir_name=path_component,
    args=st.lists(hostile_text, max_size=4),
    env_value=hostile_text,
    srun_arg=hostile_text,
    launcher_arg=hostile_text,
    # A command named %x is always `fg %x` to bash, quoted or not: no interpreter has such a name;
    # a builtin's name is refused by the spec (test_spec).
    python=path_component.filter(lambda text: text not in ("srun", "scontrol")
                                 and not text.startswith("%") and text not in BASH_BUILTINS),
)
def test_hostile_values_arrive_unchanged(
    launcher: str, name: str, run_dir_name: str, args: list[str], env_value: str, srun_arg: str,
    launcher_arg: str, python: str, tmp_path: Path,
) -> None:
    data = {"name": name, "run_dir": f"runs/{run_dir_name}", "launcher": launcher,
            "python": python, "command": ["train.py", *args], "env": {"HOSTILE": env_value},
            "srun_args": [srun_arg]}
    if launcher != "none":
        data["launcher_args"] = [launcher_arg]
    # Every scalar double-quoted with escapes, so YAML gives back exactly these strings.
    text = yaml.safe_dump(data, default_style='"', allow_unicode=False)
    spec = parse_spec(text, tmp_path / "job.yaml")
    assert spec.command.args == tuple(args) and spec.launch.python == python

    script = render(spec)
    argv, environ, hooks = _run_script(script, tmp_path, python)
    assert hooks == ["chain-start", "chain-end"]  # both hooks ran, with the spec's interpreter

    options = srun_options(spec)
    assert argv[: len(options)] == options
    rest = argv[len(options):]
    if launcher == "none":
        assert rest == [python, "-m", "ftslurm.slurm.srun_env", "--", python, "train.py", *args]
    else:
        head = ([python, "-m", "ftslurm.cli", "launch"] if launcher == "ft"
                else [python, "-m", "torch.distributed.run"])
        tail = [launcher_arg, *launcher_command(spec.command)]
        assert rest[: len(head)] == head
        assert rest[-len(tail):] == tail
        assert "--rdzv-endpoint=n1:24242" in rest
    assert environ["HOSTILE"] == env_value
    assert environ["FTSLURM_RUN_DIR"] == str(spec.run_dir)
    assert environ["FAULT_TOL_FINISHED_FLAG_FILE"] == str(spec.autoresume.flag_file)
    assert not list(tmp_path.rglob("pwned"))

    directives = {}
    for line in script.split("\n"):  # sbatch splits on \n only, not on \f, \x85, ...
        if line.startswith("#SBATCH"):
            option, _, value = sbatch_tokens(line[len("#SBATCH"):])[0].partition("=")
            directives[option] = value
    assert directives["--job-name"] == name
    assert directives["--output"] == shell.slurm_filename(str(spec.logs_dir)) + "/%j.out"


@given(value=hostile_text)
def test_bash_words_read_back_unchanged(value: str) -> None:
    result = subprocess.run(
        ["bash", "-c", f"printf '%s\\0' {shell.quote(value)}"], capture_output=True,
        env={"PATH": os.environ["PATH"], "LC_ALL": "C.UTF-8"},
    )
    assert result.stdout.decode("utf-8", "surrogateescape") == value + "\0"


@pytest.mark.parametrize("word", ["time", "if", "!", "{", "function", "[["])
def test_reserved_words_stay_plain_words_in_a_commands_place(word: str, tmp_path: Path) -> None:
    """`python: time` must run a program named `time`, not bash's `time` keyword."""
    program = tmp_path / word
    program.write_text("#!/bin/sh\necho \"ran $0 $*\"\n")
    program.chmod(0o755)
    result = subprocess.run(["bash", "-c", f"{shell.quote(word)} -m x"], capture_output=True,
                            text=True, env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
    assert result.stdout == f"ran {program} -m x\n", result.stderr
