"""``ServiceProbe`` and the webhook end-to-end probe.

Unit tests use ``httpx.MockTransport`` where a real service could not show the case (a limit
that never comes, a slow service, a refused key); the rest runs against the reference service
itself, started in this process without a database or a collector.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from opsready._errors import AccessRefused, MissingInput, TargetUnreachable, UnexpectedResponse
from opsready.config import RateLimitConfig, ServiceConfig, WebhooksConfig
from opsready.probes.http import ServiceProbe
from opsready.probes.webhooks import run_webhook_e2e, verify
from opsready_stack.part import free_port
from opsready_stack.service.app import ServiceSettings, serve_in_thread
from opsready_stack.service.signing import configured_secret

API_KEY = "dev-key-for-tests-0001"
ADMIN_KEY = "admin-key-for-tests-0001"
VIEWER_KEY = "viewer-key-for-tests-0001"
WEBHOOK_SECRET = "webhook-secret-for-tests"


def _cfg(base_url: str = "http://svc.test", **rate: object) -> ServiceConfig:
    return ServiceConfig(base_url=base_url, api_key=API_KEY,  # type: ignore[arg-type]
                         admin_key=ADMIN_KEY,  # type: ignore[arg-type]
                         rate_limit=RateLimitConfig(**rate))  # type: ignore[arg-type]


def _mock(handler: Callable[[httpx.Request], httpx.Response], **rate: object) -> ServiceProbe:
    return ServiceProbe(_cfg(**rate), timeout=5, transport=httpx.MockTransport(handler))


# ----------------------------------------------------------------------- burst bounds


def test_burst_stops_at_max_requests_when_no_429_comes() -> None:
    seen: list[str] = []
    lock = threading.Lock()

    def handler(request: httpx.Request) -> httpx.Response:
        with lock:
            seen.append(request.headers["X-API-Key"])
        return httpx.Response(200, json={})

    result = _mock(handler, max_requests=40, concurrency=4).burst()
    assert result.sent == 40 and len(seen) == 40
    assert not result.limited and result.took is None
    assert result.stopped_by == "max_requests"
    assert set(seen) == {API_KEY}


def test_burst_stops_at_max_seconds_on_a_slow_service() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        time.sleep(0.05)
        return httpx.Response(200)

    begun = time.monotonic()
    result = _mock(handler, max_requests=5000, max_seconds=0.4, concurrency=2).burst()
    took = time.monotonic() - begun
    assert result.stopped_by == "max_seconds"
    assert result.sent < 40
    assert took < 1.5


def test_burst_stops_at_the_first_429_and_keeps_its_headers() -> None:
    count = 0
    lock = threading.Lock()

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal count
        with lock:
            count += 1
            n = count
        if n > 25:
            return httpx.Response(429, headers={"Retry-After": "1", "X-RateLimit-Remaining": "0"})
        return httpx.Response(200)

    result = _mock(handler, max_requests=300, concurrency=4).burst()
    assert result.limited and result.stopped_by == "429"
    assert 26 <= (result.took or 0) <= 30
    assert result.sent <= 26 + 4
    assert result.limited_headers["retry-after"] == "1"
    assert result.evidence()["first_429_after"] == result.took


def test_burst_with_a_refused_key_is_access_refused_without_the_key() -> None:
    probe = _mock(lambda r: httpx.Response(401, json={"error": "bad key"}))
    with pytest.raises(AccessRefused) as err:
        probe.burst()
    assert API_KEY not in str(err.value)


def test_unreachable_service_is_target_unreachable() -> None:
    probe = ServiceProbe(_cfg(f"http://127.0.0.1:{free_port()}"), timeout=2)
    with pytest.raises(TargetUnreachable):
        probe.health()
    with pytest.raises(TargetUnreachable):
        probe.burst()
    with pytest.raises(TargetUnreachable):
        probe.preflight("/api/v1/actions", "http://localhost:3000", "POST", ["X-API-Key"])


# ----------------------------------------------------------------------- other requests


def test_metrics_parse_counters_by_their_total_name() -> None:
    text = (
        "# HELP rate_limit_breaches_total Breaches.\n"
        "# TYPE rate_limit_breaches_total counter\n"
        'rate_limit_breaches_total{workspace="a"} 2.0\n'
        'rate_limit_breaches_total{workspace="b"} 3.0\n'
        "# TYPE db_connection_pool_size gauge\n"
        "db_connection_pool_size 8.0\n"
    )
    probe = _mock(lambda r: httpx.Response(200, text=text))
    snap = probe.metrics()
    family = snap.family("rate_limit_breaches_total")
    assert family is not None and family.type == "counter"
    assert snap.total("rate_limit_breaches_total") == 5.0
    assert snap.total("db_connection_pool_size") == 8.0
    assert snap.family("absent_total") is None and snap.total("absent_total") is None


def test_metrics_not_an_exposition_is_unexpected() -> None:
    probe = _mock(lambda r: httpx.Response(200, text="<html>{{oops}} not metrics"))
    with pytest.raises(UnexpectedResponse):
        probe.metrics()
    probe = _mock(lambda r: httpx.Response(404))
    with pytest.raises(UnexpectedResponse, match="404"):
        probe.metrics()


def test_a_short_retry_after_is_waited_out_once() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(429, headers={"Retry-After": "0"}) if calls == 1 else \
            httpx.Response(200, json={"ok": True})

    resp = _mock(handler).get("/api/v1/actions", headers={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"})
    assert resp.status == 200 and calls == 2


def test_preflight_sends_no_credentials() -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(204, headers={"Access-Control-Allow-Origin": "http://localhost:3000",
                                            "Vary": "Origin, Accept-Encoding"})

    result = _mock(handler).preflight("/x", "http://localhost:3000", "POST",
                                      ["Idempotency-Key", "X-API-Key"])
    request = sent[0]
    assert request.method == "OPTIONS"
    assert "x-api-key" not in request.headers
    assert request.headers["access-control-request-headers"] == "idempotency-key, x-api-key"
    assert result.status == 204 and result.listed("Vary") == {"origin", "accept-encoding"}
    assert result.evidence()["request"]["headers"]["Origin"] == "http://localhost:3000"


# ----------------------------------------------------------------------- the real service


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The reference service in this process, hex scheme, no database and no collector."""
    stack_dir = tmp_path_factory.mktemp("relay")
    settings = ServiceSettings(
        dir=stack_dir,
        keys={API_KEY: ("developer", "ws-developer"), ADMIN_KEY: ("admin", "ws-admin"),
              VIEWER_KEY: ("viewer", "ws-viewer")},
        webhook_scheme="hex", webhook_secret=WEBHOOK_SECRET, version="a" * 40,
        postgres_dsn=None, otlp_url=None,
    )
    with serve_in_thread(settings, free_port()) as url:
        yield url, stack_dir


@pytest.fixture
def probe(relay: tuple[str, Path]) -> Iterator[ServiceProbe]:
    with ServiceProbe(_cfg(relay[0]), timeout=5) as p:
        yield p


@pytest.fixture
def faults(relay: tuple[str, Path]) -> Iterator[Callable[..., None]]:
    path = relay[1] / "faults.json"

    def set_faults(*names: str) -> None:
        path.write_text(json.dumps(list(names)))

    yield set_faults
    path.write_text("[]")


def test_service_health_and_headers(probe: ServiceProbe) -> None:
    health = probe.health()
    assert health.status == 200 and health.version == "a" * 40
    seen = probe.response_headers()
    assert set(seen) == {"/health", "/api/v1/actions"}
    for headers in seen.values():
        assert headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "strict-origin-when-cross-origin"
        assert headers["content-security-policy"]


def test_service_needs_a_known_key(probe: ServiceProbe) -> None:
    assert probe.get("/api/v1/actions", key="none").status == 401
    assert probe.get("/api/v1/actions", headers={"X-API-Key": "wrong"}, key="none").status == 401
    assert probe.get("/api/v1/actions").status == 200


def test_service_execute_is_idempotent(probe: ServiceProbe) -> None:
    path = "/api/v1/actions/execute"
    assert probe.post(path, json={"action": "cache.purge"}).status == 400  # no Idempotency-Key
    first = probe.post(path, json={"action": "cache.purge"}, headers={"Idempotency-Key": "k-1"})
    again = probe.post(path, json={"action": "cache.purge"}, headers={"Idempotency-Key": "k-1"})
    assert first.status == 202 and again.status == 202
    assert first.json() == again.json()
    assert again.headers.get("idempotent-replayed") == "true"
    other = probe.post(path, json={"action": "deploy.preview"}, headers={"Idempotency-Key": "k-1"})
    assert other.status == 422
    viewer = probe.post(path, json={"action": "x"}, headers={"Idempotency-Key": "k-2",
                                                             "X-API-Key": VIEWER_KEY})
    assert viewer.status == 403


def test_service_registers_only_local_receivers(probe: ServiceProbe) -> None:
    path = "/api/v1/webhooks/endpoints"
    for url in ("https://hooks.example.com/x", "http://10.0.0.1:80/x", "http://127.0.0.1/no-port"):
        assert probe.post(path, json={"url": url}, key="admin").status == 422, url
    assert probe.post(path, json={"url": "http://127.0.0.1:9/x"}).status == 403  # not admin
    created = probe.post(path, json={"url": "http://127.0.0.1:9/x"}, key="admin")
    assert created.status == 201
    assert probe.delete(f"{path}/{created.json()['id']}").status == 204


def test_service_rate_limit_and_breach_counter(probe: ServiceProbe) -> None:
    before = probe.metrics().total("rate_limit_breaches_total")
    burst = probe.burst()
    assert burst.limited and (burst.took or 0) <= 120
    headers = burst.limited_headers
    assert int(headers["retry-after"]) >= 1
    assert {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"} <= set(headers)
    after = probe.metrics().total("rate_limit_breaches_total")
    assert before is not None and after is not None and after > before
    # The bucket refills within two seconds: an ordinary request gets through again.
    time.sleep(2.0)
    assert probe.get("/api/v1/actions").status == 200


def test_service_faults_flip_per_request(probe: ServiceProbe,
                                         faults: Callable[..., None]) -> None:
    faults("no-rate-limit", "no-breach-metric", "no-pool-metrics", "no-hsts")
    burst = probe.burst(RateLimitConfig(max_requests=120))
    assert not burst.limited and burst.sent == 120
    snap = probe.metrics()
    assert snap.family("rate_limit_breaches_total") is None
    assert snap.family("db_connection_pool_size") is None
    assert "strict-transport-security" not in probe.health().headers
    faults()
    snap = probe.metrics()
    assert snap.family("rate_limit_breaches_total") is not None
    assert snap.total("db_connection_pool_in_use") == 0.0


def test_service_cors(probe: ServiceProbe, faults: Callable[..., None]) -> None:
    wanted = ["Idempotency-Key", "X-Signature", "X-API-Key"]
    ok = probe.preflight("/api/v1/actions", "http://localhost:3000", "POST", wanted)
    assert ok.status == 200 and ok.header("Access-Control-Allow-Origin") == "http://localhost:3000"
    assert {h.lower() for h in wanted} <= ok.listed("Access-Control-Allow-Headers")
    evil = probe.preflight("/api/v1/actions", "https://evil.example.com", "POST", wanted)
    assert evil.status == 400 and evil.header("Access-Control-Allow-Origin") is None
    faults("cors-wildcard")
    wild = probe.preflight("/api/v1/actions", "http://localhost:3000", "POST", wanted)
    assert wild.header("Access-Control-Allow-Origin") == "*"
    assert wild.header("Access-Control-Allow-Credentials") == "true"
    faults("cors-reflect-any")
    evil = probe.preflight("/api/v1/actions", "https://evil.example.com", "POST", wanted)
    assert evil.header("Access-Control-Allow-Origin") == "https://evil.example.com"


def test_webhook_e2e_against_the_service(probe: ServiceProbe,
                                         faults: Callable[..., None]) -> None:
    cfg = WebhooksConfig(secret=WEBHOOK_SECRET, delivery_timeout_s=5)  # type: ignore[arg-type]
    run = run_webhook_e2e(probe, cfg)
    assert run.delivery is not None and run.latency_s is not None and run.latency_s < 5
    assert run.registration.startswith("registered we_")
    assert verify("hex", WEBHOOK_SECRET, run.delivery.headers, run.delivery.body, time.time()).ok
    # The receiver was unregistered afterwards.
    listed = probe.get("/api/v1/webhooks/endpoints", key="admin").json()
    assert run.receiver_url not in json.dumps(listed)
    faults("unsigned-webhook")
    run = run_webhook_e2e(probe, cfg)
    assert run.delivery is not None and run.delivery.header("X-Signature") is None


def test_webhook_e2e_needs_a_fixed_port_for_a_static_target(probe: ServiceProbe) -> None:
    cfg = WebhooksConfig(secret=WEBHOOK_SECRET, register_path=None)  # type: ignore[arg-type]
    with pytest.raises(MissingInput, match="receiver_port"):
        run_webhook_e2e(probe, cfg)


def test_service_secret_forms() -> None:
    assert configured_secret("hex", "abc") == "abc"
    assert configured_secret("standard-webhooks", "abc") == "whsec_YWJj"


def test_service_exports_a_server_span_in_the_callers_trace(tmp_path: Path) -> None:
    """The service continues an incoming traceparent and exports over OTLP/HTTP."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from opsready.probes.webhooks import WebhookReceiver

    collector = WebhookReceiver(WebhooksConfig(secret="unused"))  # type: ignore[arg-type]
    with collector:
        port = collector.port
        settings = ServiceSettings(
            dir=tmp_path, keys={API_KEY: ("developer", "ws-developer")}, webhook_scheme="hex",
            webhook_secret=WEBHOOK_SECRET, version="b" * 40, postgres_dsn=None,
            otlp_url=f"http://127.0.0.1:{port}/v1/traces",
        )
        trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
        with serve_in_thread(settings, free_port()) as url, \
                ServiceProbe(_cfg(url), timeout=5) as probe:
            resp = probe.get("/api/v1/actions", headers={
                "traceparent": f"00-{trace_id}-{parent}-01"})
            assert resp.status == 200
            delivery = collector.wait_for_delivery(5.0)
    assert delivery is not None and delivery.path == "/v1/traces"
    export = ExportTraceServiceRequest.FromString(delivery.body)
    resource = export.resource_spans[0].resource
    names = {a.key: a.value.string_value for a in resource.attributes}
    assert names["service.name"] == "relay-api"
    spans = [s for rs in export.resource_spans for ss in rs.scope_spans for s in ss.spans]
    server = [s for s in spans if s.trace_id.hex() == trace_id]
    assert server and server[0].parent_span_id.hex() == parent
    assert server[0].name == "GET /api/v1/actions"
