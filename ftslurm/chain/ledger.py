"""The run directory's ledger: every attempt of the chain, stored so that any process may die.

`<run_dir>/ledger.json` is one JSON document: a header (format name and version, run id, the job
spec's fingerprint, the chain settings) and a list of event records. Every change happens under a
`filelock` lock on `ledger.json.lock`: read, append one record, write a temporary file, fsync it,
rename it over the ledger, fsync the directory. A crash leaves either the old or the new file, never
a torn one, and the rename is atomic on the shared file systems run dirs live on (O_APPEND is not
atomic across NFS clients, which is why this is not a JSON-lines file). See docs/autoresume.md.

Submitting is three records: an `intent` (the attempt number is reserved) and a `claim` (who
submits it, until when) under the lock; then, with the lock released, the scheduler call; then
`submitted` with the job id (or `submit_failed`) under the lock again. No lock is ever held across
a scheduler call. A watcher killed between the records leaves an intent without a job id: once its
claim has expired, whoever comes next looks the attempt's tag up in the scheduler instead of
submitting it again (`Ledger.submit_attempt`).

Reading needs no lock: every write replaces the file by an atomic rename, so a reader sees the old
or the new ledger, never half of one. That is what lets a teammate who cannot take the lock (a
read-only run dir, another user's lock file) still read the run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import filelock

from ftslurm import exit_codes
from ftslurm.atomic import write_atomic, write_json_atomic
from ftslurm.chain.outcome import AttemptStatus, Outcome, RunStatus
from ftslurm.chain.runstate import AttemptView, LedgerError, RunState, fold
from ftslurm.errors import RunDirAccessError
from ftslurm.rundir import RunDir


class LedgerLockError(LedgerError, RunDirAccessError):
    """The ledger or its lock file cannot be opened (permissions, not a file): exit code 3."""

    exit_code = exit_codes.SLURM_ERROR

__all__ = [
    "FORMAT",
    "SUBMIT_CLAIM_S",
    "VERSION",
    "AttemptView",
    "Ledger",
    "LedgerError",
    "LedgerLockError",
    "RunState",
    "fingerprint",
    "read_progress",
    "write_progress",
]

FORMAT = "ftslurm.ledger"
VERSION = 2
_MOVE_ASIDE = "move the run directory (or the file) aside and start a new run"
#: How long a claim to submit an attempt holds: longer than any sbatch call with its retries
#: (ftslurm.slurm.client: 60 s timeout, never retried after a timeout).
SUBMIT_CLAIM_S = 300.0


def _owner() -> str:
    """Who claims a submission: host and pid (for people reading the ledger)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def fingerprint(data: str | bytes) -> str:
    """A stable fingerprint of the job spec text, stored in the ledger header."""
    raw = data.encode() if isinstance(data, str) else data
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def read_progress(run_dir: str | os.PathLike[str]) -> int | None:
    """The run's progress marker: the integer in `<run_dir>/progress`, or its mtime in ns when the
    file is empty or not an integer (a workload may just touch it); None when absent."""
    path = RunDir(run_dir).progress
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
        mtime = path.stat().st_mtime_ns
    except FileNotFoundError:
        return None
    try:
        return int(text)
    except ValueError:
        return mtime


def write_progress(run_dir: str | os.PathLike[str], step: int) -> None:
    """Set the progress marker to `step` atomically (for workloads and the launcher)."""
    write_atomic(RunDir(run_dir).progress, f"{int(step)}\n", sync_dir=True)


class Ledger:
    """The ledger of one run directory. Cheap to construct; every call reads the file afresh."""

    def __init__(self, run_dir: str | os.PathLike[str], *, lock_timeout: float = 120.0) -> None:
        self.run_dir = Path(run_dir)
        self.path = RunDir(run_dir).ledger
        self._lock = filelock.FileLock(str(RunDir(run_dir).ledger_lock), timeout=lock_timeout)

    # -- creation and reading ---------------------------------------------------------------

    @classmethod
    def create(
        cls,
        run_dir: str | os.PathLike[str],
        *,
        spec_fingerprint: str,
        settings: Mapping[str, Any] | None = None,
        run_id: str | None = None,
    ) -> Ledger:
        """Create the run's ledger, or reopen it when it exists for the same job spec.

        Raises `LedgerError` when the existing ledger belongs to a different spec (or is corrupt).
        """
        ledger = cls(run_dir)
        ledger.run_dir.mkdir(parents=True, exist_ok=True)
        ledger.initialize(spec_fingerprint=spec_fingerprint, settings=settings, run_id=run_id)
        return ledger

    def initialize(
        self,
        *,
        spec_fingerprint: str,
        settings: Mapping[str, Any] | None = None,
        run_id: str | None = None,
    ) -> None:
        """Write a new, empty ledger (under the lock; re-entrant); an existing one must belong to
        the same job spec (`LedgerError` otherwise) and is left as it is."""
        with self.locked():
            if self.path.exists():
                header, _ = self._read()
                if header["spec_fingerprint"] != spec_fingerprint:
                    raise LedgerError(
                        f"{self.path} belongs to another job spec "
                        f"({header['spec_fingerprint']}, not {spec_fingerprint})",
                        hint="use a new run directory for a changed job spec",
                    )
                return
            header = {
                "format": FORMAT,
                "version": VERSION,
                "run_id": run_id or uuid.uuid4().hex[:12],
                "spec_fingerprint": spec_fingerprint,
                "settings": dict(settings or {}),
                "created_at": time.time(),
            }
            self._write(header, [])

    @classmethod
    def open(cls, run_dir: str | os.PathLike[str]) -> Ledger:
        """The existing ledger of `run_dir`; `LedgerError` if there is none or it is unreadable."""
        ledger = cls(run_dir)
        ledger.state()
        return ledger

    @contextlib.contextmanager
    def locked(self) -> Iterator[Ledger]:
        """Hold the ledger lock across several calls (they re-enter it): read, decide, submit and
        record as one step that no other watcher can interleave with. Re-entrant for this
        `Ledger` object only: do not nest the locks of two objects on the same run dir."""
        try:
            self._lock.acquire()
        except filelock.Timeout:
            raise LedgerError(
                f"{self._lock.lock_file} stayed locked for {self._lock.timeout:.0f} s",
                hint="another ftslurm process holds it; check for a stuck watcher",
            ) from None
        except OSError as error:  # unwritable, a directory, another user's file
            raise LedgerLockError(
                f"cannot lock the ledger: {self._lock.lock_file}: "
                f"{error.strerror or error}",
                hint="changing the run needs write access to the run directory and its lock "
                     "file (fix the permissions, or remove a lock file that is not a plain "
                     "file); `ftslurm status --no-sync` reads the run without it",
            ) from None
        try:
            yield self
        finally:
            self._lock.release()

    def state(self) -> RunState:
        """Fold the ledger into a `RunState`. No lock: writes are atomic renames."""
        header, records = self._read()
        return fold(header, records)

    def _read(self) -> tuple[dict[str, Any], list[Any]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise LedgerError(
                f"no ledger at {self.path}",
                hint="is this a run directory? `ftslurm submit` makes one",
            ) from None
        except UnicodeDecodeError:
            raise LedgerError(f"{self.path} is not text: corrupted", hint=_MOVE_ASIDE) from None
        except OSError as error:
            raise LedgerLockError(f"cannot read the ledger {self.path}: "
                                  f"{error.strerror or error}",
                                  hint="check the permissions of the run directory") from None
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as error:
            raise LedgerError(f"{self.path} is corrupted: {error}", hint=_MOVE_ASIDE) from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise LedgerError(f"{self.path} is not an ftslurm ledger", hint=_MOVE_ASIDE)
        version = doc.get("version")
        if not isinstance(version, int) or version > VERSION:
            raise LedgerError(
                f"{self.path} has format version {version!r}; this ftslurm reads up to {VERSION}",
                hint="use the ftslurm version that created the run",
            )
        records = doc.get("records")
        missing = [k for k in ("run_id", "spec_fingerprint", "created_at") if k not in doc]
        if not isinstance(records, list) or missing:
            raise LedgerError(f"{self.path} is corrupted: bad header or records", hint=_MOVE_ASIDE)
        return doc, records

    def _write(self, header: Mapping[str, Any], records: Sequence[Any]) -> None:
        doc = {**header, "records": list(records)}
        write_json_atomic(self.path, doc, sync_dir=True)

    def _append(self, kind: str, **fields: Any) -> RunState:
        """Append one record (the caller holds the lock) and return the new state."""
        header, records = self._read()
        records.append({"type": kind, "at": time.time(), **fields})
        state = fold(header, records)  # validates the record before it reaches the disk
        self._write(header, records)
        return state

    def _attempt(self, state: RunState, number: int) -> AttemptView:
        view = state.attempt(number)
        if view is None:
            raise LedgerError(f"attempt {number} was never reserved in {self.path}")
        return view

    # -- the attempt's life: reserve, submit, start, end -------------------------------------

    def reserve(self, attempt: int) -> tuple[AttemptView, bool]:
        """Reserve attempt number `attempt` before submitting it. Idempotent: when it is already
        reserved, return its view and False (a second watcher or a requeued job must not submit a
        second one). Raises `LedgerError` for any number but the next one, or an ended run."""
        with self.locked():
            state = self.state()
            existing = state.attempt(attempt)
            if existing is not None:
                return existing, False
            if state.run_status is not RunStatus.RUNNING:
                raise LedgerError(f"the run is {state.run_status}: no attempt may be reserved")
            if attempt != state.next_attempt:
                raise LedgerError(
                    f"cannot reserve attempt {attempt}: the next attempt is {state.next_attempt}"
                )
            state = self._append("intent", attempt=attempt, tag=f"{state.run_id}.{attempt}")
            return self._attempt(state, attempt), True

    def record_submitted(self, attempt: int, job_id: str) -> AttemptView:
        """The scheduler accepted the reserved attempt as job `job_id`."""
        with self.locked():
            view = self._attempt(self.state(), attempt)
            if view.job_id is not None and view.job_id != str(job_id):
                raise LedgerError(f"attempt {attempt} is already job {view.job_id}, not {job_id}")
            return self._attempt(self._append("submitted", attempt=attempt, job_id=str(job_id)),
                                 attempt)

    def record_adopted(self, job_id: str) -> AttemptView:
        """A job submitted by hand (`sbatch` on a rendered script) becomes the run's next
        attempt: reserved and submitted as job `job_id` in one step. Idempotent for a job the
        ledger already knows (a requeued one): its attempt is returned. The caller checks, under
        this ledger's lock, that nothing else is in flight."""
        with self.locked():
            state = self.state()
            known = [a for a in state.attempts if a.job_id == str(job_id)]
            if known:
                return known[-1]
            number = state.next_attempt
            self.reserve(number)
            return self._attempt(self._append("submitted", attempt=number, job_id=str(job_id),
                                              by_hand=True), number)

    def record_submit_failed(self, attempt: int, error: str) -> AttemptView:
        """Submitting the reserved attempt failed. It stays reserved: the next `submit_attempt`
        looks its tag up (the submission may have gone through after all) and retries."""
        with self.locked():
            self._attempt(self.state(), attempt)
            return self._attempt(self._append("submit_failed", attempt=attempt, error=error),
                                 attempt)

    def submit_attempt(
        self,
        attempt: int,
        submit: Callable[[str], str],
        find: Callable[[str], Sequence[str]],
        *,
        claim_s: float = SUBMIT_CLAIM_S,
    ) -> str | None:
        """Submit `attempt` exactly once: reserve and claim it under the lock, call the scheduler
        with the lock released, record the job id under the lock again.

        `submit(tag) -> job id` submits; `find(tag) -> job ids` looks an earlier reservation's
        tag up (its submitter died, or its sbatch failed in a way that may have gone through)
        before anything is submitted again. Returns the attempt's job id, or None when another
        process holds a live claim on it (it is being submitted right now).
        """
        with self.locked():
            view, created = self.reserve(attempt)
            if view.job_id is not None:
                return view.job_id
            now = time.time()
            if not created and view.claimed(now):
                return None
            self._append("claim", attempt=attempt, owner=_owner(), until=now + claim_s)
        if not created:
            found = list(find(view.tag))
            if len(found) > 1:
                raise LedgerError(
                    f"attempt {attempt} ({view.tag}) matches several jobs: {', '.join(found)}",
                    hint="cancel the extra jobs by hand, then run the watcher again",
                )
            if found:
                return self.record_submitted(attempt, found[0]).job_id or found[0]
        try:
            job_id = submit(view.tag)
        except BaseException as error:
            self.record_submit_failed(attempt, f"{type(error).__name__}: {error}")
            raise
        return self.record_submitted(attempt, job_id).job_id or str(job_id)

    def record_start(
        self,
        attempt: int,
        job_id: str,
        *,
        nodes: Sequence[str] = (),
        requeue_count: int = 0,
        progress: int | None = None,
        note: str | None = None,
    ) -> AttemptView:
        """The attempt's job started (again, when requeued: `requeue_count` > 0). An attempt
        that already ended (withdrawn, or completed by another process) is reopened only by a
        requeue, never by a late start record; its view is returned unchanged. `note`: a
        decision taken at the start, with its reason (`AttemptView.start_note`)."""
        with self.locked():
            view = self._attempt(self.state(), attempt)
            if view.status is AttemptStatus.ENDED and requeue_count <= view.requeue_count:
                return view
            if view.job_id is not None and view.job_id != str(job_id):
                raise LedgerError(f"attempt {attempt} is job {view.job_id}, not {job_id}")
            extra = {"note": note} if note else {}
            state = self._append(
                "started", attempt=attempt, job_id=str(job_id), nodes=list(nodes),
                requeue_count=int(requeue_count), progress=progress, **extra,
            )
            return self._attempt(state, attempt)

    def record_end(
        self,
        attempt: int,
        *,
        outcome: Outcome,
        reason: str,
        job_id: str | None = None,
        exit_code: int | None = None,
        signal: int | None = None,
        scheduler_state: str | None = None,
        progress: int | None = None,
        blamed_nodes: Sequence[str] = (),
        source: str = "chain",
        provisional: bool = False,
        signature: str | None = None,
    ) -> tuple[AttemptView, bool]:
        """Record how the attempt ended. The first final record wins: when the attempt already has
        a final end, nothing is written and (its view, False) is returned. A `provisional` end (no
        scheduler state yet) may be completed by a later call, e.g. from sacct.

        `signature`: how it failed in a few words ("ValueError: boom", "exit 7", "SIGSEGV"), when
        known; two failures in a row with the same signature are a crash loop. Written only when
        given (an `ended` record without it reads as None, as in ledgers written before it)."""
        with self.locked():
            view = self._attempt(self.state(), attempt)
            if view.status is AttemptStatus.ENDED and not view.provisional:
                return view, False
            optional: dict[str, Any] = {} if signature is None else {"signature": str(signature)}
            state = self._append(
                "ended", attempt=attempt, job_id=None if job_id is None else str(job_id),
                outcome=Outcome(outcome).value, reason=reason, exit_code=exit_code,
                signal=signal, scheduler_state=scheduler_state, progress=progress,
                blamed_nodes=list(blamed_nodes), source=source, provisional=bool(provisional),
                **optional,
            )
            return self._attempt(state, attempt), True

    def record_progress(self, attempt: int, value: int) -> AttemptView:
        """A progress marker value seen while the attempt ran."""
        with self.locked():
            self._attempt(self.state(), attempt)
            return self._attempt(self._append("progress", attempt=attempt, value=int(value)),
                                 attempt)

    # -- the run's life ----------------------------------------------------------------------

    def record_cancel(self, reason: str) -> RunState:
        """The user asked to cancel the run; the first request's reason is kept."""
        with self.locked():
            return self._append("cancel", reason=reason)

    def record_resume(self, reason: str, spec_fingerprint: str) -> RunState:
        """`ftslurm submit --resume`: the run goes on (again) with this job spec; earlier ends,
        cancels and failures no longer stop it (see `RunState.resumed_after`)."""
        with self.locked():
            return self._append("resume", reason=reason, spec_fingerprint=spec_fingerprint)

    def record_run_end(self, status: RunStatus, reason: str) -> RunState:
        """The chain stopped for good (finished, failed or cancelled); the first call wins."""
        if status not in (RunStatus.FINISHED, RunStatus.FAILED, RunStatus.CANCELLED):
            raise ValueError(f"not a final run status: {status!r}")
        status = RunStatus(status)
        with self.locked():
            state = self.state()
            if state.run_status is not RunStatus.RUNNING:
                return state
            return self._append("run_end", state=status.value, reason=reason)
