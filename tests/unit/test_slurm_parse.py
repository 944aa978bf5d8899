"""Parsers of SLURM output, on recorded (rec_*) and hand-written (hand_*) outputs."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ftslurm.slurm.hostlist import HostlistError, compress_hostlist, expand_hostlist
from ftslurm.slurm.parse import (
    JobId,
    SlurmParseError,
    SubmittedJob,
    parse_exit_code,
    parse_job_id,
    parse_key_values,
    parse_node_events,
    parse_sacct,
    parse_sbatch_parsable,
    parse_scontrol_show_job,
    parse_scontrol_show_node,
    parse_state,
    parse_timestamp,
    record_from_scontrol,
    summarize,
)

FIXTURES = Path(__file__).parent / "fixtures" / "slurm"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


# ---------------------------------------------------------------- small fields

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("123", JobId("123")),
        ("123.batch", JobId("123", step="batch")),
        ("123.extern", JobId("123", step="extern")),
        ("123.0", JobId("123", step="0")),
        ("123_4", JobId("123", array_task="4")),
        ("123_4.batch", JobId("123", array_task="4", step="batch")),
        ("123_[1-3]", JobId("123", array_task="[1-3]")),
        ("123_[1-3%2]", JobId("123", array_task="[1-3%2]")),
        ("123+0", JobId("123", het_offset=0)),
        ("123+1.0", JobId("123", het_offset=1, step="0")),
    ],
)
def test_parse_job_id_forms(text: str, expected: JobId) -> None:
    parsed = parse_job_id(text)
    assert parsed == expected
    assert str(parsed) == text


@pytest.mark.parametrize("text", ["", "abc", "12a", "123_", "123.", "_4"])
def test_parse_job_id_rejects_garbage(text: str) -> None:
    with pytest.raises(SlurmParseError):
        parse_job_id(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("123\n", SubmittedJob("123")),
        ("123;cluster1\n", SubmittedJob("123", "cluster1")),
        ("sbatch: warning: something odd\n77\n", SubmittedJob("77")),
    ],
)
def test_parse_sbatch_parsable(text: str, expected: SubmittedJob) -> None:
    assert parse_sbatch_parsable(text) == expected


def test_parse_sbatch_parsable_without_id_raises() -> None:
    with pytest.raises(SlurmParseError, match="no job id"):
        parse_sbatch_parsable("sbatch: error: Batch job submission failed\n")


def test_exit_code_and_signal() -> None:
    assert parse_exit_code("3:0") == (3, 0)
    assert parse_exit_code("0:15") == (0, 15)
    assert parse_exit_code("") == (None, None)
    with pytest.raises(SlurmParseError):
        parse_exit_code("x:y")


def test_state_with_canceller_and_suffix() -> None:
    assert parse_state("CANCELLED by 0") == ("CANCELLED", 0)
    assert parse_state("CANCELLED by 1000") == ("CANCELLED", 1000)
    assert parse_state("COMPLETING+") == ("COMPLETING", None)
    assert parse_state("PREEMPTED") == ("PREEMPTED", None)


def test_times() -> None:
    assert parse_timestamp("2024-05-01T10:00:01") == datetime(2024, 5, 1, 10, 0, 1)
    assert parse_timestamp("Unknown") is None
    assert parse_timestamp("None") is None
    with pytest.raises(SlurmParseError, match="SLURM_TIME_FORMAT"):
        parse_timestamp("Wed 10:00")


# ---------------------------------------------------------------- hostlists

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("n1", ("n1",)),
        ("n[1-2]", ("n1", "n2")),
        ("n[1,3-4]", ("n1", "n3", "n4")),
        ("gpu[01,09-11],cpu7", ("gpu01", "gpu09", "gpu10", "gpu11", "cpu7")),
        ("r[1-2]n[1-2]", ("r1n1", "r1n2", "r2n1", "r2n2")),
        ("None assigned", ()),
        ("(null)", ()),
        ("", ()),
    ],
)
def test_expand_hostlist(text: str, expected: tuple[str, ...]) -> None:
    assert expand_hostlist(text) == expected


@pytest.mark.parametrize("text", ["n[1-2", "n1-2]", "n[a-b]", "n[3-1]", "n1,,n2"])
def test_expand_hostlist_rejects_malformed(text: str) -> None:
    with pytest.raises(HostlistError):
        expand_hostlist(text)


def test_compress_hostlist_is_compact() -> None:
    assert compress_hostlist(["n1", "n2", "n3", "n5", "gpu01", "gpu02", "login"]) == (
        "n[1-3,5],gpu[01-02],login"
    )
    assert compress_hostlist([]) == ""


_hosts = st.builds(
    lambda prefix, number, width: f"{prefix}{number:0{width}d}",
    st.sampled_from(["n", "gpu", "r1n", "node-", ""]),
    st.integers(min_value=0, max_value=120),
    st.integers(min_value=1, max_value=3),
) | st.sampled_from(["login", "head-a"])


@given(st.lists(_hosts, max_size=30))
def test_hostlist_round_trip(hosts: list[str]) -> None:
    assert expand_hostlist(compress_hostlist(hosts)) == tuple(hosts)


# ---------------------------------------------------------------- sacct

def test_sacct_requeued_runs_are_numbered_and_steps_attached() -> None:
    records = parse_sacct(fixture("hand_sacct_requeued.txt"))
    allocations = [r for r in records if not r.is_step]
    assert [(r.state, r.restart_index) for r in allocations] == [
        ("PREEMPTED", 0), ("TIMEOUT", 1), ("PENDING", 2)
    ]
    first_run_steps = {r.step for r in records if r.is_step and r.restart_index == 0}
    assert first_run_steps == {"batch", "extern", "0"}
    assert allocations[0].nodes == ("n1", "n2")
    assert allocations[2].nodes == ()
    assert allocations[2].reason == "BeginTime"
    assert allocations[2].start is None and allocations[2].end is None

    summary = summarize(records)["40"]
    assert summary.state == "PENDING"
    assert summary.runs == 3
    assert summary.steps == ()
    assert [r.state for r in summary.earlier_runs] == ["PREEMPTED", "TIMEOUT"]


def test_sacct_states_exit_codes_arrays_and_het_jobs() -> None:
    summaries = summarize(parse_sacct(fixture("hand_sacct_states.txt")))
    assert summaries["41"].allocation.state == "CANCELLED"
    assert summaries["41"].allocation.cancelled_by == 0
    node_fail = summaries["42"]
    assert node_fail.state == "NODE_FAIL"
    assert node_fail.allocation.nodes == ("gpu01", "gpu03", "gpu04")
    assert {s.step: s.signal for s in node_fail.steps} == {"batch": 9, "0": 9}
    assert summaries["43"].state == "OUT_OF_MEMORY"
    failed = summaries["44"]
    assert (failed.allocation.exit_code, failed.allocation.signal) == (1, 0)
    assert {s.step: (s.exit_code, s.signal) for s in failed.steps} == {
        "batch": (139, 0), "0": (0, 11)
    }
    assert summaries["50_1"].state == "COMPLETED"
    assert summaries["50_1"].allocation.raw_id == "51"
    assert summaries["50_2"].state == "RUNNING"
    assert summaries["50_[3-5%2]"].allocation.reason == "JobArrayTaskLimit"
    assert summaries["60+1"].allocation.partition == "urgent"
    assert summaries["70"].allocation.name == "a|b name"


def test_sacct_wrong_field_count_raises() -> None:
    with pytest.raises(SlurmParseError, match="sacct fields"):
        parse_sacct("1|2|3\n")


def test_sacct_bad_node_list_is_a_parse_error() -> None:
    line = "1|1|batch|RUNNING|None|0:0|n[1-|2024-05-01T10:00:00|Unknown|Unknown|1|x\n"
    with pytest.raises(SlurmParseError, match="hostlist"):
        parse_sacct(line)


# ---------------------------------------------------------------- scontrol

def test_key_values_keep_spaces_in_values() -> None:
    pairs = parse_key_values("JobId=1 Command=/tmp/run dir/x.sh TRES=cpu=2,node=1 Power=")
    assert pairs == {
        "JobId": "1", "Command": "/tmp/run dir/x.sh", "TRES": "cpu=2,node=1", "Power": ""
    }


def test_scontrol_show_job_records() -> None:
    jobs = parse_scontrol_show_job(fixture("hand_scontrol_show_job.txt"))
    assert jobs[0]["WorkDir"] == "/tmp/run dir"
    records = {r.allocation_id: r for r in map(record_from_scontrol, jobs)}
    requeued = records["40"]
    assert (requeued.state, requeued.reason, requeued.restart_index) == ("PENDING", "BeginTime", 2)
    assert requeued.nodes == ()
    task = records["44_1"]
    assert (task.state, task.exit_code, task.nodes, task.raw_id) == (
        "FAILED", 3, ("n1", "n2"), "45"
    )
    assert records["44_[2-3%1]"].state == "PENDING"
    assert records["47"].source == "scontrol"


def test_scontrol_no_jobs() -> None:
    assert parse_scontrol_show_job("No jobs in the system\n") == []


# ---------------------------------------------------------------- recorded on the dev cluster

def test_recorded_sbatch_parsable() -> None:
    assert parse_sbatch_parsable(fixture("rec_sbatch_parsable.txt")) == SubmittedJob("2")


def test_recorded_sacct_failed_preempted_array() -> None:
    summaries = summarize(parse_sacct(fixture("rec_sacct_D.txt")))
    failed = summaries["2"]
    assert (failed.state, failed.allocation.exit_code, failed.allocation.nodes) == (
        "FAILED", 3, ("n1", "n2")
    )
    assert {s.step: (s.state, s.exit_code) for s in failed.steps} == {
        "batch": ("FAILED", 3), "0": ("COMPLETED", 0)
    }
    preempted = summaries["3"]
    assert [r.state for r in preempted.earlier_runs] == ["PREEMPTED"]
    assert (preempted.state, preempted.allocation.restart_index) == ("PENDING", 1)
    assert preempted.steps == ()  # the batch step belongs to the preempted run
    assert summaries["4_1"].state == "COMPLETED"
    assert summaries["4_[2-3%1]"].allocation.reason == "JobArrayTaskLimit"
    assert summaries["6"].allocation.partition == "urgent"


def test_recorded_sacct_cancelled() -> None:
    summaries = summarize(parse_sacct(fixture("rec_sacct_cancelled.txt")))
    running_cancelled = summaries["8"]
    assert (running_cancelled.state, running_cancelled.allocation.cancelled_by) == ("CANCELLED", 0)
    assert {s.step: s.signal for s in running_cancelled.steps} == {"batch": 15, "0": 0}
    pending_cancelled = summaries["3"]
    assert (pending_cancelled.state, pending_cancelled.allocation.start) == ("CANCELLED", None)
    assert pending_cancelled.runs == 2


def test_recorded_scontrol_show_job() -> None:
    jobs = parse_scontrol_show_job(fixture("rec_scontrol_show_job.txt"))
    records = {r.allocation_id: r for r in map(record_from_scontrol, jobs)}
    assert (records["2"].state, records["2"].exit_code, records["2"].nodes) == (
        "FAILED", 3, ("n1", "n2")
    )
    assert (records["3"].state, records["3"].reason, records["3"].restart_index) == (
        "PENDING", "BeginTime", 1
    )
    assert records["4_1"].raw_id == "5"
    assert records["4_3"].state == "PENDING"


def test_recorded_placeholder_record_is_flagged() -> None:
    records = parse_sacct(fixture("rec_sacct_placeholder.txt"))
    assert [r.is_placeholder for r in records] == [True, False, False]
    assert not any(r.is_placeholder for r in parse_sacct(fixture("rec_sacct_D.txt")))


def test_scontrol_show_node_states_and_reasons() -> None:
    text = (
        "NodeName=n1 Arch=x86_64 CoresPerSocket=1 CPUAlloc=2 State=MIXED ThreadsPerCore=1 "
        "Partitions=batch,urgent\n"
        "NodeName=n2 Arch=x86_64 State=DOWN* ThreadsPerCore=1 Partitions=batch,urgent "
        "Reason=slurmd killed by test [root@2026-11-28T21:10:03]\n"
        "NodeName=n3 State=IDLE+DRAIN Reason=bad gpu [root@2026-11-28T21:10:03]\n"
        "NodeName=n4 State=ALLOCATED+DRAIN\n"
    )
    nodes = {node.name: node for node in parse_scontrol_show_node(text)}
    assert nodes["n1"].state == "MIXED" and not nodes["n1"].unusable
    assert nodes["n2"].reason == "slurmd killed by test [root@2026-11-28T21:10:03]"
    assert [n for n, node in nodes.items() if node.unusable] == ["n2", "n3", "n4"]
    assert parse_scontrol_show_node("") == []


def test_sacctmgr_node_events() -> None:
    # rec: `sacctmgr -n -P show event Nodes=n1,n2,n3 ... format=NodeName,TimeStart,TimeEnd,State,
    # Reason` on the dev cluster after `scontrol update NodeName=n2 State=DOWN Reason=...`
    # (ReturnToService=2 brought it back within the second); the hand-written lines add a
    # cluster-wide event (no node), a node still down (no end) and a reason with a `|`.
    text = ("n2|2026-11-29T00:01:40|2026-11-29T00:01:40|DOWN|test-nodefail\n"
            "|2026-11-29T00:00:00|Unknown|CLUSTER|cluster registered\n"
            "n3|2026-11-29T00:02:00|Unknown|DRAIN|bad dimm | ecc\n\n")
    events = parse_node_events(text)
    assert [(e.node, e.state, e.reason) for e in events] == [
        ("n2", "DOWN", "test-nodefail"), ("n3", "DRAIN", "bad dimm | ecc")]
    assert events[0].start == datetime(2026, 11, 29, 0, 1, 40) and events[1].end is None
    with pytest.raises(SlurmParseError, match="expected 5"):
        parse_node_events("n2|2026-11-29T00:01:40|DOWN\n")
