"""GitHub Actions schedules: the cron triggers a workflow file declares, and how often they fire.

Pure functions over text; no I/O. GitHub's cron has five fields (minute, hour, day of month,
month, day of week) and, like Vixie cron, fires when *either* a restricted day of month or a
restricted day of week matches.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["runs_at_least_monthly", "workflow_crons"]

_MONTHS = {m: i for i, m in enumerate(
    ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], 1)}
_DAYS = {d: i for i, d in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}


def workflow_crons(text: str) -> list[str] | None:
    """The ``on.schedule[].cron`` expressions of a workflow file (``[]`` when it has no
    schedule), or ``None`` when the text is not a workflow (not YAML, or not a mapping)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    if not isinstance(doc, dict):
        return None
    # YAML 1.1 reads the bare key `on` as the boolean true.
    triggers: Any = doc.get("on", doc.get(True))
    if not isinstance(triggers, dict):
        return []
    schedule = triggers.get("schedule")
    if not isinstance(schedule, list):
        return []
    return [str(item["cron"]).strip() for item in schedule
            if isinstance(item, dict) and item.get("cron")]


def _expand(field: str, lo: int, hi: int, names: dict[str, int]) -> set[int] | None:
    values: set[int] = set()
    for part in field.upper().split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)
            if not step_text.isdigit() or int(step_text) < 1:
                return None
            step = int(step_text)
        if part == "*":
            start, end = lo, hi
        elif "-" in part:
            a, b = part.split("-", 1)
            first, last = _value(a, names), _value(b, names)
            if first is None or last is None:
                return None
            start, end = first, last
        else:
            single = _value(part, names)
            if single is None:
                return None
            start, end = single, (hi if step > 1 else single)
        if start < lo or end > hi or start > end:
            return None
        values.update(range(start, end + 1, step))
    return values


def _value(text: str, names: dict[str, int]) -> int | None:
    if text in names:
        return names[text]
    return int(text) if text.isdigit() else None


def runs_at_least_monthly(expr: str) -> bool:
    """True when the cron expression fires at least once in every calendar month."""
    fields = expr.split()
    if len(fields) != 5:
        return False
    minute, hour, dom, month, dow = fields
    parsed = [
        _expand(minute, 0, 59, {}),
        _expand(hour, 0, 23, {}),
        _expand(dom, 1, 31, {}),
        _expand(month, 1, 12, _MONTHS),
        _expand(dow, 0, 7, _DAYS),  # 0 and 7 are both Sunday
    ]
    if any(p is None or not p for p in parsed):
        return False
    months = parsed[3]
    if months != set(range(1, 13)):
        return False
    dom_any, dow_any = dom.strip() == "*", dow.strip() == "*"
    if not dow_any:
        return True  # a weekday recurs every week, whatever the day of month says
    if dom_any:
        return True
    days = parsed[2]
    # Every month has a 28th; a schedule only on the 29th-31st skips February.
    return days is not None and min(days) <= 28
