"""The dev cluster script itself: a second, isolated instance goes up twice and down cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.slurm.dev_cluster import DEV_CLUSTER


def _script(*args: str, cluster_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DEV_CLUSTER), *args, "--dir", str(cluster_dir)],
        capture_output=True, text=True, timeout=600,
    )


def _processes_mentioning(needle: str) -> list[str]:
    """Live (non-zombie) processes whose command line or environment mentions `needle`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (proc / "environ").read_bytes()
        except (OSError, IndexError):
            continue
        if state != "Z" and (needle in cmdline or needle.encode() in environ):
            found.append(f"{proc.name}: {cmdline.strip()}")
    return found


@pytest.mark.slurm
@pytest.mark.slow
def test_up_twice_reuses_and_down_leaves_nothing(tmp_path: Path) -> None:
    cluster_dir = tmp_path / "cluster"
    args = ("--nodes", "1", "--base-port", "18800")
    first = _script("up", *args, cluster_dir=cluster_dir)
    try:
        assert first.returncode == 0, first.stderr
        second = _script("up", *args, cluster_dir=cluster_dir)
        assert second.returncode == 0, second.stderr
        assert "reusing the healthy cluster" in second.stdout

        env = {**os.environ, "SLURM_CONF": str(cluster_dir / "etc" / "slurm.conf")}
        ran = subprocess.run(["srun", "-N1", "hostname"], env=env, capture_output=True,
                             text=True, timeout=120)
        assert ran.returncode == 0, ran.stderr
        status = _script("status", "--json", cluster_dir=cluster_dir)
        assert status.returncode == 0 and '"healthy": true' in status.stdout
        assert _processes_mentioning(str(cluster_dir))
    finally:
        down = _script("down", cluster_dir=cluster_dir)
    assert down.returncode == 0, down.stderr
    assert _processes_mentioning(str(cluster_dir)) == []
    assert not cluster_dir.exists()
    assert str(cluster_dir) not in Path("/etc/hosts").read_text()


def test_env_prints_slurm_conf(tmp_path: Path) -> None:
    out = _script("env", cluster_dir=tmp_path).stdout
    assert out.strip() == f"export SLURM_CONF={tmp_path / 'etc' / 'slurm.conf'}"
