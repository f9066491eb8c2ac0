"""The Grafana and OTel collector contract fakes, in-process: the real OTLP exporter (protobuf)
and our probes (JSON) talk to them, and their faults change exactly what they should."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from opsready.config import GrafanaConfig, OtelConfig
from opsready.probes.grafana import GrafanaProbe
from opsready.probes.otel import OtelProbe
from opsready_stack.grafana_fake import GOLDEN_SIGNALS_UID, FakeGrafana
from opsready_stack.grafana_fake import serve as serve_grafana
from opsready_stack.otel_fake import FakeCollector, SpanStore, StoredSpan, parse_otlp_json
from opsready_stack.otel_fake import serve as serve_otel
from opsready_stack.part import free_port


def _faults(dir: Path, *names: str) -> None:
    path = dir / "faults.json"
    path.write_text(json.dumps(list(names)))
    # Make sure the watchers see a new mtime even within one timestamp tick.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000 * (len(names) + 1)))


@pytest.fixture
def otel_fake(tmp_path: Path) -> Iterator[tuple[OtelProbe, Path]]:
    _faults(tmp_path)
    ports = {"health": free_port(), "otlp": free_port(), "query": free_port()}
    servers = serve_otel(FakeCollector(tmp_path), ports)
    for server in servers:
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    cfg = OtelConfig(collector_health_url=f"http://127.0.0.1:{ports['health']}/",
                     otlp_http_url=f"http://127.0.0.1:{ports['otlp']}",
                     trace_api_url=f"http://127.0.0.1:{ports['query']}",
                     read_back_timeout_s=2)
    probe = OtelProbe(cfg, timeout=2)
    yield probe, tmp_path
    probe.close()
    for server in servers:
        server.shutdown()
        server.server_close()


def test_otel_fake_round_trip_json(otel_fake: tuple[OtelProbe, Path]) -> None:
    probe, _ = otel_fake
    assert probe.health().available
    sent = probe.send_probe_span()
    assert sent.accepted and sent.status_code == 200
    trace, _ = probe.wait_for_trace(sent.trace_id)
    assert trace is not None
    assert [(s.span_id, s.service_name) for s in trace.spans] == [
        (sent.span_id, "opsready-probe")]


def test_otel_fake_accepts_the_real_exporters_protobuf(otel_fake: tuple[OtelProbe, Path]) -> None:
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    probe, _ = otel_fake
    provider = TracerProvider(resource=Resource.create({"service.name": "relay-api"}))
    exporter = OTLPSpanExporter(endpoint=probe.otlp_traces_url, timeout=3)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    ctx = probe.new_context()
    parent = TraceContextTextMapPropagator().extract({"traceparent": ctx.traceparent})
    with provider.get_tracer("test").start_as_current_span(
            "GET /api/v1/actions", context=parent, kind=trace.SpanKind.SERVER):
        pass
    provider.shutdown()
    found, _ = probe.wait_for_trace(ctx.trace_id)
    assert found is not None
    span = found.spans_of("relay-api")[0]
    assert span.parent_span_id == ctx.span_id and span.name == "GET /api/v1/actions"


def test_otel_fake_collector_down(otel_fake: tuple[OtelProbe, Path]) -> None:
    probe, dir = otel_fake
    _faults(dir, "collector-down")
    health = probe.health()
    assert not health.available and health.status_code == 503
    # A 503 from the OTLP receiver cannot tell whether the pipeline would accept the span.
    from opsready.probes._http import GatewayAnswer

    with pytest.raises(GatewayAnswer, match="503"):
        probe.send_probe_span()
    _faults(dir)
    assert probe.health().available


def test_otel_fake_rejects_bad_ids(otel_fake: tuple[OtelProbe, Path]) -> None:
    probe, _ = otel_fake
    bad = {"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": "0" * 32, "spanId": "1" * 16, "name": "x"}]}]}]}
    resp = httpx.post(probe.otlp_traces_url, json=bad, timeout=2)
    assert resp.status_code == 400 and "traceId" in resp.json()["message"]
    resp = httpx.post(probe.otlp_traces_url, content=b"x", timeout=2,
                      headers={"Content-Type": "text/plain"})
    assert resp.status_code == 415


def test_span_store_is_bounded() -> None:
    store = SpanStore(max_traces=3)
    for i in range(1, 6):
        store.add([StoredSpan(f"{i:032x}", f"{i:016x}", "", "s", 1, 0, 1, "svc")])
    assert len(store) == 3
    assert store.get(f"{1:032x}") == [] and store.get(f"{5:032x}")


def test_parse_otlp_json_reads_resource_and_attributes() -> None:
    body = {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "api"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": "5B8EFFF798038103D269B633813FC60C", "spanId": "eee19b7ec3c1b174",
            "parentSpanId": "eee19b7ec3c1b173", "name": "op", "kind": 2,
            "startTimeUnixNano": "1000", "endTimeUnixNano": "2000",
            "attributes": [{"key": "http.status", "value": {"intValue": "200"}}]}]}]}]}
    [span] = parse_otlp_json(json.dumps(body).encode())
    assert span.trace_id == "5b8efff798038103d269b633813fc60c"
    assert span.service_name == "api" and span.attributes == {"http.status": 200}


@pytest.fixture
def grafana_fake(tmp_path: Path) -> Iterator[tuple[GrafanaProbe, Path, str]]:
    _faults(tmp_path)
    port = free_port()
    server = serve_grafana(FakeGrafana(tmp_path, "glsa_test_token"), port)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    probe = GrafanaProbe(GrafanaConfig(url=url, token="glsa_test_token"), timeout=2)
    yield probe, tmp_path, url
    probe.close()
    server.shutdown()
    server.server_close()


def test_grafana_fake_serves_the_dashboards(grafana_fake: tuple[GrafanaProbe, Path, str]) -> None:
    probe, _, _ = grafana_fake
    assert probe.health()["database"] == "ok"
    uids = {d["uid"] for d in probe.search()}
    assert GOLDEN_SIGNALS_UID in uids
    board = probe.dashboard(GOLDEN_SIGNALS_UID)
    assert board is not None and board.panels >= 4 and "Golden Signals" in board.title
    assert [d["uid"] for d in probe.search("golden")] == [GOLDEN_SIGNALS_UID]


def test_grafana_fake_needs_the_token(grafana_fake: tuple[GrafanaProbe, Path, str]) -> None:
    _, _, url = grafana_fake
    assert httpx.get(f"{url}/api/health", timeout=2).status_code == 200
    assert httpx.get(f"{url}/api/search", timeout=2).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert httpx.get(f"{url}/api/dashboards/uid/{GOLDEN_SIGNALS_UID}", headers=wrong,
                     timeout=2).status_code == 401


def test_grafana_fake_dashboard_missing(grafana_fake: tuple[GrafanaProbe, Path, str]) -> None:
    probe, dir, _ = grafana_fake
    _faults(dir, "dashboard-missing")
    assert probe.dashboard(GOLDEN_SIGNALS_UID) is None
    assert GOLDEN_SIGNALS_UID not in {d["uid"] for d in probe.search()}
    assert probe.dashboard("relay-slo") is not None


def _panel_datasources(probe: GrafanaProbe, uid: str) -> set[str | None]:
    from opsready.probes.grafana import resolve_datasources

    board = probe.dashboard(uid)
    assert board is not None
    return {None if p.datasource is None else p.datasource.uid
            for p in resolve_datasources(board, probe.datasources())}


def test_grafana_fake_datasources_and_their_faults(
        grafana_fake: tuple[GrafanaProbe, Path, str]) -> None:
    probe, dir, url = grafana_fake
    assert httpx.get(f"{url}/api/datasources", timeout=2).status_code == 401
    kinds = {d.uid: d.type for d in probe.datasources()}
    assert kinds == {"prometheus": "prometheus", "loki": "loki"}
    assert _panel_datasources(probe, "relay-slo") == {"prometheus"}
    _faults(dir, "dashboard-datasource-unresolved")
    assert _panel_datasources(probe, "relay-slo") == {None}
    assert _panel_datasources(probe, GOLDEN_SIGNALS_UID) == {"prometheus"}
    _faults(dir, "datasource-deleted")
    assert _panel_datasources(probe, GOLDEN_SIGNALS_UID) == {None}
    _faults(dir, "dashboard-datasource-by-name")
    golden = probe.dashboard(GOLDEN_SIGNALS_UID)
    assert golden is not None and {r.name for r in golden.datasource_refs} == {"Prometheus"}
    slo = probe.dashboard("relay-slo")
    assert slo is not None and {r.uid for r in slo.datasource_refs} == {"${datasource}"}
    assert _panel_datasources(probe, GOLDEN_SIGNALS_UID) == {"prometheus"}
    assert _panel_datasources(probe, "relay-slo") == {"prometheus"}
