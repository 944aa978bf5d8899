"""The launcher's JSON status file: what it did and why, for the chain and for people.

Written atomically (temp file + rename) after every event, so a reader never sees half a file::

    {"node": "n2", "group_rank": 1, "launcher_pid": 123, "state": "running|succeeded|failed|
     stopped|do_not_retry", "exit_code": null, "restart_count": 1, "max_restarts": 3,
     "events": [{"time": 1700000000.0, "node": "n2", "rank": 3, "local_rank": 1,
                 "kind": "hang|crash|peer_restart|do_not_retry|stop_signal",
                 "heartbeat_age": 2.1, "timeout": 2.0, "phase": "subsequent",
                 "exit_code": null, "restart_count": 0, "action": "restart|give_up|stop"}],
     "rank_ends": [{"rank": 3, "local_rank": 1, "node": "n2", "restart_count": 0,
                    "exit_code": null, "signal": "SIGTERM", "time": 1700000000.25,
                    "stdout": ".../logs/attempt-4/rank-3.restart-0.out", "stderr": "...err",
                    "cause": "exited|hang_stopped|stopped_by_launcher"}]}

`timeouts` are the heartbeat timeouts in force; `requested_timeouts` the pair the ranks last asked
for (learned, before the `min_learned_timeout` floor), null until they ask.
A hang event also holds `stacks` (global rank -> the stack dump of every rank of the node that
had the dump handler), `timeout_source` ("written" or "learned") and `since` (epoch seconds of the
last heartbeat, or of the rank's start before its first one). `rank_ends` has one entry per rank
process end the launcher saw, in every round, successes included (see docs/fault-tolerance.md).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ftslurm import env_vars
from ftslurm.atomic import write_json_atomic
from ftslurm.rundir import RunDir
from ftslurm.vocabulary import Vocabulary


class LauncherState(Vocabulary):
    """The launcher's `state`: where it is, and how it ended."""

    STARTING = "starting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"
    DO_NOT_RETRY = "do_not_retry"


class EventKind(Vocabulary):
    """What one event of the launcher's status file records."""

    #: A rank stopped heartbeating for longer than its timeout.
    HANG = "hang"
    #: A rank exited with an error (or a signal).
    CRASH = "crash"
    #: A rank exited with the do-not-retry exit code.
    DO_NOT_RETRY = "do_not_retry"
    #: Another node's launcher restarted the group, so this node's ranks restarted too.
    PEER_RESTART = "peer_restart"
    #: A stop signal reached the launcher.
    STOP_SIGNAL = "stop_signal"
    #: The ranks agreed to stop (GracefulShutdown) without a signal reaching this launcher.
    STOP_VOTED = "stop_voted"


class RankEndCause(Vocabulary):
    """Why a rank's process ended (`cause` of a `rank_ends` entry)."""

    #: The process ended on its own: an exit code, or a signal that did not come from the launcher.
    EXITED = "exited"
    #: The launcher found the rank hung and stopped it.
    HANG_STOPPED = "hang_stopped"
    #: The launcher stopped it because another rank failed or hung, or the round ended (restart,
    #: stop signal, a peer node's new round).
    STOPPED_BY_LAUNCHER = "stopped_by_launcher"


class TimeoutSource(Vocabulary):
    """Where the heartbeat timeout in force came from (`timeout_source` of a hang event)."""

    #: The configured one (`fault_tolerance:` section, `--ft-*` options, the defaults).
    WRITTEN = "written"
    #: Learned: requested by the ranks (`calculate_and_set_hb_timeouts`, `load_state_dict`) or
    #: loaded from the run directory's learned timeouts; never below `min_learned_timeout`.
    LEARNED = "learned"


#: Events that happened on a node because of that node, as far as the launcher can tell.
NODE_EVENTS = frozenset({EventKind.CRASH, EventKind.HANG})


def node_name() -> str:
    """This node's name: SLURM's node name when running under slurmd, else the host name."""
    return os.environ.get(env_vars.SLURMD_NODENAME) or socket.gethostname()


class StatusFile:
    """Keeps the status document in memory and rewrites the file after each change."""

    def __init__(self, path: Path | None, *, node: str, max_restarts: int) -> None:
        self.path = path
        self.data: dict[str, Any] = {
            "node": node,
            "group_rank": None,
            "launcher_pid": os.getpid(),
            "state": LauncherState.STARTING,
            "exit_code": None,
            "restart_count": 0,
            "max_restarts": max_restarts,
            "started_at": time.time(),
            "updated_at": time.time(),
            "requested_timeouts": None,
            "events": [],
            "rank_ends": [],
        }
        self._write()

    def update(self, **fields: Any) -> None:
        """Set top-level fields (state, exit_code, restart_count, group_rank, ...)."""
        self.data.update(fields)
        self._write()

    def event(self, **fields: Any) -> dict[str, Any]:
        """Append one event (time and node are filled in) and return it."""
        record = {"time": time.time(), "node": self.data["node"], **fields}
        self.data["events"].append(record)
        self._write()
        return record

    def add_rank_ends(self, entries: list[dict[str, Any]]) -> None:
        """Append entries to `rank_ends` (one per rank process that ended) in one write."""
        if entries:
            self.data["rank_ends"].extend(entries)
            self._write()

    def _write(self) -> None:
        if self.path is None:
            return
        self.data["updated_at"] = time.time()
        write_json_atomic(self.path, self.data, indent=2, sort_keys=False)


def read_status_files(run_dir: str | os.PathLike[str], attempt: int) -> list[dict[str, Any]]:
    """The readable status files of `attempt`'s launchers (one per node), sorted by node; a
    file that is missing, unreadable or not a JSON object is skipped (no evidence)."""
    return read_all_status_files(run_dir, [attempt]).get(attempt, [])


def read_all_status_files(run_dir: str | os.PathLike[str], attempts: Iterable[int]
                          ) -> dict[int, list[dict[str, Any]]]:
    """`read_status_files` for many attempts, listing the folder once."""
    index = RunDir(run_dir).launcher_status_index()
    found: dict[int, list[dict[str, Any]]] = {}
    for attempt in attempts:
        for path in index.get(attempt, []):
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(doc, dict):
                found.setdefault(attempt, []).append(doc)
    return found


__all__ = [
    "NODE_EVENTS",
    "EventKind",
    "LauncherState",
    "RankEndCause",
    "StatusFile",
    "TimeoutSource",
    "node_name",
    "read_all_status_files",
    "read_status_files",
]
