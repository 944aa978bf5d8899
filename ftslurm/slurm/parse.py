"""Pure parsers for the output of SLURM commands (no subprocess here: see `ftslurm.slurm.client`).

Everything takes text and returns typed values, so it is unit-tested on recorded outputs
(tests/unit/fixtures/slurm/).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from ftslurm.slurm.hostlist import HostlistError, expand_hostlist

#: The sacct fields `ftslurm.slurm.client` asks for, in this order (`--format=` + ",".join(...)).
SACCT_FIELDS: tuple[str, ...] = (
    "JobID",
    "JobIDRaw",
    "Partition",
    "State",
    "Reason",
    "ExitCode",
    "NodeList",
    "Submit",
    "Start",
    "End",
    "DBIndex",
    "JobName",  # last: the only free text, so a "|" in a job name cannot shift the columns
)

#: Values SLURM prints for "no value" in time and node fields.
_NONE_VALUES = frozenset({"", "Unknown", "None", "(null)", "None assigned", "N/A"})


class SlurmParseError(ValueError):
    """Output of a SLURM command that does not have the expected shape."""


@dataclass(frozen=True)
class SubmittedJob:
    """What `sbatch --parsable` answered: the job id and, on multi-cluster setups, the cluster."""

    job_id: str
    cluster: str | None = None


@dataclass(frozen=True)
class JobId:
    """A SLURM job id split into its parts.

    `123` -> job 123; `123_4` -> array task 4; `123_[1-3%2]` -> pending array tasks "[1-3%2]";
    `123+1` -> heterogeneous component 1; `123.batch`, `123.0`, `123.extern` -> steps.
    """

    job: str
    array_task: str | None = None
    het_offset: int | None = None
    step: str | None = None

    @property
    def allocation(self) -> str:
        """The id without its step: the allocation this id belongs to (`123_4`, `123+1`, `123`)."""
        text = self.job
        if self.array_task is not None:
            text += f"_{self.array_task}"
        if self.het_offset is not None:
            text += f"+{self.het_offset}"
        return text

    def __str__(self) -> str:
        return self.allocation if self.step is None else f"{self.allocation}.{self.step}"


_JOB_ID_RE = re.compile(
    r"^(?P<job>\d+)"
    r"(?:_(?P<task>\d+|\[[^\]]*\]))?"
    r"(?:\+(?P<het>\d+))?"
    r"(?:\.(?P<step>[A-Za-z0-9_+-]+))?$"
)


def parse_job_id(text: str) -> JobId:
    """Split a job id as printed by sacct/squeue/scontrol (see `JobId`)."""
    match = _JOB_ID_RE.match(text.strip())
    if match is None:
        raise SlurmParseError(f"not a SLURM job id: {text!r}")
    het = match["het"]
    return JobId(
        job=match["job"],
        array_task=match["task"],
        het_offset=int(het) if het is not None else None,
        step=match["step"],
    )


def parse_sbatch_parsable(text: str) -> SubmittedJob:
    """Parse `sbatch --parsable` output: `123` or `123;cluster` (warnings on other lines)."""
    for line in reversed(text.strip().splitlines()):
        job_id, _, cluster = line.strip().partition(";")
        if job_id.isdigit():
            return SubmittedJob(job_id=job_id, cluster=cluster or None)
    raise SlurmParseError(f"sbatch --parsable printed no job id: {text!r}")


def parse_exit_code(text: str) -> tuple[int | None, int | None]:
    """`"3:0"` -> (3, 0): the exit code and the signal that ended the process (0 = none)."""
    text = text.strip()
    if text in _NONE_VALUES:
        return None, None
    code, _, signal = text.partition(":")
    try:
        return int(code), int(signal) if signal else 0
    except ValueError as exc:
        raise SlurmParseError(f"not an exit code N:S: {text!r}") from exc


def parse_state(text: str) -> tuple[str, int | None]:
    """`"CANCELLED by 0"` -> ("CANCELLED", 0); `"COMPLETING+"`-style suffixes are dropped and the
    state is upper-cased. The one reader of a SLURM state string (sacct, scontrol, the ledger)."""
    words = text.strip().split()
    if not words:
        raise SlurmParseError("empty job state")
    state = words[0].rstrip("+*").upper()
    by_uid: int | None = None
    if len(words) >= 3 and words[1].lower() == "by" and words[2].isdigit():
        by_uid = int(words[2])
    return state, by_uid


def parse_timestamp(text: str) -> datetime | None:
    """Parse a SLURM time (`2024-05-01T10:00:00`); `Unknown`/`None`/empty -> None."""
    text = text.strip()
    if text in _NONE_VALUES:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise SlurmParseError(
            f"not a SLURM time (is SLURM_TIME_FORMAT=standard?): {text!r}"
        ) from exc


# ---------------------------------------------------------------- job records

@dataclass(frozen=True)
class JobRecord:
    """One line of job accounting: an allocation (one run of a job) or one of its steps.

    `restart_index` counts the earlier runs of the same allocation (0 = first run; a requeued
    job seen with `sacct -D` has one record per run).
    """

    job_id: str
    array_task: str | None
    het_offset: int | None
    step: str | None
    state: str
    cancelled_by: int | None = None
    reason: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    nodes: tuple[str, ...] = ()
    submit: datetime | None = None
    start: datetime | None = None
    end: datetime | None = None
    name: str | None = None
    partition: str | None = None
    raw_id: str | None = None
    restart_index: int = 0
    source: str = "sacct"

    @property
    def allocation_id(self) -> str:
        """The id of the allocation (`123`, `123_4`, `123+1`), without the step."""
        return JobId(self.job_id, self.array_task, self.het_offset).allocation

    @property
    def is_step(self) -> bool:
        """True for step records (`.batch`, `.extern`, `.0`, ...)."""
        return self.step is not None

    @property
    def is_placeholder(self) -> bool:
        """An allocation record slurmdbd made from a step record before the job's own start
        record arrived (no partition, JobName "allocation"): its nodes and times are incomplete
        for a moment. Seen on the dev cluster for short jobs."""
        return self.source == "sacct" and not self.is_step and self.partition is None


@dataclass(frozen=True)
class JobSummary:
    """The latest run of one allocation with its steps, and the records of earlier runs."""

    allocation: JobRecord
    steps: tuple[JobRecord, ...] = ()
    earlier_runs: tuple[JobRecord, ...] = field(default=())

    @property
    def state(self) -> str:
        """State of the latest run."""
        return self.allocation.state

    @property
    def runs(self) -> int:
        """How many times the allocation ran or was queued (1 + requeues seen)."""
        return len(self.earlier_runs) + 1


def _nodes(text: str) -> tuple[str, ...]:
    try:
        return expand_hostlist(text)
    except HostlistError as exc:
        raise SlurmParseError(str(exc)) from exc


def _none_if_empty(text: str) -> str | None:
    text = text.strip()
    return None if text in _NONE_VALUES else text


def parse_sacct(text: str, fields: Sequence[str] = SACCT_FIELDS) -> list[JobRecord]:
    """Parse `sacct --parsable2 --noheader --format=<fields>` output (with or without `-D`).

    Records come back in sacct's order; `restart_index` is set for requeued runs.
    """
    records: list[JobRecord] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        values = line.split("|")
        if len(values) > len(fields) and fields[-1] == "JobName":
            values[len(fields) - 1 :] = ["|".join(values[len(fields) - 1 :])]
        if len(values) != len(fields):
            raise SlurmParseError(
                f"expected {len(fields)} sacct fields, got {len(values)}: {line!r}"
            )
        row = dict(zip(fields, values, strict=True))
        jid = parse_job_id(row["JobID"])
        state, by_uid = parse_state(row["State"])
        code, signal = parse_exit_code(row.get("ExitCode", ""))
        records.append(
            JobRecord(
                job_id=jid.job,
                array_task=jid.array_task,
                het_offset=jid.het_offset,
                step=jid.step,
                state=state,
                cancelled_by=by_uid,
                reason=_none_if_empty(row.get("Reason", "")),
                exit_code=code,
                signal=signal,
                nodes=_nodes(row.get("NodeList", "")),
                submit=parse_timestamp(row.get("Submit", "")),
                start=parse_timestamp(row.get("Start", "")),
                end=parse_timestamp(row.get("End", "")),
                name=_none_if_empty(row.get("JobName", "")),
                partition=_none_if_empty(row.get("Partition", "")),
                raw_id=_none_if_empty(row.get("JobIDRaw", "")),
            )
        )
    return number_restarts(records)


def number_restarts(records: Sequence[JobRecord]) -> list[JobRecord]:
    """Set `restart_index`: the n-th allocation record of an id is run n; a step belongs to the
    latest allocation record of its id printed before it (sacct prints each run, then its steps)."""
    runs: dict[str, int] = {}
    out: list[JobRecord] = []
    for record in records:
        key = record.allocation_id
        if record.is_step:
            index = max(runs.get(key, 1) - 1, 0)
        else:
            index = runs.get(key, 0)
            runs[key] = index + 1
        out.append(replace(record, restart_index=index))
    return out


def summarize(records: Iterable[JobRecord]) -> dict[str, JobSummary]:
    """Group records by allocation id: the latest run, its steps, and the earlier runs."""
    allocations: dict[str, list[JobRecord]] = {}
    steps: dict[str, list[JobRecord]] = {}
    for record in records:
        target = steps if record.is_step else allocations
        target.setdefault(record.allocation_id, []).append(record)
    summaries: dict[str, JobSummary] = {}
    for key, runs in allocations.items():
        runs = sorted(runs, key=lambda r: r.restart_index)
        latest = runs[-1]
        summaries[key] = JobSummary(
            allocation=latest,
            steps=tuple(s for s in steps.get(key, []) if s.restart_index == latest.restart_index),
            earlier_runs=tuple(runs[:-1]),
        )
    return summaries


# ---------------------------------------------------------------- scontrol / squeue

_KEY_RE = re.compile(r"^[A-Z][A-Za-z0-9_/:]*=")


def parse_key_values(line: str) -> dict[str, str]:
    """Parse one `scontrol show ... -o` line of `Key=Value` pairs.

    A whitespace-separated token that does not start with `Key=` continues the previous value
    (values such as `Reason=...` or `Command=...` may contain spaces).
    """
    pairs: dict[str, str] = {}
    last: str | None = None
    for token in line.split():
        if _KEY_RE.match(token):
            key, _, value = token.partition("=")
            pairs[key] = value
            last = key
        elif last is not None:
            pairs[last] += " " + token
        else:
            raise SlurmParseError(f"scontrol output does not start with Key=Value: {line!r}")
    return pairs


def parse_scontrol_show_job(text: str) -> list[dict[str, str]]:
    """Parse `scontrol show job -o` output: one dict per job (none for "No jobs in the system")."""
    jobs = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("No jobs in the system"):
            continue
        jobs.append(parse_key_values(line))
    return jobs


#: Node state flags (scontrol's State=, e.g. "IDLE+DRAIN", "DOWN*") that make a node unusable.
UNUSABLE_NODE_STATES = ("DOWN", "DRAIN", "FAIL", "NOT_RESPONDING", "POWERED_DOWN", "REBOOT")


@dataclass(frozen=True)
class NodeState:
    """A node as `scontrol show node` reports it."""

    name: str
    #: scontrol's State=, e.g. "IDLE", "MIXED+DRAIN", "DOWN*" (`*`: not responding).
    state: str
    reason: str | None = None

    @property
    def unusable(self) -> bool:
        """DOWN, DRAIN(ED/ING), FAIL, not responding, powered down or rebooting."""
        flags = self.state.upper().replace("*", "+NOT_RESPONDING").split("+")
        return any(flag.startswith(bad) for flag in flags for bad in UNUSABLE_NODE_STATES)


def parse_scontrol_show_node(text: str) -> list[NodeState]:
    """Parse `scontrol show node --oneliner` output: one `NodeState` per node."""
    nodes = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("NodeName="):
            continue
        fields = parse_key_values(line)
        nodes.append(NodeState(fields["NodeName"], fields.get("State", ""),
                               _none_if_empty(fields.get("Reason", ""))))
    return nodes


#: `sacctmgr show event` columns ftslurm asks for, in this order (`-n -P`: no header, `|`).
NODE_EVENT_FIELDS = ("NodeName", "TimeStart", "TimeEnd", "State", "Reason")


@dataclass(frozen=True)
class NodeEvent:
    """A node's state change as slurmdbd recorded it (`sacctmgr show event`): the node went down,
    drained or failed at `start` (and came back at `end`, None while it still is)."""

    node: str
    start: datetime | None
    end: datetime | None
    state: str
    reason: str | None = None


def parse_node_events(text: str) -> list[NodeEvent]:
    """Parse `sacctmgr -n -P show event format=<NODE_EVENT_FIELDS>`; cluster-wide events (no
    node name) are left out."""
    events = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split("|", len(NODE_EVENT_FIELDS) - 1)
        if len(fields) != len(NODE_EVENT_FIELDS):
            raise SlurmParseError(f"sacctmgr event line has {len(fields)} fields, expected "
                                  f"{len(NODE_EVENT_FIELDS)}: {line!r}")
        node, start, end, state, reason = (field.strip() for field in fields)
        if not node:
            continue
        events.append(NodeEvent(node, parse_timestamp(start), parse_timestamp(end), state,
                                _none_if_empty(reason)))
    return events


def record_from_scontrol(job: Mapping[str, str]) -> JobRecord:
    """A `JobRecord` (allocation only: scontrol has no step history) from `parse_scontrol_show_job`.

    `restart_index` is scontrol's `Restarts` count.
    """
    if "JobId" not in job:
        raise SlurmParseError(f"scontrol job record without JobId: {dict(job)!r}")
    array_task = _none_if_empty(job.get("ArrayTaskId", ""))
    if array_task is not None and not array_task.isdigit():
        array_task = f"[{array_task}]"  # pending tasks: sacct prints 123_[1-3], scontrol 1-3
    het = _none_if_empty(job.get("HetJobOffset", ""))
    job_id = job.get("ArrayJobId") if array_task else job.get("HetJobId") if het else None
    state, by_uid = parse_state(job.get("JobState", ""))
    code, signal = parse_exit_code(job.get("ExitCode", ""))
    restarts = job.get("Restarts", "0")
    return JobRecord(
        job_id=job_id or job["JobId"],
        array_task=array_task,
        het_offset=int(het) if het is not None else None,
        step=None,
        state=state,
        cancelled_by=by_uid,
        reason=_none_if_empty(job.get("Reason", "")),
        exit_code=code,
        signal=signal,
        nodes=_nodes(job.get("NodeList", "")),
        submit=parse_timestamp(job.get("SubmitTime", "")),
        start=parse_timestamp(job.get("StartTime", "")),
        end=parse_timestamp(job.get("EndTime", "")),
        name=_none_if_empty(job.get("JobName", "")),
        partition=_none_if_empty(job.get("Partition", "")),
        raw_id=job["JobId"],
        restart_index=int(restarts) if restarts.isdigit() else 0,
        source="scontrol",
    )


__all__ = [
    "NODE_EVENT_FIELDS",
    "SACCT_FIELDS",
    "UNUSABLE_NODE_STATES",
    "JobId",
    "JobRecord",
    "JobSummary",
    "NodeEvent",
    "NodeState",
    "SlurmParseError",
    "SubmittedJob",
    "number_restarts",
    "parse_exit_code",
    "parse_job_id",
    "parse_key_values",
    "parse_node_events",
    "parse_sacct",
    "parse_sbatch_parsable",
    "parse_scontrol_show_job",
    "parse_scontrol_show_node",
    "parse_state",
    "parse_timestamp",
    "record_from_scontrol",
    "summarize",
]
