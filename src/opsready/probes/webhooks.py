"""Webhooks end to end: a real receiver, registration and a trigger through the platform, and
signature verification over the raw body for the ``hex``, ``stripe`` and
``standard-webhooks`` schemes.

Verification is our own code (HMAC-SHA256 and ``hmac.compare_digest`` over the exact bytes
received); the ``stripe`` and ``standardwebhooks`` packages only cross-check it in the tests.

The delivery judged is the one the trigger caused: its body's ``event_id_field`` carries the
trigger response's ``trigger_id_field`` (or our Idempotency-Key). Anything else that reaches
the receiver is a stray delivery, kept for the evidence and never judged. Before triggering,
the receiver's URL is tried from here: a URL that does not reach the receiver is a
``TargetUnreachable`` (the criterion cannot be judged), not a platform that failed to deliver.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import math
import re
import secrets
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from opsready._errors import (
    AccessRefused,
    MissingInput,
    ProbeError,
    TargetUnreachable,
    UnexpectedResponse,
)
from opsready.config import WebhooksConfig
from opsready.evidence import REDACTED, redactor
from opsready.probes._http import HttpTarget
from opsready.probes.http import ServiceProbe, ServiceResponse

__all__ = [
    "MAX_DELIVERY_BYTES",
    "Delivery",
    "SignedTimestamp",
    "Verdict",
    "WebhookE2E",
    "WebhookReceiver",
    "body_field",
    "check_timestamp",
    "delivery_timestamp",
    "redacted_headers",
    "run_webhook_e2e",
    "verify",
    "verify_signature",
]

SIGNATURE_HEADERS = {"x-signature", "x-hub-signature-256", "stripe-signature", "webhook-signature",
                     "svix-signature"}
# The largest delivery the receiver takes: GitHub, the platform with the largest documented
# payloads, caps them at 25 MB. A larger one is refused (413) and noted, never judged.
MAX_DELIVERY_BYTES = 25 << 20
# The header of our own reachability check; a request carrying it is not a delivery.
RECEIVER_CHECK_HEADER = "X-Opsready-Receiver-Check"
_RECEIVER_CHECK_TIMEOUT_S = 5.0


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

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


def body_field(document: Any, path: str) -> Any:
    """The value at a dotted ``path`` (``data.execution_id``) of a JSON document, or None."""
    node = document
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


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
                if total > MAX_DELIVERY_BYTES:
                    raise ValueError("body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_DELIVERY_BYTES:
            raise ValueError("body too large")
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        now, mono = time.time(), time.monotonic()
        try:
            body = self._read_body()
        except ValueError:
            self.server.receiver._refuse(self.command, self.headers.get("Content-Length"))
            self.send_response(413)
            self.send_header("Content-Length", "0")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
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
        # Requests refused for their size: what each said its length was.
        self.refused: list[str] = []
        self._cond = threading.Condition()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._token = secrets.token_urlsafe(8)
        self._checked = threading.Event()

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
        if delivery.header(RECEIVER_CHECK_HEADER) == self._token:
            self._checked.set()
            return
        with self._cond:
            self.deliveries.append(delivery)
            self._cond.notify_all()

    def _refuse(self, method: str, length: str | None) -> None:
        with self._cond:
            self.refused.append(f"{method} of {length} bytes" if length else f"chunked {method}")
            self._cond.notify_all()

    def check_reachable(self, timeout: float = _RECEIVER_CHECK_TIMEOUT_S) -> None:
        """POST to ``url`` from here and see it arrive. A URL that does not reach this
        receiver (a dead tunnel, a wrong ``receiver_public_url``) is ``TargetUnreachable``:
        the platform could not deliver there either, so no delivery would prove nothing."""
        shown = redactor.text(self.url)
        try:
            with HttpTarget("webhook receiver", self.url, timeout=timeout) as target:
                resp = target.request("POST", self.url, content=b"{}",
                                      headers={RECEIVER_CHECK_HEADER: self._token,
                                               "Content-Type": "application/json"})
        except ProbeError as exc:
            raise TargetUnreachable(
                f"webhook receiver: {shown} does not reach the receiver ({exc}); the platform "
                "could not deliver there either; fix webhooks.receiver_public_url or the "
                "tunnel in front of the receiver"
            ) from None
        if not self._checked.wait(timeout):
            raise TargetUnreachable(
                f"webhook receiver: a POST to {shown} answered {resp.status_code} but never "
                "reached the receiver; webhooks.receiver_public_url leads somewhere else"
            )

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
    if secret.startswith(("whpk_", "whsk_")):
        raise MissingInput(
            "webhooks.secret is a Standard Webhooks asymmetric key (whpk_/whsk_, signatures "
            "v1a with ed25519), which opsready does not verify; configure the platform's "
            "symmetric whsec_ secret (signatures v1) instead"
        )
    encoded = secret.removeprefix("whsec_")
    try:
        # The padding is optional, as in the reference libraries; the alphabet is not.
        return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise MissingInput(
            "webhooks.secret is not in the whsec_<base64> form the standard-webhooks scheme "
            "needs; copy the secret as the platform shows it"
        ) from None


def _digest_bytes(text: str, encoding: str) -> bytes | None:
    """A digest written in hex (either case) or base64 (standard or URL-safe alphabet), or
    None when it is not."""
    try:
        if encoding == "hex":
            return bytes.fromhex(text)
        return base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
    except (ValueError, binascii.Error):
        return None


def _standard_prefix(h: Mapping[str, str]) -> str:
    """The prefix of a Standard Webhooks delivery's headers: ``webhook-``, or ``svix-``, the
    names Svix (where the standard comes from) sends unless a platform renames them; Svix's
    libraries accept both."""
    if "webhook-id" not in h and "webhook-signature" not in h and "svix-signature" in h:
        return "svix-"
    return "webhook-"


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
                     signature_header: str | None = None, signature_prefix: str = "sha256=",
                     signature_encoding: str = "hex") -> Verdict:
    """Whether the signature in ``headers`` is the HMAC-SHA256 of ``body`` under ``secret``.

    ``signature_header`` names the header for ``hex`` (default ``X-Signature``) and
    ``stripe`` (default ``Stripe-Signature``); ``standard-webhooks`` uses its own. For
    ``hex``, the value is ``signature_prefix`` (matched without regard to case; empty for
    none) and the digest in ``signature_encoding`` (``hex`` or ``base64``)."""
    h = _lower(headers)
    if scheme == "hex":
        name = signature_header or "X-Signature"
        value = h.get(name.lower())
        if value is None:
            return Verdict(False, f"no {name} header in the delivery")
        form = f"{signature_prefix}<{signature_encoding}>"
        value = value.strip()
        if not value.lower().startswith(signature_prefix.lower()) or len(value) == len(signature_prefix):
            return Verdict(False, f"{name} is not in the form {form}")
        given = _digest_bytes(value[len(signature_prefix):].strip(), signature_encoding)
        if given is None:
            return Verdict(False, f"{name} is not in the form {form}")
        if hmac.compare_digest(_hmac(secret.encode(), body), given):
            return Verdict(True, f"{name} ({form}) matches the HMAC-SHA256 of the raw body")
        return Verdict(False, f"{name} does not match the HMAC-SHA256 of the raw body "
                              "under the configured secret")
    if scheme == "stripe":
        name = signature_header or "Stripe-Signature"
        value = h.get(name.lower())
        if value is None:
            return Verdict(False, f"no {name} header in the delivery")
        timestamp, sigs = _stripe_parts(value)
        if timestamp is None or not sigs:
            return Verdict(False, f"{name} lacks t= or v1=")
        want = _hmac(secret.encode(), f"{timestamp}.".encode() + body).hex().encode()
        if any(hmac.compare_digest(want, s.strip().lower().encode()) for s in sigs):
            return Verdict(True, f"a {name} v1 matches t.body")
        return Verdict(False, f"no {name} v1 matches the HMAC-SHA256 of t.body under "
                              f"the configured secret")
    if scheme == "standard-webhooks":
        prefix = _standard_prefix(h)
        names = (f"{prefix}id", f"{prefix}timestamp", f"{prefix}signature")
        msg_id, ts, value = (h.get(n) for n in names)
        missing = [n for n, v in zip(names, (msg_id, ts, value), strict=True) if v is None]
        if missing:
            return Verdict(False, f"no {', '.join(missing)} header in the delivery")
        assert msg_id is not None and ts is not None and value is not None
        mac = _hmac(_standard_key(secret), f"{msg_id}.{ts}.".encode() + body)
        want_b64 = base64.b64encode(mac)
        for entry in value.split():
            version, _, sig = entry.partition(",")
            if version == "v1" and hmac.compare_digest(want_b64, sig.encode()):
                return Verdict(True, f"a {prefix}signature v1 matches id.timestamp.body")
        return Verdict(False, f"no {prefix}signature v1 matches the HMAC-SHA256 of "
                              f"id.timestamp.body under the configured secret")
    raise MissingInput(f"unknown webhook scheme {scheme!r}; use hex, stripe or standard-webhooks")


@dataclass(frozen=True)
class SignedTimestamp:
    """Where a delivery's send time is, what it says, and whether the signature covers it."""

    source: str  # e.g. "webhook-timestamp header", "body field created"
    signed: bool
    raw: str | None  # None: the delivery lacks it
    value: float | None  # unix seconds; None when absent or not a time
    # How a body field's value was read, where it was not plain unix seconds.
    read_as: str | None = None


def _unix(raw: Any) -> int | None:
    """Unix seconds as the schemes' own timestamps carry them: an integer, nothing else."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str) and raw.strip().lstrip("-").isdigit():
        return int(raw.strip())
    return None


# A number of seconds this large is past the year 5000: it counts milliseconds.
_MILLISECONDS_FROM = 1e11
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")


def _body_time(raw: Any) -> tuple[float | None, str | None]:
    """A send time in a JSON body, which no scheme constrains: unix seconds (integer or
    fractional), unix milliseconds, or an RFC 3339 date-time with its UTC offset (the form
    Standard Webhooks' payload uses). Returns the unix seconds, or None, and how they were
    read when not as plain seconds."""
    if isinstance(raw, bool):
        return None, None
    number: float | None = None
    if isinstance(raw, int | float):
        number = float(raw)
    elif isinstance(raw, str) and _NUMBER.fullmatch(raw.strip()):
        number = float(raw.strip())
    if number is not None:
        if not math.isfinite(number):
            return None, None
        if abs(number) >= _MILLISECONDS_FROM:
            return number / 1000, "unix milliseconds"
        return number, None
    if isinstance(raw, str):
        try:
            when = dt.datetime.fromisoformat(raw.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            return None, None
        if when.tzinfo is None:
            return None, "a date-time without a UTC offset"
        return when.timestamp(), "an RFC 3339 date-time"
    return None, None


def delivery_timestamp(scheme: str, headers: Mapping[str, str], body: bytes, *,
                       timestamp_header: str | None = None,
                       timestamp_field: str | None = None,
                       signature_header: str | None = None) -> SignedTimestamp | None:
    """The delivery's timestamp and whether the scheme's signature covers it. ``stripe`` and
    ``standard-webhooks`` sign theirs; ``hex`` signs the body only, so a body field
    (``timestamp_field``) is covered and a header (``timestamp_header``) is not. None when
    the scheme, as configured, carries no timestamp."""
    h = _lower(headers)
    if scheme == "stripe":
        name = signature_header or "Stripe-Signature"
        raw = _stripe_parts(h.get(name.lower(), ""))[0]
        return SignedTimestamp(f"{name} t=", True, raw, _unix(raw))
    if scheme == "standard-webhooks":
        name = f"{_standard_prefix(h)}timestamp"
        raw = h.get(name)
        return SignedTimestamp(f"{name} header", True, raw, _unix(raw))
    if timestamp_field:
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        value = body_field(document, timestamp_field)
        seconds, read_as = _body_time(value)
        return SignedTimestamp(f"body field {timestamp_field}", True,
                               None if value is None else str(value), seconds, read_as)
    if timestamp_header:
        raw = h.get(timestamp_header.lower())
        return SignedTimestamp(f"{timestamp_header} header", False, raw, _unix(raw))
    return None


def check_timestamp(scheme: str, headers: Mapping[str, str], now: float, *, tolerance_s: float,
                    timestamp_header: str | None = None, timestamp_field: str | None = None,
                    body: bytes = b"", signature_header: str | None = None) -> Verdict | None:
    """Whether the delivery's timestamp is within ``tolerance_s`` of ``now`` (either way).
    None when the scheme carries no timestamp. Whether the signature covers it is
    ``delivery_timestamp``'s ``signed``; this only reads the time."""
    found = delivery_timestamp(scheme, headers, body, timestamp_header=timestamp_header,
                               timestamp_field=timestamp_field, signature_header=signature_header)
    if found is None:
        return None
    if found.raw is None:
        return Verdict(False, f"no {found.source} in the delivery")
    if found.value is None:
        detail = f", {found.read_as}," if found.read_as else ""
        forms = ("unix seconds or milliseconds, or an RFC 3339 date-time with its offset"
                 if found.source.startswith("body field") else "integer unix seconds")
        return Verdict(False, f"{found.source} {found.raw!r}{detail} is not a time: expected "
                              f"{forms}")
    skew = now - found.value
    read = f" (read as {found.read_as})" if found.read_as else ""
    if abs(skew) > tolerance_s:
        return Verdict(False, f"{found.source}{read} is {skew:+.0f}s from now, beyond the "
                              f"tolerance of {tolerance_s:g}s")
    return Verdict(True, f"{found.source}{read} is {skew:+.0f}s from now, within {tolerance_s:g}s")


def verify(scheme: str, secret: str, headers: Mapping[str, str], body: bytes, now: float, *,
           signature_header: str | None = None,
           timestamp_header: str | None = None, timestamp_field: str | None = None,
           tolerance_s: float = 300) -> Verdict:
    """Signature and timestamp together: what a receiver should accept."""
    sig = verify_signature(scheme, secret, headers, body, signature_header=signature_header)
    if not sig.ok:
        return sig
    ts = check_timestamp(scheme, headers, now, tolerance_s=tolerance_s, body=body,
                         timestamp_header=timestamp_header, timestamp_field=timestamp_field,
                         signature_header=signature_header)
    if ts is not None and not ts.ok:
        return ts
    return Verdict(True, sig.reason if ts is None else f"{sig.reason}; {ts.reason}")


def redacted_headers(headers: Mapping[str, str], cfg: WebhooksConfig) -> dict[str, str]:
    """Delivery headers for evidence, with every signature value replaced."""
    names = SIGNATURE_HEADERS | ({cfg.signature_header.lower()} if cfg.signature_header else set())
    return {k: (REDACTED if k.lower() in names else v) for k, v in headers.items()}


# --------------------------------------------------------------------------- end to end


@dataclass
class WebhookE2E:
    """One run: receiver, registration, trigger, and the delivery of the triggered event
    (``delivery``) among whatever else arrived (``stray``)."""

    receiver_url: str
    registration: str  # "registered <id>", "registered", or "static target"
    idempotency_key: str
    trigger: ServiceResponse
    timeout_s: float
    expected_id: str
    correlation: str  # e.g. "data.execution_id = trigger's execution_id"
    delivery: Delivery | None = None
    latency_s: float | None = None
    stray: list[Delivery] = field(default_factory=list)
    # Requests the receiver refused as larger than MAX_DELIVERY_BYTES.
    refused: list[str] = field(default_factory=list)

    def _shown(self, delivery: Delivery, cfg: WebhooksConfig) -> dict[str, Any]:
        return {"method": delivery.method,
                "headers": redacted_headers(delivery.headers, cfg),
                "event_id": _event_id(delivery, cfg),
                "body_bytes": len(delivery.body)}

    def evidence(self, cfg: WebhooksConfig) -> dict[str, Any]:
        out: dict[str, Any] = {
            "scheme": cfg.scheme,
            "receiver": self.receiver_url,
            "registration": self.registration,
            "trigger": {"path": self.trigger.path, "status": self.trigger.status,
                        "idempotency_key": self.idempotency_key},
            "correlation": self.correlation,
            "expected_event_id": self.expected_id,
            "delivery_timeout_s": self.timeout_s,
            "stray_deliveries": [self._shown(d, cfg) for d in self.stray[:10]],
            "refused_as_too_large": self.refused[:10],
        }
        if self.delivery is not None:
            out["delivery"] = {"latency_s": round(self.latency_s or 0.0, 4),
                               **self._shown(self.delivery, cfg)}
        return out


def _event_id(delivery: Delivery, cfg: WebhooksConfig) -> str | None:
    if not cfg.event_id_field:
        return None
    value = body_field(delivery.json(), cfg.event_id_field)
    return None if value is None else str(value)


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


def _is_loopback(host: str | None) -> bool:
    if host in (None, "", "localhost"):
        return True
    try:
        return ipaddress.ip_address(str(host).strip("[]")).is_loopback
    except ValueError:
        return False


def _expected_id(service: ServiceProbe, cfg: WebhooksConfig, trigger: ServiceResponse,
                 key: str) -> tuple[str, str]:
    """The id the triggered event's delivery must carry, and how it was found."""
    assert cfg.event_id_field is not None
    if cfg.trigger_id_field is None:
        return key, f"{cfg.event_id_field} = the trigger's Idempotency-Key"
    value = body_field(trigger.json(), cfg.trigger_id_field)
    if value is None:
        raise UnexpectedResponse(
            f"service: POST {service.base_url}{trigger.path} answered {trigger.status} without "
            f"{cfg.trigger_id_field!r} in its JSON body, so the triggered event cannot be told "
            "from any other delivery; check webhooks.trigger_id_field")
    return str(value), f"{cfg.event_id_field} = the trigger response's {cfg.trigger_id_field}"


def run_webhook_e2e(service: ServiceProbe, cfg: WebhooksConfig) -> WebhookE2E:
    """Start a receiver and prove its URL reaches it, register it (or rely on the static
    target), trigger one event with a fresh ``Idempotency-Key`` and wait, bounded, for the
    delivery of that event. Unregisters afterwards."""
    if cfg.trigger_path is None or cfg.event_id_field is None:
        raise MissingInput("not configured: webhooks.trigger_path and webhooks.event_id_field "
                           "(how to make the platform send an event, and how to know it)")
    if cfg.register_path is None and cfg.receiver_port == 0 and not cfg.receiver_public_url:
        raise MissingInput("webhooks.register_path is null (a static target), so "
                           "webhooks.receiver_port must be the fixed port the platform delivers to")
    with WebhookReceiver(cfg) as receiver:
        if _is_loopback(urlsplit(receiver.url).hostname) \
                and not _is_loopback(urlsplit(service.base_url).hostname):
            raise MissingInput(
                f"the receiver listens on {receiver.url}, which the platform at "
                f"{service.base_url} cannot reach; set webhooks.receiver_public_url to a URL "
                "that forwards to the receiver")
        receiver.check_reachable(min(_RECEIVER_CHECK_TIMEOUT_S, cfg.delivery_timeout_s))
        reg_id: str | None = None
        registration = "static target"
        if cfg.register_path is not None:
            registration, reg_id = _register(service, cfg, receiver.url)
        try:
            key = str(uuid.uuid4())
            sent = time.monotonic()
            trigger = service.post(cfg.trigger_path, json=cfg.trigger_body,
                                   headers={"Idempotency-Key": key})
            _expect_2xx(service, trigger, "api_key", "the event was not triggered")
            expected, correlation = _expected_id(service, cfg, trigger, key)
            result = WebhookE2E(receiver.url, registration, key, trigger, cfg.delivery_timeout_s,
                                expected, correlation)
            end = sent + cfg.delivery_timeout_s
            seen = 0
            while (delivery := receiver.wait_for_delivery(end - time.monotonic(), after=seen)):
                seen += 1
                if _event_id(delivery, cfg) == expected:
                    result.delivery = delivery
                    result.latency_s = delivery.received_monotonic - sent
                    break
                result.stray.append(delivery)
            result.refused = list(receiver.refused)
            return result
        finally:
            if reg_id is not None and cfg.register_path is not None:
                # Best effort: a receiver left registered only costs the platform a refused call.
                with contextlib.suppress(Exception):
                    service.delete(f"{cfg.register_path.rstrip('/')}/{reg_id}")
