"""reports/history.jsonl over time: append-only, rotated after 10,000 lines, read across the
rotation; the baseline charts drawn from it (tickets done, the drill's RTO, the newest
backup's age) with their numbers beside them."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest

from conftest import Project
from opsready import _clock
from opsready.config import Environment
from opsready.report import history
from opsready.report.charts import baseline_series, render_series
from opsready.report.model import Readiness

pytest_plugins = ["pytester"]

NOW = _clock.now()
ENV_YAML = """
backups:
  s3: {bucket: relay-backups}
  rpo_hours: 26
restore_drill:
  scratch_dsn: postgresql://drill@127.0.0.1:1/postgres
  rto_target_s: 600
"""
CHECK = """
import pytest
pytestmark = [pytest.mark.ticket("P1-002")]

def test_backup(evidence):
    '''The newest backup is fresh'''
    evidence.measure("backup_age_hours", 7.5, "h")

def test_drill(evidence):
    '''The drill restores within the RTO'''
    evidence.measure("rto_seconds", 41.5, "s")
"""


def line(run_id: str, days_ago: float, environment: str = "env", done: int = 3,
         measures: list[dict[str, Any]] | None = None) -> str:
    started = NOW - dt.timedelta(days=days_ago)
    return json.dumps({
        "run_id": run_id, "environment": environment, "started_at": started.isoformat(),
        "finished_at": started.isoformat(), "report_dir": f"/nonexistent/{run_id}", "gate_passed": True,
        "counts": {"done": done, "open": 0, "unverified": 11 - done, "waived": 0},
        "statuses": {"P1-002": "done"}, "measures": measures or [],
    }, sort_keys=True) + "\n"


def rto(value: float) -> list[dict[str, Any]]:
    return [{"ticket": "P1-002", "criterion": "P1-002::test_drill", "name": "rto_seconds", "value": value, "unit": "s"}]


@pytest.fixture
def project(pytester: pytest.Pytester) -> Project:
    project = Project(pytester)
    project.env.write_text(ENV_YAML)
    project.check("test_p1_002_drill.py", CHECK)
    return project


def chart_rows(page: str, caption_start: str) -> list[list[str]]:
    """The rows of the numbers table whose caption starts with ``caption_start``."""
    at = page.index(f"<caption>{caption_start}")
    table = page[at:page.index("</table>", at)]
    return [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", table) if "<td>" in row]


def test_the_history_rotates_whole_after_10000_lines_and_the_charts_read_across(project: Project) -> None:
    reports = project.root / "reports"
    reports.mkdir()
    earlier = [line("old-rto", 80, done=2, measures=rto(700.0)), line("mid", 40, done=5),
               line("recent", 10, done=7, measures=rto(300.0))]
    filler = [line(f"other-{i}", 5, environment="other") for i in range(history.ROTATE_AFTER_LINES - len(earlier))]
    text = "".join(earlier[:2] + filler + earlier[2:])
    (reports / "history.jsonl").write_text(text)

    _, data = project.run("--opsready-gate", "none", out="now")

    segments = history.segments(reports / "history.jsonl")
    assert len(segments) == 2 and segments[-1].name == "history.jsonl"
    # The full file was moved aside whole: not one line rewritten or lost.
    assert segments[0].read_text() == text
    live = (reports / "history.jsonl").read_text().splitlines()
    assert len(live) == 1 and json.loads(live[0])["run_id"] == "now"
    assert json.loads(live[0])["measures"] == [
        {"ticket": "P1-002", "criterion": "P1-002::test_backup", "name": "backup_age_hours", "value": 7.5, "unit": "h"},
        {"ticket": "P1-002", "criterion": "P1-002::test_drill", "name": "rto_seconds", "value": 41.5, "unit": "s"}]
    # The diff finds the previous run of this environment in the moved-aside segment.
    assert data["diff"]["previous_run"] == "recent"

    page = (reports / "now" / "index.html").read_text()
    section = page[page.index("<h2>Baselines over time</h2>"):page.index('<div class="report-tickets">')]
    assert "<script" not in section and "http" not in section.lower()
    done = chart_rows(section, "Tickets done at each run")
    assert [r[1] for r in done] == [f"{data['counts']['done']} tickets", "7 tickets", "5 tickets", "2 tickets"]
    drills = chart_rows(section, "Restore drill: measured RTO")
    assert [r[1:] for r in drills] == [["41.5 s", "yes"], ["300 s", "yes"], ["700 s", "NO"]]
    assert "target 600 s (restore_drill.rto_target_s)" in section
    ages = chart_rows(section, "Newest backup&#x27;s age at each run")
    assert [r[1:] for r in ages] == [["7.5 h", "yes"]]
    # Over its target, a point is a hollow square, not only another colour.
    assert section.count('fill="#ffffff" stroke="#b00020"') == 1
    assert section.count("<svg ") == 3


def test_a_second_rotation_keeps_every_segment_in_order(tmp_path: Path) -> None:
    live = tmp_path / "history.jsonl"
    live.write_text(line("a", 3) * 4)
    first = history.rotate_if_full(live, limit=4, now=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    assert first is not None and not live.exists()
    live.write_text(line("b", 2) * 4)
    second = history.rotate_if_full(live, limit=4, now=dt.datetime(2026, 2, 1, tzinfo=dt.UTC))
    live.write_text(line("c", 1))
    assert history.rotate_if_full(live, limit=4) is None  # under the limit: nothing moves
    assert history.segments(live) == [first, second, live]
    assert [e["run_id"] for e in history.entries(live)] == ["a"] * 4 + ["b"] * 4 + ["c"]


def test_a_torn_line_is_skipped_not_fatal(tmp_path: Path) -> None:
    live = tmp_path / "history.jsonl"
    live.write_text(line("a", 2) + '{"run_id": "torn", "envir' + "\n" + line("b", 1))
    assert [e["run_id"] for e in history.entries(live, "env")] == ["a", "b"]


def test_charts_keep_to_their_window_and_environment(project: Project) -> None:
    _, data = project.run("--opsready-gate", "none", out="base")
    readiness = Readiness.model_validate(data)
    env = Environment.model_validate({"backups": {"s3": {"bucket": "b"}, "rpo_hours": 26},
                                      "restore_drill": {"scratch_dsn": "postgresql://x@127.0.0.1:1/p"}})
    entries = [json.loads(x) for x in (
        line("too-old", 400, measures=rto(100.0)), line("in-year", 200, measures=rto(200.0)),
        line("elsewhere", 1, environment="staging", done=11, measures=rto(999.0)))]
    done, drill, age = baseline_series(entries, readiness, env)
    assert [p.run_id for p in done.points] == ["base"]  # 200 days is outside the 90-day window
    assert [p.value for p in drill.points] == [200.0, 41.5]  # a year of drills; no other environment
    assert drill.target == 600.0 and age.target == 26.0
    assert [p.value for p in age.points] == [7.5]


def test_no_target_when_the_section_is_absent_and_an_empty_chart_says_so(project: Project) -> None:
    _, data = project.run("--opsready-gate", "none", out="bare")
    readiness = Readiness.model_validate(data)
    bare = readiness.model_copy(update={"tickets": [t.model_copy(update={"criteria": []}) for t in readiness.tickets]})
    charts = baseline_series([], bare, Environment())
    assert charts[1].target is None and charts[1].points == []
    html = render_series(charts)
    assert "no measurement in this period" in html
    assert "target" not in html.split("Restore drill")[1].split("</figcaption>")[0]
