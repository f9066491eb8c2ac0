"""The service as a part of the reference stack."""

from __future__ import annotations

from typing import Any

import httpx

from opsready_stack.part import BasePart, Fault, StackContext, wait_until
from opsready_stack.service.app import ALLOWED_ORIGINS, METRICS_FAULTS
from opsready_stack.service.signing import configured_secret

__all__ = ["ServicePart"]

# The header that carries each scheme's signature.
_SIGNATURE_HEADERS: dict[str, str] = {
    "hex": "X-Signature",
    "stripe": "Stripe-Signature",
    "standard-webhooks": "webhook-signature",
}
_ACTIONS = "/api/v1/actions"


class ServicePart(BasePart):
    name = "service"
    ports = ("service",)
    faults = (
        Fault("cors-wildcard", "CORS answers Access-Control-Allow-Origin: * with credentials",
              frozenset({"P2-002"})),
        Fault("cors-reflect-any", "CORS reflects any origin, including disallowed ones",
              frozenset({"P2-002"})),
        Fault("cors-startswith-match", "CORS allows any origin that merely starts with an "
              "allowed one", frozenset({"P2-002"})),
        Fault("cors-credentials-casing", "CORS sends Access-Control-Allow-Credentials: True, "
              "which Fetch does not accept", frozenset({"P2-002"})),
        Fault("cors-max-age-zero", "preflights answer Access-Control-Max-Age: 0",
              frozenset({"P2-002"})),
        Fault("cors-methods-safelisted-only", "preflights list only GET, HEAD, POST in "
              "Access-Control-Allow-Methods", frozenset({"P2-002"})),
        Fault("cors-actual-no-vary", "actual CORS responses lack Vary: Origin",
              frozenset({"P2-002"})),
        Fault("cors-preflight-204", "preflights answer 204 and echo the requested method and "
              "headers", frozenset(), variant=True),
        Fault("no-hsts", "responses carry no Strict-Transport-Security header",
              frozenset({"P0-001"})),
        Fault("hsts-short", "Strict-Transport-Security has max-age=86400",
              frozenset({"P0-001"})),
        Fault("csp-unsafe-inline", "the CSP allows 'unsafe-inline' in script-src",
              frozenset({"P0-001"})),
        Fault("referrer-unsafe-url", "Referrer-Policy is unsafe-url", frozenset({"P0-001"})),
        Fault("security-headers-alternative", "a nonce-based strict CSP plus a second policy, "
              "a preloadable two-year HSTS and a Referrer-Policy with a fallback token",
              frozenset(), variant=True),
        Fault("health-reports-fail", "/health answers 200 with status fail",
              frozenset({"P0-001"})),
        Fault("health-draft-format", "/health answers application/health+json with status pass",
              frozenset(), variant=True),
        Fault("no-rate-limit", "the rate limiter is off: no 429, no breaches counted",
              frozenset({"P0-001", "P2-003"})),
        Fault("retry-after-invalid", "429 responses carry a fractional Retry-After (0.040)",
              frozenset({"P0-001"})),
        Fault("retry-after-http-date", "429 responses carry Retry-After as an HTTP-date",
              frozenset(), variant=True),
        Fault("bad-signature", "webhooks are signed with a secret the receivers do not have",
              frozenset({"P1-004"})),
        Fault("unsigned-webhook", "webhooks are sent without a signature header",
              frozenset({"P1-004"})),
        Fault("webhook-wrong-event", "the delivery carries another execution's event",
              frozenset({"P1-004"})),
        Fault("webhook-stale-timestamp", "events and their signatures are dated an hour back",
              frozenset({"P1-004"})),
        Fault("webhook-ping-first", "a new endpoint first gets a signed ping event",
              frozenset(), variant=True),
        # Without the metrics, the alert rules that read them can never fire (P0-001).
        Fault("no-breach-metric", "rate_limit_breaches_total is absent from /metrics",
              frozenset({"P0-001", "P2-003"})),
        Fault("no-pool-metrics", "the db_connection_pool_* gauges are absent from /metrics",
              frozenset({"P0-001", "P2-004"})),
        Fault("no-tracing", "the service exports no spans", frozenset({"P2-001"})),
        *METRICS_FAULTS,
    )

    def start(self, ctx: StackContext) -> None:
        port = ctx.ports["service"]
        ctx.urls["service"] = f"http://127.0.0.1:{port}"
        ctx.spawn(
            "service",
            [ctx.python(), "-m", "opsready_stack.service", "--dir", str(ctx.dir), "--port", str(port)],
        )

    def wait_ready(self, ctx: StackContext, deadline: float) -> None:
        url = ctx.urls["service"] + "/health"

        def up() -> bool:
            return httpx.get(url, timeout=1.0).status_code == 200

        try:
            wait_until(up, deadline, "service")
        except RuntimeError:
            raise RuntimeError(
                f"service did not answer {url} in time; see {ctx.logs / 'service.log'}"
            ) from None

    def after_ready(self, ctx: StackContext) -> None:
        return None

    def env_config(self, ctx: StackContext) -> dict[str, Any]:
        """The platform's edge as config/environments/local.yaml describes it."""
        scheme = str(ctx.settings.get("webhook_scheme", "hex"))
        webhooks: dict[str, Any] = {
            "scheme": scheme,
            "secret": configured_secret(scheme, ctx.secrets["webhook_secret"]),
            "signature_header": _SIGNATURE_HEADERS[scheme],
        }
        if scheme == "hex":
            # The hex signature covers the body only; the event's `created` is signed.
            webhooks["timestamp_field"] = "created"
        webhooks |= {
            "tolerance_s": 300,
            "event_id_field": "data.execution_id",
            "trigger_id_field": "execution_id",
            "receiver_bind": "127.0.0.1",
            "receiver_port": 0,
            "register_path": "/api/v1/webhooks/endpoints",
            "trigger_path": f"{_ACTIONS}/execute",
            "trigger_body": {"action": "opsready.probe"},
            "delivery_timeout_s": 10,
        }
        return {
            "service": {
                "base_url": ctx.urls["service"],
                "api_key": ctx.secrets["dev_key"],
                "admin_key": ctx.secrets["admin_key"],
                "security_headers": {
                    "paths": ["/health", _ACTIONS],
                    "hsts_min_max_age": 31536000,
                    "csp_required_directives": ["default-src", "frame-ancestors"],
                },
                "rate_limit": {
                    "path": _ACTIONS,
                    "method": "GET",
                    "max_requests": 300,
                    "max_seconds": 15,
                    "concurrency": 8,
                },
            },
            "cors": {
                "paths": [_ACTIONS, f"{_ACTIONS}/execute"],
                "allowed_origins": list(ALLOWED_ORIGINS),
                "disallowed_origins": ["https://evil.example.com"],
                "methods": ["POST", "DELETE"],
                "request_headers": ["Idempotency-Key", "X-Signature", "X-API-Key"],
                "credentials": True,
            },
            "webhooks": webhooks,
        }

    def set_fault(self, ctx: StackContext, name: str, on: bool) -> None:
        # Every service fault is read from faults.json per request.
        return None

    def stop(self, ctx: StackContext) -> None:
        return None
