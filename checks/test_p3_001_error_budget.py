"""P3-001: error-budget tracking is automated: the SLO recording rules run in Prometheus, the four
SLIs compute from it now, and the weekly SLO report job runs.

The run's SLO table (evidence ``slo_table``) is computed here from the live Prometheus; the
definitions of budget remaining and burn rate are in ``PrometheusProbe.slo_status``.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import pytest

import opsready
from opsready._errors import UnexpectedResponse
from opsready.assertions import rules_loaded_and_healthy

if TYPE_CHECKING:
    from opsready.config import SloConfig
    from opsready.evidence import Evidence
    from opsready.probes.github import GithubProbe
    from opsready.probes.prometheus import PrometheusProbe

pytestmark = [pytest.mark.ticket("P3-001")]


def test_slo_recording_rules_loaded(prometheus: PrometheusProbe, evidence: Evidence) -> None:
    """The SLO recording rules are loaded and healthy"""
    wanted = prometheus.cfg.slo_recording_rules
    if not wanted:
        opsready.not_covered("not configured: prometheus.slo_recording_rules")
    loaded = {r.name: r for r in prometheus.recording_rules()}
    evidence.record("recording_rules", [loaded[n].summary() if n in loaded else
                                        {"name": n, "loaded": False} for n in wanted])
    rules_loaded_and_healthy(
        f"Prometheus at {prometheus.url}", "recording", loaded, wanted,
        "add the SLO rule file to rule_files in prometheus.yml and reload Prometheus",
    )


def test_slis_compute_now(prometheus: PrometheusProbe, slo_config: SloConfig,
                          evidence: Evidence) -> None:
    """The SLIs of the SLOs compute from Prometheus now"""
    if not slo_config.slos:
        opsready.not_covered("not configured: slo.slos")
    statuses = [prometheus.slo_status(spec, slo_config) for spec in slo_config.slos]
    evidence.table("slo_table", [s.row() for s in statuses], note=f"SLO window {slo_config.window_days:g} days; "
                   f"current value and burn rate over the last {slo_config.current_window}")
    evidence.record("slo_queries", {s.name: {"query": s.query, "note": s.note} for s in statuses})
    missing = [f"{s.name} ({s.note}; query {s.query!r})" for s in statuses if s.value is None]
    assert not missing, (
        f"Prometheus at {prometheus.url}: {len(missing)} of {len(statuses)} SLIs did not "
        f"compute: {'; '.join(missing)}; expected a number for each; check that the metrics "
        f"are scraped and that slo.slos[].query matches their names and labels"
    )


def test_slo_report_job_recent(github: GithubProbe, evidence: Evidence) -> None:
    """The weekly SLO report job exists and ran successfully recently"""
    file = github.cfg.slo_report_workflow
    max_age = github.cfg.slo_report_max_age_days
    workflow = github.workflow(file)
    assert workflow is not None, (
        f"GitHub {github.repo}: no workflow {file}; expected the weekly SLO report job; add "
        f".github/workflows/{file} (or fix github.slo_report_workflow)"
    )
    run = github.latest_run(str(workflow.get("id", file)), branch=None, status="success")
    age_days = None if run is None else _age_days(str(run.get("created_at", "")))
    evidence.record("slo_report", {
        "workflow": workflow.get("path", file), "state": workflow.get("state"),
        "last_success": None if run is None else {
            "created_at": run.get("created_at"), "event": run.get("event"),
            "url": run.get("html_url"), "age_days": None if age_days is None
            else round(age_days, 2)},
    })
    assert run is not None, (
        f"GitHub {github.repo}: {file} has no successful run on {github.branch}; expected one "
        f"in the last {max_age:g} days; check its schedule trigger and the failed runs"
    )
    if age_days is None:
        raise UnexpectedResponse(
            f"GitHub {github.repo}: the last successful run of {file} has no readable "
            f"created_at ({run.get('created_at')!r})"
        )
    assert age_days <= max_age, (
        f"GitHub {github.repo}: the last successful run of {file} is {age_days:.1f} days old "
        f"({run.get('created_at')}), expected at most {max_age:g} days; the weekly report has "
        f"stopped: check the workflow's schedule and its recent failures"
    )


def _age_days(stamp: str) -> float | None:
    try:
        when = dt.datetime.fromisoformat(stamp)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return (dt.datetime.now(dt.UTC) - when).total_seconds() / 86400
