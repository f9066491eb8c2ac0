"""Bounded memory and time against any server: body limits, dripped bodies, silent servers, a
blackholed S3 endpoint, and gateway answers (unit level, hostile loopback servers)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from hostile import Blackhole, HostileServer, Received, Reply
from opsready._errors import ProbeError, ProbeTimeout
from opsready.config import (
    BackupsConfig,
    OtelConfig,
    PrometheusConfig,
    RateLimitConfig,
    S3Config,
    ServiceConfig,
)
from opsready.probes import _http
from opsready.probes._http import BodyTooLarge, GatewayAnswer, HttpTarget

MIB = 1 << 20


@pytest.fixture
def small_limit() -> Iterator[int]:
    before = _http.body_limit()
    _http.set_body_limit(MIB)
    yield MIB
    _http.set_body_limit(before)


def _endless(_: Received) -> Reply:
    """A chunked body that never ends (64 KiB chunks)."""
    def chunks() -> Iterator[bytes]:
        while True:
            yield b"A" * 65536
    return Reply(200, {"Content-Type": "text/plain"}, chunks())


def test_the_default_body_limit_is_16_mib() -> None:
    assert _http.DEFAULT_BODY_LIMIT == 16 * MIB


def test_a_body_over_the_limit_is_an_error_stating_the_size(small_limit: int) -> None:
    with HostileServer(_endless) as server, HttpTarget("service", server.url, timeout=10) as target:
        begun = time.monotonic()
        with pytest.raises(BodyTooLarge, match=r"more than 1 MiB") as info:
            target.request("GET", "/metrics")
        assert time.monotonic() - begun < 5
    assert "body_limit_bytes" in str(info.value)


def test_a_declared_length_over_the_limit_is_not_read(small_limit: int) -> None:
    def huge(_: Received) -> Reply:
        return Reply(200, {"Content-Length": str(2 << 30)}, iter([b"x" * 1024]))
    with HostileServer(huge) as server, HttpTarget("service", server.url, timeout=10) as target, \
            pytest.raises(BodyTooLarge, match=r"2 GiB \(Content-Length 2147483648\)"):
        target.request("GET", "/")


def test_a_body_within_the_limit_is_read_whole(small_limit: int) -> None:
    body = b"y" * (MIB - 10)
    with HostileServer(lambda _: Reply(200, {}, body)) as server, \
            HttpTarget("service", server.url, timeout=10) as target:
        assert target.request("GET", "/").content == body


def test_the_rate_limit_burst_reads_no_unbounded_body(small_limit: int) -> None:
    """Eight concurrent requests to a server sending endless bodies end with an error, fast."""
    from opsready.probes.http import ServiceProbe

    with HostileServer(_endless) as server:
        bound = RateLimitConfig(path="/api/v1/actions", max_requests=16, max_seconds=10, concurrency=8)
        cfg = ServiceConfig(base_url=server.url, rate_limit=bound)
        with ServiceProbe(cfg, timeout=10) as probe:
            begun = time.monotonic()
            with pytest.raises(BodyTooLarge):
                probe.burst()
            assert time.monotonic() - begun < 10


def test_the_promql_client_is_bounded_too(small_limit: int) -> None:
    from opsready.probes.prometheus import PrometheusProbe

    with HostileServer(_endless) as server:
        probe = PrometheusProbe(PrometheusConfig(url=server.url), timeout=10)
        try:
            with pytest.raises(BodyTooLarge):
                probe.query("up")
        finally:
            probe.close()


def test_a_dripped_body_takes_at_most_twice_the_timeout() -> None:
    def drip(_: Received) -> Reply:
        return Reply(200, {}, (b"." for _ in range(1000)), drip_s=0.2)
    with HostileServer(drip) as server, HttpTarget("service", server.url, timeout=1.0) as target:
        begun = time.monotonic()
        with pytest.raises(ProbeTimeout, match="still sending its body"):
            target.request("GET", "/")
        assert time.monotonic() - begun <= 2 * 1.0 + 0.5


def test_a_silent_server_takes_at_most_twice_the_timeout() -> None:
    with Blackhole() as hole, HttpTarget("service", hole.url, timeout=1.0) as target:
        begun = time.monotonic()
        with pytest.raises(ProbeTimeout, match="did not answer within 1s"):
            target.request("GET", "/health")
        assert time.monotonic() - begun <= 2 * 1.0 + 0.5


def test_a_blackholed_s3_endpoint_costs_one_timeout_per_criterion() -> None:
    """Each call tries twice at most, and once the endpoint timed out, later calls fail at once
    (it took 222 s before)."""
    from opsready.probes.s3 import BackupStore

    timeout = 1.0
    with Blackhole() as hole:
        cfg = BackupsConfig(s3=S3Config(bucket="b", endpoint_url=hole.url, access_key_id="AKIAEXAMPLE",
                                        secret_access_key="secret-example"))
        store = BackupStore(cfg, timeout=timeout)
        try:
            begun = time.monotonic()
            with pytest.raises(ProbeError):
                store.bucket_exists()
            first = time.monotonic() - begun
            begun = time.monotonic()
            with pytest.raises(ProbeError):
                store.versioning_status()
            second = time.monotonic() - begun
        finally:
            store.close()
    # Two attempts of one read timeout each, and a short back-off between them.
    assert first <= 2 * timeout + 1.5, first
    assert second < 0.5, second


GATEWAY_PAGE = b"<html><body><h1>502 Bad Gateway</h1></body></html>"


@pytest.mark.parametrize("status", [502, 503, 504])
def test_a_gateway_answer_cannot_judge_a_property_of_the_response(status: int) -> None:
    from opsready.probes.http import ServiceProbe
    from opsready.probes.otel import OtelProbe

    with HostileServer(lambda _: Reply(status, {"Content-Type": "text/html"}, GATEWAY_PAGE)) as server:
        with ServiceProbe(ServiceConfig(base_url=server.url, api_key="k" * 12), timeout=5) as service:
            with pytest.raises(GatewayAnswer, match=f"answered {status}"):
                service.preflight("/api", "https://a.example", "POST", ["X-API-Key"])
            with pytest.raises(GatewayAnswer):
                service.security_headers(["/health", "/api/v1/actions"])
            with pytest.raises(GatewayAnswer):
                service.metrics()
            # Availability itself: the answer is the finding.
            assert service.health().status == status
        otel = OtelProbe(OtelConfig(otlp_http_url=server.url, collector_health_url=server.url + "/h"), timeout=5)
        try:
            with pytest.raises(GatewayAnswer):
                otel.send_probe_span()
        finally:
            otel.close()


def test_an_unparsable_metrics_body_is_an_error() -> None:
    from opsready._errors import UnexpectedResponse
    from opsready.probes.http import ServiceProbe

    garbage = Reply(200, {"Content-Type": "text/plain"}, b"\xff\xfe{{{ not metrics")
    with HostileServer(lambda _: garbage) as server, \
            ServiceProbe(ServiceConfig(base_url=server.url), timeout=5) as service, \
            pytest.raises(UnexpectedResponse):
        service.metrics()
