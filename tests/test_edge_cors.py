"""The CORS criteria called directly, with the service on a mocked transport that answers as
a fixed-origin policy does (nginx's ``add_header``, an API gateway's "enable CORS"): one
allowed origin, the same Access-Control-Allow-Origin on every response, no Vary. Fetch grants
that answer to nobody else and says it needs no Vary; a policy that reflects any origin, or
chooses the answer by Origin without saying so, stays open; an unreachable service is not
judged."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from conftest import load_check, refusing_transport
from opsready._errors import ProbeError
from opsready.config import CorsConfig, ServiceConfig
from opsready.evidence import Evidence
from opsready.probes.http import ServiceProbe

CORS = load_check("test_p2_002_cors_preflight")
APP = "https://app.example.com"


def _service(policy: str) -> ServiceProbe:
    """``fixed``: ACAO is always APP, no Vary. ``chosen``: ACAO is APP for APP only, without
    Vary. ``reflect``: every origin echoed, with Vary: Origin."""
    def handler(request: httpx.Request) -> httpx.Response:
        origin = request.headers.get("origin", "")
        headers: dict[str, str] = {"Access-Control-Allow-Credentials": "true"}
        if policy == "fixed" or (policy == "chosen" and origin == APP):
            headers["Access-Control-Allow-Origin"] = APP
        elif policy == "reflect":
            headers |= {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        if request.method == "OPTIONS":
            headers |= {"Access-Control-Allow-Methods": "GET, POST",
                        "Access-Control-Allow-Headers": "X-API-Key", "Access-Control-Max-Age": "600"}
            return httpx.Response(204, headers=headers)
        return httpx.Response(200, headers=headers, json={"ok": True})

    return ServiceProbe(ServiceConfig(base_url="http://api.test"), timeout=2,
                        transport=httpx.MockTransport(handler))


CFG = CorsConfig(paths=["/v1/items"], allowed_origins=[APP], methods=["POST"],
                 request_headers=["X-API-Key"])


def _exchanges(service: ServiceProbe) -> dict[str, Any]:
    preflights = service.preflights([("/v1/items", APP, "POST")], CFG.request_headers)
    actual = service.cors_requests([("/v1/items", APP)], CFG.actual_method)
    hostile = CORS.hostile_exchanges.__wrapped__(service, CFG, preflights)
    return {"preflights": preflights, "actual": actual, "hostile": hostile}


def test_a_fixed_single_origin_policy_is_done() -> None:
    seen = _exchanges(_service("fixed"))
    CORS.test_hostile_origins_refused(CFG, seen["hostile"], Evidence())
    CORS.test_vary_origin(seen["preflights"], seen["hostile"], Evidence())
    CORS.test_actual_request(seen["actual"], seen["hostile"], CFG, Evidence())
    CORS.test_allow_origin_is_the_origin(seen["preflights"], CFG, Evidence())


def test_an_answer_chosen_by_origin_without_vary_is_open() -> None:
    seen = _exchanges(_service("chosen"))
    CORS.test_hostile_origins_refused(CFG, seen["hostile"], Evidence())
    with pytest.raises(AssertionError, match="Vary was None"):
        CORS.test_vary_origin(seen["preflights"], seen["hostile"], Evidence())
    with pytest.raises(AssertionError, match="Vary was None"):
        CORS.test_actual_request(seen["actual"], seen["hostile"], CFG, Evidence())


def test_a_policy_that_reflects_every_origin_is_open() -> None:
    seen = _exchanges(_service("reflect"))
    CORS.test_vary_origin(seen["preflights"], seen["hostile"], Evidence())
    with pytest.raises(AssertionError, match=r"\[suffix of https://app\.example\.com\] got "
                                             r"Access-Control-Allow-Origin"):
        CORS.test_hostile_origins_refused(CFG, seen["hostile"], Evidence())


def test_with_no_other_origin_to_compare_a_fixed_answer_needs_vary() -> None:
    """One allowed origin and no hostile one: nothing tells a fixed answer from a chosen one,
    so Vary is required as before."""
    service = _service("fixed")
    preflights = service.preflights([("/v1/items", APP, "POST")], CFG.request_headers)
    with pytest.raises(AssertionError, match="Vary was None"):
        CORS.test_vary_origin(preflights, [], Evidence())


def test_an_unreachable_service_is_not_judged() -> None:
    service = ServiceProbe(ServiceConfig(base_url="http://api.test"), timeout=2,
                           transport=refusing_transport())
    with pytest.raises(ProbeError):
        CORS.hostile_exchanges.__wrapped__(service, CFG, [])
