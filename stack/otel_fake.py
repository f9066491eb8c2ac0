# Contract fake of an OTel collector and its Jaeger query API (cannot run here), per api-facts.md.
"""An OTel collector (health_check extension, OTLP/HTTP receiver) and a Jaeger-style trace query
API over an in-memory, bounded span store.

Run as ``python -m opsready_stack.otel_fake --dir DIR --health-port P --otlp-port P
--query-port P``. Three ports, like the real deployment: the health_check extension (13133),
the OTLP/HTTP receiver (4318) and the Jaeger query service (16686). The receiver accepts
``application/json`` (ids in hex) and ``application/x-protobuf``, optionally gzip-encoded.
Faults are read from ``DIR/faults.json`` on every request.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from opsready_stack.part import Fault, FaultWatcher, HttpFakePart, StackContext

__all__ = ["OtelPart", "SpanStore", "StoredSpan", "parse_otlp_json", "parse_otlp_protobuf"]

MAX_TRACES = 5000
MAX_SPANS_PER_TRACE = 1000
MAX_BODY = 8 * 1024 * 1024
SERVICE_NAME = "relay-api"
_HEX32 = re.compile(r"[0-9a-fA-F]{32}")
_HEX16 = re.compile(r"[0-9a-fA-F]{16}")

FAULTS = (
    Fault("collector-down",
          "the OTel collector reports not available and refuses OTLP exports with 503",
          frozenset({"P2-001"})),
)


class BadPayload(ValueError):
    """The export request cannot be decoded (answered 400, like the collector does)."""


@dataclass
class StoredSpan:
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    start_ns: int
    end_ns: int
    service_name: str
    resource: dict[str, Any] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)
    status_code: int = 0


class SpanStore:
    """Traces by id, oldest evicted first once ``MAX_TRACES`` is reached."""

    def __init__(self, max_traces: int = MAX_TRACES) -> None:
        self.max_traces = max_traces
        self._traces: OrderedDict[str, list[StoredSpan]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, spans: list[StoredSpan]) -> None:
        with self._lock:
            for span in spans:
                bucket = self._traces.get(span.trace_id)
                if bucket is None:
                    bucket = self._traces[span.trace_id] = []
                    while len(self._traces) > self.max_traces:
                        self._traces.popitem(last=False)
                if len(bucket) < MAX_SPANS_PER_TRACE:
                    bucket.append(span)

    def get(self, trace_id: str) -> list[StoredSpan]:
        with self._lock:
            return list(self._traces.get(trace_id.lower(), []))

    def services(self) -> list[str]:
        with self._lock:
            return sorted({s.service_name for t in self._traces.values() for s in t})

    def __len__(self) -> int:
        with self._lock:
            return len(self._traces)


# -- OTLP decoding ----------------------------------------------------------------------------


def _any_value(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in value:
            return value[key]
    if "intValue" in value:
        return int(value["intValue"])
    if "arrayValue" in value:
        return [_any_value(v) for v in value["arrayValue"].get("values", [])]
    return None


def _attrs_json(items: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        if isinstance(item, dict) and "key" in item:
            out[str(item["key"])] = _any_value(item.get("value"))
    return out


def _hex_id(value: Any, pattern: re.Pattern[str], what: str) -> str:
    text = str(value or "")
    if not pattern.fullmatch(text) or int(text, 16) == 0:
        raise BadPayload(f"invalid {what} {text!r}: expected non-zero hex")
    return text.lower()


def parse_otlp_json(body: bytes) -> list[StoredSpan]:
    """Spans of an OTLP/HTTP JSON ``ExportTraceServiceRequest`` (ids are hex in JSON)."""
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise BadPayload(f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadPayload("body is not a JSON object")
    spans: list[StoredSpan] = []
    for rs in data.get("resourceSpans") or []:
        if not isinstance(rs, dict):
            raise BadPayload("resourceSpans[] must be objects")
        resource = _attrs_json((rs.get("resource") or {}).get("attributes"))
        service = str(resource.get("service.name", "unknown_service"))
        scopes = rs.get("scopeSpans") or rs.get("instrumentationLibrarySpans") or []
        for scope in scopes:
            for raw in (scope or {}).get("spans") or []:
                if not isinstance(raw, dict):
                    raise BadPayload("spans[] must be objects")
                parent = raw.get("parentSpanId") or ""
                spans.append(StoredSpan(
                    trace_id=_hex_id(raw.get("traceId"), _HEX32, "traceId"),
                    span_id=_hex_id(raw.get("spanId"), _HEX16, "spanId"),
                    parent_span_id=_hex_id(parent, _HEX16, "parentSpanId") if parent else "",
                    name=str(raw.get("name", "")),
                    kind=int(raw.get("kind", 0) or 0),
                    start_ns=int(raw.get("startTimeUnixNano", 0) or 0),
                    end_ns=int(raw.get("endTimeUnixNano", 0) or 0),
                    service_name=service,
                    resource=resource,
                    attributes=_attrs_json(raw.get("attributes")),
                    status_code=int((raw.get("status") or {}).get("code", 0) or 0),
                ))
    return spans


def parse_otlp_protobuf(body: bytes) -> list[StoredSpan]:
    """Spans of a binary protobuf ``ExportTraceServiceRequest`` (ids are raw bytes)."""
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    try:
        request = ExportTraceServiceRequest.FromString(body)
    except DecodeError as exc:
        raise BadPayload(f"body is not an ExportTraceServiceRequest: {exc}") from None
    spans: list[StoredSpan] = []
    for rs in request.resource_spans:
        resource = {a.key: _pb_value(a.value) for a in rs.resource.attributes}
        service = str(resource.get("service.name", "unknown_service"))
        for scope in rs.scope_spans:
            for raw in scope.spans:
                if len(raw.trace_id) != 16 or not any(raw.trace_id):
                    raise BadPayload("invalid trace_id: expected 16 non-zero bytes")
                if len(raw.span_id) != 8 or not any(raw.span_id):
                    raise BadPayload("invalid span_id: expected 8 non-zero bytes")
                spans.append(StoredSpan(
                    trace_id=raw.trace_id.hex(),
                    span_id=raw.span_id.hex(),
                    parent_span_id=raw.parent_span_id.hex(),
                    name=raw.name,
                    kind=int(raw.kind),
                    start_ns=int(raw.start_time_unix_nano),
                    end_ns=int(raw.end_time_unix_nano),
                    service_name=service,
                    resource=resource,
                    attributes={a.key: _pb_value(a.value) for a in raw.attributes},
                    status_code=int(raw.status.code),
                ))
    return spans


def _pb_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_pb_value(v) for v in value.array_value.values]
    if kind in ("kvlist_value", "bytes_value"):
        return str(getattr(value, kind))
    return getattr(value, kind)


# -- Jaeger query shape -----------------------------------------------------------------------


_JAEGER_KIND = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


def _tag(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "type": "bool", "value": value}
    if isinstance(value, int):
        return {"key": key, "type": "int64", "value": value}
    if isinstance(value, float):
        return {"key": key, "type": "float64", "value": value}
    return {"key": key, "type": "string", "value": str(value)}


def jaeger_trace(trace_id: str, spans: list[StoredSpan]) -> dict[str, Any]:
    processes: dict[str, dict[str, Any]] = {}
    by_service: dict[str, str] = {}
    out_spans = []
    for span in spans:
        pid = by_service.get(span.service_name)
        if pid is None:
            pid = by_service[span.service_name] = f"p{len(by_service) + 1}"
            processes[pid] = {
                "serviceName": span.service_name,
                "tags": [_tag(k, v) for k, v in span.resource.items() if k != "service.name"],
            }
        tags = [_tag(k, v) for k, v in span.attributes.items()]
        if span.kind in _JAEGER_KIND:
            tags.append(_tag("span.kind", _JAEGER_KIND[span.kind]))
        if span.status_code == 2:
            tags.append(_tag("error", True))
        out_spans.append({
            "traceID": trace_id,
            "spanID": span.span_id,
            "operationName": span.name,
            "references": [{"refType": "CHILD_OF", "traceID": trace_id,
                            "spanID": span.parent_span_id}] if span.parent_span_id else [],
            "startTime": span.start_ns // 1000,
            "duration": max(0, span.end_ns - span.start_ns) // 1000,
            "tags": tags,
            "logs": [],
            "processID": pid,
            "warnings": None,
            "flags": 1,
        })
    return {"traceID": trace_id, "spans": out_spans, "processes": processes, "warnings": None}


# -- HTTP -------------------------------------------------------------------------------------


class FakeCollector:
    def __init__(self, dir: Path) -> None:
        self.faults = FaultWatcher(dir / "faults.json")
        self.store = SpanStore()
        self.started = dt.datetime.now(dt.UTC)
        self._t0 = time.monotonic()

    @property
    def down(self) -> bool:
        return self.faults.on("collector-down")

    def health(self) -> tuple[int, dict[str, Any]]:
        up_since = self.started.isoformat().replace("+00:00", "Z")
        uptime = f"{time.monotonic() - self._t0:.3f}s"
        if self.down:
            return 503, {"status": "Server not available", "upSince": up_since, "uptime": uptime}
        return 200, {"status": "Server available", "upSince": up_since, "uptime": uptime}

    def export(self, content_type: str, body: bytes) -> tuple[int, str, bytes]:
        """Returns status, content type and body of the answer to ``POST /v1/traces``."""
        binary = content_type.startswith("application/x-protobuf")
        if self.down:
            return _rpc_status(503, "collector unavailable", binary)
        try:
            if binary:
                spans = parse_otlp_protobuf(body)
            elif content_type.startswith("application/json"):
                spans = parse_otlp_json(body)
            else:
                return _rpc_status(415, f"unsupported content type {content_type!r}", False)
        except BadPayload as exc:
            return _rpc_status(400, str(exc), binary)
        self.store.add(spans)
        if binary:
            from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
                ExportTraceServiceResponse,
            )

            return 200, "application/x-protobuf", ExportTraceServiceResponse().SerializeToString()
        return 200, "application/json", b'{"partialSuccess":{}}'

    def query(self, path: str) -> tuple[int, dict[str, Any]]:
        if path == "/api/services":
            services = self.store.services()
            return 200, {"data": services, "total": len(services), "limit": 0, "offset": 0,
                         "errors": None}
        if path.startswith("/api/traces/"):
            trace_id = unquote(path.removeprefix("/api/traces/")).lower()
            spans = self.store.get(trace_id)
            if not spans:
                return 404, {"data": None, "total": 0, "limit": 0, "offset": 0,
                             "errors": [{"code": 404, "msg": "trace not found"}]}
            return 200, {"data": [jaeger_trace(trace_id, spans)], "total": 0, "limit": 0,
                         "offset": 0, "errors": None}
        return 404, {"data": None, "errors": [{"code": 404, "msg": "not found"}]}


def _rpc_status(code: int, message: str, binary: bool) -> tuple[int, str, bytes]:
    """An error answer as OTLP/HTTP sends it: a ``google.rpc.Status`` in the request's
    encoding."""
    grpc_code = {400: 3, 415: 3, 503: 14}.get(code, 2)
    if binary:
        from google.rpc.status_pb2 import Status

        return code, "application/x-protobuf", Status(code=grpc_code,
                                                       message=message).SerializeToString()
    return code, "application/json", json.dumps({"code": grpc_code, "message": message}).encode()


def _handler(app: FakeCollector, role: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, status: int, content_type: str, data: bytes,
                  extra: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _json(self, status: int, body: Any) -> None:
            self._send(status, "application/json", json.dumps(body).encode())

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if role == "health":
                status, body = app.health()
                self._json(status, body)
            elif role == "query":
                status, body = app.query(path.rstrip("/"))
                self._json(status, body)
            else:
                self._json(405, {"code": 12, "message": "method not allowed, use POST"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self.close_connection = True
                self._send(413, "application/json", b'{"code":8,"message":"body too large"}')
                return
            body = self.rfile.read(length)
            path = urlsplit(self.path).path
            if role != "otlp" or path != "/v1/traces":
                self._json(404, {"code": 5, "message": f"no receiver at {path}"})
                return
            if self.headers.get("Content-Encoding", "").lower() == "gzip":
                try:
                    body = gzip.decompress(body)
                except (OSError, EOFError):
                    self._json(400, {"code": 3, "message": "body is not valid gzip"})
                    return
            content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
            status, kind, data = app.export(content_type, body)
            extra = {"Retry-After": "1"} if status == 503 else None
            self._send(status, kind, data, extra)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


def serve(app: FakeCollector, ports: dict[str, int]) -> list[ThreadingHTTPServer]:
    servers = []
    for role, port in ports.items():
        server = ThreadingHTTPServer(("127.0.0.1", port), _handler(app, role))
        server.daemon_threads = True
        servers.append(server)
    return servers


class OtelPart(HttpFakePart):
    """The collector-and-trace-backend contract fake as a part of the reference stack."""

    name = "otel"
    ports = ("otel_health", "otel_otlp", "otel_query")
    faults = FAULTS
    module = "opsready_stack.otel_fake"
    # Health answers 503 when the stack starts with collector-down: any answer counts.
    health = (("otel_health", "/"), ("otel_query", "/api/services"), ("otel_otlp", "/v1/traces"))
    ready_statuses = None
    urls = (("otel_health", "otel_health", "/"), ("otel_otlp", "otel_otlp", ""),
            ("otel_traces", "otel_query", ""))

    def env_config(self, ctx: StackContext) -> dict[str, Any]:
        return {"otel": {
            "collector_health_url": ctx.urls["otel_health"],
            "otlp_http_url": ctx.urls["otel_otlp"],
            "trace_backend": "jaeger",
            "trace_api_url": ctx.urls["otel_traces"],
            "service_name": SERVICE_NAME,
            "traced_path": "/api/v1/actions",
            "read_back_timeout_s": 5,
        }}


def main() -> None:
    parser = argparse.ArgumentParser(description="OTel collector + Jaeger query contract fake")
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--health-port", type=int, required=True)
    parser.add_argument("--otlp-port", type=int, required=True)
    parser.add_argument("--query-port", type=int, required=True)
    args = parser.parse_args()
    app = FakeCollector(args.dir)
    servers = serve(app, {"health": args.health_port, "otlp": args.otlp_port,
                          "query": args.query_port})
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers[1:]]
    for t in threads:
        t.start()
    try:
        servers[0].serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        for s in servers:
            s.server_close()


if __name__ == "__main__":
    main()
