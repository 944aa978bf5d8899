"""Names of the environment variables ftslurm sets for (or reads from) jobs and ranks.

One place for the contract between the sbatch script, the launcher, the chain and the workload.
"""

#: Path of the flag file whose existence ends the auto-resume chain (name kept from
#: nvidia-resiliency-ext so workloads migrate unchanged).
FINISHED_FLAG_FILE = "FAULT_TOL_FINISHED_FLAG_FILE"
#: The run directory (ledger, attempts, learned timeouts).
RUN_DIR = "FTSLURM_RUN_DIR"
#: The attempt number of the chain, starting at 1.
ATTEMPT = "FTSLURM_ATTEMPT"
#: Path of the fault-tolerance YAML file the launcher reads (the job spec's `fault_tolerance:`).
FT_CONFIG_FILE = "FTSLURM_FT_CONFIG"
#: Directory of the dev cluster's state (scripts/slurm-dev-cluster); optional.
DEV_CLUSTER_DIR = "FTSLURM_DEV_CLUSTER_DIR"
#: The job id of an attempt run by the local backend (what SLURM_JOB_ID is under SLURM).
LOCAL_JOB_ID = "FTSLURM_LOCAL_JOB_ID"
#: Set by the local supervisor for a local job's script, inherited by every process of the job:
#: `<job dir>:<random token>`; how the supervisor finds them all to signal them (cancel, time
#: limit, end of the job), even those that left the script's process group or session.
LOCAL_JOB_MARKER = "FTSLURM_LOCAL_JOB"
#: A TCP port that was free on this machine when the local job started, for the launch's
#: rendezvous (MASTER_PORT with `launcher: none`); unique among running local jobs.
RDZV_PORT = "FTSLURM_RDZV_PORT"
