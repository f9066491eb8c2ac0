"""Workflow files as GitHub reads them: triggers, crons, push path filters and step names."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsready.schedules import parse_workflow, path_filter_matches, runs_at_least_monthly

REPO = Path(__file__).resolve().parents[1] / "stack" / "github_repo" / ".github" / "workflows"


def test_triggers_in_every_form() -> None:
    assert parse_workflow("on: push\njobs: {}\n").events == {"push"}  # type: ignore[union-attr]
    listed = parse_workflow("on: [push, workflow_dispatch]\n")
    assert listed is not None and listed.events == {"push", "workflow_dispatch"}
    assert not listed.scheduled
    mapping = parse_workflow("on:\n  schedule:\n    - cron: '0 3 1 * *'\n    - cron: '0 9 * * 1'\n"
                             "  workflow_dispatch:\n")
    assert mapping is not None and mapping.crons == ("0 3 1 * *", "0 9 * * 1")
    assert mapping.scheduled and mapping.monthly
    assert parse_workflow("not: [valid") is None
    assert parse_workflow("- a list\n") is None


def test_the_stack_workflows() -> None:
    drill = parse_workflow((REPO / "restore-drill.yml").read_text())
    assert drill is not None and drill.monthly
    report = parse_workflow((REPO / "slo-report.yml").read_text())
    assert report is not None and report.scheduled and report.monthly  # weekly is monthly too
    rollback = parse_workflow((REPO / "rollback.yml").read_text())
    assert rollback is not None and not rollback.scheduled
    step = next(s for s in rollback.steps if s.run)
    assert (step.job_name, step.name) == ("rollback", "Roll back to the previous deployment")
    assert step.run is not None and step.run.startswith("scripts/rollback")
    assert rollback.steps[0].name == "Run actions/checkout@v4"


def test_unnamed_run_steps_get_githubs_default_name() -> None:
    parsed = parse_workflow("on: push\njobs:\n  build:\n    name: Build it\n    steps:\n"
                            "      - run: |\n          make\n          make test\n")
    assert parsed is not None
    assert [(s.job, s.job_name, s.name) for s in parsed.steps] == [("build", "Build it", "Run make")]


@pytest.mark.parametrize(("patterns", "path", "selected"), [
    (["docs/**"], "docs/runbooks/outage.md", True),
    (["docs/**"], "src/docs/x.md", False),
    (["**.md"], "README.md", True),
    (["**.md"], "docs/a/b.md", True),
    (["*.md"], "docs/a.md", False),  # one star stays within a segment
    (["*.md"], "README.md", True),
    (["**/migrations/**"], "migrations/001.sql", True),
    (["src/**", "!src/**/*.md"], "src/relay/README.md", False),  # the last match wins
    (["src/**", "!src/**/*.md"], "src/relay/api.py", True),
    (["docs/[ab].md"], "docs/b.md", True),
    (["docs/[ab].md"], "docs/c.md", False),
    (["v?1.txt"], "1.txt", True),  # ? makes the character before it optional
])
def test_path_filters_follow_githubs_pattern_syntax(patterns: list[str], path: str,
                                                    selected: bool) -> None:
    assert path_filter_matches(patterns, path) is selected


def test_which_pushes_start_the_deploy_workflow() -> None:
    deploy = parse_workflow((REPO / "deploy.yml").read_text())
    assert deploy is not None and deploy.push_paths_ignore == ("docs/**", "**.md")
    assert not deploy.push_runs_for(["docs/runbooks/latency.md", "README.md"])
    assert deploy.push_runs_for(["README.md", "src/relay/api.py"])
    only = parse_workflow("on:\n  push:\n    paths: ['src/**']\n")
    assert only is not None
    assert only.push_runs_for(["src/app.py"]) and not only.push_runs_for(["docs/x.md"])
    manual = parse_workflow("on: workflow_dispatch\n")
    assert manual is not None and not manual.push_runs_for(["src/app.py"])
    every = parse_workflow("on: push\n")
    assert every is not None and every.push_runs_for(["docs/x.md"])


@pytest.mark.parametrize(("cron", "monthly"), [
    ("0 3 1 * *", True),
    ("0 9 * * 1", True),
    ("0 3 28 * *", True),
    ("0 3 31 * *", False),  # skips the shorter months
    ("0 3 1 1,4,7,10 *", False),  # quarterly
    ("0 3 1 */2 *", False),
    ("0 3 * * MON", True),
    ("bogus", False),
])
def test_monthly_crons(cron: str, monthly: bool) -> None:
    assert runs_at_least_monthly(cron) is monthly
