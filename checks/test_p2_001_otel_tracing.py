"""P2-001: OpenTelemetry tracing is deployed: the collector is up, accepts spans that reach the
trace backend, and the service's own spans arrive there under its service name.

What each criterion can and cannot tell:
- Collector: its health_check extension answers available. It cannot tell whether the
  exporters behind it work; the next two criteria do.
- Probe span (intrusive): one span sent over OTLP/HTTP (JSON) is accepted and read back from
  the trace backend within ``otel.read_back_timeout_s``. The answers OTLP calls retryable
  (429, 502, 503, 504) get up to three tries, after their Retry-After (at most 5 s); a
  collector that still throttles refuses the span, one still behind a gateway error is not
  judged. It proves the collector-to-backend path, not that the service exports, and it
  cannot reach a collector that accepts protobuf only.
- Service trace: a GET of ``otel.traced_path`` carrying a new traceparent shows up in the
  backend with spans under ``otel.service_name``, within ``otel.read_back_timeout_s`` of the
  request. Where the run reads ahead, the request goes at session start, so the service's
  span-processor delay passes while other criteria run; the bound still counts from the
  request. It cannot tell whether every route is instrumented, only the traced one.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

import opsready

if TYPE_CHECKING:
    from opsready.evidence import Evidence
    from opsready.probes.http import ServiceProbe
    from opsready.probes.otel import OtelProbe

pytestmark = [pytest.mark.ticket("P2-001")]


def _need(value: str | None, key: str) -> None:
    if not value:
        opsready.not_covered(f"not configured: otel.{key}")


def test_collector_healthy(otel: OtelProbe, evidence: Evidence) -> None:
    """The OTel collector's health endpoint reports available"""
    _need(otel.cfg.collector_health_url, "collector_health_url")
    health = otel.health()
    evidence.record("collector_health", {"url": otel.cfg.collector_health_url,
                                         "status_code": health.status_code, "body": health.body})
    assert health.available, (
        f"GET {otel.cfg.collector_health_url} answered {health.status_code} "
        f"({health.status!r}), expected 200 'Server available'; check the collector's logs "
        f"and its exporters"
    )


@pytest.mark.intrusive("otel_probe_span")
def test_probe_span_read_back(otel: OtelProbe, evidence: Evidence) -> None:
    """A probe span sent over OTLP/HTTP is accepted and read back from the trace backend"""
    _need(otel.cfg.otlp_http_url, "otlp_http_url")
    _need(otel.cfg.trace_api_url, "trace_api_url")
    sent = otel.send_probe_span()
    evidence.record("probe_span", {"otlp_url": otel.otlp_traces_url, "trace_id": sent.trace_id,
                                   "span_id": sent.span_id, "status_code": sent.status_code})
    assert sent.accepted, (
        f"POST {otel.otlp_traces_url} answered {sent.status_code} ({sent.detail!r}) to a probe "
        f"span, expected 200 without rejected spans; check the collector's OTLP/HTTP receiver"
    )
    trace, waited = otel.wait_for_trace(
        sent.trace_id, until=lambda t: any(s.span_id == sent.span_id for s in t.spans))
    evidence.record("read_back", {"backend": otel.cfg.trace_backend, "found": trace is not None,
                                  "waited_s": round(waited, 3)})
    assert trace is not None, (
        f"{otel.cfg.trace_backend} at {otel.cfg.trace_api_url}: trace {sent.trace_id} was not "
        f"found within {waited:.1f}s after the collector accepted it; expected the probe span; "
        f"check the collector's traces pipeline exports to this backend"
    )


def test_service_trace(otel: OtelProbe, service: ServiceProbe, evidence: Evidence) -> None:
    """A request carrying our traceparent shows up as a trace from the service"""
    _need(otel.cfg.trace_api_url, "trace_api_url")
    name = otel.cfg.service_name
    # Sent by the read-ahead at session start where the run reads ahead, else here.
    sent = service.traced_get(otel.cfg.traced_path)
    context, resp = sent.context, sent.response
    # The read-back bound counts from the request, however early it went.
    since = time.monotonic() - sent.sent_at
    trace, waited = otel.wait_for_trace(context.trace_id, until=lambda t: bool(t.spans_of(name)),
                                        timeout_s=max(0.0, otel.cfg.read_back_timeout_s - since))
    waited += since
    spans = [] if trace is None else trace.spans_of(name)
    evidence.record("service_trace", {
        "request": f"GET {service.base_url}{otel.cfg.traced_path}",
        "status": resp.status,
        "traceparent": context.traceparent,
        "services_found": [] if trace is None else trace.services,
        "service_spans": [{"name": s.name, "span_id": s.span_id, "parent": s.parent_span_id}
                          for s in spans],
        "waited_s": round(waited, 3),
        "sent_before_read_back_s": round(since, 3),
    })
    assert spans, (
        f"GET {service.base_url}{otel.cfg.traced_path} with traceparent {context.traceparent}: "
        f"{otel.cfg.trace_backend} at {otel.cfg.trace_api_url} has "
        f"{'no trace' if trace is None else 'only services ' + ', '.join(trace.services)} "
        f"for {context.trace_id} after {waited:.1f}s, expected spans from service.name "
        f"'{name}'; deploy the tracing code with the W3C propagator and point its OTLP "
        f"exporter at the collector"
    )
