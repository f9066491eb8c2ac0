"""P2-003: the rate limiter exports ``rate_limit_breaches_total``, it counts breaches, and
Prometheus scrapes it.

The breach is caused by a bounded burst where ``rate_limit_burst`` is allowed. Where it is
not, a breach already counted (the counter above zero, or an increase in Prometheus over
``service.rate_limit.found_breach_window``) shows the metric at work just as well.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

import opsready

if TYPE_CHECKING:
    from collections.abc import Callable

    from opsready.config import Environment
    from opsready.evidence import Evidence
    from opsready.probes.http import ServiceProbe
    from opsready.probes.prometheus import PrometheusProbe

pytestmark = [pytest.mark.ticket("P2-003")]

BURST = "rate_limit_burst"


def test_breach_counter_exposed(service: ServiceProbe, evidence: Evidence) -> None:
    """/metrics exposes rate_limit_breaches_total as a counter"""
    name = service.cfg.rate_limit_metric
    snapshot = service.metrics()
    family = snapshot.family(name)
    evidence.record("breach_metric", {
        "metric": name,
        "type": None if family is None else family.type,
        "samples": [{"labels": labels, "value": value}
                    for labels, value in snapshot.samples(name)],
    })
    assert family is not None, (
        f"GET {service.base_url}{service.cfg.metrics_path}: no {name} among "
        f"{len(snapshot.families)} metric families; expected the rate limiter to export it as a "
        f"counter; register the counter (and initialise it at zero for each workspace)"
    )
    assert family.type == "counter", (
        f"GET {service.base_url}{service.cfg.metrics_path}: {name} is a {family.type}, expected a "
        f"counter; export it with the counter type so rate() and increase() work"
    )


def test_breach_counted(service: ServiceProbe, opsready_env: Environment,
                        intrusive_allowed: Callable[[str], bool], request: pytest.FixtureRequest,
                        evidence: Evidence) -> None:
    """rate_limit_breaches_total increases after a breach"""
    name = service.cfg.rate_limit_metric
    metrics_url = f"{service.base_url}{service.cfg.metrics_path}"
    snapshot = service.metrics()
    assert snapshot.family(name) is not None, (
        f"GET {metrics_url}: no {name}, so no breach can show in it; expected the rate "
        f"limiter to export it as a counter; register it in the rate limiter"
    )
    # A labelled counter has no series until its first increment: that reads as zero.
    before = snapshot.total(name) or 0.0
    if intrusive_allowed(BURST):
        burst = service.burst()
        evidence.record("burst", burst.evidence())
        assert burst.limited, (
            f"a burst of {burst.sent} {burst.method} {burst.path} requests in "
            f"{burst.elapsed_s:.1f}s (bound: {burst.max_requests} requests, "
            f"{burst.max_seconds:g}s) got no 429, so no breach happened for {name} to count; "
            f"expected the rate limiter to refuse within the bound; enable rate limiting"
        )
        after = service.metrics().total(name)
        evidence.record("breach_counter", {"before": before, "after": after})
        assert after is not None and after > before, (
            f"GET {metrics_url}: {name} went from {before:g} to "
            f"{'absent' if after is None else f'{after:g}'} after the burst got a 429; expected "
            f"it to increase; increment the counter on every 429"
        )
        return
    # The burst is not allowed here: a breach already counted shows the metric at work.
    found: dict[str, object] = {"counter_now": before}
    if before > 0:
        evidence.record("breach_found_already", found)
        return
    if opsready_env.prometheus is not None:
        prometheus: PrometheusProbe = request.getfixturevalue("prometheus")
        window = service.cfg.rate_limit.found_breach_window
        job = prometheus.cfg.service_job.replace("\\", "\\\\").replace('"', '\\"')
        increase = prometheus.value(f'sum(increase({name}{{job="{job}"}}[{window}]))')
        found[f"prometheus_increase_{window}"] = increase
        if increase is not None and increase > 0:
            evidence.record("breach_found_already", found)
            return
    evidence.record("breach_found_already", found)
    opsready.not_covered(
        f"intrusive probe '{BURST}' is not allowed in environment '{opsready_env.name}', and no "
        f"breach was found already ({name} is {before:g}); list it under allow_intrusive or pass "
        f"--allow-intrusive {BURST}"
    )


def test_prometheus_has_series(prometheus: PrometheusProbe, service: ServiceProbe,
                               evidence: Evidence) -> None:
    """Prometheus has the rate_limit_breaches_total series of the service job"""
    name = service.cfg.rate_limit_metric
    series = prometheus.job_series(name)
    evidence.record("prometheus_series", [
        {"labels": dict(s.labels), "value": s.value} for s in series
    ])
    assert series, (
        f"Prometheus at {prometheus.url}: {name}{{job=\"{prometheus.cfg.service_job}\"}} returned no "
        f"series; expected the service job to scrape it; check the scrape config of job "
        f"'{prometheus.cfg.service_job}' and that the service exports {name}"
    )
