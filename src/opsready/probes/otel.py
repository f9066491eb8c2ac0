"""OpenTelemetry: the collector's health_check extension, OTLP/HTTP JSON export of a probe span,
and reading traces back from the trace backend (Jaeger or Tempo query API).

An OTLP endpoint answers 200 to almost anything (unknown fields are ignored), so acceptance is
proven by reading the span back. A trace that does not show up within the bounded wait is
``None`` (the check fails); an unreachable or refusing endpoint raises a ``ProbeError``.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from opsready._errors import AccessRefused, MissingInput, UnexpectedResponse
from opsready.config import OtelConfig
from opsready.evidence import redactor
from opsready.probes._http import HttpTarget

__all__ = [
    "CollectorHealth",
    "ExportResult",
    "OtelProbe",
    "Trace",
    "TraceContext",
    "TraceSpan",
    "normalise_id",
]

PROBE_SERVICE = "opsready-probe"
# Between two read-back attempts; exporters batch spans, so a trace appears after a delay.
_POLL_INTERVAL_S = 0.25


@dataclass(frozen=True)
class TraceContext:
    """A fresh W3C trace context: random non-zero ids, sampled."""

    trace_id: str  # 32 lowercase hex
    span_id: str  # 16 lowercase hex

    @classmethod
    def new(cls) -> TraceContext:
        return cls(trace_id=_random_hex(16), span_id=_random_hex(8))

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-01"


@dataclass(frozen=True)
class CollectorHealth:
    available: bool
    status_code: int
    status: str
    body: Any


@dataclass(frozen=True)
class ExportResult:
    """What the OTLP endpoint said about one export."""

    accepted: bool
    status_code: int
    detail: str
    trace_id: str
    span_id: str


@dataclass(frozen=True)
class TraceSpan:
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    service_name: str


@dataclass(frozen=True)
class Trace:
    trace_id: str
    spans: tuple[TraceSpan, ...]

    @property
    def services(self) -> list[str]:
        return sorted({s.service_name for s in self.spans if s.service_name})

    def spans_of(self, service_name: str) -> list[TraceSpan]:
        return [s for s in self.spans if s.service_name == service_name]


# OTLP/HTTP's retryable answers, how many times a probe span is sent at most, and the
# longest wait between two sends.
_RETRYABLE = frozenset({429, 502, 503, 504})
_EXPORT_TRIES = 3
_MAX_RETRY_WAIT_S = 5.0


def _retry_delay(retry_after: str | None, attempt: int) -> float:
    """Retry-After's delay-seconds, bounded; without one, 0.5 s doubling per attempt."""
    value = (retry_after or "").strip()
    if value.isdigit():
        return min(float(value), _MAX_RETRY_WAIT_S)
    return min(0.5 * float(2 ** attempt), _MAX_RETRY_WAIT_S)


class OtelProbe:
    """The configured collector and trace backend."""

    def __init__(
        self,
        cfg: OtelConfig,
        timeout: float,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.timeout = timeout
        self._transport = transport
        self._sleep = sleep
        self._clock = clock
        self._targets: dict[str, HttpTarget] = {}

    def close(self) -> None:
        for target in self._targets.values():
            target.close()
        self._targets.clear()

    @staticmethod
    def new_context() -> TraceContext:
        return TraceContext.new()

    # -- collector --------------------------------------------------------------------------

    def health(self) -> CollectorHealth:
        """The health_check extension: 200 ``{"status":"Server available"}`` or 503."""
        url = self._need(self.cfg.collector_health_url, "otel.collector_health_url")
        resp = self._target("otel collector", url).request("GET", url, gateway_as_data=True)
        try:
            body: Any = resp.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = redactor.excerpt(resp.text, 200)
        status = str(body.get("status", "")) if isinstance(body, dict) else str(body)
        if resp.status_code not in (200, 503):
            raise UnexpectedResponse(
                f"otel collector: GET {url} answered {resp.status_code} ({redactor.excerpt(status, 100)!r}); "
                f"expected the health_check extension (200 or 503), check "
                f"otel.collector_health_url"
            )
        available = resp.status_code == 200 and "not" not in status.lower()
        return CollectorHealth(available=available, status_code=resp.status_code,
                               status=status, body=body)

    @property
    def otlp_traces_url(self) -> str:
        base = self._need(self.cfg.otlp_http_url, "otel.otlp_http_url").rstrip("/")
        return base if base.endswith("/v1/traces") else base + "/v1/traces"

    def send_probe_span(self, context: TraceContext | None = None,
                        service_name: str = PROBE_SERVICE) -> ExportResult:
        """Export one span over OTLP/HTTP JSON with a fresh random trace id, retrying the
        answers OTLP calls retryable (429, 502, 503, 504) a few times, bounded."""
        ctx = context or TraceContext.new()
        now = time.time_ns()
        payload = {"resourceSpans": [{
            "resource": {"attributes": [
                {"key": "service.name", "value": {"stringValue": service_name}},
            ]},
            "scopeSpans": [{
                "scope": {"name": "opsready"},
                "spans": [{
                    "traceId": ctx.trace_id,
                    "spanId": ctx.span_id,
                    "name": "opsready.probe",
                    "kind": 1,
                    "startTimeUnixNano": str(now - 1_000_000),
                    "endTimeUnixNano": str(now),
                    "attributes": [
                        {"key": "opsready.probe", "value": {"boolValue": True}},
                    ],
                }],
            }],
        }]}
        url = self.otlp_traces_url
        target = self._target("otel collector", url)
        # OTLP/HTTP: 429, 502, 503 and 504 are retryable, after Retry-After when given. A few
        # bounded tries; then a throttling answer is the finding, a gateway one unverified.
        for attempt in range(_EXPORT_TRIES):
            last = attempt == _EXPORT_TRIES - 1
            resp = target.request("POST", url, content=json.dumps(payload),
                                  headers={"Content-Type": "application/json"},
                                  gateway_as_data=not last)
            if resp.status_code not in _RETRYABLE or last:
                break
            self._sleep(_retry_delay(resp.headers.get("retry-after"), attempt))
        detail = redactor.excerpt(resp.text, 200)
        # A refused credential or a wrong endpoint says nothing about the collector's pipeline:
        # those cannot be judged; a reachable collector refusing the span (503, 400) can.
        if resp.status_code in (401, 403):
            raise AccessRefused(
                f"otel collector: POST {url} answered {resp.status_code}; the OTLP receiver "
                f"refused the request, check its authentication"
            )
        if resp.status_code in (404, 405):
            raise UnexpectedResponse(
                f"otel collector: POST {url} answered {resp.status_code}; this is not an "
                f"OTLP/HTTP traces endpoint, check otel.otlp_http_url (the base URL, port 4318)"
            )
        accepted = 200 <= resp.status_code < 300
        if accepted:
            try:
                body = resp.json()
            except (json.JSONDecodeError, UnicodeDecodeError):
                body = {}
            partial = body.get("partialSuccess") if isinstance(body, dict) else None
            rejected = partial.get("rejectedSpans") if isinstance(partial, dict) else None
            if rejected not in (None, 0, "0"):
                accepted = False
                detail = f"partialSuccess rejected {rejected} span(s): {partial}"
        return ExportResult(accepted=accepted, status_code=resp.status_code, detail=detail,
                            trace_id=ctx.trace_id, span_id=ctx.span_id)

    # -- trace backend ----------------------------------------------------------------------

    def get_trace(self, trace_id: str) -> Trace | None:
        """One lookup of ``trace_id`` in the backend; ``None`` when it does not know it."""
        base = self._need(self.cfg.trace_api_url, "otel.trace_api_url").rstrip("/")
        target = self._target("trace backend", base)
        tid = normalise_id(trace_id)
        if self.cfg.trace_backend == "jaeger":
            paths = [f"/api/traces/{quote(tid)}"]
        else:
            # Tempo 2.x has the v2 API; older versions only the first one.
            paths = [f"/api/v2/traces/{quote(tid)}", f"/api/traces/{quote(tid)}"]
        for path in paths:
            resp = target.request("GET", base + path, headers={"Accept": "application/json"})
            if resp.status_code == 404:
                continue
            data = target.decode(resp)
            parse = _jaeger_spans if self.cfg.trace_backend == "jaeger" else _tempo_spans
            spans = [s for s in parse(data) if s.trace_id == tid]
            return Trace(trace_id=tid, spans=tuple(spans)) if spans else None
        return None

    def wait_for_trace(
        self,
        trace_id: str,
        until: Callable[[Trace], bool] | None = None,
        timeout_s: float | None = None,
    ) -> tuple[Trace | None, float]:
        """Poll the backend until the trace exists (and ``until(trace)`` holds), or the
        bounded wait (``otel.read_back_timeout_s``) ends. Returns the last trace seen (or
        ``None``) and the seconds waited."""
        limit = self.cfg.read_back_timeout_s if timeout_s is None else timeout_s
        start = self._clock()
        last: Trace | None = None
        while True:
            trace = self.get_trace(trace_id)
            if trace is not None:
                last = trace
                if until is None or until(trace):
                    return trace, self._clock() - start
            if self._clock() - start >= limit:
                return last, self._clock() - start
            self._sleep(_POLL_INTERVAL_S)

    # -- plumbing ---------------------------------------------------------------------------

    def _target(self, name: str, url: str) -> HttpTarget:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        key = f"{name}|{origin}"
        if key not in self._targets:
            self._targets[key] = HttpTarget(name, origin, timeout=self.timeout,
                                            transport=self._transport)
        return self._targets[key]

    @staticmethod
    def _need(value: str | None, key: str) -> str:
        if not value:
            raise MissingInput(f"not configured: {key}; add it to the otel section")
        return value


def normalise_id(value: str) -> str:
    """A trace or span id as lowercase hex, from hex or base64 (Tempo answers either).

    32 or 16 hex digits are hex; anything that decodes from base64 to 16 or 8 bytes is
    base64 (a 16-byte id is 24 base64 characters, so the two never collide)."""
    text = value.strip()
    if len(text) in (16, 32) and all(c in "0123456789abcdefABCDEF" for c in text):
        return text.lower()
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            return text.lower()
    return raw.hex() if len(raw) in (8, 16) else text.lower()


def _random_hex(nbytes: int) -> str:
    while True:
        value = secrets.token_hex(nbytes)
        if int(value, 16) != 0:
            return value


def _jaeger_spans(data: Any) -> Iterable[TraceSpan]:
    traces = data.get("data") if isinstance(data, dict) else None
    if traces is None:
        return
    if not isinstance(traces, list):
        raise UnexpectedResponse("trace backend: the Jaeger answer has no 'data' list")
    for trace in traces:
        if not isinstance(trace, dict):
            continue
        processes = _dict(trace.get("processes"))
        for span in trace.get("spans") or []:
            if not isinstance(span, dict):
                continue
            process = _dict(processes.get(str(span.get("processID", ""))))
            parent = ""
            for ref in span.get("references") or []:
                if isinstance(ref, dict) and ref.get("refType") == "CHILD_OF":
                    parent = normalise_id(str(ref.get("spanID", "")))
            yield TraceSpan(
                trace_id=normalise_id(str(span.get("traceID") or trace.get("traceID", ""))),
                span_id=normalise_id(str(span.get("spanID", ""))),
                parent_span_id=parent,
                name=str(span.get("operationName", "")),
                service_name=str(process.get("serviceName", "")),
            )


def _tempo_spans(data: Any) -> Iterable[TraceSpan]:
    if not isinstance(data, dict):
        raise UnexpectedResponse("trace backend: the Tempo answer is not an object")
    body = _dict(data.get("trace")) or data
    batches = body.get("resourceSpans") or body.get("batches") or []
    if not isinstance(batches, list):
        raise UnexpectedResponse("trace backend: the Tempo answer has no resourceSpans/batches")
    for batch in batches:
        if not isinstance(batch, dict):
            continue
        service = ""
        resource = _dict(batch.get("resource"))
        for attr in resource.get("attributes") or []:
            if isinstance(attr, dict) and attr.get("key") == "service.name":
                service = str(_dict(attr.get("value")).get("stringValue", ""))
        scopes = batch.get("scopeSpans") or batch.get("instrumentationLibrarySpans") or []
        for scope in scopes:
            if not isinstance(scope, dict):
                continue
            for span in scope.get("spans") or []:
                if not isinstance(span, dict):
                    continue
                yield TraceSpan(
                    trace_id=normalise_id(str(span.get("traceId", ""))),
                    span_id=normalise_id(str(span.get("spanId", ""))),
                    parent_span_id=normalise_id(str(span.get("parentSpanId", "") or "")),
                    name=str(span.get("name", "")),
                    service_name=service,
                )


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
