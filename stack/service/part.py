"""The service as a part of the reference stack."""

from __future__ import annotations

from typing import Any

import httpx

from opsready_stack.part import Fault, StackContext, wait_until
from opsready_stack.service.app import ALLOWED_ORIGINS, METRICS_FAULTS
from opsready_stack.service.signing import configured_secret

__all__ = ["ServicePart"]

# The header each scheme signs in, and its timestamp header, as env.yaml describes them.
_SCHEME_HEADERS: dict[str, tuple[str, str | None]] = {
    "hex": ("X-Signature", "X-Webhook-Timestamp"),
    "stripe": ("Stripe-Signature", None),
    "standard-webhooks": ("webhook-signature", "webhook-timestamp"),
}


class ServicePart:
    name = "service"
    ports = ("service",)
    faults = (
        Fault("cors-wildcard", "CORS answers Access-Control-Allow-Origin: * with credentials",
              frozenset({"P2-002"})),
        Fault("cors-reflect-any", "CORS reflects any origin, including disallowed ones",
              frozenset({"P2-002"})),
        Fault("no-hsts", "responses carry no Strict-Transport-Security header",
              frozenset({"P0-001"})),
        Fault("no-rate-limit", "the rate limiter is off: no 429, no breaches counted",
              frozenset({"P0-001", "P2-003"})),
        Fault("bad-signature", "webhooks are signed with a secret the receivers do not have",
              frozenset({"P1-004"})),
        Fault("unsigned-webhook", "webhooks are sent without a signature header",
              frozenset({"P1-004"})),
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
        scheme = str(ctx.settings.get("webhook_scheme", "hex"))
        signature_header, timestamp_header = _SCHEME_HEADERS[scheme]
        return {
            "service": {
                "base_url": ctx.urls["service"],
                "api_key": ctx.secrets["dev_key"],
                "admin_key": ctx.secrets["admin_key"],
                "light_path": "/api/v1/actions",
                "rate_limit": {
                    "path": "/api/v1/actions",
                    "method": "GET",
                    "max_requests": 300,
                    "max_seconds": 15,
                    "concurrency": 8,
                },
            },
            "cors": {
                "path": "/api/v1/actions",
                "allowed_origins": list(ALLOWED_ORIGINS),
                "disallowed_origins": ["https://evil.example.com"],
                "method": "POST",
                "request_headers": ["Idempotency-Key", "X-Signature", "X-API-Key"],
                "credentials": True,
            },
            "webhooks": {
                "scheme": scheme,
                "secret": configured_secret(scheme, ctx.secrets["webhook_secret"]),
                "signature_header": signature_header,
                "timestamp_header": timestamp_header,
                "tolerance_s": 300,
                "receiver_bind": "127.0.0.1",
                "receiver_port": 0,
                "register_path": "/api/v1/webhooks/endpoints",
                "trigger_path": "/api/v1/actions/execute",
                "delivery_timeout_s": 10,
            },
        }

    def set_fault(self, ctx: StackContext, name: str, on: bool) -> None:
        # Every service fault is read from faults.json per request.
        return None

    def stop(self, ctx: StackContext) -> None:
        return None
