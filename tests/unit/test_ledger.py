"""The run directory's ledger: creation, corruption, the attempt's life, no duplicate submission.

(Real processes racing, killed and restarted on a ledger:
tests/integration/test_ledger_processes.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftslurm.chain.ledger import (
    Ledger,
    LedgerError,
    LedgerLockError,
    fingerprint,
    read_progress,
    write_progress,
)
from ftslurm.chain.outcome import Outcome
from ftslurm.rundir import RunDir


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger.create(tmp_path / "run", spec_fingerprint=fingerprint("spec"),
                         settings={"max_failures": 3})


def test_create_and_reopen(ledger: Ledger) -> None:
    state = ledger.state()
    assert state.run_status == "running" and state.attempts == () and state.next_attempt == 1
    assert state.settings == {"max_failures": 3}
    again = Ledger.create(ledger.run_dir, spec_fingerprint=fingerprint("spec"))
    assert again.state().run_id == state.run_id


def test_create_refuses_other_spec(ledger: Ledger) -> None:
    with pytest.raises(LedgerError, match="another job spec"):
        Ledger.create(ledger.run_dir, spec_fingerprint=fingerprint("other spec"))


def test_open_missing(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="no ledger"):
        Ledger.open(tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe\x00garbage", "not text"),
        (b'{"format": "ftslurm.ledger", "version": 1, "rec', "corrupted"),
        (b"", "corrupted"),
        (b'{"name": "some other tool"}', "not an ftslurm ledger"),
        (b"[1, 2, 3]", "not an ftslurm ledger"),
        (b'{"format": "ftslurm.ledger", "version": 99}', "format version 99"),
        (b'{"format": "ftslurm.ledger", "version": 1, "records": {}}', "corrupted"),
    ],
)
def test_corrupt_or_foreign_file_is_a_clear_error(tmp_path: Path, content: bytes,
                                                  message: str) -> None:
    RunDir(tmp_path).ledger.write_bytes(content)
    for call in (lambda: Ledger.open(tmp_path),
                 lambda: Ledger.create(tmp_path, spec_fingerprint="x"),
                 lambda: Ledger(tmp_path).reserve(1)):
        with pytest.raises(LedgerError, match=message):
            call()
    assert RunDir(tmp_path).ledger.read_bytes() == content  # never silently reset


def test_bad_record_is_named(ledger: Ledger) -> None:
    doc = json.loads(ledger.path.read_text())
    doc["records"].append({"type": "teleported", "at": 0})
    ledger.path.write_text(json.dumps(doc))
    with pytest.raises(LedgerError, match=r"record #0 has unknown type 'teleported'"):
        ledger.state()
    doc["records"] = [{"type": "submitted", "at": 0, "attempt": 4, "job_id": "1"}]
    ledger.path.write_text(json.dumps(doc))
    with pytest.raises(LedgerError, match="never reserved"):
        ledger.state()


def test_attempt_life(ledger: Ledger) -> None:
    view, created = ledger.reserve(1)
    assert created and view.status == "reserved" and view.tag.endswith(".1")
    assert ledger.record_submitted(1, "41").status == "submitted"
    view = ledger.record_start(1, "41", nodes=["n1", "n2"], progress=10)
    assert (view.status, view.nodes, view.progress_before) == ("running", ("n1", "n2"), 10)
    view, written = ledger.record_end(1, outcome=Outcome.FAILED, reason="exit 1", exit_code=1,
                                      progress=10, blamed_nodes=["n2"], job_id="41")
    assert written and view.status == "ended" and view.outcome is Outcome.FAILED
    state = ledger.state()
    assert state.consecutive_failures == 1 and state.blamed_nodes == ("n2",)
    assert state.attempts[0].counted_failure and not state.attempts[0].progressed


def test_failure_signature_is_stored_and_optional(ledger: Ledger) -> None:
    ledger.reserve(1)
    ledger.record_start(1, "41")
    view, _ = ledger.record_end(1, outcome=Outcome.FAILED, reason="exit 7", exit_code=7,
                                signature="exit 7")
    assert view.signature == "exit 7"
    ledger.reserve(2)
    ledger.record_start(2, "42")
    view, _ = ledger.record_end(2, outcome=Outcome.FAILED, reason="exit 1", exit_code=1)
    assert view.signature is None
    ended = [r for r in json.loads(ledger.path.read_text())["records"] if r["type"] == "ended"]
    assert ended[0]["signature"] == "exit 7"
    assert "signature" not in ended[1]  # written only when known: older readers see no change


def test_a_ledger_written_before_signatures_loads(tmp_path: Path) -> None:
    """An `ended` record without `signature` (every ledger written before it existed) reads as
    None, and such attempts never make a crash loop."""
    records = []
    for number in (1, 2):
        records += [
            {"type": "intent", "at": 1.0, "attempt": number, "tag": f"old.{number}"},
            {"type": "submitted", "at": 2.0, "attempt": number, "job_id": str(40 + number)},
            {"type": "started", "at": 3.0, "attempt": number, "job_id": str(40 + number),
             "nodes": ["n1"], "requeue_count": 0, "progress": 5},
            {"type": "ended", "at": 4.0, "attempt": number, "job_id": str(40 + number),
             "outcome": "failed", "reason": "exit code 7", "exit_code": 7, "signal": None,
             "scheduler_state": "FAILED", "progress": 5, "blamed_nodes": [],
             "source": "sacct", "provisional": False},
        ]
    RunDir(tmp_path).ledger.write_text(json.dumps({
        "format": "ftslurm.ledger", "version": 2, "run_id": "old", "spec_fingerprint": "fp",
        "created_at": 0.0, "settings": {"max_failures": 3, "max_attempts": 100,
                                        "do_not_retry_exit_code": 93, "max_excluded_nodes": 2},
        "records": records}))
    state = Ledger.open(tmp_path).state()
    assert [a.signature for a in state.attempts] == [None, None]
    assert [a.repeats_attempt for a in state.attempts] == [None, None]
    assert state.consecutive_failures == 2 and state.node_failures == 0


def test_a_bad_signature_is_named(ledger: Ledger) -> None:
    ledger.reserve(1)
    ledger.record_end(1, outcome=Outcome.FAILED, reason="x", signature="exit 7")
    doc = json.loads(ledger.path.read_text())
    doc["records"][-1]["signature"] = 7
    ledger.path.write_text(json.dumps(doc))
    with pytest.raises(LedgerError, match=r"record #1 \(ended\) is malformed: signature"):
        ledger.state()


def test_a_requeue_clears_the_signature(ledger: Ledger) -> None:
    ledger.reserve(1)
    ledger.record_start(1, "7")
    ledger.record_end(1, outcome=Outcome.PREEMPTED, reason="requeued", signature="SIGTERM")
    view = ledger.record_start(1, "7", requeue_count=1)
    assert view.signature is None and view.outcome is None


def test_reserve_is_idempotent_and_ordered(ledger: Ledger) -> None:
    first, created = ledger.reserve(1)
    again, created_again = ledger.reserve(1)
    assert created and not created_again and first == again
    with pytest.raises(LedgerError, match="next attempt is 2"):
        ledger.reserve(5)
    ledger.record_run_end("finished", "flag")
    with pytest.raises(LedgerError, match="run is finished"):
        ledger.reserve(2)


def test_misuse_is_refused(ledger: Ledger) -> None:
    with pytest.raises(LedgerError, match="never reserved"):
        ledger.record_submitted(1, "7")
    ledger.reserve(1)
    ledger.record_submitted(1, "7")
    with pytest.raises(LedgerError, match="already job 7"):
        ledger.record_submitted(1, "8")
    with pytest.raises(LedgerError, match="is job 7"):
        ledger.record_start(1, "8")


def test_first_final_end_wins_and_provisional_is_completed(ledger: Ledger) -> None:
    ledger.reserve(1)
    ledger.record_start(1, "7")
    ledger.record_end(1, outcome=Outcome.FAILED, reason="killed by SIGTERM", exit_code=143,
                      provisional=True, source="script")
    view, written = ledger.record_end(1, outcome=Outcome.TIMEOUT, reason="TIMEOUT",
                                      scheduler_state="TIMEOUT", source="sacct")
    assert written and view.outcome is Outcome.TIMEOUT and not view.provisional
    view, written = ledger.record_end(1, outcome=Outcome.FAILED, reason="late", source="loop")
    assert not written and view.outcome is Outcome.TIMEOUT
    assert ledger.state().consecutive_failures == 0


def test_requeue_reopens_the_attempt(ledger: Ledger) -> None:
    ledger.reserve(1)
    ledger.record_start(1, "7", progress=3)
    ledger.record_end(1, outcome=Outcome.PREEMPTED, reason="preempted", progress=5)
    view = ledger.record_start(1, "7", requeue_count=1, progress=5)
    assert (view.status, view.requeue_count, view.outcome) == ("running", 1, None)
    assert view.progress_before == 3
    assert ledger.state().next_attempt == 2


def test_cancel_and_run_end(ledger: Ledger) -> None:
    ledger.record_cancel("first")
    ledger.record_cancel("second")
    state = ledger.record_run_end("cancelled", "user")
    assert state.cancel_requested == "first" and state.run_status == "cancelled"
    assert ledger.record_run_end("failed", "late").end_reason == "user"
    with pytest.raises(ValueError):
        ledger.record_run_end("running", "no")  # type: ignore[arg-type]


def test_progress_marker(tmp_path: Path, ledger: Ledger) -> None:
    assert read_progress(tmp_path) is None
    write_progress(tmp_path, 42)
    assert read_progress(tmp_path) == 42
    (tmp_path / "progress").write_text("")
    assert read_progress(tmp_path) == (tmp_path / "progress").stat().st_mtime_ns
    ledger.reserve(1)
    assert ledger.record_progress(1, 12).progress_after == 12


def test_failed_submission_stays_reserved_and_is_retried(ledger: Ledger) -> None:
    submitted: list[str] = []

    def broken(tag: str) -> str:
        raise OSError("sbatch: error: Socket timed out")

    with pytest.raises(OSError):
        ledger.submit_attempt(1, broken, lambda tag: [])
    view = ledger.state().attempts[0]
    assert view.status == "reserved" and "Socket timed out" in (view.submit_error or "")

    def working(tag: str) -> str:
        submitted.append(tag)
        return "77"

    assert ledger.submit_attempt(1, working, lambda tag: []) == "77"
    assert ledger.submit_attempt(1, working, lambda tag: []) == "77"  # idempotent
    assert submitted == [ledger.state().attempts[0].tag]


def test_submission_that_went_through_despite_an_error_is_found(ledger: Ledger) -> None:
    def broken(tag: str) -> str:
        raise TimeoutError("sbatch timed out, but the job exists")

    with pytest.raises(TimeoutError):
        ledger.submit_attempt(1, broken, lambda tag: [])
    assert ledger.submit_attempt(1, broken, lambda tag: ["55"]) == "55"
    with pytest.raises(LedgerError, match="several jobs"):
        ledger.reserve(2)
        ledger.submit_attempt(2, broken, lambda tag: ["56", "57"])


# -- the lock -----------------------------------------------------------------------------


def test_no_lock_is_held_while_the_scheduler_is_called(ledger: Ledger) -> None:
    """The submission's scheduler call runs with the ledger lock free: another process can read,
    record and cancel meanwhile; the claim keeps a second submitter off the attempt."""
    seen: list[object] = []

    def submit(tag: str) -> str:
        other = Ledger(ledger.run_dir, lock_timeout=0.1)
        with other.locked():  # would time out if the submitter held the lock
            seen.append(other.submit_attempt(1, lambda t: "dup", lambda t: []))
        return "42"

    assert ledger.submit_attempt(1, submit, lambda tag: []) == "42"
    assert seen == [None]  # the live claim: nobody else submits it
    assert ledger.state().attempt(1).job_id == "42"


def test_reading_needs_no_lock(ledger: Ledger) -> None:
    lock = Path(str(ledger.path) + ".lock")
    lock.unlink(missing_ok=True)
    lock.mkdir()  # a lock file that cannot be locked
    assert Ledger.open(ledger.run_dir).state().run_id == ledger.state().run_id
    with pytest.raises(LedgerLockError, match=r"ledger\.json\.lock") as error:
        ledger.reserve(1)
    assert error.value.exit_code == 3
