"""A job submitted by hand (`sbatch` on a rendered script) joins the run as its next attempt,
or is refused (issue 13); and what a job exits with, so SLURM's accounting reads true."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ftslurm import env_vars
from ftslurm.backends import JobState
from ftslurm.chain import hooks
from ftslurm.chain.ledger import Ledger
from ftslurm.chain.outcome import AttemptStatus, Outcome
from ftslurm.chain.policy import ChainConfig, Classification
from ftslurm.chain.settings import ChainSettings
from ftslurm.errors import UsageError
from tests.unit.test_chain_hooks import FakeScheduler, ctx


@pytest.fixture
def empty_run(tmp_path: Path) -> tuple[Path, Ledger, FakeScheduler]:
    """A run prepared by `ftslurm render -o`: settings and a ledger without attempts."""
    ChainSettings(
        run_dir=str(tmp_path), backend="slurm", mode="self", script=str(tmp_path / "job.sbatch"),
        workdir=str(tmp_path), job_name="t", flag_file=str(tmp_path / "finished.flag"),
        config=ChainConfig(max_failures=2), owner_uid=os.getuid(), bin_dir="/usr/bin").save()
    return tmp_path, Ledger.create(tmp_path, spec_fingerprint="sha256:x", run_id="t-1"), \
        FakeScheduler()


def adopt(run_dir: Path, job: str, sched: FakeScheduler) -> int:
    env = {env_vars.RUN_DIR: str(run_dir), env_vars.SLURM_JOB_ID: job}
    return hooks.adopt_job(env, scheduler=sched)


def test_the_first_job_becomes_attempt_1_and_trains(empty_run, capsys) -> None:
    run_dir, ledger, sched = empty_run
    assert adopt(run_dir, "500", sched) == 0
    out, err = capsys.readouterr()
    assert out == "1\n"  # the script exports it as $FTSLURM_ATTEMPT
    assert "job 500 (submitted by hand) is attempt 1" in err
    view = ledger.state().attempt(1)
    assert (view.job_id, view.status, view.by_hand) == ("500", AttemptStatus.SUBMITTED, True)
    assert hooks.chain_start(ctx(run_dir, 1, "500"), scheduler=sched) == 0
    assert ledger.state().attempt(1).status is AttemptStatus.RUNNING
    assert [r.after for r in sched.jobs.values()] == ["500", "500:100"]  # successors queued


def test_a_second_job_while_one_trains_or_waits_is_refused(empty_run, capsys) -> None:
    run_dir, ledger, sched = empty_run
    assert adopt(run_dir, "500", sched) == 0
    sched.job_states["500"] = JobState("500", "PENDING")
    capsys.readouterr()
    assert adopt(run_dir, "501", sched) == hooks.SKIP_LAUNCH
    assert "attempt 1 (job 500, submitted) of the same run is already running or queued" in \
        capsys.readouterr().err
    assert [a.job_id for a in ledger.state().attempts] == ["500"]  # nothing recorded for 501


def test_a_stale_attempt_is_settled_with_the_scheduler_first(empty_run) -> None:
    # attempt 1 died before its start hook ran (nothing queued behind it, no end recorded)
    run_dir, ledger, sched = empty_run
    assert adopt(run_dir, "500", sched) == 0
    sched.job_states["500"] = JobState("500", "FAILED", exit_code=1)
    assert adopt(run_dir, "502", sched) == 0
    state = ledger.state()
    assert state.attempt(1).outcome is Outcome.FAILED and state.attempt(1).counted_failure
    assert state.attempts[-1].job_id == "502" and state.attempts[-1].number == 2


def test_queued_successors_refuse_a_job_submitted_by_hand(empty_run, capsys) -> None:
    run_dir, _, sched = empty_run
    assert adopt(run_dir, "500", sched) == 0
    hooks.chain_start(ctx(run_dir, 1, "500"), scheduler=sched)
    sched.job_states["500"] = JobState("500", "FAILED", exit_code=1)
    capsys.readouterr()
    assert adopt(run_dir, "502", sched) == hooks.SKIP_LAUNCH  # attempts 2 and 3 are queued
    assert "attempt 2 (job 100, submitted), attempt 3 (job 101, submitted)" in \
        capsys.readouterr().err


def test_a_job_of_a_run_that_is_over_is_refused(empty_run, capsys) -> None:
    run_dir, ledger, sched = empty_run
    (run_dir / "finished.flag").touch()
    assert adopt(run_dir, "500", sched) == hooks.SKIP_LAUNCH
    assert "the run is over (finished" in capsys.readouterr().err
    assert ledger.state().attempts == ()


def test_a_requeued_job_keeps_its_attempt(empty_run, capsys) -> None:
    run_dir, ledger, sched = empty_run
    assert adopt(run_dir, "500", sched) == 0
    assert adopt(run_dir, "500", sched) == 0
    assert capsys.readouterr().out == "1\n1\n"
    assert len(ledger.state().attempts) == 1


def test_a_run_dir_without_a_ledger_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="has no ledger"):
        adopt(tmp_path, "500", FakeScheduler())


@pytest.mark.parametrize(("outcome", "provisional", "status", "exits"), [
    (Outcome.STOPPED, False, 94, 0),  # a graceful stop: COMPLETED in sacct
    (Outcome.TIMEOUT, False, 94, 0),
    (Outcome.FINISHED, False, 0, 0),
    (Outcome.FAILED, False, 1, 1),
    (Outcome.FATAL, False, 93, 93),
    (Outcome.FAILED, True, 143, 143),  # the scheduler's final state must still decide
])
def test_the_job_exits_0_only_after_a_clean_end(outcome: Outcome, provisional: bool,
                                                status: int, exits: int) -> None:
    result = Classification(outcome, "why", provisional=provisional)
    assert hooks.job_exit_status(result, status) == exits


def test_chain_end_returns_0_for_a_stop_and_the_status_for_a_failure(tmp_path: Path,
                                                                     empty_run) -> None:
    run_dir, ledger, sched = empty_run
    adopt(run_dir, "500", sched)
    hooks.chain_start(ctx(run_dir, 1, "500"), scheduler=sched)
    assert hooks.chain_end(ctx(run_dir, 1, "500"), 94, scheduler=sched) == 0
    assert ledger.state().attempt(1).outcome is Outcome.STOPPED
    hooks.chain_start(ctx(run_dir, 2, "100"), scheduler=sched)
    assert hooks.chain_end(ctx(run_dir, 2, "100"), 7, scheduler=sched) == 7
