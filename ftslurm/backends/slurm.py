"""`SlurmScheduler`: the chain's `Scheduler` protocol over `ftslurm.slurm.client.SlurmClient`.

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
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path

from ftslurm.backends.base import AttemptRequest, JobState
from ftslurm.slurm.client import SlurmClient, SlurmCommandError, submission_env
from ftslurm.slurm.parse import SlurmParseError, parse_scontrol_show_job

log = logging.getLogger(__name__)

#: scancel's answers for a job that has already ended: nothing to cancel.
_GONE = ("already completing or completed", "Invalid job id specified")
#: sbatch's answer when no nodes can ever satisfy the request, e.g. when the excluded (blamed)
#: nodes leave fewer nodes in the partition than the attempt needs.
_INFEASIBLE = "Requested node configuration is not available"


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
        if request.stdout is not None:
            extra.append(f"--output={request.stdout}")
        if request.stderr is not None:
            extra.append(f"--error={request.stderr}")
        dependency = f"afterany:{request.after}" if request.after else None
        exclude = [f"--exclude={','.join(request.exclude_nodes)}"] if request.exclude_nodes else []
        try:
            job = self.client.submit(request.script, extra_args=[*extra, *exclude],
                                     dependency=dependency, env=dict(request.env),
                                     cwd=request.workdir)
        except SlurmCommandError as error:
            if not exclude or _INFEASIBLE.lower() not in error.stderr.lower():
                raise
            # Excluding the blamed nodes leaves too few: a job that can never start would stall
            # the chain, so run on them rather than not at all.
            log.warning("excluding %s leaves too few nodes for %s; submitting without exclusions",
                        ",".join(request.exclude_nodes), request.tag)
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

    def node_problems(self, nodes: Sequence[str], *, since: float | None = None,
                      until: float | None = None) -> dict[str, str]:
        """Nodes slurmdbd recorded down, drained or failed between `since` and `until` (epoch
        s; `sacctmgr show event`), and nodes `scontrol show node` reports unusable now. The
        events matter: with `ReturnToService=2` a node that failed under a job is often back
        before anyone asks. Accounting that does not answer leaves only the current states."""
        problems: dict[str, str] = {}
        if since is not None:
            try:
                events = self.client.node_events(nodes, since, until or time.time())
            except (SlurmCommandError, SlurmParseError) as error:
                log.warning("no node events from accounting: %s", error)
                events = []
            for event in events:
                when = f" at {event.start:%H:%M:%S}" if event.start is not None else ""
                why = f" ({event.reason})" if event.reason else ""
                problems.setdefault(event.node, f"{event.state}{why}{when}")
        try:
            states = self.client.node_states(nodes)
        except (SlurmCommandError, SlurmParseError) as error:
            log.warning("no node states from the controller: %s", error)
            states = {}
        for name, node in states.items():
            if node.unusable:
                problems.setdefault(name, node.state + (f" ({node.reason})" if node.reason else ""))
        return problems

    def exclude_nodes(self, job_id: str, nodes: Sequence[str]) -> None:
        """Keep a pending job (a pre-scheduled successor) off `nodes`.

        scontrol accepts an exclusion that leaves too few nodes, and the job then pends forever
        (reason BadConstraints), stalling the chain; so the job's own script is first tried with
        `sbatch --test-only --exclude=...`, and an infeasible exclusion raises instead."""
        if not nodes:
            return
        excluded = ",".join(nodes)
        jobs = parse_scontrol_show_job(
            self.client.run(["scontrol", "show", "job", "--oneliner", str(job_id)]))
        script = jobs[0].get("Command") if jobs else None
        if script:
            workdir = jobs[0].get("WorkDir") or None
            try:
                self.client.run(["sbatch", "--test-only", f"--exclude={excluded}", script],
                                env={**submission_env(), **self.client.env},
                                cwd=Path(workdir) if workdir else None)
            except SlurmCommandError as error:
                if _INFEASIBLE.lower() in error.stderr.lower():
                    raise SlurmCommandError(
                        ["scontrol", "update", f"JobId={job_id}", f"ExcNodeList={excluded}"],
                        None, error.stderr,
                        reason="not done: the job could never start without these nodes",
                    ) from error
                raise
        self.client.update_job(str(job_id), ExcNodeList=excluded)


__all__ = ["SlurmScheduler"]
