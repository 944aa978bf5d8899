"""The HTML page of `ftslurm report --html` (chain/report_page.py), on accounting documents built by
hand: three attempts on two nodes (a preemption, a crash after an in-place restart for a hang,
one still running), a progress curve that drops back, hostile strings and an empty run. No
process is started."""

from __future__ import annotations

import json
import re
from typing import Any

from ftslurm.chain.goodput import AttemptCost, Eta, Restart, RunCost
from ftslurm.chain.report_page import render_page

T0 = 1_700_000_000.0
NODES = ["node-a", "node-b"]


def _round(start_at: float, first_step: int, last_step: int, attempt: int, rnd: int,
           rate: float = 1.0) -> list[list[float]]:
    """A restart round's progress points: one every 10 steps at `rate` steps/s."""
    return [[start_at + (step - first_step) / rate, step, attempt, rnd]
             for step in range(first_step, last_step + 1, 10)]


def sample_doc() -> dict[str, Any]:
    """Attempt 1 (both nodes): trains 0..400, restarts in place for a hang (100 steps redone),
    trains 300..580 and is preempted after its checkpoint at 480. Attempt 2 resumes at 481 and
    crashes after its checkpoint at 880; attempt 3 (one node) resumes at 881, still running."""
    a1 = AttemptCost(
        attempt=1, job_id="1001", nodes=list(NODES), outcome="preempted", cause="preemption",
        eligible_at=T0, started_at=T0 + 60, ended_at=T0 + 960, queue_s=60.0, allocated_s=900.0,
        allocated_node_s=1800.0, startup_s=60.0, productive_s=600.0, lost_s=200.0,
        lost_steps=200, restart_s=100.0, stop_s=60.0, first_progress_at=T0 + 120,
        last_progress_at=T0 + 900, first_step=0, last_step=580, checkpointed_step=480,
        restarts=[Restart(at=T0 + 520, cause="hang", gap_s=100.0, lost_s=100.0,
                          lost_steps=100)])
    a2 = AttemptCost(
        attempt=2, job_id="1002", nodes=list(NODES), outcome="failed", cause="crash",
        eligible_at=T0 + 960, started_at=T0 + 1200, ended_at=T0 + 1800, queue_s=240.0,
        allocated_s=600.0, allocated_node_s=1200.0, startup_s=50.0, productive_s=400.0,
        lost_s=100.0, lost_steps=100, restart_s=0.0, stop_s=50.0, first_progress_at=T0 + 1250,
        last_progress_at=T0 + 1750, first_step=481, last_step=981, checkpointed_step=880)
    a3 = AttemptCost(
        attempt=3, job_id="1003", nodes=["node-a"], outcome=None, cause="running",
        eligible_at=T0 + 1800, started_at=T0 + 1900, ended_at=None, queue_s=100.0,
        allocated_s=400.0, allocated_node_s=400.0, startup_s=40.0, productive_s=340.0,
        lost_s=0.0, lost_steps=0, restart_s=0.0, stop_s=20.0, first_progress_at=T0 + 1940,
        last_progress_at=T0 + 2280, first_step=881, last_step=1221)
    curve = (_round(T0 + 120, 0, 400, 1, 0) + _round(T0 + 620, 300, 580, 1, 1)
             + _round(T0 + 1250, 481, 981, 2, 0) + _round(T0 + 1940, 881, 1221, 3, 0))
    cost = RunCost(
        run_dir="/runs/demo", run_state="running", generated_at=T0 + 2300, progress_known=True,
        total_steps=2000, last_step=1221,
        totals={"allocated_s": 1900.0, "allocated_node_s": 3400.0, "queue_s": 400.0,
                "restarts": 1.0, "startup_s": 150.0, "productive_s": 1340.0, "lost_s": 300.0,
                "restart_s": 100.0, "stop_s": 130.0, "goodput": 1340 / 1900},
        lost_by_cause={"preemption": 400.0, "crash": 250.0, "hang": 200.0, "start": 120.0},
        eta=Eta(finish_at=T0 + 4000, remaining_steps=779, steps_per_s=1.0, goodput=0.58,
                basis="1 steps/s while training, goodput 58% so far"),
        attempts=[a1, a2, a3], curve=curve)
    # Through JSON, as `ftslurm report --json` would hand it over.
    doc: dict[str, Any] = json.loads(json.dumps(cost.to_json()))
    return doc


def _element(page: str, element_id: str) -> str:
    match = re.search(rf'<svg id="{element_id}".*?</svg>', page, re.S)
    assert match, f"no <svg id={element_id}> in the page"
    return match.group(0)


def test_page_has_timeline_and_curve_with_shapes() -> None:
    page = render_page(sample_doc())
    assert page.startswith("<!DOCTYPE html>")
    timeline = _element(page, "timeline")
    assert timeline.count('<g class="attempt"') == 3
    # Every part of attempt 1 is drawn, on both nodes' rows.
    for part in ("queue", "startup", "train", "lost", "restart", "stop"):
        assert timeline.count(f'class="seg {part}"') >= 2, part
    assert timeline.count('class="marker"') == 5  # 2 + 2 + 1 node rows
    for node in NODES:
        assert f">{node}<" in timeline
    curve = _element(page, "progress-curve")
    assert curve.count("<polyline") == 4  # (1, 0), (1, 1), (2, 0), (3, 0)
    assert 'class="drop"' in curve  # the curve falls back where work was redone
    assert 'class="lostband"' in curve
    assert re.search(r">\d\d:\d\d:\d\d</text>", curve)  # time ticks
    assert ">1,000</text>" in curve  # step ticks


def test_header_tables_and_causes() -> None:
    page = render_page(sample_doc())
    assert "/runs/demo" in page and "running" in page
    assert "70.5%" in page  # goodput 1340 / 1900
    assert "0.94 node-hours" in page  # 3400 node-seconds
    assert "ETA" in page and "779 steps left" in page
    for cause in ("preemption", "crash", "running", "hang", "start"):
        assert f">{cause}<" in page, cause
    for part in ("queue wait", "start-up", "productive", "lost work (redone)",
                 "in-place restarts", "stopping"):
        assert part in page
    assert 'id="attempts"' in page and page.count("<tr><td>") >= 3
    assert "Progress is not known" not in page


def test_progress_unknown_says_lost_work_is_unknown() -> None:
    doc = sample_doc()
    doc["progress_known"] = False
    doc["curve"] = []
    for attempt in doc["attempts"]:
        for key in ("first_progress_at", "last_progress_at", "startup_s", "productive_s",
                    "lost_s", "stop_s"):
            attempt[key] = None
        attempt["restarts"] = []
    page = render_page(doc)
    assert "lost work are unknown" in page
    assert 'class="seg unknown"' in _element(page, "timeline")
    assert 'id="progress-curve"' not in page and "No progress reported yet" in page


def test_hostile_strings_are_escaped() -> None:
    hostile = "<script>alert(1)</script>"
    doc = sample_doc()
    doc["run_dir"] = '/runs/"quoted" & <b>bold</b>'
    doc["attempts"][0]["nodes"] = [hostile, "node-b"]
    doc["attempts"][1]["cause"] = hostile
    doc["attempts"][1]["job_id"] = "'><img src=x onerror=alert(1)>"
    doc["lost_by_cause"] = {hostile: 5.0}
    doc["eta"]["basis"] = hostile
    page = render_page(doc)
    assert "<script" not in page and "<img" not in page and "<b>bold" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&quot;quoted&quot; &amp;" in page


def test_garbage_fields_do_not_raise() -> None:
    doc = sample_doc()
    doc["attempts"][0]["started_at"] = "yesterday"
    doc["attempts"][1]["restarts"] = [{"at": None}, "x"]
    doc["curve"].append(["x", None, 1, 0])
    doc["totals"] = None
    page = render_page(doc)
    assert _element(page, "timeline").count('<g class="attempt"') == 2


def test_empty_document_says_nothing_yet() -> None:
    for doc in ({}, {"run_dir": "/runs/new", "run_state": "running", "attempts": [],
                     "curve": [], "totals": {}, "lost_by_cause": {}, "progress_known": False}):
        page = render_page(doc)
        assert "Nothing yet" in page
        assert "<svg" not in page
        assert page.rstrip().endswith("</html>")


def test_page_is_self_contained() -> None:
    page = render_page(sample_doc())
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"<(script|link|img|iframe)\b", page)
    assert not re.search(r"\b(src|href)\s*=", page)
    assert "url(" not in page.replace("url(#hatch)", "")
