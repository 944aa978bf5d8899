"""LocalScheduler: each attempt's bash script runs on this machine under a detached supervisor.

The supervisor (`python -m ftslurm.backends.local_supervisor`, its own session) outlives the
submitting process, enforces the time limit like SLURM (warning signal `lead` seconds early,
SIGTERM at the limit, SIGKILL after kill_wait) and writes the job's state atomically. Everything is
on disk under `root/<job id>/`: job.json (the request), state.json (PENDING, RUNNING, then the final
state), `cancel` (a cancel request), and `supervisor.lock`, which the supervisor holds locked
(flock) for its whole life: a job whose lock is free and whose state is not final has lost its
supervisor.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ftslurm import env_vars
from ftslurm.atomic import write_json_atomic
from ftslurm.backends.base import FINAL_STATES, AttemptRequest, JobState, SchedulerError

# -- the local job folder, shared with backends.local_supervisor ----------------------------

JOB_FILE, STATE_FILE, CANCEL_FILE, LOCK_FILE = "job.json", "state.json", "cancel", "supervisor.lock"


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, None when absent; `SchedulerError` when it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError) as error:
        raise SchedulerError(f"{path} is corrupted: {error}") from None
    if not isinstance(data, dict):
        raise SchedulerError(f"{path} is corrupted: not a JSON object")
    return data


@contextlib.contextmanager
def supervisor_lock_if_free(job_dir: Path) -> Iterator[bool]:
    """Try the job's supervisor lock: yields True (held until the block ends) when no supervisor
    holds it, i.e. the supervisor has exited or died; False while one is alive."""
    fd = os.open(job_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def request_to_json(request: AttemptRequest) -> dict[str, Any]:
    """The request as JSON-friendly data (paths as strings)."""
    data = asdict(request)
    for key in ("script", "workdir", "stdout", "stderr"):
        data[key] = None if data[key] is None else str(data[key])
    data["env"] = dict(request.env)
    data["exclude_nodes"] = list(request.exclude_nodes)
    return data


def request_from_json(data: Mapping[str, Any]) -> AttemptRequest:
    """Inverse of `request_to_json`."""
    values = dict(data)
    for key in ("script", "workdir", "stdout", "stderr"):
        values[key] = None if values.get(key) is None else Path(values[key])
    values["exclude_nodes"] = tuple(values.get("exclude_nodes") or ())
    return AttemptRequest(**values)


class LocalScheduler:
    """Runs attempts on this machine; all state under `root` (e.g. `<run_dir>/local_jobs`)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._children: list[subprocess.Popen[bytes]] = []

    def _job_dir(self, job_id: str) -> Path:
        if not job_id.isdigit():
            raise SchedulerError(f"not a local job id: {job_id!r}")
        return self.root / job_id

    def _new_job_dir(self) -> tuple[str, Path]:
        self.root.mkdir(parents=True, exist_ok=True)
        while True:
            numbers = [int(p.name) for p in self.root.iterdir() if p.name.isdigit()]
            job_id = str(max(numbers, default=0) + 1)
            try:
                (self.root / job_id).mkdir()  # atomic: two submitters never share an id
            except FileExistsError:
                continue
            return job_id, self.root / job_id

    def _reap(self) -> None:
        self._children = [child for child in self._children if child.poll() is None]

    def submit(self, request: AttemptRequest) -> str:
        """Start a detached supervisor for the attempt and return the new job id."""
        self._reap()
        if not Path(request.script).is_file():
            raise SchedulerError(f"the attempt's script {request.script} does not exist")
        job_id, job_dir = self._new_job_dir()
        lock_fd = os.open(job_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)  # handed to the supervisor, held for its life
            write_json_atomic(job_dir / JOB_FILE, {"job_id": job_id, "submitted": time.time(),
                                                   "request": request_to_json(request)})
            with open(job_dir / "supervisor.log", "ab") as log:
                child = subprocess.Popen(
                    [sys.executable, "-m", "ftslurm.backends.local_supervisor", str(job_dir),
                     str(lock_fd)],
                    pass_fds=(lock_fd,), start_new_session=True, stdin=subprocess.DEVNULL,
                    stdout=log, stderr=log, cwd=job_dir,
                )
        finally:
            os.close(lock_fd)
        self._children.append(child)
        return job_id

    def _state(self, job_id: str) -> JobState | None:
        job_dir = self._job_dir(job_id)
        if read_json(job_dir / JOB_FILE) is None:
            return None
        data = read_json(job_dir / STATE_FILE) or {"state": "PENDING"}
        if data["state"] not in FINAL_STATES:
            with supervisor_lock_if_free(job_dir) as free:
                if free:  # re-read: it may have finished between the two reads
                    data = read_json(job_dir / STATE_FILE) or data
                    if data["state"] not in FINAL_STATES:
                        data = {**data, "state": "NODE_FAIL",
                                "reason": "the local supervisor died before the job ended"}
        return JobState(
            job_id=job_id, state=data["state"], exit_code=data.get("exit_code"),
            signal=data.get("signal"), nodes=tuple(data.get("nodes") or ()),
            start=data.get("start"), end=data.get("end"), reason=data.get("reason"),
        )

    def states(self, job_ids: Iterable[str]) -> dict[str, JobState]:
        """Read the jobs' state files (jobs not found are left out)."""
        self._reap()
        found = {}
        for job_id in job_ids:
            state = self._state(str(job_id))
            if state is not None:
                found[str(job_id)] = state
        return found

    def cancel(self, job_id: str) -> None:
        """Ask the supervisor to cancel: SIGTERM to every process of the job (its script's group
        and whatever carries the job's environment marker), SIGKILL after kill_wait."""
        job_dir = self._job_dir(job_id)
        state = self._state(job_id)
        if state is None:
            raise SchedulerError(f"no local job {job_id} under {self.root}")
        if state.is_final:
            return
        (job_dir / CANCEL_FILE).touch()  # durable request, seen even if the signal is missed
        data = read_json(job_dir / STATE_FILE) or {}
        with supervisor_lock_if_free(job_dir) as free:
            if not free and data.get("supervisor_pid"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(data["supervisor_pid"]), signal.SIGTERM)

    def find(self, tag: str) -> list[str]:
        """Ids of the local jobs submitted with `tag`."""
        if not self.root.is_dir():
            return []
        found = []
        for job_dir in sorted(self.root.iterdir(), key=lambda p: (len(p.name), p.name)):
            data = read_json(job_dir / JOB_FILE) if job_dir.name.isdigit() else None
            if data is not None and data.get("request", {}).get("tag") == tag:
                found.append(job_dir.name)
        return found

    def node_problems(self, nodes: Sequence[str], *, since: float | None = None,
                      until: float | None = None) -> dict[str, str]:
        """None: the one local machine is the one running this code."""
        return {}

    def exclude_nodes(self, job_id: str, nodes: Sequence[str]) -> None:
        """Refused: every local job runs on this one machine."""
        if nodes:
            raise SchedulerError(f"cannot keep local job {job_id} off {', '.join(nodes)}: the "
                                 "local backend runs every attempt on this machine")


def default_env(request: AttemptRequest, job_id: str) -> dict[str, str]:
    """The environment a local job's script runs with: ours, the request's, and its job id."""
    return {**os.environ, **request.env, env_vars.LOCAL_JOB_ID: job_id}


__all__ = [
    "LocalScheduler",
    "default_env",
    "read_json",
    "request_from_json",
    "request_to_json",
    "supervisor_lock_if_free",
]
