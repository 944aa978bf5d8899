"""Each rank's stdout and stderr in the run directory, and still in the launcher's own output.

`RunDirLogsSpecs` is a torch elastic `LogsSpecs` (the extension point torchrun's `--logs-specs`
uses): in a run (`$FTSLURM_RUN_DIR` and `$FTSLURM_ATTEMPT` set) each rank of each restart round
writes to `RunDir.rank_log(attempt, global_rank, restart_count, "out"|"err")`, and torch's
`TailLog` copies every line to the launcher's stdout/stderr (a tee), so the job log keeps its
interleaved view, each line prefixed with the rank (`[3]:`).

The per-rank files are what the launcher reads evidence from: a hung rank's stack dump is the
bytes its stderr file grew by during the dump, and every `rank_ends` entry of the status file
names the files of that rank. Explicit torchrun options (`--log-dir`, `--redirects`, `--tee`,
`--logs-specs`) keep torch's own layout.
"""

from __future__ import annotations

import logging
import os
from argparse import Namespace
from pathlib import Path

from torch.distributed.elastic.multiprocessing import LogsDest, LogsSpecs, Std

from ftslurm import env_vars
from ftslurm.rundir import RunDir

logger = logging.getLogger("ftslurm.launcher")

_RESTART_COUNT = env_vars.TORCHELASTIC_RESTART_COUNT

#: The tee'd lines' prefix when the user set none (torch's template syntax): the global rank.
RANK_LINE_PREFIX = "[${rank}]:"


class RunDirLogsSpecs(LogsSpecs):
    """Per-rank files in the run directory, tee'd to the launcher's stdout/stderr.

    `inner` (torch's `DefaultLogsSpecs` as built from the command line) still provides what
    the run directory has no name for: each rank's error (reply) file of torch's `@record`.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        attempt: str,
        inner: LogsSpecs,
        *,
        local_ranks_filter: set[int] | None = None,
    ) -> None:
        self._run_dir = RunDir(run_dir)
        self._attempt = attempt
        self._inner = inner
        super().__init__(
            log_dir=str(self._run_dir.rank_logs(attempt)),
            redirects=Std.ALL,
            tee=Std.ALL,
            local_ranks_filter=local_ranks_filter,
        )

    @property
    def root_log_dir(self) -> str:
        return str(self._run_dir.rank_logs(self._attempt))

    def reify(self, envs: dict[int, dict[str, str]]) -> LogsDest:
        dest = self._inner.reify(envs)
        try:
            self._run_dir.rank_logs(self._attempt).mkdir(parents=True, exist_ok=True)
        except OSError as error:  # evidence is never worth failing the attempt for
            logger.warning("cannot create %s (%s): the ranks write to the launcher's output only",
                           self._run_dir.rank_logs(self._attempt), error)
            return dest
        for local_rank, env in envs.items():
            rank = int(env[env_vars.RANK])
            restart = int(env.get(_RESTART_COUNT, "0"))
            out = str(self._run_dir.rank_log(self._attempt, rank, restart, "out"))
            err = str(self._run_dir.rank_log(self._attempt, rank, restart, "err"))
            dest.stdouts[local_rank], dest.stderrs[local_rank] = out, err
            if self._local_ranks_filter and local_rank not in self._local_ranks_filter:
                # --local-ranks-filter: only these ranks are shown; every rank has its files.
                dest.tee_stdouts.pop(local_rank, None)
                dest.tee_stderrs.pop(local_rank, None)
            else:
                dest.tee_stdouts[local_rank], dest.tee_stderrs[local_rank] = out, err
        return dest

    def __repr__(self) -> str:
        return (f"RunDirLogsSpecs(root_log_dir={self.root_log_dir}, "
                f"local_ranks_filter={self._local_ranks_filter})")


def explicit_log_options(args: Namespace) -> bool:
    """Whether the command line chose where the ranks' output goes (torchrun's options)."""
    return bool(
        args.log_dir
        or getattr(args, "logs_specs", None)
        or Std.from_str(args.redirects) != Std.NONE
        or Std.from_str(args.tee) != Std.NONE
    )


def run_dir_logs_specs(
    args: Namespace, inner: LogsSpecs, run_dir: str | None, attempt: str | None
) -> RunDirLogsSpecs | None:
    """The run-dir layout when in a run and the command line chose nothing else, else None."""
    if not run_dir or not attempt or explicit_log_options(args):
        return None
    ranks = None
    if args.local_ranks_filter:
        ranks = {int(rank) for rank in args.local_ranks_filter.split(",")}
    return RunDirLogsSpecs(Path(run_dir), attempt, inner, local_ranks_filter=ranks)


__all__ = [
    "RANK_LINE_PREFIX",
    "RunDirLogsSpecs",
    "explicit_log_options",
    "run_dir_logs_specs",
]
