"""`python -m ftslurm.backends.local_supervisor JOB_DIR LOCK_FD`: one local job, run as SLURM would.

Started by `ftslurm.backends.local.LocalScheduler.submit` in its own session, so it outlives the
process that submitted it. It holds the job's supervisor lock (inherited as LOCK_FD) for its whole
life, waits for the job's dependency, runs the script in a new process group with a marker in its
environment (`FTSLURM_LOCAL_JOB=<job dir>:<random token>`, inherited by every descendant, even
those in sessions of their own such as torch's ranks) and a free port for the rendezvous
(`FTSLURM_RDZV_PORT`), and then:

- at `time_limit - warning_lead` sends the warning signal to the group (SLURM's `--signal`),
- at the time limit sends SIGCONT + SIGTERM to the job (the group and every marked process), and
  SIGKILL `kill_wait` seconds later,
- on a cancel request (SIGTERM/SIGINT to the supervisor, or the job's `cancel` file) does the same,
- when the script exits, kills every process of the job that is left (SLURM ends the whole job;
  after a cancel or the time limit, what is left gets until `kill_wait` first),

and writes `state.json` atomically at each step: PENDING, RUNNING, then COMPLETED, FAILED,
CANCELLED or TIMEOUT with the exit code or signal, once no process of the job is left.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ftslurm import env_vars
from ftslurm.atomic import write_json_atomic
from ftslurm.backends import proc_marker
from ftslurm.backends.base import AttemptRequest
from ftslurm.backends.local import (
    CANCEL_FILE,
    JOB_FILE,
    STATE_FILE,
    LocalScheduler,
    default_env,
    read_json,
    request_from_json,
)

#: How often a cancel file is looked for when no signal arrives (the signal is the fast path).
CANCEL_POLL_S = 1.0


class Supervisor:
    """One local job's supervisor; `run()` returns when the job has ended and been recorded."""

    def __init__(self, job_dir: Path) -> None:
        self.job_dir = job_dir
        job = read_json(job_dir / JOB_FILE)
        if job is None:
            raise SystemExit(f"local_supervisor: no {JOB_FILE} in {job_dir}")
        self.job_id: str = job["job_id"]
        self.request: AttemptRequest = request_from_json(job["request"])
        #: Unique to this run of this job: every process of the job carries it in its environment.
        self.marker = f"{job_dir.resolve()}:{secrets.token_hex(8)}"
        self.base: dict[str, Any] = {
            "job_id": self.job_id, "supervisor_pid": os.getpid(), "nodes": [socket.gethostname()],
            "marker": self.marker,
        }
        self._signalled = False
        self._wake_r, wake_w = os.pipe()
        for fd in (self._wake_r, wake_w):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signalled = True

    def cancel_requested(self) -> bool:
        """A cancel came by signal or by the job's cancel file."""
        return self._signalled or (self.job_dir / CANCEL_FILE).exists()

    def write_state(self, state: str, **fields: Any) -> None:
        """Replace state.json atomically."""
        write_json_atomic(self.job_dir / STATE_FILE, {**self.base, "state": state, **fields})

    def _sleep(self, fds: Sequence[int], timeout: float) -> list[int]:
        ready, _, _ = select.select([self._wake_r, *fds], [], [], max(0.0, timeout))
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 512):
                pass
        return [fd for fd in ready if fd != self._wake_r]

    def _wait_for_dependency(self) -> bool:
        """Wait for the `after` job to end; False when cancelled meanwhile."""
        after = self.request.after
        scheduler = LocalScheduler(self.job_dir.parent)
        while not self.cancel_requested():
            state = scheduler.states([after]).get(after) if after else None
            if state is None or state.is_final:
                return True
            self._sleep((), CANCEL_POLL_S / 2)
        return False

    def run(self) -> int:
        """Run the job to its end and record its final state."""
        self.write_state("PENDING", submitted=time.time())
        if not self._wait_for_dependency() or self.cancel_requested():
            self.write_state("CANCELLED", end=time.time(), reason="cancelled while pending")
            return 0
        self.base["rdzv_port"] = free_port()
        try:
            child = self._spawn()
        except OSError as error:
            self.write_state("FAILED", end=time.time(), exit_code=None,
                             reason=f"could not start the script: {error}")
            return 1
        start = time.time()
        self.write_state("RUNNING", start=start, pid=child.pid, pgid=child.pid)
        job = JobProcesses(child.pid, self.marker)
        ended_by, kill_at = self._watch(child, job)
        job.end(kill_at if ended_by else None)  # before the reap: the group id stays ours
        returncode = child.wait()
        exit_code, sig = (returncode, None) if returncode >= 0 else (None, -returncode)
        state = ended_by or ("COMPLETED" if returncode == 0 else "FAILED")
        reason = {"CANCELLED": "cancelled", "TIMEOUT": "time limit reached"}.get(state)
        self.write_state(state, start=start, end=time.time(), exit_code=exit_code, signal=sig,
                         pid=child.pid, reason=reason)
        return 0

    def _spawn(self) -> subprocess.Popen[bytes]:
        request = self.request
        Path(request.workdir).mkdir(parents=True, exist_ok=True)
        stdout_path = request.stdout or self.job_dir / "output.log"
        stderr_path = request.stderr or stdout_path
        env = {**default_env(request, self.job_id), env_vars.LOCAL_JOB_MARKER: self.marker,
               env_vars.RDZV_PORT: str(self.base["rdzv_port"])}
        with open(stdout_path, "ab") as out, open(stderr_path, "ab") as err:
            return subprocess.Popen(
                ["bash", str(request.script)], cwd=request.workdir, env=env,
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True,
            )

    def _watch(self, child: subprocess.Popen[bytes], job: JobProcesses
               ) -> tuple[str | None, float | None]:
        """Enforce the time limit and cancel requests until the script exits (not reaped yet, so
        its pid, which is also its group id, cannot be reused meanwhile). Returns TIMEOUT,
        CANCELLED or None, and when SIGKILL is due (monotonic time; None: no SIGTERM was sent)."""
        request = self.request
        now = time.monotonic()
        limit = request.time_limit_s
        term_at = now + limit if limit is not None else None
        warn_at = None
        if term_at is not None and request.warning_signal:
            warn_at = term_at - min(request.warning_lead_s, limit or 0.0)
        kill_at: float | None = None
        killed = False
        ended_by: str | None = None
        pidfd = os.pidfd_open(child.pid)
        try:
            while True:
                now = time.monotonic()
                if ended_by is None and self.cancel_requested():
                    ended_by = "CANCELLED"
                elif ended_by is None and term_at is not None and now >= term_at:
                    ended_by = "TIMEOUT"
                if ended_by is not None and kill_at is None:
                    job.terminate()
                    kill_at = now + request.kill_wait_s
                    warn_at = None
                if warn_at is not None and now >= warn_at:
                    job.warn(int(request.warning_signal or 0), request.warning_script_only)
                    warn_at = None
                if kill_at is not None and now >= kill_at and not killed:
                    job.kill()
                    killed = True
                deadlines = [t for t in (warn_at, None if killed else kill_at) if t is not None]
                if ended_by is None and term_at is not None:
                    deadlines.append(term_at)
                timeout = min([CANCEL_POLL_S, *(t - now for t in deadlines)])
                if self._sleep((pidfd,), timeout):
                    break
        finally:
            os.close(pidfd)
        return ended_by, kill_at


class JobProcesses:
    """Every process of a running local job: the script's process group, and every process whose
    environment carries the job's marker (torch's ranks run in sessions of their own)."""

    def __init__(self, pgid: int, marker: str) -> None:
        self.pgid = pgid
        self.marker = marker

    def _to_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)

    def _to_all(self, sig: int) -> None:
        self._to_group(sig)
        proc_marker.signal_marked(env_vars.LOCAL_JOB_MARKER, self.marker, sig)

    def warn(self, sig: int, script_only: bool) -> None:
        """The warning signal: to the script alone (`B:`) or to its process group."""
        if script_only:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pgid, sig)  # the script leads its group: its pid is the group id
        else:
            self._to_group(sig)

    def terminate(self) -> None:
        """SIGCONT + SIGTERM to every process of the job (cancel, time limit)."""
        self._to_all(signal.SIGCONT)
        self._to_all(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL to every process of the job, until none is left."""
        self._to_group(signal.SIGKILL)
        if not proc_marker.kill_marked(env_vars.LOCAL_JOB_MARKER, self.marker):
            print("local_supervisor: some processes of the job survived SIGKILL", file=sys.stderr)

    def end(self, kill_at: float | None) -> None:
        """The script has exited: what it left behind ends with the job, as under SLURM; after a
        SIGTERM (`kill_at` set) it gets until `kill_at` to exit before SIGKILL."""
        if kill_at is not None:
            proc_marker.wait_unmarked(env_vars.LOCAL_JOB_MARKER, self.marker, kill_at)
        self.kill()


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: `python -m ftslurm.backends.local_supervisor JOB_DIR LOCK_FD`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m ftslurm.backends.local_supervisor JOB_DIR LOCK_FD", file=sys.stderr)
        return 2
    job_dir, _lock_fd = Path(args[0]), int(args[1])  # the lock fd stays open until we exit
    supervisor = Supervisor(job_dir)
    try:
        return supervisor.run()
    except Exception as error:
        supervisor.write_state("FAILED", end=time.time(), reason=f"supervisor error: {error!r}")
        raise


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "CANCEL_POLL_S",
    "JobProcesses",
    "Supervisor",
    "free_port",
    "main",
]
