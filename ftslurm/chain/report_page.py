"""The HTML page of `ftslurm report --html`: one self-contained file (no script, no network; inline
CSS and SVG drawn here) showing a run's accounting (`RunCost.to_json()`, see chain/goodput.py):
a header, where the time went by part and by cause, a timeline of the attempts on their nodes,
the progress curve (step over wall time, one line per attempt and restart round, so redone work
shows as the curve dropping back) and a table of the attempts.

The document is read defensively (it may come from an older or hand-written file): a missing or
malformed field is shown as unknown, never raised on, and every string from it is escaped.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ftslurm.timefmt import clock, duration

__all__ = ["render_page"]

_PARTS = (("queue_s", "queue wait"), ("startup_s", "start-up"), ("productive_s", "productive"),
          ("lost_s", "lost work (redone)"), ("restart_s", "in-place restarts"),
          ("stop_s", "stopping"))
#: Timeline segment kinds: CSS class, legend text.
_SEGMENTS = (("queue", "queue wait"), ("startup", "start-up"), ("train", "training"),
             ("lost", "lost work (redone later)"), ("restart", "in-place restart"),
             ("stop", "stopping"), ("unknown", "allocated, no progress reported"))
_CAUSE_COLOR = {"crash": "#e03131", "hang": "#f76707", "preemption": "#ae3ec9",
                "stop": "#1c7ed6", "time limit": "#8d5524", "node failure": "#862e9c",
                "cancel": "#868e96", "finish": "#2b8a3e", "running": "#0b7285"}
_ATTEMPT_COLORS = ("#1c7ed6", "#e8590c", "#2b8a3e", "#ae3ec9", "#c2255c", "#0c8599",
                   "#5c940d", "#5f3dc4")
_WIDTH, _LEFT, _RIGHT = 980, 170, 30  # svg width, plot margins (px)
_ROW_H, _BAR_Y, _BAR_H = 34, 14, 14   # timeline row height, bar offset and height in a row

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;
max-width:1020px;color:#212529;padding:0 12px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.sub{color:#495057;margin:0 0 12px;word-break:break-all}
.facts{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.fact{border:1px solid #dee2e6;border-radius:6px;padding:6px 12px;min-width:120px}
.fact b{display:block;font-size:18px}.fact span{color:#495057;font-size:12px}
.note{background:#fff3bf;border:1px solid #ffe066;border-radius:6px;padding:6px 10px}
.empty{color:#495057;font-style:italic}
table{border-collapse:collapse;margin:4px 0 8px;font-size:13px}
th,td{border-bottom:1px solid #e9ecef;padding:3px 8px;text-align:right;vertical-align:top}
th,td{white-space:nowrap}th{background:#f1f3f5}td.l{white-space:normal}
td.nodes{max-width:260px;overflow-wrap:anywhere}small{color:#868e96}td.l,th.l{text-align:left}
.tables{display:flex;flex-wrap:wrap;gap:28px;align-items:flex-start}
.scroll{overflow-x:auto}
svg{display:block;max-width:100%;height:auto;font:11px system-ui,sans-serif}
svg text{fill:#343a40}.axis line,.grid{stroke:#ced4da}.grid{stroke-dasharray:2 3}
.legend{display:flex;flex-wrap:wrap;gap:6px 16px;font-size:12px;margin:6px 0 0 0}
.legend i{display:inline-block;width:14px;height:10px;margin-right:5px;vertical-align:-1px;
border-radius:2px}
.queue{fill:url(#hatch);stroke:#adb5bd;stroke-width:.5}
i.queue{background:repeating-linear-gradient(45deg,#ced4da 0 2px,#f8f9fa 2px 5px);
border:1px solid #adb5bd}
.startup{fill:#fab005}.train{fill:#40c057}.lost{fill:#fa5252}.restart{fill:#be4bdb}
.stop{fill:#74c0fc}.unknown{fill:#ced4da}
i.startup{background:#fab005}i.train{background:#40c057}i.lost{background:#fa5252}
i.restart{background:#be4bdb}i.stop{background:#74c0fc}i.unknown{background:#ced4da}
.marker{stroke:#fff;stroke-width:1}.now{stroke:#0b7285;stroke-dasharray:4 3}
.lostband{fill:#fa5252;fill-opacity:.13}i.lostband{background:#fa525233}
.curve{fill:none;stroke-width:2}.drop{stroke:#868e96;stroke-dasharray:3 3}
"""


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: object) -> float | None:
    """A finite number from the document, else None (bools, strings and NaN are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _seconds(value: object) -> str:
    number = _num(value)
    return "-" if number is None else f"{number:.1f}"


def _hms(at: float, fmt: str = "%H:%M:%S") -> str:
    return clock(at, fmt)


@dataclass(frozen=True)
class _Scale:
    """A linear map from [lo, hi] (data) to [px0, px1] (pixels)."""

    lo: float
    hi: float
    px0: float
    px1: float

    def __call__(self, value: float) -> float:
        span = self.hi - self.lo
        return self.px0 + (value - self.lo) / span * (self.px1 - self.px0) if span else self.px0


@dataclass(frozen=True)
class _Attempt:
    """The fields of one attempt the charts need, read once."""

    number: str
    nodes: list[str]
    cause: str
    eligible: float | None
    start: float
    end: float
    running: bool
    first: float | None
    last: float | None
    restarts: list[tuple[float, float, float, str]]  # at, gap_s, lost_s, cause
    tail_lost: float  # lost work at the end of the last round (redone by the next attempt)


def _attempts(doc: Mapping[str, Any]) -> list[_Attempt]:
    now = _num(doc.get("generated_at"))
    found = []
    for raw in _list(doc.get("attempts")):
        item = _map(raw)
        start = _num(item.get("started_at"))
        end = _num(item.get("ended_at"))
        running = end is None
        end = end if end is not None else now
        if start is None or end is None:
            continue
        restarts = []
        for r in (_map(x) for x in _list(item.get("restarts"))):
            at = _num(r.get("at"))
            if at is not None:
                restarts.append((at, max(0.0, _num(r.get("gap_s")) or 0.0),
                                 max(0.0, _num(r.get("lost_s")) or 0.0), str(r.get("cause", "?"))))
        lost = _num(item.get("lost_s")) or 0.0
        nodes = [str(n) for n in _list(item.get("nodes"))] or ["(node unknown)"]
        found.append(_Attempt(
            number=str(item.get("attempt", "?")), nodes=nodes, cause=str(item.get("cause", "?")),
            eligible=_num(item.get("eligible_at")), start=start, end=max(start, end),
            running=running, first=_num(item.get("first_progress_at")),
            last=_num(item.get("last_progress_at")), restarts=sorted(restarts),
            tail_lost=0.0 if running else max(0.0, lost - sum(r[2] for r in restarts))))
    return found


def _curve(doc: Mapping[str, Any]) -> list[tuple[float, float, str, str]]:
    """The curve's (time, step, attempt, round) points, in time order."""
    points = []
    for raw in _list(doc.get("curve")):
        row = _list(raw)
        if len(row) >= 4:
            at, step = _num(row[0]), _num(row[1])
            if at is not None and step is not None:
                points.append((at, step, str(row[2]), str(row[3])))
    return sorted(points, key=lambda p: p[0])


def _time_ticks(lo: float, hi: float) -> list[tuple[float, str]]:
    """Tick times at a round step (seconds to days) in local time, at most 7."""
    span = hi - lo
    steps = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
             43200, 86400, 172800, 604800)
    step = next((s for s in steps if span / s <= 7), 604800 * math.ceil(span / 604800 / 7))
    offset = time.localtime(lo).tm_gmtoff
    first = math.ceil((lo + offset) / step) * step - offset
    fmt = "%m-%d %H:%M" if span > 2 * 86400 else "%H:%M:%S"
    return [(t, _hms(t, fmt)) for t in _frange(first, hi, step)]


def _frange(start: float, stop: float, step: float) -> Iterable[float]:
    count = int((stop - start) // step) + 1 if stop >= start else 0
    return (start + i * step for i in range(count))


def _step_ticks(top: float) -> list[float]:
    """Integer ticks from 0 to `top` at a 1-2-5 step, about five of them."""
    raw = max(1.0, top / 5)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    return list(_frange(0.0, top, max(1.0, float(round(step)))))


def _rect(x0: float, x1: float, y: float, height: float, cls: str, tip: str) -> str:
    width = max(x1 - x0, 1.0)
    return (f'<rect class="seg {cls}" x="{x0:.1f}" y="{y:.1f}" width="{width:.1f}" '
            f'height="{height}"><title>{_esc(tip)}</title></rect>')


def _time_axis(scale: _Scale, y_top: float, y_axis: float) -> list[str]:
    out = [f'<g class="axis"><line x1="{scale.px0}" y1="{y_axis}" x2="{scale.px1}" '
           f'y2="{y_axis}"/>']
    for at, label in _time_ticks(scale.lo, scale.hi):
        x = scale(at)
        out.append(f'<line class="grid" x1="{x:.1f}" y1="{y_top}" x2="{x:.1f}" y2="{y_axis}"/>'
                   f'<line x1="{x:.1f}" y1="{y_axis}" x2="{x:.1f}" y2="{y_axis + 4}"/>'
                   f'<text x="{x:.1f}" y="{y_axis + 16}" text-anchor="middle">{label}</text>')
    out.append("</g>")
    return out


def _attempt_shapes(a: _Attempt, row_of: Mapping[str, int], scale: _Scale) -> tuple[str, str]:
    """One attempt's segments and its end markers (drawn last, over the next attempt's queue
    wait), on each of its nodes' rows."""
    name = f"attempt {a.number}"
    span = f"{_hms(a.start)}\u2013{_hms(a.end)}"
    segs: list[tuple[float, float, str, str]] = []  # start, end, class, tooltip
    if a.eligible is not None and a.eligible < a.start:
        segs.append((a.eligible, a.start, "queue", "queue wait"))
    if a.first is None or a.last is None:
        segs.append((a.start, a.end, "unknown", "allocated, no progress reported"))
    else:
        segs.append((a.start, a.first, "startup", "start-up"))
        cursor = a.first
        for at, gap, _, cause in a.restarts:
            segs.append((cursor, at, "train", "training"))
            segs.append((at, at + gap, "restart", f"in-place restart ({cause})"))
            cursor = at + gap
        segs.append((cursor, a.last, "train", "training"))
        for at, _, lost, cause in a.restarts:
            if lost > 0:
                segs.append((at - lost, at, "lost", f"lost work, redone after the {cause}"))
        if a.tail_lost > 0:
            segs.append((a.last - a.tail_lost, a.last, "lost",
                         f"lost work, redone after the {a.cause}"))
        segs.append((a.last, a.end, "stop", "running" if a.running else "stopping"))
    end_tip = f"{name} {'is running' if a.running else 'ended'}: {a.cause} at {_hms(a.end)}"
    out = [f'<g class="attempt" data-attempt="{_esc(a.number)}" data-cause="{_esc(a.cause)}">'
           f"<title>{_esc(f'{name} ({span}) on {len(a.nodes)} node(s): {a.cause}')}</title>"]
    markers = []
    for row_index, node in enumerate(dict.fromkeys(a.nodes)):
        y = 8 + row_of[node] * _ROW_H
        for start, end, cls, tip in segs:
            if end > start:
                text = f"{name} on {node}: {tip}, {_hms(start)}\u2013{_hms(end)} " \
                       f"({duration(end - start)})"
                out.append(_rect(scale(start), scale(end), y + _BAR_Y, _BAR_H, cls, text))
        x, mid = scale(a.end), y + _BAR_Y + _BAR_H / 2
        color = _CAUSE_COLOR.get(a.cause, "#495057")
        shape = (f"{x:.1f},{mid - 9:.1f} {x + 9:.1f},{mid:.1f} {x:.1f},{mid + 9:.1f}"
                 if a.running else
                 f"{x:.1f},{mid - 8:.1f} {x + 6:.1f},{mid:.1f} {x:.1f},{mid + 8:.1f} "
                 f"{x - 6:.1f},{mid:.1f}")
        markers.append(f'<polygon class="marker" data-attempt="{_esc(a.number)}" '
                       f'points="{shape}" fill="{color}"><title>{_esc(end_tip)}</title></polygon>')
        label = f"#{a.number} {a.cause}"
        x0 = scale(a.start)
        if row_index == 0 and x - x0 >= 6.5 * len(label):
            out.append(f'<text x="{x0 + 2:.1f}" y="{y + _BAR_Y - 3}">{_esc(label)}</text>')
    out.append("</g>")
    return "".join(out), "".join(markers)


def _domain(attempts: Sequence[_Attempt], curve: Sequence[tuple[float, float, str, str]]
            ) -> tuple[float, float]:
    times = [t for a in attempts for t in (a.eligible, a.start, a.end) if t is not None]
    times += [p[0] for p in curve]
    lo, hi = min(times), max(times)
    pad = max((hi - lo) * 0.01, 1.0)
    return lo - pad, hi + pad


def _timeline(attempts: Sequence[_Attempt], scale: _Scale, now: float | None) -> str:
    """The timeline SVG: one row per node, every attempt's parts on its nodes' rows."""
    nodes = list(dict.fromkeys(n for a in attempts for n in a.nodes))
    row_of = {node: index for index, node in enumerate(nodes)}
    axis_y = 8 + len(nodes) * _ROW_H + 4
    height = axis_y + 26
    out = [f'<svg id="timeline" role="img" aria-label="timeline of the attempts per node" '
           f'viewBox="0 0 {_WIDTH} {height}" width="{_WIDTH}" height="{height}">',
           '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
           'patternTransform="rotate(45)"><rect width="6" height="6" fill="#f8f9fa"/>'
           '<line x1="0" y1="0" x2="0" y2="6" stroke="#adb5bd" stroke-width="2.5"/>'
           "</pattern></defs>"]
    for node, index in row_of.items():
        y = 8 + index * _ROW_H
        if index % 2:
            out.append(f'<rect x="0" y="{y}" width="{_WIDTH}" height="{_ROW_H}" fill="#f8f9fa"/>')
        short = node if len(node) <= 24 else node[:23] + "\u2026"
        out.append(f'<text class="node" x="{_LEFT - 10}" y="{y + _BAR_Y + _BAR_H - 3}" '
                   f'text-anchor="end">{_esc(short)}<title>{_esc(node)}</title></text>')
    out += _time_axis(scale, 4, axis_y)
    shapes = [_attempt_shapes(a, row_of, scale) for a in attempts]
    out += [group for group, _ in shapes]
    out.append('<g class="markers">' + "".join(marks for _, marks in shapes) + "</g>")
    if now is not None and any(a.running for a in attempts):
        x = scale(now)
        out.append(f'<line class="now" x1="{x:.1f}" y1="4" x2="{x:.1f}" y2="{axis_y}">'
                   f"<title>now ({_hms(now)})</title></line>")
    out.append("</svg>")
    return "\n".join(out)


def _curve_svg(points: Sequence[tuple[float, float, str, str]], attempts: Sequence[_Attempt],
               scale: _Scale, total: float | None) -> str:
    """The progress curve SVG: step over time, one polyline per (attempt, restart round)."""
    top = max(p[1] for p in points)
    if total is not None and top < total <= 1.25 * top:
        top = total
    top = max(top, 1.0)
    y_top, y_bottom = 12, 232
    ys = _Scale(0.0, top * 1.04, y_bottom, y_top)
    out = [f'<svg id="progress-curve" role="img" aria-label="training step over wall time" '
           f'viewBox="0 0 {_WIDTH} {y_bottom + 44}" width="{_WIDTH}" height="{y_bottom + 44}">']
    for a in attempts:  # lost work: the stretches a later round or attempt redid
        bands = [(at - lost, at, cause) for at, _, lost, cause in a.restarts if lost > 0]
        if a.tail_lost > 0 and a.last is not None:
            bands.append((a.last - a.tail_lost, a.last, a.cause))
        for start, end, cause in bands:
            tip = f"attempt {a.number}: work lost to the {cause}, {duration(end - start)} redone"
            out.append(f'<rect class="lostband" x="{scale(start):.1f}" y="{y_top}" '
                       f'width="{max(scale(end) - scale(start), 1.0):.1f}" '
                       f'height="{y_bottom - y_top}"><title>{_esc(tip)}</title></rect>')
    out += _time_axis(scale, y_top, y_bottom)
    out.append(f'<g class="axis"><line x1="{_LEFT}" y1="{y_top}" x2="{_LEFT}" y2="{y_bottom}"/>')
    for step in _step_ticks(top * 1.04):
        y = ys(step)
        out.append(f'<line x1="{_LEFT - 4}" y1="{y:.1f}" x2="{_LEFT}" y2="{y:.1f}"/>'
                   f'<text x="{_LEFT - 8}" y="{y + 4:.1f}" text-anchor="end">{int(step):,}</text>')
    out.append(f'<text x="{_LEFT - 52}" y="{(y_top + y_bottom) / 2}" text-anchor="middle" '
               f'transform="rotate(-90 {_LEFT - 52} {(y_top + y_bottom) / 2})">step</text></g>')
    if total is not None and total <= top:
        out.append(f'<line class="grid" x1="{_LEFT}" y1="{ys(total):.1f}" x2="{_WIDTH - _RIGHT}" '
                   f'y2="{ys(total):.1f}"><title>the run trains {int(total):,} steps in all'
                   "</title></line>")
    colors = {n: _ATTEMPT_COLORS[i % len(_ATTEMPT_COLORS)]
              for i, n in enumerate(dict.fromkeys(p[2] for p in points))}
    lines: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for at, step, attempt, rnd in points:
        lines.setdefault((attempt, rnd), []).append((scale(at), ys(step)))
    previous: tuple[float, float] | None = None
    for (attempt, rnd), xy in lines.items():
        if previous is not None and xy[0][1] > previous[1] + 0.5:  # dropped back: work redone
            out.append(f'<line class="drop" x1="{previous[0]:.1f}" y1="{previous[1]:.1f}" '
                       f'x2="{xy[0][0]:.1f}" y2="{xy[0][1]:.1f}"/>')
        coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
        out.append(f'<polyline class="curve" data-attempt="{_esc(attempt)}" '
                   f'stroke="{colors[attempt]}" points="{coords}"><title>'
                   f"{_esc(f'attempt {attempt}, restart round {rnd}')}</title></polyline>")
        if len(xy) == 1:
            out.append(f'<circle cx="{xy[0][0]:.1f}" cy="{xy[0][1]:.1f}" r="2.5" '
                       f'fill="{colors[attempt]}"/>')
        previous = xy[-1]
    out.append("</svg>")
    legend = "".join(f'<span><i style="background:{c}"></i>attempt {_esc(n)}</span>'
                     for n, c in colors.items())
    legend += '<span><i class="lostband"></i>lost work (redone later)</span>'
    return "\n".join(out) + f'\n<div class="legend">{legend}</div>'


def _header(doc: Mapping[str, Any]) -> str:
    totals = _map(doc.get("totals"))
    goodput = _num(totals.get("goodput"))
    node_s = _num(totals.get("allocated_node_s"))
    generated = _num(doc.get("generated_at"))
    facts = [("goodput", "-" if goodput is None else f"{goodput:.1%}", "productive / allocated"),
             ("allocated", duration(_num(totals.get("allocated_s"))),
              "-" if node_s is None else f"{node_s / 3600:.2f} node-hours"),
             ("queue wait", duration(_num(totals.get("queue_s"))), "outside allocations"),
             ("in-place restarts", str(int(_num(totals.get("restarts")) or 0)), "")]
    last, total = _num(doc.get("last_step")), _num(doc.get("total_steps"))
    if last is not None:
        facts.append(("step", f"{int(last):,}", "" if total is None else f"of {int(total):,}"))
    eta = _map(doc.get("eta"))
    finish = _num(eta.get("finish_at"))
    if finish is not None:
        facts.append(("ETA", _hms(finish, "%Y-%m-%d %H:%M"),
                      f"{int(_num(eta.get('remaining_steps')) or 0):,} steps left"))
    boxes = "".join(f'<div class="fact"><span>{_esc(k)}</span><b>{_esc(v)}</b>'
                    f"<span>{_esc(s)}</span></div>" for k, v, s in facts)
    sub = (f'run directory <code>{_esc(doc.get("run_dir", "?"))}</code> &middot; state '
           f'<b>{_esc(doc.get("run_state", "?"))}</b>')
    if generated is not None:
        sub += f" &middot; as of {_esc(_hms(generated, '%Y-%m-%d %H:%M:%S'))}"
    out = [f'<h1>Run report</h1><p class="sub">{sub}</p><div class="facts">{boxes}</div>']
    if eta.get("basis"):
        out.append(f'<p class="sub">ETA basis: {_esc(eta["basis"])}</p>')
    if not doc.get("progress_known") and _list(doc.get("attempts")):
        out.append('<p class="note">Progress is not known: the workload reports no steps '
                   "(<code>ftslurm.report_progress</code>), so start-up, productive time and "
                   "lost work are unknown; queue wait and allocations are still counted.</p>")
    return "\n".join(out)


def _tables(doc: Mapping[str, Any]) -> str:
    totals = _map(doc.get("totals"))
    allocated = _num(totals.get("allocated_s")) or 0.0
    rows = []
    for key, name in _PARTS:
        value = _num(totals.get(key))
        share = "-" if value is None or not allocated or key == "queue_s" else \
            f"{value / allocated:.1%}"
        rows.append(f'<tr><td class="l">{name}</td><td>{_seconds(value)}</td>'
                    f"<td>{duration(value)}</td><td>{share}</td></tr>")
    rows.append(f'<tr><th class="l">allocated</th><th>{_seconds(allocated)}</th>'
                f"<th>{duration(allocated)}</th><th></th></tr>")
    parts = ('<table id="parts"><tr><th class="l">part</th><th>seconds</th><th>time</th>'
             f'<th>of allocated</th></tr>{"".join(rows)}</table>')
    causes = _map(doc.get("lost_by_cause"))
    if causes:
        rows = [f'<tr><td class="l">{_esc(c)}</td><td>{_seconds(s)}</td>'
                f"<td>{duration(_num(s))}</td></tr>" for c, s in causes.items()]
        by_cause = ('<table id="causes"><tr><th class="l">cause</th><th>seconds</th>'
                    f'<th>time</th></tr>{"".join(rows)}</table>')
    else:
        by_cause = '<p class="empty">No time lost to any cause yet.</p>'
    return (f'<div class="tables"><div><h2>Where the time went</h2>{parts}</div>'
            f"<div><h2>Time not training, by cause</h2>{by_cause}</div></div>")


def _attempt_table(doc: Mapping[str, Any]) -> str:
    heads = ("attempt", "job", "nodes", "ended by (outcome)", "queue", "allocated", "start-up",
             "productive", "lost", "lost steps", "restarts", "stop", "step range")
    rows = []
    for item in (_map(x) for x in _list(doc.get("attempts"))):
        first, last = _num(item.get("first_step")), _num(item.get("last_step"))
        steps = "-" if first is None or last is None else f"{int(first):,}\u2013{int(last):,}"
        lost_steps = _num(item.get("lost_steps"))
        restarts = len(_list(item.get("restarts")))
        cells = [_esc(item.get("attempt", "?")), _esc(item.get("job_id") or "-"),
                 _esc(", ".join(str(n) for n in _list(item.get("nodes"))) or "-"),
                 _esc(item.get("cause", "?")) + (f'<br><small>{_esc(item["outcome"])}</small>'
                                                 if item.get("outcome") else ""),
                 *(_seconds(item.get(k)) for k in ("queue_s", "allocated_s", "startup_s",
                                                   "productive_s", "lost_s")),
                 "-" if lost_steps is None else str(int(lost_steps)),
                 f"{restarts} ({_seconds(item.get('restart_s'))})" if restarts else "-",
                 _seconds(item.get("stop_s")), steps]
        classes = {1: ' class="l"', 2: ' class="l nodes"', 3: ' class="l"'}
        rows.append("<tr>" + "".join(f"<td{classes.get(i, '')}>{c}</td>"
                                     for i, c in enumerate(cells)) + "</tr>")
    head = "".join(f'<th{" class=l" if i in (1, 2, 3) else ""}>{h}</th>'
                   for i, h in enumerate(heads))
    return (f'<div class="scroll"><table id="attempts"><tr>{head}</tr>{"".join(rows)}</table></div>'
            '<p class="sub">Times in seconds.</p>')


def render_page(doc: Mapping[str, Any]) -> str:
    """The self-contained HTML page of a run's accounting: `doc` is `RunCost.to_json()` (or the
    JSON `ftslurm report --json` printed). Nothing in the page loads anything from anywhere."""
    attempts = _attempts(doc)
    curve = _curve(doc)
    now = _num(doc.get("generated_at"))
    title = f"ftslurm report: {doc.get('run_dir', '?')}"
    body = [_header(doc)]
    if not attempts and not curve:
        body.append('<h2>Timeline</h2><p class="empty">Nothing yet: no attempt has started, '
                    "so there is no timeline and no progress to show.</p>")
    else:
        body.append(_tables(doc))
        scale = _Scale(*_domain(attempts, curve), _LEFT, _WIDTH - _RIGHT)
        body.append("<h2>Timeline</h2>")
        if attempts:
            present = dict.fromkeys(a.cause for a in attempts)
            svg = _timeline(attempts, scale, now)
            legend = "".join(f'<span><i class="{c}"></i>{t}</span>' for c, t in _SEGMENTS
                             if f'class="seg {c}"' in svg)
            legend += "".join(f'<span><i style="background:{_CAUSE_COLOR.get(c, "#495057")};'
                              f'transform:rotate(45deg);width:9px;height:9px"></i>'
                              f"{'still running' if c == 'running' else 'ended: ' + _esc(c)}"
                              "</span>" for c in present)
            body.append(f'<div class="scroll">{svg}</div>'
                        f'<div class="legend">{legend}</div>')
        else:
            body.append('<p class="empty">No attempt has started yet.</p>')
        body.append("<h2>Progress</h2>")
        if curve:
            body.append('<div class="scroll">'
                        f'{_curve_svg(curve, attempts, scale, _num(doc.get("total_steps")))}</div>')
        else:
            body.append('<p class="empty">No progress reported yet: the workload has not called '
                        "<code>ftslurm.report_progress</code>, so there is no curve.</p>")
        body.append(f"<h2>Attempts</h2>{_attempt_table(doc)}")
    csp = "default-src 'none'; style-src 'unsafe-inline'"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{_esc(title)}</title>\n<style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")
