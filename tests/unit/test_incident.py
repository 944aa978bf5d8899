# ruff: noqa: E501  (the output fixtures are real lines, kept whole: their length is the point)
"""Incident records (chain/incident.py) and the traceback reader (chain/tracebacks.py), on run
directories written by hand: launcher status files with rank ends, per-rank output files with
realistic tracebacks. No process is started."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ftslurm.backends.base import JobState
from ftslurm.chain import incident
from ftslurm.chain.incident import (
    build_incident,
    cause_line,
    incident_cause,
    read_incident,
    repeated_hang_nodes,
    write_incident,
)
from ftslurm.chain.outcome import Action, AttemptStatus, Outcome, RunStatus
from ftslurm.chain.policy import Decision
from ftslurm.chain.runstate import AttemptView
from ftslurm.chain.tracebacks import (
    find_tracebacks,
    first_cause,
    is_connection_error,
    last_error,
    split_prefix,
    tail,
)
from ftslurm.rundir import RunDir

# -- realistic outputs -----------------------------------------------------------------------------

CULPRIT_ERR = """\
/venv/lib/python3.11/site-packages/torch/utils/data/dataloader.py:557: UserWarning: This DataLoader will create 8 worker processes in total.
  warnings.warn(_create_warning_msg(
Traceback (most recent call last):
  File "/work/train.py", line 88, in <module>
    main()
  File "/work/train.py", line 66, in main
    loss = step(model, batch)
           ^^^^^^^^^^^^^^^^^^
  File "/work/train.py", line 40, in step
    raise ValueError("boom")
ValueError: boom
"""

GLOO_VICTIM_ERR = """\
Traceback (most recent call last):
  File "/work/train.py", line 88, in <module>
    main()
  File "/work/train.py", line 71, in main
    dist.all_reduce(loss)
  File "/venv/lib/python3.11/site-packages/torch/distributed/c10d_logger.py", line 75, in wrapper
    return func(*args, **kwargs)
           ^^^^^^^^^^^^^^^^^^^^^
  File "/venv/lib/python3.11/site-packages/torch/distributed/distributed_c10d.py", line 2219, in all_reduce
    work.wait()
RuntimeError: [../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer [10.1.0.12]:47361
"""

NCCL_VICTIM_ERR = """\
[rank1]: Traceback (most recent call last):
[rank1]:   File "/work/train.py", line 88, in <module>
[rank1]:     main()
[rank1]:   File "/work/train.py", line 71, in main
[rank1]:     dist.all_reduce(loss)
[rank1]:   File "/venv/lib/python3.11/site-packages/torch/distributed/distributed_c10d.py", line 2288, in all_reduce
[rank1]:     work = group.allreduce([tensor], opts)
[rank1]:            ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
[rank1]: torch.distributed.DistBackendError: NCCL error in: ../torch/csrc/distributed/c10d/ProcessGroupNCCL.cpp:1970, remote process exited or there was a network error, NCCL version 2.20.5
[rank1]: ncclRemoteError: A call failed possibly due to a network error or a remote process exiting prematurely.
[rank1]: Last error:
[rank1]: socketProgress: Connection closed by remote peer n2<35512>
"""

PEER_LOST_ERR = """\
Traceback (most recent call last):
  File "/work/train.py", line 60, in main
    if shutdown.should_stop():
       ^^^^^^^^^^^^^^^^^^^^^^
  File "/venv/lib/python3.11/site-packages/ftslurm/fault_tolerance/shutdown.py", line 120, in should_stop
    raise PeerLostError(f"a peer did not join the stop vote within {self.peer_timeout} s")
ftslurm.fault_tolerance.shutdown.PeerLostError: a peer did not join the stop vote within 30.0 s
"""

CHAINED_ERR = """\
Traceback (most recent call last):
  File "/work/data.py", line 12, in load
    return records[key]
           ~~~~~~~^^^^^
KeyError: 'shard-7'

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "/work/train.py", line 20, in <module>
    load("shard-7")
  File "/work/data.py", line 14, in load
    raise RuntimeError(f"cannot load {key}") from error
RuntimeError: cannot load shard-7
"""

DURING_HANDLING_ERR = """\
Traceback (most recent call last):
  File "/work/train.py", line 9, in <module>
    open("/ckpt/last.pt")
FileNotFoundError: [Errno 2] No such file or directory: '/ckpt/last.pt'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "/work/train.py", line 11, in <module>
    start_from_scratch()
  File "/work/train.py", line 4, in start_from_scratch
    assert config.allow_scratch, "no checkpoint and scratch runs are off"
AssertionError: no checkpoint and scratch runs are off
"""

MULTILINE_ERR = """\
Traceback (most recent call last):
  File "/work/train.py", line 30, in <module>
    check(batch)
  File "/work/train.py", line 22, in check
    raise AssertionError(f"shapes differ:\\n  got {got}\\n  want {want}")
AssertionError: shapes differ:
  got (4, 8)
  want (4, 16)
"""

MESSAGE_ON_NEXT_LINE_ERR = """\
Traceback (most recent call last):
  File "/venv/bin/torchrun", line 8, in <module>
    sys.exit(main())
torch.distributed.elastic.multiprocessing.errors.ChildFailedError: 
============================================================
train.py FAILED
------------------------------------------------------------
"""  # noqa: W291 (torch prints the colon and a space, the message starts on the next line)

#: A job log of a torchrun-style launch: every rank's lines tee'd with a `[N]:` prefix, the
#: victims' connection errors printed before the culprit's error, torchrun's report last.
JOB_LOG = """\
[0]:step 10 loss 0.52
[3]:step 10 loss 0.50
[0]:Traceback (most recent call last):
[0]:  File "/work/train.py", line 71, in main
[3]:Traceback (most recent call last):
[0]:    dist.all_reduce(loss)
[3]:  File "/work/train.py", line 40, in step
[0]:RuntimeError: [../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer [10.1.0.12]:47361
[3]:    raise ValueError("boom")
[3]:ValueError: boom
Traceback (most recent call last):
  File "/venv/bin/torchrun", line 8, in <module>
    sys.exit(main())
torch.distributed.elastic.multiprocessing.errors.ChildFailedError: 
============================================================
"""  # noqa: W291


# -- the traceback reader ------------------------------------------------------------------------


def test_the_last_traceback_gives_type_message_and_line() -> None:
    error = last_error(CULPRIT_ERR)
    assert error is not None
    assert error.to_json() == {"type": "ValueError", "message": "boom", "line": "ValueError: boom"}


@pytest.mark.parametrize(("text", "line"), [
    (CHAINED_ERR, "RuntimeError: cannot load shard-7"),
    (DURING_HANDLING_ERR, "AssertionError: no checkpoint and scratch runs are off"),
    (MULTILINE_ERR, "AssertionError: shapes differ:"),
    (MESSAGE_ON_NEXT_LINE_ERR, "torch.distributed.elastic.multiprocessing.errors."
                               "ChildFailedError: " + "=" * 60),
    (NCCL_VICTIM_ERR, "torch.distributed.DistBackendError: NCCL error in: ../torch/csrc/"
                      "distributed/c10d/ProcessGroupNCCL.cpp:1970, remote process exited or "
                      "there was a network error, NCCL version 2.20.5"),
    ("Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
     "KeyboardInterrupt\n", "KeyboardInterrupt"),
])
def test_chained_prefixed_and_multiline_errors(text: str, line: str) -> None:
    error = last_error(text)
    assert error is not None and error.line == line


def test_a_chain_counts_as_one_traceback() -> None:
    assert [tb.error.type for tb in find_tracebacks(CHAINED_ERR)] == ["RuntimeError"]
    assert [tb.error.type for tb in find_tracebacks(CULPRIT_ERR + CHAINED_ERR)] == [
        "ValueError", "RuntimeError"]


def test_no_traceback_or_a_cut_one_gives_nothing() -> None:
    assert last_error("") is None
    assert last_error("step 1 loss 0.9\nstep 2 loss 0.8\nKilled\n") is None
    cut = "Traceback (most recent call last):\n  File \"/work/train.py\", line 3, in <module>\n"
    assert last_error(cut) is None


def test_rank_prefixes() -> None:
    assert split_prefix("[rank3]: Traceback (most recent call last):") == (
        3, "Traceback (most recent call last):")
    assert split_prefix("[3]:  File \"x.py\"") == (3, " File \"x.py\"")
    assert split_prefix("[default12]: ValueError: boom") == (12, "ValueError: boom")
    assert split_prefix(" 3: ValueError: boom") == (3, "ValueError: boom")
    assert split_prefix("ValueError: boom") == (None, "ValueError: boom")


@pytest.mark.parametrize(("text", "connection"), [
    (GLOO_VICTIM_ERR, True), (NCCL_VICTIM_ERR, True), (PEER_LOST_ERR, True),
    ("Traceback (most recent call last):\n  File \"x\", line 1\nConnectionResetError: "
     "[Errno 104] Connection reset by peer\n", True),
    ("Traceback (most recent call last):\n  File \"x\", line 1\ntorch.distributed."
     "DistBackendError: [Rank 0] Watchdog caught collective operation timeout: "
     "WorkNCCL(SeqNum=20, OpType=ALLREDUCE) ran for 600000 milliseconds before timing out.\n",
     True),
    (CULPRIT_ERR, False), (CHAINED_ERR, False), (MULTILINE_ERR, False),
])
def test_connection_errors_are_told_from_the_others(text: str, connection: bool) -> None:
    assert is_connection_error(last_error(text)) is connection


def test_interleaved_ranks_in_a_job_log_are_read_apart() -> None:
    found = find_tracebacks(JOB_LOG)
    assert [(tb.rank, tb.error.short_type) for tb in found] == [
        (0, "RuntimeError"), (3, "ValueError"), (None, "ChildFailedError")]
    cause = first_cause(found)
    assert cause is not None and (cause.rank, cause.error.line) == (3, "ValueError: boom")


def test_tail_keeps_the_last_lines() -> None:
    assert tail("a\nb\nc\n\n\n", 2) == ["b", "c"]
    assert tail("", 5) == []


# -- building run directories by hand ------------------------------------------------------------


def rank_end(rank: int, node: str, at: float, *, cause: str = "exited", exit_code: int | None = 1,
             signal: str | None = None, restart: int = 0, local_rank: int | None = None,
             run_dir: Path | None = None, attempt: int = 1) -> dict[str, Any]:
    """One `rank_ends` entry, naming the rank's files the way the launcher does."""
    paths = RunDir(run_dir) if run_dir is not None else None
    return {
        "rank": rank, "local_rank": rank % 2 if local_rank is None else local_rank,
        "node": node, "restart_count": restart, "exit_code": exit_code, "signal": signal,
        "time": at,
        "stdout": str(paths.rank_log(attempt, rank, restart, "out")) if paths else None,
        "stderr": str(paths.rank_log(attempt, rank, restart, "err")) if paths else None,
        "cause": cause,
    }


def write_status(run_dir: Path, attempt: int, node: str, *, state: str = "failed",
                 rank_ends: list[dict[str, Any]] | None = None,
                 events: list[dict[str, Any]] | None = None, restart_count: int = 0) -> None:
    doc: dict[str, Any] = {
        "node": node, "group_rank": 0, "launcher_pid": 1234, "state": state, "exit_code": 1,
        "restart_count": restart_count, "max_restarts": 3, "started_at": 1.0,
        "updated_at": 2.0, "events": events or [],
    }
    if rank_ends is not None:
        doc["rank_ends"] = rank_ends
    path = RunDir(run_dir).launcher_status(attempt, node)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def write_rank_output(run_dir: Path, attempt: int, rank: int, *, err: str = "", out: str = "",
                      restart: int = 0) -> None:
    paths = RunDir(run_dir)
    for stream, text in (("err", err), ("out", out)):
        path = paths.rank_log(attempt, rank, restart, stream)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def write_crash_scenario(run_dir: Path, attempt: int = 1) -> None:
    """2 nodes x 2 ranks. Round 0: rank 0 failed (OSError), everything restarted. Round 1: rank 3
    on n2 raises ValueError("boom"); ranks 0-2 fail after it with connection errors."""
    round0 = {
        "n1": [rank_end(0, "n1", 50.0, run_dir=run_dir, attempt=attempt),
               rank_end(1, "n1", 50.2, cause="stopped_by_launcher", exit_code=None,
                        signal="SIGTERM", run_dir=run_dir, attempt=attempt)],
        "n2": [rank_end(r, "n2", 50.3, cause="stopped_by_launcher", exit_code=None,
                        signal="SIGTERM", run_dir=run_dir, attempt=attempt) for r in (2, 3)],
    }
    write_rank_output(run_dir, attempt, 0, err="Traceback (most recent call last):\n"
                      "  File \"/work/train.py\", line 3, in <module>\nOSError: disk full\n")
    round1 = {
        "n1": [rank_end(0, "n1", 101.5, restart=1, run_dir=run_dir, attempt=attempt),
               rank_end(1, "n1", 101.6, restart=1, run_dir=run_dir, attempt=attempt)],
        "n2": [rank_end(3, "n2", 100.0, restart=1, run_dir=run_dir, attempt=attempt),
               rank_end(2, "n2", 101.7, restart=1, run_dir=run_dir, attempt=attempt)],
    }
    outputs = {0: GLOO_VICTIM_ERR, 1: NCCL_VICTIM_ERR, 2: PEER_LOST_ERR, 3: CULPRIT_ERR}
    for rank, err in outputs.items():
        write_rank_output(run_dir, attempt, rank, err=err, out=f"rank {rank} step 10\n",
                          restart=1)
    for node in ("n1", "n2"):
        crash = {"time": 100.0, "node": node, "rank": 3 if node == "n2" else 0, "kind": "crash",
                 "exit_code": 1, "restart_count": 1, "action": "give_up"}
        write_status(run_dir, attempt, node, rank_ends=round0[node] + round1[node],
                     events=[crash], restart_count=1)


def failed_view(attempt: int = 1, **fields: Any) -> AttemptView:
    values: dict[str, Any] = {
        "number": attempt, "tag": f"unit.{attempt}", "status": AttemptStatus.ENDED,
        "job_id": "7", "nodes": ("n1", "n2"), "started_at": 90.0, "ended_at": 105.0,
        "outcome": Outcome.FAILED, "reason": "exit code 1", "exit_code": 1,
        "counted_failure": True,
    }
    values.update(fields)
    return AttemptView(**values)


# -- the record ----------------------------------------------------------------------------------


def test_the_first_failing_rank_is_the_culprit_and_later_ones_its_victims(tmp_path: Path) -> None:
    write_crash_scenario(tmp_path)
    decision = Decision(action=Action.SUBMIT, reason="attempt 2: 2 failures left", attempt=2)
    record = build_incident(tmp_path, 1, view=failed_view(), decision=decision,
                            written_by="chain-end")

    assert record["format"] == "ftslurm.incident" and record["version"] == 1
    assert (record["attempt"], record["job_id"], record["written_by"]) == (1, "7", "chain-end")
    assert (record["outcome"], record["reason"]) == ("failed", "exit code 1")
    # the last round of every node only, by time
    assert [(end["rank"], end["restart_count"]) for end in record["ranks"]] == [
        (3, 1), (0, 1), (1, 1), (2, 1)]
    culprit = record["culprit"]
    assert culprit["basis"] == "rank_ends"
    assert (culprit["rank"], culprit["node"], culprit["local_rank"]) == (3, "n2", 1)
    assert (culprit["exit_code"], culprit["signal"], culprit["restart_count"]) == (1, None, 1)
    assert culprit["error"] == {"type": "ValueError", "message": "boom",
                                "line": "ValueError: boom"}
    assert culprit["tail"][-1] == "ValueError: boom" and len(culprit["tail"]) <= 20
    assert culprit["log"] == str(RunDir(tmp_path).rank_log(1, 3, 1, "err"))
    assert [(v["rank"], v["node"]) for v in record["victims"]] == [(0, "n1"), (1, "n1"),
                                                                    (2, "n2")]
    assert all(is_connection_error(v["error"]) for v in record["victims"])
    assert record["signature"] == "ValueError: boom"
    assert record["node_evidence"] == []
    assert record["hang"] is None
    assert record["scheduler"] is None  # neither a job nor a scheduler state in the view
    assert record["decision"] == {"action": "submit", "reason": "attempt 2: 2 failures left",
                                  "run_status": None, "counted": True, "excluded_nodes": []}
    assert cause_line(record) == "rank 3 @ n2: ValueError: boom"
    json.dumps(record)  # JSON all the way down


def test_a_tie_prefers_the_rank_whose_error_is_not_a_connection_error(tmp_path: Path) -> None:
    # rank 0's connection error was recorded 0.3 s before rank 3's ValueError: launchers poll,
    # and clocks differ; within the tie window the real error wins.
    write_rank_output(tmp_path, 1, 0, err=GLOO_VICTIM_ERR)
    write_rank_output(tmp_path, 1, 3, err=CULPRIT_ERR)
    write_status(tmp_path, 1, "n1", rank_ends=[rank_end(0, "n1", 100.0)])
    write_status(tmp_path, 1, "n2", rank_ends=[rank_end(3, "n2", 100.3)])
    record = build_incident(tmp_path, 1, view=failed_view(), written_by="watch")
    assert record["culprit"]["rank"] == 3
    assert [v["rank"] for v in record["victims"]] == [0]

    # far apart, the first failure stays the culprit whatever its error
    write_status(tmp_path, 1, "n2", rank_ends=[rank_end(3, "n2", 105.0)])
    record = build_incident(tmp_path, 1, view=failed_view(), written_by="watch")
    assert record["culprit"]["rank"] == 0
    assert record["signature"] == record["culprit"]["error"]["line"]


def test_a_hang_with_stacks(tmp_path: Path) -> None:
    stacks = {"0": 'Thread 0x7f (most recent call first):\n  File "/work/train.py", line 71 in '
                   "main\n",
              "1": 'Thread 0x7e (most recent call first):\n  File "/work/data.py", line 9 in '
                   "next_batch\n  File \"/work/train.py\", line 60 in main\n"}
    hang = {"time": 200.0, "node": "n1", "rank": 1, "local_rank": 1, "kind": "hang",
            "heartbeat_age": 121.0, "timeout": 120.0, "phase": "subsequent",
            "timeout_source": "learned", "since": 79.0, "stacks": stacks, "restart_count": 0,
            "action": "give_up"}
    ends = [rank_end(1, "n1", 200.5, cause="hang_stopped", exit_code=None, signal="SIGTERM"),
            rank_end(0, "n1", 201.0, cause="stopped_by_launcher", exit_code=None,
                     signal="SIGTERM")]
    write_status(tmp_path, 1, "n1", rank_ends=ends, events=[hang])
    record = build_incident(tmp_path, 1, view=failed_view(nodes=("n1",)), written_by="chain-end")

    culprit = record["culprit"]
    assert (culprit["rank"], culprit["node"], culprit["cause"]) == (1, "n1", "hang_stopped")
    # rank 0 did not fail; its launcher stopped it because rank 1 hung: a victim of the culprit
    assert [(v["rank"], v["cause"]) for v in record["victims"]] == [(0, "stopped_by_launcher")]
    assert record["hang"] == {"rank": 1, "node": "n1", "since": 79.0, "timeout": 120.0,
                              "timeout_source": "learned", "phase": "subsequent",
                              "stacks": stacks}
    assert record["signature"] == "hang"
    assert cause_line(record) == "rank 1 @ n1: hung (timeout 120 s)"

    # the same node hangs again in the next attempt: hang_repeat evidence against it
    write_status(tmp_path, 2, "n1", rank_ends=ends, events=[hang])
    again = build_incident(tmp_path, 2, view=failed_view(2, nodes=("n1",)), previous=record,
                           written_by="chain-end")
    assert repeated_hang_nodes(record, again) == ["n1"]
    assert [(e["node"], e["kind"]) for e in again["node_evidence"]] == [("n1", "hang_repeat")]
    assert repeated_hang_nodes(None, again) == []


def test_node_fail_of_a_multi_node_job_that_names_no_node_blames_none(tmp_path: Path) -> None:
    # Blaming both nodes would be a guess: it excludes a healthy node, and on a small cluster
    # it leaves too few nodes for the next attempt.
    job = JobState(job_id="7", state="NODE_FAIL", exit_code=0, nodes=("n1", "n2"))
    view = failed_view(outcome=Outcome.NODE_FAIL, reason="node failure", exit_code=0,
                       counted_failure=False, scheduler_state="NODE_FAIL")
    record = build_incident(tmp_path, 1, job=job, view=view, written_by="watch")

    assert record["scheduler"] == {"state": "NODE_FAIL", "reason": None, "exit_code": 0,
                                   "signal": None, "nodes": ["n1", "n2"]}
    assert record["culprit"]["basis"] == "scheduler"
    assert record["culprit"]["rank"] is None and record["culprit"]["node"] is None
    assert record["node_evidence"] == []
    assert record["signature"] is None  # a lost node is not the workload's failure
    assert record["ranks"] == [] and record["victims"] == []
    assert cause_line(record) == "a node lost (NODE_FAIL; the scheduler did not say which)"


def test_node_fail_names_the_node_the_scheduler_reports(tmp_path: Path) -> None:
    # Both launchers were killed with the job: only the scheduler tells the nodes apart.
    write_status(tmp_path, 1, "n1", state="running", rank_ends=[])
    write_status(tmp_path, 1, "n2", state="running", rank_ends=[])
    job = JobState(job_id="7", state="NODE_FAIL", nodes=("n1", "n2"),
                   node_problems=(("n2", "DOWN (bad dimm) at 00:01:40"),))
    record = build_incident(tmp_path, 1, job=job, written_by="watch")
    assert record["node_evidence"] == [{
        "node": "n2", "kind": "node_fail",
        "detail": "the job ended in NODE_FAIL; the scheduler reports the node DOWN (bad dimm) "
                  "at 00:01:40"}]
    assert record["scheduler"]["node_problems"] == {"n2": "DOWN (bad dimm) at 00:01:40"}
    assert record["culprit"]["node"] == "n2"
    assert cause_line(record) == "node n2 lost (NODE_FAIL)"


def test_node_fail_with_every_launcher_silent_blames_none(tmp_path: Path) -> None:
    write_status(tmp_path, 1, "n1", state="running", rank_ends=[])
    write_status(tmp_path, 1, "n2", state="running", rank_ends=[])
    job = JobState(job_id="7", state="NODE_FAIL", nodes=("n1", "n2"), node_problems=())
    record = build_incident(tmp_path, 1, job=job, written_by="watch")
    assert record["node_evidence"] == []


def test_node_fail_names_the_node_whose_launcher_went_silent(tmp_path: Path) -> None:
    write_rank_output(tmp_path, 1, 0, err=GLOO_VICTIM_ERR)
    write_status(tmp_path, 1, "n1", rank_ends=[rank_end(0, "n1", 100.0)])
    write_status(tmp_path, 1, "n2", state="running", rank_ends=[])
    job = JobState(job_id="7", state="NODE_FAIL", nodes=("n1", "n2"))
    record = build_incident(tmp_path, 1, job=job, written_by="watch")
    assert [(e["node"], e["kind"]) for e in record["node_evidence"]] == [("n2", "node_fail")]
    assert "its launcher never recorded an end" in record["node_evidence"][0]["detail"]
    assert record["culprit"]["node"] == "n2"
    assert [v["rank"] for v in record["victims"]] == [0]  # its connection error came from n2


def test_a_rank_killed_from_outside_is_node_evidence(tmp_path: Path) -> None:
    write_rank_output(tmp_path, 1, 1, err=GLOO_VICTIM_ERR)
    write_status(tmp_path, 1, "n1", rank_ends=[
        rank_end(1, "n1", 101.0),
        rank_end(0, "n1", 100.0, exit_code=None, signal="SIGKILL"),
    ])
    record = build_incident(tmp_path, 1, view=failed_view(nodes=("n1",)), written_by="watch")
    assert (record["culprit"]["rank"], record["culprit"]["signal"]) == (0, "SIGKILL")
    assert record["culprit"]["error"] is None
    assert [(e["node"], e["kind"]) for e in record["node_evidence"]] == [("n1", "external_kill")]
    assert record["signature"] == "SIGKILL"
    assert cause_line(record) == "rank 0 @ n1: killed by SIGKILL"

    # the time limit's SIGKILL after the grace is no culprit and no evidence
    timeout = failed_view(nodes=("n1",), outcome=Outcome.TIMEOUT, counted_failure=False)
    record = build_incident(tmp_path, 1, view=timeout, written_by="watch")
    assert record["culprit"] is None and record["victims"] == []
    assert record["node_evidence"] == [] and record["signature"] is None
    assert cause_line(record) is None


def test_launchers_without_rank_ends_fall_back_to_their_events(tmp_path: Path) -> None:
    write_rank_output(tmp_path, 1, 3, err=CULPRIT_ERR)
    write_rank_output(tmp_path, 1, 0, err=GLOO_VICTIM_ERR)
    crash = {"kind": "crash", "exit_code": 1, "restart_count": 0, "action": "give_up"}
    write_status(tmp_path, 1, "n1", events=[{**crash, "time": 101.0, "node": "n1", "rank": 0,
                                             "local_rank": 0}])
    write_status(tmp_path, 1, "n2", events=[{**crash, "time": 100.0, "node": "n2", "rank": 3,
                                             "local_rank": 1, "exit_code": -9}])
    record = build_incident(tmp_path, 1, view=failed_view(), written_by="chain-end")
    culprit = record["culprit"]
    assert culprit["basis"] == "events"
    assert (culprit["rank"], culprit["node"], culprit["signal"]) == (3, "n2", "SIGKILL")
    assert culprit["error"]["line"] == "ValueError: boom"
    assert [v["rank"] for v in record["victims"]] == [0]
    assert record["ranks"] == []


def test_without_launcher_evidence_the_job_log_is_read(tmp_path: Path) -> None:
    log = RunDir(tmp_path).job_log("7")
    log.parent.mkdir(parents=True)
    log.write_text(JOB_LOG)
    job = JobState(job_id="7", state="FAILED", exit_code=1, nodes=("n1",))
    record = build_incident(tmp_path, 1, job=job, view=failed_view(nodes=("n1",)),
                            written_by="chain-end")
    culprit = record["culprit"]
    assert culprit["basis"] == "scheduler"
    assert (culprit["rank"], culprit["node"]) == (3, "n1")
    assert culprit["error"]["line"] == "ValueError: boom"
    assert culprit["log"] == str(log) and culprit["tail"][-1].startswith("=====")
    assert record["signature"] == "ValueError: boom"
    assert cause_line(record) == "rank 3 @ n1: ValueError: boom"


def test_nothing_failed_gives_no_culprit(tmp_path: Path) -> None:
    write_status(tmp_path, 1, "n1", state="succeeded", rank_ends=[
        rank_end(0, "n1", 100.0, exit_code=0), rank_end(1, "n1", 100.1, exit_code=0)])
    view = failed_view(outcome=Outcome.STOPPED, reason="exit code 0", exit_code=0,
                       counted_failure=False)
    decision = Decision(action=Action.STOP, reason="finished", run_status=RunStatus.FINISHED)
    record = build_incident(tmp_path, 1, view=view, decision=decision, written_by="chain-end")
    assert record["culprit"] is None and record["signature"] is None
    assert len(record["ranks"]) == 2
    assert record["decision"]["run_status"] == "finished"
    assert record["decision"]["counted"] is False


def test_write_and_read(tmp_path: Path) -> None:
    write_crash_scenario(tmp_path)
    record = build_incident(tmp_path, 1, view=failed_view(), written_by="chain-end")
    path = write_incident(tmp_path, record)
    assert path == RunDir(tmp_path).incident(1)
    assert read_incident(tmp_path, 1) == record
    assert read_incident(tmp_path, 2) is None


@pytest.mark.parametrize("content", [
    "{not json", "[]", json.dumps({"format": "something.else", "version": 1}),
    json.dumps({"format": "ftslurm.incident", "version": 99}),
])
def test_unreadable_or_foreign_records_read_as_none(tmp_path: Path, content: str) -> None:
    path = RunDir(tmp_path).incident(1)
    path.parent.mkdir(parents=True)
    path.write_text(content)
    assert read_incident(tmp_path, 1) is None


def test_unreadable_files_are_no_evidence(tmp_path: Path) -> None:
    path = RunDir(tmp_path).launcher_status(1, "n1")
    path.parent.mkdir(parents=True)
    path.write_text("{torn")
    record = build_incident(tmp_path, 1, written_by="explain")
    assert record["culprit"] is None and record["ranks"] == []


def test_written_by_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="written_by"):
        build_incident(tmp_path, 1, written_by="somebody")


def test_only_the_first_victims_errors_are_read(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(incident, "MAX_VICTIM_ERRORS", 2)
    write_crash_scenario(tmp_path)
    record = build_incident(tmp_path, 1, view=failed_view(), written_by="watch")
    assert record["culprit"]["error"]["line"] == "ValueError: boom"
    assert [v["error"] is not None for v in record["victims"]] == [True, False, False]


def test_a_node_fail_outcome_without_a_scheduler_record(tmp_path: Path) -> None:
    view = failed_view(outcome=Outcome.NODE_FAIL, nodes=("n4",), counted_failure=False)
    record = build_incident(tmp_path, 1, view=view, written_by="explain")
    assert record["node_evidence"] == [{"node": "n4", "kind": "node_fail",
                                        "detail": "the job ended in a node failure"}]
    assert record["culprit"]["node"] == "n4" and record["signature"] is None


def test_the_cause_is_read_again_when_the_record_changes(tmp_path: Path) -> None:
    assert incident_cause(tmp_path, 1) is None
    write_crash_scenario(tmp_path)
    record = build_incident(tmp_path, 1, view=failed_view(), written_by="chain-end")
    write_incident(tmp_path, record)
    assert incident_cause(tmp_path, 1) == "rank 3 @ n2: ValueError: boom"
    record["culprit"]["error"] = None
    record["culprit"]["tail"] = ["a longer record, so that the file's size changes too"]
    write_incident(tmp_path, record)
    assert incident_cause(tmp_path, 1) == "rank 3 @ n2: exit 1"


def test_a_stack_waiting_in_torch_distributed_is_a_waiting_peer() -> None:
    from ftslurm.chain.tracebacks import waits_in_collective

    peer = ("Current thread 0x00007fd6 (most recent call first):\n"
            '  File "/v/site-packages/torch/distributed/distributed_c10d.py", line 3252 in '
            "all_reduce\n"
            '  File "/w/train.py", line 120 in main\n')
    stuck = ("Thread 0x1 (most recent call first):\n"
             '  File "/v/site-packages/torch/distributed/distributed_c10d.py", line 1 in x\n'
             "Current thread 0x00007fd7 (most recent call first):\n"
             '  File "/w/loader.py", line 7 in next_batch\n'
             '  File "/w/train.py", line 118 in main\n')
    assert waits_in_collective(peer) and not waits_in_collective(stuck)
    assert not waits_in_collective("")
