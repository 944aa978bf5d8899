"""Every environment variable name that crosses a process boundary, and nothing else.

The contract between the sbatch script, the chain hooks, the launcher, the ranks and the
workload (Lightning callback, RankMonitorClient, GracefulShutdown). No other module under
`ftslurm/` spells one of these names; tests/unit/test_contracts.py checks it.

Three groups: ftslurm's own variables; torchrun's rank variables, which ftslurm sets (launcher
`none`) or refuses in `env:`; and SLURM's, which ftslurm reads inside a job.
"""

from __future__ import annotations

# -- ftslurm's own ---------------------------------------------------------------------------

#: Path of the flag file whose existence ends the auto-resume chain (name kept from
#: nvidia-resiliency-ext so workloads migrate unchanged).
FINISHED_FLAG_FILE = "FAULT_TOL_FINISHED_FLAG_FILE"
#: The run directory (ledger, attempts, learned timeouts).
RUN_DIR = "FTSLURM_RUN_DIR"
#: The attempt number of the chain, starting at 1.
ATTEMPT = "FTSLURM_ATTEMPT"
#: Path of the fault-tolerance YAML file the launcher reads (the job spec's `fault_tolerance:`).
FT_CONFIG_FILE = "FTSLURM_FT_CONFIG"
#: The launcher's private IPC directory (heartbeat slots, the stop vote), inherited by every rank.
FT_IPC_DIR = "FTSLURM_FT_IPC_DIR"
#: Safety factor the launcher passes to `calculate_and_set_hb_timeouts` in the ranks.
FT_SAFETY_FACTOR = "FTSLURM_FT_SAFETY_FACTOR"
#: The job id of an attempt run by the local backend (what SLURM_JOB_ID is under SLURM).
LOCAL_JOB_ID = "FTSLURM_LOCAL_JOB_ID"
#: Set by the local supervisor for a local job's script, inherited by every process of the job:
#: `<job dir>:<random token>`; how the supervisor finds them all to signal them (cancel, time
#: limit, end of the job), even those that left the script's process group or session.
LOCAL_JOB_MARKER = "FTSLURM_LOCAL_JOB"
#: A TCP port that was free on this machine when the local job started, for the launch's
#: rendezvous (MASTER_PORT with `launcher: none`); unique among running local jobs.
RDZV_PORT = "FTSLURM_RDZV_PORT"
#: Prefix `env:` may not use: ftslurm's variables pass the run's state to the job.
FTSLURM_PREFIX = "FTSLURM_"

# -- torchrun's (set for the ranks) ---------------------------------------------------------

RANK = "RANK"
LOCAL_RANK = "LOCAL_RANK"
WORLD_SIZE = "WORLD_SIZE"
LOCAL_WORLD_SIZE = "LOCAL_WORLD_SIZE"
GROUP_RANK = "GROUP_RANK"
GROUP_WORLD_SIZE = "GROUP_WORLD_SIZE"
NODE_RANK = "NODE_RANK"
ROLE_RANK = "ROLE_RANK"
ROLE_NAME = "ROLE_NAME"
ROLE_WORLD_SIZE = "ROLE_WORLD_SIZE"
MASTER_ADDR = "MASTER_ADDR"
MASTER_PORT = "MASTER_PORT"
#: Signals torch elastic's agent forwards to its workers (the launcher sets it for its agent).
TORCHELASTIC_SIGNALS_TO_HANDLE = "TORCHELASTIC_SIGNALS_TO_HANDLE"
#: The restart round of a worker, in the environment torch elastic builds for it (read by the
#: per-rank output files and by `report_progress`).
TORCHELASTIC_RESTART_COUNT = "TORCHELASTIC_RESTART_COUNT"
#: torch's switch for a fresh rendezvous TCP store per restart (see fault_tolerance/run.py).
TORCH_DISABLE_SHARE_RDZV_TCP_STORE = "TORCH_DISABLE_SHARE_RDZV_TCP_STORE"
#: Every rank variable a launcher sets; `env:` may not set them.
RANK_VARIABLES = (
    RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, GROUP_RANK, GROUP_WORLD_SIZE, ROLE_RANK,
    ROLE_NAME, ROLE_WORLD_SIZE, MASTER_ADDR, MASTER_PORT,
)
TORCHELASTIC_PREFIX = "TORCHELASTIC_"

# -- SLURM's (read inside a job) ------------------------------------------------------------

SLURM_JOB_ID = "SLURM_JOB_ID"
SLURM_JOB_NODELIST = "SLURM_JOB_NODELIST"
#: This node's name as slurmd knows it (the launcher names its node by it).
SLURMD_NODENAME = "SLURMD_NODENAME"
SLURM_RESTART_COUNT = "SLURM_RESTART_COUNT"
SLURM_PROCID = "SLURM_PROCID"
SLURM_NTASKS = "SLURM_NTASKS"
SLURM_NODEID = "SLURM_NODEID"
SLURM_LOCALID = "SLURM_LOCALID"
SLURM_STEP_TASKS_PER_NODE = "SLURM_STEP_TASKS_PER_NODE"
SLURM_TASKS_PER_NODE = "SLURM_TASKS_PER_NODE"
#: Which slurm.conf the commands read (kept when the environment is cleaned for sbatch).
SLURM_CONF = "SLURM_CONF"
#: Set to "standard" for SLURM's commands so their times parse.
SLURM_TIME_FORMAT = "SLURM_TIME_FORMAT"
SLURM_PREFIX = "SLURM_"
