"""Baselines over time: inline SVG charts drawn from ``reports/history.jsonl``.

For the report's environment, three series: tickets done at each run over the last 90 days;
the restore drill's measured RTO at each drill, against its target; the newest backup's age at
each run (the RPO actually achieved), against its target. The numbers come from the typed
measures the checks record (``evidence.measure("rto_seconds", ...)``,
``evidence.measure("backup_age_hours", ...)``), as stored on each history line; the targets from
the environment's configuration.

Each chart is plain SVG with presentation attributes (no script, no style sheet, nothing
fetched), so it draws under a strict Content-Security-Policy, in print and offline, and a table
of the same numbers stands beside it for screen readers and for print. A point over its target
is drawn as a hollow square, not only in another colour, so the chart reads in greyscale.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from html import escape
from typing import Any

from opsready.config import Environment
from opsready.report.model import Readiness

__all__ = ["BASELINES", "Baseline", "Point", "Series", "baseline_series", "render_series"]


@dataclass(frozen=True)
class Baseline:
    """A measure charted over time, and the configuration key holding its target."""

    measure: str
    title: str
    unit: str
    days: int
    target_key: str


# The measures with a target. They are found by the measure's name, whichever check records it.
BASELINES: tuple[Baseline, ...] = (
    Baseline("rto_seconds", "Restore drill: measured RTO at each drill", "s", 365, "restore_drill.rto_target_s"),
    Baseline("backup_age_hours", "Newest backup's age at each run (RPO achieved)", "h", 90, "backups.rpo_hours"),
)
TICKETS_DONE_DAYS = 90


@dataclass(frozen=True)
class Point:
    at: dt.datetime
    value: float
    run_id: str


@dataclass
class Series:
    title: str
    unit: str
    days: int
    points: list[Point] = field(default_factory=list)
    target: float | None = None
    target_label: str = ""
    # The y axis always reaches this (e.g. the number of tickets).
    y_floor: float = 0.0

    @property
    def slug(self) -> str:
        return "".join(ch if ch.isalnum() else "-" for ch in self.title.lower())[:40].strip("-")


def _target(env: Environment, key: str) -> float | None:
    value: Any = env
    for part in key.split("."):
        value = getattr(value, part, None)
        if value is None:
            return None
    return float(value) if isinstance(value, int | float) else None


def _when(entry: dict[str, Any]) -> dt.datetime | None:
    try:
        when = dt.datetime.fromisoformat(str(entry["started_at"]))
    except (KeyError, ValueError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def baseline_series(history: Iterable[dict[str, Any]], readiness: Readiness, env: Environment) -> list[Series]:
    """The three series for ``readiness``'s environment: the earlier runs from ``history``
    (entries of any environment; rotated segments included), then this run."""
    run = readiness.run
    now = run.started_at if run.started_at.tzinfo else run.started_at.replace(tzinfo=dt.UTC)
    rows: list[tuple[dt.datetime, str, dict[str, Any]]] = []
    for entry in history:
        if entry.get("environment") != run.environment or entry.get("run_id") == run.id:
            continue
        when = _when(entry)
        if when is not None and when <= now:
            rows.append((when, str(entry.get("run_id", "")), entry))
    this = {"counts": readiness.counts.model_dump(),
            "measures": [{"name": m.name, "value": m.value} for _, _, m in readiness.measures()]}
    rows.append((now, run.id, this))
    rows.sort(key=lambda r: r[0])

    done = Series(f"Tickets done at each run, last {TICKETS_DONE_DAYS} days", "tickets", TICKETS_DONE_DAYS,
                  target=float(len(readiness.tickets)), target_label=f"{len(readiness.tickets)} tickets",
                  y_floor=float(len(readiness.tickets)))
    charts = [done]
    for baseline in BASELINES:
        target = _target(env, baseline.target_key)
        label = f"target {target:g} {baseline.unit} ({baseline.target_key})" if target is not None else ""
        charts.append(Series(baseline.title, baseline.unit, baseline.days, target=target, target_label=label))
    for when, run_id, entry in rows:
        age_days = (now - when).total_seconds() / 86400
        counts = entry.get("counts")
        if age_days <= TICKETS_DONE_DAYS and isinstance(counts, dict) and isinstance(counts.get("done"), int):
            done.points.append(Point(when, float(counts["done"]), run_id))
        measures = entry.get("measures")
        for baseline, series in zip(BASELINES, charts[1:], strict=True):
            if age_days > baseline.days or not isinstance(measures, list):
                continue
            for m in measures:
                value = m.get("value") if isinstance(m, dict) else None
                if m.get("name") == baseline.measure and isinstance(value, int | float):
                    series.points.append(Point(when, float(value), run_id))
                    break
    return charts


_W, _H = 640, 220
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 16, 14, 34


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    step = 10 ** len(str(int(value))) / 10 if value >= 1 else 0.1
    for factor in (1, 2, 2.5, 5, 10):
        top = step * factor
        if top >= value:
            return top
    return value


def _svg(series: Series, chart_id: str) -> str:
    pts = series.points
    end = pts[-1].at if pts else dt.datetime.now(dt.UTC)
    start = end - dt.timedelta(days=series.days)
    span = max((end - start).total_seconds(), 1.0)
    top = _nice_max(max([p.value for p in pts] + [series.target or 0.0, series.y_floor]) * 1.1)
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM

    def x(at: dt.datetime) -> float:
        return _LEFT + plot_w * max(0.0, min(1.0, (at - start).total_seconds() / span))

    def y(value: float) -> float:
        return _TOP + plot_h * (1 - max(0.0, min(1.0, value / top)))

    parts = [
        f'<svg viewBox="0 0 {_W} {_H}" width="{_W}" height="{_H}" '
        f'role="img" aria-labelledby="{chart_id}-title {chart_id}-desc">',
        f'<title id="{chart_id}-title">{_e(series.title)}</title>',
        f'<desc id="{chart_id}-desc">{len(pts)} points from {start.date().isoformat()} to '
        f'{end.date().isoformat()}; the table beside the chart lists them.</desc>',
        f'<rect x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}" fill="#ffffff" stroke="#888888"/>',
    ]
    for i in range(5):
        value = top * i / 4
        yy = y(value)
        parts.append(f'<line x1="{_LEFT}" y1="{yy:.1f}" x2="{_W - _RIGHT}" y2="{yy:.1f}" stroke="#dddddd"/>')
        parts.append(f'<text x="{_LEFT - 6}" y="{yy + 4:.1f}" text-anchor="end" font-size="11" '
                     f'fill="#333333">{value:g}</text>')
    for at, anchor in ((start, "start"), (end, "end")):
        parts.append(f'<text x="{x(at):.1f}" y="{_H - 12}" text-anchor="{anchor}" font-size="11" '
                     f'fill="#333333">{at.date().isoformat()}</text>')
    parts.append(f'<text x="12" y="{_TOP + plot_h / 2:.1f}" font-size="11" fill="#333333" '
                 f'transform="rotate(-90 12 {_TOP + plot_h / 2:.1f})" text-anchor="middle">{_e(series.unit)}</text>')
    if series.target is not None:
        ty = y(series.target)
        parts.append(f'<line x1="{_LEFT}" y1="{ty:.1f}" x2="{_W - _RIGHT}" y2="{ty:.1f}" stroke="#000000" '
                     f'stroke-dasharray="6 4" stroke-width="1.5"/>')
        parts.append(f'<text x="{_W - _RIGHT - 4}" y="{ty - 4:.1f}" text-anchor="end" font-size="11" '
                     f'fill="#000000">{_e(series.target_label)}</text>')
    if len(pts) > 1:
        path = " ".join(f"{x(p.at):.1f},{y(p.value):.1f}" for p in pts)
        parts.append(f'<polyline points="{path}" fill="none" stroke="#1f4e9a" stroke-width="2"/>')
    over_target = series.target is not None and series.y_floor == 0.0
    for p in pts:
        px, py = x(p.at), y(p.value)
        label = f"{p.at.isoformat(timespec='minutes')}: {p.value:g} {series.unit}"
        if over_target and series.target is not None and p.value > series.target:
            parts.append(f'<rect x="{px - 5:.1f}" y="{py - 5:.1f}" width="10" height="10" fill="#ffffff" '
                         f'stroke="#b00020" stroke-width="2.5"><title>{_e(label)} (over target)</title></rect>')
        else:
            parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3.5" fill="#1f4e9a">'
                         f"<title>{_e(label)}</title></circle>")
    if not pts:
        parts.append(f'<text x="{_LEFT + plot_w / 2:.1f}" y="{_TOP + plot_h / 2:.1f}" text-anchor="middle" '
                     f'font-size="13" fill="#333333">no measurement in this period</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(series: Series) -> str:
    over = series.target is not None and series.y_floor == 0.0
    head = "<tr><th>run started (UTC)</th><th>value</th>" + ("<th>within target</th>" if over else "") + "</tr>"
    rows = []
    for p in reversed(series.points):
        cells = f"<td>{_e(p.at.strftime('%Y-%m-%d %H:%M'))}</td><td>{p.value:g} {_e(series.unit)}</td>"
        if over and series.target is not None:
            cells += f"<td>{'yes' if p.value <= series.target else 'NO'}</td>"
        rows.append(f"<tr>{cells}</tr>")
    body = "".join(rows) or f'<tr><td colspan="{3 if over else 2}">no measurement in this period</td></tr>'
    caption = _e(series.title) + (f"; {_e(series.target_label)}" if series.target_label else "")
    return f'<div class="chart-numbers"><table><caption>{caption}</caption><thead>{head}</thead>' \
           f"<tbody>{body}</tbody></table></div>"


def render_series(charts: list[Series]) -> str:
    """The baselines section's body: each chart with its numbers beside it."""
    out = []
    for i, series in enumerate(charts):
        chart_id = f"chart-{i}-{series.slug}"
        out.append(f'<figure class="chart" id="{chart_id}"><figcaption><strong>{_e(series.title)}</strong>'
                   + (f" ({_e(series.target_label)})" if series.target_label else "")
                   + f"</figcaption><div class=\"chart-row\">{_svg(series, chart_id)}{_table(series)}</div></figure>")
    return "".join(out)
