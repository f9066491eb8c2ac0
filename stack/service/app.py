"""The reference service: a small Relay-like API with the platform features of DESIGN §1.

Layers, outermost first (all plain ASGI, so the light endpoint stays well under 50 ms):

1. ``Telemetry``: a server span per request (honouring an incoming W3C ``traceparent``) and
   the ``http_requests_total`` / ``http_request_duration_seconds`` metrics.
2. ``SecurityHeaders``: HSTS, CSP, nosniff and the referrer policy on every response.
3. ``Cors``: the allow-list with credentials; answers preflights itself.
4. ``ApiGuard``: ``X-API-Key`` auth and the per-workspace token bucket for ``/api/``.
5. The routes.

Faults are read from ``DIR/faults.json`` on every request, so they flip without a restart.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import email.utils
import hashlib
import hmac
import json
import logging
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from opentelemetry import context, trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_TYPE
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import Collector
from psycopg_pool import ConnectionPool
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from opsready_stack.part import FaultWatcher
from opsready_stack.service.faults import (
    BAD_SIGNATURE,
    BREACH_METRIC_GAUGE,
    CORS_ACTUAL_NO_VARY,
    CORS_CREDENTIALS_CASING,
    CORS_MAX_AGE_ZERO,
    CORS_METHODS_SAFELISTED_ONLY,
    CORS_PREFLIGHT_204,
    CORS_PUBLIC,
    CORS_REFLECT_ANY,
    CORS_STARTSWITH_MATCH,
    CORS_WILDCARD,
    CSP_UNSAFE_INLINE,
    HEALTH_DRAFT_FORMAT,
    HEALTH_REPORTS_FAIL,
    HSTS_SHORT,
    METRICS_BEARER_AUTH,
    METRICS_FAULTS,
    METRICS_OPENMETRICS,
    NO_BREACH_METRIC,
    NO_HSTS,
    NO_POOL_METRICS,
    NO_RATE_LIMIT,
    NO_TRACING,
    POOL_GAUGES_STUB,
    RATELIMIT_FIELDS,
    REFERRER_UNSAFE_URL,
    RETRY_AFTER_HTTP_DATE,
    RETRY_AFTER_INVALID,
    RETRY_AFTER_MISSING,
    SECURITY_HEADERS_ALTERNATIVE,
    UNSIGNED_WEBHOOK,
    WEBHOOK_PING_FIRST,
    WEBHOOK_STALE_TIMESTAMP,
    WEBHOOK_WRONG_EVENT,
)
from opsready_stack.service.signing import SIGNATURE_HEADERS, configured_secret, sign

__all__ = [
    "ALLOWED_ORIGINS",
    "METRICS_FAULTS",
    "RATE_LIMIT_CAPACITY",
    "RATE_LIMIT_REFILL_PER_S",
    "ServiceSettings",
    "create_app",
    "load_settings",
    "serve_in_thread",
]

log = logging.getLogger("relay")

# The ``*_created`` samples would double every counter family in the exposition for no use here.
disable_created_metrics()

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ALLOWED_ORIGINS = ("https://relay-studio-one.vercel.app", "http://localhost:3000")
ALLOW_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
ALLOW_HEADERS = (
    "Accept",
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "X-API-Key",
    "X-Signature",
    "traceparent",
    "tracestate",
)
EXPOSE_HEADERS = (
    "Retry-After",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "Idempotent-Replayed",
)
CORS_MAX_AGE = 600

# A burst of a few dozen requests in well under a second drains the bucket; a client doing a
# few requests a second never does, and an empty bucket is full again within two seconds.
RATE_LIMIT_CAPACITY = 50
RATE_LIMIT_REFILL_PER_S = 25.0

SECURITY_HEADERS = (
    ("content-security-policy", "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "strict-origin-when-cross-origin"),
    ("x-frame-options", "DENY"),
)
HSTS = ("strict-transport-security", "max-age=31536000; includeSubDomains")
# The variant ``security-headers-alternative``: a strict CSP built on a per-response nonce
# and 'strict-dynamic' (the 'unsafe-inline' and https: in it are for browsers that predate
# CSP Level 3, which ignore the nonce), a second policy enforced alongside, a two-year
# preloadable HSTS and a Referrer-Policy with a fallback token first.
ALTERNATIVE_CSP = (
    "default-src 'self'; script-src 'nonce-{nonce}' 'strict-dynamic' 'unsafe-inline' https:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'self'"
)
ALTERNATIVE_SECOND_CSP = "script-src 'self' 'unsafe-inline'; object-src 'none'"
ALTERNATIVE_HSTS = "max-age=63072000; includeSubDomains; preload"
ALTERNATIVE_REFERRER = "origin-when-cross-origin, strict-origin-when-cross-origin"
# The faults of the security headers: each replaces one header's value.
FAULTY_HEADERS = {
    HSTS_SHORT.name: ("strict-transport-security", "max-age=86400; includeSubDomains"),
    CSP_UNSAFE_INLINE.name: ("content-security-policy",
                          "default-src 'self'; script-src 'self' 'unsafe-inline'; "
                          "frame-ancestors 'none'"),
    REFERRER_UNSAFE_URL.name: ("referrer-policy", "unsafe-url"),
}

ROLES = {"admin_key": "admin", "dev_key": "developer", "viewer_key": "viewer"}
ACTIONS = ("deploy.preview", "cache.purge", "report.generate", "workspace.export")
MAX_RECEIVERS = 100
IDEMPOTENCY_TTL_S = 24 * 3600
IDEMPOTENCY_MAX = 10_000
WEBHOOK_TIMEOUT_S = 3.0
# How far back the fault ``webhook-stale-timestamp`` dates an event and its signature.
STALE_S = 3600
# A receiver must be on this machine: the reference stack never calls out.
LOCAL_HOSTS = {"127.0.0.1", "localhost"}

KNOWN_PATHS = {
    "/health",
    "/metrics",
    "/api/v1/actions",
    "/api/v1/actions/execute",
    "/api/v1/webhooks/endpoints",
}


@dataclass(frozen=True)
class ServiceSettings:
    """What the service needs from the stack: keys, secret, URLs and the fault file."""

    dir: Path
    keys: dict[str, tuple[str, str]]  # api key -> (role, workspace)
    webhook_scheme: str
    webhook_secret: str  # in the scheme's configured form
    version: str
    postgres_dsn: str | None
    otlp_url: str | None
    rate_capacity: int = RATE_LIMIT_CAPACITY
    rate_refill_per_s: float = RATE_LIMIT_REFILL_PER_S
    # The bearer token /metrics asks for under the `metrics-bearer-auth` variant.
    metrics_token: str = ""


def load_settings(stack_dir: Path, *, wait_s: float = 5.0) -> ServiceSettings:
    """Read ``DIR/state.json``. It may be rewritten while we start, so retry a bad read."""
    path = stack_dir / "state.json"
    end = time.monotonic() + wait_s
    while True:
        try:
            state = json.loads(path.read_text())
            break
        except (OSError, ValueError):
            if time.monotonic() > end:
                raise
            time.sleep(0.05)
    secrets_ = state.get("secrets", {})
    urls = state.get("urls", {})
    settings = state.get("settings", {})
    keys = {secrets_[name]: (role, f"ws-{role}") for name, role in ROLES.items() if name in secrets_}
    scheme = settings.get("webhook_scheme", "hex")
    otlp = urls.get("otel_otlp")
    return ServiceSettings(
        dir=stack_dir,
        keys=keys,
        webhook_scheme=scheme,
        webhook_secret=configured_secret(scheme, secrets_.get("webhook_secret", "")),
        version=str(settings.get("git_sha", "unknown")),
        postgres_dsn=urls.get("postgres_dsn"),
        otlp_url=f"{otlp.rstrip('/')}/v1/traces" if otlp else None,
        rate_capacity=int(settings.get("rate_limit_capacity", RATE_LIMIT_CAPACITY)),
        rate_refill_per_s=float(settings.get("rate_limit_refill_per_s", RATE_LIMIT_REFILL_PER_S)),
        metrics_token=str(secrets_.get("metrics_token", "")),
    )


# --------------------------------------------------------------------------- metrics


class PoolCollector(Collector):
    """``db_connection_pool_*`` gauges, read from ``pool.get_stats()`` at scrape time."""

    def __init__(self, service: RelayService) -> None:
        self.service = service

    def collect(self) -> Any:
        pool = self.service.pool
        stats: dict[str, int] = pool.get_stats() if pool is not None else {}
        if self.service.faults.on(POOL_GAUGES_STUB.name):
            stats = {}
        capacity = int(stats.get("pool_max", 0))
        current = int(stats.get("pool_size", 0))
        idle = int(stats.get("pool_available", 0))
        values = {
            "size": ("Maximum number of connections the pool may hold.", capacity),
            "in_use": ("Connections currently handed out to requests.", max(current - idle, 0)),
            "available": ("Idle connections ready in the pool.", idle),
            "waiting": ("Requests waiting for a connection.", int(stats.get("requests_waiting", 0))),
        }
        for suffix, (doc, value) in values.items():
            yield GaugeMetricFamily(f"db_connection_pool_{suffix}", doc, value=value)


class BreachesAsGauge(Collector):
    """The breach counter's samples under a gauge family (the `breach-metric-gauge` fault)."""

    def __init__(self, counter: Counter) -> None:
        self.counter = counter

    def collect(self) -> Any:
        gauge = GaugeMetricFamily("rate_limit_breaches_total",
                                  "Requests refused with 429 by the rate limiter.",
                                  labels=["workspace"])
        for family in self.counter.collect():
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    gauge.add_metric([sample.labels["workspace"]], sample.value)
        yield gauge


class Metrics:
    """Three registries, so a fault can leave a whole family out of the exposition."""

    def __init__(self, service: RelayService) -> None:
        self.core = CollectorRegistry(auto_describe=True)
        self.breaches_registry = CollectorRegistry(auto_describe=True)
        self.pool_registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "http_requests_total", "HTTP requests by method, route and status.",
            ("method", "path", "status"), registry=self.core,
        )
        self.duration = Histogram(
            "http_request_duration_seconds", "HTTP request duration by route.", ("path",),
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.core,
        )
        self.webhook_duration = Histogram(
            "webhook_delivery_duration_seconds",
            "Time from the start of a webhook delivery to the receiver's answer.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.2, 1.5, 2.5, 5.0),
            registry=self.core,
        )
        self.webhook_deliveries = Counter(
            "webhook_deliveries_total", "Webhook deliveries by outcome.", ("outcome",),
            registry=self.core,
        )
        self.breaches = Counter(
            "rate_limit_breaches_total", "Requests refused with 429 by the rate limiter.",
            ("workspace",), registry=self.breaches_registry,
        )
        for _role, workspace in service.settings.keys.values():
            # Initialised at zero so the series exists before the first breach.
            self.breaches.labels(workspace=workspace)
        self.breaches_as_gauge = CollectorRegistry(auto_describe=False)
        self.breaches_as_gauge.register(BreachesAsGauge(self.breaches))
        self.pool_registry.register(PoolCollector(service))

    def exposition(self, faults: set[str]) -> tuple[bytes, str]:
        """The body and its Content-Type: the Prometheus text format, or OpenMetrics under
        the `metrics-openmetrics` variant (Prometheus asks for it first and reads both)."""
        registries = [self.core]
        if NO_BREACH_METRIC.name not in faults:
            registries.append(self.breaches_as_gauge if BREACH_METRIC_GAUGE.name in faults
                              else self.breaches_registry)
        if NO_POOL_METRICS.name not in faults:
            registries.append(self.pool_registry)
        if METRICS_OPENMETRICS.name in faults:
            eof = b"# EOF\n"
            parts = [generate_openmetrics(r).removesuffix(eof) for r in registries]
            return b"".join(parts) + eof, OPENMETRICS_TYPE
        return (b"".join(generate_latest(r) for r in registries),
                "text/plain; version=0.0.4; charset=utf-8")


def route_label(path: str) -> str:
    """A bounded label for a request path (unknown paths collapse to ``other``)."""
    if path in KNOWN_PATHS:
        return path
    if path.startswith("/api/v1/webhooks/endpoints/"):
        return "/api/v1/webhooks/endpoints/{id}"
    return "other"


# --------------------------------------------------------------------------- rate limit


@dataclass
class Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """One token bucket per workspace. Used from the event loop only, so no lock."""

    def __init__(self, capacity: int, refill_per_s: float) -> None:
        self.capacity = capacity
        self.refill = refill_per_s
        self.buckets: dict[str, Bucket] = {}

    def take(self, workspace: str) -> tuple[bool, float, float]:
        """(allowed, tokens left, seconds until one token is available)."""
        now = time.monotonic()
        b = self.buckets.get(workspace)
        if b is None:
            b = self.buckets[workspace] = Bucket(float(self.capacity), now)
        b.tokens = min(self.capacity, b.tokens + (now - b.updated) * self.refill)
        b.updated = now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return True, b.tokens, 0.0
        return False, b.tokens, (1.0 - b.tokens) / self.refill

    def reset_after(self, tokens: float) -> int:
        """Seconds until the bucket is full again."""
        return math.ceil((self.capacity - tokens) / self.refill)


# --------------------------------------------------------------------------- service state


@dataclass
class Receiver:
    id: str
    url: str
    created_at: float


@dataclass
class StoredResponse:
    fingerprint: str
    status: int
    body: dict[str, Any]
    stored_at: float


@dataclass
class RelayService:
    settings: ServiceSettings
    faults: FaultWatcher = field(init=False)
    metrics: Metrics = field(init=False)
    buckets: TokenBuckets = field(init=False)
    pool: ConnectionPool | None = None
    http: httpx.AsyncClient | None = None
    tracer: Any = None
    provider: Any = None
    receivers: OrderedDict[str, Receiver] = field(default_factory=OrderedDict)
    idempotency: OrderedDict[tuple[str, str], StoredResponse] = field(default_factory=OrderedDict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.faults = FaultWatcher(self.settings.dir / "faults.json")
        self.metrics = Metrics(self)
        self.buckets = TokenBuckets(self.settings.rate_capacity, self.settings.rate_refill_per_s)

    def principal(self, key: str | None) -> tuple[str, str] | None:
        if not key:
            return None
        found = None
        for known, principal in self.settings.keys.items():
            # Compare every key in constant time, so timing does not tell which one is close.
            if hmac.compare_digest(known.encode(), key.encode()):
                found = principal
        return found


def _setup_tracing(service: RelayService) -> None:
    if not service.settings.otlp_url:
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": "relay-api", "service.version": service.settings.version}
        )
    )
    exporter = OTLPSpanExporter(endpoint=service.settings.otlp_url, timeout=3)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=200))
    service.provider = provider
    service.tracer = provider.get_tracer("relay-api")


# --------------------------------------------------------------------------- middleware


class Telemetry:
    """Server span and request metrics around everything else."""

    def __init__(self, app: ASGIApp, service: RelayService) -> None:
        self.app = app
        self.service = service
        self.propagator = TraceContextTextMapPropagator()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        method = scope["method"]
        path = route_label(scope["path"])
        status = 500
        span = None
        token = None
        if self.service.tracer is not None and not self.service.faults.on(NO_TRACING.name):
            carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            parent = self.propagator.extract(carrier)
            span = self.service.tracer.start_span(
                f"{method} {path}", context=parent, kind=trace.SpanKind.SERVER,
                attributes={"http.request.method": method, "http.route": path,
                            "url.path": scope["path"]},
            )
            token = context.attach(trace.set_span_in_context(span, parent))

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except Exception as exc:
            if span is not None:
                span.record_exception(exc)
            raise
        finally:
            elapsed = time.perf_counter() - start
            m = self.service.metrics
            m.requests.labels(method=method, path=path, status=str(status)).inc()
            m.duration.labels(path=path).observe(elapsed)
            if span is not None:
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(trace.Status(trace.StatusCode.ERROR))
                span.end()
            if token is not None:
                context.detach(token)


class SecurityHeaders:
    """HSTS, CSP, nosniff and the referrer policy on every response. Faults: ``no-hsts``,
    ``hsts-short``, ``csp-unsafe-inline``, ``referrer-unsafe-url``; variant:
    ``security-headers-alternative``."""

    def __init__(self, app: ASGIApp, service: RelayService) -> None:
        self.app = app
        self.service = service

    def _headers(self) -> list[tuple[str, str]]:
        faults = self.service.faults()
        values = dict([*SECURITY_HEADERS, HSTS])
        extra = []
        if SECURITY_HEADERS_ALTERNATIVE.name in faults:
            nonce = base64.b64encode(secrets.token_bytes(16)).decode()
            values["content-security-policy"] = ALTERNATIVE_CSP.format(nonce=nonce)
            values["strict-transport-security"] = ALTERNATIVE_HSTS
            values["referrer-policy"] = ALTERNATIVE_REFERRER
            extra.append(("content-security-policy", ALTERNATIVE_SECOND_CSP))
        for fault, (name, value) in FAULTY_HEADERS.items():
            if fault in faults:
                values[name] = value
        if NO_HSTS.name in faults:
            del values["strict-transport-security"]
        return [*values.items(), *extra]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        wanted = self._headers()

        async def add(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in wanted:
                    headers.append(name, value)
            await send(message)

        await self.app(scope, receive, add)


class Cors:
    """The CORS allow-list with credentials. Faults: ``cors-wildcard``, ``cors-reflect-any``,
    ``cors-startswith-match``, ``cors-credentials-casing``, ``cors-max-age-zero``,
    ``cors-methods-safelisted-only``, ``cors-actual-no-vary``, ``cors-public`` (right for a
    public API's environment); variant: ``cors-preflight-204``."""

    def __init__(self, app: ASGIApp, service: RelayService) -> None:
        self.app = app
        self.service = service
        self.methods = {m.upper() for m in ALLOW_METHODS}
        self.headers = {h.lower() for h in ALLOW_HEADERS}

    def _allow_origin(self, origin: str, faults: set[str]) -> str | None:
        if CORS_WILDCARD.name in faults or CORS_PUBLIC.name in faults:
            return "*"
        if CORS_REFLECT_ANY.name in faults:
            return origin
        if CORS_STARTSWITH_MATCH.name in faults:
            # The classic unanchored match: any origin that starts like an allowed one.
            return origin if origin.startswith(ALLOWED_ORIGINS) else None
        return origin if origin in ALLOWED_ORIGINS else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is None:
            await self.app(scope, receive, send)
            return
        faults = self.service.faults()
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await self._preflight(origin, headers, faults)(scope, receive, send)
            return
        allow = self._allow_origin(origin, faults)

        async def add(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                if CORS_ACTUAL_NO_VARY.name not in faults:
                    out.add_vary_header("Origin")
                if allow is not None:
                    out["access-control-allow-origin"] = allow
                    if CORS_PUBLIC.name not in faults:
                        out["access-control-allow-credentials"] = _credentials(faults)
                    out["access-control-expose-headers"] = ", ".join(EXPOSE_HEADERS)
            await send(message)

        await self.app(scope, receive, add)

    def _preflight(self, origin: str, headers: Headers, faults: set[str]) -> Response:
        allow = self._allow_origin(origin, faults)
        method = headers["access-control-request-method"]
        requested = [h.strip() for h in headers.get("access-control-request-headers", "").split(",")]
        requested = [h for h in requested if h]
        problems = []
        if allow is None:
            problems.append("origin")
        if method.upper() not in self.methods:
            problems.append("method")
        if any(h.lower() not in self.headers for h in requested):
            problems.append("headers")
        if problems:
            return PlainTextResponse(
                f"Disallowed CORS {', '.join(problems)}", status_code=400, headers={"Vary": "Origin"}
            )
        assert allow is not None
        echo = CORS_PREFLIGHT_204.name in faults
        methods = ", ".join(ALLOW_METHODS)
        if CORS_METHODS_SAFELISTED_ONLY.name in faults:
            methods = "GET, HEAD, POST"
        elif echo:
            # Another correct answer: echo what was asked for, as many frameworks do.
            methods = method
        answer = {"Access-Control-Allow-Origin": allow}
        if CORS_PUBLIC.name not in faults:
            answer["Access-Control-Allow-Credentials"] = _credentials(faults)
        return Response(
            None if echo else b"OK",
            status_code=204 if echo else 200,
            headers={
                **answer,
                "Access-Control-Allow-Methods": methods,
                "Access-Control-Allow-Headers": ", ".join(requested) if echo
                else ", ".join(ALLOW_HEADERS),
                "Access-Control-Max-Age": "0" if CORS_MAX_AGE_ZERO.name in faults
                else str(7200 if echo else CORS_MAX_AGE),
                "Vary": "Origin",
            },
            media_type=None if echo else "text/plain",
        )


def _credentials(faults: set[str]) -> str:
    # Fetch compares the value byte for byte: "True" is not "true".
    return "True" if CORS_CREDENTIALS_CASING.name in faults else "true"


class ApiGuard:
    """``X-API-Key`` auth and per-workspace rate limiting for everything under ``/api/``."""

    def __init__(self, app: ASGIApp, service: RelayService) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        svc = self.service
        principal = svc.principal(Headers(scope=scope).get("x-api-key"))
        if principal is None:
            resp = JSONResponse({"error": "missing or invalid X-API-Key"}, status_code=401)
            await resp(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        if svc.faults.on(NO_RATE_LIMIT.name):
            await self.app(scope, receive, send)
            return
        workspace = principal[1]
        allowed, tokens, wait = svc.buckets.take(workspace)
        limit_headers = {
            "X-RateLimit-Limit": str(svc.buckets.capacity),
            "X-RateLimit-Remaining": str(int(tokens)),
            "X-RateLimit-Reset": str(svc.buckets.reset_after(tokens)),
        }
        if not allowed:
            svc.metrics.breaches.labels(workspace=workspace).inc()
            faults = svc.faults()
            if RATELIMIT_FIELDS.name in faults:
                retry = _ratelimit_fields(svc.buckets, wait)
            elif RETRY_AFTER_MISSING.name in faults:
                retry = {}
            else:
                retry = {"Retry-After": _retry_after(wait, faults)}
            resp = JSONResponse(
                {"error": "rate limit exceeded", "workspace": workspace},
                status_code=429,
                headers={**limit_headers, **retry},
            )
            await resp(scope, receive, send)
            return

        async def add(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                for k, v in limit_headers.items():
                    out[k] = v
            await send(message)

        await self.app(scope, receive, add)


def _ratelimit_fields(buckets: TokenBuckets, wait: float) -> dict[str, str]:
    """The current draft's RateLimit fields of a 429: no quota left, and the whole seconds
    until a token is back; the policy is the bucket, its window the time a full refill takes."""
    window = max(1, math.ceil(buckets.capacity / buckets.refill))
    return {"RateLimit-Policy": f'"workspace";q={buckets.capacity};w={window}',
            "RateLimit": f'"workspace";r=0;t={max(1, math.ceil(wait))}'}


def _retry_after(wait: float, faults: set[str]) -> str:
    """Whole seconds until a token is back; or, for the variant ``retry-after-http-date``,
    that moment as an IMF-fixdate, one second later so that rounding never lands on the
    response's own Date. The fault ``retry-after-invalid`` sends the raw float."""
    if RETRY_AFTER_INVALID.name in faults:
        return f"{wait:.3f}"
    seconds = max(1, math.ceil(wait))
    if RETRY_AFTER_HTTP_DATE.name in faults:
        when = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=seconds + 1)
        return email.utils.format_datetime(when, usegmt=True)
    return str(seconds)


# --------------------------------------------------------------------------- endpoints


def _service(request: Request) -> RelayService:
    svc: RelayService = request.app.state.relay
    return svc


async def health(request: Request) -> Response:
    """Fault ``health-reports-fail``: 200, but the body says a dependency failed. Variant
    ``health-draft-format``: the shape of the IETF health-check draft
    (``application/health+json``, status ``pass``)."""
    svc = _service(request)
    version = svc.settings.version
    faults = svc.faults()
    if HEALTH_REPORTS_FAIL.name in faults:
        return JSONResponse({"status": "fail", "version": version,
                             "checks": {"database:connection": [{"status": "fail"}]}})
    if HEALTH_DRAFT_FORMAT.name in faults:
        return JSONResponse({"status": "pass", "version": version, "releaseId": version[:12],
                             "serviceId": "relay-api",
                             "checks": {"database:connection": [{"status": "pass"}]}},
                            media_type="application/health+json")
    return JSONResponse({"status": "ok", "version": version})


async def metrics(request: Request) -> Response:
    svc = _service(request)
    faults = svc.faults()
    if METRICS_BEARER_AUTH.name in faults:
        given = request.headers.get("authorization", "")
        expected = f"Bearer {svc.settings.metrics_token}"
        if not svc.settings.metrics_token or not hmac.compare_digest(given.encode(),
                                                                     expected.encode()):
            return JSONResponse({"error": "the metrics endpoint needs a bearer token"},
                                status_code=401,
                                headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    body, content_type = await run_in_threadpool(svc.metrics.exposition, faults)
    return Response(body, headers={"Content-Type": content_type})


def _db_ping(pool: ConnectionPool) -> None:
    with pool.connection(timeout=1.0) as conn:
        conn.execute("SELECT 1").fetchone()


async def list_actions(request: Request) -> Response:
    svc = _service(request)
    role, workspace = request.state.principal
    if svc.pool is not None:
        try:
            await run_in_threadpool(_db_ping, svc.pool)
        except Exception as exc:  # any database failure is a 503 here
            log.warning("database unavailable: %s", type(exc).__name__)
            return JSONResponse({"error": "database unavailable"}, status_code=503)
    return JSONResponse({"workspace": workspace, "role": role, "actions": list(ACTIONS)})


async def execute_action(request: Request) -> Response:
    svc = _service(request)
    role, workspace = request.state.principal
    if role == "viewer":
        return JSONResponse({"error": "the viewer role cannot execute actions"}, status_code=403)
    key = request.headers.get("idempotency-key", "").strip()
    if not key:
        return JSONResponse({"error": "the Idempotency-Key header is required"}, status_code=400)
    raw = await request.body()
    try:
        payload = json.loads(raw or b"{}")
    except ValueError:
        return JSONResponse({"error": "the body is not JSON"}, status_code=400)
    if not isinstance(payload, dict) or not isinstance(payload.get("action"), str):
        return JSONResponse({"error": 'expected {"action": "<name>"}'}, status_code=422)
    fingerprint = hashlib.sha256(raw).hexdigest()
    now = time.time()
    _expire_idempotency(svc, now)
    stored = svc.idempotency.get((workspace, key))
    if stored is not None:
        if stored.fingerprint != fingerprint:
            return JSONResponse(
                {"error": "Idempotency-Key was already used with a different body"}, status_code=422
            )
        return JSONResponse(stored.body, status_code=stored.status,
                            headers={"Idempotent-Replayed": "true"})
    execution_id = "ex_" + secrets.token_hex(8)
    faults = svc.faults()
    event = {
        "id": "evt_" + secrets.token_hex(10),
        "type": "action.executed",
        "created": int(now) - (STALE_S if WEBHOOK_STALE_TIMESTAMP.name in faults else 0),
        # Fault webhook-wrong-event: the delivery carries another execution's event.
        "data": {"execution_id": "ex_" + secrets.token_hex(8) if WEBHOOK_WRONG_EVENT.name in faults
                 else execution_id,
                 "workspace": workspace, "action": payload["action"],
                 "params": payload.get("params", {})},
    }
    body = {"execution_id": execution_id, "status": "accepted", "action": payload["action"],
            "webhook_deliveries": len(svc.receivers)}
    svc.idempotency[(workspace, key)] = StoredResponse(fingerprint, 202, body, now)
    while len(svc.idempotency) > IDEMPOTENCY_MAX:
        svc.idempotency.popitem(last=False)
    if svc.receivers:
        # A task of its own, so the request's duration and span do not include the delivery.
        task = asyncio.create_task(_deliver_all(svc, event))
        svc.tasks.add(task)
        task.add_done_callback(svc.tasks.discard)
    return JSONResponse(body, status_code=202)


def _expire_idempotency(svc: RelayService, now: float) -> None:
    while svc.idempotency:
        first = next(iter(svc.idempotency.values()))
        if now - first.stored_at < IDEMPOTENCY_TTL_S:
            break
        svc.idempotency.popitem(last=False)


async def _deliver_all(svc: RelayService, event: dict[str, Any]) -> None:
    body = json.dumps(event, separators=(",", ":")).encode()
    await asyncio.gather(*(_deliver(svc, r, body) for r in list(svc.receivers.values())))


async def _ping(svc: RelayService, receiver: Receiver) -> None:
    """Variant ``webhook-ping-first``: like GitHub, greet a new endpoint with a signed ping
    event; it is not the event any trigger asked for."""
    event = {"id": "evt_" + secrets.token_hex(10), "type": "ping", "created": int(time.time()),
             "data": {"endpoint_id": receiver.id}}
    await _deliver(svc, receiver, json.dumps(event, separators=(",", ":")).encode())


async def _deliver(svc: RelayService, receiver: Receiver, body: bytes) -> None:
    assert svc.http is not None
    scheme = svc.settings.webhook_scheme
    secret = svc.settings.webhook_secret
    faults = svc.faults()
    if BAD_SIGNATURE.name in faults:
        # A rotated secret that never reached the receivers.
        secret = configured_secret(scheme, "rotated-" + secrets.token_hex(8))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Relay-Webhooks/1.0",
        **sign(scheme, secret, body, msg_id="msg_" + secrets.token_hex(12),
               timestamp=int(time.time()) - (STALE_S if WEBHOOK_STALE_TIMESTAMP.name in faults
                                             else 0)),
    }
    if UNSIGNED_WEBHOOK.name in faults:
        headers.pop(SIGNATURE_HEADERS[scheme], None)
    if svc.tracer is not None and NO_TRACING.name not in faults:
        with svc.tracer.start_as_current_span("webhook.deliver", kind=trace.SpanKind.CLIENT):
            TraceContextTextMapPropagator().inject(headers)
            await _post(svc, receiver, body, headers)
    else:
        await _post(svc, receiver, body, headers)


async def _post(svc: RelayService, receiver: Receiver, body: bytes, headers: dict[str, str]) -> None:
    assert svc.http is not None
    start = time.perf_counter()
    outcome = "error"
    try:
        resp = await svc.http.post(receiver.url, content=body, headers=headers)
        outcome = "ok" if resp.status_code < 300 else "rejected"
    except httpx.HTTPError as exc:
        log.info("webhook %s to %s failed: %s", receiver.id, receiver.url, type(exc).__name__)
    finally:
        svc.metrics.webhook_duration.observe(time.perf_counter() - start)
        svc.metrics.webhook_deliveries.labels(outcome=outcome).inc()


def _admin(request: Request) -> Response | None:
    role, _ = request.state.principal
    if role != "admin":
        return JSONResponse({"error": "webhook endpoints need the admin role"}, status_code=403)
    return None


async def register_endpoint(request: Request) -> Response:
    if (denied := _admin(request)) is not None:
        return denied
    svc = _service(request)
    try:
        payload = await request.json()
    except ValueError:
        return JSONResponse({"error": "the body is not JSON"}, status_code=400)
    url = payload.get("url") if isinstance(payload, dict) else None
    if not isinstance(url, str):
        return JSONResponse({"error": 'expected {"url": "http://127.0.0.1:PORT/path"}'},
                            status_code=422)
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "http" or parts.hostname not in LOCAL_HOSTS or port is None:
        return JSONResponse(
            {"error": "receivers must be http://127.0.0.1:PORT or http://localhost:PORT "
                      "(the reference stack never calls out)"},
            status_code=422,
        )
    receiver = Receiver("we_" + secrets.token_hex(8), url, time.time())
    svc.receivers[receiver.id] = receiver
    while len(svc.receivers) > MAX_RECEIVERS:
        svc.receivers.popitem(last=False)
    if svc.faults.on(WEBHOOK_PING_FIRST.name):
        task = asyncio.create_task(_ping(svc, receiver))
        svc.tasks.add(task)
        task.add_done_callback(svc.tasks.discard)
    return JSONResponse({"id": receiver.id, "url": url, "created_at": int(receiver.created_at)},
                        status_code=201)


async def list_endpoints(request: Request) -> Response:
    if (denied := _admin(request)) is not None:
        return denied
    svc = _service(request)
    return JSONResponse({"endpoints": [{"id": r.id, "url": r.url} for r in svc.receivers.values()]})


async def delete_endpoint(request: Request) -> Response:
    if (denied := _admin(request)) is not None:
        return denied
    svc = _service(request)
    if svc.receivers.pop(request.path_params["id"], None) is None:
        return JSONResponse({"error": "no such endpoint"}, status_code=404)
    return Response(status_code=204)


# --------------------------------------------------------------------------- app


def create_app(settings: ServiceSettings) -> ASGIApp:
    """The service as an ASGI app. Opening the pool and the tracer happens at lifespan start."""
    service = RelayService(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if settings.postgres_dsn:
            # open(wait=False): a database that is briefly down must not stop the service.
            service.pool = ConnectionPool(
                settings.postgres_dsn, min_size=1, max_size=8, open=False, timeout=2.0,
                kwargs={"connect_timeout": 2, "application_name": "relay-api"},
                name="relay", reconnect_timeout=3600.0,
            )
            service.pool.open(wait=False)
        service.http = httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT_S, follow_redirects=False)
        _setup_tracing(service)
        try:
            yield
        finally:
            for task in list(service.tasks):
                task.cancel()
            await service.http.aclose()
            if service.pool is not None:
                await run_in_threadpool(service.pool.close, 2.0)
            if service.provider is not None:
                await run_in_threadpool(service.provider.shutdown)

    routes = [
        Route("/health", health),
        Route("/metrics", metrics),
        Route("/api/v1/actions", list_actions),
        Route("/api/v1/actions/execute", execute_action, methods=["POST"]),
        Route("/api/v1/webhooks/endpoints", register_endpoint, methods=["POST"]),
        Route("/api/v1/webhooks/endpoints", list_endpoints, methods=["GET"]),
        Route("/api/v1/webhooks/endpoints/{id}", delete_endpoint, methods=["DELETE"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.relay = service
    stack: ASGIApp = app
    stack = ApiGuard(stack, service)
    stack = Cors(stack, service)
    stack = SecurityHeaders(stack, service)
    stack = Telemetry(stack, service)
    return stack


@contextlib.contextmanager
def serve_in_thread(settings: ServiceSettings, port: int) -> Iterator[str]:
    """Run the service on 127.0.0.1:``port`` in a background thread of this process and
    yield its base URL; stops it on exit. For tests that need a second, differently
    configured service (another webhook scheme) next to the stack's."""
    import threading

    import uvicorn

    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                            log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"relay-{port}", daemon=True)
    thread.start()
    end = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > end:
            server.should_exit = True
            raise RuntimeError(f"the service did not start on 127.0.0.1:{port}")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
