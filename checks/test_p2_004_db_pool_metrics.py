"""P2-004: the service exports its DB connection-pool gauges (``service.pool_gauges``: size, in
use, available, waiting), their values are sane, Prometheus scrapes them, and a
pool-exhaustion alert is built on them.

What each criterion can and cannot tell:

- *Exposed as gauges* reads ``service.metrics_path`` in the format it serves (Prometheus text
  or OpenMetrics, by ``Content-Type``) and judges each family's type. With
  ``service.metrics_per_instance`` it reads the type each instance declared from Prometheus,
  for every active target of the job (``/api/v1/targets``): an instance that is up and
  declares none or only some of the gauges fails by name. A target that is down cannot be
  read, and the criterion is then not covered (after judging the others).
- *Sane values* requires every reading to be finite and ``in_use``, ``available`` at most
  ``size + service.pool_gauges.max_overflow`` (a SQLAlchemy pool lends up to ``pool_size +
  max_overflow``), per instance where several sit behind one URL (every active target that
  is up, also one with no gauge at all; a target that is down leaves it not covered). A gauge
  reading ``NaN`` or ``±Inf`` (both legal sample values in the exposition formats; a gauge
  whose pool object is gone reads ``NaN``) fails, named in the message. Where ``size`` is the
  pool's maximum (``size_is: maximum``, the default) it must be above 0, and all four gauges
  at a constant zero is a stub and fails. Where ``size`` is the current count
  (``size_is: current``, node-postgres' ``totalCount``), an idle pool reads all zeros exactly
  like a stub, so that reading is not covered rather than judged. It cannot tell that the
  values follow the real pool from moment to moment.
- *Prometheus has them* proves the scrape reaches every gauge.
- *The pool-exhaustion alert uses them*: the alert (``prometheus.pool_alert_rule``, or any
  judged alert rule when none is named) must read every gauge listed in
  ``prometheus.pool_alert_gauges`` (by default available and waiting: a pool is exhausted when
  nothing is available and requests wait) and be healthy. The selectors are read from the
  parsed expression, not searched as text. A gauge selected only inside ``absent()`` or
  ``absent_over_time()`` is not read: such a "metrics missing" alert fires when the gauge
  vanishes, never when the pool is exhausted. Only alerting rules count, by each rule's own
  ``type``, also where the server ignores the ``type`` filter. It cannot tell that the
  thresholds are right, only that the alert reacts to the gauges' values.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pytest

import opsready
from opsready.assertions import all_targets_up
from opsready.fixtures import per_instance_prometheus

if TYPE_CHECKING:

    from opsready.config import Environment
    from opsready.evidence import Evidence
    from opsready.probes.http import ServiceProbe
    from opsready.probes.prometheus import PrometheusProbe, Target

pytestmark = [pytest.mark.ticket("P2-004")]


def _gauges(service: ServiceProbe) -> dict[str, str]:
    names = service.cfg.pool_gauges.configured()
    if not names:
        opsready.not_covered("not configured: service.pool_gauges")
    return names


def _instance_targets(prometheus: PrometheusProbe, url: str) -> dict[str, Target]:
    """The job's active targets by instance: every instance behind ``url`` is judged, also
    one that exports none of the gauges."""
    targets = prometheus.instance_targets()
    job = prometheus.cfg.service_job
    assert targets, (
        f"Prometheus at {prometheus.url}: job '{job}' has no active target, so no instance "
        f"behind {url} is scraped; expected every instance as a target; check the scrape "
        f"config of job '{job}'"
    )
    return targets


def test_pool_gauges_exposed(service: ServiceProbe, opsready_env: Environment,
                             request: pytest.FixtureRequest, evidence: Evidence) -> None:
    """/metrics exposes the db_connection_pool_* gauges"""
    names = _gauges(service)
    url = f"{service.base_url}{service.cfg.metrics_path}"
    prometheus = per_instance_prometheus(service, opsready_env, request)
    if prometheus is not None:
        targets = _instance_targets(prometheus, url)
        declared = {n: prometheus.target_metadata(n) for n in names.values()}
        evidence.record("pool_gauges_per_instance", {
            "targets": {i: t.health for i, t in targets.items()},
            **{n: [{"instance": m.instance, "type": m.type} for m in found]
               for n, found in declared.items()}})
        where = f"Prometheus at {prometheus.url}, job '{prometheus.cfg.service_job}'"
        exported = {n: {m.instance for m in found} for n, found in declared.items()}
        missing = []
        for instance in sorted(i for i, t in targets.items() if t.health == "up"):
            lacks = [n for n, seen in exported.items() if instance not in seen]
            if lacks:
                missing.append(f"instance {instance} (up) declared no {', '.join(lacks)}")
        assert not missing, (
            f"{where}: {'; '.join(missing)} in its last scrape; expected every pool gauge on "
            f"every instance behind {url}; export them on every instance"
        )
        wrong = [f"{m.instance}: {n} is a {m.type or 'untyped'}"
                 for n, found in declared.items() for m in found if m.type != "gauge"]
        assert not wrong, f"{where}: {'; '.join(wrong)}, expected gauges"
        all_targets_up(where, targets)
        return
    snapshot = service.metrics()
    found = {n: snapshot.family(n) for n in names.values()}
    evidence.record("pool_gauges", {
        "format": snapshot.format,
        **{n: None if f is None else {"type": f.type, "samples": snapshot.samples(n)}
           for n, f in found.items()},
    })
    missing = [n for n, f in found.items() if f is None]
    assert not missing, (
        f"GET {url}: {', '.join(missing)} absent ({len(snapshot.families)} families exposed); "
        f"expected every pool gauge; export the pool's stats (size, in use, available, "
        f"waiting) as gauges"
    )
    wrong = [f"{n} is a {f.type}" for n, f in found.items() if f is not None and f.type != "gauge"]
    assert not wrong, f"GET {url}: {'; '.join(wrong)}, expected gauges; export them as gauges"


def test_pool_gauges_sane(service: ServiceProbe, opsready_env: Environment,
                          request: pytest.FixtureRequest, evidence: Evidence) -> None:
    """The pool gauges read sane values: size above zero, in use and available within it"""
    names = _gauges(service)
    for role in ("size", "in_use"):
        if role not in names:
            opsready.not_covered(f"not configured: service.pool_gauges.{role} (sanity compares "
                                 f"the other gauges with the pool's size)")
    url = f"{service.base_url}{service.cfg.metrics_path}"
    prometheus = per_instance_prometheus(service, opsready_env, request)
    # instance -> role -> value
    readings: dict[str, dict[str, float]] = {}
    targets: dict[str, Target] = {}
    if prometheus is not None:
        where = f"Prometheus at {prometheus.url}, job '{prometheus.cfg.service_job}'"
        targets = _instance_targets(prometheus, url)
        for role, name in names.items():
            for instance, value in prometheus.instance_values(name).items():
                readings.setdefault(instance, {})[role] = value
        # An instance that is scraped but has no pool gauge at all is judged too.
        for instance, target in targets.items():
            if target.health == "up":
                readings.setdefault(instance, {})
    else:
        where = f"GET {url}"
        snapshot = service.metrics()
        for role, name in names.items():
            value = snapshot.total(name)
            if value is not None:
                readings.setdefault("", {})[role] = value
    evidence.record("pool_gauge_values", readings)
    if not readings and targets:
        all_targets_up(where, targets)
    assert readings, (
        f"{where}: none of {', '.join(names.values())} has a value; expected the pool gauges; "
        f"export them"
    )
    maximum = service.cfg.pool_gauges.size_is == "maximum"
    overflow = service.cfg.pool_gauges.max_overflow
    problems: list[str] = []
    idle: list[str] = []
    for instance, values in sorted(readings.items()):
        label = f"instance {instance}: " if instance else ""
        # NaN compares false with everything, so a non-finite reading would slip past every
        # bound below; a gauge that lost its pool (a collected weak reference, a failing
        # callback) reads NaN.
        broken = [f"{names[role]} reads {value:g}" for role, value in sorted(values.items())
                  if not math.isfinite(value)]
        if broken:
            problems.append(f"{label}{', '.join(broken)}, not a pool statistic")
            continue
        if not values:
            problems.append(f"{label}none of {', '.join(names.values())} has a value")
            continue
        size, in_use = values.get("size"), values.get("in_use")
        if size is None or in_use is None:
            problems.append(f"{label}size or in use is missing")
            continue
        if all(v == 0 for v in values.values()) and len(values) == len(names):
            if maximum:
                problems.append(f"{label}all {len(values)} gauges read 0, a constant stub "
                                f"rather than the pool's stats (size is the pool's maximum)")
            else:
                idle.append(instance or url)
            continue
        if maximum and not size > 0:
            problems.append(f"{label}size is {size:g}, expected above 0 (the pool's maximum)")
        bound, bound_text = size + overflow, f"size {size:g}" + (
            f" + max_overflow {overflow}" if overflow else "")
        if not in_use <= bound:
            problems.append(f"{label}in use {in_use:g} exceeds {bound_text}")
        available = values.get("available")
        if available is not None and not available <= bound:
            problems.append(f"{label}available {available:g} exceeds {bound_text}")
    assert not problems, (
        f"{where}: {'; '.join(problems)}; expected finite readings, "
        f"{'size > 0 and ' if maximum else ''}in use, available <= size"
        f"{' + max_overflow' if overflow else ''} (service.pool_gauges.size_is: "
        f"{service.cfg.pool_gauges.size_is}); read the gauges from the pool's own statistics "
        f"at scrape time"
    )
    if idle:
        opsready.not_covered(
            f"{where}: all {len(names)} gauges read 0 on {', '.join(idle)}: an idle pool whose "
            f"size is its current count (service.pool_gauges.size_is: current) reads the same "
            f"as a stub, so there is nothing to compare; run again under load, or export the "
            f"pool's maximum as size")
    all_targets_up(where, targets)


def test_prometheus_has_pool_series(prometheus: PrometheusProbe, service: ServiceProbe,
                                    evidence: Evidence) -> None:
    """Prometheus has each pool series for the service's job"""
    names = list(_gauges(service).values())
    job = prometheus.cfg.service_job
    if not job:
        opsready.not_covered("not configured: prometheus.service_job")
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
    names = _gauges(service)
    roles = prometheus.cfg.pool_alert_gauges
    if not roles:
        opsready.not_covered("not configured: prometheus.pool_alert_gauges")
    unnamed = [r for r in roles if r not in names]
    if unnamed:
        opsready.not_covered(f"not configured: service.pool_gauges.{unnamed[0]} (named by "
                             f"prometheus.pool_alert_gauges)")
    required = {names[r] for r in roles}
    wanted = prometheus.cfg.pool_alert_rule
    rules = prometheus.scoped_rules("alert")
    using = {r.name: sorted(r.used_metrics() & set(names.values())) for r in rules}
    evidence.record("alert_rules_using_pool_gauges",
                    {name: used for name, used in using.items() if used})
    if wanted:
        candidates = [r for r in rules if r.name == wanted]
        assert candidates, (
            f"Prometheus at {prometheus.url}: alert rule {wanted} is not loaded "
            f"({len(rules)} alert rules loaded in scope); expected the pool-exhaustion alert; "
            f"import the alert rules into Prometheus"
        )
    else:
        candidates = [r for r in rules if required <= r.used_metrics()]
        assert candidates, (
            f"Prometheus at {prometheus.url}: none of the {len(rules)} alert rules in scope "
            f"reads all of {', '.join(sorted(required))} (a selector only inside absent() "
            f"tests that the series is missing, not the pool); expected a pool-exhaustion "
            f"alert on them; add one (and name it in prometheus.pool_alert_rule)"
        )
    rule = candidates[0]
    evidence.record("pool_alert_rule", {"name": rule.name, "expr": rule.query,
                                        "health": rule.health, "uses": using[rule.name]})
    lacking = sorted(required - rule.used_metrics())
    assert not lacking, (
        f"Prometheus at {prometheus.url}: alert rule {rule.name} does not select "
        f"{', '.join(lacking)} outside absent() (expr: {rule.query!r}); expected the "
        f"pool-exhaustion alert to read {', '.join(sorted(required))} "
        f"(prometheus.pool_alert_gauges: {', '.join(roles)})"
    )
    assert rule.health in ("ok", "unknown"), (
        f"Prometheus at {prometheus.url}: alert rule {rule.name} has health {rule.health} "
        f"({rule.last_error or 'no error text'}), expected ok; fix its expression"
    )
    if rule.health == "unknown":
        opsready.not_covered(f"Prometheus at {prometheus.url}: alert rule {rule.name} has not "
                             f"been evaluated yet (health unknown); run again after one "
                             f"evaluation interval")
