"""Sweep planning (`ftslurm/spec/sweep.py`): the grid, the points' specs and names, and every
refusal before anything is written; the CLI's dry run and refusals (in process, no job)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftslurm import cli
from ftslurm.chain.outcome import Outcome, RunStatus
from ftslurm.chain.sweep import Phase, load_sweep, manifest_for, phase, save_sweep
from ftslurm.errors import UsageError
from ftslurm.spec.sweep import parse_sweep_option, placeholders, plan_sweep

HEAD = """name: lr
nodes: 1
time: "1:00:00"
command: [train.py, --lr, "{{LR}}"]
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "train.py").touch()
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("option", "expected"), [
    ("env.LR=1e-3,3e-4", ("env.LR", ("1e-3", "3e-4"))),
    ("nodes=1, 2", ("nodes", ("1", "2"))),
    ('env.X=[a, "b,c"]', ("env.X", ("a", "b,c"))),
    ("seed=[1, 2, 3]", ("seed", ("1", "2", "3"))),
])
def test_sweep_options_parse(option: str, expected: tuple[str, tuple[str, ...]]) -> None:
    assert parse_sweep_option(option) == expected


@pytest.mark.parametrize("option", ["LR", "=1,2", "LR=", "LR=1,,2", "LR=[1, [2]]", "LR=[a"])
def test_bad_sweep_options_are_refused(option: str) -> None:
    with pytest.raises(UsageError):
        parse_sweep_option(option)


def test_a_grid_from_the_command_line_sets_every_point(tmp_path: Path) -> None:
    plan = plan_sweep(write(tmp_path, HEAD), ["env.LR=1e-3,3e-4", "nodes=1,2"], 2)
    assert plan is not None and plan.max_parallel == 2
    assert plan.sweep_dir == tmp_path / "runs" / "lr"
    assert [p.name for p in plan.points] == [
        "LR=1e-3,nodes=1", "LR=1e-3,nodes=2", "LR=3e-4,nodes=1", "LR=3e-4,nodes=2"]
    spec = plan.spec(plan.points[3])
    assert spec.name == "lr-4" and spec.run_dir == plan.sweep_dir / "LR=3e-4,nodes=2"
    assert spec.resources.nodes == 2  # typed like YAML: the number 2
    assert dict(spec.env)["LR"] == "3e-4"  # env values stay strings
    assert spec.command.args == ("--lr", "3e-4")  # the short name's placeholder
    assert spec.autoresume.flag_file == spec.run_dir / "finished.flag"


def test_the_sweep_section_and_the_command_line_merge(tmp_path: Path) -> None:
    text = HEAD + ("sweep:\n  grid:\n    env.LR: ['1e-3', '3e-4']\n"
                   "    autoresume.max_failures: [2, 5]\n  max_parallel: 3\n")
    path = write(tmp_path, text)
    plan = plan_sweep(path)
    assert plan is not None and len(plan.points) == 4 and plan.max_parallel == 3
    assert plan.spec(plan.points[1]).autoresume.max_failures == 5
    # the command line replaces a key's values and the limit
    plan = plan_sweep(path, ["env.LR=1e-2"], 1)
    assert plan is not None and plan.max_parallel == 1
    assert [p.label for p in plan.points] == ["autoresume.max_failures=2 env.LR=1e-2",
                                              "autoresume.max_failures=5 env.LR=1e-2"]
    # without a sweep: no plan
    assert plan_sweep(write(tmp_path, HEAD.replace("{{LR}}", "1"))) is None


def test_full_keys_name_points_when_short_names_collide(tmp_path: Path) -> None:
    text = HEAD.replace("{{LR}}", "{{env.max_failures}}")
    plan = plan_sweep(write(tmp_path, text),
                      ["env.max_failures=1", "autoresume.max_failures=2,3"])
    assert plan is not None
    assert plan.points[0].name == "env.max_failures=1,autoresume.max_failures=2"


@pytest.mark.parametrize(("options", "limit", "message"), [
    (["run_dir=a,b"], None, "set by the sweep itself"),
    (["name=a,b"], None, "set by the sweep itself"),
    (["env.LR=1,1"], None, "given twice"),
    (["env.LR=1,2"], 0, "at least 1"),
    (["nodes=1,0", "env.LR=1"], None, "sweep point 2 (nodes=0 env.LR=1)"),
    (["env.OTHER=1,2"], None, "{{LR}} names no swept key"),
    (["env.LR=a/b,a_b"], None, "the same folder name"),
    (["bad key=1"], None, "expected a dotted spec key"),
    (["nodes.x=1,2", "env.LR=1"], None, "nodes is not a mapping"),
])
def test_a_bad_point_refuses_the_whole_sweep(tmp_path: Path, options: list[str],
                                             limit: int | None, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        plan_sweep(write(tmp_path, HEAD), options, limit)
    assert message in str(caught.value)
    assert not (tmp_path / "runs").exists()


def test_points_may_not_share_a_finished_flag(tmp_path: Path) -> None:
    text = HEAD + "autoresume: {flag_file: done.flag}\n"
    with pytest.raises(UsageError, match="share the finished flag"):
        plan_sweep(write(tmp_path, text), ["env.LR=1,2"])
    # a flag per point, through the placeholder, is fine
    text = HEAD + "autoresume: {flag_file: 'done-{{LR}}.flag'}\n"
    plan = plan_sweep(write(tmp_path, text), ["env.LR=1,2"])
    assert plan is not None
    assert plan.spec(plan.points[1]).autoresume.flag_file == tmp_path / "done-2.flag"


def test_too_many_points_are_refused(tmp_path: Path) -> None:
    values = ",".join(str(n) for n in range(40))
    with pytest.raises(UsageError, match="more than 1000"):
        plan_sweep(write(tmp_path, HEAD), [f"env.LR={values}", f"env.B={values}"])


def test_placeholders_are_found_outside_a_sweep(tmp_path: Path) -> None:
    assert placeholders(write(tmp_path, HEAD)) == ["LR"]


def test_cli_refuses_a_bad_sweep_and_writes_nothing(tmp_path: Path, capsys) -> None:
    spec = write(tmp_path, HEAD)
    code = cli.main(["submit", "--backend", "local", str(spec), "--sweep", "env.LR=1,2",
                     "--sweep", "nodes=1,-1"])
    assert code == 2
    assert "sweep point 2" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    # a placeholder without a sweep, and --max-parallel without one, are refused too
    assert cli.main(["submit", "--backend", "local", str(spec)]) == 2
    assert "{{LR}} outside a sweep" in capsys.readouterr().err
    assert cli.main(["submit", "--backend", "local", str(spec), "--max-parallel", "2"]) == 2
    assert "--max-parallel is for sweeps" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_cli_dry_run_lists_the_points_and_validate_checks_them(tmp_path: Path, capsys) -> None:
    spec = write(tmp_path, HEAD + "sweep: {grid: {env.LR: ['1', '2', '3']}, max_parallel: 2}\n")
    assert cli.main(["submit", "--backend", "local", str(spec), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "3 points" in out and "at most 2 at once" in out and "LR=3" in out
    assert not (tmp_path / "runs").exists()
    assert cli.main(["validate", str(spec)]) == 0
    assert "a sweep of 3 points" in capsys.readouterr().out
    # render takes one run's spec
    assert cli.main(["render", str(spec)]) == 2
    assert "this spec is a sweep" in capsys.readouterr().err


def test_the_manifest_round_trips_and_phases_follow_the_ledger(tmp_path: Path) -> None:
    plan = plan_sweep(write(tmp_path, HEAD), ["env.LR=1,2"], 1)
    assert plan is not None
    save_sweep(manifest_for(plan))
    sweep = load_sweep(plan.sweep_dir)
    assert [p.values for p in sweep.points] == [{"env.LR": "1"}, {"env.LR": "2"}]
    assert sweep.max_parallel == 1 and not sweep.cancelled
    doc = json.loads((plan.sweep_dir / "sweep.json").read_text())
    assert doc["format"] == "ftslurm-sweep"
    from ftslurm.chain.ledger import Ledger

    ledger = Ledger.create(tmp_path / "r", spec_fingerprint="sha256:x", run_id="r")
    assert phase(ledger.state()) is Phase.WAITING
    ledger.reserve(1)
    assert phase(ledger.state()) is Phase.ACTIVE
    ledger.record_cancel("test")  # a request: the run holds its slot until it ends
    assert phase(ledger.state()) is Phase.ACTIVE
    ledger.record_run_end(RunStatus.CANCELLED, "test")
    assert phase(ledger.state()) is Phase.ENDED


def test_a_points_spec_reads_every_value_as_the_file_wrote_it(tmp_path: Path) -> None:
    # strings are taken as written in every spec; a sweep's points too (YAML 1.1 would read
    # 1:30:00 as 5400, no as false and 010 as 8)
    text = HEAD + "qos: no\nenv: {FOO: 010, BAR: '1:2'}\nsweep: {grid: {env.FLAG: [true, no]}}\n"
    plan = plan_sweep(write(tmp_path, text.replace('time: "1:00:00"', "time: 1:30:00")),
                      ["env.LR=1", "partition=no,on"])
    assert plan is not None
    assert [p.name for p in plan.points][:2] == ["FLAG=true,LR=1,partition=no",
                                                 "FLAG=true,LR=1,partition=on"]
    spec = plan.spec(plan.points[0])
    assert spec.resources.time_seconds == 5400 and spec.resources.qos == "no"
    assert spec.resources.partition == "no"
    assert dict(spec.env) == {"FOO": "010", "BAR": "1:2", "FLAG": "true", "LR": "1"}
    assert dict(plan.spec(plan.points[2]).env)["FLAG"] == "no"
    # a number stays a number
    plan = plan_sweep(write(tmp_path, HEAD), ["env.LR=1", "nodes=3"])
    assert plan is not None and plan.spec(plan.points[0]).resources.nodes == 3


def test_a_bad_points_error_names_the_point_not_a_line_of_another_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as caught:
        plan_sweep(write(tmp_path, HEAD), ["env.LR=1", "nodes=0"])
    message = str(caught.value)
    assert "sweep point 1 (env.LR=1 nodes=0)" in message and "nodes:" in message
    assert f"{tmp_path / 'job.yaml'}:" in message
    assert not any(f"job.yaml:{n}:" in message for n in range(1, 30)), message


def _slurm_sweep(tmp_path: Path, points: int, limit: int) -> Path:
    from ftslurm.api import prepare_sweep
    from ftslurm.chain.run import write_run

    plan = plan_sweep(write(tmp_path, HEAD), [f"env.LR={','.join(map(str, range(points)))}"],
                      limit)
    assert plan is not None
    for prepared in prepare_sweep(plan, backend="slurm"):
        write_run(prepared, resume=False)
    save_sweep(manifest_for(plan))
    return plan.sweep_dir


def _run_ends(run_dir: Path, job: str) -> None:
    from ftslurm.chain.ledger import Ledger

    ledger = Ledger.open(run_dir)
    ledger.record_submitted(1, job)
    ledger.record_start(1, job, nodes=["n1"], requeue_count=0, progress=None)
    ledger.record_end(1, outcome=Outcome.FINISHED, job_id=job, source="job", reason="done",
                      exit_code=0)
    ledger.record_run_end(RunStatus.FINISHED, "done")


def test_an_end_hook_frees_one_slot_and_others_wait_for_runs_that_just_ended(
        tmp_path: Path) -> None:
    from ftslurm.chain.sweep import _reserve_turns

    root = _slurm_sweep(tmp_path, points=5, limit=2)
    first = _reserve_turns(root)
    assert [p.name for p in first.points] == ["LR=0", "LR=1"] and first.after is None
    # two runs end at the same moment: the first one's end hook takes one slot only, and the
    # point it starts waits for its job
    _run_ends(root / "LR=0", "11")
    _run_ends(root / "LR=1", "12")
    hook = _reserve_turns(root, freed_by="11")
    assert [p.name for p in hook.points] == ["LR=2"] and hook.after == "11"
    # anyone else (a watcher) fills the other slot, waiting for every run that just ended
    other = _reserve_turns(root)
    assert [p.name for p in other.points] == ["LR=3"]
    assert other.after is not None and sorted(other.after.split(":")) == ["11", "12"]
    assert _reserve_turns(root).points == []  # both slots busy
