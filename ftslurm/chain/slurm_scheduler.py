"""`SlurmScheduler`: the chain's `Scheduler` protocol over `ftslurm.slurm.SlurmClient`.

An attempt is tagged by its SLURM job name (`--job-name=<run id>.<attempt>`, readable in squeue),
so `find(tag)` can look it up in the controller and in accounting after a watcher died between
`sbatch` and recording the job id. Attempts are submitted with `--no-requeue` by default: a
preemption or a dead node then ends the attempt (PREEMPTED, NODE_FAIL) and the chain submits the
next one (with the blamed nodes excluded), instead of SLURM re-running the same job id after its
~2 minute requeue delay. A job requeued anyway (by an admin) is still handled: it stays the same
attempt.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime

from ftslurm.scheduler import AttemptRequest, JobState
from ftslurm.slurm import SlurmClient, SlurmCommandError

log = logging.getLogger(__name__)

#: scancel's answers for a job that has already ended: nothing to cancel.
_GONE = ("already completing or completed", "Invalid job id specified")


def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


class SlurmScheduler:
    """Submits attempts with sbatch and reads their state with one sacct call per poll."""

    def __init__(
        self,
        client: SlurmClient | None = None,
        *,
        since: float | None = None,
        requeue: bool = False,
    ) -> None:
        self.client = client or SlurmClient()
        #: Only jobs submitted after this time (epoch s) are considered by `find`.
        self.since = since
        self.requeue = requeue

    def submit(self, request: AttemptRequest) -> str:
        """`sbatch` the attempt's script; its #SBATCH lines hold the resources and time limit."""
        extra = [f"--job-name={request.tag}", "--requeue" if self.requeue else "--no-requeue"]
        if request.exclude_nodes:
            extra.append(f"--exclude={','.join(request.exclude_nodes)}")
        if request.stdout is not None:
            extra.append(f"--output={request.stdout}")
        if request.stderr is not None:
            extra.append(f"--error={request.stderr}")
        dependency = f"afterany:{request.after}" if request.after else None
        job = self.client.submit(request.script, extra_args=extra, dependency=dependency,
                                 env=dict(request.env), cwd=request.workdir)
        return job.job_id

    def states(self, job_ids: Iterable[str]) -> dict[str, JobState]:
        """The latest run of each job (one `sacct -D` call, scontrol filling in)."""
        wanted = [str(job) for job in job_ids]
        if not wanted:
            return {}
        summaries = self.client.job_summaries(wanted)
        found: dict[str, JobState] = {}
        for job_id in wanted:
            summary = summaries.get(job_id)
            if summary is None:
                continue
            rec = summary.allocation
            earlier = tuple(r.state for r in summary.earlier_runs)
            found[job_id] = JobState(
                job_id=job_id, state=rec.state, exit_code=rec.exit_code, signal=rec.signal,
                nodes=tuple(rec.nodes), start=_epoch(rec.start), end=_epoch(rec.end),
                reason=rec.reason, cancelled_by=rec.cancelled_by, requeues=len(earlier),
                earlier_states=earlier,
            )
        return found

    def cancel(self, job_id: str) -> None:
        """`scancel` the job; a job that already ended is left alone."""
        try:
            self.client.cancel(str(job_id))
        except SlurmCommandError as error:
            if any(text.lower() in error.stderr.lower() for text in _GONE):
                return
            raise

    def find(self, tag: str) -> list[str]:
        """Jobs named `tag` (the attempt's tag is its job name)."""
        return self.client.find_jobs(tag, since=self.since)

    def exclude_nodes(self, job_id: str, nodes: Sequence[str]) -> None:
        """Keep a pending job (a pre-scheduled successor) off `nodes`."""
        if nodes:
            self.client.update_job(str(job_id), ExcNodeList=",".join(nodes))


__all__ = ["SlurmScheduler"]
