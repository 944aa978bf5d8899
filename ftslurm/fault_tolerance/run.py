"""Run one node's ranks under `FaultTolerantAgent`: torch's `launch_agent` flow with our agent.

Builds the rendezvous handler and `WorkerSpec` from torch's `LaunchConfig` exactly as
`torch.distributed.launcher.api.launch_agent` does, then maps the outcome to an exit code.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.distributed.elastic.rendezvous.registry as rdzv_registry
from torch.distributed.elastic import events, metrics
from torch.distributed.elastic.agent.server.api import WorkerSpec, WorkerState
from torch.distributed.elastic.metrics.api import MetricsConfig
from torch.distributed.elastic.multiprocessing import SignalException
from torch.distributed.elastic.rendezvous import RendezvousParameters
from torch.distributed.launcher.api import LaunchConfig, _get_addr_and_port

from ftslurm import env_vars, exit_codes
from ftslurm.fault_tolerance import stop_signals
from ftslurm.fault_tolerance.agent import FaultTolerantAgent
from ftslurm.fault_tolerance.config import FaultToleranceConfig
from ftslurm.fault_tolerance.heartbeat import make_private_dir
from ftslurm.fault_tolerance.monitor import HeartbeatMonitor
from ftslurm.fault_tolerance.status import EventKind, LauncherState, StatusFile, TimeoutSource
from ftslurm.fault_tolerance.timeouts import HeartbeatTimeouts

logger = logging.getLogger("ftslurm.launcher")


def run_agent(
    config: LaunchConfig,
    entrypoint: Callable[..., Any] | str,
    args: list[str],
    *,
    ft_config: FaultToleranceConfig,
    timeouts: HeartbeatTimeouts,
    run_dir: Path | None,
    status_file: Path | None,
    node: str,
    timeouts_source: TimeoutSource = TimeoutSource.WRITTEN,
) -> int:
    """Run the ranks to the end; return 0, FAILED, DO_NOT_RETRY or STOPPED.

    `config.logs_specs` says where the ranks' output goes (`rank_logs.RunDirLogsSpecs` in a run);
    `timeouts_source` whether `timeouts` are the configured ones or learned ones.
    """
    # torch 2.13 reuses the agent's shared TCPStore across restarts without a per-attempt key
    # prefix, so restarted ranks read their predecessors' gloo/NCCL addresses and fail to
    # connect. Rank 0 hosting a fresh store per attempt (torch's documented switch) avoids that.
    os.environ.setdefault(env_vars.TORCH_DISABLE_SHARE_RDZV_TCP_STORE, "1")
    if not config.run_id:
        config.run_id = str(uuid.uuid4().int)
        logger.warning("no --rdzv-id given, generated run id %s", config.run_id)
    rdzv_parameters = RendezvousParameters(
        backend=config.rdzv_backend,
        endpoint=config.rdzv_endpoint,
        run_id=config.run_id,
        min_nodes=config.min_nodes,
        max_nodes=config.max_nodes,
        local_addr=config.local_addr,
        **config.rdzv_configs,
    )
    master_addr, master_port = _get_addr_and_port(rdzv_parameters)
    os.environ[env_vars.TORCHELASTIC_SIGNALS_TO_HANDLE] = config.signals_to_handle
    stop_signals.install(config.signals_to_handle)

    ipc_dir = make_private_dir()
    os.environ[env_vars.FT_IPC_DIR] = str(ipc_dir)
    os.environ[env_vars.FT_SAFETY_FACTOR] = repr(ft_config.safety_factor)
    monitor = HeartbeatMonitor(ipc_dir, timeouts, timeouts_source=timeouts_source,
                               min_learned_timeout=ft_config.min_learned_timeout)
    status = StatusFile(status_file, node=node, max_restarts=config.max_restarts)
    status.update(timeouts=timeouts.to_dict())
    logger.info(
        "node %s: fault tolerance %s; heartbeat timeouts initial=%s s, subsequent=%s s (%s); "
        "status %s; rank output %s",
        node, ft_config.to_dict(), timeouts.initial, timeouts.subsequent, timeouts_source,
        status_file, config.logs_specs,
    )

    spec = WorkerSpec(
        role=config.role,
        local_world_size=config.nproc_per_node,
        entrypoint=entrypoint,
        args=tuple(args),
        rdzv_handler=rdzv_registry.get_rendezvous_handler(rdzv_parameters),
        max_restarts=config.max_restarts,
        monitor_interval=config.monitor_interval,
        master_addr=master_addr,
        master_port=master_port,
        local_addr=config.local_addr,
        event_log_handler=config.event_log_handler,
        numa_options=config.numa_options,
        duplicate_stdout_filters=config.duplicate_stdout_filters,
        duplicate_stderr_filters=config.duplicate_stderr_filters,
        virtual_local_rank=config.virtual_local_rank,
    )
    agent = FaultTolerantAgent(
        spec=spec,
        logs_specs=config.logs_specs,
        start_method=config.start_method,
        log_line_prefix_template=config.log_line_prefix_template,
        shutdown_timeout=config.shutdown_timeout,
        ft_config=ft_config,
        monitor=monitor,
        status=status,
        run_dir=run_dir,
        fixed_size=config.min_nodes == config.max_nodes,
        ipc_dir=ipc_dir,
    )
    shutdown_rdzv = True
    try:
        metrics.initialize_metrics(MetricsConfig(config.metrics_cfg))
        result = agent.run()
        events.record(agent.get_event_succeeded(), config.event_log_handler)
        if result is not None and result.state == WorkerState.SUCCEEDED:
            if stop_signals.stop_was_voted(ipc_dir):
                # The ranks agreed to stop (a signal reached some of them, not this launcher).
                status.event(kind=EventKind.STOP_VOTED, rank=None,
                             restart_count=agent.restart_count, action="stop")
                code, state = exit_codes.STOPPED, LauncherState.STOPPED
            else:
                code, state = exit_codes.OK, LauncherState.SUCCEEDED
        elif agent.do_not_retry:
            code, state = exit_codes.DO_NOT_RETRY, LauncherState.DO_NOT_RETRY
        else:
            code, state = exit_codes.FAILED, LauncherState.FAILED
            logger.error("ranks failed and no restarts are left (--max-restarts=%d)",
                         config.max_restarts)
    except SignalException as error:
        shutdown_rdzv = False  # keep the rendezvous open for the other nodes, as torch does
        events.record(agent.get_event_failed(), config.event_log_handler)
        logger.warning("stopped by %s: ranks were asked to stop", error.sigval.name)
        status.event(kind=EventKind.STOP_SIGNAL, rank=None, signal=error.sigval.name,
                     restart_count=agent.restart_count, action="stop")
        code, state = exit_codes.STOPPED, LauncherState.STOPPED
    except Exception:
        events.record(agent.get_event_failed(), config.event_log_handler)
        logger.exception("the launcher failed")
        code, state = exit_codes.FAILED, LauncherState.FAILED
    finally:
        agent.record_rank_ends()
        if shutdown_rdzv:
            spec.rdzv_handler.shutdown()
        monitor.close()
    status.update(state=state, exit_code=code, restart_count=agent.restart_count)
    logger.info("exiting with code %d (%s)", code, state)
    return code


__all__ = [
    "run_agent",
]
