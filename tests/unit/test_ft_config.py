"""FaultToleranceConfig: defaults, YAML section, CLI > YAML > defaults, null timeouts, bad input."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from ftslurm.errors import UsageError
from ftslurm.fault_tolerance import FaultToleranceConfig
from ftslurm.fault_tolerance.launcher import build_parser, resolve_ft_config


def test_defaults_match_the_seeds() -> None:
    config = FaultToleranceConfig()
    assert config.initial_rank_heartbeat_timeout == 60 * 60
    assert config.rank_heartbeat_timeout == 45 * 60
    assert config.rank_termination_signal == signal.SIGTERM


def test_yaml_section_with_null_means_no_timeout(tmp_path: Path) -> None:
    path = tmp_path / "ft.yaml"
    path.write_text(
        "fault_tolerance:\n"
        "  initial_rank_heartbeat_timeout: null\n"
        "  rank_heartbeat_timeout: 30\n"
        "  rank_termination_signal: SIGKILL\n"
    )
    config = FaultToleranceConfig.from_yaml_file(path)
    assert config.initial_rank_heartbeat_timeout is None
    assert config.rank_heartbeat_timeout == 30.0
    assert config.rank_termination_signal == signal.SIGKILL
    assert config.safety_factor == FaultToleranceConfig().safety_factor


def test_unknown_yaml_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "ft.yaml"
    path.write_text("fault_tolerance:\n  rank_heartbeat_timout: 3\n")
    with pytest.raises(UsageError, match="rank_heartbeat_timout"):
        FaultToleranceConfig.from_yaml_file(path)


@pytest.mark.parametrize(
    ("key", "value"),
    [("rank_heartbeat_timeout", "-1"), ("safety_factor", "0.5"),
     ("rank_termination_signal", "NOPE"), ("workload_check_interval", "abc")],
)
def test_bad_values_are_usage_errors(key: str, value: str) -> None:
    with pytest.raises(UsageError, match=key):
        FaultToleranceConfig().merged({key: value})


def _args(*extra: str):
    return build_parser().parse_args([*extra, "train.py"])


def test_cli_beats_yaml_beats_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FTSLURM_FT_CONFIG", raising=False)
    path = tmp_path / "ft.yaml"
    path.write_text("fault_tolerance:\n  rank_heartbeat_timeout: 30\n  safety_factor: 3\n")
    config = resolve_ft_config(
        _args("--ft-cfg-path", str(path), "--ft-rank-heartbeat-timeout", "7",
              "--ft-initial-rank-heartbeat-timeout", "null", "--ft-rank-termination-grace", "1.5",
              "--ft-rank-termination-signal", "SIGINT", "--ft-workload-check-interval", "0.5")
    )
    assert config.rank_heartbeat_timeout == 7.0  # CLI over YAML
    assert config.safety_factor == 3.0  # YAML over default
    assert config.initial_rank_heartbeat_timeout is None  # CLI null
    assert config.rank_termination_grace == 1.5
    assert config.rank_termination_signal == signal.SIGINT
    assert config.workload_check_interval == 0.5


def test_yaml_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ft.yaml"
    path.write_text("fault_tolerance:\n  rank_heartbeat_timeout: 12\n")
    monkeypatch.setenv("FTSLURM_FT_CONFIG", str(path))
    assert resolve_ft_config(_args()).rank_heartbeat_timeout == 12.0


def test_torchrun_options_are_accepted() -> None:
    args = _args("--nnodes", "1:2", "--nproc-per-node", "2", "--rdzv-backend", "c10d",
                 "--rdzv-endpoint", "n1:29400", "--rdzv-id", "x", "--max-restarts", "3",
                 "--monitor-interval", "0.2", "--log-dir", "/tmp/l", "-r", "3", "-t", "3",
                 "--ft-safety-factor", "4")
    assert args.nnodes == "1:2" and args.max_restarts == 3 and args.redirects == "3"
    assert args.ft_safety_factor == "4"


def test_bad_ft_option_exits_2_before_starting_anything(capsys: pytest.CaptureFixture) -> None:
    from ftslurm.fault_tolerance.launcher import main

    assert main(["--standalone", "--ft-safety-factor", "0.1", "train.py"]) == 2
    assert "safety_factor" in capsys.readouterr().err


def test_the_floor_of_learned_timeouts_from_yaml_cli_and_defaults(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FTSLURM_FT_CONFIG", raising=False)
    assert FaultToleranceConfig().min_learned_timeout == 300.0
    path = tmp_path / "ft.yaml"
    path.write_text("fault_tolerance:\n  min_learned_timeout: 60\n")
    assert FaultToleranceConfig.from_yaml_file(path).min_learned_timeout == 60.0
    assert resolve_ft_config(_args("--ft-cfg-path", str(path))).min_learned_timeout == 60.0
    config = resolve_ft_config(_args("--ft-cfg-path", str(path), "--ft-min-learned-timeout", "7"))
    assert config.min_learned_timeout == 7.0  # CLI over YAML
    assert resolve_ft_config(_args("--ft-min-learned-timeout", "null")).min_learned_timeout is None
    path.write_text("fault_tolerance:\n  min_learned_timeout: null\n")
    assert FaultToleranceConfig.from_yaml_file(path).min_learned_timeout is None
    assert FaultToleranceConfig().merged({"min_learned_timeout": "0"}).min_learned_timeout == 0.0
    assert FaultToleranceConfig().to_dict()["min_learned_timeout"] == 300.0


@pytest.mark.parametrize("value", ["-1", -5, "abc", "inf", "nan", True, [1]])
def test_a_bad_floor_is_a_usage_error_naming_it(value: object) -> None:
    with pytest.raises(UsageError, match="min_learned_timeout"):
        FaultToleranceConfig().merged({"min_learned_timeout": value})
