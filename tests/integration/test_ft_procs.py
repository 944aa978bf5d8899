"""Stack dumps and termination of real processes."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from ftslurm.fault_tolerance.procs import dump_stacks, process_alive, terminate

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
