"""P2-004: the service exports its DB connection-pool gauges, Prometheus scrapes them, and a
pool-exhaustion alert is built on them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

import opsready

if TYPE_CHECKING:
    from opsready.evidence import Evidence
    from opsready.probes.http import ServiceProbe
    from opsready.probes.prometheus import PrometheusProbe

pytestmark = [pytest.mark.ticket("P2-004")]


def _pool_metrics(service: ServiceProbe) -> list[str]:
    names = list(service.cfg.pool_metrics)
    if not names:
        opsready.not_covered("not configured: service.pool_metrics")
    return names


def test_pool_gauges_exposed(service: ServiceProbe, evidence: Evidence) -> None:
    """/metrics exposes the db_connection_pool_* gauges"""
    names = _pool_metrics(service)
    snapshot = service.metrics()
    found = {n: snapshot.family(n) for n in names}
    evidence.record("pool_gauges", {
        n: None if f is None else {"type": f.type, "samples": snapshot.samples(n)}
        for n, f in found.items()
    })
    url = f"{service.base_url}{service.cfg.metrics_path}"
    missing = [n for n, f in found.items() if f is None]
    assert not missing, (
        f"GET {url}: {', '.join(missing)} absent ({len(snapshot.families)} families exposed); "
        f"expected every pool gauge; export the pool's stats (size, in use, available, "
        f"waiting) as gauges"
    )
    wrong = [f"{n} is a {f.type}" for n, f in found.items() if f is not None and f.type != "gauge"]
    assert not wrong, f"GET {url}: {'; '.join(wrong)}, expected gauges; export them as gauges"


def test_prometheus_has_pool_series(prometheus: PrometheusProbe, service: ServiceProbe,
                                    evidence: Evidence) -> None:
    """Prometheus has each pool series for the service's job"""
    names = _pool_metrics(service)
    job = prometheus.cfg.service_job
    series = {n: prometheus.job_series(n) for n in names}
    evidence.record("prometheus_series", {
        n: [{"labels": dict(s.labels), "value": s.value} for s in found]
        for n, found in series.items()
    })
    missing = [n for n, found in series.items() if not found]
    assert not missing, (
        f"Prometheus at {prometheus.url}: no series for {', '.join(missing)} with "
        f"job=\"{job}\"; expected each pool gauge to be scraped; check that job '{job}' scrapes "
        f"the service and that /metrics exports them"
    )


def test_pool_alert_uses_gauges(prometheus: PrometheusProbe, service: ServiceProbe,
                                evidence: Evidence) -> None:
    """A loaded pool-exhaustion alert rule uses the pool gauges"""
    names = _pool_metrics(service)
    wanted = prometheus.cfg.pool_alert_rule
    rules = prometheus.alert_rules()
    using = {r.name: [n for n in names if r.uses(n)] for r in rules}
    evidence.record("alert_rules_using_pool_gauges",
                    {name: used for name, used in using.items() if used})
    if wanted:
        rule = next((r for r in rules if r.name == wanted), None)
        assert rule is not None, (
            f"Prometheus at {prometheus.url}: alert rule {wanted} is not loaded "
            f"({len(rules)} alert rules loaded); expected the pool-exhaustion alert; import the "
            f"alert rules into Prometheus"
        )
        evidence.record("pool_alert_rule", {"name": rule.name, "expr": rule.query,
                                            "health": rule.health})
        assert using[rule.name], (
            f"Prometheus at {prometheus.url}: alert rule {wanted} does not use any of "
            f"{', '.join(names)} (expr: {rule.query!r}); expected it to alert on the pool gauges"
        )
        assert rule.health == "ok", (
            f"Prometheus at {prometheus.url}: alert rule {wanted} has health {rule.health} "
            f"({rule.last_error or 'no error text'}), expected ok; fix its expression"
        )
        return
    assert any(using.values()), (
        f"Prometheus at {prometheus.url}: none of the {len(rules)} loaded alert rules uses "
        f"{', '.join(names)}; expected a pool-exhaustion alert on them; add one (and name it "
        f"in prometheus.pool_alert_rule)"
    )
