"""P3-001: error-budget tracking is automated: the SLO recording rules run in Prometheus and
produce series, and the SLIs compute from it now with their error-budget columns. (The weekly
SLO report job is judged in test_p3_001_slo_report_job.py.)

The run's SLO table (``evidence.table("slo_table", …)``) is computed here from the live
Prometheus; the definitions of budget remaining and burn rate are in
``PrometheusProbe.slo_status``.

What each criterion can and cannot tell:

- *Recording rules loaded* proves they evaluate; *recording rules produce series* proves each
  one's own output series exists now and every selector it reads matches a series. A selector
  covered by ``prometheus.series_may_be_empty`` is not asked, the rule's own output included.
  When the output is empty, everything it must read is there, and an input listed in
  ``series_may_be_empty`` has no series now (a ratio without ``or vector(0)`` whose 5xx
  numerator has seen no event yet, as Sloth generates it), the criterion is not covered: an
  empty output then says nothing about the rule until that input's first event.
- *SLIs compute* requires a number for every SLO over ``slo.current_window``. A query that
  matches no series fails (wrong names or labels, or nothing scraped). A query that matches
  but had no events in the window (NaN: a quiet window) cannot be judged and is not covered,
  with the reason. An availability SLI built only from request counts cannot see a full
  outage (no request reaches the service to be counted), so it keeps its last value; an
  ``up_query`` (``up`` or a blackbox ``probe_success``) makes it fall, and a row without one
  says so.
- *Error budget computed* requires the budget-remaining and burn-rate columns for every SLO,
  or says why not. When Prometheus keeps less than ``slo.window_days`` (its retention, read
  from ``/api/v1/status/runtimeinfo``), the budget is computed over the retention and the
  table's ``budget_window`` says so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

import opsready
from opsready.assertions import rules_loaded_and_healthy, selectors_match_series

if TYPE_CHECKING:
    from opsready.config import SloConfig
    from opsready.evidence import Evidence
    from opsready.probes.prometheus import PrometheusProbe, SloStatus

pytestmark = [pytest.mark.ticket("P3-001")]


@pytest.fixture(scope="module")
def slo_statuses(prometheus: PrometheusProbe, slo_config: SloConfig) -> list[SloStatus]:
    """Every configured SLO measured once, for the SLI and the budget criteria."""
    if not slo_config.slos:
        opsready.not_covered("not configured: slo.slos")
    retention = prometheus.retention()
    return prometheus.slo_statuses(slo_config.slos, slo_config, retention.seconds)


def test_slo_recording_rules_loaded(prometheus: PrometheusProbe, evidence: Evidence) -> None:
    """The SLO recording rules are loaded and healthy"""
    wanted = prometheus.cfg.slo_recording_rules
    if not wanted:
        opsready.not_covered("not configured: prometheus.slo_recording_rules")
    rules = prometheus.recording_rules()
    names = {r.name for r in rules}
    evidence.record("recording_rules", [r.summary() for r in rules if r.name in wanted] +
                    [{"name": n, "loaded": False} for n in wanted if n not in names])
    rules_loaded_and_healthy(
        f"Prometheus at {prometheus.url}", "recording", rules, wanted,
        "add the SLO rule file to rule_files in prometheus.yml and reload Prometheus",
    )


def test_slo_recording_rules_produce_series(prometheus: PrometheusProbe,
                                            evidence: Evidence) -> None:
    """The SLO recording rules produce series, and every selector they read matches one"""
    wanted = prometheus.cfg.slo_recording_rules
    if not wanted:
        opsready.not_covered("not configured: prometheus.slo_recording_rules")
    rules = [r for r in prometheus.recording_rules() if r.name in wanted]
    assert rules, (
        f"Prometheus at {prometheus.url}: none of the recording rules {', '.join(wanted)} is "
        f"loaded, so none produces a series; add the SLO rule file and reload Prometheus"
    )
    statuses = prometheus.rule_series(rules, own_output=True)
    evidence.table("recording_rule_series", [
        {"rule": s.rule, "selector": str(s.selector), "matches": s.matches, "exempt": s.exempt}
        for s in statuses])
    # A rule not evaluated yet (health unknown, just reloaded) has no output yet: that says
    # nothing. What it reads must exist all the same.
    not_evaluated = {r.name for r in rules if r.health == "unknown"}
    pending = [s for s in statuses if s.rule in not_evaluated and s.selector.metric == s.rule]
    # An output that is empty because an input listed as legitimately empty is empty (no 5xx
    # yet for a ratio without `or vector(0)`) records nothing until that input's first event.
    waiting = [s for s in statuses if s.exempt and s.matches is False and s not in pending]
    selectors_match_series(f"Prometheus at {prometheus.url}", "recording",
                           [s for s in statuses if s not in pending and s not in waiting])
    if any(s.matches is False for s in pending):
        opsready.not_covered(
            f"Prometheus at {prometheus.url}: recording rules {', '.join(sorted(not_evaluated))} "
            f"have not been evaluated yet (health unknown), so their output cannot be judged; "
            f"run again after one evaluation interval")
    if waiting:
        opsready.not_covered(
            f"Prometheus at {prometheus.url}: "
            f"{'; '.join(f'{s.selector} {s.exempt}' for s in waiting)}, so whether the rule "
            f"records cannot be seen until that input's first event; run again after one, or "
            f"add `or vector(0)` to the rule, or list its output under "
            f"prometheus.series_may_be_empty")


def test_slis_compute_now(prometheus: PrometheusProbe, slo_config: SloConfig,
                          slo_statuses: list[SloStatus], evidence: Evidence) -> None:
    """The SLIs of the SLOs compute from Prometheus now"""
    evidence.table("slo_table", [s.row() for s in slo_statuses])
    evidence.record("slo_queries", {s.name: {"query": s.query, "note": s.note}
                                    for s in slo_statuses})
    request_only = [spec.name for spec in slo_config.slos
                    if spec.objective == "ge" and not spec.up_query]
    if request_only:
        evidence.record("slo_limits", {name: "no up_query: a full outage, in which no request "
                                             "is counted, does not lower this SLI"
                                       for name in request_only})
    absent = [f"{s.name} (query {s.query!r})" for s in slo_statuses if s.missing == "no_series"]
    assert not absent, (
        f"Prometheus at {prometheus.url}: {len(absent)} of {len(slo_statuses)} SLIs match no "
        f"series over {slo_config.current_window}: {'; '.join(absent)}; expected a number for "
        f"each; check that the metrics are scraped and that slo.slos[].query matches their "
        f"names and labels"
    )
    quiet = [s.name for s in slo_statuses if s.missing == "no_events"]
    if quiet:
        opsready.not_covered(
            f"Prometheus at {prometheus.url}: {', '.join(quiet)} had no events over "
            f"{slo_config.current_window} (the SLI is NaN: a quiet window), so it cannot be "
            f"judged now; judge it when there is traffic, or widen slo.current_window"
        )


def test_error_budget_computed(prometheus: PrometheusProbe, slo_statuses: list[SloStatus],
                               evidence: Evidence) -> None:
    """The error-budget and burn-rate columns compute for every SLO"""
    evidence.record("error_budget", [
        {"slo": s.name, "budget_fraction": s.budget_fraction, "bad_fraction": s.bad_fraction,
         "budget_remaining": s.budget_remaining, "burn_rate": s.burn_rate,
         "budget_window": s.budget_window, "window": s.window, "note": s.note}
        for s in slo_statuses])
    missing = [s for s in slo_statuses if s.budget_remaining is None or s.burn_rate is None]
    no_series = [f"{s.name} ({s.note})" for s in missing if "no series" in s.note]
    assert not no_series, (
        f"Prometheus at {prometheus.url}: the error budget of {'; '.join(no_series)} cannot be "
        f"computed because a query matches no series; fix slo.slos[].query or bad_query"
    )
    if missing:
        opsready.not_covered(
            f"Prometheus at {prometheus.url}: the budget and burn-rate columns of "
            f"{'; '.join(f'{s.name} ({s.note})' for s in missing)} could not be computed"
        )
