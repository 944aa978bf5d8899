"""The Scheduler protocol the chain drives, and the types it speaks in.

SLURM (`backends.slurm.SlurmScheduler`) and the local backend (`backends.local.LocalScheduler`)
look the same to the chain: states use SLURM's vocabulary (COMPLETED, FAILED, CANCELLED, TIMEOUT,
NODE_FAIL, ...).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from ftslurm.errors import FtslurmError

#: States after which a job never changes again.
FINAL_STATES = frozenset({
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "PREEMPTED", "NODE_FAIL", "OUT_OF_MEMORY",
    "BOOT_FAIL", "DEADLINE", "REQUEUED",
})


class SchedulerError(FtslurmError):
    """A scheduler could not do what was asked (submit, cancel) or its state is unreadable."""


@dataclass(frozen=True)
class AttemptRequest:
    """One attempt to submit: a bash script and how to run it."""

    script: Path
    #: Unique per run and attempt; `Scheduler.find(tag)` must find the job by it.
    tag: str
    workdir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    job_name: str = "ftslurm"
    #: Wall-clock limit in seconds (None: unlimited).
    time_limit_s: float | None = None
    #: Sent to the job `warning_lead_s` seconds before the time limit (SLURM's --signal).
    warning_signal: int | None = None
    warning_lead_s: float = 0.0
    #: Send the warning to the script only, not its whole process group (SLURM's `B:` prefix).
    warning_script_only: bool = False
    #: Seconds between SIGTERM and SIGKILL (SLURM's KillWait).
    kill_wait_s: float = 30.0
    exclude_nodes: tuple[str, ...] = ()
    #: Start only after this job has ended, whatever its state (SLURM's afterany).
    after: str | None = None
    #: Output files (default: `output.log` in the job's own folder for a local job).
    stdout: Path | None = None
    stderr: Path | None = None


@dataclass(frozen=True)
class JobState:
    """A job's state as the scheduler reports it, in SLURM's vocabulary."""

    job_id: str
    state: str
    exit_code: int | None = None
    signal: int | None = None
    nodes: tuple[str, ...] = ()
    start: float | None = None
    end: float | None = None
    reason: str | None = None
    cancelled_by: int | None = None
    #: How often the scheduler requeued the job (each earlier run ended in one of
    #: `earlier_states`, oldest first; e.g. ("PREEMPTED",)).
    requeues: int = 0
    earlier_states: tuple[str, ...] = ()
    #: For a job that ended in a node failure: the nodes the scheduler reports failed, down or
    #: drained while it ran (`Scheduler.node_problems`): (node, state and reason) pairs; None
    #: when nobody asked. (Pairs, not a dict: a JobState stays hashable.)
    node_problems: tuple[tuple[str, str], ...] | None = None

    @property
    def is_final(self) -> bool:
        """True once the job has ended for good."""
        return self.state in FINAL_STATES


@runtime_checkable
class Scheduler(Protocol):
    """What the chain needs from a scheduler."""

    def submit(self, request: AttemptRequest) -> str:
        """Submit one attempt; return its job id."""

    def states(self, job_ids: Iterable[str]) -> dict[str, JobState]:
        """The states of many jobs in one query; jobs the scheduler does not know are left out."""

    def cancel(self, job_id: str) -> None:
        """Cancel a job (pending or running); a job that has ended is left alone."""

    def find(self, tag: str) -> list[str]:
        """Ids of the jobs submitted with this tag (to reconcile a reservation after a crash)."""

    def exclude_nodes(self, job_id: str, nodes: Sequence[str]) -> None:
        """Keep a pending job (a queued successor) off `nodes`; raise when that cannot be done
        (e.g. too few nodes would be left). A backend with one node has nothing to exclude."""

    def node_problems(self, nodes: Sequence[str], *, since: float | None = None,
                      until: float | None = None) -> dict[str, str]:
        """The nodes among `nodes` that the scheduler reports unusable (down, drained, failed,
        not responding) now, or recorded so between `since` and `until` (epoch s), each with
        the scheduler's state and reason: node evidence."""


__all__ = [
    "FINAL_STATES",
    "AttemptRequest",
    "JobState",
    "Scheduler",
    "SchedulerError",
]
