"""P2-003: the rate limiter exports its breach counter (``service.rate_limit_metric``), it counts
breaches, and Prometheus scrapes it.

What each criterion can and cannot tell:

- *Exposed as a counter* reads ``service.metrics_path`` in the format it really serves (the
  parser follows ``Content-Type``: Prometheus text or OpenMetrics) and judges the family's
  type, so a gauge that happens to end in ``_total`` fails. With
  ``service.metrics_per_instance`` (several instances behind one URL) it reads the type every
  instance declared in its last scrape from Prometheus instead, and names the instance that
  differs. The instances are the job's active targets (``/api/v1/targets``), not those that
  declared the metric: an instance that is up but exports no counter (an old image, another
  deployment) fails by name; a target that is down cannot be read, and the criterion is then
  not covered. It cannot tell that the counter is incremented on every 429.
- *Counts breaches* causes one with a bounded burst where ``rate_limit_burst`` is allowed and
  reads the counter before and after (behind a load balancer, the increase summed over the
  instances in Prometheus). Where the burst is not allowed, or ``service.rate_limit.path`` is
  empty so there is nothing to burst, a breach already counted (the
  counter above zero, or an increase in Prometheus over
  ``service.rate_limit.found_breach_window``) shows the counter at work just as well; without
  one the criterion is not covered.
- *Prometheus has the series* proves the scrape reaches the counter; a labelled counter with
  no breach yet may have no series, which the rate limiter avoids by initialising it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

import opsready
from opsready.assertions import all_targets_up
from opsready.fixtures import per_instance_prometheus

if TYPE_CHECKING:
    from collections.abc import Callable

    from opsready.config import Environment
    from opsready.evidence import Evidence
    from opsready.probes.http import ServiceProbe
    from opsready.probes.prometheus import PrometheusProbe

pytestmark = [pytest.mark.ticket("P2-003")]

BURST = "rate_limit_burst"


def _metric(service: ServiceProbe) -> str:
    name = service.cfg.rate_limit_metric
    if not name:
        opsready.not_covered("not configured: service.rate_limit_metric")
    return name


def test_breach_counter_exposed(service: ServiceProbe, opsready_env: Environment,
                                request: pytest.FixtureRequest, evidence: Evidence) -> None:
    """/metrics exposes rate_limit_breaches_total as a counter"""
    name = _metric(service)
    url = f"{service.base_url}{service.cfg.metrics_path}"
    prometheus = per_instance_prometheus(service, opsready_env, request)
    if prometheus is not None:
        job = prometheus.cfg.service_job
        targets = prometheus.instance_targets()
        declared = prometheus.target_metadata(name)
        evidence.record("breach_metric_per_instance", {
            "targets": {i: t.health for i, t in targets.items()},
            "declared": [{"instance": m.instance, "metric": m.metric, "type": m.type}
                         for m in declared]})
        assert targets, (
            f"Prometheus at {prometheus.url}: job '{job}' has no active target, so no instance "
            f"behind {url} is scraped; expected every instance as a target; check the scrape "
            f"config of job '{job}'"
        )
        up = sorted(i for i, t in targets.items() if t.health == "up")
        lacking = sorted(set(up) - {m.instance for m in declared})
        assert not lacking, (
            f"Prometheus at {prometheus.url}: instance(s) {', '.join(lacking)} of job '{job}' "
            f"(scraped, up) declared no {name} in their last scrape"
            f"{'' if declared else ', nor did any other'}; expected every instance behind "
            f"{url} to export it as a counter; register the counter in the rate limiter (and "
            f"deploy it to every instance)"
        )
        wrong = [f"{m.instance} declares a {m.type or 'untyped'}" for m in declared
                 if m.type != "counter"]
        assert not wrong, (
            f"Prometheus at {prometheus.url}: {name}: {'; '.join(wrong)}; expected a counter on "
            f"every instance; export it with the counter type so rate() and increase() work"
        )
        all_targets_up(f"Prometheus at {prometheus.url}, job '{job}'", targets)
        return
    snapshot = service.metrics()
    family = snapshot.family(name)
    evidence.record("breach_metric", {
        "metric": name,
        "format": snapshot.format,
        "content_type": snapshot.content_type,
        "type": None if family is None else family.type,
        "samples": [{"labels": labels, "value": value}
                    for labels, value in snapshot.samples(name)],
    })
    assert family is not None, (
        f"GET {url}: no {name} among {len(snapshot.families)} metric families "
        f"({snapshot.format}); expected the rate limiter to export it as a counter; register "
        f"the counter (and initialise it at zero for each workspace)"
    )
    assert family.type == "counter", (
        f"GET {url}: {name} is a {family.type} ({snapshot.format}), expected a counter; export "
        f"it with the counter type so rate() and increase() work"
    )


def test_breach_counted(service: ServiceProbe, opsready_env: Environment,
                        intrusive_allowed: Callable[[str], bool], request: pytest.FixtureRequest,
                        evidence: Evidence) -> None:
    """rate_limit_breaches_total increases after a breach"""
    name = _metric(service)
    metrics_url = f"{service.base_url}{service.cfg.metrics_path}"
    per_instance = per_instance_prometheus(service, opsready_env, request)
    if per_instance is None:
        snapshot = service.metrics()
        assert snapshot.family(name) is not None, (
            f"GET {metrics_url}: no {name}, so no breach can show in it; expected the rate "
            f"limiter to export it as a counter; register it in the rate limiter"
        )
        # A labelled counter has no series until its first increment: that reads as zero.
        before = snapshot.total(name) or 0.0
    else:
        before = sum(s.value for s in per_instance.job_series(name))
    can_burst = service.cfg.rate_limit.path is not None
    if can_burst and intrusive_allowed(BURST):
        burst = service.burst()
        evidence.record("burst", burst.evidence())
        assert burst.limited, (
            f"a burst of {burst.sent} {burst.method} {burst.path} requests in "
            f"{burst.elapsed_s:.1f}s (bound: {burst.max_requests} requests, "
            f"{burst.max_seconds:g}s) got no 429, so no breach happened for {name} to count; "
            f"expected the rate limiter to refuse within the bound; enable rate limiting"
        )
        if per_instance is None:
            after = service.metrics().total(name)
            where = f"GET {metrics_url}"
        else:
            # Behind a load balancer the breach lands on one instance: the sum shows it once
            # Prometheus has scraped them all.
            after = per_instance.wait_for_sum(name, above=before)
            where = f"Prometheus at {per_instance.url} (sum over the instances)"
        evidence.record("breach_counter", {"before": before, "after": after})
        assert after is not None and after > before, (
            f"{where}: {name} went from {before:g} to "
            f"{'absent' if after is None else f'{after:g}'} after the burst got a 429; expected "
            f"it to increase; increment the counter on every 429"
        )
        return
    # The burst is not allowed here: a breach already counted shows the metric at work.
    found: dict[str, object] = {"counter_now": before}
    if before > 0:
        evidence.record("breach_found_already", found)
        return
    prom = opsready_env.prometheus
    if prom is not None and prom.service_job:
        prometheus: PrometheusProbe = request.getfixturevalue("prometheus")
        window = service.cfg.rate_limit.found_breach_window
        increase = prometheus.increase(name, window)
        found[f"prometheus_increase_{window}"] = increase
        if increase is not None and increase > 0:
            evidence.record("breach_found_already", found)
            return
    evidence.record("breach_found_already", found)
    if not can_burst:
        opsready.not_covered(
            f"not configured: service.rate_limit.path (the burst that makes a breach needs it), "
            f"and no breach was found already ({name} is {before:g}); set the path the rate "
            f"limiter guards"
        )
    opsready.not_covered(
        f"intrusive probe '{BURST}' is not allowed in environment '{opsready_env.name}', and no "
        f"breach was found already ({name} is {before:g}); list it under allow_intrusive or pass "
        f"--allow-intrusive {BURST}"
    )


def test_prometheus_has_series(prometheus: PrometheusProbe, service: ServiceProbe,
                               evidence: Evidence) -> None:
    """Prometheus has the rate_limit_breaches_total series of the service job"""
    name = _metric(service)
    job = prometheus.cfg.service_job
    if not job:
        opsready.not_covered("not configured: prometheus.service_job")
    series = prometheus.job_series(name)
    evidence.record("prometheus_series", [
        {"labels": dict(s.labels), "value": s.value} for s in series
    ])
    assert series, (
        f"Prometheus at {prometheus.url}: {name}{{job=\"{job}\"}} returned no series; expected "
        f"the service job to scrape it; check the scrape config of job '{job}' and that the "
        f"service exports {name}"
    )
