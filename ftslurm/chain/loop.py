"""The login-node auto-resume loop (`ftslurm submit --watch`, `ftslurm watch RUN_DIR`, and the
local backend).

Each poll: ONE batched `Scheduler.states()` query for every attempt in flight, record what
started or ended (classified by `policy.classify`), `policy.decide`, and submit the next attempt
or stop the run; the ledger lock is held only while recording, never across a scheduler call.
Polls back off (x1.5 up to a maximum) while nothing changes and return to the initial interval on
any change. A scheduler that does not answer (a controller restart, maintenance) never ends the
loop: the poll reports since when it is unreachable and the loop backs off and keeps polling. All
state is in the run dir, so a watcher may be killed at any moment and started again, and two
watchers on one run dir never submit an attempt twice (`Ledger.submit_attempt`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ftslurm.backends.base import JobState, Scheduler
from ftslurm.chain.actions import (
    make_scheduler,
    note_decision,
    stop_run,
    submit_attempt,
    sync_with_scheduler,
)
from ftslurm.chain.ledger import Ledger
from ftslurm.chain.outcome import Action, RunStatus
from ftslurm.chain.policy import Decision, decide
from ftslurm.chain.runstate import RunState
from ftslurm.chain.settings import ChainSettings, load_settings
from ftslurm.chain.sweep import advance
from ftslurm.slurm.client import SlurmCommandError


@dataclass(frozen=True)
class Backoff:
    """Poll intervals in seconds: start at `initial`, grow by `factor` up to `maximum`."""

    initial: float = 2.0
    factor: float = 1.5
    maximum: float = 30.0

    @classmethod
    def for_backend(cls, backend: str) -> Backoff:
        """Local jobs are cheap to poll; SLURM's controller is shared."""
        return cls(0.5, 1.5, 3.0) if backend == "local" else cls(5.0, 1.5, 60.0)

    def next(self, current: float, changed: bool) -> float:
        """The interval after a poll."""
        return self.initial if changed else min(current * self.factor, self.maximum)


@dataclass(frozen=True)
class WatchUpdate:
    """What one poll saw and did."""

    state: RunState
    jobs: dict[str, JobState]
    decision: Decision
    #: Job id submitted by this poll, if any.
    submitted: str | None
    #: Something changed since the previous poll (a record, a job state).
    changed: bool
    #: The scheduler's error when it did not answer this poll, and since when (epoch s) it has
    #: not answered; None when it answered.
    scheduler_error: str | None = None
    unreachable_since: float | None = None


def _has_leftovers(state: RunState) -> bool:
    """An attempt that never started is still reserved or queued (to withdraw), or the run has
    not recorded its end yet."""
    return state.run_status is RunStatus.RUNNING or bool(state.never_started)


def _signature(state: RunState, jobs: dict[str, JobState]) -> tuple[object, ...]:
    attempts = tuple((a.number, a.status, a.job_id, a.requeue_count, a.provisional)
                     for a in state.attempts)
    return attempts, state.run_status, tuple(sorted((k, v.state) for k, v in jobs.items()))


class Watcher:
    """Drives one run dir's chain until the run ends."""

    def __init__(
        self,
        run_dir: str | Path,
        *,
        scheduler: Scheduler | None = None,
        backoff: Backoff | None = None,
        on_update: Callable[[WatchUpdate], None] | None = None,
        advance_sweep: bool = True,
    ) -> None:
        self.run_dir = Path(run_dir)
        #: Whether this watcher starts its sweep's next points itself (a fleet poll does it
        #: once per sweep instead).
        self.advance_sweep = advance_sweep
        self.settings: ChainSettings = load_settings(run_dir)
        self.ledger = Ledger.open(run_dir)
        created = self.ledger.state().created_at
        self.scheduler = scheduler or make_scheduler(self.settings, since=created - 3600)
        self.backoff = backoff or Backoff.for_backend(self.settings.backend)
        self.on_update = on_update
        self._last: tuple[object, ...] | None = None
        self._unreachable_since: float | None = None

    def poll_once(self) -> WatchUpdate:
        """One poll: sync with the scheduler, decide, act (the lock only around records)."""
        submitted, error = None, None
        state = self.ledger.state()
        jobs: dict[str, JobState] = {}
        try:
            state, jobs = sync_with_scheduler(self.ledger, self.settings, self.scheduler, state,
                                              source="watch")
            decision = decide(state, self.settings.config,
                              flag_exists=self.settings.flag_exists())
            if state.last_ended is not None and not state.in_flight:
                note_decision(self.settings, state, state.last_ended.number, decision)
            sweep_dir = self.settings.sweep_dir
            if decision.action is Action.SUBMIT and sweep_dir and not state.attempts:
                # A sweep point waiting its turn: only the sweep starts it (max_parallel).
                if self.advance_sweep:
                    advance(sweep_dir, scheduler=self.scheduler)
                state = self.ledger.state()
            elif decision.action is Action.SUBMIT:
                submitted = submit_attempt(self.ledger, self.settings, self.scheduler, decision)
                state = self.ledger.state()
            elif decision.action is Action.STOP and _has_leftovers(state):
                state = stop_run(self.ledger, self.scheduler, decision)
                if sweep_dir and self.advance_sweep:
                    advance(sweep_dir, scheduler=self.scheduler)
        except SlurmCommandError as failure:  # the scheduler did not answer: try again later
            error = str(failure)
            state = self.ledger.state()
            decision = decide(state, self.settings.config,
                              flag_exists=self.settings.flag_exists())
        now = time.time()
        self._unreachable_since = (self._unreachable_since or now) if error else None
        signature = _signature(state, jobs)
        changed = signature != self._last
        self._last = signature
        update = WatchUpdate(state, jobs, decision, submitted, changed, error,
                             self._unreachable_since)
        if self.on_update is not None:
            self.on_update(update)
        return update

    def run(self) -> RunState:
        """Poll until the run has ended and its last attempts have been recorded (an attempt
        that wrote the flag is still exiting); returns the final state."""
        interval = self.backoff.initial
        while True:
            update = self.poll_once()
            state = update.state
            if state.run_status is not RunStatus.RUNNING and not any(
                    a.in_flight or a.provisional for a in state.attempts):
                return state
            changed = update.changed or update.submitted is not None
            interval = self.backoff.next(interval, changed and not update.scheduler_error)
            time.sleep(interval)  # the poll interval (with backoff), not a synchronization


__all__ = ["Backoff", "WatchUpdate", "Watcher"]
