"""P2-002: real CORS preflights from every allowed origin, and from the disallowed ones.

Each preflight is what a browser sends: ``OPTIONS`` with ``Origin``,
``Access-Control-Request-Method`` and ``Access-Control-Request-Headers``, and no credentials.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

import opsready

if TYPE_CHECKING:
    from opsready.config import CorsConfig
    from opsready.evidence import Evidence
    from opsready.probes.http import PreflightResult, ServiceProbe

pytestmark = [pytest.mark.ticket("P2-002")]


@pytest.fixture(scope="module")
def preflights(service: ServiceProbe, cors_config: CorsConfig) -> list[PreflightResult]:
    if not cors_config.allowed_origins:
        opsready.not_covered("not configured: cors.allowed_origins")
    return [
        service.preflight(cors_config.path, origin, cors_config.method, cors_config.request_headers)
        for origin in cors_config.allowed_origins
    ]


def _probed(cfg: CorsConfig, p: PreflightResult) -> str:
    return f"preflight OPTIONS {p.url} from {p.origin} ({cfg.method})"


def _record(evidence: Evidence, results: list[PreflightResult]) -> None:
    evidence.record("preflights", [p.evidence() for p in results])


def test_preflight_ok(preflights: list[PreflightResult], cors_config: CorsConfig,
                      evidence: Evidence) -> None:
    """Each allowed origin's preflight answers 200 or 204"""
    _record(evidence, preflights)
    bad = [f"{_probed(cors_config, p)} answered {p.status}" for p in preflights
           if p.status not in (200, 204)]
    assert not bad, (
        f"{'; '.join(bad)}; expected 200 or 204; allow the origin, method and headers in the "
        f"service's CORS policy"
    )


def test_allow_origin_is_the_origin(preflights: list[PreflightResult], cors_config: CorsConfig,
                                    evidence: Evidence) -> None:
    """Access-Control-Allow-Origin equals the origin, never * with credentials"""
    _record(evidence, preflights)
    bad = []
    for p in preflights:
        value = p.header("Access-Control-Allow-Origin")
        if value is None:
            bad.append(f"{_probed(cors_config, p)}: no Access-Control-Allow-Origin")
        elif value == "*" and cors_config.credentials:
            bad.append(f"{_probed(cors_config, p)}: Access-Control-Allow-Origin was '*', expected "
                       f"the origin itself (credentials are enabled)")
        elif value != p.origin and value != "*":
            bad.append(f"{_probed(cors_config, p)}: Access-Control-Allow-Origin was {value!r}")
    assert not bad, (
        f"{'; '.join(bad)}; expected the requesting origin echoed exactly; answer allowed "
        f"origins from the allow-list, never with a wildcard"
    )


def test_allow_credentials(preflights: list[PreflightResult], cors_config: CorsConfig,
                           evidence: Evidence) -> None:
    """Access-Control-Allow-Credentials is true"""
    if not cors_config.credentials:
        opsready.not_applicable("cors.credentials is false: the platform does not use credentialed requests")
    _record(evidence, preflights)
    bad = [f"{_probed(cors_config, p)}: Access-Control-Allow-Credentials was "
           f"{p.header('Access-Control-Allow-Credentials')!r}"
           for p in preflights
           if (p.header("Access-Control-Allow-Credentials") or "").strip().lower() != "true"]
    assert not bad, f"{'; '.join(bad)}; expected 'true'; enable credentials in the CORS policy"


# CORS-safelisted methods pass a preflight even when they are not listed (Fetch standard).
_SAFELISTED_METHODS = {"get", "head", "post"}


def test_method_and_headers_allowed(preflights: list[PreflightResult], cors_config: CorsConfig,
                                    evidence: Evidence) -> None:
    """The requested method and every requested header are allowed"""
    _record(evidence, preflights)
    bad = []
    for p in preflights:
        methods = p.listed("Access-Control-Allow-Methods")
        wildcard = "*" in methods and not cors_config.credentials
        method = cors_config.method.lower()
        if method not in methods and method not in _SAFELISTED_METHODS and not wildcard:
            bad.append(f"{_probed(cors_config, p)}: method {cors_config.method} not in "
                       f"Access-Control-Allow-Methods {p.header('Access-Control-Allow-Methods')!r}")
        allowed = p.listed("Access-Control-Allow-Headers")
        any_header = "*" in allowed and not cors_config.credentials
        missing = [h for h in cors_config.request_headers
                   if h.lower() not in allowed and not any_header]
        if missing:
            bad.append(f"{_probed(cors_config, p)}: {', '.join(missing)} not in "
                       f"Access-Control-Allow-Headers {p.header('Access-Control-Allow-Headers')!r}")
    assert not bad, (
        f"{'; '.join(bad)}; expected the method and all of {', '.join(cors_config.request_headers)} "
        f"allowed; add them to the CORS policy's allowed methods and headers"
    )


def test_vary_origin(preflights: list[PreflightResult], cors_config: CorsConfig,
                     evidence: Evidence) -> None:
    """Vary contains Origin"""
    _record(evidence, preflights)
    bad = [f"{_probed(cors_config, p)}: Vary was {p.header('Vary')!r}" for p in preflights
           if not p.listed("Vary") & {"origin", "*"}]
    assert not bad, (
        f"{'; '.join(bad)}; expected Vary to contain Origin, so caches do not serve one origin's "
        f"answer to another; add Vary: Origin to CORS responses"
    )


def test_max_age(preflights: list[PreflightResult], cors_config: CorsConfig,
                 evidence: Evidence) -> None:
    """Access-Control-Max-Age is present"""
    _record(evidence, preflights)
    bad = []
    for p in preflights:
        value = p.header("Access-Control-Max-Age")
        if value is None:
            bad.append(f"{_probed(cors_config, p)}: no Access-Control-Max-Age")
        elif not value.strip().lstrip("-").isdigit():
            bad.append(f"{_probed(cors_config, p)}: Access-Control-Max-Age {value!r} is not a number")
    assert not bad, (
        f"{'; '.join(bad)}; expected a Max-Age in seconds (browsers fall back to 5 s and "
        f"preflight nearly every request); set the CORS policy's max age"
    )


def test_disallowed_origin_refused(service: ServiceProbe, cors_config: CorsConfig,
                                   evidence: Evidence) -> None:
    """A disallowed origin gets no Access-Control-Allow-Origin"""
    if not cors_config.disallowed_origins:
        opsready.not_covered("not configured: cors.disallowed_origins")
    results = [
        service.preflight(cors_config.path, origin, cors_config.method, cors_config.request_headers)
        for origin in cors_config.disallowed_origins
    ]
    _record(evidence, results)
    bad = [f"{_probed(cors_config, p)} answered {p.status} with Access-Control-Allow-Origin "
           f"{p.header('Access-Control-Allow-Origin')!r}"
           for p in results if p.header("Access-Control-Allow-Origin") is not None]
    assert not bad, (
        f"{'; '.join(bad)}; expected no Access-Control-Allow-Origin for an origin outside the "
        f"allow-list; stop reflecting or wildcarding origins in the CORS policy"
    )
