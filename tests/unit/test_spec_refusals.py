"""Job specs that would hurt the machine or break the chain are refused with file:line and key.

A bounded YAML loader (size, nesting, alias expansion, tags), time limits beyond a year, an empty
program, `env:` names the job or the chain depend on, `sbatch:` options that stop the chain, and a
finished flag that is one of ftslurm's own files; a huge `nodes` only warns.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

from ftslurm import exit_codes
from ftslurm.errors import UsageError
from ftslurm.spec import RUN_DIR_RESERVED_NAMES, load_spec
from ftslurm.spec.duration import MAX_TIME_SECONDS, TimeFormatError, parse_duration
from ftslurm.spec.fields import SpecError
from ftslurm.spec.limits import NODES_WARNING_ABOVE
from ftslurm.spec.yaml_loader import MAX_SPEC_BYTES, MAX_YAML_DEPTH, MAX_YAML_NODES

HEAD = "name: demo\ncommand: train.py\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def refusal(tmp_path: Path, text: str) -> str:
    """The message of the UsageError (exit 2) that refuses `text`, with the file as job.yaml."""
    path = write(tmp_path, text)
    with pytest.raises(UsageError) as info:
        load_spec(path)
    assert info.value.exit_code == exit_codes.USAGE
    return str(info.value).replace(str(path), "job.yaml")


def errors_of(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    return [issue.format("job.yaml") for issue in info.value.issues]


# --- the YAML loader is bounded -------------------------------------------------------------


def test_a_file_over_the_size_limit_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(HEAD)
        stream.write("# padding\n" * (MAX_SPEC_BYTES // 10 + 1))
    started = time.monotonic()
    with pytest.raises(UsageError, match=r"job\.yaml: the file is larger than 1024 KiB") as info:
        load_spec(path)
    assert info.value.exit_code == exit_codes.USAGE
    assert time.monotonic() - started < 1.0


def test_an_endless_file_is_not_read_to_the_end() -> None:
    with pytest.raises(UsageError, match="larger than 1024 KiB"):
        load_spec("/dev/zero")


def _billion_laughs() -> str:
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    previous = "a"
    for name in "bcdefghi":
        text += f"{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]\n"
        previous = name
    return text


def test_an_alias_bomb_is_refused_fast(tmp_path: Path) -> None:
    text = HEAD + _billion_laughs()
    assert len(text) < 1024
    started = time.monotonic()
    message = refusal(tmp_path, text)
    assert time.monotonic() - started < 2.0
    assert message.startswith("job.yaml:7: e: the YAML expands to more than 10000 values")
    assert f"{MAX_YAML_NODES}" in message


def test_a_merge_bomb_is_refused_fast(tmp_path: Path) -> None:
    text = HEAD + "a: &a {k0: 1, k1: 2}\n"
    previous = "a"
    for index, name in enumerate("bcdefghijklmnopqrstuvwxyz"):
        text += f"{name}: &{name} {{<<: [*{previous}, *{previous}], x{index}: 1}}\n"
        previous = name
    started = time.monotonic()
    assert "the YAML expands to more than" in refusal(tmp_path, text)
    assert time.monotonic() - started < 2.0


def test_too_many_values_are_refused_while_parsing(tmp_path: Path) -> None:
    text = HEAD + "setup:\n" + "- x\n" * (MAX_YAML_NODES + 10)
    assert "the YAML holds more than 10000 values" in refusal(tmp_path, text)


def test_deep_nesting_is_refused_without_a_recursion_error(tmp_path: Path) -> None:
    depth = 5000
    message = refusal(tmp_path, HEAD + "setup: " + "[" * depth + "]" * depth + "\n")
    assert message.startswith(f"job.yaml:3: lists and mappings are nested more than "
                              f"{MAX_YAML_DEPTH} levels deep")


def test_a_number_too_long_to_convert_is_a_clear_error(tmp_path: Path) -> None:
    message = refusal(tmp_path, HEAD + "nodes: " + "9" * 5000 + "\n")
    assert message.startswith("job.yaml:3: nodes: cannot read '9999")
    assert "quote it if it is a string" in message


@pytest.mark.parametrize(("value", "tag"), [
    ("!!python/object:os.system {a: 1}", "!!python/object:os.system"),
    ("!!python/object/apply:os.system [ls]", "!!python/object/apply:os.system"),
    ("!!python/name:os.system", "!!python/name:os.system"),
    ("!!python/tuple [a, b]", "!!python/tuple"),
    ("!custom {x: 1}", "!custom"),
    ("!!binary aGVsbG8=", "!!binary"),
    ("!!set {a, b}", "!!set"),
])
def test_yaml_tags_are_refused_with_key_and_line(tmp_path: Path, value: str, tag: str) -> None:
    message = refusal(tmp_path, f"{HEAD}fault_tolerance:\n  safety_factor: 5\nsbatch: {value}\n")
    assert message.startswith(f"job.yaml:5: sbatch: the YAML tag {tag!r} is not allowed")


def test_a_nested_tag_names_the_dotted_key(tmp_path: Path) -> None:
    message = refusal(tmp_path, HEAD + "env:\n  OK: x\n  BAD: !!python/str x\n")
    assert message.startswith("job.yaml:5: env.BAD: the YAML tag '!!python/str' is not allowed")


def test_standard_tags_and_merges_still_work(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, """\
        name: !!str 010
        nodes: !!int "2"
        command: train.py
        env:
          <<: &defaults {A: "1", B: "2"}
          B: "3"
        setup: [echo]
    """))
    assert spec.name == "010" and spec.resources.nodes == 2
    assert dict(spec.env) == {"A": "1", "B": "3"}


# --- time limits are bounded ----------------------------------------------------------------


@pytest.mark.parametrize("text", ["99999999999999999999", "365-00:00:01", "525601", "8761:00:00",
                                  "1-" + "9" * 30, "9" * 5000])
def test_time_beyond_the_maximum_is_refused(text: str) -> None:
    with pytest.raises(TimeFormatError, match="longer than 365 days"):
        parse_duration(text)


def test_time_up_to_the_maximum_is_accepted() -> None:
    assert parse_duration("365-00:00:00") == MAX_TIME_SECONDS == 365 * 86400
    assert parse_duration("infinite") is None


def test_an_absurd_time_in_a_spec_names_key_and_line(tmp_path: Path) -> None:
    errors = errors_of(tmp_path, HEAD + "time: 99999999999999999999\n")
    assert errors[0].startswith("job.yaml:3: time: '99999999999999999999' is longer than 365 "
                                "days")
    assert '"infinite"' in errors[0]


# --- the program may not be empty -----------------------------------------------------------


@pytest.mark.parametrize("command", ['[""]', '["", --lr, "1"]', "\"''\"", '["  "]', '[-m, ""]'])
def test_an_empty_program_is_refused(tmp_path: Path, command: str) -> None:
    errors = errors_of(tmp_path, f"name: demo\ncommand: {command}\n")
    assert len(errors) == 1 and errors[0].startswith("job.yaml:2: command: "), errors
    assert "empty" in errors[0] or "module name" in errors[0]


def test_empty_arguments_stay_allowed(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, 'name: a\ncommand: [train.py, --tag, ""]\n'))
    assert spec.command.args == ("--tag", "")


# --- env: may not set what the job or the chain depends on ----------------------------------


@pytest.mark.parametrize(("name", "hint"), [
    ("PATH", "`setup:`"),
    ("PATH", "`python:`"),
    ("LD_PRELOAD", "wrapper script"),
    ("PYTHONHOME", "`python:`"),
    ("SLURM_JOB_ID", "`sbatch:`"),
    ("SLURM_CPUS_PER_TASK", "`srun_args:`"),
    ("SLURMD_NODENAME", "slurmd sets"),
    ("SBATCH_EXPORT", "`sbatch:`"),
    ("SRUN_CPUS_PER_TASK", "`srun_args:`"),
    ("FTSLURM_RUN_DIR", "ftslurm sets this variable itself"),
    ("FTSLURM_ANYTHING_NEW", "ftslurm sets this variable itself"),
    ("FAULT_TOL_FINISHED_FLAG_FILE", "autoresume.flag_file"),
    ("RANK", "ftslurm sets this variable itself"),
    ("LOCAL_RANK", "each rank its own"),
    ("WORLD_SIZE", "each rank its own"),
    ("MASTER_ADDR", "each rank its own"),
    ("MASTER_PORT", "each rank its own"),
    ("TORCHELASTIC_RESTART_COUNT", "`launcher_args:`"),
])
def test_env_names_that_break_the_chain_are_refused(tmp_path: Path, name: str, hint: str) -> None:
    errors = errors_of(tmp_path, f"{HEAD}env:\n  OK: x\n  {name}: x\n")
    assert len(errors) == 1 and errors[0].startswith(f"job.yaml:5: env.{name}: "), errors
    assert hint in errors[0]


def test_other_env_names_stay_allowed(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, HEAD + "env: {LD_LIBRARY_PATH: /opt/lib, PYTHONPATH: src, "
                                            "NCCL_DEBUG: WARN, MY_SLURM_TAG: x}\n"))
    assert len(spec.env) == 4


# --- sbatch: may not stop the chain ---------------------------------------------------------


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("array", "0-3", "--array breaks the chain of attempts: an array job"),
    ("--array", "0-3", "--array breaks the chain"),
    ("hold", "true", "--hold breaks the chain of attempts: a held job never starts"),
    ("dependency", "afterok:1", "--dependency breaks the chain"),
    ("export", "NONE", "--export breaks the chain of attempts: the job must see the environment"),
    ("requeue", "true", "--requeue breaks the chain of attempts: the chain handles requeued"),
    ("no-requeue", "true", "--no-requeue breaks the chain"),
    ("a", "0-3", "-a is sbatch's short form of --array: --array breaks the chain"),
    ("-a", "0-3", "-a is sbatch's short form of --array"),
    ("H", "true", "-H is sbatch's short form of --hold: --hold breaks the chain"),
    ("-H", "true", "-H is sbatch's short form of --hold"),
    ("d", "afterok:1", "-d is sbatch's short form of --dependency: --dependency breaks"),
    ("o", "x.log", "-o is sbatch's short form of --output: ftslurm writes --output itself"),
    ("L", "matlab", "-L is sbatch's short form of --licenses: write the long name `licenses:`"),
    ("arr", "0-3", "sbatch reads --arr as an abbreviation of --array"),
    ("dep", "afterok:1", "sbatch reads --dep as an abbreviation of --dependency"),
    ("out", "x.log", "sbatch reads --out as an abbreviation of --output"),
])
def test_sbatch_options_that_break_the_chain_are_refused(tmp_path: Path, key: str, value: str,
                                                         expected: str) -> None:
    errors = errors_of(tmp_path, f"{HEAD}sbatch:\n  mail-type: END\n  {key!r}: {value}\n")
    assert len(errors) == 1 and errors[0].startswith(f"job.yaml:5: sbatch.{key}: {expected}"), \
        errors


def test_other_sbatch_options_stay_accepted(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, HEAD + textwrap.dedent("""\
        sbatch:
          mail-type: END
          --mail-user: me@example.org
          gpus: 8
          export-file: env.txt
          reservation: maint
          no-kill: true
    """)))
    assert [name for name, _ in spec.resources.sbatch] == [
        "mail-type", "mail-user", "gpus", "export-file", "reservation", "no-kill"]


# --- a huge node count only warns -----------------------------------------------------------


def test_a_huge_node_count_warns_but_validates(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    spec = load_spec(write(tmp_path, HEAD + "nodes: 1000000000\n"))
    assert spec.resources.nodes == 1000000000
    assert len(spec.warnings) == 1
    assert spec.warnings[0].startswith(
        f"{tmp_path / 'job.yaml'}:3: nodes: 1000000000 nodes is more than {NODES_WARNING_ABOVE}")
    assert capsys.readouterr().err == f"ftslurm: warning: {spec.warnings[0]}\n"
    load_spec(write(tmp_path, HEAD + "nodes: 1000000000\n"), show_warnings=False)
    assert capsys.readouterr().err == ""


def test_node_counts_up_to_the_soft_bound_do_not_warn(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, HEAD + f"nodes: {NODES_WARNING_ABOVE}\n"), show_warnings=False)
    assert spec.warnings == ()


# --- the finished flag may not be one of ftslurm's own files --------------------------------


@pytest.mark.parametrize(("flag", "expected"), [
    *((f"run/{name}", f"is ftslurm's own {name!r} of the run directory")
      for name in RUN_DIR_RESERVED_NAMES),
    ("run/logs/done.flag", "is ftslurm's own 'logs'"),
    ("run/launcher_status/attempt-1.n1.json", "is ftslurm's own 'launcher_status'"),
    ("run/local_jobs/1/state.json", "is ftslurm's own 'local_jobs'"),
    ("run/./ledger.json", "is ftslurm's own 'ledger.json'"),
    ("run", "is the run directory or a folder above it"),
    ("run/", "is the run directory or a folder above it"),
    (".", "is the run directory or a folder above it"),
    ("job.yaml", "is the job spec itself"),
])
def test_a_flag_file_that_is_ftslurms_own_is_refused(tmp_path: Path, flag: str,
                                                      expected: str) -> None:
    errors = errors_of(tmp_path, f"{HEAD}run_dir: run\nautoresume:\n  flag_file: {flag}\n")
    assert len(errors) == 1, errors
    assert errors[0].startswith("job.yaml:5: autoresume.flag_file: "), errors
    assert expected in errors[0] and "finished.flag" in errors[0]


def test_a_flag_file_through_a_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "run")
    text = f"{HEAD}run_dir: run\nautoresume:\n  flag_file: alias/chain.json\n"
    errors = errors_of(tmp_path, text)
    assert "is ftslurm's own 'chain.json'" in errors[0]


@pytest.mark.parametrize("flag", [None, "run/finished.flag", "run/done", "run/ckpt/done.flag",
                                  "run/ledger.json.done", "checkpoints/done.flag"])
def test_other_flag_files_stay_allowed(tmp_path: Path, flag: str | None) -> None:
    text = f"{HEAD}run_dir: run\n" + (f"autoresume: {{flag_file: {flag}}}\n" if flag else "")
    spec = load_spec(write(tmp_path, text))
    assert spec.autoresume.flag_file == tmp_path / (flag or "run/finished.flag")


def test_the_reserved_names_match_what_ftslurm_writes(tmp_path: Path) -> None:
    from ftslurm.rundir import RunDir

    spec = load_spec(write(tmp_path, HEAD))
    paths = RunDir(spec.run_dir)
    written = {
        paths.ledger, paths.ledger_lock, paths.progress, paths.chain_settings, paths.spec_copy,
        paths.script("slurm"), paths.script("local"), paths.local_jobs,
        paths.launcher_status(1, "n1"), paths.learned_timeouts, paths.learned_timeouts_lock,
        spec.ft_config_path, paths.incident(1), paths.step_log(1),
        paths.job_log("7"), paths.attempt_log(1), paths.function_dir, paths.summary,
    }
    assert {p.relative_to(spec.run_dir).parts[0] for p in written} == set(RUN_DIR_RESERVED_NAMES)
