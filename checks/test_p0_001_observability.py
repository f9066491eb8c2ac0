"""P0-001, observability part: the Phase 3 alert rules are imported into Prometheus and can
fire, the service is scraped, and the Grafana dashboards are imported and render.

What each criterion can and cannot tell:

- *Loaded with health ok* proves the configured rules evaluate without error: every rule of
  each configured name within the scope (``prometheus.rule_groups``/``rule_files``), since
  names need not be unique and a healthy namesake must not hide a broken rule. It cannot
  tell that they would ever fire: ``health: ok`` holds for a rule over a misspelt metric too.
  A rule not evaluated yet (health ``unknown``, just after a reload) is not covered.
- *Can fire* asks Prometheus, for every selector of every judged rule (the configured names,
  and every rule of ``prometheus.rule_groups``/``rule_files`` when a scope is set), whether it
  matches a series now, as Cloudflare pint's ``promql/series`` does. Selectors that the
  expression expects to be empty (inside ``absent()``, the side of ``or vector(…)`` the
  fallback covers, the right of ``unless``) and those listed in
  ``prometheus.series_may_be_empty`` are exempt. It cannot tell that a threshold is sensible.
- *Target up* reads Prometheus' view of the service job; it cannot see instances that are not
  in the scrape configuration.
- *Dashboards present* finds each dashboard by uid with at least one panel. *Dashboards
  render* resolves every panel's (and target's) datasource through Grafana's datasource API
  and requires one of ``grafana.datasource_types``; a library panel is read from the panel
  library (the dashboard holds only its reference), and one the library no longer has does
  not render. Dashboards with no datasource to judge leave it not covered. It cannot tell
  that a panel's query returns data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

import opsready
from opsready.assertions import rules_loaded_and_healthy, selectors_match_series
from opsready.probes.grafana import resolve_datasources

if TYPE_CHECKING:
    from opsready.evidence import Evidence
    from opsready.probes.grafana import GrafanaProbe
    from opsready.probes.prometheus import PrometheusProbe

pytestmark = [pytest.mark.ticket("P0-001")]


def test_alert_rules_loaded(prometheus: PrometheusProbe, evidence: Evidence) -> None:
    """The Prometheus alert rules are loaded with health ok"""
    wanted = prometheus.cfg.alert_rules
    if not wanted:
        opsready.not_covered("not configured: prometheus.alert_rules")
    build = prometheus.buildinfo()
    evidence.record("prometheus", {"url": prometheus.url, "version": build.get("version")})
    rules = prometheus.scoped_rules("alert")
    names = {r.name for r in rules}
    evidence.record("alert_rules", [r.summary() for r in rules if r.name in wanted] +
                    [{"name": n, "loaded": False} for n in wanted if n not in names])
    rules_loaded_and_healthy(
        f"Prometheus at {prometheus.url}", "alert", rules, wanted,
        "add the rule file to rule_files in prometheus.yml and reload Prometheus",
    )


def test_alert_rules_can_fire(prometheus: PrometheusProbe, evidence: Evidence) -> None:
    """Every selector of the alert rules matches a series now, so the rules can fire"""
    cfg = prometheus.cfg
    scoped = bool(cfg.rule_groups or cfg.rule_files)
    if not cfg.alert_rules and not scoped:
        opsready.not_covered("not configured: prometheus.alert_rules (or rule_groups/rule_files)")
    rules = [r for r in prometheus.scoped_rules("alert")
             if r.name in cfg.alert_rules or scoped]
    evidence.record("judged_alert_rules", [r.name for r in rules])
    assert rules, (
        f"Prometheus at {prometheus.url}: none of the alert rules "
        f"{', '.join(cfg.alert_rules) or 'in scope'} is loaded, so none can fire; expected "
        f"them loaded; import the alert rule files"
    )
    statuses = prometheus.rule_series(rules)
    evidence.table("alert_rule_selectors", [
        {"rule": s.rule, "selector": str(s.selector), "matches": s.matches, "exempt": s.exempt}
        for s in statuses])
    selectors_match_series(f"Prometheus at {prometheus.url}", "alert", statuses)


def test_service_target_up(prometheus: PrometheusProbe, evidence: Evidence) -> None:
    """The service's Prometheus scrape target is up"""
    job = prometheus.cfg.service_job
    if not job:
        opsready.not_covered("not configured: prometheus.service_job")
    targets = prometheus.targets(job)
    evidence.record("scrape_targets", [
        {"job": t.job, "url": t.scrape_url, "health": t.health, "last_scrape": t.last_scrape,
         "last_error": t.last_error} for t in targets
    ])
    assert targets, (
        f"Prometheus at {prometheus.url}: no active scrape target for job '{job}'; expected the "
        f"service to be scraped; add a scrape config for job '{job}' (or fix "
        f"prometheus.service_job)"
    )
    down = [f"{t.scrape_url} ({t.health}: {t.last_error or 'no error text'})"
            for t in targets if t.health != "up"]
    assert not down, (
        f"Prometheus at {prometheus.url}: job '{job}' targets {'; '.join(down)} are not up, "
        f"expected up; check that the service's metrics endpoint is reachable from Prometheus"
    )


def test_grafana_dashboards_present(grafana: GrafanaProbe, evidence: Evidence) -> None:
    """The Grafana dashboards are present by uid, each with at least one panel"""
    uids = grafana.cfg.dashboards
    if not uids:
        opsready.not_covered("not configured: grafana.dashboards")
    boards = grafana.dashboards(uids)
    evidence.record("dashboards", [
        {"uid": uid, "found": False} if b is None else
        {"uid": uid, "title": b.title, "panels": b.panels, "version": b.version,
         "folder": b.folder}
        for uid, b in boards.items()
    ])
    missing = [uid for uid, b in boards.items() if b is None]
    assert not missing, (
        f"Grafana at {grafana.cfg.url}: dashboards {', '.join(missing)} answered 404; expected "
        f"every configured dashboard uid to exist; import the dashboard JSON from the repository"
    )
    empty = [f"{uid} ({b.title!r})" for uid, b in boards.items() if b is not None and b.panels < 1]
    assert not empty, (
        f"Grafana at {grafana.cfg.url}: dashboards {', '.join(empty)} have no panels, expected "
        f"at least one; re-import the full dashboard JSON"
    )


def test_grafana_dashboards_render(grafana: GrafanaProbe, evidence: Evidence) -> None:
    """Every panel of the dashboards queries a datasource Grafana has, of the configured type"""
    uids = grafana.cfg.dashboards
    if not uids:
        opsready.not_covered("not configured: grafana.dashboards")
    kinds = grafana.cfg.datasource_types
    datasources = grafana.datasources()
    evidence.record("datasources", [{"uid": d.uid, "name": d.name, "type": d.type,
                                     "default": d.is_default} for d in datasources])
    boards = grafana.dashboards(uids)
    absent = [uid for uid, b in boards.items() if b is None]
    assert not absent, (
        f"Grafana at {grafana.cfg.url}: dashboards {', '.join(absent)} answered 404, so their "
        f"panels cannot render; import the dashboard JSON from the repository"
    )
    unresolved: list[str] = []
    wrong: list[str] = []
    rows = []
    judged = len([p for b in boards.values() if b is not None for p in b.missing_library_panels])
    for uid, board in boards.items():
        assert board is not None
        unresolved += [f"{uid}: panel {p} is gone from the panel library"
                       for p in board.missing_library_panels]
        for panel in resolve_datasources(board, datasources):
            found = panel.datasource
            rows.append({"dashboard": uid, "panel": panel.ref.panel, "ref": panel.ref.text(),
                         "resolved": None if found is None else f"{found.name} ({found.type})",
                         "detail": panel.detail})
            if panel.built_in:
                continue
            judged += 1
            if found is None:
                unresolved.append(f"{uid}: panel {panel.ref.panel!r} -> {panel.ref.text()} "
                                  f"({panel.detail})")
            elif kinds and found.type not in kinds:
                wrong.append(f"{uid}: panel {panel.ref.panel!r} -> {found.name} of type "
                             f"{found.type}")
    evidence.table("panel_datasources", rows)
    assert not unresolved, (
        f"Grafana at {grafana.cfg.url}: {len(unresolved)} panel(s) point at a datasource "
        f"Grafana does not have, so they do not render: {'; '.join(unresolved)}; expected every "
        f"panel's datasource among the {len(datasources)} datasources of Grafana; re-import "
        f"the dashboard choosing the datasource for its ${{DS_…}} inputs, or point the panels "
        f"at an existing datasource uid"
    )
    if not judged:
        opsready.not_covered(f"Grafana at {grafana.cfg.url}: no panel of the dashboards names a "
                             f"datasource that could be judged (text panels, built-ins only)")
    assert not wrong, (
        f"Grafana at {grafana.cfg.url}: {'; '.join(wrong)}; expected datasources of type "
        f"{', '.join(kinds)} (grafana.datasource_types); point the panels at the Prometheus "
        f"datasource"
    )
