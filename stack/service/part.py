"""The service as a part of the reference stack."""

from __future__ import annotations

import time
from typing import Any

import httpx

from opsready_stack.part import BasePart, StackContext, wait_until
from opsready_stack.service.app import ALLOWED_ORIGINS
from opsready_stack.service.faults import SCRAPED_FAULT_NAMES, SERVICE_FAULTS
from opsready_stack.service.signing import configured_secret

__all__ = ["ServicePart"]

# The header that carries each scheme's signature.
_SIGNATURE_HEADERS: dict[str, str] = {
    "hex": "X-Signature",
    "stripe": "Stripe-Signature",
    "standard-webhooks": "webhook-signature",
}
_ACTIONS = "/api/v1/actions"
# Prometheus scrapes every second; a few scrapes' worth.
SCRAPE_WAIT_S = 10.0


class ServicePart(BasePart):
    name = "service"
    ports = ("service",)
    faults = SERVICE_FAULTS

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
            "delivery_timeout_s": 5,
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
        # Every service fault is read from faults.json per request. What /metrics exposes
        # reaches Prometheus only at its next scrape: wait for one, so that a check run right
        # after the flip does not read the series of before it.
        if name in SCRAPED_FAULT_NAMES and "prometheus" in ctx.urls:
            from opsready_stack.prometheus_part import wait_scraped

            wait_scraped(ctx.urls["prometheus"], time.monotonic() + SCRAPE_WAIT_S)

    def stop(self, ctx: StackContext) -> None:
        return None
