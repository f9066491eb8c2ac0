"""The health criterion called directly, with the service on a mocked transport: any 2xx with
a healthy (or no) status field passes, as the IETF health-check draft answers; an error status
or an unhealthy field fails; an unreachable service is not judged."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from conftest import load_check, refusing_transport
from opsready._errors import ProbeError
from opsready.config import ServiceConfig
from opsready.evidence import Evidence
from opsready.probes.http import ServiceProbe

EDGE = load_check("test_p0_001_edge")


def _service(status: int, body: Any = None, content_type: str = "application/json") -> ServiceProbe:
    def handler(request: httpx.Request) -> httpx.Response:
        if body is None:
            return httpx.Response(status)
        return httpx.Response(status, json=body, headers={"Content-Type": content_type})

    return ServiceProbe(ServiceConfig(base_url="http://svc.test"), timeout=2,
                        transport=httpx.MockTransport(handler))


@pytest.mark.parametrize(("status", "body"), [
    (200, {"status": "ok"}),
    (200, {"status": "Pass"}),
    (204, None),
    (202, {"status": "up"}),
])
def test_a_2xx_that_reports_healthy_passes(status: int, body: Any) -> None:
    EDGE.test_health_ok(_service(status, body), Evidence())


@pytest.mark.parametrize(("status", "body", "says"), [
    (503, {"status": "fail"}, "answered 503, expected a 2xx"),
    (301, None, "answered 301, expected a 2xx"),
    (200, {"status": "fail"}, "its 'status' is 'fail'"),
    (207, {"status": "down"}, "answered 207 but its 'status' is 'down'"),
])
def test_an_error_status_or_an_unhealthy_report_fails(status: int, body: Any, says: str) -> None:
    with pytest.raises(AssertionError, match=says):
        EDGE.test_health_ok(_service(status, body), Evidence())


def test_an_unreachable_service_is_not_judged() -> None:
    service = ServiceProbe(ServiceConfig(base_url="http://svc.test"), timeout=2,
                           transport=refusing_transport())
    with pytest.raises(ProbeError):
        EDGE.test_health_ok(service, Evidence())
