"""P0-001, observability part: the Phase 3 alert rules are imported into Prometheus, the service
is scraped, and the Grafana dashboards are imported."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

import opsready
from opsready.assertions import rules_loaded_and_healthy

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
    loaded = {r.name: r for r in prometheus.alert_rules()}
    evidence.record("alert_rules", [loaded[n].summary() if n in loaded else
                                    {"name": n, "loaded": False} for n in wanted])
    rules_loaded_and_healthy(
        f"Prometheus at {prometheus.url}", "alert", loaded, wanted,
        "add the rule file to rule_files in prometheus.yml and reload Prometheus",
    )


def test_service_target_up(prometheus: PrometheusProbe, evidence: Evidence) -> None:
    """The service's Prometheus scrape target is up"""
    job = prometheus.cfg.service_job
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
    boards = {uid: grafana.dashboard(uid) for uid in uids}
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
