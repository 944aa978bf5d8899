"""LocalScheduler with real processes and real signals: exit codes, limits, cancel, detachment."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ftslurm import env_vars
from ftslurm.backends import AttemptRequest, JobState, LocalScheduler, Scheduler
from tests.waiting import wait_for


def final_state(scheduler: LocalScheduler, job_id: str) -> JobState:
    def done() -> JobState | None:
        state = scheduler.states([job_id]).get(job_id)
        return state if state is not None and state.is_final else None

    return wait_for(done, f"job {job_id} to end")


def script(tmp_path: Path, body: str, name: str = "attempt.sh") -> Path:
    path = tmp_path / name
    path.write_text("set -u\n" + textwrap.dedent(body))
    return path


def request(tmp_path: Path, body: str, **kwargs) -> AttemptRequest:
    tag = kwargs.pop("tag", "run.1")
    return AttemptRequest(script=script(tmp_path, body, f"{tag}.sh"), tag=tag,
                          workdir=tmp_path / "work", **kwargs)


@pytest.fixture
def scheduler(tmp_path: Path) -> LocalScheduler:
    return LocalScheduler(tmp_path / "jobs")


def test_is_a_scheduler(scheduler: LocalScheduler) -> None:
    assert isinstance(scheduler, Scheduler)


def test_failed_exit_code_env_and_find(tmp_path: Path, scheduler: LocalScheduler) -> None:
    flag = tmp_path / "finished.flag"
    job_id = scheduler.submit(request(
        tmp_path, 'echo "$FAULT_TOL_FINISHED_FLAG_FILE $FTSLURM_LOCAL_JOB_ID"\nexit 3\n',
        env={env_vars.FINISHED_FLAG_FILE: str(flag)}, tag="run.7",
    ))
    state = final_state(scheduler, job_id)
    assert (state.state, state.exit_code, state.signal) == ("FAILED", 3, None)
    assert state.start is not None and state.end is not None and state.nodes
    output = (tmp_path / "jobs" / job_id / "output.log").read_text()
    assert output.strip() == f"{flag} {job_id}"
    assert scheduler.find("run.7") == [job_id] and scheduler.find("run.8") == []


def test_completed_and_batched_states(tmp_path: Path, scheduler: LocalScheduler) -> None:
    first = scheduler.submit(request(tmp_path, "exit 0\n", tag="a"))
    second = scheduler.submit(request(tmp_path, "kill -KILL $$\n", tag="b"))
    final_state(scheduler, first)
    final_state(scheduler, second)
    states = scheduler.states([first, second, "999"])
    assert set(states) == {first, second}  # unknown ids are left out
    assert (states[first].state, states[first].exit_code) == ("COMPLETED", 0)
    assert (states[second].state, states[second].signal) == ("FAILED", signal.SIGKILL)


def test_time_limit_sends_warning_then_timeout(tmp_path: Path, scheduler: LocalScheduler) -> None:
    marker = tmp_path / "got-warning"
    job_id = scheduler.submit(request(
        tmp_path,
        f"""
        trap 'echo warned > {marker}' USR1
        while true; do sleep 0.2; done
        """,
        time_limit_s=2, warning_signal=signal.SIGUSR1, warning_lead_s=1, kill_wait_s=5,
    ))
    state = final_state(scheduler, job_id)
    assert marker.read_text().strip() == "warned"
    assert state.state == "TIMEOUT"
    assert state.signal == signal.SIGTERM  # bash did not trap TERM, so TERM ended it


def test_time_limit_escalates_to_sigkill(tmp_path: Path, scheduler: LocalScheduler) -> None:
    job_id = scheduler.submit(request(
        tmp_path, "trap '' TERM\nwhile true; do sleep 0.2; done\n",
        time_limit_s=1, kill_wait_s=1,
    ))
    state = final_state(scheduler, job_id)
    assert (state.state, state.signal) == ("TIMEOUT", signal.SIGKILL)


def test_cancel_running_job_kills_its_whole_group(tmp_path: Path,
                                                  scheduler: LocalScheduler) -> None:
    started = tmp_path / "started"
    grandchild_pid = tmp_path / "grandchild.pid"
    job_id = scheduler.submit(request(
        tmp_path,
        f"""
        sleep 1000 &
        echo $! > {grandchild_pid}
        touch {started}
        wait
        """,
    ))
    wait_for(started.exists, "the job to start")
    assert scheduler.states([job_id])[job_id].state == "RUNNING"
    scheduler.cancel(job_id)
    state = final_state(scheduler, job_id)
    assert state.state == "CANCELLED"
    pid = int(grandchild_pid.read_text())
    wait_for(lambda: not _alive(pid), "the background sleep to be killed")
    scheduler.cancel(job_id)  # cancelling an ended job is a no-op


def test_cancel_pending_job_waiting_for_dependency(tmp_path: Path,
                                                   scheduler: LocalScheduler) -> None:
    release = tmp_path / "release"
    first = scheduler.submit(request(
        tmp_path, f"while [ ! -e {release} ]; do sleep 0.1; done\n", tag="a"))
    ran = tmp_path / "second-ran"
    second = scheduler.submit(AttemptRequest(
        script=script(tmp_path, f"touch {ran}\n", "second.sh"), tag="b",
        workdir=tmp_path, after=first))
    third = scheduler.submit(AttemptRequest(
        script=script(tmp_path, "exit 0\n", "third.sh"), tag="c", workdir=tmp_path, after=first))
    wait_for(lambda: scheduler.states([second])[second].state == "PENDING", "second pending")
    scheduler.cancel(second)
    assert final_state(scheduler, second).state == "CANCELLED"
    release.touch()
    assert final_state(scheduler, first).state == "COMPLETED"
    assert final_state(scheduler, third).state == "COMPLETED"  # afterany released it
    assert not ran.exists()


def test_job_outlives_the_process_that_submitted_it(tmp_path: Path) -> None:
    release = tmp_path / "release"
    submitter = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(
            f"""
            import os
            from pathlib import Path
            from ftslurm.backends.local import AttemptRequest, LocalScheduler
            job = LocalScheduler({str(tmp_path / 'jobs')!r}).submit(AttemptRequest(
                script=Path({str(script(tmp_path, f'while [ ! -e {release} ]; do sleep 0.1; done'
                                               f'; exit 5'))!r}),
                tag="run.1", workdir=Path({str(tmp_path)!r})))
            print(job, flush=True)
            os.kill(os.getpid(), 9)  # the watcher dies without any cleanup
            """)],
        capture_output=True, text=True,
    )
    assert submitter.returncode == -signal.SIGKILL, submitter.stderr
    job_id = submitter.stdout.strip()
    scheduler = LocalScheduler(tmp_path / "jobs")  # a new watcher finds the job on disk
    assert scheduler.find("run.1") == [job_id]
    assert not scheduler.states([job_id])[job_id].is_final
    release.touch()
    assert final_state(scheduler, job_id).exit_code == 5


def test_dead_supervisor_is_reported_not_hidden(tmp_path: Path, scheduler: LocalScheduler) -> None:
    started = tmp_path / "started"
    job_id = scheduler.submit(request(tmp_path, f"touch {started}\nsleep 1000\n"))
    wait_for(started.exists, "the job to start")
    state_file = tmp_path / "jobs" / job_id / "state.json"
    data = json.loads(state_file.read_text())
    os.kill(data["supervisor_pid"], signal.SIGKILL)
    state = final_state(scheduler, job_id)
    assert state.state == "NODE_FAIL" and "supervisor died" in (state.reason or "")
    os.killpg(data["pgid"], signal.SIGKILL)  # clean up the orphaned job


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); treat it as dead
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_chain_on_the_local_backend_runs_to_the_flag(tmp_path: Path) -> None:
    """Ledger + policy + LocalScheduler together, driven by a minimal loop: attempt 1 fails,
    attempt 2 advances and stops gracefully on the warning signal, attempt 3 writes the flag."""
    from ftslurm.chain.ledger import Ledger, read_progress
    from ftslurm.chain.outcome import Outcome
    from ftslurm.chain.policy import ChainConfig, classify, decide

    run = tmp_path / "run"
    flag = run / "finished.flag"
    config = ChainConfig(max_failures=2, max_attempts=5)
    ledger = Ledger.create(run, spec_fingerprint="fp", settings=config.to_dict())
    scheduler = LocalScheduler(run / "local_jobs")
    body = script(tmp_path, f"""
        case "$FTSLURM_ATTEMPT" in
          1) exit 1 ;;
          2) echo 10 > {run}/progress; trap 'exit 94' USR1; while true; do sleep 0.1; done ;;
          *) touch "$FAULT_TOL_FINISHED_FLAG_FILE" ;;
        esac
        """)

    def submit(attempt: int, tag: str) -> str:
        env = {env_vars.FINISHED_FLAG_FILE: str(flag), env_vars.RUN_DIR: str(run),
               env_vars.ATTEMPT: str(attempt)}
        return scheduler.submit(AttemptRequest(
            script=body, tag=tag, workdir=run, env=env, time_limit_s=2,
            warning_signal=signal.SIGUSR1, warning_lead_s=1, kill_wait_s=5))

    def step() -> bool:
        state = ledger.state()
        running = {a.job_id: a for a in state.in_flight if a.job_id}
        for job_id, job in scheduler.states(running).items():
            if job.is_final:
                verdict = classify(exit_code=job.exit_code, signal=job.signal,
                                   scheduler_state=job.state, flag_exists=flag.exists())
                ledger.record_end(running[job_id].number, outcome=verdict.outcome,
                                  reason=verdict.reason, job_id=job_id, exit_code=job.exit_code,
                                  scheduler_state=job.state, progress=read_progress(run))
        decision = decide(ledger.state(), config, flag_exists=flag.exists())
        if decision.action == "stop":
            assert decision.run_status is not None
            ledger.record_run_end(decision.run_status, decision.reason)
            return True
        if decision.action == "submit":
            number = decision.attempt
            assert number is not None
            ledger.submit_attempt(number, lambda tag: submit(number, tag), scheduler.find)
        return False

    wait_for(step, "the chain to stop")
    state = ledger.state()
    assert [a.outcome for a in state.attempts] == [Outcome.FAILED, Outcome.STOPPED,
                                                    Outcome.FINISHED]
    assert state.run_status == "finished" and state.consecutive_failures == 0
    assert state.attempts[1].progress_after == 10


@pytest.mark.parametrize("module",
                         ["ftslurm.backends.local_supervisor", "ftslurm.local_supervisor"])
def test_supervisor_module_answers_under_its_old_name_too(module: str) -> None:
    # A watch loop started before the move still starts `-m ftslurm.local_supervisor`.
    result = subprocess.run([sys.executable, "-m", module], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and "usage: python -m ftslurm.backends.local_supervisor" in (
        result.stderr)
