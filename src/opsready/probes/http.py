"""The service's HTTP edge: health, security headers, CORS preflights and a bounded rate-limit
burst. The metrics endpoint is read by ``opsready.probes.metrics``.

Every call goes through ``HttpTarget`` (timeouts, transport errors as ``ProbeError``). A
missing header or a wrong status is data for the check to judge, never an exception; only what
stops a judgement (unreachable, timed out, refused key, unparseable metrics) raises.
"""

from __future__ import annotations

import json as _json
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from opsready._errors import AccessRefused, ProbeError
from opsready.config import RateLimitConfig, ServiceConfig
from opsready.probes._http import HttpTarget
from opsready.probes.metrics import MetricsEndpoint, MetricsSnapshot

__all__ = [
    "BurstResult",
    "HealthResult",
    "PreflightResult",
    "ServiceProbe",
    "ServiceResponse",
]

# Longest a single Retry-After we honour on an ordinary (non-burst) request, and how often.
_MAX_RETRY_AFTER_S = 5.0
_RETRIES_ON_429 = 3


def _headers(h: httpx.Headers) -> dict[str, str]:
    """Lower-cased names; repeated headers joined with ', ' as HTTP allows."""
    out: dict[str, str] = {}
    for name, value in h.multi_items():
        key = name.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


@dataclass(frozen=True)
class ServiceResponse:
    """One plain request and what came back."""

    method: str
    path: str
    status: int
    headers: dict[str, str]
    text: str
    elapsed_s: float

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON."""
        try:
            return _json.loads(self.text)
        except ValueError:
            return None


@dataclass(frozen=True)
class HealthResult:
    status: int
    body: Any
    version: str | None
    headers: dict[str, str]
    elapsed_s: float


@dataclass(frozen=True)
class PreflightResult:
    """A CORS preflight: what we sent and what the service answered."""

    url: str
    origin: str
    method: str
    request_headers: dict[str, str]
    status: int
    headers: dict[str, str]

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def listed(self, name: str) -> set[str]:
        """The comma-separated tokens of a response header, lower-cased."""
        value = self.header(name) or ""
        return {t.strip().lower() for t in value.split(",") if t.strip()}

    def evidence(self) -> dict[str, Any]:
        return {
            "request": {"method": "OPTIONS", "url": self.url, "headers": self.request_headers},
            "response": {"status": self.status, "headers": self.headers},
        }


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
        }


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
                json: Any = None, key: str = "api") -> ServiceResponse:
        """One request; ``key`` is ``api``, ``admin`` or ``none``. A 429 with a short
        ``Retry-After`` (another check's burst on the same workspace) is waited out, at most
        ``_RETRIES_ON_429`` times."""
        sent = {**self._key_headers(key), **(headers or {})}
        attempt = 0
        while True:
            start = time.monotonic()
            resp = self.http.request(method, path, headers=sent, json=json)
            elapsed = time.monotonic() - start
            wait = _retry_after(resp)
            if resp.status_code != 429 or wait is None or wait > _MAX_RETRY_AFTER_S \
                    or attempt >= _RETRIES_ON_429:
                break
            attempt += 1
            time.sleep(wait)
        return ServiceResponse(method, path, resp.status_code, _headers(resp.headers),
                               resp.text, elapsed)

    def get(self, path: str, *, headers: Mapping[str, str] | None = None,
            key: str = "api") -> ServiceResponse:
        return self.request("GET", path, headers=headers, key=key)

    def post(self, path: str, *, json: Any = None, headers: Mapping[str, str] | None = None,
             key: str = "api") -> ServiceResponse:
        return self.request("POST", path, json=json, headers=headers, key=key)

    def delete(self, path: str, *, key: str = "admin") -> ServiceResponse:
        return self.request("DELETE", path, key=key)

    # ------------------------------------------------------------------ health and headers

    def health(self) -> HealthResult:
        """``GET health_path``; the version comes from ``version_field`` when the body has it."""
        resp = self.get(self.cfg.health_path, key="none")
        body = resp.json()
        version = None
        if isinstance(body, dict) and body.get(self.cfg.version_field) not in (None, ""):
            version = str(body[self.cfg.version_field])
        return HealthResult(resp.status, body, version, resp.headers, resp.elapsed_s)

    def response_headers(self, paths: Iterable[str] | None = None) -> dict[str, dict[str, str]]:
        """The response headers of the health path and the light path (with the key)."""
        if paths is not None:
            wanted = list(paths)
        else:
            # The light path needs the key; without one only the public health path is read.
            wanted = [self.cfg.health_path]
            if self.cfg.api_key is not None:
                wanted.append(self.cfg.light_path)
        out: dict[str, dict[str, str]] = {}
        for path in dict.fromkeys(wanted):
            resp = self.get(path, key="none" if path == self.cfg.health_path else "api")
            if resp.status in (401, 403):
                raise AccessRefused(
                    f"service: GET {self.base_url}{path} answered {resp.status}; the configured "
                    f"{self.cfg.api_key_header} was refused, check service.api_key"
                )
            out[path] = resp.headers
        return out

    # ------------------------------------------------------------------ CORS

    def preflight(self, path: str, origin: str, method: str,
                  request_headers: Iterable[str]) -> PreflightResult:
        """A CORS preflight as a browser sends it: no credentials, no API key."""
        sent = {"Origin": origin, "Access-Control-Request-Method": method}
        names = list(request_headers)
        if names:
            sent["Access-Control-Request-Headers"] = ", ".join(h.lower() for h in names)
        resp = self.http.request("OPTIONS", path, headers=sent)
        return PreflightResult(f"{self.base_url}{path}", origin, method, sent,
                               resp.status_code, _headers(resp.headers))

    # ------------------------------------------------------------------ metrics

    def metrics(self) -> MetricsSnapshot:
        """``GET metrics_path``, parsed by ``opsready.probes.metrics``."""
        return MetricsEndpoint(self.cfg, http=self.http).read()

    # ------------------------------------------------------------------ rate limit

    def burst(self, bound: RateLimitConfig | None = None) -> BurstResult:
        """Send requests with the configured key until the first 429, at most
        ``max_requests`` of them and for at most ``max_seconds``, ``concurrency`` at a time."""
        cfg = bound or self.cfg.rate_limit
        result = BurstResult(cfg.path, cfg.method.upper(), cfg.max_requests, cfg.max_seconds,
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
                    resp = self.http.request(result.method, cfg.path, headers=headers,
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
                            f"service: {result.method} {self.base_url}{cfg.path} answered "
                            f"{resp.status_code} during the burst; the configured "
                            f"{self.cfg.api_key_header} was refused, check service.api_key"))
                        stop.set()
                    elif resp.status_code == 429 and result.took is None:
                        result.took = done
                        result.limited_status = 429
                        result.limited_headers = _headers(resp.headers)
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


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None
