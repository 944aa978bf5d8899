"""Randomized fault trials of the self-chaining run on the real cluster.

Each trial submits a short chain (one rank under the fault-tolerant launcher) and throws at it,
at random: attempts whose setup line fails, that crash or hang (the launcher detects the hang),
and, while it runs, sbatch failing (a PATH shim), slurmctld stopped and restarted, and SIGKILL of
an attempt's batch shell at a random moment. The asynchronous faults come one at a time: each
after the chain has recovered from the one before (two attempts queued again), which is what the
design promises to survive at any moment. (Two faults at once, sbatch down for an attempt's whole
life and that attempt then killed, can leave nothing queued: `status` flags that stall.) After
each trial:

- the run finished;
- no two attempts trained at once (the workload's flock, and the launch steps' times in sacct);
- no attempt was lost or counted twice (every job of the run is in the ledger, each attempt has
  one final end, the attempts that trained are the ones recorded as started);
- at every poll while the run was not over, one of its jobs was running or queued.

FTSLURM_FAULT_TRIALS sets the number of trials (default 6, kept small for CI);
FTSLURM_FAULT_SEED the first seed.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ftslurm.chain.ledger import Ledger
from ftslurm.slurm import SlurmClient, SlurmCommandError
from tests.slurm.chain_util import fault_trial_spec, no_jobs_left, run_ended
from tests.slurm.test_chain_faults_cluster import cluster_daemon, shim_env
from tests.waiting import poll

TRIALS = int(os.environ.get("FTSLURM_FAULT_TRIALS", "6"))
FIRST_SEED = int(os.environ.get("FTSLURM_FAULT_SEED", "1000"))
ATTEMPT_FAULTS = ("setup-fail", "crash", "hang")
ASYNC_FAULTS = ("sbatch", "slurmctld", "kill")

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(300 + 240 * TRIALS)]


@dataclass
class Trial:
    """One trial's plan (by attempt number: a fault, or ok) and what happened."""

    seed: int
    folder: Path
    plan: dict[str, str]
    async_faults: list[str]
    injected: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    @property
    def run_dir(self) -> Path:
        return self.folder / "run"


def make_trial(seed: int, folder: Path) -> Trial:
    rng = random.Random(seed)
    failing = rng.randint(0, 2)  # attempts before the first planned success
    plan = {str(n): rng.choice(ATTEMPT_FAULTS) for n in range(1, failing + 1)}
    faults = rng.sample(ASYNC_FAULTS, rng.randint(1, 2))
    return Trial(seed, folder, plan, faults)


def write_spec(trial: Trial) -> Path:
    folder = trial.folder
    folder.mkdir(parents=True)
    (folder / "plan.json").write_text(json.dumps(trial.plan))
    for attempt, fault in trial.plan.items():
        if fault == "setup-fail":
            (folder / f"setup-fail.{attempt}").touch()
    spec = folder / "job.yaml"
    spec.write_text(fault_trial_spec(
        f"fault-{trial.seed}", trial.run_dir, str(folder),
        'setup: [\'test ! -e "$TRIAL_DIR/setup-fail.$FTSLURM_ATTEMPT"\']',
        # liveness under faults, not the crash-loop rule: the same fault may strike twice
        "autoresume: {max_failures: 20, stop_on_repeated_failure: false}"))
    return spec


def run_over(trial: Trial) -> bool:
    return Ledger.open(trial.run_dir).state().run_status != "running"


def queued_or_running(trial: Trial, run_id: str) -> bool | None:
    """Whether squeue lists a job of the run; None when the controller does not answer."""
    try:
        out = SlurmClient(retries=0, timeout=10).run(["squeue", "-h", "-o", "%j %T"])
    except SlurmCommandError:
        return None
    return any(line.split()[0].startswith(run_id + ".") for line in out.splitlines() if line)


def watch_invariant(trial: Trial, done: threading.Event) -> None:
    run_id = Ledger.open(trial.run_dir).state().run_id
    while not done.wait(1.0):
        if run_over(trial):
            return
        seen = queued_or_running(trial, run_id)
        if seen is False and not run_over(trial):  # the run may have ended meanwhile
            trial.violations.append(f"nothing running or queued at {time.strftime('%X')}")


def batch_shell(job_id: str) -> int | None:
    """The pid of the job's batch shell (the dev cluster's nodes run on this host)."""
    needle = f"SLURM_JOB_ID={job_id}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (b"slurm_script" in (proc / "cmdline").read_bytes()
                    and needle in (proc / "environ").read_bytes().split(b"\0")):
                return int(proc.name)
        except OSError:
            continue
    return None


def running_job(trial: Trial) -> str | None:
    for view in reversed(Ledger.open(trial.run_dir).state().attempts):
        if view.status == "running" and view.job_id:
            return view.job_id
    return None


def recovered(trial: Trial) -> bool:
    """The run is over, or two attempts are queued again (the queue a running attempt keeps)."""
    state = Ledger.open(trial.run_dir).state()
    queued = [a for a in state.attempts if a.status == "submitted" and a.job_id]
    return state.run_status != "running" or len(queued) >= 2


def inject(trial: Trial, rng: random.Random, done: threading.Event) -> None:
    """The asynchronous faults, each once, at random moments while the run goes on, each after
    the chain recovered from the one before."""
    shim = trial.folder / "shim"
    for fault in trial.async_faults:
        # best effort: after 120 s without recovery the next fault comes anyway
        poll(lambda: done.is_set() or recovered(trial), timeout=120, interval=0.2)
        if done.is_set():
            return
        if done.wait(rng.uniform(0.5, 6.0)) or run_over(trial):
            return
        if fault == "sbatch":
            (shim / "broken").touch()
            done.wait(rng.uniform(2.0, 10.0))
            (shim / "broken").unlink()
        elif fault == "slurmctld":
            cluster_daemon("stop", "slurmctld")
            try:
                done.wait(rng.uniform(2.0, 10.0))
            finally:
                cluster_daemon("start", "slurmctld")
        elif fault == "kill":
            def kill_a_batch_shell() -> str | None:
                if done.is_set():
                    return "done"
                job = running_job(trial)
                pid = batch_shell(job) if job else None
                if not pid:
                    return None
                done.wait(rng.uniform(0.0, 3.0))
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    return None  # it ended meanwhile: try the next attempt
                return "killed"

            # best effort: no attempt's batch shell found running in 120 s, no kill this trial
            if poll(kill_a_batch_shell, timeout=120, interval=0.2) != "killed":
                continue
        trial.injected.append(fault)


def check_no_overlap(trial: Trial, job_ids: list[str]) -> None:
    """No two launch steps (the training) of the run overlap in sacct, and the workload's flock
    never found another attempt training."""
    if (trial.run_dir / "OVERLAP").exists():
        trial.violations.append((trial.run_dir / "OVERLAP").read_text().strip())
    records = SlurmClient().job_states(job_ids)
    steps = sorted((r.start, r.end, job) for job, rs in records.items() for r in rs
                   if r.step == "0" and r.start is not None)
    for (_, end, job), (start, _, later) in itertools.pairwise(steps):
        if end is None or start < end:
            trial.violations.append(f"jobs {job} and {later} trained at the same time")


def check_ledger(trial: Trial) -> None:
    """Every job of the run is an attempt of the ledger, each attempt has one final end, and
    the attempts that trained (trainlog) all were recorded as started."""
    state = Ledger.open(trial.run_dir).state()
    numbers = [a.number for a in state.attempts]
    if numbers != list(range(1, len(numbers) + 1)):
        trial.violations.append(f"attempt numbers {numbers}")
    ids = [a.job_id for a in state.attempts if a.job_id]
    if len(ids) != len(set(ids)):
        trial.violations.append(f"a job recorded for two attempts: {ids}")
    for view in state.attempts:
        if view.status != "ended" or view.provisional:
            trial.violations.append(f"attempt {view.number} not final: {view}")
    tags = {a.tag for a in state.attempts}
    named = SlurmClient().run(["sacct", "-X", "-n", "-P", "--format=JobName,JobIDRaw",
                               f"--starttime={time.strftime('%Y-%m-%d')}"])
    for line in named.splitlines():
        name, _, job = line.partition("|")
        if name.startswith(state.run_id + ".") and (name not in tags or job not in ids):
            trial.violations.append(f"job {job} ({name}) is not an attempt of the ledger")
    trained = [line.split()[1] for line in (trial.run_dir / "trainlog").read_text().splitlines()
               if line.startswith("start ")]
    if len(trained) != len(set(trained)):
        trial.violations.append(f"an attempt trained twice: {trained}")
    for number in trained:
        view = state.attempt(int(number))
        if view is None or view.started_at is None:
            trial.violations.append(f"attempt {number} trained but is not recorded as started")
    records = json.loads((trial.run_dir / "ledger.json").read_text())["records"]
    finals = [r["attempt"] for r in records if r["type"] == "ended" and not r["provisional"]]
    twice = sorted({n for n in finals if finals.count(n) > 1})
    if twice:
        trial.violations.append(f"attempt(s) {twice} recorded final twice")


def run_trial(trial: Trial) -> None:
    spec = write_spec(trial)
    env = shim_env(trial.folder)
    result = subprocess.run([sys.executable, "-m", "ftslurm.cli", "submit", "--backend", "slurm",
                             str(spec)], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    done = threading.Event()
    rng = random.Random(trial.seed + 1)
    threads = [threading.Thread(target=watch_invariant, args=(trial, done), daemon=True),
               threading.Thread(target=inject, args=(trial, rng, done), daemon=True)]
    for thread in threads:
        thread.start()
    try:
        data = run_ended(trial.run_dir)
    finally:
        done.set()
        for thread in threads:
            thread.join(timeout=60)
        if (trial.folder / "shim" / "broken").exists():
            (trial.folder / "shim" / "broken").unlink()
    if data["state"] != "finished":
        trial.violations.append(f"run {data['state']}: {data['reason']}")
    assert no_jobs_left(trial.run_dir)
    state = Ledger.open(trial.run_dir).state()
    check_no_overlap(trial, [a.job_id for a in state.attempts if a.job_id])
    check_ledger(trial)


def test_random_faults_never_stall_the_chain(tmp_path: Path) -> None:
    failures = []
    for index in range(TRIALS):
        trial = make_trial(FIRST_SEED + index, tmp_path / f"trial-{index}")
        started = time.monotonic()
        run_trial(trial)
        outcomes = [a.outcome.value if a.outcome else a.status
                    for a in Ledger.open(trial.run_dir).state().attempts]
        print(f"trial {index} seed {trial.seed}: plan {trial.plan}, injected {trial.injected}, "
              f"attempts {outcomes}, {time.monotonic() - started:.0f} s"
              + (f", VIOLATIONS {trial.violations}" if trial.violations else ""), flush=True)
        if trial.violations:
            failures.append((trial.seed, trial.violations))
    assert not failures, failures
