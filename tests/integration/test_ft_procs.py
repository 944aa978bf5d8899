"""Stack dumps and termination of real processes."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from ftslurm.fault_tolerance.procs import (
    dump_stacks,
    dump_stacks_all,
    process_alive,
    terminate,
)

CHILD = """
import faulthandler, signal, sys, threading
faulthandler.register(signal.SIGUSR2, file=sys.stderr, all_threads=True)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
def library_thread(ready):  # like a C++ library thread that blocks every signal for its life
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
    ready.set()
    threading.Event().wait()
ready = threading.Event()
threading.Thread(target=library_thread, args=(ready,), daemon=True).start()
ready.wait()
def stuck_right_here():
    print("ready", flush=True)
    threading.Event().wait()
stuck_right_here()
"""


def test_dump_then_terminate_with_sigkill_after_grace(tmp_path: Path) -> None:
    err = tmp_path / "stderr"
    with open(err, "w") as handle:
        proc = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE,
                                stderr=handle, start_new_session=True, text=True)
    assert proc.stdout.readline().strip() == "ready"
    assert dump_stacks(proc.pid, signal.SIGUSR2, timeout=10.0)
    assert "stuck_right_here" in err.read_text()
    # SIGTERM is ignored, so the grace runs out and SIGKILL follows.
    assert terminate(proc.pid, signal.SIGTERM, grace=0.2) == "killed"
    assert proc.wait() == -signal.SIGKILL
    assert not process_alive(proc.pid)
    assert terminate(proc.pid, signal.SIGTERM, grace=0.2) == "gone"


def test_several_processes_are_dumped_at_once(tmp_path: Path) -> None:
    procs, errs = [], []
    for index in range(2):
        errs.append(tmp_path / f"stderr-{index}")
        with open(errs[-1], "w") as handle:
            procs.append(subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE,
                                          stderr=handle, start_new_session=True, text=True))
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        gone = procs[0].pid + 10**7  # no such process: reported, not waited for
        done = dump_stacks_all([proc.pid for proc in procs] + [gone], signal.SIGUSR2,
                               timeout=10.0)
        assert done == {procs[0].pid: True, procs[1].pid: True, gone: False}
        assert all("stuck_right_here" in err.read_text() for err in errs)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
