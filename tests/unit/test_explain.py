"""`ftslurm explain` and the cause column of `ftslurm status`, through `ftslurm.cli.main` on run
directories written by hand (no scheduler is asked, no process started)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftslurm import cli, exit_codes
from ftslurm.chain.incident import build_incident, write_incident
from ftslurm.chain.ledger import Ledger
from ftslurm.chain.outcome import Action, Outcome, RunStatus
from ftslurm.chain.policy import Decision
from ftslurm.rundir import RunDir
from tests.helpers import slurm_run
from tests.unit.test_incident import rank_end, write_crash_scenario, write_status


@pytest.fixture
def failed_run(tmp_path: Path) -> Path:
    """A SLURM run whose attempt 1 (job 7, nodes n1 n2) failed: rank 3 raised ValueError("boom"),
    ranks 0-2 failed after it with connection errors. No incident record written yet."""
    run_dir = slurm_run(tmp_path)
    ledger = Ledger.open(run_dir)
    ledger.record_start(1, "7", nodes=["n1", "n2"])
    ledger.record_end(1, outcome=Outcome.FAILED, reason="exit code 1", job_id="7", exit_code=1)
    write_crash_scenario(run_dir)
    return run_dir


def test_explain_tells_the_culprit_its_error_and_victims(failed_run: Path, capsys) -> None:
    assert cli.main(["explain", str(failed_run)]) == exit_codes.OK
    out = capsys.readouterr().out
    assert "attempt 1 (job 7): failed, exit code 1" in out
    assert "culprit: rank 3 @ n2 (local rank 1), exit 1" in out
    assert "  ValueError: boom" in out
    assert "    | ValueError: boom" in out  # the tail of its stderr
    assert ("victims: 3 rank(s) failed after it: rank 0 @ n1, rank 1 @ n1, rank 2 @ n2 "
            "(within 1.7 s); 3 with connection/collective errors") in out
    assert "signature: ValueError: boom" in out
    assert "built now from the run directory" in out  # no record was written
    assert not RunDir(failed_run).incident(1).exists()  # explain writes nothing


def test_explain_json_prints_the_record(failed_run: Path, capsys) -> None:
    assert cli.main(["explain", str(failed_run), "--json"]) == exit_codes.OK
    record = json.loads(capsys.readouterr().out)
    assert record["format"] == "ftslurm.incident"
    assert record["written_by"] == "explain"
    assert (record["attempt"], record["job_id"], record["outcome"]) == (1, "7", "failed")
    assert record["culprit"]["rank"] == 3
    assert [v["rank"] for v in record["victims"]] == [0, 1, 2]


def test_explain_reads_the_written_record(failed_run: Path, capsys) -> None:
    record = build_incident(failed_run, 1, view=Ledger.open(failed_run).state().attempt(1),
                            written_by="chain-end")
    write_incident(failed_run, record)
    assert cli.main(["explain", str(failed_run), "--attempt", "1", "--json"]) == exit_codes.OK
    assert json.loads(capsys.readouterr().out) == record
    assert cli.main(["explain", str(failed_run)]) == exit_codes.OK
    assert "built now" not in capsys.readouterr().out


def test_explain_a_hang_shows_the_hung_ranks_stack(tmp_path: Path, capsys) -> None:
    run_dir = slurm_run(tmp_path)
    ledger = Ledger.open(run_dir)
    ledger.record_start(1, "7", nodes=["n1"])
    ledger.record_end(1, outcome=Outcome.FAILED, reason="exit code 1", job_id="7", exit_code=1)
    stacks = {"0": "Thread 0x7f (most recent call first):\n  File \"/work/train.py\", line 71 "
                   "in main\n",
              "1": "Thread 0x7e (most recent call first):\n  File \"/work/data.py\", line 9 in "
                   "next_batch\n"}
    hang = {"time": 200.0, "node": "n1", "rank": 1, "local_rank": 1, "kind": "hang",
            "timeout": 120.0, "timeout_source": "learned", "since": 79.0, "stacks": stacks,
            "restart_count": 0}
    write_status(run_dir, 1, "n1", events=[hang], rank_ends=[
        rank_end(1, "n1", 200.5, cause="hang_stopped", exit_code=None, signal="SIGTERM")])
    assert cli.main(["explain", str(run_dir)]) == exit_codes.OK
    out = capsys.readouterr().out
    assert "culprit: rank 1 @ n1 (local rank 1), hung, stopped by its launcher" in out
    assert "hang: rank 1 @ n1 stopped heartbeating" in out
    assert "(timeout 120 s, learned)" in out
    assert "    | Thread 0x7e (most recent call first):" in out
    assert "next_batch" in out and "line 71" not in out  # only the hung rank's stack
    assert "the stacks of rank(s) 0 are in the record" in out


def test_explain_node_fail_without_launcher_files(tmp_path: Path, capsys) -> None:
    run_dir = slurm_run(tmp_path)
    ledger = Ledger.open(run_dir)
    ledger.record_start(1, "7", nodes=["n1", "n2"])
    ledger.record_end(1, outcome=Outcome.NODE_FAIL, reason="node failure", job_id="7",
                      exit_code=0, scheduler_state="NODE_FAIL", source="scheduler")
    assert cli.main(["explain", str(run_dir)]) == exit_codes.OK
    out = capsys.readouterr().out
    assert "culprit: a lost node (the scheduler named none)" in out
    assert "the scheduler's record and the job's log" in out
    assert "node n1:" not in out and "node n2:" not in out  # no node is blamed on a guess


def test_explain_refuses_an_unknown_run_dir_or_attempt(tmp_path: Path, failed_run: Path,
                                                       capsys) -> None:
    assert cli.main(["explain", str(tmp_path / "nope")]) == exit_codes.USAGE
    assert "no such run directory" in capsys.readouterr().err
    assert cli.main(["explain", str(tmp_path)]) == exit_codes.USAGE  # a folder, not a run
    assert "not a run directory" in capsys.readouterr().err
    assert cli.main(["explain", str(failed_run), "--attempt", "5"]) == exit_codes.USAGE
    assert "no attempt 5" in capsys.readouterr().err


def test_explain_before_any_attempt_ended(tmp_path: Path, capsys) -> None:
    run_dir = slurm_run(tmp_path)
    assert cli.main(["explain", str(run_dir)]) == exit_codes.USAGE
    assert "no attempt has ended yet" in capsys.readouterr().err
    # a running attempt can still be asked for: what its files say so far
    Ledger.open(run_dir).record_start(1, "7", nodes=["n1"])
    assert cli.main(["explain", str(run_dir), "--attempt", "1"]) == exit_codes.OK
    assert "not ended yet" in capsys.readouterr().out


def test_status_shows_the_cause_of_an_attempt_with_a_record(failed_run: Path, capsys) -> None:
    assert cli.main(["status", str(failed_run), "--no-sync", "--json"]) == exit_codes.OK
    [row] = json.loads(capsys.readouterr().out)["attempts"]
    assert row["cause"] is None and row["reason"] == "exit code 1"

    record = build_incident(failed_run, 1, view=Ledger.open(failed_run).state().attempt(1),
                            written_by="chain-end")
    write_incident(failed_run, record)
    assert cli.main(["status", str(failed_run), "--no-sync", "--json"]) == exit_codes.OK
    [row] = json.loads(capsys.readouterr().out)["attempts"]
    assert row["cause"] == "rank 3 @ n2: ValueError: boom"
    assert row["reason"] == "exit code 1"
    assert cli.main(["status", str(failed_run), "--no-sync"]) == exit_codes.OK
    assert "rank 3 @ n2: ValueError: boom" in capsys.readouterr().out


def test_explain_shows_the_chains_decision(failed_run: Path, capsys) -> None:
    decision = Decision(action=Action.STOP, reason="crash loop: attempts 1 and 2 failed alike",
                        run_status=RunStatus.FAILED, exclude_nodes=("n2",))
    record = build_incident(failed_run, 1, view=Ledger.open(failed_run).state().attempt(1),
                            decision=decision, written_by="chain-end")
    write_incident(failed_run, record)
    assert cli.main(["explain", str(failed_run)]) == exit_codes.OK
    assert ("decision: stop: crash loop: attempts 1 and 2 failed alike; counted as a failure; "
            "excluding n2") in capsys.readouterr().out
