"""The service's HTTP edge: health, security headers, CORS and a bounded rate-limit burst. The
metrics endpoint is read by ``opsready.probes.metrics``.

Every call goes through ``HttpTarget`` (timeouts, transport errors as ``ProbeError``). A
missing header or a wrong status is data for the check to judge, never an exception; only what
stops a judgement (unreachable, timed out, refused key, unparseable metrics) raises. Headers
come back parsed by their standards (``opsready.probes.http_headers``).
"""

from __future__ import annotations

import datetime as dt
import functools
import json as _json
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from opsready._errors import AccessRefused, MissingInput, ProbeError
from opsready.config import RateLimitConfig, ServiceConfig
from opsready.evidence import redactor
from opsready.probes._http import HttpTarget
from opsready.probes._parallel import in_parallel
from opsready.probes._shared import shared_fact
from opsready.probes.http_headers import (
    CorsResponse,
    Csp,
    Hsts,
    RateLimitFields,
    RetryAfter,
    all_values,
    first_value,
    lower_headers,
    parse_csp,
    parse_hsts,
    parse_ratelimit,
    parse_referrer_policy,
    parse_retry_after,
)
from opsready.probes.metrics import MetricsEndpoint, MetricsSnapshot
from opsready.probes.otel import TraceContext

__all__ = [
    "BurstResult",
    "HealthResult",
    "SecurityHeaders",
    "ServiceProbe",
    "ServiceResponse",
    "TracedRequest",
]

# Longest a single Retry-After we honour on an ordinary (non-burst) request, and how often.
_MAX_RETRY_AFTER_S = 5.0
_RETRIES_ON_429 = 3
# Most of a response body kept for evidence.
_MAX_BODY_SHOWN = 4096


def _headers(h: httpx.Headers) -> dict[str, str]:
    """Lower-cased names; repeated headers joined with ', ' as HTTP allows."""
    return lower_headers(h.multi_items())


def _retry_after(resp: httpx.Response) -> RetryAfter | None:
    value = resp.headers.get("retry-after")
    if value is None:
        return None
    return parse_retry_after(value, date_header=resp.headers.get("date"),
                             received=dt.datetime.now(dt.UTC))


@dataclass(frozen=True)
class ServiceResponse:
    """One plain request and what came back."""

    method: str
    path: str
    status: int
    headers: dict[str, str]
    text: str
    elapsed_s: float
    # Every header field as it arrived, for headers where only the first one counts.
    fields: tuple[tuple[str, str], ...] = ()

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON."""
        try:
            return _json.loads(self.text)
        except ValueError:
            return None


@dataclass(frozen=True)
class HealthResult:
    """``GET health_path``. ``reported`` is the body's status field (``health_status_field``)
    when the body is a JSON object that has it; ``body`` is bounded."""

    url: str
    status: int
    body: Any
    content_type: str | None
    version: str | None
    status_field: str | None
    reported: str | None
    headers: dict[str, str]
    elapsed_s: float

    def evidence(self) -> dict[str, Any]:
        return {"url": self.url, "status": self.status, "content_type": self.content_type,
                "body": self.body, "status_field": self.status_field,
                "reported_status": self.reported, "version": self.version,
                "elapsed_s": round(self.elapsed_s, 4)}


@dataclass(frozen=True)
class SecurityHeaders:
    """The security headers of one response, parsed."""

    url: str
    status: int
    hsts: Hsts
    csp: Csp
    content_type_options: str | None  # the first value, the one Fetch reads
    referrer_policy: str | None  # the policy a browser applies
    raw: dict[str, str | None]

    @property
    def over_https(self) -> bool:
        return self.url.startswith("https://")

    def evidence(self) -> dict[str, Any]:
        return {"url": self.url, "status": self.status, "headers": self.raw,
                "hsts": self.hsts.evidence(), "referrer_policy_applied": self.referrer_policy,
                "csp_policies": [p.directives for p in self.csp.policies]}


_SECURITY_HEADER_NAMES = ("strict-transport-security", "content-security-policy",
                          "x-content-type-options", "referrer-policy")


@dataclass
class BurstResult:
    """A bounded burst. ``took`` is how many responses had come back when the first 429 did."""

    path: str
    method: str
    max_requests: int
    max_seconds: float
    concurrency: int
    sent: int = 0
    took: int | None = None
    limited_status: int | None = None
    limited_headers: dict[str, str] = field(default_factory=dict)
    retry_after: RetryAfter | None = None
    # The 429's IETF RateLimit fields, if any: another way to say when to come back.
    ratelimit: RateLimitFields | None = None
    statuses: dict[int, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    stopped_by: str = ""  # "429", "max_requests" or "max_seconds"

    @property
    def limited(self) -> bool:
        return self.took is not None

    def evidence(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "method": self.method,
            "bound": {"max_requests": self.max_requests, "max_seconds": self.max_seconds,
                      "concurrency": self.concurrency},
            "requests_sent": self.sent,
            "first_429_after": self.took,
            "stopped_by": self.stopped_by,
            "elapsed_s": round(self.elapsed_s, 3),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "response_429_headers": self.limited_headers,
            "retry_after": self.retry_after.evidence() if self.retry_after else None,
            "ratelimit_fields": self.ratelimit.evidence() if self.ratelimit else None,
        }


@dataclass(frozen=True)
class TracedRequest:
    """A GET sent with a fresh W3C traceparent, and when it was sent (monotonic clock)."""

    context: TraceContext
    response: ServiceResponse
    sent_at: float


class ServiceProbe:
    """The audited service over HTTP, as configured in the ``service`` section."""

    def __init__(self, cfg: ServiceConfig, timeout: float,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.cfg = cfg
        self.timeout = timeout
        self.http = HttpTarget("service", cfg.base_url, timeout=timeout, transport=transport)

    @property
    def base_url(self) -> str:
        return self.cfg.base_url

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ServiceProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ plain requests

    def _key_headers(self, key: str) -> dict[str, str]:
        secret = {"api": self.cfg.api_key, "admin": self.cfg.admin_key, "none": None}[key]
        return {self.cfg.api_key_header: secret.get_secret_value()} if secret is not None else {}

    def request(self, method: str, path: str, *, headers: Mapping[str, str] | None = None,
                json: Any = None, key: str = "api", gateway_as_data: bool = False) -> ServiceResponse:
        """One request; ``key`` is ``api``, ``admin`` or ``none``. A 429 with a short
        ``Retry-After`` (another check's burst on the same workspace) is waited out, at most
        ``_RETRIES_ON_429`` times. A 502/503/504 raises ``GatewayAnswer`` unless
        ``gateway_as_data`` (see ``HttpTarget.request``)."""
        sent = {**self._key_headers(key), **(headers or {})}
        attempt = 0
        while True:
            start = time.monotonic()
            resp = self.http.request(method, path, headers=sent, json=json,
                                     gateway_as_data=gateway_as_data)
            elapsed = time.monotonic() - start
            retry = _retry_after(resp)
            wait = retry.seconds if retry is not None else None
            if resp.status_code != 429 or wait is None or wait > _MAX_RETRY_AFTER_S \
                    or attempt >= _RETRIES_ON_429:
                break
            attempt += 1
            time.sleep(max(wait, 0.0))
        return ServiceResponse(method, path, resp.status_code, _headers(resp.headers),
                               resp.text, elapsed, tuple(resp.headers.multi_items()))

    def get(self, path: str, *, headers: Mapping[str, str] | None = None,
            key: str = "api", gateway_as_data: bool = False) -> ServiceResponse:
        return self.request("GET", path, headers=headers, key=key, gateway_as_data=gateway_as_data)

    @shared_fact
    def traced_get(self, path: str) -> TracedRequest:
        """``GET path`` carrying a new sampled traceparent. Once per run when the run reads
        ahead: the read-ahead sends it at session start, so the service's export delay (its
        span processor batches for seconds) passes while other criteria run."""
        context = TraceContext.new()
        sent_at = time.monotonic()
        return TracedRequest(context, self.get(path, headers={"traceparent": context.traceparent}), sent_at)

    def post(self, path: str, *, json: Any = None, headers: Mapping[str, str] | None = None,
             key: str = "api") -> ServiceResponse:
        return self.request("POST", path, json=json, headers=headers, key=key)

    def delete(self, path: str, *, key: str = "admin") -> ServiceResponse:
        return self.request("DELETE", path, key=key)

    # ------------------------------------------------------------------ health and headers

    def health(self) -> HealthResult:
        """``GET health_path`` without a key. The version comes from ``version_field`` and
        the reported status from ``health_status_field``, when the body has them. A gateway's
        502/503/504 is the finding here (availability itself), not an error."""
        cfg = self.cfg
        resp = self.get(cfg.health_path, key="none", gateway_as_data=True)
        body = resp.json()
        version = reported = None
        if isinstance(body, dict):
            if body.get(cfg.version_field) not in (None, ""):
                version = str(body[cfg.version_field])
            if cfg.health_status_field and body.get(cfg.health_status_field) is not None:
                reported = str(body[cfg.health_status_field])
        shown = body if body is not None and len(resp.text) <= _MAX_BODY_SHOWN \
            else redactor.excerpt(resp.text, _MAX_BODY_SHOWN)
        return HealthResult(f"{self.base_url}{cfg.health_path}", resp.status, shown,
                            resp.headers.get("content-type"), version, cfg.health_status_field,
                            reported, resp.headers, resp.elapsed_s)

    def security_headers(self, paths: Iterable[str]) -> list[SecurityHeaders]:
        """``GET`` each path (with the API key when one is configured) and parse its
        security headers. A refused key is ``AccessRefused``: the headers of a 401 say
        nothing about the responses users get."""
        out = []
        for path in dict.fromkeys(paths):
            resp = self.get(path, key="api" if self.cfg.api_key is not None else "none")
            if resp.status in (401, 403) and self.cfg.api_key is not None:
                raise AccessRefused(
                    f"service: GET {self.base_url}{path} answered {resp.status}; the configured "
                    f"{self.cfg.api_key_header} was refused, check service.api_key"
                )
            out.append(SecurityHeaders(
                url=f"{self.base_url}{path}",
                status=resp.status,
                hsts=parse_hsts(all_values(resp.fields, "strict-transport-security")),
                csp=parse_csp(all_values(resp.fields, "content-security-policy")),
                content_type_options=first_value(resp.headers.get("x-content-type-options")),
                referrer_policy=parse_referrer_policy(resp.headers.get("referrer-policy")),
                raw={name: resp.headers.get(name) for name in _SECURITY_HEADER_NAMES},
            ))
        return out

    # ------------------------------------------------------------------ CORS

    def preflight(self, path: str, origin: str, method: str,
                  request_headers: Iterable[str]) -> CorsResponse:
        """A CORS preflight as a browser sends it: no credentials, no API key."""
        sent = {"Origin": origin, "Access-Control-Request-Method": method}
        names = list(request_headers)
        if names:
            sent["Access-Control-Request-Headers"] = ",".join(sorted({h.lower() for h in names}))
        resp = self.http.request("OPTIONS", path, headers=sent)
        return CorsResponse("preflight", f"{self.base_url}{path}", path, origin, method, sent,
                            resp.status_code, _headers(resp.headers))

    def preflights(self, cases: Iterable[tuple[str, str, str]],
                   request_headers: Iterable[str]) -> list[CorsResponse]:
        """``preflight`` for each (path, origin, method), a few at a time, in order."""
        names = list(request_headers)
        return in_parallel([functools.partial(self.preflight, path, origin, method, names)
                            for path, origin, method in cases])

    def cors_requests(self, cases: Iterable[tuple[str, str]], method: str = "GET") -> list[CorsResponse]:
        """``cors_request`` for each (path, origin), a few at a time, in order."""
        return in_parallel([functools.partial(self.cors_request, path, origin, method)
                            for path, origin in cases])

    def cors_request(self, path: str, origin: str, method: str = "GET") -> CorsResponse:
        """The actual CORS request: ``method`` with ``Origin`` and, when one is configured,
        the API key (a browser client sends its credentials along)."""
        key = "api" if self.cfg.api_key is not None else "none"
        resp = self.request(method, path, headers={"Origin": origin}, key=key)
        return CorsResponse("actual", f"{self.base_url}{path}", path, origin, method,
                            {"Origin": origin}, resp.status, resp.headers)

    # ------------------------------------------------------------------ metrics

    def metrics(self) -> MetricsSnapshot:
        """``GET metrics_path``, parsed by ``opsready.probes.metrics``."""
        return MetricsEndpoint(self.cfg, http=self.http).read()

    # ------------------------------------------------------------------ rate limit

    def burst(self, bound: RateLimitConfig | None = None) -> BurstResult:
        """Send requests with the configured key until the first 429, at most
        ``max_requests`` of them and for at most ``max_seconds``, ``concurrency`` at a time."""
        cfg = bound or self.cfg.rate_limit
        if cfg.path is None:
            raise MissingInput("not configured: service.rate_limit.path (the path the bounded "
                               "burst requests)")
        path = cfg.path
        result = BurstResult(path, cfg.method.upper(), cfg.max_requests, cfg.max_seconds,
                             cfg.concurrency)
        headers = self._key_headers("api")
        lock = threading.Lock()
        stop = threading.Event()
        statuses: Counter[int] = Counter()
        errors: list[ProbeError] = []
        done = 0
        start = time.monotonic()
        deadline = start + cfg.max_seconds

        def worker() -> None:
            nonlocal done
            while not stop.is_set():
                with lock:
                    if result.sent >= cfg.max_requests:
                        result.stopped_by = result.stopped_by or "max_requests"
                        return
                    if time.monotonic() >= deadline:
                        result.stopped_by = result.stopped_by or "max_seconds"
                        return
                    result.sent += 1
                remaining = max(deadline - time.monotonic(), 0.05)
                try:
                    resp = self.http.request(result.method, path, headers=headers,
                                             timeout=min(self.timeout, remaining))
                except ProbeError as exc:
                    if time.monotonic() >= deadline:
                        with lock:
                            result.stopped_by = result.stopped_by or "max_seconds"
                    else:
                        errors.append(exc)
                    stop.set()
                    return
                with lock:
                    done += 1
                    statuses[resp.status_code] += 1
                    if resp.status_code in (401, 403) and not errors:
                        errors.append(AccessRefused(
                            f"service: {result.method} {self.base_url}{path} answered "
                            f"{resp.status_code} during the burst; the configured "
                            f"{self.cfg.api_key_header} was refused, check service.api_key"))
                        stop.set()
                    elif resp.status_code == 429 and result.took is None:
                        result.took = done
                        result.limited_status = 429
                        result.limited_headers = _headers(resp.headers)
                        result.retry_after = _retry_after(resp)
                        result.ratelimit = parse_ratelimit(result.limited_headers)
                        result.stopped_by = "429"
                        stop.set()

        with ThreadPoolExecutor(max_workers=cfg.concurrency, thread_name_prefix="burst") as pool:
            for _ in range(cfg.concurrency):
                pool.submit(worker)
        result.elapsed_s = time.monotonic() - start
        result.statuses = dict(statuses)
        if errors and not result.limited:
            raise errors[0]
        return result

