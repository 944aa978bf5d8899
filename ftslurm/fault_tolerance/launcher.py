"""`ftslurm launch` / `ft_launcher`: torchrun's command line plus heartbeat fault tolerance.

The command line is `torch.distributed.run.get_args_parser()` with an added "fault tolerance"
group; `torch.distributed.run.config_from_args` turns it into torch's `LaunchConfig`, and the
ranks run under `FaultTolerantAgent` (a `LocalElasticAgent`). Exit codes: see `ftslurm.exit_codes`
(0 success, 1 restarts exhausted, 2 usage, 93 do-not-retry, 94 stopped by a signal).
"""

from __future__ import annotations

import io
import logging
import os
import sys
import uuid
from argparse import ArgumentParser, Namespace
from collections.abc import Sequence
from pathlib import Path

from ftslurm import env_vars, exit_codes
from ftslurm.errors import UsageError
from ftslurm.fault_tolerance.config import FaultToleranceConfig, read_yaml_section
from ftslurm.fault_tolerance.status import TimeoutSource
from ftslurm.fault_tolerance.timeouts import HeartbeatTimeouts, apply_floor, load_learned
from ftslurm.rundir import RunDir

logger = logging.getLogger("ftslurm.launcher")

#: `--ft-*` option (dest) -> FaultToleranceConfig field.
FT_OPTIONS: dict[str, str] = {
    "ft_initial_rank_heartbeat_timeout": "initial_rank_heartbeat_timeout",
    "ft_rank_heartbeat_timeout": "rank_heartbeat_timeout",
    "ft_workload_check_interval": "workload_check_interval",
    "ft_safety_factor": "safety_factor",
    "ft_rank_termination_signal": "rank_termination_signal",
    "ft_rank_termination_grace": "rank_termination_grace",
    "ft_min_learned_timeout": "min_learned_timeout",
}

_FT_HELP = {
    "initial_rank_heartbeat_timeout": "seconds from a rank's start to its first heartbeat, or "
    "null for none (default 3600)",
    "rank_heartbeat_timeout": "seconds allowed between heartbeats, or null for none (default 2700)",
    "workload_check_interval": "seconds between heartbeat checks (default 0.25)",
    "safety_factor": "calculate_and_set_hb_timeouts() multiplies observed intervals by this "
    "(default 5)",
    "rank_termination_signal": "signal that stops a hung rank after its stack dump (default "
    "SIGTERM; SIGKILL follows after the grace)",
    "rank_termination_grace": "seconds a hung rank gets to exit before SIGKILL (default 5)",
    "min_learned_timeout": "the least a learned heartbeat timeout may be, in seconds, or null for "
    "no floor (default 300); configured timeouts are never raised",
}


def build_parser() -> ArgumentParser:
    """torchrun's parser with the fault-tolerance options added."""
    from torch.distributed.run import get_args_parser

    parser = get_args_parser()
    parser.prog = "ftslurm launch"
    parser.description = (
        "Fault-tolerant, torchrun-compatible launcher: watches every rank's heartbeats, dumps the "
        "stacks of a hung rank, stops it and restarts the worker group up to --max-restarts."
    )
    group = parser.add_argument_group("fault tolerance")
    group.add_argument(
        "--ft-cfg-path", "--ft_cfg_path", default=None,
        help=f"YAML file with a `fault_tolerance:` section (default: ${env_vars.FT_CONFIG_FILE})",
    )
    for dest, field in FT_OPTIONS.items():
        flag = "--" + dest.replace("_", "-")
        group.add_argument(flag, "--" + dest, dest=dest, default=None, help=_FT_HELP[field])
    group.add_argument(
        "--ft-status-file", "--ft_status_file", default=None,
        help="JSON status file the launcher keeps up to date ({node} is replaced by the node "
        f"name; default: {RunDir('$' + env_vars.RUN_DIR).launcher_status('<N>', '<node>')} "
        f"when ${env_vars.RUN_DIR} is set, else <log-dir>/launcher_status.<node>.json)",
    )
    return parser


def resolve_ft_config(args: Namespace) -> FaultToleranceConfig:
    """Defaults < YAML (`--ft-cfg-path` or $FTSLURM_FT_CONFIG) < `--ft-*` options."""
    path = args.ft_cfg_path or os.environ.get(env_vars.FT_CONFIG_FILE)
    config = FaultToleranceConfig()
    if path:
        config = config.merged(read_yaml_section(path), origin=str(path))
    overrides = {field: getattr(args, dest) for dest, field in FT_OPTIONS.items()}
    return config.merged({k: v for k, v in overrides.items() if v is not None})


def resolve_timeouts(
    config: FaultToleranceConfig, run_dir: Path | None
) -> tuple[HeartbeatTimeouts, TimeoutSource]:
    """The configured timeouts, replaced by learned ones from the run directory if any (raised
    to `min_learned_timeout`), and which of the two they are."""
    configured = HeartbeatTimeouts(
        config.initial_rank_heartbeat_timeout, config.rank_heartbeat_timeout
    )
    if run_dir is None:
        return configured, TimeoutSource.WRITTEN
    try:
        learned = load_learned(run_dir)
    except ValueError as error:
        logger.warning("ignoring learned timeouts: %s", error)
        return configured, TimeoutSource.WRITTEN
    if learned is None:
        return configured, TimeoutSource.WRITTEN
    in_force = apply_floor(learned, config.min_learned_timeout)
    floored = "" if in_force == learned else (
        f"; raised to the floor of {config.min_learned_timeout} s (min_learned_timeout): "
        f"initial={in_force.initial} s, subsequent={in_force.subsequent} s"
    )
    logger.info(
        "using learned heartbeat timeouts from %s: initial=%s s, subsequent=%s s%s "
        "(configured: initial=%s s, subsequent=%s s)",
        run_dir, learned.initial, learned.subsequent, floored, configured.initial,
        configured.subsequent,
    )
    return in_force, TimeoutSource.LEARNED


def effective_timeouts(config: FaultToleranceConfig, run_dir: Path | None) -> HeartbeatTimeouts:
    """The timeouts in force at start (see `resolve_timeouts`)."""
    return resolve_timeouts(config, run_dir)[0]


def status_path(args: Namespace, node: str) -> Path | None:
    """Where the status JSON goes (see `--ft-status-file`)."""
    if args.ft_status_file:
        return Path(args.ft_status_file.replace("{node}", node))
    run_dir = os.environ.get(env_vars.RUN_DIR)
    if run_dir:
        attempt = os.environ.get(env_vars.ATTEMPT, "0")
        return RunDir(run_dir).launcher_status(attempt, node)
    if args.log_dir:
        # torchrun's --log-dir: one file per node, named after the run directory's status folder.
        folder = RunDir(args.log_dir).launcher_status_dir
        return folder.with_name(f"{folder.name}.{node}.json")
    return None


def _apply_standalone(args: Namespace) -> None:
    """torchrun's single-node conveniences (`--standalone`, 1-node static), as `run()` does."""
    from torch.distributed.run import parse_min_max_nnodes

    if args.standalone or (
        args.rdzv_backend == "static"
        and not args.rdzv_endpoint
        and args.master_port is None
        and parse_min_max_nnodes(args.nnodes)[1] == 1
    ):
        args.rdzv_backend, args.rdzv_endpoint = "c10d", "localhost:0"
        args.rdzv_id = str(uuid.uuid4())
    if args.master_port is None:
        args.master_port = 29500


def _setup_logging() -> None:
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[ftslurm launch %(asctime)s] %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Parse torchrun + FT options, run the ranks, return the launcher's exit code."""
    _setup_logging()
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        ft_config = resolve_ft_config(args)
        _apply_standalone(args)
        from torch.distributed.run import config_from_args

        launch_config, entrypoint, cmd_args = config_from_args(args)
    except UsageError as error:
        print(f"ftslurm launch: error: {error}", file=sys.stderr)
        return error.exit_code
    except (AssertionError, ValueError) as error:
        print(f"ftslurm launch: error: {error}", file=sys.stderr)
        return exit_codes.USAGE
    from ftslurm.fault_tolerance.rank_logs import RANK_LINE_PREFIX, run_dir_logs_specs
    from ftslurm.fault_tolerance.run import run_agent
    from ftslurm.fault_tolerance.status import node_name

    node = node_name()
    run_dir_env = os.environ.get(env_vars.RUN_DIR)
    run_dir = Path(run_dir_env) if run_dir_env else None
    assert launch_config.logs_specs is not None  # LaunchConfig fills in torch's default
    rank_logs = run_dir_logs_specs(args, launch_config.logs_specs, run_dir_env,
                                   os.environ.get(env_vars.ATTEMPT))
    if rank_logs is not None:
        launch_config.logs_specs = rank_logs
        if launch_config.log_line_prefix_template is None:
            launch_config.log_line_prefix_template = RANK_LINE_PREFIX
        # The ranks' lines are copied to this process's stdout: a line at a time, as the ranks
        # wrote them when they shared it, not in blocks when the job log is a file.
        if isinstance(sys.stdout, io.TextIOWrapper):
            sys.stdout.reconfigure(line_buffering=True)
    timeouts, source = resolve_timeouts(ft_config, run_dir)
    return run_agent(
        launch_config,
        entrypoint,
        cmd_args,
        ft_config=ft_config,
        timeouts=timeouts,
        timeouts_source=source,
        run_dir=run_dir,
        status_file=status_path(args, node),
        node=node,
    )


def console_main() -> None:
    """Entry point of the `ft_launcher` console script."""
    sys.exit(main())


__all__ = [
    "build_parser",
    "console_main",
    "effective_timeouts",
    "main",
    "resolve_ft_config",
    "resolve_timeouts",
    "status_path",
]
