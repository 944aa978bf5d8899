"""`RunDir`: every file and folder name of a run directory, and nothing else.

A run directory (default `runs/<name>`) holds everything the chain knows, so that any process
can die and another can pick up from the files. No other module spells one of these names:
callers ask a `RunDir` for a path. tests/unit/test_contracts.py checks that.

    job.yaml                      the job spec as submitted (`spec_copy`)
    job.sbatch | job.local.sh     the rendered script of the backend (`script`)
    chain.json                    the chain's settings (`chain_settings`)
    ledger.json, ledger.json.lock the ledger and its lock (`ledger`, `ledger_lock`)
    progress                      the workload's progress marker (`progress`)
    ft_config.yaml                the `fault_tolerance:` section for the launcher (`ft_config`)
    ft_learned_timeouts.json      heartbeat timeouts learned by the ranks (`learned_timeouts`),
                                  and its `.lock` (`learned_timeouts_lock`)
    finished.flag                 the finished flag, unless the spec names another (`default_flag`)
    ft_state.json                 read only: the Lightning callback's file before 0.2
                                  (`legacy_lightning_state`)
    logs/                         job output: `<job id>.out` (SLURM), `attempt-<N>.out` (local)
    launcher_status/              `attempt-<N>.<node>.json`, one per launcher (`launcher_status`)
    local_jobs/                   the local backend's job folders (`local_jobs`)
    logs/attempt-<N>/             `rank-<R>.restart-<k>.out|err`: each rank's output (`rank_log`)
    incidents/                    `attempt-<N>.json`: how each attempt ended, with evidence
    step_logs/                    `attempt-<N>.log`: the workload's progress reports (`step_log`),
                                  `attempt-<N>.restart-<k>.last`: the latest one (`last_step_slot`)
    function_io/                  `submit_function`'s pickled call and result (`function_dir`):
                                  `submission.pkl` (`function_call`), `result.pkl`
                                  (`function_result`), `error.rank-<R>.pkl` (`function_error`)

A sweep directory (`SweepDir`) holds one run directory per point, named from its values, plus
`sweep.json` (the points and `max_parallel`) and its lock `sweep.json.lock`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_SPEC_COPY = "job.yaml"
_SCRIPTS = {"slurm": "job.sbatch", "local": "job.local.sh"}
_CHAIN_SETTINGS = "chain.json"
_LEDGER = "ledger.json"
_LEDGER_LOCK = "ledger.json.lock"
_PROGRESS = "progress"
_FT_CONFIG = "ft_config.yaml"
_LEARNED_TIMEOUTS = "ft_learned_timeouts.json"
_LEARNED_TIMEOUTS_LOCK = "ft_learned_timeouts.json.lock"
_DEFAULT_FLAG = "finished.flag"
_LEGACY_LIGHTNING_STATE = "ft_state.json"
_LOGS = "logs"
_LAUNCHER_STATUS = "launcher_status"
_LOCAL_JOBS = "local_jobs"
_INCIDENTS = "incidents"
_STEPS = "step_logs"
_FUNCTION = "function_io"
_SUMMARY = "summary.json"
_FUNCTION_CALL = "submission.pkl"
_FUNCTION_RESULT = "result.pkl"
_FUNCTION_ERROR_PREFIX = "error.rank-"
_FUNCTION_ERROR_SUFFIX = ".pkl"
_SWEEP_MANIFEST = "sweep.json"
_SWEEP_LOCK = "sweep.json.lock"


@dataclass(frozen=True)
class RunDir:
    """The paths of one run directory (nothing is created or read here)."""

    root: Path

    def __init__(self, root: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "root", Path(root))

    #: The names ftslurm keeps directly under the run directory. The finished flag may be none
    #: of them, nor inside one: the chain would read its own file as "training finished", or
    #: the training would write over the chain's state.
    RESERVED_NAMES = (
        _LEDGER, _LEDGER_LOCK, _PROGRESS, _CHAIN_SETTINGS, _SPEC_COPY, *_SCRIPTS.values(),
        _FT_CONFIG, _LOGS, _LAUNCHER_STATUS, _LOCAL_JOBS, _LEARNED_TIMEOUTS, _LEARNED_TIMEOUTS_LOCK,
        _INCIDENTS, _STEPS, _FUNCTION, _SUMMARY,
    )

    @property
    def spec_copy(self) -> Path:
        """The job spec as it was submitted (for people; paths in it are relative to the
        original's folder)."""
        return self.root / _SPEC_COPY

    def script(self, backend: str) -> Path:
        """The rendered script for `backend` ("slurm" or "local")."""
        return self.root / _SCRIPTS[backend]

    @property
    def chain_settings(self) -> Path:
        return self.root / _CHAIN_SETTINGS

    @property
    def ledger(self) -> Path:
        return self.root / _LEDGER

    @property
    def ledger_lock(self) -> Path:
        return self.root / _LEDGER_LOCK

    @property
    def progress(self) -> Path:
        """The progress marker the workload writes (a step number) or touches."""
        return self.root / _PROGRESS

    @property
    def ft_config(self) -> Path:
        """The `fault_tolerance:` section, written for the launcher."""
        return self.root / _FT_CONFIG

    @property
    def learned_timeouts(self) -> Path:
        """Heartbeat timeouts learned by the ranks, read by the next attempt's launcher."""
        return self.root / _LEARNED_TIMEOUTS

    @property
    def learned_timeouts_lock(self) -> Path:
        """The lock every writer of the learned timeouts holds while it merges."""
        return self.root / _LEARNED_TIMEOUTS_LOCK

    @property
    def legacy_lightning_state(self) -> Path:
        """Where the Lightning callback of ftslurm 0.1 kept its learned timeouts (read once,
        when `learned_timeouts` does not exist yet)."""
        return self.root / _LEGACY_LIGHTNING_STATE

    @property
    def default_flag(self) -> Path:
        """The finished flag when the spec does not name one."""
        return self.root / _DEFAULT_FLAG

    @property
    def logs(self) -> Path:
        """The folder of the jobs' output."""
        return self.root / _LOGS

    def job_log(self, job_id: str) -> Path:
        """A SLURM job's output (`#SBATCH --output=<logs>/%j.out`)."""
        return self.logs / f"{job_id}.out"

    #: The job-id pattern sbatch expands in `--output` (see `job_log`).
    JOB_LOG_PATTERN = "%j.out"

    def attempt_log(self, attempt: int) -> Path:
        """A local attempt's output."""
        return self.logs / f"attempt-{attempt}.out"

    def rank_logs(self, attempt: int | str) -> Path:
        """The folder of one attempt's per-rank output files."""
        return self.logs / f"attempt-{attempt}"

    def rank_log(self, attempt: int | str, rank: int, restart: int, stream: str) -> Path:
        """One rank's output in one round of an attempt; `stream` is "out" or "err"."""
        if stream not in ("out", "err"):
            raise ValueError(f"stream must be 'out' or 'err', got {stream!r}")
        return self.rank_logs(attempt) / f"rank-{rank}.restart-{restart}.{stream}"

    @property
    def incidents(self) -> Path:
        """The folder of the attempts' incident records."""
        return self.root / _INCIDENTS

    def incident(self, attempt: int) -> Path:
        """What is known about how `attempt` ended, with its evidence (`ftslurm explain`)."""
        return self.incidents / f"attempt-{attempt}.json"

    @property
    def step_logs(self) -> Path:
        """The folder of the workload's progress reports (`ftslurm.report_progress`)."""
        return self.root / _STEPS

    def step_log(self, attempt: int | str) -> Path:
        """Rank 0's progress reports in `attempt`: one line each."""
        return self.step_logs / f"attempt-{attempt}.log"

    def last_step_slot(self, attempt: int | str, restart: int) -> Path:
        """Rank 0's latest progress report in one restart round of `attempt` (a small binary
        file it maps and overwrites at every report: it survives the process's crash)."""
        return self.step_logs / f"attempt-{attempt}.restart-{restart}.last"

    def last_step_slot_index(self) -> dict[int, dict[int, Path]]:
        """Every last-step slot, by attempt and restart round (one listing of the folder)."""
        found: dict[int, dict[int, Path]] = {}
        for name in _listing(self.step_logs):
            attempt, dot, rest = name.removeprefix("attempt-").partition(".restart-")
            restart = rest.removesuffix(".last")
            if (name.startswith("attempt-") and dot and rest.endswith(".last")
                    and attempt.isdigit() and restart.isdigit()):
                found.setdefault(int(attempt), {})[int(restart)] = self.step_logs / name
        return found

    @property
    def launcher_status_dir(self) -> Path:
        return self.root / _LAUNCHER_STATUS

    def launcher_status(self, attempt: int | str, node: str) -> Path:
        """The status file of the launcher of `attempt` on `node`."""
        return self.launcher_status_dir / f"attempt-{attempt}.{node}.json"

    def launcher_statuses(self, attempt: int) -> list[Path]:
        """The status files of every launcher of `attempt`, sorted by node."""
        return sorted(self.launcher_status_dir.glob(f"attempt-{attempt}.*.json"))

    def launcher_status_index(self) -> dict[int, list[Path]]:
        """Every launcher status file, by attempt, sorted by node (one listing of the folder)."""
        found: dict[int, list[Path]] = {}
        for name in sorted(_listing(self.launcher_status_dir)):
            attempt, dot, rest = name.removeprefix("attempt-").partition(".")
            if name.startswith("attempt-") and dot and rest.endswith(".json") and \
                    attempt.isdigit():
                found.setdefault(int(attempt), []).append(self.launcher_status_dir / name)
        return found

    @property
    def local_jobs(self) -> Path:
        """The local backend's job folders."""
        return self.root / _LOCAL_JOBS

    @property
    def function_dir(self) -> Path:
        """`submit_function`'s folder: the pickled call, and each rank's result."""
        return self.root / _FUNCTION

    @property
    def function_call(self) -> Path:
        """The call `submit_function` pickled (a submitit `DelayedSubmission`)."""
        return self.function_dir / _FUNCTION_CALL

    @property
    def function_result(self) -> Path:
        """Rank 0's `("success", value)`, written before it creates the finished flag."""
        return self.function_dir / _FUNCTION_RESULT

    def function_error(self, rank: int) -> Path:
        """`("error", traceback, exception or None)` of the last call that raised on `rank`."""
        return self.function_dir / f"{_FUNCTION_ERROR_PREFIX}{rank}{_FUNCTION_ERROR_SUFFIX}"

    def function_errors(self) -> dict[int, Path]:
        """Every rank's error file, by rank (one listing of the folder)."""
        found: dict[int, Path] = {}
        for name in _listing(self.function_dir):
            rank = name.removeprefix(_FUNCTION_ERROR_PREFIX).removesuffix(_FUNCTION_ERROR_SUFFIX)
            if (name.startswith(_FUNCTION_ERROR_PREFIX) and name.endswith(_FUNCTION_ERROR_SUFFIX)
                    and rank.isdigit()):
                found[int(rank)] = self.function_dir / name
        return found

    @property
    def summary(self) -> Path:
        """An ended run's `ftslurm ls` row, kept with the stats of the files it was read from."""
        return self.root / _SUMMARY

    def summary_inputs(self) -> list[Path]:
        """The files an `ftslurm ls` row is read from (chain.json, the ledger, the incident
        records, step logs and slots, launcher status files)."""
        paths = [self.chain_settings, self.ledger]
        for folder in (self.incidents, self.step_logs, self.launcher_status_dir):
            paths += [folder / name for name in sorted(_listing(folder))]
        return paths

    @property
    def is_run(self) -> bool:
        """Whether this folder holds a run (its chain settings exist)."""
        return self.chain_settings.is_file()


@dataclass(frozen=True)
class SweepDir:
    """The paths of one sweep directory: a run directory per point, and the sweep's manifest."""

    root: Path

    def __init__(self, root: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def manifest(self) -> Path:
        """The sweep's points, their values and `max_parallel` (`chain/sweep.py`)."""
        return self.root / _SWEEP_MANIFEST

    @property
    def lock(self) -> Path:
        """Held while the sweep counts its active points and reserves the next ones."""
        return self.root / _SWEEP_LOCK

    def point(self, name: str) -> RunDir:
        """The run directory of the point `name`."""
        return RunDir(self.root / name)

    @property
    def is_sweep(self) -> bool:
        return self.manifest.is_file()


def _listing(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []


__all__ = ["RunDir", "SweepDir"]
