"""GitHub Actions workflow files: their triggers, schedules, path filters and steps.

Pure functions over text; no I/O.

- Cron: GitHub's cron has five fields (minute, hour, day of month, month, day of week) and,
  like Vixie cron, fires when *either* a restricted day of month or a restricted day of week
  matches.
- Path filters (``on.push.paths`` / ``paths-ignore``) follow GitHub's filter pattern syntax:
  ``*`` matches within one path segment, ``**`` across segments, ``?`` and ``+`` quantify
  the preceding character, ``[...]`` is a character class, and a leading ``!`` negates a
  pattern; the last matching pattern wins. A push runs the workflow when at least one
  changed file is included by ``paths``, or when at least one is not ignored by
  ``paths-ignore``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from opsready._yaml import safe_load

__all__ = [
    "WorkflowFile",
    "WorkflowStep",
    "parse_workflow",
    "path_filter_matches",
    "runs_at_least_monthly",
    "workflow_crons",
]

_MONTHS = {m: i for i, m in enumerate(
    ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], 1)}
_DAYS = {d: i for i, d in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}


@dataclass(frozen=True)
class WorkflowStep:
    """One step of a job, named as GitHub names it in a run's jobs."""

    job: str  # the job's key under ``jobs:``
    job_name: str  # its ``name:``, or the key
    name: str  # the step's ``name:``, or GitHub's default ("Run <first line>" / "Run <action>")
    run: str | None
    uses: str | None


@dataclass(frozen=True)
class WorkflowFile:
    """What a workflow file declares."""

    events: frozenset[str]
    crons: tuple[str, ...]
    # None: the push trigger has no such filter (or there is no push trigger).
    push_paths: tuple[str, ...] | None
    push_paths_ignore: tuple[str, ...] | None
    steps: tuple[WorkflowStep, ...]
    # Jobs that call a reusable workflow (``jobs.<key>.uses``): (key, name, the workflow).
    calls: tuple[tuple[str, str, str], ...] = ()
    # Runs for pushed tags or published releases, and not for pushes to branches: its runs
    # then carry a tag, not a branch, as their head_branch.
    runs_on_tags_only: bool = False

    @property
    def scheduled(self) -> bool:
        return bool(self.crons)

    @property
    def monthly(self) -> bool:
        return any(runs_at_least_monthly(c) for c in self.crons)

    def push_runs_for(self, changed: Iterable[str]) -> bool:
        """Whether a push changing exactly ``changed`` starts this workflow (branch filters
        aside). A push that changes no file at all runs it unless ``paths`` is set."""
        files = list(changed)
        if "push" not in self.events:
            return False
        if self.push_paths is not None:
            return any(path_filter_matches(self.push_paths, f) for f in files)
        if self.push_paths_ignore is not None:
            return not files or any(not path_filter_matches(self.push_paths_ignore, f)
                                    for f in files)
        return True


def _triggers(doc: dict[Any, Any]) -> dict[str, Any]:
    # YAML 1.1 reads the bare key `on` as the boolean true.
    raw: Any = doc.get("on", doc.get(True))
    if isinstance(raw, str):
        return {raw: None}
    if isinstance(raw, list):
        return {str(e): None for e in raw}
    if isinstance(raw, dict):
        return {str(k): v for k, v in raw.items()}
    return {}


def _strings(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    return tuple(str(v) for v in items)


def _steps(doc: dict[Any, Any]) -> tuple[WorkflowStep, ...]:
    jobs = doc.get("jobs")
    found: list[WorkflowStep] = []
    if not isinstance(jobs, dict):
        return ()
    for key, job in jobs.items():
        if not isinstance(job, dict):
            continue
        job_name = str(job.get("name") or key)
        for step in job.get("steps") or []:
            if not isinstance(step, dict):
                continue
            run = step.get("run")
            uses = step.get("uses")
            run_text = str(run) if run is not None else None
            if step.get("name"):
                name = str(step["name"])
            elif run_text is not None:
                first = next((line for line in run_text.splitlines() if line.strip()), "")
                name = f"Run {first.strip()}"
            else:
                name = f"Run {uses}"
            found.append(WorkflowStep(job=str(key), job_name=job_name, name=name, run=run_text,
                                      uses=str(uses) if uses is not None else None))
    return tuple(found)


def parse_workflow(text: str) -> WorkflowFile | None:
    """The triggers, schedules, push path filters and steps of a workflow file, or ``None``
    when the text is not a workflow (not YAML, or not a mapping)."""
    try:
        doc = safe_load(text)
    except yaml.YAMLError:
        return None
    if not isinstance(doc, dict):
        return None
    triggers = _triggers(doc)
    schedule = triggers.get("schedule")
    crons = tuple(str(item["cron"]).strip() for item in schedule or []
                  if isinstance(item, dict) and item.get("cron")) \
        if isinstance(schedule, list) else ()
    push = triggers.get("push")
    push = push if isinstance(push, dict) else {}
    return WorkflowFile(
        events=frozenset(triggers),
        crons=crons,
        push_paths=_strings(push.get("paths")),
        push_paths_ignore=_strings(push.get("paths-ignore")),
        steps=_steps(doc),
        calls=_calls(doc),
        runs_on_tags_only=(("release" in triggers or "tags" in push)
                           and not ({"branches", "branches-ignore"} & set(push))
                           and not ("push" in triggers and not push)),
    )


def _calls(doc: dict[Any, Any]) -> tuple[tuple[str, str, str], ...]:
    jobs = doc.get("jobs")
    if not isinstance(jobs, dict):
        return ()
    return tuple((str(key), str(job.get("name") or key), str(job["uses"]))
                 for key, job in jobs.items() if isinstance(job, dict) and job.get("uses"))


def workflow_crons(text: str) -> list[str] | None:
    """The ``on.schedule[].cron`` expressions of a workflow file (``[]`` when it has no
    schedule), or ``None`` when the text is not a workflow (not YAML, or not a mapping)."""
    parsed = parse_workflow(text)
    return None if parsed is None else list(parsed.crons)


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] in "?+" and out:
            out.append(pattern[i])  # a quantifier of the preceding character
            i += 1
        elif pattern[i] == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(pattern[i]))
                i += 1
            else:
                out.append("[" + pattern[i + 1:end].replace("\\", "\\\\") + "]")
                i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def path_filter_matches(patterns: Iterable[str], path: str) -> bool:
    """Whether ``path`` is selected by a GitHub path filter: the last pattern that matches
    decides, and a pattern starting with ``!`` deselects."""
    selected = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern[1:] if negated else pattern
        try:
            hit = _pattern_regex(body).match(path) is not None
        except re.error:
            hit = False
        if hit:
            selected = not negated
    return selected


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
