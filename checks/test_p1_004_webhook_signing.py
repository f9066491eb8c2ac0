"""P1-004: a real receiver gets a real delivery, and its signature verifies over the raw body.

One end-to-end run per module: start the receiver, register it (or use the static target),
trigger one event with a fresh Idempotency-Key and wait, bounded, for the delivery. The
criteria below judge that one delivery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

import opsready
from opsready.probes.webhooks import (
    check_timestamp,
    redacted_headers,
    rejection_cases,
    run_webhook_e2e,
    verify_signature,
)

if TYPE_CHECKING:
    from opsready.config import WebhooksConfig
    from opsready.evidence import Evidence
    from opsready.probes.http import ServiceProbe
    from opsready.probes.webhooks import Delivery, Verdict, WebhookE2E

pytestmark = [pytest.mark.ticket("P1-004"), pytest.mark.intrusive("webhook_e2e")]


@pytest.fixture(scope="module")
def e2e(service: ServiceProbe, webhooks_config: WebhooksConfig) -> WebhookE2E:
    if webhooks_config.register_path is not None and service.cfg.admin_key is None:
        opsready.not_covered("not configured: service.admin_key (registering the receiver through "
                    "webhooks.register_path needs it)")
    return run_webhook_e2e(service, webhooks_config)


@pytest.fixture(scope="module")
def genuine(e2e: WebhookE2E, webhooks_config: WebhooksConfig) -> Verdict:
    """The delivery's own signature, verified once for the criteria that judge it."""
    delivery = _delivery(e2e)
    return verify_signature(webhooks_config.scheme, webhooks_config.secret.get_secret_value(),
                            delivery.headers, delivery.body,
                            signature_header=webhooks_config.signature_header)


def _delivery(e2e: WebhookE2E) -> Delivery:
    if e2e.delivery is None:
        opsready.not_covered("no delivery arrived, so there is nothing to verify (see the delivery criterion)")
    return e2e.delivery


def test_delivery_arrives(e2e: WebhookE2E, webhooks_config: WebhooksConfig,
                          evidence: Evidence) -> None:
    """A real receiver gets the triggered event within the delivery timeout"""
    evidence.record("webhook_e2e", e2e.evidence(webhooks_config))
    if e2e.latency_s is not None:
        evidence.record("delivery_latency_s", round(e2e.latency_s, 4))
    assert e2e.delivery is not None, (
        f"triggered POST {e2e.trigger.path} (answered {e2e.trigger.status}) with a fresh "
        f"Idempotency-Key; no delivery reached the receiver at {e2e.receiver_url} "
        f"({e2e.registration}) within {e2e.timeout_s:g}s; expected one signed delivery; check "
        f"that the platform delivers to registered endpoints and can reach the receiver"
    )


def test_signature_verifies(e2e: WebhookE2E, webhooks_config: WebhooksConfig, genuine: Verdict,
                            evidence: Evidence) -> None:
    """The signature verifies over the raw body with the configured scheme and secret"""
    delivery, verdict = _delivery(e2e), genuine
    evidence.record("signature", {
        "scheme": webhooks_config.scheme,
        "verdict": verdict.reason,
        "body_bytes": len(delivery.body),
        "delivery_headers": redacted_headers(delivery.headers, webhooks_config),
    })
    assert verdict.ok, (
        f"delivery to {e2e.receiver_url} ({webhooks_config.scheme} scheme): {verdict.reason}; "
        f"expected a valid HMAC-SHA256 signature under webhooks.secret; make the platform sign "
        f"every delivery with the secret its receivers were given"
    )


def test_timestamp_within_tolerance(e2e: WebhookE2E, webhooks_config: WebhooksConfig,
                                    evidence: Evidence) -> None:
    """The delivery's timestamp is within the tolerance"""
    delivery = _delivery(e2e)
    verdict = check_timestamp(webhooks_config.scheme, delivery.headers, delivery.received_at,
                              tolerance_s=webhooks_config.tolerance_s,
                              timestamp_header=webhooks_config.timestamp_header)
    if verdict is None:
        opsready.not_applicable("the hex scheme carries no timestamp here (webhooks.timestamp_header is null)")
    evidence.record("timestamp", {"verdict": verdict.reason, "received_at": delivery.received_at,
                                  "tolerance_s": webhooks_config.tolerance_s})
    assert verdict.ok, (
        f"delivery to {e2e.receiver_url} ({webhooks_config.scheme} scheme): {verdict.reason}; "
        f"expected a fresh timestamp so receivers can refuse replays; sign with the current time "
        f"and keep the platform's clock in sync"
    )


def test_tampered_and_wrong_secret_rejected(e2e: WebhookE2E, webhooks_config: WebhooksConfig,
                                            genuine: Verdict, evidence: Evidence) -> None:
    """A tampered body and a wrong secret are rejected"""
    delivery = _delivery(e2e)
    cases = rejection_cases(webhooks_config, delivery)
    evidence.record("rejections", {"genuine": genuine.reason,
                                   **{name: v.reason for name, v in cases.items()}})
    assert genuine.ok, (
        f"the genuine delivery to {e2e.receiver_url} does not verify ({genuine.reason}), so a "
        f"rejection of tampered copies proves nothing; fix the signature first"
    )
    accepted = [name for name, verdict in cases.items() if verdict.ok]
    assert not accepted, (
        f"delivery to {e2e.receiver_url} ({webhooks_config.scheme} scheme): the signature still "
        f"verified with a {' and a '.join(accepted)}; expected both to be rejected; the signature "
        f"must cover the raw body and depend on the secret"
    )
