"""Webhooks end to end: a real receiver, registration and a trigger through the platform, and
signature verification over the raw body for the ``hex``, ``stripe`` and
``standard-webhooks`` schemes.

Verification is our own code (HMAC-SHA256 and ``hmac.compare_digest`` over the exact bytes
received); the ``stripe`` and ``standardwebhooks`` packages only cross-check it in the tests.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import secrets
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opsready._errors import AccessRefused, MissingInput, TargetUnreachable, UnexpectedResponse
from opsready.config import WebhooksConfig
from opsready.evidence import REDACTED, redactor
from opsready.probes.http import ServiceProbe, ServiceResponse

__all__ = [
    "Delivery",
    "Verdict",
    "WebhookE2E",
    "WebhookReceiver",
    "check_timestamp",
    "redacted_headers",
    "rejection_cases",
    "run_webhook_e2e",
    "verify",
    "verify_signature",
]

SIGNATURE_HEADERS = {"x-signature", "x-hub-signature-256", "stripe-signature", "webhook-signature"}
_MAX_BODY = 1 << 20


# --------------------------------------------------------------------------- receiver


@dataclass(frozen=True)
class Delivery:
    """One request the receiver got, exactly as it arrived."""

    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    received_at: float  # time.time()
    received_monotonic: float

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    receiver: WebhookReceiver


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # A socket timeout: a client that stalls mid-body or idles on keep-alive frees its thread.
    timeout = 30

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                total += size
                if total > _MAX_BODY:
                    raise ValueError("body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            raise ValueError("body too large")
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        now, mono = time.time(), time.monotonic()
        try:
            body = self._read_body()
        except ValueError:
            self.send_response(413)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        self.server.receiver._add(Delivery(self.command, self.path, headers, body, now, mono))
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_POST = _handle
    do_PUT = _handle

    def log_message(self, format: str, *args: Any) -> None:
        return  # deliveries are recorded as evidence, not logged


class WebhookReceiver:
    """A real HTTP server on ``receiver_bind:receiver_port`` (0 = an ephemeral port) that
    records every delivery with its raw body. Use as a context manager."""

    def __init__(self, cfg: WebhooksConfig) -> None:
        self.cfg = cfg
        self.deliveries: list[Delivery] = []
        self._cond = threading.Condition()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._token = secrets.token_urlsafe(8)

    def start(self) -> WebhookReceiver:
        try:
            server = _Server((self.cfg.receiver_bind, self.cfg.receiver_port), _Handler)
        except OSError as exc:
            raise TargetUnreachable(
                f"webhook receiver: cannot listen on {self.cfg.receiver_bind}:"
                f"{self.cfg.receiver_port} ({exc.strerror or exc}); pick a free "
                "webhooks.receiver_port or another receiver_bind"
            ) from None
        server.receiver = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="webhook-receiver", daemon=True)
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the receiver is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Where the platform should deliver: ``receiver_public_url`` or our own address."""
        if self.cfg.receiver_public_url:
            return self.cfg.receiver_public_url
        host = self.cfg.receiver_bind
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/opsready/webhook/{self._token}"

    def _add(self, delivery: Delivery) -> None:
        with self._cond:
            self.deliveries.append(delivery)
            self._cond.notify_all()

    def wait_for_delivery(self, timeout: float, after: int = 0) -> Delivery | None:
        """The first delivery beyond the first ``after``, or None after ``timeout`` seconds."""
        end = time.monotonic() + timeout
        with self._cond:
            while len(self.deliveries) <= after:
                left = end - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return self.deliveries[after]

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- verification


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _hmac(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()


def _standard_key(secret: str) -> bytes:
    try:
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise MissingInput(
            "webhooks.secret is not in the whsec_<base64> form the standard-webhooks scheme "
            "needs; copy the secret as the platform shows it"
        ) from None


def _stripe_parts(value: str) -> tuple[str | None, list[str]]:
    timestamp: str | None = None
    sigs: list[str] = []
    for item in value.split(","):
        key, _, val = item.strip().partition("=")
        if key == "t":
            timestamp = val
        elif key == "v1":
            sigs.append(val)
    return timestamp, sigs


def verify_signature(scheme: str, secret: str, headers: Mapping[str, str], body: bytes, *,
                     signature_header: str = "X-Signature") -> Verdict:
    """Whether the signature in ``headers`` is the HMAC-SHA256 of ``body`` under ``secret``.

    ``signature_header`` names the header for ``hex``; ``stripe`` and ``standard-webhooks``
    use their own headers."""
    h = _lower(headers)
    if scheme == "hex":
        value = h.get(signature_header.lower())
        if value is None:
            return Verdict(False, f"no {signature_header} header in the delivery")
        algo, _, digest = value.strip().partition("=")
        if algo != "sha256" or not digest:
            return Verdict(False, f"{signature_header} is not in the form sha256=<hex>")
        expected = _hmac(secret.encode(), body).hex()
        if hmac.compare_digest(expected.encode(), digest.strip().lower().encode()):
            return Verdict(True, f"{signature_header} sha256 matches the raw body")
        return Verdict(False, f"{signature_header} does not match the HMAC-SHA256 of the raw body "
                              "under the configured secret")
    if scheme == "stripe":
        value = h.get("stripe-signature")
        if value is None:
            return Verdict(False, "no Stripe-Signature header in the delivery")
        timestamp, sigs = _stripe_parts(value)
        if timestamp is None or not sigs:
            return Verdict(False, "Stripe-Signature lacks t= or v1=")
        want = _hmac(secret.encode(), f"{timestamp}.".encode() + body).hex().encode()
        if any(hmac.compare_digest(want, s.strip().lower().encode()) for s in sigs):
            return Verdict(True, "a Stripe-Signature v1 matches t.body")
        return Verdict(False, "no Stripe-Signature v1 matches the HMAC-SHA256 of t.body under "
                              "the configured secret")
    if scheme == "standard-webhooks":
        msg_id, ts, value = h.get("webhook-id"), h.get("webhook-timestamp"), h.get("webhook-signature")
        missing = [n for n, v in (("webhook-id", msg_id), ("webhook-timestamp", ts),
                                  ("webhook-signature", value)) if v is None]
        if missing:
            return Verdict(False, f"no {', '.join(missing)} header in the delivery")
        assert msg_id is not None and ts is not None and value is not None
        mac = _hmac(_standard_key(secret), f"{msg_id}.{ts}.".encode() + body)
        want_b64 = base64.b64encode(mac)
        for entry in value.split():
            version, _, sig = entry.partition(",")
            if version == "v1" and hmac.compare_digest(want_b64, sig.encode()):
                return Verdict(True, "a webhook-signature v1 matches id.timestamp.body")
        return Verdict(False, "no webhook-signature v1 matches the HMAC-SHA256 of "
                              "id.timestamp.body under the configured secret")
    raise MissingInput(f"unknown webhook scheme {scheme!r}; use hex, stripe or standard-webhooks")


def check_timestamp(scheme: str, headers: Mapping[str, str], now: float, *, tolerance_s: float,
                    timestamp_header: str | None = "X-Webhook-Timestamp") -> Verdict | None:
    """Whether the delivery's timestamp is within ``tolerance_s`` of ``now`` (either way).
    None when the scheme carries no timestamp (``hex`` without a timestamp header)."""
    h = _lower(headers)
    if scheme == "stripe":
        name = "Stripe-Signature t="
        raw = _stripe_parts(h.get("stripe-signature", ""))[0]
    elif scheme == "standard-webhooks":
        name = "webhook-timestamp"
        raw = h.get("webhook-timestamp")
    else:
        if not timestamp_header:
            return None
        name = timestamp_header
        raw = h.get(timestamp_header.lower())
    if raw is None:
        return Verdict(False, f"no {name} in the delivery")
    try:
        ts = int(raw.strip())
    except ValueError:
        return Verdict(False, f"{name} {raw!r} is not a unix timestamp")
    skew = now - ts
    if abs(skew) > tolerance_s:
        return Verdict(False, f"{name} is {skew:+.0f}s from now, beyond the tolerance of "
                              f"{tolerance_s:g}s")
    return Verdict(True, f"{name} is {skew:+.0f}s from now, within {tolerance_s:g}s")


def verify(scheme: str, secret: str, headers: Mapping[str, str], body: bytes, now: float, *,
           signature_header: str = "X-Signature",
           timestamp_header: str | None = "X-Webhook-Timestamp",
           tolerance_s: float = 300) -> Verdict:
    """Signature and timestamp together: what a receiver should accept."""
    sig = verify_signature(scheme, secret, headers, body, signature_header=signature_header)
    if not sig.ok:
        return sig
    ts = check_timestamp(scheme, headers, now, tolerance_s=tolerance_s,
                         timestamp_header=timestamp_header)
    if ts is not None and not ts.ok:
        return ts
    return Verdict(True, sig.reason if ts is None else f"{sig.reason}; {ts.reason}")


def _other_secret(scheme: str) -> str:
    raw = secrets.token_bytes(24)
    if scheme == "standard-webhooks":
        return "whsec_" + base64.b64encode(raw).decode()
    return base64.urlsafe_b64encode(raw).decode()


def rejection_cases(cfg: WebhooksConfig, delivery: Delivery) -> dict[str, Verdict]:
    """Verify the real delivery with its body tampered, and with a wrong secret."""
    body = delivery.body
    tampered = body[:-1] + bytes([body[-1] ^ 0x01]) if body else b"{}"
    secret = cfg.secret.get_secret_value()
    kw: dict[str, Any] = {"signature_header": cfg.signature_header}
    return {
        "tampered body": verify_signature(cfg.scheme, secret, delivery.headers, tampered, **kw),
        "wrong secret": verify_signature(cfg.scheme, _other_secret(cfg.scheme), delivery.headers,
                                         body, **kw),
    }


def redacted_headers(headers: Mapping[str, str], cfg: WebhooksConfig) -> dict[str, str]:
    """Delivery headers for evidence, with every signature value replaced."""
    names = SIGNATURE_HEADERS | {cfg.signature_header.lower()}
    return {k: (REDACTED if k.lower() in names else v) for k, v in headers.items()}


# --------------------------------------------------------------------------- end to end


@dataclass
class WebhookE2E:
    """One run: receiver, registration, trigger and (maybe) a delivery."""

    receiver_url: str
    registration: str  # "registered <id>", "registered", or "static target"
    idempotency_key: str
    trigger: ServiceResponse
    timeout_s: float
    delivery: Delivery | None = None
    latency_s: float | None = None
    notes: list[str] = field(default_factory=list)

    def evidence(self, cfg: WebhooksConfig) -> dict[str, Any]:
        out: dict[str, Any] = {
            "scheme": cfg.scheme,
            "receiver": self.receiver_url,
            "registration": self.registration,
            "trigger": {"path": self.trigger.path, "status": self.trigger.status,
                        "idempotency_key": self.idempotency_key},
            "delivery_timeout_s": self.timeout_s,
        }
        if self.delivery is not None:
            out["delivery"] = {
                "latency_s": round(self.latency_s or 0.0, 4),
                "method": self.delivery.method,
                "headers": redacted_headers(self.delivery.headers, cfg),
                "body_bytes": len(self.delivery.body),
            }
        return out


def _expect_2xx(service: ServiceProbe, resp: ServiceResponse, key_name: str, failed: str) -> None:
    """401/403 become ``AccessRefused``, any other non-2xx ``UnexpectedResponse``."""
    shown = f"{resp.method} {service.base_url}{resp.path}"
    if resp.status in (401, 403):
        raise AccessRefused(f"service: {shown} answered {resp.status}; the configured key was "
                            f"refused, check service.{key_name}")
    if not 200 <= resp.status < 300:
        raise UnexpectedResponse(f"service: {shown} answered {resp.status} "
                                 f"({redactor.excerpt(resp.text, 200)!r}); {failed}")


def _register(service: ServiceProbe, cfg: WebhooksConfig, url: str) -> tuple[str, str | None]:
    assert cfg.register_path is not None
    if service.cfg.admin_key is None:
        raise MissingInput("not configured: service.admin_key (registering a webhook receiver "
                           "through webhooks.register_path needs it)")
    resp = service.post(cfg.register_path, json={"url": url}, key="admin")
    _expect_2xx(service, resp, "admin_key", "could not register the receiver")
    body = resp.json()
    reg_id = body.get("id") if isinstance(body, dict) else None
    return ("registered " + str(reg_id) if reg_id else "registered"), (str(reg_id) if reg_id else None)


def run_webhook_e2e(service: ServiceProbe, cfg: WebhooksConfig) -> WebhookE2E:
    """Start a receiver, register it (or rely on the static target), trigger one event with a
    fresh ``Idempotency-Key`` and wait, bounded, for the delivery. Unregisters afterwards."""
    if cfg.register_path is None and cfg.receiver_port == 0 and not cfg.receiver_public_url:
        raise MissingInput("webhooks.register_path is null (a static target), so "
                           "webhooks.receiver_port must be the fixed port the platform delivers to")
    with WebhookReceiver(cfg) as receiver:
        reg_id: str | None = None
        registration = "static target"
        if cfg.register_path is not None:
            registration, reg_id = _register(service, cfg, receiver.url)
        try:
            key = str(uuid.uuid4())
            before = len(receiver.deliveries)
            sent = time.monotonic()
            trigger = service.post(cfg.trigger_path, json=cfg.trigger_body,
                                   headers={"Idempotency-Key": key})
            _expect_2xx(service, trigger, "api_key", "the event was not triggered")
            result = WebhookE2E(receiver.url, registration, key, trigger, cfg.delivery_timeout_s)
            delivery = receiver.wait_for_delivery(cfg.delivery_timeout_s, after=before)
            if delivery is not None:
                result.delivery = delivery
                result.latency_s = delivery.received_monotonic - sent
            return result
        finally:
            if reg_id is not None and cfg.register_path is not None:
                # Best effort: a receiver left registered only costs the platform a refused call.
                with contextlib.suppress(Exception):
                    service.delete(f"{cfg.register_path.rstrip('/')}/{reg_id}")
