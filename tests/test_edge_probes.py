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
from opsready.probes.webhooks import WebhookReceiver, run_webhook_e2e, verify
from opsready_stack.part import free_port
from opsready_stack.service.app import ServiceSettings, serve_in_thread
from opsready_stack.service.signing import configured_secret

API_KEY = "dev-key-for-tests-0001"
ADMIN_KEY = "admin-key-for-tests-0001"
VIEWER_KEY = "viewer-key-for-tests-0001"
WEBHOOK_SECRET = "webhook-secret-for-tests"
ACTIONS = "/api/v1/actions"


def _cfg(base_url: str = "http://svc.test", **rate: object) -> ServiceConfig:
    return ServiceConfig(base_url=base_url, api_key=API_KEY,  # type: ignore[arg-type]
                         admin_key=ADMIN_KEY,  # type: ignore[arg-type]
                         rate_limit=RateLimitConfig(path=ACTIONS, **rate))  # type: ignore[arg-type]


def _webhooks(**kw: object) -> WebhooksConfig:
    """The reference service's webhooks, as local.yaml describes them."""
    settings: dict[str, object] = {
        "secret": WEBHOOK_SECRET, "timestamp_field": "created",
        "event_id_field": "data.execution_id", "trigger_id_field": "execution_id",
        "register_path": "/api/v1/webhooks/endpoints", "trigger_path": f"{ACTIONS}/execute",
        "trigger_body": {"action": "opsready.probe"}, "delivery_timeout_s": 5,
    }
    return WebhooksConfig(**(settings | kw))  # type: ignore[arg-type]


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
    # `took` counts responses back when the first 429 came back: with four in flight, up to
    # three of the 25 answers before it may still be on their way.
    assert 26 - 3 <= (result.took or 0) <= 30
    assert result.sent <= 26 + 4
    assert result.limited_headers["retry-after"] == "1"
    assert result.retry_after is not None and result.retry_after.delay_s == 1
    assert result.evidence()["first_429_after"] == result.took
    assert result.evidence()["retry_after"]["form"] == "delay-seconds"


def test_burst_without_a_path_is_missing_input() -> None:
    probe = ServiceProbe(ServiceConfig(base_url="http://svc.test"), timeout=5,
                         transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    with pytest.raises(MissingInput, match=r"service\.rate_limit\.path"):
        probe.burst()


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
    with pytest.raises(TargetUnreachable):
        probe.cors_request("/api/v1/actions", "http://localhost:3000")
    with pytest.raises(TargetUnreachable):
        probe.security_headers(["/health"])


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


def test_a_retry_after_http_date_is_waited_out_against_the_servers_date() -> None:
    calls: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(time.monotonic())
        if len(calls) > 1:
            return httpx.Response(200, json={"ok": True})
        # The server's clock is a day behind ours; its Date is what its HTTP-date means against.
        return httpx.Response(429, headers={"Date": "Sun, 01 Mar 2026 12:00:00 GMT",
                                            "Retry-After": "Sun, 01 Mar 2026 12:00:01 GMT"})

    resp = _mock(handler).get("/api/v1/actions")
    assert resp.status == 200 and len(calls) == 2
    assert 0.8 < calls[1] - calls[0] < 3


def test_an_invalid_retry_after_is_not_waited_out() -> None:
    resp = _mock(lambda r: httpx.Response(429, headers={"Retry-After": "0.5"})).get("/x")
    assert resp.status == 429


def test_health_reads_the_status_field_and_bounds_the_body() -> None:
    probe = _mock(lambda r: httpx.Response(200, json={"status": "UP", "version": "abc"}))
    health = probe.health()
    assert (health.status, health.reported, health.version) == (200, "UP", "abc")
    assert health.evidence()["status_field"] == "status"
    plain = _mock(lambda r: httpx.Response(200, text="x" * 100_000)).health()
    assert plain.reported is None and plain.version is None
    assert isinstance(plain.body, str) and len(plain.body) == 4096
    listed = _mock(lambda r: httpx.Response(200, json=["ok"])).health()
    assert listed.reported is None


def test_security_headers_with_a_refused_key_is_access_refused() -> None:
    probe = _mock(lambda r: httpx.Response(401, json={"error": "bad key"}))
    with pytest.raises(AccessRefused, match=r"service\.api_key"):
        probe.security_headers(["/api/v1/actions"])


def test_security_headers_without_a_key_judge_what_comes_back() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert "x-api-key" not in request.headers
        return httpx.Response(401, headers=[("Strict-Transport-Security", "max-age=1"),
                                            ("Strict-Transport-Security", "max-age=99"),
                                            ("Content-Security-Policy", "default-src 'none'"),
                                            ("Content-Security-Policy", "img-src *")])

    probe = ServiceProbe(ServiceConfig(base_url="https://svc.test"), timeout=5,
                         transport=httpx.MockTransport(handler))
    [seen] = probe.security_headers(["/a", "/a"])
    assert seen.status == 401 and seen.over_https
    assert seen.hsts.max_age == 1 and seen.hsts.fields == 2
    assert len(seen.csp.policies) == 2
    assert seen.evidence()["headers"]["x-content-type-options"] is None


def test_preflight_sends_no_credentials() -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(204, headers={"Access-Control-Allow-Origin": "http://localhost:3000",
                                            "Vary": "Origin, Accept-Encoding"})

    result = _mock(handler).preflight("/x", "http://localhost:3000", "POST",
                                      ["X-API-Key", "Idempotency-Key"])
    request = sent[0]
    assert request.method == "OPTIONS"
    assert "x-api-key" not in request.headers
    # As browsers send it: lower-cased, sorted, no spaces.
    assert request.headers["access-control-request-headers"] == "idempotency-key,x-api-key"
    assert result.status == 204 and result.vary == {"origin", "accept-encoding"}
    assert result.row()["origin"] == "http://localhost:3000" and result.kind == "preflight"


def test_actual_cors_request_sends_origin_and_the_key() -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, headers={"Access-Control-Allow-Origin": "https://a.example",
                                            "Vary": "Origin"})

    result = _mock(handler).cors_request("/x", "https://a.example")
    assert sent[0].method == "GET" and sent[0].headers["origin"] == "https://a.example"
    assert sent[0].headers["x-api-key"] == API_KEY
    assert result.kind == "actual" and result.allow_origin == "https://a.example"


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


def test_service_health_and_headers(probe: ServiceProbe, faults: Callable[..., None]) -> None:
    health = probe.health()
    assert health.status == 200 and health.version == "a" * 40 and health.reported == "ok"
    seen = probe.security_headers(["/health", "/api/v1/actions"])
    assert [s.url.removeprefix(probe.base_url) for s in seen] == ["/health", "/api/v1/actions"]
    for headers in seen:
        assert headers.hsts.max_age == 31536000 and headers.hsts.include_subdomains
        assert headers.content_type_options == "nosniff"
        assert headers.referrer_policy == "strict-origin-when-cross-origin"
        assert not headers.csp.allows("script-src", "'unsafe-inline'")
    faults("health-reports-fail")
    assert probe.health().reported == "fail"
    faults("health-draft-format")
    draft = probe.health()
    assert draft.reported == "pass" and draft.content_type == "application/health+json"
    faults("security-headers-alternative")
    [alt] = probe.security_headers(["/health"])
    assert alt.hsts.preload and len(alt.csp.policies) == 2
    assert not alt.csp.allows("script-src", "'unsafe-inline'")
    assert not alt.csp.allows("script-src", "https:")
    assert alt.referrer_policy == "strict-origin-when-cross-origin"
    faults("hsts-short", "csp-unsafe-inline", "referrer-unsafe-url")
    [bad] = probe.security_headers(["/health"])
    assert bad.hsts.max_age == 86400 and bad.referrer_policy == "unsafe-url"
    assert bad.csp.allows("script-src", "'unsafe-inline'")


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
    assert burst.retry_after is not None and (burst.retry_after.delay_s or 0) >= 1
    assert {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"} <= set(headers)
    after = probe.metrics().total("rate_limit_breaches_total")
    assert before is not None and after is not None and after > before
    # The bucket refills within two seconds: an ordinary request gets through again.
    time.sleep(2.0)
    assert probe.get("/api/v1/actions").status == 200


def test_service_faults_flip_per_request(probe: ServiceProbe,
                                         faults: Callable[..., None]) -> None:
    faults("no-rate-limit", "no-breach-metric", "no-pool-metrics", "no-hsts")
    burst = probe.burst(RateLimitConfig(path=ACTIONS, max_requests=120))
    assert not burst.limited and burst.sent == 120
    snap = probe.metrics()
    assert snap.family("rate_limit_breaches_total") is None
    assert snap.family("db_connection_pool_size") is None
    assert "strict-transport-security" not in probe.health().headers
    faults()
    snap = probe.metrics()
    assert snap.family("rate_limit_breaches_total") is not None
    assert snap.total("db_connection_pool_in_use") == 0.0


def test_service_rate_limit_retry_after_faults(probe: ServiceProbe,
                                               faults: Callable[..., None]) -> None:
    faults("retry-after-http-date")
    burst = probe.burst()
    assert burst.retry_after is not None and burst.retry_after.form == "http-date"
    assert 0 < (burst.retry_after.seconds or 0) <= 3
    time.sleep(2.0)
    faults("retry-after-invalid")
    burst = probe.burst()
    assert burst.retry_after is not None and burst.retry_after.form == "invalid"
    time.sleep(2.0)


def test_service_cors(probe: ServiceProbe, faults: Callable[..., None]) -> None:
    wanted = ["Idempotency-Key", "X-Signature", "X-API-Key"]
    ok = probe.preflight("/api/v1/actions", "http://localhost:3000", "DELETE", wanted)
    assert ok.status == 200 and ok.allow_origin == "http://localhost:3000"
    assert {h.lower() for h in wanted} <= ok.allow_headers
    assert ok.allows_method("DELETE", credentials=True) and ok.max_age == 600
    actual = probe.cors_request("/api/v1/actions", "http://localhost:3000")
    assert actual.allow_origin == "http://localhost:3000" and actual.allow_credentials == "true"
    assert "origin" in actual.vary
    evil = probe.preflight("/api/v1/actions", "https://evil.example.com", "POST", wanted)
    assert evil.status == 400 and evil.allow_origin is None
    faults("cors-preflight-204")
    echo = probe.preflight("/api/v1/actions", "http://localhost:3000", "DELETE", wanted)
    assert echo.status == 204 and echo.allow_methods == ("DELETE",)
    assert {h.lower() for h in wanted} == echo.allow_headers
    faults("cors-startswith-match")
    sneaky = "http://localhost:3000.opsready-attacker.example"
    assert probe.cors_request("/api/v1/actions", sneaky).allow_origin == sneaky
    faults("cors-credentials-casing", "cors-max-age-zero", "cors-methods-safelisted-only",
           "cors-actual-no-vary")
    broken = probe.preflight("/api/v1/actions", "http://localhost:3000", "DELETE", wanted)
    assert broken.allow_credentials == "True" and broken.max_age == 0
    assert not broken.allows_method("DELETE", credentials=True)
    assert "origin" not in probe.cors_request("/api/v1/actions", "http://localhost:3000").vary
    faults("cors-wildcard")
    wild = probe.preflight("/api/v1/actions", "http://localhost:3000", "POST", wanted)
    assert wild.allow_origin == "*" and wild.allow_credentials == "true"
    faults("cors-reflect-any")
    evil = probe.preflight("/api/v1/actions", "https://evil.example.com", "POST", wanted)
    assert evil.allow_origin == "https://evil.example.com"


def test_webhook_e2e_against_the_service(probe: ServiceProbe,
                                         faults: Callable[..., None]) -> None:
    cfg = _webhooks()
    run = run_webhook_e2e(probe, cfg)
    assert run.delivery is not None and run.latency_s is not None and run.latency_s < 5
    assert run.registration.startswith("registered we_") and not run.stray
    assert run.expected_id == run.trigger.json()["execution_id"]
    assert verify("hex", WEBHOOK_SECRET, run.delivery.headers, run.delivery.body, time.time(),
                  timestamp_field="created").ok
    # The receiver was unregistered afterwards.
    listed = probe.get("/api/v1/webhooks/endpoints", key="admin").json()
    assert run.receiver_url not in json.dumps(listed)
    faults("unsigned-webhook")
    run = run_webhook_e2e(probe, cfg)
    assert run.delivery is not None and run.delivery.header("X-Signature") is None


def test_webhook_e2e_tells_the_triggered_event_from_strays(probe: ServiceProbe,
                                                          faults: Callable[..., None]) -> None:
    faults("webhook-ping-first")
    run = run_webhook_e2e(probe, _webhooks())
    assert run.delivery is not None
    assert [json.loads(d.body)["type"] for d in run.stray] in ([], ["ping"])
    faults("webhook-wrong-event")
    begun = time.monotonic()
    run = run_webhook_e2e(probe, _webhooks(delivery_timeout_s=1.5))
    assert run.delivery is None and len(run.stray) == 1
    assert run.evidence(_webhooks())["stray_deliveries"][0]["event_id"] != run.expected_id
    assert time.monotonic() - begun < 5
    # Correlated by the Idempotency-Key instead, which this platform's events do not carry.
    faults()
    run = run_webhook_e2e(probe, _webhooks(trigger_id_field=None, delivery_timeout_s=1.0))
    assert run.delivery is None and run.expected_id == run.idempotency_key


def test_webhook_e2e_trigger_without_the_id_field_is_unexpected(probe: ServiceProbe) -> None:
    with pytest.raises(UnexpectedResponse, match="no_such_field"):
        run_webhook_e2e(probe, _webhooks(trigger_id_field="no_such_field"))


def test_webhook_e2e_with_an_unreachable_receiver_url_is_unreachable(probe: ServiceProbe) -> None:
    dead = f"http://127.0.0.1:{free_port()}/hook"
    with pytest.raises(TargetUnreachable, match="does not reach the receiver"):
        run_webhook_e2e(probe, _webhooks(receiver_public_url=dead))
    # A URL that answers, but is not our receiver (a tunnel pointing elsewhere).
    with WebhookReceiver(_webhooks()) as elsewhere, \
            pytest.raises(TargetUnreachable, match="never reached the receiver"):
        run_webhook_e2e(probe, _webhooks(receiver_public_url=elsewhere.url))


def test_webhook_e2e_loopback_receiver_for_a_remote_platform_is_missing_input() -> None:
    remote = ServiceProbe(_cfg("https://api.relay.example.com"), timeout=5,
                          transport=httpx.MockTransport(lambda r: httpx.Response(500)))
    with pytest.raises(MissingInput, match="receiver_public_url"):
        run_webhook_e2e(remote, _webhooks())


def test_webhook_e2e_needs_a_fixed_port_for_a_static_target(probe: ServiceProbe) -> None:
    with pytest.raises(MissingInput, match="receiver_port"):
        run_webhook_e2e(probe, _webhooks(register_path=None))
    with pytest.raises(MissingInput, match="event_id_field"):
        run_webhook_e2e(probe, _webhooks(event_id_field=None))


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
