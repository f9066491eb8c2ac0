"""The observability criteria, called directly with probes on mocked servers: each one fails
under its fault, passes under a legitimate variant, and is not judged (a ``ProbeError``, or
not covered) where it cannot look. The reference stack proves the same end to end
(``test_obs_stack.py`` and the fault matrix); here the cases the stack cannot show (a rule
just reloaded, a second instance, a wrong datasource type) are shown too."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from conftest import load_check, refusing_transport
from opsready._coverage import NotCovered
from opsready._errors import AccessRefused, ProbeError, TargetUnreachable
from opsready.config import (
    Environment,
    GrafanaConfig,
    PoolGaugesConfig,
    PrometheusConfig,
    RunbooksConfig,
    ServiceConfig,
    SloConfig,
    SloSpec,
)
from opsready.evidence import Evidence
from opsready.probes.grafana import GrafanaProbe
from opsready.probes.http import ServiceProbe
from opsready.probes.prometheus import PrometheusProbe, _samples
from opsready.probes.runbooks import RunbookLibrary

GAUGES = PoolGaugesConfig(size="pool_size", in_use="pool_in_use", available="pool_available",
                          waiting="pool_waiting")


P0 = load_check("test_p0_001_observability")
P2_3 = load_check("test_p2_003_rate_limit_metric")
P2_4 = load_check("test_p2_004_db_pool_metrics")
P3_1 = load_check("test_p3_001_error_budget")
P3_2 = load_check("test_p3_002_runbooks")


# -- a mocked Prometheus -------------------------------------------------------------------------


def _rule(name: str, query: str, *, kind: str = "alerting", health: str = "ok",
          group: str = "relay-alerts", **annotations: str) -> dict[str, Any]:
    return {"type": kind, "name": name, "query": query, "health": health, "labels": {},
            "annotations": annotations}


class FakePrometheus:
    """Rules, instant queries answered from ``series`` (selector or query -> samples), targets
    metadata, and the job's active targets (``targets``: instance -> health; by default every
    instance seen in ``series`` or ``metadata``, up)."""

    def __init__(self, rules: list[dict[str, Any]], series: dict[str, Any] | None = None,
                 metadata: list[dict[str, Any]] | None = None, down: bool = False,
                 targets: dict[str, str] | None = None) -> None:
        self.rules = rules
        self.series = series or {}
        self.metadata = metadata or []
        self.down = down
        if targets is None:
            seen = [m["target"]["instance"] for m in self.metadata]
            seen += [labels["instance"] for found in self.series.values()
                     if isinstance(found, list) for labels, _ in found if "instance" in labels]
            targets = dict.fromkeys(seen, "up")
        self.targets = targets

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        path = request.url.path
        if path == "/api/v1/rules":
            groups: dict[str, list[dict[str, Any]]] = {}
            for rule in self.rules:
                groups.setdefault(rule.get("group", "relay-alerts"), []).append(rule)
            data: Any = {"groups": [{"name": g, "file": f"/rules/{g}.yml", "rules": r}
                                    for g, r in groups.items()]}
        elif path == "/api/v1/targets/metadata":
            metric = request.url.params.get("metric")
            data = [m for m in self.metadata if metric in (None, m["metric"])]
        elif path == "/api/v1/targets":
            data = {"activeTargets": [
                {"labels": {"instance": i, "job": "relay"}, "scrapePool": "relay",
                 "scrapeUrl": f"http://{i}/metrics", "health": health,
                 "lastError": "" if health == "up" else "connection refused",
                 "lastScrape": "2026-01-01T00:00:00Z"} for i, health in self.targets.items()],
                "droppedTargets": []}
        elif path == "/api/v1/status/runtimeinfo":
            data = {"storageRetention": "15d"}
        else:
            return httpx.Response(404)
        return httpx.Response(200, json={"status": "success", "data": data})

    def query(self, promql: str) -> Any:
        if self.down:
            raise TargetUnreachable("prometheus: could not be reached")
        inner = promql.removeprefix("count(").removesuffix(")") if promql.startswith("count(") \
            else promql
        found = self.series.get(inner, [])
        if isinstance(found, int | float):
            found = [({}, found)]
        result = [{"metric": labels, "value": [1, str(value)]} for labels, value in found]
        return _samples(result, promql)


def _prometheus(fake: FakePrometheus, **cfg: Any) -> PrometheusProbe:
    cfg.setdefault("service_job", "relay")
    probe = PrometheusProbe(PrometheusConfig(url="http://prom.test", **cfg), timeout=2,
                            transport=httpx.MockTransport(fake))
    probe.query = fake.query  # type: ignore[method-assign]
    return probe


def _run(criterion: Callable[..., None], **kwargs: Any) -> str:
    """``pass``, ``fail``, ``error`` or ``not covered``, as the roll-up reads them."""
    try:
        criterion(**kwargs, evidence=Evidence())
    except AssertionError:
        return "fail"
    except NotCovered:
        return "not covered"
    except ProbeError:
        return "error"
    return "pass"


POOL_ALERT = 'pool_waiting{job="relay"} > 0 and pool_available{job="relay"} == 0'
UP = {'up{job="relay"}': 1, 'pool_waiting{job="relay"}': 0, 'pool_available{job="relay"}': 3}


# -- P0-001: alert rules ----------------------------------------------------------------------


def test_alert_rules_can_fire() -> None:
    rules = [_rule("Down", 'up{job="relay"} == 0 or absent(up{job="relay"})'),
             _rule("PoolExhausted", POOL_ALERT)]
    fired = P0.test_alert_rules_can_fire
    ok = _prometheus(FakePrometheus(rules, UP), alert_rules=["Down", "PoolExhausted"])
    assert _run(fired, prometheus=ok) == "pass"
    typo = [_rule("Down", 'up{job="relay"} == 0'), _rule("PoolExhausted",
                                                         POOL_ALERT.replace("waiting", "wait"))]
    broken = _prometheus(FakePrometheus(typo, UP), alert_rules=["Down", "PoolExhausted"])
    with pytest.raises(AssertionError, match=r'PoolExhausted: pool_wait\{job="relay"\}'):
        fired(prometheus=broken, evidence=Evidence())
    # A rule on Prometheus' own ALERTS series, empty while nothing fires, is legitimate.
    meta = [*rules, _rule("Meta", 'count(ALERTS{severity="critical"}) > 0')]
    assert _run(fired, prometheus=_prometheus(FakePrometheus(meta, UP),
                                              rule_groups=["relay-*"])) == "pass"
    # Other teams' rules outside the scope are not judged.
    theirs = [*rules, {**_rule("Ledger", "ledger_lag > 1"), "group": "payments"}]
    assert _run(fired, prometheus=_prometheus(FakePrometheus(theirs, UP),
                                              rule_groups=["relay-alerts"])) == "pass"
    assert _run(fired, prometheus=_prometheus(FakePrometheus(theirs, UP))) == "not covered"
    assert _run(fired, prometheus=_prometheus(FakePrometheus(rules, down=True),
                                              alert_rules=["Down"])) == "error"


def test_alert_rules_loaded_health() -> None:
    loaded = P0.test_alert_rules_loaded

    def with_health(health: str) -> PrometheusProbe:
        fake = FakePrometheus([_rule("Down", "up == 0", health=health)])
        probe = _prometheus(fake, alert_rules=["Down"])
        probe.buildinfo = lambda: {"version": "2.53.0"}  # type: ignore[method-assign]
        return probe

    assert _run(loaded, prometheus=with_health("ok")) == "pass"
    assert _run(loaded, prometheus=with_health("err")) == "fail"
    # Just reloaded, not evaluated yet: neither healthy nor broken.
    assert _run(loaded, prometheus=with_health("unknown")) == "not covered"


def test_recording_rules_produce_series() -> None:
    produce = P3_1.test_slo_recording_rules_produce_series
    rules = [_rule("slo:ratio", 'sum(rate(req{job="relay"}[5m]))', kind="recording",
                   group="relay-slo")]
    series = {'req{job="relay"}': 1, "slo:ratio": 0.5}
    ok = _prometheus(FakePrometheus(rules, series), slo_recording_rules=["slo:ratio"])
    assert _run(produce, prometheus=ok) == "pass"
    nothing = _prometheus(FakePrometheus(rules, {'req{job="relay"}': 1}),
                          slo_recording_rules=["slo:ratio"])
    assert _run(produce, prometheus=nothing) == "fail"
    fresh = [{**rules[0], "health": "unknown"}]
    assert _run(produce, prometheus=_prometheus(FakePrometheus(fresh, {'req{job="relay"}': 1}),
                                                slo_recording_rules=["slo:ratio"])) \
        == "not covered"
    # Its input missing fails even while it is not evaluated yet.
    assert _run(produce, prometheus=_prometheus(FakePrometheus(fresh, {}),
                                                slo_recording_rules=["slo:ratio"])) == "fail"


def test_recording_rule_without_a_fallback_waits_for_its_first_error() -> None:
    """A Sloth-style error ratio without ``or vector(0)``: before the first 5xx the numerator
    and the recorded ratio have no series. With the 5xx selector listed as legitimately
    empty that is not a broken rule (not covered); with its output listed too, it passes."""
    produce = P3_1.test_slo_recording_rules_produce_series
    query = ('sum(rate(req{job="relay",code=~"5.."}[5m])) / sum(rate(req{job="relay"}[5m]))')
    rules = [{**_rule("slo:errors", query, kind="recording", group="relay-slo"),
              "labels": {"sloth_id": "relay-1"}}]
    five = 'req{code=~"5..",job="relay"}'
    output = 'slo:errors{sloth_id="relay-1"}'
    total = {'req{job="relay"}': 1}

    def probe(series: dict[str, Any], *may_be_empty: str, down: bool = False) -> PrometheusProbe:
        return _prometheus(FakePrometheus(rules, series, down=down),
                           slo_recording_rules=["slo:errors"],
                           series_may_be_empty=list(may_be_empty))

    with pytest.raises(NotCovered, match=r"slo:errors\{sloth_id=\"relay-1\"\} records "
                                         r"nothing while req\{code=~\"5\.\.\""):
        produce(prometheus=probe(total, five), evidence=Evidence())
    assert _run(produce, prometheus=probe(total, five, "slo:errors")) == "pass"
    assert _run(produce, prometheus=probe({**total, five: 1, output: 0.0}, five)) == "pass"
    # The 5xx series exists, yet nothing is recorded: the rule is broken.
    assert _run(produce, prometheus=probe({**total, five: 1}, five)) == "fail"
    # Not listed, the empty 5xx selector is the finding, as before.
    assert _run(produce, prometheus=probe(total)) == "fail"
    # The total is missing too (a renamed metric): listing the 5xx selector explains nothing.
    assert _run(produce, prometheus=probe({}, five)) == "fail"
    assert _run(produce, prometheus=probe(total, five, down=True)) == "error"


# -- P2-004: pool alert and gauges ------------------------------------------------------------


def _service(text: str, content_type: str = "text/plain; version=0.0.4", status: int = 200,
             **cfg: Any) -> ServiceProbe:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=text.encode(), headers={"Content-Type": content_type})

    cfg.setdefault("pool_gauges", GAUGES)
    return ServiceProbe(ServiceConfig(base_url="http://svc.test", **cfg), timeout=2,
                        transport=httpx.MockTransport(handler))


def _pool(size: float, in_use: float, available: float, waiting: float, *,
          openmetrics: bool = False) -> str:
    text = "".join(f"# TYPE pool_{k} gauge\npool_{k} {v}\n" for k, v in
                   (("size", size), ("in_use", in_use), ("available", available),
                    ("waiting", waiting)))
    return text + ("# EOF\n" if openmetrics else "")


class _Request:
    """What the checks ask of pytest's ``request``: the Prometheus fixture."""

    def __init__(self, prometheus: PrometheusProbe | None = None) -> None:
        self.prometheus = prometheus

    def getfixturevalue(self, name: str) -> Any:
        assert name == "prometheus" and self.prometheus is not None
        return self.prometheus


ENV = Environment(name="t", prometheus=PrometheusConfig(url="http://prom.test",
                                                        service_job="relay"))


def test_pool_gauges_sane() -> None:
    sane = P2_4.test_pool_gauges_sane
    ok = {"opsready_env": ENV, "request": _Request()}
    assert _run(sane, service=_service(_pool(8, 3, 5, 0)), **ok) == "pass"
    om = _service(_pool(8, 3, 5, 0, openmetrics=True),
                  "application/openmetrics-text; version=1.0.0; charset=utf-8")
    assert _run(sane, service=om, **ok) == "pass"
    assert _run(sane, service=_service(_pool(0, 0, 0, 0)), **ok) == "fail"
    assert _run(sane, service=_service(_pool(4, 6, 0, 1)), **ok) == "fail"
    assert _run(sane, service=_service("", status=401), **ok) == "error"
    assert _run(sane, service=_service(_pool(8, 3, 5, 0), pool_gauges=PoolGaugesConfig(
        available="pool_available")), **ok) == "not covered"


def test_pool_gauges_sane_for_overflow_and_current_count_pools() -> None:
    """SQLAlchemy's QueuePool lends up to pool_size + max_overflow; node-postgres' totalCount
    is the connections held now, 0 once an idle pool has closed them all."""
    sane = P2_4.test_pool_gauges_sane
    ok = {"opsready_env": ENV, "request": _Request()}

    def service(text: str, **gauges: Any) -> ServiceProbe:
        return _service(text, pool_gauges=GAUGES.model_copy(update=gauges))

    # SQLAlchemy defaults (pool_size=5, max_overflow=10) under load: 8 checked out.
    assert _run(sane, service=service(_pool(5, 8, 0, 3), max_overflow=10), **ok) == "pass"
    assert _run(sane, service=service(_pool(5, 15, 0, 3), max_overflow=10), **ok) == "pass"
    with pytest.raises(AssertionError, match=r"in use 16 exceeds size 5 \+ max_overflow 10"):
        sane(service=service(_pool(5, 16, 0, 3), max_overflow=10), evidence=Evidence(), **ok)
    # Without the allowance, lending beyond size is still a finding.
    assert _run(sane, service=service(_pool(5, 8, 0, 3)), **ok) == "fail"
    # node-postgres: busy, and idle after idleTimeoutMillis.
    current = {"size_is": "current"}
    assert _run(sane, service=service(_pool(3, 2, 1, 0), **current), **ok) == "pass"
    with pytest.raises(NotCovered, match="idle pool"):
        sane(service=service(_pool(0, 0, 0, 0), **current), evidence=Evidence(), **ok)
    assert _run(sane, service=service(_pool(3, 4, 0, 0), **current), **ok) == "fail"
    assert _run(sane, service=service(_pool(0, 0, 0, 0)), **ok) == "fail"
    assert _run(sane, service=_service("", status=503, pool_gauges=GAUGES.model_copy(
        update=current)), **ok) == "error"
    assert set(GAUGES.model_copy(update={**current, "max_overflow": 10}).configured()) == \
        {"size", "in_use", "available", "waiting"}
    # Behind one URL, an idle replica next to a busy one: that replica cannot be judged.
    by_instance = {f'pool_{k}{{job="relay"}}': [({"instance": "a:8000"}, v),
                                                ({"instance": "b:8000"}, 0)]
                   for k, v in (("size", 4), ("in_use", 2), ("available", 2), ("waiting", 0))}
    spread = _service(_pool(4, 2, 2, 0), metrics_per_instance=True,
                      pool_gauges=GAUGES.model_copy(update=current))
    with pytest.raises(NotCovered, match="all 4 gauges read 0 on b:8000"):
        sane(service=spread, opsready_env=ENV, request=_Request(_prometheus(
            FakePrometheus([], by_instance))), evidence=Evidence())


def test_pool_gauges_reading_nan_or_inf_fail_by_name() -> None:
    """NaN compares false with every bound, so a gauge whose pool object is gone (it reads
    NaN, a legal sample value in both exposition formats) must fail by name, not pass."""
    sane = P2_4.test_pool_gauges_sane
    ok = {"opsready_env": ENV, "request": _Request()}
    for size, in_use in ((math.nan, 3), (8, math.nan), (math.inf, 3), (8, -math.inf)):
        text = _pool(8, 3, 5, 0).replace("pool_size 8\n", f"pool_size {size}\n").replace(
            "pool_in_use 3\n", f"pool_in_use {in_use}\n")
        bad = "pool_size" if not math.isfinite(size) else "pool_in_use"
        with pytest.raises(AssertionError, match=rf"{bad} reads -?(nan|inf), not a pool stat"):
            sane(service=_service(text), evidence=Evidence(), **ok)
    all_nan = "".join(f"# TYPE pool_{k} gauge\npool_{k}{{pool=\"HikariPool-1\"}} NaN\n"
                      for k in ("size", "in_use", "available", "waiting"))
    assert _run(sane, service=_service(all_nan), **ok) == "fail"
    # A pool with labelled gauges (one series per pool name) and finite values stays sane.
    labelled = "".join(f"# TYPE pool_{k} gauge\npool_{k}{{pool=\"HikariPool-1\"}} {v}\n"
                       for k, v in (("size", 10), ("in_use", 10), ("available", 0),
                                    ("waiting", 4)))
    assert _run(sane, service=_service(labelled), **ok) == "pass"
    # Per instance, Prometheus answers "NaN" as the value string; that instance fails by name.
    by_instance = {f'pool_{k}{{job="relay"}}': [({"instance": "a:8000"}, v),
                                                ({"instance": "b:8000"}, "NaN")]
                   for k, v in (("size", 8), ("in_use", 2), ("available", 6), ("waiting", 0))}
    service = _service(_pool(8, 2, 6, 0), metrics_per_instance=True)
    with pytest.raises(AssertionError, match="instance b:8000: pool_available reads nan"):
        sane(service=service, opsready_env=ENV, request=_Request(_prometheus(
            FakePrometheus([], by_instance))), evidence=Evidence())
    assert _run(sane, service=service, opsready_env=ENV, request=_Request(_prometheus(
        FakePrometheus([], down=True)))) == "error"


def test_pool_gauges_judged_per_instance_behind_one_url() -> None:
    """Two instances behind one load balancer: one GET sees one of them, Prometheus sees
    both, and the stub on the second one fails by name."""
    by_instance = {f'pool_{k}{{job="relay"}}': [({"instance": "a:8000"}, v),
                                                ({"instance": "b:8000"}, 0)]
                   for k, v in (("size", 8), ("in_use", 2), ("available", 6), ("waiting", 0))}
    prometheus = _prometheus(FakePrometheus([], by_instance))
    service = _service(_pool(8, 2, 6, 0), metrics_per_instance=True)
    with pytest.raises(AssertionError, match="instance b:8000: all 4 gauges read 0"):
        P2_4.test_pool_gauges_sane(service=service, opsready_env=ENV,
                                   request=_Request(prometheus), evidence=Evidence())
    healthy = {k: v[:1] for k, v in by_instance.items()}
    assert _run(P2_4.test_pool_gauges_sane, service=service, opsready_env=ENV,
                request=_Request(_prometheus(FakePrometheus([], healthy)))) == "pass"
    no_prometheus = Environment(name="t")
    assert _run(P2_4.test_pool_gauges_sane, service=service, opsready_env=no_prometheus,
                request=_Request()) == "not covered"


THREE = ("10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000")


def _declared(metric: str, kind: str, instances: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{"target": {"instance": i, "job": "relay"}, "metric": metric, "type": kind,
             "help": ""} for i in instances]


def test_per_instance_judges_every_active_target_not_only_those_that_declared() -> None:
    """Three pods behind one URL, all scraped; the third runs an old image and exports neither
    the counter nor the pool gauges. Its absence from the metadata is the finding; a target
    that is down cannot be read."""
    exposed_counter = P2_3.test_breach_counter_exposed
    exposed_gauges, sane = P2_4.test_pool_gauges_exposed, P2_4.test_pool_gauges_sane
    service = _service(_pool(8, 2, 6, 0), metrics_per_instance=True,
                       rate_limit_metric="breaches_total")
    gauges = ("pool_size", "pool_in_use", "pool_available", "pool_waiting")

    def metadata(instances: tuple[str, ...]) -> list[dict[str, Any]]:
        return [*_declared("breaches_total", "counter", instances),
                *(m for g in gauges for m in _declared(g, "gauge", instances))]

    def values(instances: tuple[str, ...]) -> dict[str, Any]:
        return {f'{g}{{job="relay"}}': [({"instance": i}, v) for i in instances]
                for g, v in zip(gauges, (8, 2, 6, 0), strict=True)}

    def run(criterion: Callable[..., None], instances: tuple[str, ...],
            targets: dict[str, str], down: bool = False) -> str:
        fake = FakePrometheus([], values(instances), metadata(instances), targets=targets,
                              down=down)
        return _run(criterion, service=service, opsready_env=ENV,
                    request=_Request(_prometheus(fake)))

    all_up = dict.fromkeys(THREE, "up")
    criteria = (exposed_counter, exposed_gauges, sane)
    for criterion in criteria:
        assert run(criterion, THREE, all_up) == "pass"
        assert run(criterion, THREE[:2], all_up) == "fail"
        # The third pod is down: the two that answer are judged, the third is not read.
        assert run(criterion, THREE[:2], {**all_up, THREE[2]: "down"}) == "not covered"
        assert run(criterion, (), dict.fromkeys(THREE, "down")) == "not covered"
        # A pod that lacks the metric fails even while another one is down.
        assert run(criterion, THREE[:1], {**all_up, THREE[2]: "down"}) == "fail"
        # The job has no target at all: nothing behind the URL is scraped.
        assert run(criterion, (), {}) == "fail"
        assert run(criterion, THREE, all_up, down=True) == "error"
    fake = FakePrometheus([], values(THREE[:2]), metadata(THREE[:2]), targets=all_up)
    request = _Request(_prometheus(fake))
    with pytest.raises(AssertionError, match=r"instance\(s\) 10\.0\.0\.3:8000 of job 'relay' "
                                             r"\(scraped, up\) declared no breaches_total"):
        exposed_counter(service=service, opsready_env=ENV, request=request, evidence=Evidence())
    with pytest.raises(AssertionError, match=r"instance 10\.0\.0\.3:8000 \(up\) declared no "
                                             r"pool_size, pool_in_use"):
        exposed_gauges(service=service, opsready_env=ENV, request=request, evidence=Evidence())
    with pytest.raises(AssertionError, match=r"instance 10\.0\.0\.3:8000: none of pool_size"):
        sane(service=service, opsready_env=ENV, request=request, evidence=Evidence())


def test_pool_alert_uses_the_configured_gauges_and_is_healthy() -> None:
    uses = P2_4.test_pool_alert_uses_gauges
    service = _service("")

    def probe(query: str, health: str = "ok", **cfg: Any) -> PrometheusProbe:
        return _prometheus(FakePrometheus([_rule("PoolExhausted", query, health=health)]), **cfg)

    assert _run(uses, service=service, prometheus=probe(POOL_ALERT,
                                                        pool_alert_rule="PoolExhausted")) == "pass"
    # Without a named rule, any judged rule that selects both gauges will do.
    assert _run(uses, service=service, prometheus=probe(POOL_ALERT)) == "pass"
    wrong = 'pool_in_use{job="relay"} >= pool_size{job="relay"}'
    assert _run(uses, service=service, prometheus=probe(wrong,
                                                        pool_alert_rule="PoolExhausted")) == "fail"
    assert _run(uses, service=service, prometheus=probe(wrong)) == "fail"
    # A comment or a label value naming the gauge is not a use of it.
    quoted = 'up{job="pool_waiting"} == 0 and pool_available == 0'
    assert _run(uses, service=service, prometheus=probe(quoted)) == "fail"
    # Healthy on every path: a broken rule fails whether it is named or found.
    assert _run(uses, service=service, prometheus=probe(POOL_ALERT, health="err")) == "fail"
    assert _run(uses, service=service, prometheus=probe(POOL_ALERT, health="unknown",
                                                        pool_alert_rule="PoolExhausted")) \
        == "not covered"
    assert _run(uses, service=service, prometheus=probe(POOL_ALERT, pool_alert_gauges=[
        "available", "waiting", "size"])) == "fail"


def test_pool_alert_must_read_the_gauges_not_test_their_absence() -> None:
    """The fake answers every rule whatever ``type`` asks, as vmalert before v1.98 and older
    Loki rulers do: a recording rule on the gauges is no alert. A "metrics missing" alert
    selects the gauges only inside absent(): it never fires on an exhausted pool."""
    uses = P2_4.test_pool_alert_uses_gauges
    service = _service("")

    def probe(*rules: dict[str, Any], **cfg: Any) -> PrometheusProbe:
        return _prometheus(FakePrometheus(list(rules)), **cfg)

    recording = _rule("relay:pool_pressure:ratio", "pool_waiting / (pool_available + 1)",
                      kind="recording")
    other = _rule("HighErrorRate", "slo:ratio > 0.01")
    assert _run(uses, service=service, prometheus=probe(recording, other)) == "fail"
    assert _run(uses, service=service, prometheus=probe(
        recording, other, pool_alert_rule="relay:pool_pressure:ratio")) == "fail"
    missing = _rule("PoolMetricsMissing",
                    'absent(pool_available{job="relay"}) or absent(pool_waiting{job="relay"})')
    with pytest.raises(AssertionError, match=r"none of the 1 alert rules in scope reads all"):
        uses(service=service, prometheus=probe(missing), evidence=Evidence())
    with pytest.raises(AssertionError, match=r"PoolMetricsMissing does not select pool_avail"
                                             r"able, pool_waiting outside absent\(\)"):
        uses(service=service, prometheus=probe(missing, pool_alert_rule="PoolMetricsMissing"),
             evidence=Evidence())
    # Other correct shapes of an exhaustion alert read the gauges' values, next to a
    # "metrics missing" alert and a recording rule.
    for query in ('pool_waiting{job="relay"} > 0 unless pool_available{job="relay"} > 0',
                  '(pool_waiting{job="relay"} or vector(0)) > 0 and pool_available == 0',
                  'absent(pool_waiting) or (pool_waiting > 0 and pool_available == 0)'):
        exhausted = _rule("PoolExhausted", query)
        assert _run(uses, service=service, prometheus=probe(missing, recording, exhausted)) \
            == "pass", query
    assert _run(uses, service=service, prometheus=_prometheus(
        FakePrometheus([missing], down=True))) == "error"


# -- P2-003: the breach counter -----------------------------------------------------------------


def test_breach_counter_exposed() -> None:
    exposed = P2_3.test_breach_counter_exposed
    ctx = {"opsready_env": ENV, "request": _Request()}
    counter = "# TYPE breaches_total counter\nbreaches_total{workspace=\"a\"} 0\n"
    om = "# TYPE breaches counter\nbreaches_total{workspace=\"a\"} 0\n# EOF\n"
    gauge = "# TYPE breaches_total gauge\nbreaches_total{workspace=\"a\"} 0\n"
    cfg = {"rate_limit_metric": "breaches_total"}
    assert _run(exposed, service=_service(counter, **cfg), **ctx) == "pass"
    assert _run(exposed, service=_service(om, "application/openmetrics-text; version=1.0.0",
                                          **cfg), **ctx) == "pass"
    assert _run(exposed, service=_service(gauge, **cfg), **ctx) == "fail"
    assert _run(exposed, service=_service("", status=401, **cfg), **ctx) == "error"
    assert _run(exposed, service=_service(counter), **ctx) == "not covered"
    metadata = [{"target": {"instance": i, "job": "relay"}, "metric": "breaches_total",
                 "type": t, "help": ""} for i, t in (("a:1", "counter"), ("b:1", "gauge"))]
    per_instance = _Request(_prometheus(FakePrometheus([], metadata=metadata)))
    with pytest.raises(AssertionError, match="b:1 declares a gauge"):
        exposed(service=_service(counter, metrics_per_instance=True, **cfg), opsready_env=ENV,
                request=per_instance, evidence=Evidence())


def test_breach_counted_without_a_burst_path_is_not_covered_not_an_error() -> None:
    """Allowed to burst but given no path to burst: not covered, naming the key; a breach
    counted already still proves the counter."""
    counted = P2_3.test_breach_counted
    ctx = {"opsready_env": Environment(name="t"), "request": _Request(),
           "intrusive_allowed": lambda name: True}
    zero = "# TYPE breaches_total counter\nbreaches_total 0\n"
    cfg = {"rate_limit_metric": "breaches_total"}
    with pytest.raises(NotCovered, match=r"not configured: service\.rate_limit\.path"):
        counted(service=_service(zero, **cfg), evidence=Evidence(), **ctx)
    seen = "# TYPE breaches_total counter\nbreaches_total 3\n"
    assert _run(counted, service=_service(seen, **cfg), **ctx) == "pass"


# -- P3-001: SLIs and the error budget -----------------------------------------------------------


def _slos(answers: dict[str, float | None], *specs: SloSpec) -> list[Any]:
    probe = _prometheus(FakePrometheus([]))
    probe.value = lambda promql: answers[promql]  # type: ignore[method-assign]
    config = SloConfig(slos=list(specs))
    return [probe.slo_status(s, config, 15 * 86400) for s in specs]


RATIO = SloSpec(name="error rate", target=0.01, objective="le", query="err[$window]")
LATENCY = SloSpec(name="p95", target=1.2, objective="le", unit="s", query="p95[$window]")


def test_a_quiet_window_is_not_covered_and_no_series_fails() -> None:
    slis, budget = P3_1.test_slis_compute_now, P3_1.test_error_budget_computed
    probe = _prometheus(FakePrometheus([]))
    config = SloConfig(slos=[RATIO])
    fine = _slos({"err[1h]": 0.001, "err[15d]": 0.002}, RATIO)
    assert _run(slis, prometheus=probe, slo_config=config, slo_statuses=fine) == "pass"
    assert _run(budget, prometheus=probe, slo_statuses=fine) == "pass"
    quiet = _slos({"err[1h]": math.nan, "err[15d]": 0.002}, RATIO)
    assert _run(slis, prometheus=probe, slo_config=config, slo_statuses=quiet) == "not covered"
    absent = _slos({"err[1h]": None, "err[15d]": None}, RATIO)
    assert _run(slis, prometheus=probe, slo_config=config, slo_statuses=absent) == "fail"
    assert _run(budget, prometheus=probe, slo_statuses=absent) == "fail"
    # A latency SLO without budget_fraction or bad_query: the columns cannot be computed,
    # and the criterion says why instead of passing with blanks.
    latency = _slos({"p95[1h]": 0.4}, LATENCY)
    assert _run(budget, prometheus=probe, slo_statuses=latency) == "not covered"


def test_the_slo_table_is_a_typed_table_with_its_windows() -> None:
    evidence = Evidence()
    statuses = _slos({"err[1h]": 0.001, "err[15d]": 0.002}, RATIO)
    P3_1.test_slis_compute_now(prometheus=_prometheus(FakePrometheus([])),
                               slo_config=SloConfig(slos=[RATIO]), slo_statuses=statuses,
                               evidence=evidence)
    table = next(i for i in evidence.items if i.name == "slo_table")
    assert table.kind == "table"
    assert table.rows[0]["budget_window"] == "15d" and table.rows[0]["window"] == "30d"
    json.dumps(table.rows)


# -- P3-002: runbooks ---------------------------------------------------------------------------


class _Repo:
    repo = "acme/relay"

    def __init__(self, files: dict[str, str]) -> None:
        self.files = files

    def get_file(self, path: str, ref: str | None = None) -> str | None:
        return self.files.get(path) if ref in (None, "main", "release/1.2") else None


def test_runbook_sections_need_a_body() -> None:
    words = " ".join(["word"] * 12)
    full = "\n".join(f"## {s}\n{words}\n" for s in RunbooksConfig().sections)
    thin = "\n".join(f"## {s}\nTBD\n" for s in RunbooksConfig().sections)
    lib = RunbookLibrary(RunbooksConfig(paths={"outage": "o.md"}), timeout=2, github=_Repo({}))
    sections = P3_2.test_runbook_sections
    assert _run(sections, runbooks=lib, runbook_texts={"outage": full}) == "pass"
    assert _run(sections, runbooks=lib, runbook_texts={"outage": thin}) == "fail"


def test_runbook_links_templated_scoped_and_unjudged() -> None:
    links = P3_2.test_alert_runbook_links_resolve
    lib = RunbookLibrary(RunbooksConfig(), timeout=2,
                         github=_Repo({"docs/runbooks/db.md": "# DB"}))
    linked = _rule("Pool", POOL_ALERT, runbook_url=(
        "https://github.com/acme/relay/blob/release/1.2/docs/runbooks/db.md"))
    theirs = {**_rule("Ledger", "ledger_lag > 1"), "group": "payments"}
    probe = _prometheus(FakePrometheus([linked, theirs]), rule_groups=["relay-alerts"])
    assert _run(links, prometheus=probe, runbooks=lib) == "pass"
    # Without the scope, the other team's rule without a link is judged too.
    assert _run(links, prometheus=_prometheus(FakePrometheus([linked, theirs])),
                runbooks=lib) == "fail"
    # Prometheus fills $labels from the firing series, never from the rule's own labels: a
    # template is known only once the alert fires, whatever labels the rule sets.
    templated = {**_rule("Pool", POOL_ALERT, runbook_url=(
        "https://github.com/acme/relay/blob/release/1.2/docs/runbooks/{{ $labels.runbook }}.md")),
        "labels": {"runbook": "db"}}
    assert _run(links, prometheus=_prometheus(FakePrometheus([templated])),
                runbooks=lib) == "not covered"
    # A broken namesake is judged, not hidden behind a working one.
    broken = _rule("Pool", POOL_ALERT, runbook_url="github:docs/runbooks/gone.md")
    assert _run(links, prometheus=_prometheus(FakePrometheus([broken, linked])),
                runbooks=lib) == "fail"
    assert _run(links, prometheus=_prometheus(FakePrometheus([], down=True)),
                runbooks=lib) == "error"


# -- P0-001: dashboards render --------------------------------------------------------------------


DATASOURCES = [{"id": 1, "uid": "prom-1", "name": "Prometheus", "type": "prometheus",
                "isDefault": True},
               {"id": 2, "uid": "loki-1", "name": "Loki", "type": "loki"}]


def _grafana(datasource: Any, *, status: int = 200) -> GrafanaProbe:
    board = {"uid": "golden", "title": "Golden", "panels": [
        {"id": 1, "title": "Latency", "type": "timeseries", "datasource": datasource,
         "targets": [{"expr": "up"}]}]}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/datasources":
            return httpx.Response(status, json=DATASOURCES if status == 200 else {})
        if request.url.path == "/api/dashboards/uid/golden":
            return httpx.Response(200, json={"dashboard": board, "meta": {}})
        return httpx.Response(404, json={})

    cfg = GrafanaConfig(url="http://grafana.test", token="t", dashboards=["golden"])  # type: ignore[arg-type]
    return GrafanaProbe(cfg, timeout=2, transport=httpx.MockTransport(handler))


def test_dashboards_render() -> None:
    render = P0.test_grafana_dashboards_render
    assert _run(render, grafana=_grafana({"type": "prometheus", "uid": "prom-1"})) == "pass"
    assert _run(render, grafana=_grafana("Prometheus")) == "pass"
    assert _run(render, grafana=_grafana(None)) == "pass"
    with pytest.raises(AssertionError, match=r"golden: panel 'Latency' -> uid \$\{DS_PROMETHEUS\}"):
        render(grafana=_grafana({"uid": "${DS_PROMETHEUS}"}), evidence=Evidence())
    assert _run(render, grafana=_grafana({"uid": "deleted"})) == "fail"
    assert _run(render, grafana=_grafana({"type": "loki", "uid": "loki-1"})) == "fail"
    assert _run(render, grafana=_grafana("Prometheus", status=403)) == "error"
    with pytest.raises(AccessRefused):
        _grafana("Prometheus", status=403).datasources()


# -- P2-001: the service's trace, read back from the request on ----------------------------------

P2_1 = load_check("test_p2_001_otel_tracing")
TRACED = "/api/v1/actions"


def _traced_service(sent: list[str]) -> ServiceProbe:
    """The service, its traced GET already sent by a read-ahead (as ``opsready.prefetch``
    does), every request's traceparent noted in ``sent``."""
    from opsready.probes._shared import SharedFacts

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers.get("traceparent", ""))
        return httpx.Response(200, json={"ok": True})

    service = ServiceProbe(ServiceConfig(base_url="http://svc.test"), timeout=2,
                           transport=httpx.MockTransport(handler))
    service.shared = SharedFacts()  # type: ignore[attr-defined]
    service.shared.ahead(lambda: service.traced_get(TRACED))  # type: ignore[attr-defined]
    return service


def _jaeger(known: dict[str, str], asked: list[str]) -> Any:
    """A Jaeger query API that knows the traces in ``known`` (trace id -> service name), on
    a clock that the probe's sleeps move forward."""
    from opsready.config import OtelConfig
    from opsready.probes.otel import OtelProbe

    now = [0.0]

    def handler(request: httpx.Request) -> httpx.Response:
        tid = request.url.path.rsplit("/", 1)[-1]
        asked.append(tid)
        if tid not in known:
            return httpx.Response(404, json={"data": None})
        span = {"traceID": tid, "spanID": "00f067aa0ba902b7", "operationName": "GET " + TRACED,
                "references": [], "processID": "p1", "startTime": 1, "duration": 1}
        return httpx.Response(200, json={"data": [{"traceID": tid, "spans": [span],
                                                   "processes": {"p1": {"serviceName": known[tid]}}}]})

    cfg = OtelConfig(trace_backend="jaeger", trace_api_url="http://jaeger.test", read_back_timeout_s=15)
    return OtelProbe(cfg, timeout=2, transport=httpx.MockTransport(handler),
                     sleep=lambda s: now.__setitem__(0, now[0] + s), clock=lambda: now[0])


def test_service_trace_takes_the_request_sent_ahead_and_passes_under_the_service_name() -> None:
    sent: list[str] = []
    service = _traced_service(sent)
    asked: list[str] = []
    evidence = Evidence()
    traceparent = sent[0]
    trace_id = traceparent.split("-")[1]
    P2_1.test_service_trace(_jaeger({trace_id: "relay-api"}, asked), service, evidence)
    # The criterion sent nothing of its own: it read back the trace of the request sent ahead.
    assert sent == [traceparent]
    assert asked == [trace_id]
    recorded = next(i for i in evidence.items if i.name == "service_trace").value
    assert recorded["traceparent"] == traceparent
    assert recorded["sent_before_read_back_s"] >= 0


def test_service_trace_under_another_service_name_fails() -> None:
    sent: list[str] = []
    service = _traced_service(sent)
    otel = _jaeger({sent[0].split("-")[1]: "edge-proxy"}, [])
    with pytest.raises(AssertionError, match="only services edge-proxy"):
        P2_1.test_service_trace(otel, service, Evidence())


def test_service_trace_bound_counts_from_the_request_however_early_it_went() -> None:
    """A request sent longer ago than ``otel.read_back_timeout_s`` (15 s) gets one look in
    the backend, not a fresh bound, and the message counts the wait from the request."""
    import time

    from opsready.probes.http import TracedRequest
    from opsready.probes.otel import TraceContext

    class SentLongAgo:
        base_url = "http://svc.test"
        context = TraceContext.new()

        def traced_get(self, path: str) -> TracedRequest:
            real = _traced_service([]).traced_get(path)
            return TracedRequest(self.context, real.response, time.monotonic() - 20.0)

    asked: list[str] = []
    with pytest.raises(AssertionError, match=r"no trace for \w+ after 20\.\ds"):
        P2_1.test_service_trace(_jaeger({}, asked), SentLongAgo(), Evidence())
    assert asked == [SentLongAgo.context.trace_id]


def test_service_trace_of_an_unreachable_service_is_not_judged() -> None:
    service = ServiceProbe(ServiceConfig(base_url="http://svc.test"), timeout=2,
                           transport=refusing_transport())
    with pytest.raises(ProbeError):
        P2_1.test_service_trace(_jaeger({}, []), service, Evidence())
