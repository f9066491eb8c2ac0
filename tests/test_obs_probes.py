"""The observability probes against mocked servers: Prometheus, Grafana, the OTel collector and
trace backends, and runbook links."""

from __future__ import annotations

import base64
import json
import math
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from opsready._errors import (
    AccessRefused,
    MissingInput,
    ProbeTimeout,
    TargetUnreachable,
    UnexpectedResponse,
)
from opsready.config import (
    GrafanaConfig,
    OtelConfig,
    PrometheusConfig,
    RunbooksConfig,
    SloConfig,
    SloSpec,
)
from opsready.probes.grafana import Dashboard, Datasource, GrafanaProbe, resolve_datasources
from opsready.probes.otel import OtelProbe, TraceContext, normalise_id
from opsready.probes.prometheus import PrometheusProbe, promql_duration
from opsready.probes.runbooks import RunbookLibrary, headings, missing_sections, section_words

Handler = Callable[[httpx.Request], httpx.Response]


def _prom(handler: Handler, **cfg: Any) -> PrometheusProbe:
    return PrometheusProbe(PrometheusConfig(url="http://prom.test", **cfg), timeout=2,
                           transport=httpx.MockTransport(handler))


def _ok(data: Any) -> httpx.Response:
    return httpx.Response(200, json={"status": "success", "data": data})


RULES = {"groups": [
    {"name": "relay-alerts", "file": "/etc/prometheus/alerts.yml", "interval": 15, "rules": [
        {"type": "alerting", "name": "DBPoolExhausted", "health": "ok", "state": "inactive",
         "query": 'db_connection_pool_waiting{job="relay"} > 0 and '
                  'db_connection_pool_available{job="relay"} == 0',
         "labels": {"severity": "critical"},
         "annotations": {"runbook_url": "github:docs/runbooks/db-connections.md"}},
        {"type": "alerting", "name": "Broken", "health": "err", "lastError": "bad expr",
         "query": "foo(", "labels": {}, "annotations": {}},
    ]},
    {"name": "relay-slo", "file": "/etc/prometheus/slo.yml", "interval": 15, "rules": [
        {"type": "recording", "name": "slo:http_error_ratio:rate5m", "health": "ok",
         "query": "sum(rate(x[5m]))"},
    ]},
]}


# -- Prometheus: rules, targets, envelope ------------------------------------------------------


def test_rules_are_parsed_and_filtered_by_type() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return _ok(RULES)

    probe = _prom(handler)
    rules = probe.alert_rules()
    assert seen == ["http://prom.test/api/v1/rules?type=alert"]
    names = {r.name: r for r in rules}
    pool = names["DBPoolExhausted"]
    assert pool.kind == "alerting" and pool.health == "ok" and pool.group == "relay-alerts"
    assert pool.annotations["runbook_url"] == "github:docs/runbooks/db-connections.md"
    assert pool.uses("db_connection_pool_waiting")
    assert not pool.uses("db_connection_pool")  # a prefix is not the metric
    assert names["Broken"].last_error == "bad expr"
    # Without a filter both kinds come back.
    assert {r.kind for r in probe.rules()} == {"alerting", "recording"}


def test_rules_of_a_ruler_that_ignores_the_type_filter_are_kept_by_their_own_type() -> None:
    """vmalert before v1.98 and older Loki rulers answer every rule whatever ``type`` asks
    (the mock above does too): a recording rule is never an alert rule, nor the reverse."""
    probe = _prom(lambda r: _ok(RULES))
    assert {r.kind for r in probe.alert_rules()} == {"alerting"}
    assert [r.name for r in probe.recording_rules()] == ["slo:http_error_ratio:rate5m"]
    assert "slo:http_error_ratio:rate5m" not in {r.name for r in probe.alert_rules()}

    # A ruler that honours the filter answers the same.
    def honours(request: httpx.Request) -> httpx.Response:
        kind = {"alert": "alerting", "record": "recording"}[request.url.params["type"]]
        return _ok({"groups": [{**g, "rules": [r for r in g["rules"] if r["type"] == kind]}
                               for g in RULES["groups"]]})
    assert {r.name for r in _prom(honours).alert_rules()} == \
        {r.name for r in probe.alert_rules()}
    with pytest.raises(AccessRefused):
        _prom(lambda r: httpx.Response(403, json={})).alert_rules()


def test_a_missing_rule_is_data_not_an_error() -> None:
    probe = _prom(lambda r: _ok({"groups": []}))
    assert probe.alert_rules() == []
    assert probe.recording_rules() == []


@pytest.mark.parametrize(("status", "body", "error", "text"), [
    (400, {"status": "error", "errorType": "bad_data", "error": "invalid parameter 'type'"},
     UnexpectedResponse, "bad_data error: invalid parameter 'type'"),
    (422, {"status": "error", "errorType": "execution", "error": "many-to-many matching"},
     UnexpectedResponse, "execution error"),
    (503, {"status": "error", "errorType": "timeout", "error": "query timed out"},
     ProbeTimeout, "timeout error"),
    (401, {"message": "unauthorised"}, AccessRefused, "prometheus.bearer_token"),
    (200, "<html>a login page</html>", UnexpectedResponse, "API envelope"),
    (502, "bad gateway", UnexpectedResponse, "answered 502"),
])
def test_api_errors_are_probe_errors(status: int, body: Any, error: type[Exception],
                                     text: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body)

    with pytest.raises(error, match=re.escape(text)):
        _prom(handler).alert_rules()


def test_bearer_token_is_sent() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"] == "Bearer s3cr3t-token"
        return _ok({"version": "2.42.0", "revision": "abc"})

    assert _prom(handler, bearer_token="s3cr3t-token").buildinfo()["version"] == "2.42.0"


def test_targets_of_a_job() -> None:
    data = {"activeTargets": [
        {"labels": {"job": "relay", "instance": "a:1"}, "scrapePool": "relay",
         "scrapeUrl": "http://a:1/metrics", "health": "up", "lastError": "",
         "lastScrape": "2025-10-07T10:00:00Z"},
        {"labels": {"job": "node"}, "scrapePool": "node", "scrapeUrl": "http://n/metrics",
         "health": "down", "lastError": "refused", "lastScrape": ""},
    ]}
    probe = _prom(lambda r: _ok(data))
    relay = probe.targets("relay")
    assert [(t.scrape_url, t.health, t.last_scrape) for t in relay] == [
        ("http://a:1/metrics", "up", "2025-10-07T10:00:00Z")]
    assert len(probe.targets()) == 2
    # By instance, for the configured job only.
    by_instance = _prom(lambda r: _ok(data), service_job="relay").instance_targets()
    assert {i: t.health for i, t in by_instance.items()} == {"a:1": "up"}
    assert {i: t.health for i, t in probe.instance_targets("node").items()} == \
        {"http://n/metrics": "down"}
    with pytest.raises(MissingInput, match="service_job"):
        probe.instance_targets()


def test_unreachable_prometheus() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(TargetUnreachable):
        _prom(handler).targets()


# -- Prometheus: PromQL through prometheus-api-client --------------------------------------------


class _PromServer:
    """A tiny HTTP server answering /api/v1/query with whatever the test sets."""

    def __init__(self) -> None:
        self.status = 200
        self.body: Any = {"status": "success", "data": {"resultType": "vector", "result": []}}
        self.queries: list[str] = []
        self.raw = False  # send ``body`` as it is rather than as JSON
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                from urllib.parse import parse_qs, urlsplit

                outer.queries.append(parse_qs(urlsplit(self.path).query).get("query", [""])[0])
                data = (outer.body if outer.raw else json.dumps(outer.body)).encode()
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()


@pytest.fixture
def prom_server() -> Iterator[_PromServer]:
    server = _PromServer()
    yield server
    server.server.shutdown()
    server.server.server_close()


def _vector(*values: tuple[dict[str, str], str]) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": m, "value": [1700000000.0, v]} for m, v in values]}}


def test_query_values(prom_server: _PromServer) -> None:
    probe = PrometheusProbe(PrometheusConfig(url=prom_server.url, service_job="relay"), timeout=2)
    prom_server.body = _vector(({"job": "relay"}, "0.25"))
    assert probe.value("x") == 0.25
    assert [dict(s.labels) for s in probe.job_series("db_connection_pool_size")] == [
        {"job": "relay"}]
    assert prom_server.queries[-1] == 'db_connection_pool_size{job="relay"}'
    prom_server.body = _vector()
    assert probe.value("x") is None
    prom_server.body = _vector(({}, "NaN"))
    value = probe.value("x")
    assert value is not None and math.isnan(value)
    prom_server.body = _vector(({"a": "1"}, "1"), ({"a": "2"}, "2"))
    with pytest.raises(UnexpectedResponse, match="returned 2 series"):
        probe.value("x")
    probe.close()


def test_query_error_envelope_is_an_error(prom_server: _PromServer) -> None:
    probe = PrometheusProbe(PrometheusConfig(url=prom_server.url), timeout=2)
    prom_server.status = 400
    prom_server.body = {"status": "error", "errorType": "bad_data",
                        "error": 'parse error: unexpected "(" '}
    with pytest.raises(UnexpectedResponse, match="bad_data error: parse error"):
        probe.query("rate(")
    prom_server.status = 503
    prom_server.body = {"status": "error", "errorType": "timeout", "error": "query timed out"}
    with pytest.raises(ProbeTimeout):
        probe.query("x")
    probe.close()


def test_query_answered_by_something_else_is_unexpected(prom_server: _PromServer) -> None:
    probe = PrometheusProbe(PrometheusConfig(url=prom_server.url), timeout=2)
    prom_server.body = "<html>a login page</html>"
    prom_server.raw = True
    with pytest.raises(UnexpectedResponse, match="did not return JSON"):
        probe.query("up")
    probe.close()


def test_query_to_a_closed_port_is_unreachable_and_quick() -> None:
    from opsready_stack.part import free_port

    probe = PrometheusProbe(PrometheusConfig(url=f"http://127.0.0.1:{free_port()}"), timeout=2)
    with pytest.raises(TargetUnreachable, match="could not be reached"):
        probe.query("up")


# -- SLO table --------------------------------------------------------------------------------


def _fixed(probe: PrometheusProbe, answers: dict[str, float | None]) -> list[str]:
    asked: list[str] = []

    def value(promql: str) -> float | None:
        asked.append(promql)
        return answers[promql]

    probe.value = value  # type: ignore[method-assign]
    return asked


def test_slo_status_ratio_slo_derives_budget_and_burn() -> None:
    probe = _prom(lambda r: _ok({}))
    spec = SloSpec(name="availability", target=0.999, objective="ge", query="avail[$window]")
    _fixed(probe, {"avail[1h]": 0.998, "avail[30d]": 0.9995})
    status = probe.slo_status(spec, SloConfig(window_days=30, current_window="1h", slos=[spec]))
    assert status.value == 0.998 and status.compliant is False
    assert status.budget_fraction == pytest.approx(0.001)
    # 0.05 % bad of a 0.1 % budget over 30 days: half of it is left.
    assert status.budget_remaining == pytest.approx(0.5)
    # 0.2 % bad in the last hour: burning twice as fast as the budget allows.
    assert status.burn_rate == pytest.approx(2.0)
    row = status.row()
    assert set(row) == {"slo", "target", "objective", "unit", "value", "compliant",
                        "budget_remaining", "burn_rate", "current_window", "window",
                        "budget_window", "note"}
    assert (row["window"], row["budget_window"], row["note"]) == ("30d", "30d", "")


def test_slo_status_latency_slo_uses_bad_query() -> None:
    probe = _prom(lambda r: _ok({}))
    spec = SloSpec(name="p99", target=0.05, objective="le", unit="s", budget_fraction=0.01,
                   query="p99[$window]", bad_query="slow[$window]")
    _fixed(probe, {"p99[1h]": 0.03, "slow[30d]": 0.002, "slow[1h]": 0.005})
    status = probe.slo_status(spec, SloConfig(slos=[spec]))
    assert status.compliant is True
    assert status.budget_remaining == pytest.approx(0.8)
    assert status.burn_rate == pytest.approx(0.5)


def test_slo_status_without_data_says_why() -> None:
    probe = _prom(lambda r: _ok({}))
    spec = SloSpec(name="webhook p95", target=1.2, objective="le", unit="s", query="q")
    _fixed(probe, {"q": math.nan})
    status = probe.slo_status(spec, SloConfig(slos=[spec]))
    assert status.value is None and status.compliant is None
    assert status.missing == "no_events"
    assert status.budget_remaining is None and status.burn_rate is None
    assert "no events over 1h (NaN)" in status.note and "budget" in status.note
    _fixed(probe, {"q": None})
    assert probe.slo_status(spec, SloConfig(slos=[spec])).missing == "no_series"


def test_slo_status_up_query_makes_availability_fall_in_a_full_outage() -> None:
    """No request reaches a service that is down, so the request-based SLI keeps reading
    100 %; the scrapes that failed pull the up-based SLI, and the SLO, down."""
    probe = _prom(lambda r: _ok({}))
    spec = SloSpec(name="availability", target=0.999, objective="ge", query="req[$window]",
                   up_query="up[$window]")
    _fixed(probe, {"req[1h]": 1.0, "up[1h]": 0.25, "req[30d]": 1.0, "up[30d]": 0.99})
    status = probe.slo_status(spec, SloConfig(slos=[spec]))
    assert status.value == 0.25 and status.compliant is False
    assert status.budget_remaining == pytest.approx(1 - 0.01 / 0.001)
    # The request counter has no series at all in a long outage: the up-based SLI stands.
    _fixed(probe, {"req[1h]": None, "up[1h]": 0.0, "req[30d]": math.nan, "up[30d]": 0.98})
    status = probe.slo_status(spec, SloConfig(slos=[spec]))
    assert status.value == 0.0 and status.missing == ""
    without = SloSpec(name="availability", target=0.999, objective="ge", query="req[$window]")
    _fixed(probe, {"req[1h]": 1.0, "req[30d]": 1.0})
    assert probe.slo_status(without, SloConfig(slos=[without])).value == 1.0


def test_slo_status_budget_window_is_cut_to_the_retention() -> None:
    probe = _prom(lambda r: _ok({}))
    spec = SloSpec(name="error rate", target=0.01, objective="le", query="err[$window]")
    asked = _fixed(probe, {"err[1h]": 0.002, "err[1d]": 0.001})
    status = probe.slo_status(spec, SloConfig(window_days=30, slos=[spec]), retention_s=86400)
    assert "err[30d]" not in asked
    assert (status.window, status.budget_window) == ("30d", "1d")
    assert "Prometheus keeps 1d" in status.note
    assert status.budget_remaining == pytest.approx(0.9)


def test_promql_duration() -> None:
    assert promql_duration(30 * 86400) == "30d"
    assert promql_duration(1.5 * 86400) == "36h"
    assert promql_duration(90) == "90s"
    assert promql_duration(120) == "2m"


# -- Grafana ----------------------------------------------------------------------------------


def _grafana(handler: Handler) -> GrafanaProbe:
    cfg = GrafanaConfig(url="http://grafana.test", token="glsa_token", dashboards=["a"])
    return GrafanaProbe(cfg, timeout=2, transport=httpx.MockTransport(handler))


def test_grafana_dashboard_found_with_nested_panels() -> None:
    board = {"uid": "a", "title": "Golden", "version": 3, "panels": [
        {"type": "row", "title": "Latency", "collapsed": True, "panels": [
            {"type": "timeseries", "title": "p99"}]},
        {"type": "stat", "title": "up"},
    ]}

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"] == "Bearer glsa_token"
        if request.url.path == "/api/dashboards/uid/a":
            return httpx.Response(200, json={"dashboard": board, "meta": {"folderTitle": "Ops"}})
        return httpx.Response(404, json={"message": "Dashboard not found"})

    probe = _grafana(handler)
    found = probe.dashboard("a")
    assert found is not None
    assert (found.title, found.panels, found.folder) == ("Golden", 2, "Ops")
    assert probe.dashboard("missing") is None


def test_grafana_refused_token_is_an_error() -> None:
    probe = _grafana(lambda r: httpx.Response(401, json={"message": "invalid API key"}))
    with pytest.raises(AccessRefused):
        probe.dashboard("a")


# -- OTel -------------------------------------------------------------------------------------


def test_traceparent_is_w3c() -> None:
    ids = set()
    for _ in range(50):
        ctx = TraceContext.new()
        assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", ctx.traceparent)
        assert int(ctx.trace_id, 16) and int(ctx.span_id, 16)
        ids.add(ctx.trace_id)
    assert len(ids) == 50


def test_normalise_id() -> None:
    hex_id = "5b8efff798038103d269b633813fc60c"
    b64 = base64.b64encode(bytes.fromhex(hex_id)).decode()
    assert normalise_id(hex_id.upper()) == hex_id
    assert normalise_id(b64) == hex_id
    assert normalise_id(b64.rstrip("=")) == hex_id
    assert normalise_id(base64.b64encode(bytes.fromhex("eee19b7ec3c1b174")).decode()) == \
        "eee19b7ec3c1b174"


def _otel(handler: Handler, backend: str = "jaeger", **extra: Any) -> OtelProbe:
    cfg = OtelConfig(collector_health_url="http://collector:13133/",
                     otlp_http_url="http://collector:4318", trace_backend=backend,
                     trace_api_url="http://traces:16686", **extra)
    ticks = iter(range(10_000))
    return OtelProbe(cfg, timeout=2, transport=httpx.MockTransport(handler),
                     sleep=lambda s: None, clock=lambda: float(next(ticks)))


@pytest.mark.parametrize(("status", "body", "available"), [
    (200, {"status": "Server available", "upSince": "2025-10-07T10:00:00Z"}, True),
    (503, {"status": "Server not available"}, False),
])
def test_collector_health(status: int, body: dict[str, str], available: bool) -> None:
    health = _otel(lambda r: httpx.Response(status, json=body)).health()
    assert health.available is available and health.status_code == status


def test_collector_health_other_status_is_an_error() -> None:
    with pytest.raises(UnexpectedResponse):
        _otel(lambda r: httpx.Response(404, text="not found")).health()


def test_probe_span_is_otlp_json_with_hex_ids() -> None:
    sent: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url == "http://collector:4318/v1/traces"
        assert request.headers["content-type"] == "application/json"
        sent.append(json.loads(request.content))
        return httpx.Response(200, json={"partialSuccess": {}})

    result = _otel(handler).send_probe_span()
    span = sent[0]["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert result.accepted and span["traceId"] == result.trace_id
    assert re.fullmatch(r"[0-9a-f]{32}", span["traceId"])
    assert re.fullmatch(r"[0-9a-f]{16}", span["spanId"])
    assert int(span["endTimeUnixNano"]) > int(span["startTimeUnixNano"])


@pytest.mark.parametrize(("status", "body"), [
    (200, {"partialSuccess": {"rejectedSpans": "1", "errorMessage": "bad span"}}),
    (400, {"code": 3, "message": "bad span"}),
])
def test_probe_span_not_accepted(status: int, body: dict[str, Any]) -> None:
    result = _otel(lambda r: httpx.Response(status, json=body)).send_probe_span()
    assert not result.accepted


@pytest.mark.parametrize("status", [502, 503, 504])
def test_probe_span_behind_a_gateway_answer_cannot_be_judged(status: int) -> None:
    from opsready.probes._http import GatewayAnswer

    with pytest.raises(GatewayAnswer, match=str(status)):
        _otel(lambda r: httpx.Response(status, text="<html>Bad Gateway</html>")).send_probe_span()


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_probe_span_is_sent_again_after_a_retryable_answer(status: int) -> None:
    """OTLP/HTTP makes 429, 502, 503 and 504 retryable: a collector that sheds load for a
    moment accepts the span on a later try, after its Retry-After (bounded)."""
    answers = [httpx.Response(status, headers={"Retry-After": "2"}, text="busy"),
               httpx.Response(200, json={"partialSuccess": {}})]
    waits: list[float] = []
    cfg = OtelConfig(otlp_http_url="http://collector:4318", trace_api_url="http://traces:16686")
    probe = OtelProbe(cfg, timeout=2, transport=httpx.MockTransport(lambda r: answers.pop(0)),
                      sleep=waits.append)
    assert probe.send_probe_span().accepted and waits == [2.0]


def test_probe_span_throttled_on_every_try_is_not_accepted() -> None:
    """A collector that throttles every try refuses the span: that is the finding."""
    sent: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(1)
        return httpx.Response(429, headers={"Retry-After": "600"}, text="throttled")

    waits: list[float] = []
    cfg = OtelConfig(otlp_http_url="http://collector:4318", trace_api_url="http://traces:16686")
    result = OtelProbe(cfg, timeout=2, transport=httpx.MockTransport(handler),
                       sleep=waits.append).send_probe_span()
    assert not result.accepted and result.status_code == 429
    assert len(sent) == 3 and waits == [5.0, 5.0]


@pytest.mark.parametrize(("status", "error"), [(401, AccessRefused), (403, AccessRefused),
                                               (404, UnexpectedResponse)])
def test_probe_span_refused_or_misdirected_is_an_error(status: int, error: type[Exception]) -> None:
    with pytest.raises(error, match=str(status)):
        _otel(lambda r: httpx.Response(status, text="no")).send_probe_span()


def test_otel_unconfigured_endpoint_is_missing_input() -> None:
    probe = OtelProbe(OtelConfig(), timeout=2)
    with pytest.raises(MissingInput, match=r"otel\.otlp_http_url"):
        probe.send_probe_span()


def test_jaeger_read_back_waits_until_the_service_span_appears() -> None:
    trace_id = "5b8efff798038103d269b633813fc60c"
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == f"/api/traces/{trace_id}"
        calls["n"] += 1
        if calls["n"] == 1:
            return httpx.Response(404, json={"data": None, "errors": [{"code": 404}]})
        spans = [{"traceID": trace_id, "spanID": "0000000000000001", "operationName": "probe",
                  "processID": "p1", "references": []}]
        if calls["n"] >= 3:
            spans.append({"traceID": trace_id, "spanID": "0000000000000002",
                          "operationName": "GET /api/v1/actions", "processID": "p2",
                          "references": [{"refType": "CHILD_OF", "spanID": "0000000000000001"}]})
        return httpx.Response(200, json={"data": [{
            "traceID": trace_id, "spans": spans,
            "processes": {"p1": {"serviceName": "opsready-probe"},
                          "p2": {"serviceName": "relay-api"}}}]})

    probe = _otel(handler)
    trace, _ = probe.wait_for_trace(trace_id, until=lambda t: bool(t.spans_of("relay-api")))
    assert trace is not None and calls["n"] == 3
    assert trace.services == ["opsready-probe", "relay-api"]
    assert trace.spans_of("relay-api")[0].parent_span_id == "0000000000000001"


def test_read_back_gives_up_after_the_bounded_wait() -> None:
    probe = _otel(lambda r: httpx.Response(404, json={"data": None}), read_back_timeout_s=5)
    trace, waited = probe.wait_for_trace("5b8efff798038103d269b633813fc60c")
    assert trace is None and 5 <= waited < 10


def test_tempo_read_back_normalises_base64_ids() -> None:
    trace_id = "5b8efff798038103d269b633813fc60c"
    b64 = base64.b64encode(bytes.fromhex(trace_id)).decode()
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path.startswith("/api/v2/"):
            return httpx.Response(404, text="page not found")  # an older Tempo
        return httpx.Response(200, json={"batches": [{
            "resource": {"attributes": [
                {"key": "service.name", "value": {"stringValue": "relay-api"}}]},
            "scopeSpans": [{"spans": [{"traceId": b64, "spanId": "7+4ZsFTBsXQ=",
                                       "name": "GET /health"}]}]}]})

    trace = _otel(handler, backend="tempo").get_trace(trace_id)
    assert seen == [f"/api/v2/traces/{trace_id}", f"/api/traces/{trace_id}"]
    assert trace is not None and trace.services == ["relay-api"]
    assert trace.spans[0].span_id == "efee19b054c1b174"


# -- runbooks ---------------------------------------------------------------------------------


class _Repo:
    repo = "acme/relay"

    def __init__(self, files: dict[str, str]) -> None:
        self.files = files
        self.asked: list[tuple[str, str | None]] = []

    def get_file(self, path: str, ref: str | None = None) -> str | None:
        self.asked.append((path, ref))
        return self.files.get(path)


def test_headings_and_sections() -> None:
    text = "# Runbook\n\n## 1. Symptoms\n\nImpact\n------\n\n```\n## Diagnosis\n```\n" \
           "### MITIGATION:\n"
    assert headings(text) == ["Runbook", "1. Symptoms", "Impact", "MITIGATION:"]
    sections = ["Symptoms", "Impact", "Diagnosis", "Mitigation", "Escalation"]
    assert missing_sections(text, sections) == ["Diagnosis", "Escalation"]


def test_runbook_links_resolve() -> None:
    repo = _Repo({"docs/runbooks/outage.md": "# Outage"})

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200 if request.url.path == "/wiki/ok" else 404)

    lib = RunbookLibrary(RunbooksConfig(), timeout=2, github=repo,
                         transport=httpx.MockTransport(handler))
    assert lib.resolve("github:docs/runbooks/outage.md").resolves
    assert not lib.resolve("github:docs/runbooks/gone.md").resolves
    blob = lib.resolve("https://github.com/acme/relay/blob/main/docs/runbooks/outage.md")
    assert blob.resolves and repo.asked[-1] == ("docs/runbooks/outage.md", "main")
    assert lib.resolve("https://wiki.example.com/wiki/ok").resolves
    assert lib.resolve("https://wiki.example.com/wiki/missing").detail == "HTTP 404"
    assert not lib.resolve("see the wiki").resolves


def test_runbook_link_behind_a_login_cannot_be_judged() -> None:
    lib = RunbookLibrary(RunbooksConfig(), timeout=2, github=_Repo({}),
                         transport=httpx.MockTransport(lambda r: httpx.Response(403)))
    with pytest.raises(AccessRefused, match="behind a login"):
        lib.resolve("https://wiki.example.com/wiki/private")


def test_local_runbooks(tmp_path: Path) -> None:
    (tmp_path / "books").mkdir()
    (tmp_path / "books" / "outage.md").write_text("# Symptoms\n")
    lib = RunbookLibrary(RunbooksConfig(source="local"), timeout=2, base_dir=tmp_path)
    assert lib.read("books/outage.md") == "# Symptoms\n"
    assert lib.read("books/missing.md") is None
    with pytest.raises(MissingInput, match="github section"):
        lib.resolve("github:docs/x.md")


class _Branches(_Repo):
    """A repository whose files also exist on a release branch with a `/` in its name."""

    def get_file(self, path: str, ref: str | None = None) -> str | None:
        self.asked.append((path, ref))
        return self.files.get(path) if ref in (None, "main", "release/2024.06") else None


def test_blob_links_on_a_branch_with_a_slash() -> None:
    repo = _Branches({"docs/runbooks/outage.md": "# Outage"})
    lib = RunbookLibrary(RunbooksConfig(), timeout=2, github=repo)
    link = "https://github.com/acme/relay/blob/release/2024.06/docs/runbooks/outage.md"
    found = lib.resolve(link)
    assert found.resolves, found.detail
    assert repo.asked[:2] == [("2024.06/docs/runbooks/outage.md", "release"),
                              ("docs/runbooks/outage.md", "release/2024.06")]
    gone = lib.resolve("https://github.com/acme/relay/blob/release/2024.06/docs/gone.md")
    assert not gone.resolves and "tried" in gone.detail


def test_templated_runbook_urls_are_expanded_with_a_firing_series_labels() -> None:
    repo = _Repo({"docs/runbooks/db-connections.md": "# DB"})
    lib = RunbookLibrary(RunbooksConfig(), timeout=2, github=repo)
    url = "https://github.com/acme/relay/blob/main/docs/runbooks/{{ $labels.runbook }}.md"
    found = lib.resolve_rule_link(url, {"runbook": "db-connections", "severity": "critical"})
    assert found.resolves and found.judged
    assert lib.resolve_rule_link("github:docs/runbooks/{{.Labels.runbook}}.md",
                                 {"runbook": "db-connections"}).resolves
    # Without expansion the same link would not resolve.
    assert not lib.resolve(url).resolves
    # A label only the firing series carries cannot be expanded: not judged.
    series_only = lib.resolve_rule_link("github:docs/{{ $labels.workspace }}.md", {})
    assert not series_only.judged and "workspace" in series_only.detail
    other = lib.resolve_rule_link("github:docs/{{ $value }}.md", {})
    assert not other.judged


def test_section_words_count_the_body_and_its_subsections() -> None:
    text = ("# Runbook\n\n## Symptoms\n\nTBD\n\n## Impact\nEvery client.\n### Who\nAll of "
            "them, really.\n## Diagnosis\n```\n## not a heading\n```\n")
    words = section_words(text, ["Symptoms", "Impact", "Diagnosis", "Escalation"])
    assert words == {"Symptoms": 1, "Impact": 7, "Diagnosis": 3, "Escalation": None}


# -- Grafana datasources ------------------------------------------------------------------------


PROM = Datasource(uid="prom-1", name="Prometheus", type="prometheus", is_default=True)
LOKI = Datasource(uid="loki-1", name="Loki", type="loki")


def _board(*panels: dict[str, Any], variables: list[dict[str, Any]] | None = None) -> Dashboard:
    raw: dict[str, Any] = {"uid": "b", "panels": list(panels)}
    if variables is not None:
        raw["templating"] = {"list": variables}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"dashboard": raw, "meta": {}})

    found = _grafana(handler).dashboard("b")
    assert found is not None
    return found


def _resolved(board: Dashboard) -> dict[str, str | None]:
    return {f"{p.ref.panel}:{p.ref.text()}": None if p.datasource is None else p.datasource.uid
            for p in resolve_datasources(board, [PROM, LOKI])}


def test_panel_datasources_resolve_by_uid_name_variable_and_default() -> None:
    board = _board(
        {"title": "uid", "datasource": {"type": "prometheus", "uid": "prom-1"},
         "targets": [{"expr": "up"}]},
        {"title": "name", "datasource": "Prometheus", "targets": [{"expr": "up"}]},
        {"title": "var", "datasource": {"uid": "${ds}"}, "targets": [{"expr": "up"}]},
        {"title": "default", "targets": [{"expr": "up"}]},
        {"title": "text", "type": "text"},
        {"title": "row", "type": "row", "panels": [
            {"title": "nested", "datasource": {"uid": "loki-1"}, "targets": [{"expr": "{}"}]}]},
        variables=[{"type": "datasource", "name": "ds", "query": "prometheus",
                    "current": {"value": "prom-1"}}],
    )
    assert _resolved(board) == {
        "uid:uid prom-1": "prom-1", "name:name 'Prometheus'": "prom-1",
        "var:uid ${ds}": "prom-1", "default:the default datasource": "prom-1",
        "nested:uid loki-1": "loki-1"}


def test_mixed_panels_judge_their_targets_and_built_ins_pass() -> None:
    board = _board(
        {"title": "mixed", "datasource": {"uid": "-- Mixed --"}, "targets": [
            {"datasource": {"uid": "prom-1"}}, {"datasource": {"uid": "gone"}}]},
        {"title": "annotations", "datasource": {"type": "datasource", "uid": "grafana"},
         "targets": [{}]},
    )
    found = resolve_datasources(board, [PROM])
    assert [(p.ref.panel, p.ref.uid, p.datasource is not None, p.built_in) for p in found] == [
        ("mixed", "prom-1", True, False), ("mixed", "gone", False, False),
        ("annotations", "grafana", False, True)]


def test_server_side_expressions_are_built_in_and_their_inputs_are_judged() -> None:
    """A Math expression target ($A / $B) names Grafana's expression pseudo datasource
    (``__expr__``, formerly uid ``-100``): it queries nothing itself; its inputs are judged."""
    board = _board(
        {"title": "ratio", "datasource": {"uid": "-- Mixed --"}, "targets": [
            {"refId": "A", "datasource": {"uid": "prom-1"}},
            {"refId": "B", "datasource": {"uid": "gone"}},
            {"refId": "C", "datasource": {"type": "__expr__", "uid": "__expr__",
                                          "name": "Expression"}},
            {"refId": "D", "datasource": {"uid": "-100"}}]},
    )
    found = resolve_datasources(board, [PROM])
    assert [(p.ref.uid, p.datasource is not None, p.built_in) for p in found] == [
        ("prom-1", True, False), ("gone", False, False), ("__expr__", False, True),
        ("-100", False, True)]


def test_an_import_placeholder_and_a_deleted_uid_resolve_to_nothing() -> None:
    board = _board(
        {"title": "imported", "datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"},
         "targets": [{"datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}}]},
        {"title": "deleted", "datasource": {"type": "prometheus", "uid": "old-uid"},
         "targets": [{}]},
    )
    found = resolve_datasources(board, [PROM])
    assert [(p.ref.panel, p.datasource) for p in found] == [("imported", None),
                                                            ("deleted", None)]
    assert "unresolved import placeholder" in found[0].detail


def test_grafana_datasources_listing() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/datasources":
            return httpx.Response(200, json=[
                {"id": 1, "uid": "prom-1", "name": "Prometheus", "type": "prometheus",
                 "isDefault": True}, {"name": "no uid"}])
        return httpx.Response(404)

    assert _grafana(handler).datasources() == [
        Datasource(uid="prom-1", name="Prometheus", type="prometheus", is_default=True, id=1)]
    refused = _grafana(lambda r: httpx.Response(403, json={"message": "permissions"}))
    with pytest.raises(AccessRefused):
        refused.datasources()
