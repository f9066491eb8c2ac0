"""P0-001, edge part: the merged Phase 2/3 features answer at the service's edge: health, the
security headers and rate limiting.

The deployed version is compared with main's head in ``test_p0_001_delivery.py``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from opsready.evidence import Evidence
    from opsready.probes.http import ServiceProbe

pytestmark = [pytest.mark.ticket("P0-001")]

_SECURITY_HEADERS = ("strict-transport-security", "content-security-policy",
                     "x-content-type-options", "referrer-policy")


def test_health_ok(service: ServiceProbe, evidence: Evidence) -> None:
    """/health returns 200"""
    health = service.health()
    evidence.record("health", {"status": health.status, "body": health.body,
                               "version": health.version, "elapsed_s": round(health.elapsed_s, 4)})
    assert health.status == 200, (
        f"GET {service.base_url}{service.cfg.health_path} answered {health.status}, expected 200; "
        f"check the service's logs and its last deployment"
    )


def _header_problems(headers: dict[str, str], service: ServiceProbe) -> list[str]:
    want = service.cfg.security_headers
    problems = []
    hsts = headers.get("strict-transport-security")
    match = re.search(r"max-age\s*=\s*\"?(\d+)", hsts or "", re.I)
    if hsts is None:
        problems.append("no Strict-Transport-Security")
    elif match is None or int(match.group(1)) < want.hsts_min_max_age:
        problems.append(f"Strict-Transport-Security {hsts!r} has a max-age below "
                        f"{want.hsts_min_max_age}")
    if want.require_csp and not (headers.get("content-security-policy") or "").strip():
        problems.append("no Content-Security-Policy")
    nosniff = headers.get("x-content-type-options")
    if (nosniff or "").strip().lower() != want.content_type_options.lower():
        problems.append(f"X-Content-Type-Options was {nosniff!r}, expected "
                        f"{want.content_type_options!r}")
    referrer = headers.get("referrer-policy")
    # A comma-separated list falls back right to left: the last value is the one browsers use.
    effective = (referrer or "").split(",")[-1].strip().lower()
    if effective != want.referrer_policy.lower():
        problems.append(f"Referrer-Policy was {referrer!r}, expected {want.referrer_policy!r}")
    return problems


def test_security_headers(service: ServiceProbe, evidence: Evidence) -> None:
    """The security headers are present with correct values"""
    seen = service.response_headers()
    evidence.record("security_headers", {
        path: {name: headers.get(name) for name in _SECURITY_HEADERS}
        for path, headers in seen.items()
    })
    bad = [f"GET {service.base_url}{path}: {'; '.join(problems)}"
           for path, headers in seen.items()
           if (problems := _header_problems(headers, service))]
    assert not bad, (
        f"{' | '.join(bad)}; expected HSTS max-age ≥ {service.cfg.security_headers.hsts_min_max_age}, "
        f"a CSP, nosniff and the configured Referrer-Policy on every response; add them in the "
        f"service's security-headers middleware"
    )


@pytest.mark.intrusive("rate_limit_burst")
def test_rate_limit_burst(service: ServiceProbe, evidence: Evidence) -> None:
    """Rate limiting answers a bounded burst with 429 and Retry-After"""
    burst = service.burst()
    evidence.record("burst", burst.evidence())
    evidence.record("requests_to_429", burst.took)
    assert burst.limited, (
        f"a burst of {burst.sent} {burst.method} {service.base_url}{burst.path} requests with "
        f"the configured key in {burst.elapsed_s:.1f}s (bound: {burst.max_requests} requests, "
        f"{burst.max_seconds:g}s, stopped by {burst.stopped_by}) got no 429; expected the "
        f"per-workspace rate limit to refuse before the bound; enable rate limiting"
    )
    retry_after = burst.limited_headers.get("retry-after")
    assert retry_after is not None and retry_after.strip(), (
        f"the 429 after {burst.took} requests to {service.base_url}{burst.path} carried no "
        f"Retry-After; expected one so clients know when to come back; set it on every 429"
    )
