"""`ftslurm submit`'s run dir: validation before any write, reuse rules, rendered scripts.

(shellcheck on the scripts, and `ftslurm status` against a hanging scheduler, run processes:
tests/integration/test_chain_run_processes.py.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from ftslurm import cli
from ftslurm.chain.ledger import Ledger
from ftslurm.chain.outcome import Outcome
from ftslurm.chain.run import check_reuse, prepare_run, resolve_backend, write_run
from ftslurm.chain.settings import load_settings
from ftslurm.chain.view import stall, status_data
from ftslurm.errors import UsageError
from tests.helpers import slurm_run, spec_file


def test_prepare_writes_nothing_and_write_run_creates_the_run(tmp_path: Path) -> None:
    prepared = prepare_run(spec_file(tmp_path), backend="local", max_failures=2)
    assert not (tmp_path / "runs").exists()
    settings = prepared.settings
    assert (settings.backend, settings.mode, settings.config.max_failures) == ("local", "loop", 2)
    assert settings.config.max_attempts == 100 and settings.config.do_not_retry_exit_code == 93
    write_run(prepared, resume=False)
    run_dir = tmp_path / "runs" / "unit"
    for name in ("job.yaml", "job.local.sh", "chain.json", "ledger.json", "ft_config.yaml"):
        assert (run_dir / name).is_file(), name
    assert Ledger.open(run_dir).state().run_id.startswith("unit-")


def test_slurm_script_self_chains_from_the_spec_python(tmp_path: Path) -> None:
    prepared = prepare_run(spec_file(tmp_path, nodes=2), backend="slurm")
    assert prepared.settings.mode == "self"
    assert "python3 -m ftslurm.cli chain-start || chain_rc=$?" in prepared.script_text
    assert prepare_run(spec_file(tmp_path), backend="slurm", watch=True).settings.mode == "loop"


def test_the_script_header_tells_submit_from_render(tmp_path: Path) -> None:
    from ftslurm.render import render
    from ftslurm.spec import load_spec

    submitted = prepare_run(spec_file(tmp_path), backend="slurm").script_text
    rendered = render(load_spec(spec_file(tmp_path)))
    assert submitted.splitlines()[1].startswith("# Rendered by `ftslurm submit`")
    assert "ftslurm submit --resume" in submitted.split("#SBATCH")[0]
    assert rendered.splitlines()[1].startswith("# Rendered by `ftslurm render`")
    assert "ftslurm submit" not in rendered.split("#SBATCH")[0]


def test_local_backend_refuses_several_nodes(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="nodes: 2; the local backend runs on one machine"):
        prepare_run(spec_file(tmp_path, nodes=2), backend="local")


def test_backend_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert resolve_backend("auto") == "local"
    assert resolve_backend("slurm") == "slurm"


def test_reuse_rules(tmp_path: Path) -> None:
    spec = spec_file(tmp_path)
    write_run(prepare_run(spec, backend="local"), resume=False)
    with pytest.raises(UsageError, match="still going"):
        check_reuse(prepare_run(spec, backend="local"), resume=False)
    spec.write_text(spec.read_text().replace('"10"', '"20"'))
    changed = prepare_run(spec, backend="local")
    with pytest.raises(UsageError, match="different job spec") as error:
        check_reuse(changed, resume=False)
    assert error.value.exit_code == 2 and "--resume" in str(error.value)
    check_reuse(changed, resume=True)
    ledger = write_run(changed, resume=True)
    assert ledger.state().spec_fingerprint == changed.spec_fingerprint


def test_submit_bad_input_exits_2_and_writes_nothing(tmp_path: Path, capsys) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text("name: x\nnodes: zero\ncommand: [t.py]\n")
    assert cli.main(["submit", "--backend", "local", str(spec)]) == 2
    assert "nodes" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.yaml"]
    good = spec_file(tmp_path)
    assert cli.main(["submit", "--backend", "local", "--max-failures", "0", str(good)]) == 2
    assert "max_failures" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_dry_run_writes_nothing(tmp_path: Path, capsys) -> None:
    assert cli.main(["submit", "--backend", "local", "--dry-run", str(spec_file(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "dry run" in out and "runs/unit" in out
    assert not (tmp_path / "runs").exists()


def test_status_json_of_a_new_run(tmp_path: Path, capsys) -> None:
    prepared = prepare_run(spec_file(tmp_path), backend="local")
    ledger = write_run(prepared, resume=False)
    data = status_data(ledger.state(), prepared.settings)
    assert data["state"] == "running" and data["attempts"] == []
    assert data["failures_left"] == 3
    run_dir = str(tmp_path / "runs" / "unit")
    assert cli.main(["status", run_dir, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run_id"] == data["run_id"]
    assert cli.main(["status", run_dir]) == 0
    assert "run running" in capsys.readouterr().out


def test_status_of_a_foreign_directory_is_a_clear_error(tmp_path: Path, capsys) -> None:
    for command in ("status", "watch", "cancel", "explain"):
        assert cli.main([command, str(tmp_path)]) == 2, command  # bad input: exit 2
        assert "not a run directory (it has no ledger)" in capsys.readouterr().err
        assert cli.main([command, str(tmp_path / "missing")]) == 2, command
        assert "no such run directory" in capsys.readouterr().err


def test_hidden_hooks_are_not_listed() -> None:
    text = cli.build_parser().format_help()
    assert "submit" in text and "chain-start" not in text
    assert sys.executable


def test_a_run_with_nothing_in_flight_is_stalled(tmp_path: Path) -> None:
    run_dir = slurm_run(tmp_path)
    ledger = Ledger.open(run_dir)
    settings = load_settings(run_dir)
    assert stall(ledger.state(), settings) is None  # attempt 1 is queued
    ledger.record_start(1, "7")
    ledger.record_end(1, outcome=Outcome.FAILED, reason="exit code 1")
    stalled = stall(ledger.state(), settings)
    assert stalled is not None and stalled["repair"] == f"ftslurm watch --once {run_dir}"
    assert stalled["since"] == ledger.state().attempt(1).ended_at
    ledger.reserve(2)  # reserved by a process that is gone (no claim): still stalled
    assert stall(ledger.state(), settings) is not None
    ledger.record_run_end("failed", "given up")
    assert stall(ledger.state(), settings) is None  # an ended run is not stalled
