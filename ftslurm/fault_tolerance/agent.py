"""`FaultTolerantAgent`: torch's `LocalElasticAgent` plus heartbeat-based hang detection.

Extension points used (all of `SimpleElasticAgent`'s loop stays torch's own):

- `_start_workers`: create fresh heartbeat slots just before the ranks start, remember their pids,
  and watch the round's processes (`RoundWatch`: when each ended, and whether the launcher
  stopped it).
- `_monitor_workers`: torch's crash check first; then the heartbeats. On a hang the stacks of every
  rank of the node that installed the dump handler are dumped (into their logs, and into the hang
  event), the hung rank is stopped, and the group is reported FAILED, so torch's loop restarts it
  (up to `--max-restarts`) after a new rendezvous round, which makes every other node restart too.
- `_stop_workers`: honours `--shutdown-timeout` for restarts as well.
- The process context's `close` (which torch calls itself when a rank fails, and through
  `_shutdown` otherwise) first marks the ranks still alive as stopped by the launcher.

Every end of a rank process goes to the status file's `rank_ends` once the round's ends are known
(after a failure or success is seen, and after every stop of the group).

With a fixed node count, a peer node that enters a new rendezvous round (because it restarts its
ranks) makes this node restart its ranks as a restart that counts against `--max-restarts`, so
every rank of the job sees the same `TORCHELASTIC_RESTART_COUNT`.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

from torch.distributed.elastic.agent.server.api import RunResult, WorkerGroup, WorkerState
from torch.distributed.elastic.agent.server.local_elastic_agent import LocalElasticAgent
from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

from ftslurm import env_vars, exit_codes
from ftslurm.fault_tolerance import stop_signals
from ftslurm.fault_tolerance.client import DUMP_SIGNAL
from ftslurm.fault_tolerance.config import FaultToleranceConfig
from ftslurm.fault_tolerance.monitor import Hang, HeartbeatMonitor
from ftslurm.fault_tolerance.procs import dump_stacks_all, terminate
from ftslurm.fault_tolerance.rank_ends import RankProcess, RoundWatch, log_file
from ftslurm.fault_tolerance.status import (
    EventKind,
    LauncherState,
    RankEndCause,
    StatusFile,
    TimeoutSource,
)
from ftslurm.fault_tolerance.timeouts import (
    HeartbeatTimeouts,
    apply_floor,
    learned_path,
    save_learned,
)

logger = logging.getLogger("ftslurm.launcher")

#: Longest wait for a hung rank to finish writing its stack dump.
DUMP_TIMEOUT = 2.0
#: After a rank fails, how long the other ranks get to finish exiting before the launcher reads
#: their exit codes: a rank that exits with the do-not-retry code may still be finalizing when
#: its peers, broken out of a collective, have already died.
EXIT_CODES_WINDOW = 2.0
#: The most of one rank's stack dump kept in a hang event (bytes; the rank's log has it all).
STACK_CAP = 64 * 1024


class FaultTolerantAgent(LocalElasticAgent):
    """A `LocalElasticAgent` that also restarts the worker group when a rank stops heartbeating."""

    def __init__(
        self,
        *args: object,
        ft_config: FaultToleranceConfig,
        monitor: HeartbeatMonitor,
        status: StatusFile,
        run_dir: Path | None,
        fixed_size: bool,
        ipc_dir: Path,
        **kwargs: object,
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._ft = ft_config
        self._monitor = monitor
        self._status = status
        self._run_dir = run_dir
        self._fixed_size = fixed_size
        self._ipc_dir = ipc_dir
        self._last_check = 0.0
        #: The processes of the current round (None before the first start).
        self._round: RoundWatch | None = None
        #: True once a rank exited with the do-not-retry code; the launcher then exits with it.
        self.do_not_retry = False

    @property
    def restart_count(self) -> int:
        """How many times the worker group was restarted so far."""
        return self._worker_group.spec.max_restarts - self._remaining_restarts

    def _start_workers(self, worker_group: WorkerGroup) -> dict[int, int]:
        self.record_rank_ends()  # the previous round's, should any be left
        if self._round is not None:
            self._round.close()
            self._round = None
        self._monitor.prepare([(w.global_rank, w.local_rank) for w in worker_group.workers])
        stop_signals.clear_stop_vote(self._ipc_dir)
        restart_count = self.restart_count
        pids: dict[int, int] = super()._start_workers(worker_group)
        self._watch_round(worker_group, restart_count)
        # torch's process context just installed its own handler for the stop signals.
        stop_signals.install(os.environ.get(env_vars.TORCHELASTIC_SIGNALS_TO_HANDLE, ""))
        self._monitor.set_pids(pids)
        self._last_check = time.monotonic()
        self._status.update(
            state=LauncherState.RUNNING, restart_count=self.restart_count,
            group_rank=worker_group.group_rank,
        )
        logger.info(
            "started ranks %s (restart %d of at most %d)",
            [w.global_rank for w in worker_group.workers],
            self.restart_count,
            worker_group.spec.max_restarts,
        )
        return pids

    def _watch_round(self, worker_group: WorkerGroup, restart_count: int) -> None:
        """Follow this round's processes; mark the live ones when the process context closes."""
        pcontext = self._pcontext
        handlers = getattr(pcontext, "subprocess_handlers", None)
        if pcontext is None or not handlers:
            return  # not a subprocess context (a function entrypoint): no rank_ends
        stdouts: dict[int, str] = getattr(pcontext, "stdouts", {})
        stderrs: dict[int, str] = getattr(pcontext, "stderrs", {})
        ranks = [
            RankProcess(w.global_rank, w.local_rank, handlers[w.local_rank].proc,
                        log_file(stdouts.get(w.local_rank)), log_file(stderrs.get(w.local_rank)))
            for w in worker_group.workers if w.local_rank in handlers
        ]
        watch = RoundWatch(ranks, restart_count=restart_count, node=self._status.data["node"])
        self._round = watch
        close = pcontext.close

        def close_marking_live_ranks(death_sig: signal.Signals | None = None,
                                     timeout: int = 30) -> None:
            # torch stops the other ranks right inside its failure check (`_poll`), before the
            # agent sees the failure: this is the one place that knows which ones it stopped.
            try:
                watch.mark_alive(RankEndCause.STOPPED_BY_LAUNCHER)
            except Exception:  # evidence only: never in the way of stopping the ranks
                logger.exception("could not mark the ranks being stopped")
            close(death_sig, timeout)

        pcontext.close = close_marking_live_ranks  # type: ignore[method-assign]

    def record_rank_ends(self, failures: dict[int, ProcessFailure] | None = None) -> None:
        """Write the ends of this round's ranks that ended since the last call (once each)."""
        if self._round is None:
            return
        times = {f.local_rank: float(f.timestamp) for f in (failures or {}).values()}
        try:
            entries = self._round.collect(times)
        except Exception:  # evidence only
            logger.exception("could not collect the ranks' ends")
            return
        self._status.add_rank_ends(entries)

    def _stop_workers(self, worker_group: WorkerGroup) -> None:
        self._shutdown(timeout=self._shutdown_timeout)

    def _shutdown(self, death_sig: signal.Signals = signal.SIGTERM, timeout: int = 30) -> None:
        # torch forwards the signal the launcher got (SIGINT, SIGUSR1, ...); ranks are promised
        # SIGTERM, the signal GracefulShutdown and SLURM-aware code handle.
        if death_sig != signal.SIGKILL:
            death_sig = signal.SIGTERM
        try:
            super()._shutdown(death_sig, timeout)
        finally:
            self.record_rank_ends()

    def _monitor_workers(self, worker_group: WorkerGroup) -> RunResult:
        result: RunResult = super()._monitor_workers(worker_group)
        if result.state == WorkerState.FAILED:
            result = self._on_crash(result)
            self.record_rank_ends(result.failures)
            return result
        if result.state != WorkerState.HEALTHY:
            self.record_rank_ends(result.failures)
            return result
        now = time.monotonic()
        if now - self._last_check >= self._ft.workload_check_interval:
            self._last_check = now
            hangs, requested = self._monitor.check(now)
            if requested is not None:
                self._adopt_timeouts(requested, self._ft.min_learned_timeout)
            if hangs:
                return self._on_hangs(worker_group, hangs, now)
        if self._fixed_size and worker_group.spec.rdzv_handler.num_nodes_waiting() > 0:
            self._record(EventKind.PEER_RESTART, rank=None)
            logger.warning(
                "a peer node started a new rendezvous round: restarting this node's ranks"
            )
            return RunResult(state=WorkerState.UNHEALTHY)
        return result

    def _action(self) -> str:
        return "restart" if self._remaining_restarts > 0 else "give_up"

    def _record(self, kind: EventKind, rank: int | None, **fields: object) -> None:
        self._status.event(
            kind=kind,
            rank=rank,
            restart_count=self.restart_count,
            action=self._action(),
            **fields,
        )

    def _exit_codes_after_failure(self) -> dict[int, int]:
        """local rank -> exit code of the ranks that exit within EXIT_CODES_WINDOW."""
        handlers = getattr(self._pcontext, "subprocess_handlers", None) or {}
        deadline = time.monotonic() + EXIT_CODES_WINDOW
        while True:
            codes = {local: handler.proc.poll() for local, handler in handlers.items()}
            done = all(code is not None for code in codes.values())
            if done or exit_codes.DO_NOT_RETRY in codes.values() or time.monotonic() > deadline:
                return {local: code for local, code in codes.items() if code is not None}
            time.sleep(0.02)

    def _add_late_do_not_retry(self, result: RunResult) -> None:
        """Add to `result` a rank that exited with the do-not-retry code after the first failure."""
        workers = {w.local_rank: w for w in self._worker_group.workers}
        for local, code in self._exit_codes_after_failure().items():
            worker = workers.get(local)
            if code == exit_codes.DO_NOT_RETRY and worker is not None:
                result.failures[worker.global_rank] = ProcessFailure(
                    local_rank=local, pid=worker.id or -1, exitcode=code, error_file=""
                )

    def _on_crash(self, result: RunResult) -> RunResult:
        codes = {rank: failure.exitcode for rank, failure in result.failures.items()}
        if exit_codes.DO_NOT_RETRY not in codes.values():
            self._add_late_do_not_retry(result)
            codes = {rank: failure.exitcode for rank, failure in result.failures.items()}
        if exit_codes.DO_NOT_RETRY in codes.values():
            self.do_not_retry = True
            self._remaining_restarts = 0
        for rank, failure in sorted(result.failures.items()):
            kind = (EventKind.DO_NOT_RETRY if failure.exitcode == exit_codes.DO_NOT_RETRY
                    else EventKind.CRASH)
            logger.error(
                "rank %d (local rank %d, pid %d) on %s exited with code %d: %s "
                "(restart %d of at most %d)",
                rank, failure.local_rank, failure.pid, self._status.data["node"], failure.exitcode,
                self._action(), self.restart_count, self._worker_group.spec.max_restarts,
            )
            self._record(kind, rank, local_rank=failure.local_rank, exit_code=failure.exitcode)
        return result

    def _on_hangs(self, worker_group: WorkerGroup, hangs: list[Hang], now: float) -> RunResult:
        failures: dict[int, ProcessFailure] = {}
        sig = self._ft.rank_termination_signal
        # Epoch seconds of each hung rank's last heartbeat (or start), before anything is done.
        wall_now = time.time() - (time.monotonic() - now)
        since = {hang.global_rank: round(wall_now - hang.heartbeat_age, 6) for hang in hangs}
        for hang in hangs:
            logger.error(
                "rank %d (local rank %d, pid %d) on %s is hung: no heartbeat for %.2fs "
                "(%s %s timeout %.2fs%s); dumping the stacks of the node's ranks, stopping it "
                "with %s, then %s (restart %d of at most %d)",
                hang.global_rank, hang.local_rank, hang.pid, self._status.data["node"],
                hang.heartbeat_age, hang.timeout_source, hang.phase, hang.timeout,
                "" if hang.connected else ", never connected", sig.name, self._action(),
                self.restart_count, worker_group.spec.max_restarts,
            )
            if not hang.has_dump_handler:
                logger.warning(
                    "rank %d never called init_workload_monitoring(): no stack dump available",
                    hang.global_rank,
                )
        # Every rank's stacks, before any rank is stopped: the hung one shows where it hangs,
        # the others what they wait for.
        stacks, dumped = self._dump_all_stacks()
        for hang in hangs:
            # Seconds from the rank's last heartbeat (or start) to the termination signal.
            stop_latency = hang.heartbeat_age + (time.monotonic() - now)
            if self._round is not None:
                self._round.mark(hang.local_rank, RankEndCause.HANG_STOPPED)
            outcome = terminate(hang.pid, sig, self._ft.rank_termination_grace)
            if hang.client_pid != hang.pid:
                terminate(hang.client_pid, sig, self._ft.rank_termination_grace, group=False)
            self._record(
                EventKind.HANG, hang.global_rank, local_rank=hang.local_rank, phase=hang.phase,
                heartbeat_age=round(hang.heartbeat_age, 3), timeout=hang.timeout,
                timeout_source=str(hang.timeout_source), since=since[hang.global_rank],
                stack_dumped=dumped.get(hang.global_rank, False), termination=outcome,
                stop_latency=round(stop_latency, 3),
                last_heartbeat_at=round(time.time() - stop_latency, 6), stacks=stacks,
            )
            failures[hang.global_rank] = ProcessFailure(
                local_rank=hang.local_rank, pid=hang.pid, exitcode=-int(sig), error_file=""
            )
        return RunResult(state=WorkerState.FAILED, failures=failures)

    def _dump_all_stacks(self) -> tuple[dict[str, str], dict[int, bool]]:
        """Dump the stacks of every live rank with the dump handler, all at once.

        Returns (global rank as text -> what its stderr file grew by during the dump, at most
        STACK_CAP bytes; ranks whose stderr is no file are left out), (global rank -> whether
        its handler finished within DUMP_TIMEOUT).
        """
        targets = self._monitor.dumpable()
        stderrs: dict[int, str] = getattr(self._pcontext, "stderrs", None) or {}
        files = {t.global_rank: log_file(stderrs.get(t.local_rank)) for t in targets}
        before = {rank: _size(path) for rank, path in files.items() if path}
        done = dump_stacks_all([t.pid for t in targets], DUMP_SIGNAL, DUMP_TIMEOUT)
        dumped = {t.global_rank: done.get(t.pid, False) for t in targets}
        stacks: dict[str, str] = {}
        for rank, start in before.items():
            path = files[rank]
            if path is None or start is None:
                continue
            text = _read_growth(path, start)
            if text:
                stacks[str(rank)] = text
        if targets:
            logger.info(
                "stack dumps finished for ranks %s; not within %.1f s: %s; kept in the status "
                "file: %s", sorted(r for r, ok in dumped.items() if ok), DUMP_TIMEOUT,
                sorted(r for r, ok in dumped.items() if not ok) or "none",
                sorted(int(rank) for rank in stacks) or "none (the ranks' stderr is no file)",
            )
        return stacks, dumped

    def _adopt_timeouts(self, requested: HeartbeatTimeouts, floor: float | None = None) -> None:
        """Apply the timeouts the ranks requested, raised to `floor`; keep them as learned.

        Reads only the monitor, the status file and the run directory.
        """
        if self._status.data.get("requested_timeouts") == requested.to_dict():
            return
        in_force = apply_floor(requested, floor)
        floored = "" if in_force == requested else (
            f"; in force with the floor of {floor} s (min_learned_timeout): "
            f"initial={in_force.initial} s, subsequent={in_force.subsequent} s"
        )
        logger.info(
            "ranks set heartbeat timeouts: initial=%s s, subsequent=%s s%s",
            requested.initial, requested.subsequent, floored,
        )
        self._monitor.timeouts = in_force
        self._monitor.timeouts_source = TimeoutSource.LEARNED
        self._status.update(timeouts=in_force.to_dict(), requested_timeouts=requested.to_dict())
        if self._run_dir is not None:
            # Merged with what the file holds (per timeout the larger): other nodes' launchers
            # and the Lightning callback write the same file. It keeps what was learned; the
            # floor applies where the timeouts are used.
            try:
                kept = save_learned(self._run_dir, requested, source=self._status.data["node"])
            except OSError as error:  # a hint for the next attempt, never worth a failure
                logger.warning("could not save the learned timeouts to %s: %s",
                               learned_path(self._run_dir), error)
                return
            logger.info("saved the learned timeouts to %s (now initial=%s s, subsequent=%s s)",
                        learned_path(self._run_dir), kept.initial, kept.subsequent)


def _size(path: str) -> int | None:
    try:
        return os.path.getsize(path)
    except OSError:
        return None


def _read_growth(path: str, start: int) -> str:
    """What `path` holds from byte `start` on, at most STACK_CAP bytes, as text."""
    try:
        with open(path, "rb") as handle:
            handle.seek(start)
            data = handle.read(STACK_CAP + 1)
    except OSError:
        return ""
    if len(data) > STACK_CAP:
        return data[:STACK_CAP].decode(errors="replace") + "\n[... cut at 64 KiB; see the log]\n"
    return data.decode(errors="replace")


__all__ = [
    "DUMP_TIMEOUT",
    "EXIT_CODES_WINDOW",
    "STACK_CAP",
    "FaultTolerantAgent",
]
