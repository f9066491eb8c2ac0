"""P1-002, schedule part: the restore drill is really scheduled and really succeeding.

The criterion passes on either of two pieces of evidence:
- the drill workflow (``github.drill_workflow``) is active, declares a monthly cron that
  really fires (a scheduled run within ``backups.drill_max_age_days``: a manual run alone
  does not make the drill automated), and its most recent run, scheduled or manual
  (cancelled and skipped runs passed over), concluded ``success`` within that window;
- or the drill record (``backups.drill_record_key``) is at most that old and says the drill
  succeeded (its outcome field holds one of ``backups.drill_record_success_values``) with a
  measured RTO within ``restore_drill.rto_target_s``.

A recent record that says the drill failed is a fail, unless a successful workflow run came
after it: the record's outcome is read, not only its time. A record that says the drill
succeeded but took longer than the RTO is no evidence either way (the drill criteria of this
ticket judge the RTO). The
criterion cannot tell whether the drill a run or a record reports restored the right data;
the drill criteria of this ticket judge that when they run.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import pytest

import opsready
from opsready import ProbeError
from opsready.probes.github import newest_concluded
from opsready.schedules import parse_workflow

if TYPE_CHECKING:
    from opsready.config import Environment
    from opsready.evidence import Evidence
    from opsready.probes.github import GithubProbe, WorkflowRun
    from opsready.probes.s3 import BackupStore, DrillRecord

pytestmark = [pytest.mark.ticket("P1-002")]


def _drill_workflow(github: GithubProbe, name: str, max_age: float,
                    found: dict[str, Any]) -> tuple[bool, WorkflowRun | None, str]:
    """Whether the workflow schedules the drill monthly and last succeeded in the window;
    its newest successful run; and what is wrong otherwise."""
    workflow = github.workflow(name)
    if workflow is None:
        found["workflow"] = {"name": name, "found": False}
        return False, None, f"workflow {name} not found"
    text = github.get_file(workflow.path)
    parsed = parse_workflow(text) if text is not None else None
    runs = github.runs(workflow, status="completed", limit=50)
    run = newest_concluded(runs)
    fired = max((r for r in runs if r.event == "schedule"), key=lambda r: r.created_at,
                default=None)
    found["workflow"] = {"path": workflow.path, "state": workflow.state,
                         "crons": list(parsed.crons) if parsed else None,
                         "monthly": bool(parsed and parsed.monthly),
                         "last_scheduled_run": None if fired is None else fired.summary(),
                         "last_run": None if run is None else run.summary()}
    success = run if run is not None and run.conclusion == "success" else None
    if not workflow.active:
        return False, success, f"{workflow.path} is {workflow.state}"
    if parsed is None or not parsed.scheduled:
        return False, success, f"{workflow.path} has no schedule (manual runs only)"
    if not parsed.monthly:
        return False, success, f"{workflow.path} has schedule {list(parsed.crons)}, not monthly"
    if fired is None or fired.age_days() > max_age:
        return False, success, (f"the schedule of {workflow.path} has not fired within "
                                f"{max_age:g} days (a manual run alone does not make the drill "
                                f"automated)")
    if run is None:
        return False, None, f"{workflow.path} has never run to a conclusion"
    if run.conclusion != "success":
        return False, None, (f"the last run of {workflow.path} "
                             f"({run.created_at:%Y-%m-%d}) concluded {run.conclusion!r}")
    if run.age_days() > max_age:
        return False, run, (f"the last run of {workflow.path} succeeded "
                            f"{run.age_days():.0f} days ago")
    return True, run, ""


def _record_verdict(record: DrillRecord, backups: BackupStore,
                    rto_target: float | None) -> tuple[bool | None, str]:
    """True: the record says the drill succeeded within the RTO; False: it says the drill
    failed; None: it does not say that the drill succeeded within the RTO."""
    cfg = backups.cfg
    if record.outcome is None:
        return None, f"{record.key} has no '{cfg.drill_record_outcome_field}'"
    if record.outcome not in cfg.drill_record_success_values:
        return False, f"{record.key} says the drill ended {record.outcome!r}"
    if rto_target is not None:
        if record.rto_seconds is None:
            return None, (f"{record.key} says {record.outcome!r} but carries no "
                          f"'{cfg.drill_record_rto_field}'")
        if record.rto_seconds > rto_target:
            return None, (f"{record.key} says the drill took {record.rto_seconds:g} s, over "
                          f"the RTO of {rto_target:g} s")
    return True, ""


def test_restore_drill_scheduled(backups: BackupStore, opsready_env: Environment,
                                 request: pytest.FixtureRequest, evidence: Evidence) -> None:
    """A restore drill is scheduled monthly and succeeding, or the last recorded drill succeeded recently"""
    workflow_name = opsready_env.github.drill_workflow if opsready_env.github else ""
    record_key = backups.cfg.drill_record_key
    if not workflow_name and not record_key:
        opsready.not_covered("not configured: github.drill_workflow or backups.drill_record_key")
    max_age = backups.cfg.drill_max_age_days
    rto_target = opsready_env.restore_drill.rto_target_s if opsready_env.restore_drill else None
    found: dict[str, Any] = {"max_age_days": max_age, "rto_target_s": rto_target}
    errors: list[ProbeError] = []
    scheduled, last_success, workflow_problem = False, None, "not configured (github.drill_workflow)"
    if workflow_name:
        try:
            scheduled, last_success, workflow_problem = _drill_workflow(
                request.getfixturevalue("github"), workflow_name, max_age, found)
        except ProbeError as exc:
            errors.append(exc)
            workflow_problem = "could not be read"
    record: DrillRecord | None = None
    verdict: bool | None = None
    record_problem = "not configured (backups.drill_record_key)"
    if record_key:
        try:
            record = backups.drill_record()
        except ProbeError as exc:
            errors.append(exc)
            record_problem = "could not be read"
        else:
            record_problem = f"none at s3://{backups.bucket}/{record_key}"
    if record is not None:
        verdict, record_problem = _record_verdict(record, backups, rto_target)
        found["drill_record"] = {"key": record.key, "finished_at": record.finished_at.isoformat(),
                                 "age_days": round(record.age_days(), 2),
                                 "outcome": record.outcome, "rto_seconds": record.rto_seconds}
        if verdict is not False and record.age_days() > max_age:
            verdict, record_problem = None, f"{record.key} is {record.age_days():.0f} days old"
    evidence.record("drill_schedule", found)
    if verdict is False and record is not None and record.age_days() <= max_age:
        newer_success = last_success is not None and \
            last_success.created_at > record.finished_at.astimezone(dt.UTC)
        assert newer_success, (
            f"restore drill: the last drill failed: {record_problem} "
            f"({record.age_days():.0f} days ago), and no successful drill run came after it; "
            f"expected the latest drill to have succeeded within the RTO; fix the restore and "
            f"run the drill again"
        )
    if scheduled or verdict is True:
        return
    if errors:
        raise errors[0]  # one side could not be read, and the other does not pass
    assert False, (  # noqa: B011 - the message is the finding
        f"restore drill: the drill workflow: {workflow_problem}; the last drill record: "
        f"{record_problem}; expected a workflow with a monthly `schedule` whose last run "
        f"succeeded within {max_age:g} days, or a drill record at most {max_age:g} days old "
        f"that says the drill succeeded within the RTO; schedule the drill workflow monthly"
    )
