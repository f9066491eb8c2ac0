"""P2-002: real CORS exchanges, judged by the Fetch standard's CORS protocol.

For every configured path, allowed origin and method, a preflight as a browser sends it
(``OPTIONS`` with ``Origin``, ``Access-Control-Request-Method`` and
``Access-Control-Request-Headers``, no credentials); then the actual request
(``cors.actual_method`` with ``Origin``), whose response is what browsers and caches use.
Hostile origins are derived from every allowed origin (a suffix and a prefix trick, the other
scheme, a subdomain, ``null``) and sent with the configured ``disallowed_origins``. None may be
granted access as Fetch grants it: an ``Access-Control-Allow-Origin`` of ``*`` (the environment
lists the origins it allows) or of the hostile origin itself. A fixed allowed origin sent to
every requester grants nobody else, and such a fixed answer needs no ``Vary: Origin`` either
(Fetch says so); an answer chosen by Origin must carry it. A public API (``cors.any_origin``,
without credentials) allows every origin by design; there a hostile origin fails only when it
is granted credentials (its own origin echoed with ``Access-Control-Allow-Credentials: true``).

What the criteria can and cannot tell: they see the headers a browser would judge, and judge
them as Fetch does (an ok status is any 2xx; ``Access-Control-Allow-Credentials`` must be the
exact bytes ``true``; methods match case-sensitively, headers case-insensitively; ``*`` counts
only without credentials). They cannot see origins nobody configured or derived, paths not
configured, or what a browser's own cache does with the answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

import opsready
from opsready.probes.http_headers import HostileOrigin, hostile_origins

if TYPE_CHECKING:
    from opsready.config import CorsConfig
    from opsready.evidence import Evidence
    from opsready.probes.http import ServiceProbe
    from opsready.probes.http_headers import CorsResponse

pytestmark = [pytest.mark.ticket("P2-002")]


@pytest.fixture(scope="module")
def preflights(service: ServiceProbe, cors_config: CorsConfig) -> list[CorsResponse]:
    cfg = cors_config
    for key in ("paths", "allowed_origins"):
        if not getattr(cfg, key):
            opsready.not_covered(f"not configured: cors.{key}")
    return service.preflights([(path, origin, method) for path in cfg.paths
                               for origin in cfg.allowed_origins for method in cfg.methods],
                              cfg.request_headers)


@pytest.fixture(scope="module")
def actual(service: ServiceProbe, cors_config: CorsConfig,
           preflights: list[CorsResponse]) -> list[CorsResponse]:
    return service.cors_requests([(path, origin) for path in cors_config.paths
                                  for origin in cors_config.allowed_origins],
                                 cors_config.actual_method)


def _shown(p: CorsResponse) -> str:
    what = "preflight OPTIONS" if p.kind == "preflight" else f"actual {p.method}"
    method = f" ({p.method})" if p.kind == "preflight" else ""
    return f"{what} {p.url} from {p.origin}{method}"


def _record(evidence: Evidence, results: list[CorsResponse]) -> None:
    evidence.table("cors_exchanges", [p.row() for p in results])


def _some(problems: list[str], shown: int = 4) -> str:
    """The first few problems; the evidence table has every exchange."""
    more = len(problems) - shown
    return "; ".join(problems[:shown]) + (f"; and {more} more" if more > 0 else "")


def test_preflight_ok(preflights: list[CorsResponse], evidence: Evidence) -> None:
    """Each allowed origin's preflight answers with an ok status (2xx)"""
    _record(evidence, preflights)
    bad = [f"{_shown(p)} answered {p.status}" for p in preflights if not p.ok_status]
    assert not bad, (
        f"{_some(bad)}; expected an ok status (200-299) so the browser goes on; allow the "
        f"origin, method and headers in the service's CORS policy"
    )


def _origin_problem(p: CorsResponse, credentials: bool) -> str | None:
    value = p.allow_origin
    if value is None:
        return f"{_shown(p)}: no Access-Control-Allow-Origin"
    if value == "*" and credentials:
        return (f"{_shown(p)}: Access-Control-Allow-Origin was '*', expected the origin itself "
                f"(credentials are enabled)")
    if value not in (p.origin, "*"):
        return f"{_shown(p)}: Access-Control-Allow-Origin was {value!r}"
    return None


def test_allow_origin_is_the_origin(preflights: list[CorsResponse], cors_config: CorsConfig,
                                    evidence: Evidence) -> None:
    """Access-Control-Allow-Origin equals the origin, never * with credentials"""
    _record(evidence, preflights)
    bad = [m for p in preflights if (m := _origin_problem(p, cors_config.credentials))]
    assert not bad, (
        f"{_some(bad)}; expected the requesting origin echoed exactly; answer allowed "
        f"origins from the allow-list, never with a wildcard"
    )


def test_allow_credentials(preflights: list[CorsResponse], cors_config: CorsConfig,
                           evidence: Evidence) -> None:
    """Access-Control-Allow-Credentials is exactly true"""
    if not cors_config.credentials:
        opsready.not_applicable("cors.credentials is false: the platform does not use "
                                "credentialed requests")
    _record(evidence, preflights)
    bad = [f"{_shown(p)}: Access-Control-Allow-Credentials was {p.allow_credentials!r}"
           for p in preflights if p.allow_credentials != "true"]
    assert not bad, (
        f"{_some(bad)}; expected exactly 'true' (Fetch compares it case-sensitively); "
        f"enable credentials in the CORS policy and send the value in lower case"
    )


def test_methods_allowed(preflights: list[CorsResponse], cors_config: CorsConfig,
                         evidence: Evidence) -> None:
    """Every configured method is allowed: listed, or CORS-safelisted"""
    _record(evidence, preflights)
    bad = [f"{_shown(p)}: {p.method} not in Access-Control-Allow-Methods "
           f"{p.header('access-control-allow-methods')!r}"
           for p in preflights if not p.allows_method(p.method, credentials=cors_config.credentials)]
    assert not bad, (
        f"{_some(bad)}; expected every non-safelisted method listed exactly as the browser "
        f"sends it (the match is case-sensitive); add it to the CORS policy's allowed methods"
    )


def test_headers_allowed(preflights: list[CorsResponse], cors_config: CorsConfig,
                         evidence: Evidence) -> None:
    """Every configured request header is allowed"""
    if not cors_config.request_headers:
        opsready.not_covered("not configured: cors.request_headers")
    _record(evidence, preflights)
    bad = [f"{_shown(p)}: {', '.join(missing)} not in Access-Control-Allow-Headers "
           f"{p.header('access-control-allow-headers')!r}" for p in preflights
           if (missing := [h for h in cors_config.request_headers
                           if not p.allows_header(h, credentials=cors_config.credentials)])]
    assert not bad, (
        f"{_some(bad)}; expected all of {', '.join(cors_config.request_headers)} allowed; "
        f"add them to the CORS policy's allowed headers"
    )


def _varies(p: CorsResponse, exchanges: list[CorsResponse]) -> bool:
    """Whether a cache keyed on this answer would serve it right: it says it varies by
    Origin, or it does not depend on Origin at all: a fixed ``*``, or one fixed origin that
    every other origin's exchange of the same kind and path got too (Fetch: a static
    Access-Control-Allow-Origin needs no Vary)."""
    if p.allow_origin == "*" or p.vary & {"origin", "*"}:
        return True
    same = [o for o in exchanges if o.kind == p.kind and o.url == p.url and o.origin != p.origin]
    return bool(same) and all(o.allow_origin == p.allow_origin for o in same)


def test_vary_origin(preflights: list[CorsResponse], hostile_exchanges: list[CorsResponse],
                     evidence: Evidence) -> None:
    """The preflight's Vary contains Origin, unless its answer is the same for every origin"""
    _record(evidence, preflights)
    seen = preflights + hostile_exchanges
    bad = [f"{_shown(p)}: Vary was {p.header('vary')!r}" for p in preflights
           if not _varies(p, seen)]
    assert not bad, (
        f"{_some(bad)}; expected Vary to contain Origin, so caches do not serve one origin's "
        f"answer to another; add Vary: Origin to CORS responses"
    )


def test_max_age(preflights: list[CorsResponse], cors_config: CorsConfig,
                 evidence: Evidence) -> None:
    """Access-Control-Max-Age is at least the configured minimum"""
    _record(evidence, preflights)
    minimum = cors_config.max_age_min_s
    bad = [f"{_shown(p)}: Access-Control-Max-Age was {p.header('access-control-max-age')!r}"
           for p in preflights if p.max_age is None or p.max_age < minimum]
    assert not bad, (
        f"{_some(bad)}; expected delta-seconds of at least {minimum} (0 disables the "
        f"preflight cache, and a missing or invalid value leaves browsers at 5 s, preflighting "
        f"nearly every request); set the CORS policy's max age"
    )


def test_actual_request(actual: list[CorsResponse], hostile_exchanges: list[CorsResponse],
                        cors_config: CorsConfig, evidence: Evidence) -> None:
    """The actual request from each allowed origin carries ACAO, ACAC and Vary: Origin"""
    _record(evidence, actual)
    seen = actual + hostile_exchanges
    bad = []
    for p in actual:
        problem = _origin_problem(p, cors_config.credentials)
        if problem:
            bad.append(problem)
        if cors_config.credentials and p.allow_credentials != "true":
            bad.append(f"{_shown(p)}: Access-Control-Allow-Credentials was {p.allow_credentials!r}")
        if not _varies(p, seen):
            bad.append(f"{_shown(p)}: Vary was {p.header('vary')!r}")
    assert not bad, (
        f"{_some(bad)}; expected the origin echoed, credentials 'true' and Vary: Origin on "
        f"the actual response too (browsers read it, and caches key on it); apply the CORS "
        f"policy to every response, not only to preflights"
    )


def _hostile(cfg: CorsConfig) -> list[HostileOrigin]:
    return hostile_origins(cfg.allowed_origins, cfg.hostile_variants, cfg.disallowed_origins)


@pytest.fixture(scope="module")
def hostile_exchanges(service: ServiceProbe, cors_config: CorsConfig,
                      preflights: list[CorsResponse]) -> list[CorsResponse]:
    """The preflights and actual requests of the hostile origins, sent once: the hostile
    criterion judges them, and the Vary criteria read them to tell an answer chosen by
    Origin from a fixed one."""
    cfg, hostile = cors_config, _hostile(cors_config)
    results = service.preflights([(path, h.origin, method) for path in cfg.paths
                                  for h in hostile for method in cfg.methods], cfg.request_headers)
    results += service.cors_requests([(path, h.origin) for path in cfg.paths for h in hostile],
                                     cfg.actual_method)
    return results


def test_hostile_origins_refused(cors_config: CorsConfig, hostile_exchanges: list[CorsResponse],
                                 evidence: Evidence) -> None:
    """Hostile and disallowed origins get no Access-Control-Allow-Origin"""
    cfg = cors_config
    hostile = _hostile(cfg)
    if not hostile:
        opsready.not_covered("no hostile origin to send: cors.allowed_origins gives none to "
                             "derive and cors.disallowed_origins is empty")
    kinds = {h.origin: h for h in hostile}
    results = hostile_exchanges
    _record(evidence, results)
    evidence.record("hostile_origins", [vars(h) for h in hostile])

    # A public API answers every origin; what it must never do is grant one credentials, which
    # Fetch does only for the origin echoed with Access-Control-Allow-Credentials: true.
    # Otherwise Fetch shares a response only when its Access-Control-Allow-Origin is "*" or
    # the requesting origin itself: a fixed allowed origin sent to everyone grants nobody else.
    def granted(p: CorsResponse) -> bool:
        if cfg.any_origin:
            return p.allow_credentials == "true" and p.allow_origin == p.origin
        return p.allow_origin in ("*", p.origin)

    leaked: dict[str, list[CorsResponse]] = {}
    for p in results:
        if granted(p):
            leaked.setdefault(p.origin, []).append(p)
    bad = []
    for origin, hits in leaked.items():
        h, first = kinds[origin], hits[0]
        made = h.variant + (f" of {h.derived_from}" if h.derived_from else "")
        others = f" and {len(hits) - 1} more exchanges" if len(hits) > 1 else ""
        got = (f"Access-Control-Allow-Credentials 'true' with Access-Control-Allow-Origin {first.allow_origin!r}"
               if cfg.any_origin else f"Access-Control-Allow-Origin {first.allow_origin!r}")
        bad.append(f"{origin} [{made}] got {got} on {_shown(first)} ({first.status}){others}")
    if cfg.any_origin:
        assert not bad, (
            f"{_some(bad)}; expected no credentials for any origin (cors.any_origin: a public API "
            f"is read without them); stop sending Access-Control-Allow-Credentials, or list the "
            f"allowed origins and set cors.any_origin: false"
        )
    assert not bad, (
        f"{_some(bad)}; expected no Access-Control-Allow-Origin for an origin outside the "
        f"allow-list; compare the Origin with the allow-list exactly, never by prefix, suffix "
        f"or pattern, and never reflect it (a public API read without credentials: set "
        f"cors.any_origin: true)"
    )
