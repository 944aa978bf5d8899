"""`ftslurm ls` rows (`chain/fleet.py`): finding runs under directories, what a row says, and
when a kept row (`summary.json`) stands in for the run's files and when it must be read again."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ftslurm import cli
from ftslurm.chain import fleet
from ftslurm.chain.fleet import RUNNING_ROW_TTL_S, cached_row, find_runs, run_row
from ftslurm.chain.ledger import Ledger
from ftslurm.chain.outcome import Outcome
from ftslurm.chain.policy import ChainConfig
from ftslurm.chain.settings import ChainSettings
from ftslurm.progress import ProgressPoint, format_line
from ftslurm.rundir import RunDir


def make_run(run_dir: Path, *, sweep_dir: Path | None = None) -> Ledger:
    ChainSettings(
        run_dir=str(run_dir), backend="slurm", mode="self", script=str(run_dir / "job.sbatch"),
        workdir=str(run_dir), job_name="t", flag_file=str(run_dir / "finished.flag"),
        config=ChainConfig(max_failures=3), owner_uid=0, bin_dir="/usr/bin",
        sweep_dir=str(sweep_dir) if sweep_dir else None).save()
    return Ledger.create(run_dir, spec_fingerprint="sha256:t", run_id=run_dir.name)


def start_attempt(ledger: Ledger, number: int, job: str) -> None:
    ledger.reserve(number)
    ledger.record_submitted(number, job)
    ledger.record_start(number, job, nodes=["n1"], requeue_count=0, progress=None)


def report(run_dir: Path, attempt: int, steps: range, at: float) -> None:
    path = RunDir(run_dir).step_log(attempt)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        for step in steps:
            handle.write(format_line(ProgressPoint(at + step, step, None, 1000)))


def test_runs_are_found_under_directories_but_not_inside_runs(tmp_path: Path) -> None:
    make_run(tmp_path / "a")
    make_run(tmp_path / "sweep" / "LR=1")
    make_run(tmp_path / "sweep" / "LR=2")
    (tmp_path / "a" / "logs" / "nested").mkdir(parents=True)
    make_run(tmp_path / "a" / "logs" / "nested")  # inside a run: not listed
    (tmp_path / ".hidden").mkdir()
    make_run(tmp_path / ".hidden" / "x")
    assert find_runs([tmp_path]) == [tmp_path / "a", tmp_path / "sweep" / "LR=1",
                                     tmp_path / "sweep" / "LR=2"]
    assert find_runs([tmp_path / "sweep" / "LR=1"]) == [tmp_path / "sweep" / "LR=1"]


def test_a_row_says_state_attempts_cause_and_progress(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    ledger = make_run(run_dir)
    start_attempt(ledger, 1, "11")
    now = time.time()
    report(run_dir, 1, range(1, 50), now - 100)
    ledger.record_end(1, outcome=Outcome.FAILED, job_id="11", source="job", reason="exit 1",
                      exit_code=1, progress=49)
    start_attempt(ledger, 2, "12")
    ledger.reserve(3)
    ledger.record_submitted(3, "13")
    row = run_row(run_dir, use_cache=False)
    assert (row.state, row.attempts, row.failures_left) == ("running", 2, 2)
    assert row.last_cause == "exit 1" and (row.job_id, row.job_status) == ("12", "running")
    assert row.last_step == 49 and row.total_steps == 1000 and row.stalled is None


def test_a_waiting_sweep_point_is_waiting_not_stalled(tmp_path: Path) -> None:
    make_run(tmp_path / "p", sweep_dir=tmp_path)
    row = run_row(tmp_path / "p", use_cache=False)
    assert (row.state, row.stalled, row.attempts) == ("waiting", None, 0)
    # an ordinary run with nothing in flight is stalled, and says how to repair it
    make_run(tmp_path / "q")
    assert run_row(tmp_path / "q", use_cache=False).stalled["repair"].startswith(
        "ftslurm watch --once")


def test_an_ended_runs_row_is_kept_until_a_file_changes(tmp_path: Path, monkeypatch) -> None:
    run_dir = tmp_path / "run"
    ledger = make_run(run_dir)
    start_attempt(ledger, 1, "11")
    report(run_dir, 1, range(1, 20), time.time() - 50)
    ledger.record_end(1, outcome=Outcome.FINISHED, job_id="11", source="job", reason="done",
                      exit_code=0, progress=19)
    ledger.record_run_end("finished", "done")
    first = run_row(run_dir)
    assert first.state == "finished" and RunDir(run_dir).summary.is_file()
    computed = []
    monkeypatch.setattr(fleet, "_compute_row", lambda *a, **k: computed.append(1) or first)
    assert run_row(run_dir) == first and computed == []  # read from summary.json
    ledger.record_resume("test", "sha256:t")  # the ledger changed: read again
    run_row(run_dir)
    assert computed == [1]


def test_a_running_rows_progress_may_be_a_minute_old_but_not_its_state(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    ledger = make_run(run_dir)
    start_attempt(ledger, 1, "11")
    t = time.time()
    report(run_dir, 1, range(1, 10), t - 30)
    assert run_row(run_dir).last_step == 9
    report(run_dir, 1, range(10, 20), t - 30)  # more progress: the kept row stands in
    assert cached_row(run_dir) is not None and run_row(run_dir).last_step == 9
    # ...for RUNNING_ROW_TTL_S
    assert cached_row(run_dir, now=time.time() + RUNNING_ROW_TTL_S + 1) is None
    # a change of state is seen at once
    ledger.record_end(1, outcome=Outcome.FAILED, job_id="11", source="job", reason="exit 1",
                      exit_code=1, progress=19)
    assert cached_row(run_dir) is None
    row = run_row(run_dir)
    assert row.last_step == 19 and row.last_cause == "exit 1"


def test_ls_json_and_table(tmp_path: Path, capsys) -> None:
    make_run(tmp_path / "sweep" / "LR=1", sweep_dir=tmp_path / "sweep")
    assert cli.main(["ls", str(tmp_path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["runs"]
    assert [(Path(r["run_dir"]).name, r["state"]) for r in rows] == [("LR=1", "waiting")]
    # nothing of its sweep in flight: nothing will start it
    assert rows[0]["stalled"]["repair"] == f"ftslurm watch --once {tmp_path / 'sweep'}"
    start_attempt(make_run(tmp_path / "sweep" / "LR=2", sweep_dir=tmp_path / "sweep"), 1, "7")
    assert cli.main(["ls", str(tmp_path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["runs"]
    assert [(r["state"], r["stalled"]) for r in rows] == [("waiting", None), ("running", None)]
    assert cli.main(["ls", str(tmp_path)]) == 0
    assert "2 runs: 1 running, 1 waiting" in capsys.readouterr().out
    assert cli.main(["ls", str(tmp_path / "missing")]) == 2
