"""Learned timeouts written by several processes at once (the launchers of several nodes, the
Lightning callback's rank 0) into one file: the merge under the lock loses nothing.

No sleeps and no timing: the writers start on a "go" line from the test, and the result is
checked against what every writer wrote, whatever the interleaving was.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ftslurm.fault_tolerance.timeouts import HeartbeatTimeouts, load_learned
from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.timeout(180)

#: One writer: raises `initial` (or `subsequent`) step by step, the other timeout stays small.
_WRITER = """
import sys
from ftslurm.fault_tolerance.timeouts import HeartbeatTimeouts, save_learned
folder, which, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
print("ready", flush=True)
sys.stdin.readline()
for i in range(1, count + 1):
    if which == "initial":
        learned = HeartbeatTimeouts(float(i), 1.0)
    else:
        learned = HeartbeatTimeouts(1.0, float(i))
    kept = save_learned(folder, learned, source=which)
    assert (kept.initial if which == "initial" else kept.subsequent) == i, kept
print("done", flush=True)
"""


def test_two_writers_at_once_lose_nothing(tmp_path: Path) -> None:
    """Without the lock a writer could write back what it read before the other one's write and
    take that one's larger value away; with it the file ends with both maxima."""
    count = 200
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), which, str(count)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
        for which in ("initial", "subsequent")
    ]
    try:
        for writer in writers:  # both are ready before either starts writing
            assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
        for writer in writers:
            assert writer.stdin is not None
            writer.stdin.write("go\n")
            writer.stdin.flush()
        outputs = [writer.communicate(timeout=150)[0] for writer in writers]
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
                writer.wait()
    assert [writer.returncode for writer in writers] == [0, 0], outputs
    assert outputs == ["done\n", "done\n"]
    assert load_learned(tmp_path) == HeartbeatTimeouts(float(count), float(count))
