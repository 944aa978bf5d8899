"""Job spec validation: defaults, and errors that name the key, the file and the line."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from ftslurm import exit_codes
from ftslurm.errors import UsageError
from ftslurm.spec import load_spec
from ftslurm.spec.fields import SpecError

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def errors_of(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.exit_code == exit_codes.USAGE
    return [issue.format("job.yaml") for issue in info.value.issues]


def test_minimal_spec_gets_the_documented_defaults(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, "name: demo\ncommand: train.py --lr 0.1\n"))
    assert spec.run_dir == tmp_path / "runs" / "demo"
    assert spec.workdir == tmp_path
    assert spec.resources.nodes == 1 and spec.resources.nproc_per_node == 1
    assert spec.command.kind == "script" and spec.command.args == ("--lr", "0.1")
    assert spec.launch.launcher == "ft" and spec.launch.max_restarts == 3
    assert spec.launch.python == "python3"
    assert spec.autoresume.flag_file == spec.run_dir / "finished.flag"
    assert spec.autoresume.max_failures == 3
    assert spec.autoresume.do_not_retry_exit_code == 93
    assert spec.autoresume.max_node_failures is None
    assert spec.autoresume.stop_on_repeated_failure is True
    assert spec.signals.sbatch_signal == "B:USR1@300"
    assert spec.fault_tolerance["initial_rank_heartbeat_timeout"] == 3600
    assert spec.fault_tolerance["rank_heartbeat_timeout"] == 2700


def test_example_specs_validate() -> None:
    for path in sorted((REPO / "examples").glob("*/job.yaml")):
        load_spec(path)
    assert (REPO / "examples" / "minimal" / "job.yaml").exists()


def test_yaml_1_1_surprises_are_read_as_written(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, """\
        name: demo
        time: 1:30:00
        qos: no
        command: train.py
        env: {ZEROS: 010, FLAG: yes, FLOAT: 1.50}
    """))
    assert spec.resources.time == "1:30:00" and spec.resources.time_seconds == 5400
    assert spec.resources.qos == "no"
    assert dict(spec.env) == {"ZEROS": "010", "FLAG": "yes", "FLOAT": "1.50"}


def test_ntasks_derives_nproc_per_node_and_gpus_default_it(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, "name: a\nnodes: 2\nntasks: 8\ncommand: t.py\n"))
    assert spec.resources.nproc_per_node == 4 and spec.resources.world_size == 8
    spec = load_spec(write(tmp_path, "name: a\ngpus_per_node: 8\ncommand: t.py\n"))
    assert spec.resources.nproc_per_node == 8


def test_command_forms(tmp_path: Path) -> None:
    module = load_spec(write(tmp_path, "name: a\ncommand: [-m, pkg.train, --x]\n")).command
    assert (module.kind, module.target, module.args) == ("module", "pkg.train", ("--x",))
    exe = load_spec(write(tmp_path, "name: a\ncommand: ./run.sh 'two words'\n")).command
    assert (exe.kind, exe.target, exe.args) == ("executable", "./run.sh", ("two words",))
    assert exe.argv("python3") == ("./run.sh", "two words")


def test_every_error_is_reported_at_once_with_file_line_and_key(tmp_path: Path) -> None:
    errors = errors_of(tmp_path, """\
        name: demo
        nodes: 0
        nprocs_per_node: 2
        time: -5
        command: train.py
        launcher: tochrun
    """)
    assert errors[0] == "job.yaml:2: nodes: expected an integer >= 1, got 0"
    assert errors[1] == 'job.yaml:3: nprocs_per_node: unknown key (did you mean "nproc_per_node"?)'
    assert errors[2].startswith("job.yaml:4: time: '-5' is negative; expected a SLURM time limit")
    assert errors[3] == "job.yaml:6: launcher: expected one of ft, torchrun, none, got 'tochrun'"
    assert len(errors) == 4


@pytest.mark.parametrize(("text", "expected"), [
    ("nodes: two", "job.yaml:3: nodes: expected an integer >= 1, got the string 'two'"),
    ("time: 1:61:00", "job.yaml:3: time: '1:61:00': minutes and seconds must be below 60"),
    ("nodes: 2\nntasks: 7", "job.yaml:4: ntasks: 7 tasks cannot be spread evenly over 2 nodes"),
    ("gpus_per_node: 8\nnproc_per_node: 3", "job.yaml:4: nproc_per_node: 3 ranks per node"),
    ("mem: lots", "job.yaml:3: mem: expected a size such as 64G"),
    ("exclusive: maybe", "job.yaml:3: exclusive: expected true or false"),
    ("sbatch: {output: x.log}", "job.yaml:3: sbatch.output: ftslurm writes --output itself"),
    ("sbatch: {mail_type: END}", "job.yaml:3: sbatch.mail_type: not an sbatch long option"),
    ("env: {RANK: '3'}", "job.yaml:3: env.RANK: ftslurm sets this variable itself"),
    ("env: {A-B: x}", "job.yaml:3: env.A-B: not a valid environment variable name"),
    ("launcher: none\nmax_restarts: 2", "job.yaml:4: max_restarts: launcher none runs"),
    ("fault_tolerance: {safety_factor: 0.5}",
     "job.yaml:3: fault_tolerance.safety_factor: fault_tolerance.safety_factor must be >= 1"),
    ("fault_tolerance: {rank_heartbeat_timout: 5}",
     'job.yaml:3: fault_tolerance.rank_heartbeat_timout: unknown key (did you mean '
     '"rank_heartbeat_timeout"?)'),
    ("autoresume: {flag_file: /proc/done.flag}",
     "job.yaml:3: autoresume.flag_file: /proc/done.flag is not in a writable place"),
    ("autoresume: {do_not_retry_exit_code: 300}",
     "job.yaml:3: autoresume.do_not_retry_exit_code: expected an integer >= 1 and <= 255"),
    ("autoresume: {max_node_failures: 0}",
     "job.yaml:3: autoresume.max_node_failures: expected an integer >= 1, got 0"),
    ("autoresume: {max_node_failures: two}",
     "job.yaml:3: autoresume.max_node_failures: expected an integer >= 1, got the string"),
    ("autoresume: {stop_on_repeated_failure: 'no'}",
     "job.yaml:3: autoresume.stop_on_repeated_failure: expected true or false"),
    ("autoresume: {stop_on_repeated_failures: false}",
     'job.yaml:3: autoresume.stop_on_repeated_failures: unknown key (did you mean '
     '"stop_on_repeated_failure"?)'),
    ("signals: {warning_signal: SIGKILL}", "job.yaml:3: signals.warning_signal: SIGKILL cannot"),
    ("time: '5'\nsignals: {warning_time: 300}",
     "job.yaml:4: signals.warning_time: 300 s is not shorter than the job's time limit"),
    ("signals: {stop_grace: 400}", "job.yaml:3: signals.stop_grace: the ranks get 400 s"),
    ("template: nowhere.sbatch", "job.yaml:3: template:"),
    ("container_mounts: [/a:/b]", "job.yaml:3: container_mounts: needs container_image"),
    ("python: 'true'", "job.yaml:3: python: 'true' is a bash builtin"),
])
def test_bad_values_name_the_key_line_and_expectation(tmp_path: Path, text: str,
                                                      expected: str) -> None:
    errors = errors_of(tmp_path, f"name: demo\ncommand: train.py\n{text}\n")
    assert any(error.startswith(expected) for error in errors), errors


def test_flag_file_under_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("")
    errors = errors_of(tmp_path, "name: a\ncommand: t.py\nautoresume: {flag_file: plain/f}\n")
    assert "plain is not a directory" in errors[0]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_flag_file_in_a_read_only_directory_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    errors = errors_of(tmp_path, "name: a\ncommand: t.py\nautoresume: {flag_file: locked/f}\n")
    assert "not writable" in errors[0]


def test_missing_name_and_command(tmp_path: Path) -> None:
    errors = errors_of(tmp_path, "nodes: 1\n")
    assert errors[0].startswith("job.yaml:1: name: missing")
    assert errors[1].startswith("job.yaml:1: command: missing")


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: a\ncommand: [train.py\nnodes: 1\n")
    with pytest.raises(UsageError, match=r"job\.yaml:\d+: not valid YAML"):
        load_spec(path)


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "name: a\ncommand: t.py\nnodes: 1\nnodes: 2\n")
    with pytest.raises(UsageError, match=r"job\.yaml:4: duplicate key 'nodes' \(first on line 3\)"):
        load_spec(path)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert errors_of(tmp_path, "- a\n- b\n")[0].startswith("job.yaml:1: (top level): expected")


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        load_spec(tmp_path / "nope.yaml")


@pytest.mark.parametrize(("text", "node_failures", "repeated"), [
    ("{max_node_failures: 1}", 1, True),
    ("{max_node_failures: 4, stop_on_repeated_failure: false}", 4, False),
    ("{max_node_failures: null, stop_on_repeated_failure: true}", None, True),
])
def test_node_failure_and_crash_loop_keys(tmp_path: Path, text: str, node_failures: int | None,
                                          repeated: bool) -> None:
    from ftslurm.chain.policy import ChainConfig

    spec = load_spec(write(tmp_path, f"name: a\ncommand: t.py\nautoresume: {text}\n"))
    assert spec.autoresume.max_node_failures == node_failures
    assert spec.autoresume.stop_on_repeated_failure is repeated
    config = ChainConfig.from_autoresume(spec.autoresume)  # the chain takes the same values
    assert (config.max_node_failures, config.stop_on_repeated_failure) == (node_failures,
                                                                            repeated)


def test_max_failures_override(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, "name: a\ncommand: t.py\nautoresume: {max_failures: 1}\n"))
    assert spec.with_max_failures(7).autoresume.max_failures == 7
    with pytest.raises(UsageError):
        spec.with_max_failures(-1)


def test_docs_cover_every_key_and_placeholder() -> None:
    import dataclasses

    from ftslurm.fault_tolerance.config import FaultToleranceConfig
    from ftslurm.render import PLACEHOLDERS
    from ftslurm.spec import TOP_LEVEL_KEYS
    from ftslurm.spec.sections import AutoResume, Signals

    docs = (REPO / "docs" / "job-spec.md").read_text()
    keys = [*TOP_LEVEL_KEYS, *PLACEHOLDERS,
            *(field.name for field in dataclasses.fields(FaultToleranceConfig)),
            *(field.name for field in dataclasses.fields(AutoResume)),
            *(field.name for field in dataclasses.fields(Signals))]
    missing = [key for key in keys if f"`{key}`" not in docs and f"`{key}:`" not in docs]
    assert not missing, f"docs/job-spec.md does not document: {missing}"


def test_docs_state_every_refusal_and_bound() -> None:
    from ftslurm.spec import RUN_DIR_RESERVED_NAMES
    from ftslurm.spec.limits import (
        NODES_WARNING_ABOVE,
        REFUSED_ENV,
        REFUSED_ENV_PREFIXES,
        REFUSED_SBATCH_OPTIONS,
    )
    from ftslurm.spec.yaml_loader import MAX_SPEC_BYTES, MAX_YAML_DEPTH, MAX_YAML_NODES

    docs = (REPO / "docs" / "job-spec.md").read_text()
    names = [*RUN_DIR_RESERVED_NAMES, *REFUSED_ENV, *(f"{p}*" for p in REFUSED_ENV_PREFIXES),
             *REFUSED_SBATCH_OPTIONS]
    missing = [name for name in names if f"`{name}`" not in docs]
    bounds = [str(NODES_WARNING_ABOVE), str(MAX_SPEC_BYTES), str(MAX_YAML_DEPTH),
              str(MAX_YAML_NODES), "365 days", "1 MiB"]
    missing += [bound for bound in bounds if bound not in docs]
    assert not missing, f"docs/job-spec.md does not state: {missing}"
