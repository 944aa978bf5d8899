"""The launcher on the real dev cluster: one launcher per node under `srun`, c10d rendezvous.

A rank on n2 stops heartbeating in the first run; its launcher dumps and kills it, the new
rendezvous round makes n1's launcher restart its ranks too, and all 4 ranks finish in restart 1.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from ftslurm import exit_codes

WORKLOAD = Path(__file__).parent.parent / "integration" / "workloads" / "ft_workload.py"

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(400)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_hang_on_n2_restarts_ranks_on_both_nodes(slurm_cluster, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    launcher = [
        sys.executable, "-m", "ftslurm.cli", "launch",
        "--nnodes=2", "--nproc-per-node=2", "--rdzv-backend=c10d",
        f"--rdzv-endpoint=n1:{_free_port()}", f"--rdzv-id={uuid.uuid4().hex[:12]}",
        "--max-restarts=2", "--monitor-interval=0.1",
        "--ft-rank-heartbeat-timeout=3", "--ft-initial-rank-heartbeat-timeout=120",
        f"--ft-status-file={tmp_path}/status.{{node}}.json",
        str(WORKLOAD), "--out", str(out), "--hang-on-node", "n2:0",
    ]
    srun = ["srun", "-N2", "--nodelist=n1,n2", "--ntasks-per-node=1", "--time=5",
            f"--chdir={tmp_path}", "--export=ALL", "--kill-on-bad-exit=0", *launcher]
    result = subprocess.run(srun, capture_output=True, text=True, timeout=360,
                            env={**os.environ, **slurm_cluster.env})
    assert result.returncode == exit_codes.OK, result.stdout + result.stderr

    started = [line.split() for line in (out / "started").read_text().splitlines()]
    finished = [line.split() for line in (out / "finished").read_text().splitlines()]
    # Every one of the 4 ranks ran in restart 0 and finished in restart 1, on both nodes.
    assert {(int(r), int(c)) for r, c, *_ in finished} == {(r, 1) for r in range(4)}
    assert {node for _, restart, _, node, *_ in started if restart == "1"} == {"n1", "n2"}

    n2 = json.loads((tmp_path / "status.n2.json").read_text())
    n1 = json.loads((tmp_path / "status.n1.json").read_text())
    assert any(e["kind"] == "hang" and e["node"] == "n2" for e in n2["events"])
    assert n1["restart_count"] == n2["restart_count"] == 1
    assert n1["state"] == n2["state"] == "succeeded"
