"""P0-001, edge part: the merged Phase 2/3 features answer at the service's edge: health, the
security headers and rate limiting.

What each criterion can and cannot tell:

- Health: ``/health`` answers a 2xx (the IETF health-check draft answers its healthy statuses
  with any 2xx; a redirect is not followed, so it is not judged healthy) and, when its JSON
  body has the configured status field (``service.health_status_field``), that field says
  healthy. A body without the field (a 204 has none) is judged by the status code alone, and
  the evidence says so. It cannot tell whether the
  service checks its dependencies before it says healthy.
- Security headers: the policy of ``service.security_headers`` (defaults: the Mozilla HTTP
  Observatory's tests) on each configured path, with the headers parsed as browsers parse
  them: HSTS per RFC 6797 (first field only), CSP per CSP Level 3 (every policy must block a
  forbidden source; fallback to ``default-src``; nonces, hashes and ``'strict-dynamic'``),
  ``X-Content-Type-Options`` per Fetch and ``Referrer-Policy`` (the last recognised token).
  Over plain http a browser ignores HSTS (RFC 6797 §8.1); the header is still judged, and the
  evidence says that it protects nobody there. It reads only the configured paths.
- Rate limiting (intrusive): a bounded burst gets a 429 whose ``Retry-After`` is valid per
  RFC 9110 §10.2.3: delay-seconds of at least ``service.rate_limit.retry_after_min_s``, or an
  HTTP-date after the response's own ``Date``. RFC 6585 makes ``Retry-After`` optional on a
  429; it is required unless ``service.rate_limit.retry_after_required`` is false, and one
  that is sent is judged either way. A 429 without it may say when to come back with the IETF
  RateLimit fields instead (draft-ietf-httpapi-ratelimit-headers, any revision's syntax): a
  limit with no quota left and a window of at least the same minimum. Where both are sent,
  ``Retry-After`` decides, as the draft says; malformed RateLimit fields and vendor
  ``X-RateLimit-*`` fields (whose reset means seconds on some platforms and an epoch time on
  others) say nothing. It cannot tell whether the limit is the one the platform intends, only
  that one exists within the bound.

The deployed version is compared with main's head in ``test_p0_001_delivery.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

import opsready

if TYPE_CHECKING:
    from opsready.config import SecurityHeadersConfig
    from opsready.evidence import Evidence
    from opsready.probes.http import SecurityHeaders, ServiceProbe

pytestmark = [pytest.mark.ticket("P0-001")]


def test_health_ok(service: ServiceProbe, evidence: Evidence) -> None:
    """/health answers 2xx and reports itself healthy"""
    health = service.health()
    evidence.record("health", health.evidence())
    # The health-check draft answers pass and warn with any 2xx (or a redirect, which a
    # probe that follows none cannot judge); 204 carries no body to read.
    assert 200 <= health.status < 300, (
        f"GET {health.url} answered {health.status}, expected a 2xx; check the service's logs "
        f"and its last deployment"
    )
    if health.reported is None:
        evidence.record("health_status_field", f"the body has no {health.status_field!r} field; "
                                               "judged by the status code alone")
        return
    accepted = [v.lower() for v in service.cfg.health_ok_values]
    assert health.reported.strip().lower() in accepted, (
        f"GET {health.url} answered {health.status} but its {health.status_field!r} is "
        f"{health.reported!r}, expected one of {service.cfg.health_ok_values}; the service "
        f"reports itself unhealthy: see the body in the evidence for the failing dependency"
    )


@pytest.fixture(scope="module")
def security_headers(service: ServiceProbe) -> list[SecurityHeaders]:
    paths = service.cfg.security_headers.paths
    if not paths:
        opsready.not_covered("not configured: service.security_headers.paths")
    return service.security_headers(paths)


def _hsts_problems(seen: SecurityHeaders, want: SecurityHeadersConfig) -> list[str]:
    hsts = seen.hsts
    if not hsts.present:
        return ["no Strict-Transport-Security"]
    if hsts.problem is not None:
        return [f"Strict-Transport-Security {hsts.raw!r} is invalid: {hsts.problem}"]
    problems = []
    if (hsts.max_age or 0) < want.hsts_min_max_age:
        problems.append(f"HSTS max-age {hsts.max_age} is below {want.hsts_min_max_age}")
    if want.hsts_include_subdomains and not hsts.include_subdomains:
        problems.append("HSTS lacks includeSubDomains")
    if want.hsts_preload and not hsts.preload:
        problems.append("HSTS lacks preload")
    return problems


def _csp_problems(seen: SecurityHeaders, want: SecurityHeadersConfig) -> list[str]:
    csp = seen.csp
    if not csp.present:
        return ["no Content-Security-Policy"] if want.require_csp else []
    problems = [f"CSP has no {d}" for d in want.csp_required_directives if not csp.has(d)]
    for directive, sources in want.csp_forbidden_sources.items():
        allowed = [s for s in sources if csp.allows(directive, s)]
        if allowed:
            problems.append(f"CSP {directive} allows {' '.join(allowed)} "
                            f"(governed by: {'; '.join(csp.governing(directive))})")
    return problems


def _other_problems(seen: SecurityHeaders, want: SecurityHeadersConfig) -> list[str]:
    problems = []
    nosniff = seen.content_type_options
    if (nosniff or "").lower() != want.content_type_options.lower():
        problems.append(f"X-Content-Type-Options was {seen.raw['x-content-type-options']!r}, "
                        f"expected {want.content_type_options!r}")
    if seen.referrer_policy not in want.referrer_policies:
        problems.append(f"Referrer-Policy was {seen.raw['referrer-policy']!r} (applied: "
                        f"{seen.referrer_policy}), expected one of {want.referrer_policies}")
    return problems


def test_security_headers(service: ServiceProbe, security_headers: list[SecurityHeaders],
                          evidence: Evidence) -> None:
    """The security headers meet the configured policy on every configured path"""
    want = service.cfg.security_headers
    evidence.record("security_headers", [s.evidence() for s in security_headers])
    if not service.base_url.startswith("https://"):
        evidence.record("hsts_note", f"{service.base_url} is plain http: browsers ignore "
                                     "Strict-Transport-Security there (RFC 6797 §8.1), so HSTS "
                                     "is judged as sent but protects nobody on this URL")
    bad = [f"GET {s.url} ({s.status}): {'; '.join(problems)}" for s in security_headers
           if (problems := _hsts_problems(s, want) + _csp_problems(s, want)
               + _other_problems(s, want))]
    assert not bad, (
        f"{' | '.join(bad)}; expected the policy of service.security_headers on every "
        f"response; fix the service's security-headers middleware"
    )


@pytest.mark.intrusive("rate_limit_burst")
def test_rate_limit_burst(service: ServiceProbe, evidence: Evidence) -> None:
    """Rate limiting answers a bounded burst with 429 and says when to retry"""
    if service.cfg.rate_limit.path is None:
        opsready.not_covered("not configured: service.rate_limit.path")
    burst = service.burst()
    evidence.record("burst", burst.evidence())
    evidence.measure("requests_to_429", burst.took, "requests")
    assert burst.limited, (
        f"a burst of {burst.sent} {burst.method} {service.base_url}{burst.path} requests with "
        f"the configured key in {burst.elapsed_s:.1f}s (bound: {burst.max_requests} requests, "
        f"{burst.max_seconds:g}s, stopped by {burst.stopped_by}) got no 429; expected the "
        f"per-workspace rate limit to refuse before the bound; enable rate limiting"
    )
    retry = burst.retry_after
    where = f"the 429 after {burst.took} requests to {service.base_url}{burst.path}"
    minimum = service.cfg.rate_limit.retry_after_min_s
    fields = burst.ratelimit
    if retry is None and fields is not None and fields.wait_s is not None:
        # No Retry-After, but the IETF RateLimit fields say when to come back.
        evidence.record("retry_after", f"absent: the 429's {fields.syntax} asks clients to "
                        f"wait {fields.wait_s}s instead")
        assert fields.wait_s >= minimum, (
            f"{where}: {fields.syntax} {fields.raw} leaves no quota for {fields.wait_s}s, below "
            f"the minimum of {minimum}s (service.rate_limit.retry_after_min_s); a client would "
            f"retry at once into the same limit; send the seconds until quota is back"
        )
        return
    if retry is None and not service.cfg.rate_limit.retry_after_required:
        evidence.record("retry_after", "absent: RFC 6585 makes it optional, and "
                        "service.rate_limit.retry_after_required is false")
        return
    unusable = (f", and its RateLimit fields {fields.raw} do not say when to come back "
                f"({fields.problem or 'no limit with no quota left has a window'})"
                if fields is not None else "")
    assert retry is not None, (
        f"{where} carried no Retry-After{unusable}; expected one (or IETF RateLimit fields "
        f"with no quota left and a window) so clients know when to come back; set it on every "
        f"429 (RFC 6585 makes it optional: where the platform's 429s carry none by design, set "
        f"service.rate_limit.retry_after_required: false)"
    )
    if retry.form == "delay-seconds":
        assert (retry.delay_s or 0) >= minimum, (
            f"{where}: Retry-After {retry.raw!r} is below the minimum of {minimum}s; a client "
            f"would retry at once into the same limit; send the seconds until the window frees"
        )
    else:
        assert retry.form == "http-date" and (retry.seconds or 0) > 0, (
            f"{where}: Retry-After {retry.raw!r} is neither delay-seconds (digits only) nor an "
            f"HTTP-date after the response's {retry.reference_source} "
            f"({retry.reference.isoformat()}), as RFC 9110 §10.2.3 requires; send whole seconds"
        )
