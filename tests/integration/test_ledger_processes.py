"""The ledger against real processes: watchers racing, killed and restarted, never submit an
attempt twice, and a writer killed at any moment leaves a readable ledger (the in-process
tests: tests/unit/test_ledger.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ftslurm.chain.ledger import Ledger, fingerprint
from tests.waiting import wait_for


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger.create(tmp_path / "run", spec_fingerprint=fingerprint("spec"),
                         settings={"max_failures": 3})


WATCHER = textwrap.dedent(
    """
    import os, sys, uuid
    from pathlib import Path
    from ftslurm.chain.ledger import Ledger

    run_dir, jobs, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]

    def submit(tag):
        job_id = uuid.uuid4().hex[:8]
        (jobs / f"{tag}.{job_id}").write_text(str(os.getpid()))
        if mode == "die-after-submit":
            os._exit(9)  # killed between the scheduler's answer and the ledger record
        return job_id

    def find(tag):
        return [p.name.rsplit(".", 1)[1] for p in jobs.iterdir() if p.name.startswith(tag + ".")]

    ledger = Ledger(run_dir)
    claim_s = 0.0 if mode == "die-after-submit" else 300.0  # a dead submitter's claim expired
    print(ledger.submit_attempt(1, submit, find, claim_s=claim_s))
    """
)


def run_watcher(run_dir: Path, jobs: Path, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", WATCHER, str(run_dir), str(jobs), mode],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_watcher_killed_after_submit_does_not_duplicate(ledger: Ledger, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    killed = run_watcher(ledger.run_dir, jobs, "die-after-submit")
    assert killed.wait() == 9
    assert ledger.state().attempts[0].job_id is None  # reserved, job id never recorded
    restarted = run_watcher(ledger.run_dir, jobs, "attempt-1")
    out, err = restarted.communicate()
    assert restarted.returncode == 0, err
    assert len(list(jobs.iterdir())) == 1  # reconciled, not submitted again
    assert ledger.state().attempts[0].job_id == out.strip()


def test_racing_watchers_submit_once(ledger: Ledger, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    watchers = [run_watcher(ledger.run_dir, jobs, "attempt-1") for _ in range(4)]
    outputs = {w.communicate()[0].strip() for w in watchers}
    assert all(w.returncode == 0 for w in watchers)
    outputs.discard("None")  # it found another watcher's live claim: being submitted right now
    assert len(list(jobs.iterdir())) == 1 and len(outputs) == 1
    assert [a.job_id for a in ledger.state().attempts] == [outputs.pop()]


def test_writer_killed_at_any_moment_leaves_a_readable_ledger(ledger: Ledger) -> None:
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(
        """
        import sys
        from ftslurm.chain.ledger import Ledger
        from ftslurm.chain.outcome import Outcome
        ledger = Ledger(sys.argv[1])
        for n in range(1, 10_000):
            ledger.reserve(n)
            ledger.record_submitted(n, str(n))
            ledger.record_end(n, outcome=Outcome.TIMEOUT, reason="t")
        """), str(ledger.run_dir)])
    try:
        wait_for(lambda: len(ledger.state().attempts) >= 5, "the writer to record 5 attempts")
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
    state = ledger.state()  # parses: every write was all-or-nothing
    assert [a.number for a in state.attempts] == list(range(1, len(state.attempts) + 1))
