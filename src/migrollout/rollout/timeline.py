"""The rollout's timeline as a page: one self-contained HTML file with inline SVG, no network, no external script.

Drawn from the report (rollout.report: each node's slot, step times and outcome; the schedule's settings) or, in
check mode, from the plan's simulated schedule (rollout.schedule.Schedule.simulate, equal node times). It shows a
lane per node grouped by pool, with its steps as coloured segments placed where they ran; failures, skips and
refusals marked, their reasons on hover; the window's occupancy over time against its limit; each pool's nodes out
of service against its budget (rollout.progress computes both, as the live progress lines count them); the evicted
pods per node; the run's settings and totals.

At a thousand nodes the lanes stay 9 px apart inside a scrolling panel, and each pool folds (HTML ``details``):
pools open at first only while the run has few nodes, or when something went wrong in them.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from migrollout.rollout.progress import NodeTime, duration_text, occupancy, pool_use
from migrollout.rollout.report import STEPS
from migrollout.timestamps import parse

COLOURS = {"maintenance": "#8c6bb1", "evacuate": "#f39c12", "label": "#2e86c1", "verify": "#27ae60",
           "finish": "#16a085"}
STEP_NAMES = {"maintenance": "maintenance", "evacuate": "evacuation", "label": "MIG apply", "verify": "verify",
              "finish": "return to service"}
MARKS = {"failed": "#c0392b", "skipped": "#7f8c8d", "no room": "#d35400", "not started": "#95a5a6"}
PLOT_W = 960            # px for the whole run on the time axis
LABEL_W = 170
EVICTED_W = 60
CHART_H = 90
POOL_CHART_H = 40
OPEN_BELOW = 300        # every pool starts open up to this many nodes


@dataclass
class Segment:
    step: str
    start: float            # units from the run's start
    length: float


@dataclass
class Lane:
    node: str
    pool: str
    result: str
    reason: str = ""
    started: float | None = None
    finished: float | None = None
    segments: list[Segment] = field(default_factory=list)
    evicted: list[str] = field(default_factory=list)
    change: str = ""        # from -> to

    @property
    def total(self) -> float:
        return sum(segment.length for segment in self.segments)

    @property
    def mark(self) -> str:
        """Which mark the lane carries ("" for a node that went through)."""
        if self.result == "failed":
            return "failed"
        if self.result == "skipped":
            return "no room" if "nowhere to go" in self.reason else "skipped"
        if self.result == "not started":
            return "not started"
        return ""


@dataclass
class Picture:
    title: str
    unit: str                                   # "s", or "node times" for a simulation
    lanes: list[Lane]
    limit: int                                  # the window (or the batch size)
    limit_name: str
    pool_budgets: Mapping[str, int] = field(default_factory=dict)
    already_out: Mapping[str, list[str]] = field(default_factory=dict)
    settings: list[tuple[str, str]] = field(default_factory=list)
    totals: list[tuple[str, str]] = field(default_factory=list)
    note: str = ""

    @property
    def end(self) -> float:
        ends = [lane.finished for lane in self.lanes if lane.finished is not None]
        ends += [s.start + s.length for lane in self.lanes for s in lane.segments]
        return max(ends, default=0.0)

    def occupancy(self) -> list[tuple[float, int]]:
        return occupancy((lane.started, lane.finished) for lane in self.lanes
                         if lane.started is not None and lane.finished is not None)

    def pool_use(self) -> dict[str, list[tuple[float, int]]]:
        return pool_use((NodeTime(lane.node, lane.pool, lane.started, lane.finished, lane.result)
                         for lane in self.lanes), self.end, self.already_out)


def _schedule_settings(schedule: Mapping[str, Any]) -> tuple[int, str, list[tuple[str, str]]]:
    mode = schedule.get("mode", "window")
    limit = int(schedule.get("batch_size" if mode == "batches" else "window", 1) or 1)
    name = f"batch of {limit}" if mode == "batches" else f"window of {limit}"
    settings = [("schedule", name), ("failure budget", str(schedule.get("max_failures", 0)))]
    budgets = schedule.get("pool_budgets") or {}
    if budgets:
        settings.append(("pool budgets", ", ".join(f"{pool} {count}" for pool, count in sorted(budgets.items()))))
    out = schedule.get("already_out") or {}
    if out:
        settings.append(("out of service before the run", ", ".join(
            f"{pool}: {len(nodes)}" for pool, nodes in sorted(out.items()))))
    return limit, name, settings


def from_report(report: Mapping[str, Any]) -> Picture:
    """The picture of a run from its report (the JSON the report module writes)."""
    rows = report.get("nodes") or []
    moments = []
    for row in rows:
        moments += [parse(row.get("started")), *(parse(text) for text in (row.get("began") or {}).values())]
    known = [moment.timestamp() for moment in moments if moment is not None]
    origin = min(known, default=0.0)

    def offset(text: str | None) -> float | None:
        moment = parse(text)
        return None if moment is None else moment.timestamp() - origin

    lanes = []
    for row in rows:
        lane = Lane(row["node"], row.get("pool", ""), row.get("result", ""), row.get("reason", ""),
                    offset(row.get("started")), offset(row.get("finished")), evicted=list(row.get("evicted") or []),
                    change=f"{row.get('from') or '-'} -> {row.get('to') or '-'}")
        began = row.get("began") or {}
        cursor = lane.started or 0.0
        for step in STEPS:
            seconds = float((row.get("steps") or {}).get(step) or 0.0)
            if step not in (row.get("steps") or {}):
                continue
            start = offset(began.get(step))
            start = cursor if start is None else start      # a report without step times: one after the other
            lane.segments.append(Segment(step, start, seconds))
            cursor = start + seconds
        lanes.append(lane)
    schedule = report.get("schedule") or {}
    limit, name, settings = _schedule_settings(schedule)
    settings = [("run", str(report.get("run", ""))), *settings]
    picture = Picture(f"MIG rollout {report.get('run', '')}", "s", lanes, limit, name,
                      {str(k): int(v) for k, v in (schedule.get("pool_budgets") or {}).items()},
                      {str(k): list(v) for k, v in (schedule.get("already_out") or {}).items()}, settings)
    node_seconds = sum(lane.finished - lane.started for lane in lanes
                       if lane.started is not None and lane.finished is not None)
    phase = picture.end
    picture.totals = [("nodes", str(len(lanes))),
                      *((result, str(count)) for result, count in sorted((report.get("summary") or {}).items())),
                      ("node phase", duration_text(phase)),
                      *((("whole run", duration_text(float(report["wall_s"]))),) if report.get("wall_s") else ()),
                      ("node time in maintenance", duration_text(node_seconds)),
                      ("window use", f"{node_seconds / (limit * phase):.0%}" if phase > 0 else "-"),
                      ("window not full", duration_text(_below(picture.occupancy(), limit, phase))),
                      ("evicted pods", str(sum(len(lane.evicted) for lane in lanes)))]
    if report.get("lock_lost"):
        picture.note = f"LOCK LOST: {report['lock_lost']}"
    return picture


def from_simulation(run: str, rows: Iterable[Mapping[str, Any]], schedule: Mapping[str, Any],
                    simulated: Mapping[str, Any]) -> Picture:
    """The expected picture of a run (check mode): the plan's rows and its simulated schedule
    (rollout.schedule.Simulation: each node's start and end in node times)."""
    starts, ends = simulated.get("starts") or {}, simulated.get("ends") or {}
    lanes = []
    for row in rows:
        node = row["node"]
        result = row.get("result", "")
        reason = row.get("reason", "")
        if node in (simulated.get("never") or {}):
            result, reason = "not started", simulated["never"][node]
        lane = Lane(node, row.get("pool", ""), result, reason, starts.get(node), ends.get(node),
                    evicted=list(row.get("evicted") or []), change=f"{row.get('from') or '-'} -> {row.get('to') or '-'}")
        if lane.started is not None and lane.finished is not None:
            # The plan knows no step times: the node's time is drawn as one maintenance segment.
            lane.segments.append(Segment("maintenance", lane.started, lane.finished - lane.started))
        lanes.append(lane)
    limit, name, settings = _schedule_settings(schedule)
    picture = Picture(f"MIG rollout {run}: the plan (check mode)", "node times", lanes, limit, name,
                      {str(k): int(v) for k, v in (schedule.get("pool_budgets") or {}).items()},
                      {str(k): list(v) for k, v in (schedule.get("already_out") or {}).items()},
                      [("run", run), *settings],
                      note="Expected timeline with equal node times: what the schedule allows, not a measurement.")
    picture.totals = [("nodes", str(len(lanes))), ("to change", str(len(starts))),
                      ("expected steps", str(len(set(starts.values())))),
                      ("expected length", f"{picture.end:g} node times"),
                      ("pods to evict", str(sum(len(lane.evicted) for lane in lanes)))]
    return picture


def _below(points: list[tuple[float, int]], limit: int, end: float) -> float:
    """How long the count stayed below ``limit`` between the first point and ``end``."""
    total = 0.0
    for (moment, count), (following, _) in zip(points, [*points[1:], (end, 0)][:len(points)], strict=True):
        if count < limit:
            total += max(0.0, min(following, end) - moment)
    return total


# -- drawing ------------------------------------------------------------------------------------------------------


def _attr(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _number(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".") or "0"


class _Scale:
    def __init__(self, end: float) -> None:
        self.per_unit = PLOT_W / end if end > 0 else 1.0

    def x(self, moment: float) -> float:
        return LABEL_W + moment * self.per_unit


# Tick steps a reader counts in: seconds, minutes, hours (and tenths for node times).
TICK_STEPS = (0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200)


def _ticks(end: float, most: int = 10) -> list[float]:
    step = next((s for s in TICK_STEPS if end / s <= most), end / most or 1.0)
    return [index * step for index in range(int(end / step + 1e-9) + 1)]


def _axis(scale: _Scale, end: float, unit: str, y: float) -> list[str]:
    parts = [f'<line x1="{LABEL_W}" y1="{y}" x2="{LABEL_W + PLOT_W}" y2="{y}" stroke="#999"/>']
    for moment in _ticks(end):
        x = _number(scale.x(moment))
        text = duration_text(moment) if unit == "s" else f"{moment:.3g}"
        parts.append(f'<line x1="{x}" y1="{y}" x2="{x}" y2="{y + 4}" stroke="#999"/>'
                     f'<text x="{x}" y="{y + 14}" class="tick">{text}</text>')
    return parts


def _step_chart(css: str, title: str, points: list[tuple[float, int]], limit: int | None, scale: _Scale,
                end: float, unit: str, data: str = "", height: int = CHART_H) -> str:
    peak = max([count for _, count in points] + [limit or 0, 1]) * 1.15     # headroom above the limit line

    def y(count: float) -> float:
        return 10 + (height - 10) * (1 - count / peak)

    coordinates = []
    last = 0
    for moment, count in points:
        coordinates.append(f"{_number(scale.x(moment))},{_number(y(last))}")
        coordinates.append(f"{_number(scale.x(moment))},{_number(y(count))}")
        last = count
    coordinates.append(f"{_number(scale.x(end))},{_number(y(last))}")
    body = [f'<svg class="{css}" width="{LABEL_W + PLOT_W + EVICTED_W}" height="{height + 24}" {data} '
            f'data-peak="{max((c for _, c in points), default=0)}" data-limit="{limit if limit is not None else ""}">',
            f'<text x="4" y="{height // 2}" class="label">{_attr(title)}</text>',
            f'<polyline class="use" fill="none" stroke="#2c3e50" stroke-width="1.5" '
            f'points="{" ".join(coordinates)}"><title>{_attr(title)}: at most {max((c for _, c in points), default=0)}'
            f'</title></polyline>']
    if limit is not None:
        body.append(f'<line class="limit" x1="{LABEL_W}" x2="{LABEL_W + PLOT_W}" y1="{_number(y(limit))}" '
                    f'y2="{_number(y(limit))}" stroke="#c0392b" stroke-dasharray="5,3"><title>limit {limit}</title>'
                    f'</line><text x="{LABEL_W + PLOT_W + 4}" y="{_number(y(limit) + 4)}" class="tick">'
                    f'limit {limit}</text>')
    body += _axis(scale, end, unit, height + 2)
    body.append("</svg>")
    return "".join(body)


def _lane(lane: Lane, row: int, row_h: int, scale: _Scale, unit: str) -> str:
    y = row * row_h
    mid = y + row_h / 2
    bar_h = max(row_h - 3, 4)
    top = y + (row_h - bar_h) / 2
    seconds = "s" if unit == "s" else " node times"
    about = (f"{lane.node} ({lane.pool or 'no pool'}): {lane.result}, {lane.change}, "
             f"{_number(lane.total)}{seconds} in its steps" + (f"; {lane.reason}" if lane.reason else ""))
    parts = [f'<g class="lane" data-node="{_attr(lane.node)}" data-total="{lane.total:.6f}">'
             f'<title>{_attr(about)}</title>',
             f'<text x="4" y="{_number(mid + 3)}" class="node">{_attr(lane.node)}</text>']
    if lane.started is not None and lane.finished is not None:
        parts.append(f'<rect class="slot" x="{_number(scale.x(lane.started))}" y="{_number(top)}" '
                     f'width="{_number(max(lane.finished - lane.started, 0) * scale.per_unit)}" '
                     f'height="{_number(bar_h)}"/>')
    for segment in lane.segments:
        parts.append(f'<rect class="seg" data-step="{segment.step}" x="{scale.x(segment.start):.3f}" '
                     f'y="{_number(top)}" width="{segment.length * scale.per_unit:.3f}" height="{_number(bar_h)}" '
                     f'fill="{COLOURS[segment.step]}"><title>{_attr(lane.node)}: {STEP_NAMES[segment.step]} '
                     f'{_number(segment.length)}{seconds}</title></rect>')
    mark = lane.mark
    if mark:
        at = lane.finished if lane.finished is not None else lane.started if lane.started is not None else 0.0
        x = scale.x(at)
        size = max(row_h / 2 - 1, 3)
        parts.append(f'<path class="mark" data-mark="{mark}" d="M{_number(x - size)},{_number(mid - size)}'
                     f'l{_number(2 * size)},{_number(2 * size)}m0,{_number(-2 * size)}l{_number(-2 * size)},'
                     f'{_number(2 * size)}" stroke="{MARKS[mark]}" stroke-width="2.5"><title>{_attr(mark)}: '
                     f'{_attr(lane.reason or lane.result)}</title></path>')
    if lane.evicted:
        names = ", ".join(lane.evicted[:40]) + (f" and {len(lane.evicted) - 40} more" if len(lane.evicted) > 40 else "")
        parts.append(f'<text x="{LABEL_W + PLOT_W + 8}" y="{_number(mid + 3)}" class="evicted">{len(lane.evicted)}'
                     f'<title>{_attr(lane.node)} evicted: {_attr(names)}</title></text>')
    parts.append("</g>")
    return "".join(parts)


def _pool_panel(pool: str, lanes: list[Lane], opened: bool, row_h: int, scale: _Scale, unit: str) -> str:
    counts: dict[str, int] = {}
    for lane in lanes:
        counts[lane.result] = counts.get(lane.result, 0) + 1
    summary = ", ".join(f"{count} {result}" for result, count in sorted(counts.items()))
    height = len(lanes) * row_h
    body = "".join(_lane(lane, index, row_h, scale, unit) for index, lane in enumerate(lanes))
    return (f'<details class="pool" data-pool="{_attr(pool)}"{" open" if opened else ""}>'
            f'<summary>{_attr(pool or "(no pool)")}: {len(lanes)} node(s), {_attr(summary)}</summary>'
            f'<svg class="lanes" width="{LABEL_W + PLOT_W + EVICTED_W}" height="{height}" '
            f'style="font-size:{max(row_h - 3, 7)}px">{body}</svg></details>')


STYLE = """
body{font:13px system-ui,sans-serif;margin:16px;color:#222}
h1{font-size:18px;margin:0 0 8px}
table.facts{border-collapse:collapse;margin:0 24px 8px 0;display:inline-table;vertical-align:top}
table.facts td{padding:1px 8px 1px 0}
table.facts td:first-child{color:#666}
.legend span{display:inline-block;margin-right:14px}
.legend i{display:inline-block;width:12px;height:10px;margin-right:4px;vertical-align:middle}
.note{color:#a04000;margin:6px 0}
svg text.tick{font-size:10px;fill:#555;text-anchor:middle}
svg text.label{font-size:12px;fill:#222}
svg text.node{fill:#222}
svg text.evicted{fill:#555}
svg rect.slot{fill:#e6e6e6}
.panel{max-height:75vh;overflow:auto;border:1px solid #ddd;padding:4px}
.axis{position:sticky;top:0;background:#fff;z-index:1}
details.pool summary{cursor:pointer;font-weight:600;margin:4px 0}
"""

# Measures what the browser drew (the rendered segments of each lane, the occupancy against its limit) into
# attributes, for a reader's tools and the page's test; it changes nothing a person sees.
MEASURE = """
addEventListener('load',function(){
 var ppu=parseFloat(document.body.dataset.pxPerUnit);
 document.querySelectorAll('g.lane').forEach(function(g){var w=0;
  g.querySelectorAll('rect.seg').forEach(function(r){w+=r.getBoundingClientRect().width;});
  g.dataset.renderedUnits=(w/ppu).toFixed(6);});
 document.querySelectorAll('svg.occupancy,svg.pooluse').forEach(function(s){
  var use=s.querySelector('polyline.use'),limit=s.querySelector('line.limit');
  s.dataset.renderedTop=use.getBoundingClientRect().top.toFixed(2);
  if(limit){s.dataset.renderedLimitTop=limit.getBoundingClientRect().top.toFixed(2);}});
 document.body.dataset.measured='yes';
 document.body.dataset.renderMs=performance.now().toFixed(0);});
"""


def render(picture: Picture) -> str:
    end = picture.end or 1.0
    scale = _Scale(end)
    total = len(picture.lanes)
    row_h = 14 if total <= OPEN_BELOW else 9
    pools: dict[str, list[Lane]] = {}
    for lane in picture.lanes:
        pools.setdefault(lane.pool, []).append(lane)

    def facts(rows: list[tuple[str, str]]) -> str:
        return ('<table class="facts">' + "".join(f"<tr><td>{_attr(k)}</td><td>{_attr(v)}</td></tr>" for k, v in rows)
                + "</table>")

    legend = "".join(f'<span><i style="background:{COLOURS[s]}"></i>{STEP_NAMES[s]}</span>' for s in STEPS)
    legend += "".join(f'<span><b style="color:{colour}">&#x2715;</b> {mark}</span>' for mark, colour in MARKS.items())
    legend += '<span><i style="background:#e6e6e6"></i>slot held (between steps: Ansible)</span>'
    chart = _step_chart("occupancy", "in maintenance", picture.occupancy(), picture.limit, scale, end, picture.unit)
    pool_charts = []
    for pool, points in picture.pool_use().items():
        budget = picture.pool_budgets.get(pool)
        pool_charts.append(_step_chart("pooluse", f"{pool or '(no pool)'} out of service", points, budget, scale, end,
                                       picture.unit, f'data-pool="{_attr(pool)}"', height=POOL_CHART_H))
    axis = (f'<svg class="axis" width="{LABEL_W + PLOT_W + EVICTED_W}" height="20">'
            f'{"".join(_axis(scale, end, picture.unit, 2))}</svg>')
    panels = "".join(_pool_panel(pool, lanes, total <= OPEN_BELOW or any(lane.mark for lane in lanes), row_h, scale,
                                 picture.unit) for pool, lanes in sorted(pools.items()))
    data = {"lanes": total, "unit": picture.unit, "limit": picture.limit}
    return "".join([
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\">",
        f"<title>{_attr(picture.title)}</title><style>{STYLE}</style></head>",
        f'<body data-px-per-unit="{scale.per_unit:.9f}" data-summary="{_attr(json.dumps(data))}">',
        f"<h1>{_attr(picture.title)}</h1>",
        facts(picture.settings), facts(picture.totals),
        f'<p class="note">{_attr(picture.note)}</p>' if picture.note else "",
        f'<div class="legend">{legend}</div>',
        f"<h2>The window <small>({_attr(picture.limit_name)})</small></h2>", chart,
        f"<h2>Nodes <small>({total}; time in {_attr(picture.unit)}; evicted pods on the right; hover for details"
        "; click a pool to fold it)</small></h2>",
        f'<div class="panel"><div class="axis">{axis}</div>{panels}</div>',
        "<h2>Pools <small>(nodes out of service: in maintenance, failed, or out before the run; against the "
        "pool's budget)</small></h2>", "".join(pool_charts),
        f"<script>{MEASURE}</script></body></html>"])


def write(path: Any, picture: Picture) -> int:
    """Write the page; its size in bytes."""
    text = render(picture)
    with open(path, "w", encoding="utf-8") as out:
        out.write(text)
    return len(text.encode())
