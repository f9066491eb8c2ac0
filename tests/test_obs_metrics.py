"""The metrics endpoint probe: the parser follows ``Content-Type``, counters are judged by their
family type in both formats, and credentials are sent or their absence is an error."""

from __future__ import annotations

import base64

import httpx
import pytest

from opsready._errors import AccessRefused, UnexpectedResponse
from opsready.config import MetricsAuthConfig, ServiceConfig
from opsready.probes.metrics import ACCEPT, MetricsEndpoint

TEXT = (
    "# HELP rate_limit_breaches_total Breaches.\n"
    "# TYPE rate_limit_breaches_total counter\n"
    'rate_limit_breaches_total{workspace="a"} 2.0\n'
    "# TYPE db_connection_pool_size gauge\n"
    "db_connection_pool_size 8.0\n"
)
OPENMETRICS = (
    "# HELP rate_limit_breaches Breaches.\n"
    "# TYPE rate_limit_breaches counter\n"
    'rate_limit_breaches_total{workspace="a"} 2.0\n'
    "# TYPE db_connection_pool_size gauge\n"
    "db_connection_pool_size 8.0\n"
    "# EOF\n"
)
OM_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
TEXT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _endpoint(status: int, body: str, content_type: str | None,
              auth: MetricsAuthConfig | None = None,
              seen: list[httpx.Request] | None = None) -> MetricsEndpoint:
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        headers = {"Content-Type": content_type} if content_type else {}
        return httpx.Response(status, content=body.encode(), headers=headers)

    cfg = ServiceConfig(base_url="http://svc.test", metrics_auth=auth)
    return MetricsEndpoint(cfg, timeout=2, transport=httpx.MockTransport(handler))


@pytest.mark.parametrize(("body", "content_type", "fmt"), [
    (TEXT, TEXT_TYPE, "prometheus-text"),
    (TEXT, None, "prometheus-text"),
    (OPENMETRICS, OM_TYPE, "openmetrics"),
])
def test_the_counter_is_judged_by_its_family_type_in_either_format(
        body: str, content_type: str | None, fmt: str) -> None:
    snap = _endpoint(200, body, content_type).read()
    assert snap.format == fmt
    family = snap.family("rate_limit_breaches_total")
    assert family is not None and family.type == "counter"
    assert snap.total("rate_limit_breaches_total") == 2.0
    assert snap.total("db_connection_pool_size") == 8.0


def test_a_gauge_named_like_a_counter_is_a_gauge() -> None:
    body = "# TYPE rate_limit_breaches_total gauge\nrate_limit_breaches_total 3\n"
    family = _endpoint(200, body, TEXT_TYPE).read().family("rate_limit_breaches_total")
    assert family is not None and family.type == "gauge"


def test_the_declared_format_decides_the_parser() -> None:
    # Prometheus-text served as OpenMetrics breaks OpenMetrics' rules (a counter family named
    # with _total, no # EOF): the endpoint lies about its format, and that cannot be judged.
    with pytest.raises(UnexpectedResponse, match="not a valid openmetrics"):
        _endpoint(200, TEXT, OM_TYPE).read()


def test_the_request_asks_like_prometheus() -> None:
    seen: list[httpx.Request] = []
    _endpoint(200, TEXT, TEXT_TYPE, seen=seen).read()
    assert seen[0].headers["accept"] == ACCEPT
    assert "authorization" not in seen[0].headers


def test_bearer_and_basic_credentials_are_sent() -> None:
    seen: list[httpx.Request] = []
    _endpoint(200, TEXT, TEXT_TYPE, MetricsAuthConfig(bearer_token="tok"), seen).read()  # type: ignore[arg-type]
    assert seen[-1].headers["authorization"] == "Bearer tok"
    _endpoint(200, TEXT, TEXT_TYPE,
              MetricsAuthConfig(username="prom", password="pw"), seen).read()  # type: ignore[arg-type]
    assert seen[-1].headers["authorization"] == "Basic " + base64.b64encode(b"prom:pw").decode()


def test_basic_auth_needs_both_halves() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="both username and password"):
        MetricsAuthConfig(username="prom")
    with pytest.raises(ValidationError, match="not both"):
        MetricsAuthConfig(bearer_token="t", username="u", password="p")  # type: ignore[arg-type]


def test_401_without_credentials_cannot_be_judged() -> None:
    with pytest.raises(AccessRefused, match=r"set service\.metrics_auth"):
        _endpoint(401, "", None).read()
    with pytest.raises(AccessRefused, match="was refused"):
        _endpoint(403, "", None, MetricsAuthConfig(bearer_token="x")).read()  # type: ignore[arg-type]


@pytest.mark.parametrize(("status", "body", "content_type", "text"), [
    (404, "", TEXT_TYPE, "answered 404"),
    (200, "<html>{{oops}}</html>", TEXT_TYPE, "not a valid prometheus-text"),
    (200, "x 1\n", OM_TYPE, "not a valid openmetrics"),
    (200, "\x08\x01", "application/vnd.google.protobuf", "neither the Prometheus text"),
])
def test_what_cannot_be_read_is_an_error(status: int, body: str, content_type: str,
                                         text: str) -> None:
    with pytest.raises(UnexpectedResponse, match=text):
        _endpoint(status, body, content_type).read()
