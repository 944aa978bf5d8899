"""The only module that runs SLURM commands (sbatch, sacct, squeue, scontrol, scancel).

Every call has a timeout, retries transient controller errors with exponential backoff, and turns
any failure into a `SlurmCommandError` that carries the command line, exit code and stderr.
Parsing lives in `ftslurm.slurm.parse` (pure functions, tested on recorded outputs).
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from submitit.helpers import clean_env

from ftslurm import env_vars, exit_codes
from ftslurm.errors import FtslurmError
from ftslurm.slurm.parse import (
    NODE_EVENT_FIELDS,
    SACCT_FIELDS,
    JobRecord,
    JobSummary,
    NodeEvent,
    NodeState,
    SubmittedJob,
    parse_job_id,
    parse_node_events,
    parse_sacct,
    parse_sbatch_parsable,
    parse_scontrol_show_job,
    parse_scontrol_show_node,
    record_from_scontrol,
    summarize,
)

__all__ = [
    "ACCOUNTING_UNAVAILABLE",
    "TRANSIENT_ERRORS",
    "JobRecord",
    "JobSummary",
    "SlurmClient",
    "SlurmCommandError",
    "SubmittedJob",
    "submission_env",
]

log = logging.getLogger(__name__)

#: stderr fragments of errors worth retrying: the controller or the database was briefly busy.
TRANSIENT_ERRORS: tuple[str, ...] = (
    "Socket timed out",
    "Unable to contact slurm controller",
    "temporarily unable to accept job",
    "Resource temporarily unavailable",
    "Connection timed out",
)
#: The subset that proves nothing was submitted, so `sbatch` may be retried without creating a
#: duplicate job ("Socket timed out" after sending may mean the job exists).
_SAFE_TO_RESUBMIT: tuple[str, ...] = (
    "Unable to contact slurm controller",
    "temporarily unable to accept job",
)
#: stderr fragments of sacct meaning "no accounting here": fall back to scontrol.
ACCOUNTING_UNAVAILABLE: tuple[str, ...] = (
    "accounting storage is disabled",
    "Problem talking to the database",
    "slurmdbd",
)

_ENV_LOCK = threading.Lock()


class SlurmCommandError(FtslurmError):
    """A SLURM command failed, timed out or is not installed.

    `command` is the shell-quoted command line, `returncode` its exit status (None when it did
    not run to completion), `stderr` what it printed.
    """

    exit_code = exit_codes.SLURM_ERROR

    def __init__(
        self,
        command: Sequence[str],
        returncode: int | None,
        stderr: str,
        *,
        reason: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.command = shlex.join(command)
        self.returncode = returncode
        self.stderr = stderr.strip()
        what = reason or f"exited with code {returncode}"
        message = f"SLURM command failed: `{self.command}` {what}"
        if self.stderr:
            message += f"\n  stderr: {self.stderr}"
        super().__init__(message, hint=hint)

    @property
    def transient(self) -> bool:
        """True when stderr names a transient controller error (see `TRANSIENT_ERRORS`)."""
        return _matches(self.stderr, TRANSIENT_ERRORS)


def _matches(text: str, fragments: Iterable[str]) -> bool:
    lowered = text.lower()
    return any(fragment.lower() in lowered for fragment in fragments)


def submission_env() -> dict[str, str]:
    """The environment for a nested `sbatch`: os.environ without the SLURM_*, SBATCH_*, SRUN_*,
    SLURMD_*, SUBMITIT_* and torch.distributed variables that a job submitted from inside a job
    would otherwise inherit (node count, tasks, job name, output...), but keeping SLURM_CONF
    (which cluster to talk to).

    The filtering rule is submitit's `clean_env`; it edits os.environ for an instant, so it runs
    under a lock and the result is a copy.
    """
    with _ENV_LOCK:
        slurm_conf = os.environ.get(env_vars.SLURM_CONF)
        with clean_env():
            cleaned = dict(os.environ)
    if slurm_conf is not None:
        cleaned[env_vars.SLURM_CONF] = slurm_conf
    return cleaned


class SlurmClient:
    """Runs SLURM commands. One instance per process is enough; it holds no connection.

    `timeout` bounds each command (seconds); a command failing with a transient error is tried
    `retries` more times, waiting `backoff`, 2*`backoff`, 4*`backoff`... seconds. `env` is added
    to the environment of every command (e.g. SLURM_CONF).
    """

    def __init__(
        self,
        *,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 1.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.env = dict(env or {})

    # ------------------------------------------------------------ running

    def run(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        retry_on: Sequence[str] = TRANSIENT_ERRORS,
        retry_timeouts: bool = True,
    ) -> str:
        """Run one SLURM command and return its stdout; raise `SlurmCommandError` on failure.

        `env` is the complete environment (default: os.environ plus the client's `env`, with
        SLURM_TIME_FORMAT=standard so times parse). Errors whose stderr contains one of
        `retry_on` are retried; so are timeouts when `retry_timeouts`.
        """
        full_env = dict(env) if env is not None else {**os.environ, **self.env}
        full_env.setdefault(env_vars.SLURM_TIME_FORMAT, "standard")
        executable = shutil.which(args[0], path=full_env.get("PATH", os.defpath))
        if executable is None:
            raise SlurmCommandError(
                args, None, "", reason=f"cannot run: `{args[0]}` is not on PATH",
                hint="install SLURM's client commands or add them to PATH",
            )
        attempt = 0
        while True:
            try:
                error = self._run_once([executable, *args[1:]], args, full_env, cwd)
            except subprocess.TimeoutExpired as exc:
                stderr = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr
                error = SlurmCommandError(
                    args, None, stderr or "", reason=f"timed out after {self.timeout:g} s"
                )
                retryable = retry_timeouts
            else:
                if isinstance(error, str):
                    return error
                retryable = _matches(error.stderr, retry_on)
            if not retryable or attempt >= self.retries:
                raise error
            delay = self.backoff * 2**attempt
            attempt += 1
            log.warning("%s; retry %d/%d in %.1f s", error, attempt, self.retries, delay)
            time.sleep(delay)

    def _run_once(
        self, argv: list[str], shown: Sequence[str], env: dict[str, str], cwd: Path | None
    ) -> str | SlurmCommandError:
        try:
            result = subprocess.run(
                argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                text=True, timeout=self.timeout, check=False,
            )
        except OSError as exc:
            return SlurmCommandError(shown, None, str(exc), reason="could not be started")
        if result.returncode != 0:
            return SlurmCommandError(shown, result.returncode, result.stderr)
        return result.stdout

    # ------------------------------------------------------------ submit

    def submit(
        self,
        script: Path,
        *,
        extra_args: Sequence[str] = (),
        dependency: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> SubmittedJob:
        """`sbatch --parsable` a script, from a clean environment (`submission_env`) plus `env`.

        Only errors proving nothing was submitted are retried, so a retry never duplicates a job.
        """
        args = ["sbatch", "--parsable"]
        if dependency:
            args.append(f"--dependency={dependency}")
        args += [*extra_args, str(script)]
        full_env = {**submission_env(), **self.env, **(env or {})}
        out = self.run(args, env=full_env, cwd=cwd, retry_on=_SAFE_TO_RESUBMIT,
                       retry_timeouts=False)
        return parse_sbatch_parsable(out)

    # ------------------------------------------------------------ state

    def job_states(self, job_ids: Iterable[str]) -> dict[str, list[JobRecord]]:
        """Every accounting record (each requeued run, each step) of the given jobs, from ONE
        `sacct -D` call, keyed by the id asked for. An array job id gets all its tasks.

        Accounting lags the controller, so ONE `scontrol show job` call (allocations only, no
        history) fills in: everything when accounting is disabled or down, jobs that sacct does
        not know yet (just submitted), and placeholder records (`JobRecord.is_placeholder`).
        """
        wanted = list(dict.fromkeys(str(j) for j in job_ids))
        if not wanted:
            return {}
        try:
            out = self.run([
                "sacct", "--duplicates", "--parsable2", "--noheader",
                f"--format={','.join(SACCT_FIELDS)}", f"--jobs={','.join(wanted)}",
            ])
            records = parse_sacct(out)
            accounting = True
        except SlurmCommandError as exc:
            if not _matches(exc.stderr, ACCOUNTING_UNAVAILABLE):
                raise
            log.info("sacct unavailable (%s); using scontrol show job", exc.stderr)
            records, accounting = [], False
        found = _group(wanted, records)
        # The controller has what accounting lacks: placeholder records, and the live reason of a
        # pending job (sacct keeps the reason it stored at submission, often "None").
        stale = [j for j in wanted if not found[j] or any(
            r.is_placeholder or (r.step is None and r.state == "PENDING") for r in found[j])]
        if not stale:
            return found
        try:
            live = _group(stale, self.scontrol_jobs())
        except SlurmCommandError:
            if not accounting:
                raise
            log.warning("scontrol show job failed; using sacct's records only", exc_info=True)
            return found
        for job_id in stale:
            found[job_id] = _merge_live(found[job_id], live[job_id])
        return found

    def job_summaries(self, job_ids: Iterable[str]) -> dict[str, JobSummary]:
        """`job_states` grouped per allocation id (`123`, `123_4`, `123+1`): latest run + steps."""
        records = [r for recs in self.job_states(job_ids).values() for r in recs]
        return summarize(records)

    def find_jobs(self, name: str, *, since: float | None = None) -> list[str]:
        """Ids of the jobs named `name` (`--job-name`), oldest first: those the controller
        holds (`scontrol show job`) and those accounting knows since `since` (epoch seconds;
        default: the last 30 days)."""
        since = since if since is not None else time.time() - 30 * 86400
        start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(since))
        found = [r.job_id for r in self.scontrol_jobs() if r.name == name and not r.is_step]
        try:
            out = self.run(["sacct", "--allocations", "--parsable2", "--noheader",
                            "--format=JobIDRaw", f"--name={name}", f"--starttime={start}"])
            found += [line.strip() for line in out.splitlines() if line.strip()]
        except SlurmCommandError as exc:
            if not _matches(exc.stderr, ACCOUNTING_UNAVAILABLE):
                raise
        return sorted(set(found), key=lambda job: (len(job), job))

    def scontrol_jobs(self) -> list[JobRecord]:
        """All jobs the controller still holds in memory (`scontrol show job -o`)."""
        out = self.run(["scontrol", "show", "job", "--oneliner"])
        return [record_from_scontrol(job) for job in parse_scontrol_show_job(out)]

    # ------------------------------------------------------------ control

    def cancel(
        self,
        job_id: str,
        *,
        signal: str | None = None,
        batch: bool = False,
        full: bool = False,
        step: str | None = None,
    ) -> None:
        """`scancel` a job, or send `signal` (e.g. "TERM", "USR1") to it: `batch` for the batch
        shell only, `full` for every step and the batch shell, `step` for one step."""
        args = ["scancel"]
        if signal:
            args.append(f"--signal={signal}")
        if batch:
            args.append("--batch")
        if full:
            args.append("--full")
        args.append(f"{job_id}.{step}" if step is not None else str(job_id))
        self.run(args)

    def requeue(self, job_id: str, *, hold: bool = False) -> None:
        """`scontrol requeue` (or `requeuehold`) a job."""
        self.run(["scontrol", "requeuehold" if hold else "requeue", str(job_id)])

    def update_job(self, job_id: str, **fields: str | int) -> None:
        """`scontrol update JobId=<id> Key=Value ...`, e.g. `update_job(id, StartTime="now")`."""
        self._update("JobId", str(job_id), fields)

    def update_node(self, node: str, **fields: str | int) -> None:
        """`scontrol update NodeName=<node> Key=Value ...`, e.g. `State="RESUME"`."""
        self._update("NodeName", node, fields)

    def _update(self, kind: str, name: str, fields: Mapping[str, str | int]) -> None:
        if not fields:
            raise ValueError("scontrol update needs at least one Key=Value")
        self.run(["scontrol", "update", f"{kind}={name}",
                  *(f"{key}={value}" for key, value in fields.items())])

    def node_states(self, nodes: Sequence[str]) -> dict[str, NodeState]:
        """`scontrol show node --oneliner n1,n2`: each node's state and reason. Nodes SLURM does not
        know are left out."""
        if not nodes:
            return {}
        out = self.run(["scontrol", "show", "node", "--oneliner", ",".join(nodes)])
        return {node.name: node for node in parse_scontrol_show_node(out)}

    def node_events(self, nodes: Sequence[str], start: float, end: float) -> list[NodeEvent]:
        """`sacctmgr show event`: the down, drain and fail events slurmdbd recorded for `nodes`
        that overlap [start, end] (epoch seconds). A node that failed and came back at once (a
        rebooted node, `ReturnToService=2`) is still found here after `scontrol` forgot it."""
        if not nodes:
            return []
        window = [f"Start={_local_time(start)}", f"End={_local_time(end)}"]
        out = self.run(["sacctmgr", "-n", "-P", "show", "event", f"Nodes={','.join(nodes)}",
                        *window, f"format={','.join(NODE_EVENT_FIELDS)}"])
        return [event for event in parse_node_events(out) if event.node in nodes]

    def hostnames(self, hostlist: str) -> tuple[str, ...]:
        """`scontrol show hostnames`; the pure `expand_hostlist` gives the same without SLURM."""
        out = self.run(["scontrol", "show", "hostnames", hostlist])
        return tuple(line.strip() for line in out.splitlines() if line.strip())


def _local_time(epoch: float) -> str:
    """A SLURM time argument (local time, like the times SLURM prints)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(epoch))


def _merge_live(accounted: list[JobRecord], live: list[JobRecord]) -> list[JobRecord]:
    """sacct's records with placeholders replaced by the controller's record of that allocation
    (keeping sacct's run numbering and steps) and pending ones given the controller's reason; the
    controller's records if sacct had none."""
    if not accounted:
        return live
    by_allocation = {r.allocation_id: r for r in live}
    merged = []
    for record in accounted:
        current = by_allocation.get(record.allocation_id)
        if record.is_placeholder and current is not None:
            record = replace(current, restart_index=record.restart_index)
        elif record.step is None and record.state == "PENDING" and current is not None:
            record = replace(record, reason=current.reason)
        merged.append(record)
    return merged


def _group(wanted: Sequence[str], records: Iterable[JobRecord]) -> dict[str, list[JobRecord]]:
    """Records per asked id: `123` matches the job, its steps, array tasks and het components;
    `123_4` matches only that task."""
    found: dict[str, list[JobRecord]] = {job_id: [] for job_id in wanted}
    asked_ids = [(job_id, parse_job_id(job_id)) for job_id in wanted]
    for record in records:
        for job_id, asked in asked_ids:
            if asked.array_task is None and asked.het_offset is None and asked.step is None:
                hit = record.job_id == asked.job or record.raw_id == asked.job
            else:
                hit = record.allocation_id == asked.allocation and (
                    asked.step is None or record.step == asked.step)
            if hit:
                found[job_id].append(record)
    return found
