"""Launcher benchmarks: torchrun, ftslurm's launcher and nvidia-resiliency-ext's; prints JSON.

    python benchmarks/bench_launcher.py [--repeats 3] [--idle-ranks 32] [--idle-window 10]
                                        [--nvrx-venv .venv-nvrx] [--only startup|hang|idle]

Launchers, run interleaved round-robin within every repeat (torchrun, ftslurm, ftslurm with
per-rank files, nvrx, then again), so that slow phases of this shared machine hit all of them:

- torchrun: plain torchrun of the same torch (no heartbeats, no hang detection).
- ftslurm: `ft_launcher` of this repository's venv.
- ftslurm_rank_files: the same with `$FTSLURM_RUN_DIR` (a fresh temp dir) and `$FTSLURM_ATTEMPT`
  set, as in a run: each rank's stdout/stderr goes to its own file, tee'd to the launcher's
  output, and the launcher keeps its status file in the run directory.
- nvrx: nvidia-resiliency-ext's `ft_launcher` from its own venv (scripts/install-peer-nvrx),
  started with `--ft-enable-nic-monitor=false` (CPU only). Absent venv: reported as not measured.

Both fault-tolerant launchers get the same settings: heartbeat check every 0.25 s (ftslurm's
default; nvrx's default is 5 s), worker monitor every 0.1 s, the same heartbeat timeouts.
Every rank uses the `RankMonitorClient` of the launcher that started it (benchmarks/workloads/).

- startup: wall time of a trivial 2-rank job (each rank prints one line).
- hang: 2 ranks, rank 1 stops heartbeating; 2 s timeout. Measured from outside, the same way for
  every launcher: the hung rank writes when its last `send_heartbeat()` returned, every rank
  appends when its process started and when it was ready (torch imported, client initialised,
  first heartbeat sent), and this script polls /proc for the end of the hung rank's process.
  Reported from the last heartbeat: to the hung rank's end, to all ranks of the next round
  started, to all ready. ftslurm's own "last heartbeat -> termination signal" (after its stack
  dump) comes from its status file. torchrun has no hang detection.
- idle CPU: CPU time (/proc/<pid>/task/*/schedstat, all threads) of the launcher side: the
  launcher process and its helper processes that are not ranks (nvrx runs one rank monitor
  process per rank), over a window while N ranks sit idle, each heartbeating and printing a
  line once a second. nvrx is also measured with its default intervals ("nvrx_defaults").
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORKLOAD = ROOT / "benchmarks" / "workloads" / "rank.py"
BIN = Path(sys.executable).parent
BASE_ENV = {k: v for k, v in os.environ.items() if k not in ("FTSLURM_RUN_DIR", "FTSLURM_ATTEMPT")}
BASE_ENV.update({"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1", "OMP_NUM_THREADS": "1",
                 "PYTHONUNBUFFERED": "1"})

CHECK_INTERVAL = 0.25  # heartbeat checks, both fault-tolerant launchers
MONITOR_INTERVAL = 0.1  # torch elastic's worker monitor, both (and torchrun's default)
HANG_TIMEOUT = 2.0
HANG_INITIAL_TIMEOUT = 60.0
IDLE_TIMEOUT, IDLE_INITIAL_TIMEOUT = 60.0, 900.0  # generous: nothing should fire while idle
RATIOS = [("nvrx", "ftslurm"), ("ftslurm", "torchrun"), ("nvrx", "torchrun"),
          ("ftslurm_rank_files", "ftslurm"), ("nvrx_defaults", "ftslurm")]


@dataclass
class Launcher:
    name: str
    exe: Path
    client: str  # BENCH_FT_CLIENT: whose RankMonitorClient the ranks use
    rank_files: bool = False
    ft_options: bool = True  # give the common fault-tolerance options
    extra: list[str] = field(default_factory=list)

    def command(self, nproc: int, timeout: float, initial: float, *args: str) -> list[str]:
        cmd = [str(self.exe), "--standalone", "--nproc-per-node", str(nproc),
               "--monitor-interval", str(MONITOR_INTERVAL), *self.extra]
        if self.ft_options:
            cmd += ["--ft-rank-heartbeat-timeout", str(timeout),
                    "--ft-initial-rank-heartbeat-timeout", str(initial),
                    "--ft-workload-check-interval", str(CHECK_INTERVAL)]
        return [*cmd, str(WORKLOAD), *args]

    def env(self, tmp: Path) -> dict[str, str]:
        """The launcher's environment; a fresh run directory for the per-rank-files variant."""
        env = {**BASE_ENV, "BENCH_FT_CLIENT": self.client}
        if self.rank_files:
            env["FTSLURM_RUN_DIR"] = tempfile.mkdtemp(prefix="run-", dir=tmp)
            env["FTSLURM_ATTEMPT"] = "1"
        return env


def launchers(nvrx_venv: Path | None) -> list[Launcher]:
    out = [
        Launcher("torchrun", BIN / "torchrun", "none", ft_options=False),
        Launcher("ftslurm", BIN / "ft_launcher", "ftslurm"),
        Launcher("ftslurm_rank_files", BIN / "ft_launcher", "ftslurm", rank_files=True),
    ]
    if nvrx_venv is not None:
        out.append(Launcher("nvrx", nvrx_venv / "bin" / "ft_launcher", "nvrx",
                            extra=["--ft-enable-nic-monitor=false"]))
    return out


def nvrx_info(venv: Path) -> dict[str, Any]:
    """nvrx's version and FaultToleranceConfig defaults, from its own venv."""
    code = (
        "import dataclasses, json, signal\n"
        "from importlib.metadata import version\n"
        "from nvidia_resiliency_ext.fault_tolerance.config import FaultToleranceConfig as C\n"
        "d = {f.name: getattr(C(), f.name) for f in dataclasses.fields(C)}\n"
        "d = {k: (v.name if isinstance(v, signal.Signals) else v) for k, v in d.items()}\n"
        "print(json.dumps({'version': version('nvidia-resiliency-ext'),\n"
        "                  'torch': version('torch'), 'defaults': d}, default=str))\n"
    )
    done = subprocess.run([str(venv / "bin" / "python"), "-c", code], env=BASE_ENV,
                          capture_output=True, text=True, check=True)
    info: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return info


# ----------------------------------------------------------------------------------- helpers

def summary(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3)}


def ratios(medians: dict[str, float]) -> dict[str, float]:
    return {f"{a}/{b}": round(medians[a] / medians[b], 2) for a, b in RATIOS
            if a in medians and b in medians and medians[b] > 0}


def run_job(cmd: list[str], env: dict[str, str], log: Path, timeout: float = 300.0,
            watch: Any = None) -> int:
    """Run a launcher in its own session; `watch()` is called every 10 ms while it runs."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        deadline = time.monotonic() + timeout
        try:
            while proc.poll() is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"timed out after {timeout} s: {' '.join(cmd)} (see {log})")
                if watch is not None:
                    watch()
                time.sleep(0.01)
        finally:
            _kill_session(proc)
    return proc.returncode


def _kill_session(proc: subprocess.Popen[bytes]) -> None:
    """End the launcher (if still running) and whatever it left in its session."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def _cpu_seconds(pids: Iterable[int]) -> float:
    """CPU time of these processes, all their threads: /proc/<pid>/task/*/schedstat (ns)."""
    total = 0
    for pid in pids:
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except (FileNotFoundError, ProcessLookupError):
            continue
        for task in tasks:
            with contextlib.suppress(FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None:
                tree.setdefault(int(fields[1]), []).append(int(entry.name))
    return tree


def launcher_side(root: int, ranks: set[int]) -> list[int]:
    """The launcher and its descendants, leaving out the ranks and everything below them."""
    tree = _children()
    out: list[int] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in ranks:
            continue
        out.append(pid)
        todo.extend(tree.get(pid, []))
    return out


# -------------------------------------------------------------------------------- benchmarks

def bench_startup(tmp: Path, kinds: list[Launcher], repeats: int) -> dict[str, Any]:
    times: dict[str, list[float]] = {k.name: [] for k in kinds}
    for i in range(repeats):
        for kind in kinds:
            log = tmp / f"startup-{kind.name}-{i}.log"
            start = time.perf_counter()
            code = run_job(kind.command(2, HANG_TIMEOUT, HANG_INITIAL_TIMEOUT, "trivial"),
                           kind.env(tmp), log)
            times[kind.name].append(time.perf_counter() - start)
            if code != 0:
                raise RuntimeError(f"startup {kind.name}: exit code {code} (see {log})")
    medians = {name: round(statistics.median(t), 3) for name, t in times.items()}
    return {"median_s": medians, "runs_s": {n: [round(x, 3) for x in t] for n, t in times.items()},
            "ratios": ratios(medians)}


def _hang_once(tmp: Path, kind: Launcher, i: int) -> dict[str, float]:
    out = tmp / f"hang-{kind.name}-{i}"
    out.mkdir()
    status = out / "status.json"
    args = ["hang", str(out)]
    cmd = kind.command(2, HANG_TIMEOUT, HANG_INITIAL_TIMEOUT, *args)
    if kind.client == "ftslurm":
        cmd[1:1] = ["--ft-status-file", str(status)]
    cmd[1:1] = ["--max-restarts", "1"]
    hung: dict[str, Any] = {"pid": None, "ended": None}

    def watch() -> None:  # when does the hung rank's process end (exit or zombie)?
        if hung["ended"] is not None:
            return
        if hung["pid"] is None:
            started = out / "started"
            if not started.exists():
                return
            for row in started.read_text().splitlines():
                cols = row.split()
                if len(cols) == 5 and cols[:2] == ["1", "0"]:
                    hung["pid"] = int(cols[2])
            return
        stat = _stat(hung["pid"])
        if stat is None or stat[0] in ("Z", "X"):
            hung["ended"] = time.time()

    log = out / "launcher.log"
    code = run_job(cmd, kind.env(tmp), log, watch=watch)
    if code != 0:
        raise RuntimeError(f"hang {kind.name}: exit code {code} (see {log})")
    last = float((out / "last_heartbeat").read_text().split()[0])
    rows = [row.split() for row in (out / "started").read_text().splitlines()]
    round1 = [(float(r[3]), float(r[4])) for r in rows if r[1] == "1"]
    if len(round1) != 2 or hung["ended"] is None:
        raise RuntimeError(f"hang {kind.name}: no restart seen (see {out})")
    result = {"hung_rank_ended": hung["ended"] - last,
              "all_restarted": max(t for t, _ in round1) - last,
              "all_ready": max(r for _, r in round1) - last}
    if status.exists():
        data = json.loads(status.read_text())
        event = next(e for e in data["events"] if e["kind"] == "hang" and e["rank"] == 1)
        result["stop_latency"] = event["stop_latency"]
        result["timeouts"] = data.get("timeouts")
    match = re.search(r"fault tolerance (\{.*?\});", log.read_text(errors="replace"))
    if match:  # ftslurm's launcher logs its settings in force at start
        result["effective_config"] = ast.literal_eval(match.group(1))
    if (out / "effective_config.json").exists():
        result["effective_config"] = json.loads((out / "effective_config.json").read_text())
    return result


def bench_hang(tmp: Path, kinds: list[Launcher], repeats: int) -> dict[str, Any]:
    fault_tolerant = [k for k in kinds if k.ft_options]
    runs: dict[str, list[dict[str, Any]]] = {k.name: [] for k in fault_tolerant}
    for i in range(repeats):
        for kind in fault_tolerant:
            runs[kind.name].append(_hang_once(tmp, kind, i))

    def figure(key: str, names: Iterable[str]) -> dict[str, Any]:
        per = {n: summary([r[key] for r in runs[n]]) for n in names}
        return {**per, "ratios": ratios({n: s["median"] for n, s in per.items()})}

    report: dict[str, Any] = {
        "timeout_s": HANG_TIMEOUT, "initial_timeout_s": HANG_INITIAL_TIMEOUT,
        "check_interval_s": CHECK_INTERVAL, "monitor_interval_s": MONITOR_INTERVAL,
        "last_heartbeat_to_hung_rank_ended_s": figure("hung_rank_ended", runs),
        "last_heartbeat_to_all_restarted_s": figure("all_restarted", runs),
        "last_heartbeat_to_all_ready_s": figure("all_ready", runs),
        "ftslurm_last_heartbeat_to_stop_s": {
            n: summary([r["stop_latency"] for r in rs]) for n, rs in runs.items()
            if n.startswith("ftslurm")
        },
        "targets_s": {"ftslurm_last_heartbeat_to_stop": HANG_TIMEOUT + 0.5,
                      "last_heartbeat_to_all_restarted": HANG_TIMEOUT + 1.5},
        "torchrun": "no hang detection: a hung rank blocks the job until SLURM's time limit",
    }
    report["effective_settings"] = {
        n: {**runs[n][0].get("effective_config", {}),
            **({"timeouts_in_status_file": runs[n][0]["timeouts"]} if "timeouts" in runs[n][0]
               else {})}
        for n in runs
    }
    return report


def _idle_once(tmp: Path, kind: Launcher, i: int, ranks: int, window: float) -> dict[str, float]:
    marker = tmp / f"idle-{kind.name}-{i}"
    log = tmp / f"idle-{kind.name}-{i}.log"
    cmd = kind.command(ranks, IDLE_TIMEOUT, IDLE_INITIAL_TIMEOUT, "idle", str(marker))
    with open(log, "wb") as out:
        # The launcher's own output goes to a file, as in a SLURM job (the tee has a real sink).
        proc = subprocess.Popen(cmd, env=kind.env(tmp), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + 600
            while not marker.exists() or len(marker.read_text().splitlines()) < ranks:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"idle {kind.name}: ranks did not start (see {log})")
                time.sleep(0.2)
            rank_pids = {int(row.split()[1]) for row in marker.read_text().splitlines()}
            time.sleep(2.0)  # let the launch settle before the measurement window
            side = launcher_side(proc.pid, rank_pids)
            before = _cpu_seconds(side), _cpu_seconds([proc.pid]), _cpu_seconds(rank_pids)
            t0 = time.monotonic()
            time.sleep(window)
            after = _cpu_seconds(side), _cpu_seconds([proc.pid]), _cpu_seconds(rank_pids)
            elapsed = time.monotonic() - t0
            if proc.poll() is not None:
                raise RuntimeError(f"idle {kind.name}: the launcher ended early (see {log})")
        finally:
            _kill_session(proc)
    return {"side": 100 * (after[0] - before[0]) / elapsed,
            "process": 100 * (after[1] - before[1]) / elapsed,
            "ranks": 100 * (after[2] - before[2]) / elapsed,
            "processes": float(len(side))}


def bench_idle_cpu(tmp: Path, kinds: list[Launcher], ranks: int, window: float,
                   repeats: int) -> dict[str, Any]:
    kinds = list(kinds)
    nvrx = next((k for k in kinds if k.name == "nvrx"), None)
    if nvrx is not None:  # nvrx as shipped: 5 s heartbeat checks (and the 45/60 min timeouts)
        kinds.append(Launcher("nvrx_defaults", nvrx.exe, "nvrx", ft_options=False,
                              extra=list(nvrx.extra)))
    runs: dict[str, list[dict[str, float]]] = {k.name: [] for k in kinds}
    for i in range(repeats):
        for kind in kinds:
            runs[kind.name].append(_idle_once(tmp, kind, i, ranks, window))

    def median(key: str) -> dict[str, float]:
        return {n: round(statistics.median(r[key] for r in rs), 2) for n, rs in runs.items()}

    side = median("side")
    return {
        "ranks": ranks, "window_s": window, "repeats": repeats,
        "launcher_side_cpu_percent": side,
        "launcher_side_cpu_percent_runs": {n: [round(r["side"], 2) for r in rs]
                                           for n, rs in runs.items()},
        "launcher_process_cpu_percent": median("process"),
        "launcher_side_processes": median("processes"),
        "ranks_cpu_percent": median("ranks"),
        "ratios": ratios(side),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--idle-repeats", type=int, help="default: --repeats")
    parser.add_argument("--idle-ranks", type=int, default=32)
    parser.add_argument("--idle-window", type=float, default=10.0)
    parser.add_argument("--nvrx-venv", type=Path, default=ROOT / ".venv-nvrx",
                        help="venv made by scripts/install-peer-nvrx (default: %(default)s)")
    parser.add_argument("--only", choices=["startup", "hang", "idle"], action="append")
    parser.add_argument("--keep", type=Path, help="keep the logs and files in this directory")
    args = parser.parse_args()
    only = set(args.only or ["startup", "hang", "idle"])
    import torch

    report: dict[str, Any] = {"torch": torch.__version__, "cpus": os.cpu_count(),
                              "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
    nvrx_venv: Path | None = args.nvrx_venv
    if nvrx_venv is not None and (nvrx_venv / "bin" / "ft_launcher").exists():
        info = nvrx_info(nvrx_venv)
        report["nvidia_resiliency_ext"] = {"venv": str(nvrx_venv), **info}
    else:
        report["nvidia_resiliency_ext"] = "not measured: run scripts/install-peer-nvrx"
        nvrx_venv = None
    kinds = launchers(nvrx_venv)
    report["launchers"] = [k.name for k in kinds]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = args.keep or Path(tmp_name)
        tmp.mkdir(parents=True, exist_ok=True)
        if "startup" in only:
            report["startup_2_ranks"] = bench_startup(tmp, kinds, args.repeats)
        if "hang" in only:
            report["hang_2s_timeout"] = bench_hang(tmp, kinds, args.repeats)
        if "idle" in only:
            report["idle_cpu"] = bench_idle_cpu(tmp, kinds, args.idle_ranks, args.idle_window,
                                                args.idle_repeats or args.repeats)
    report["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
