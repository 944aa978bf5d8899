"""Fault tolerance inside an allocation: the rank monitor client, the monitor and the launcher.

The workload imports only the light client side (no torch import here)::

    from ftslurm.fault_tolerance import (
        FaultToleranceConfig, RankMonitorClient, RankMonitorClientError)
"""

from ftslurm.fault_tolerance.client import RankMonitorClient, RankMonitorClientError
from ftslurm.fault_tolerance.config import FaultToleranceConfig
from ftslurm.fault_tolerance.exit import exit_do_not_retry
from ftslurm.fault_tolerance.timeouts import HeartbeatTimeouts

__all__ = [
    "FaultToleranceConfig",
    "HeartbeatTimeouts",
    "RankMonitorClient",
    "RankMonitorClientError",
    "exit_do_not_retry",
]
