"""P3-001, automation part: the weekly SLO report runs on its own.

"Automated" means scheduled: the workflow must be active, its file must declare a
``schedule:`` trigger, and its newest scheduled run (``event: schedule``; cancelled and
skipped runs passed over) must have succeeded within ``github.slo_report_max_age_days``. A
manual run (``workflow_dispatch``) alone does not make the report automated. The criterion
cannot tell whether the report's numbers are right or whether anyone reads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

import opsready
from opsready._errors import UnexpectedResponse
from opsready.probes.github import newest_concluded
from opsready.schedules import parse_workflow

if TYPE_CHECKING:
    from opsready.evidence import Evidence
    from opsready.probes.github import GithubProbe

pytestmark = [pytest.mark.ticket("P3-001")]


def test_slo_report_job_recent(github: GithubProbe, evidence: Evidence) -> None:
    """The weekly SLO report job is scheduled and its last scheduled run succeeded recently"""
    file = github.cfg.slo_report_workflow
    if not file:
        opsready.not_covered("not configured: github.slo_report_workflow")
    max_age = github.cfg.slo_report_max_age_days
    workflow = github.workflow(file)
    assert workflow is not None, (
        f"GitHub {github.repo}: no workflow {file}; expected the weekly SLO report job; add "
        f".github/workflows/{file} (or fix github.slo_report_workflow)"
    )
    text = github.get_file(workflow.path)
    parsed = parse_workflow(text) if text is not None else None
    if parsed is None:
        raise UnexpectedResponse(
            f"github: {workflow.path} in {github.repo} could not be read as a workflow file")
    scheduled = github.runs(workflow, event="schedule", status="completed", limit=30)
    run = newest_concluded(scheduled)
    manual = github.runs(workflow, event="workflow_dispatch", status="success", limit=1)
    evidence.record("slo_report", {
        "workflow": workflow.path, "state": workflow.state, "crons": list(parsed.crons),
        "max_age_days": max_age,
        "last_scheduled_run": None if run is None else run.summary(),
        "last_manual_success": manual[0].summary() if manual else None,
    })
    assert workflow.active, (
        f"GitHub {github.repo}: {workflow.path} is {workflow.state!r}; a disabled workflow "
        f"runs no report; enable it"
    )
    assert parsed.scheduled, (
        f"GitHub {github.repo}: {workflow.path} declares no `schedule:` trigger (events: "
        f"{', '.join(sorted(parsed.events)) or 'none'}); a report run by hand is not automated; "
        f"add `on: schedule: - cron: ...` (weekly)"
    )
    assert run is not None, (
        f"GitHub {github.repo}: {workflow.path} has no finished scheduled run; expected one in "
        f"the last {max_age:g} days; check that the schedule fires (GitHub pauses schedules "
        f"in inactive repositories)"
    )
    assert run.conclusion == "success", (
        f"GitHub {github.repo}: the last scheduled run of {workflow.path} "
        f"({run.created_at:%Y-%m-%d %H:%M}Z, {run.html_url}) concluded {run.conclusion!r}; "
        f"expected success; fix the job and re-run that scheduled run (a separate manual run "
        f"does not count)"
    )
    assert run.age_days() <= max_age, (
        f"GitHub {github.repo}: the last scheduled run of {workflow.path} succeeded "
        f"{run.age_days():.1f} days ago ({run.created_at:%Y-%m-%d}), expected at most "
        f"{max_age:g} days (github.slo_report_max_age_days); the weekly report has stopped: "
        f"check the schedule and the recent runs"
    )
