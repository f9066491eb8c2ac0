"""P1-004: a real receiver gets the delivery of the event we triggered, and its signature
verifies over the raw body.

One end-to-end run per module: start the receiver and prove its URL reaches it, register it
(or use the static target), trigger one event with a fresh Idempotency-Key and wait, bounded,
for the delivery of that event, told apart from any other by ``webhooks.event_id_field``. The
criteria judge that one delivery.

What the criteria can and cannot tell:

- The delivery criterion sees only the triggered event: a stray delivery (a ping, another
  event) does not count, and is listed in the evidence. The receiver takes deliveries up to
  25 MiB (GitHub's cap, the largest documented); with none for the event but one refused as
  larger, the criterion cannot tell and says so. A receiver URL that does not reach
  the receiver is unverified, since the platform could not have delivered either.
- The signature criterion verifies the scheme's HMAC-SHA256 over the exact bytes received,
  under ``webhooks.secret``. ``standard-webhooks`` reads the ``webhook-*`` headers, or the
  ``svix-*`` ones Svix sends by default; ``stripe`` reads ``webhooks.signature_header`` where
  a platform signs Stripe's way under its own header; ``hex`` reads a digest in hex or base64
  after an optional prefix (``sha256=`` by default), so GitHub's and Shopify's forms both fit.
  Schemes that sign something else than the body (Slack's ``v0:timestamp:body``) do not.
- The timestamp criterion judges freshness only where the signature covers the timestamp
  (``stripe``, ``standard-webhooks``, or a ``hex`` body field named by
  ``webhooks.timestamp_field``) and that signature verifies. A ``hex`` timestamp header is not
  covered by the signature, and a signature that does not verify covers nothing: anyone
  replaying a delivery can refresh such a timestamp, so the criterion says it cannot be
  judged.
- There is no "tampered body / wrong secret is rejected" criterion: once the genuine
  signature verifies under the configured secret, HMAC-SHA256 makes both rejections certain,
  so such a criterion could never fail on any platform. It would test our verifier, not the
  platform; the suite's own tests prove the verifier rejects both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

import opsready
from opsready.probes.webhooks import (
    MAX_DELIVERY_BYTES,
    check_timestamp,
    delivery_timestamp,
    redacted_headers,
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
    cfg = webhooks_config
    for key in ("trigger_path", "event_id_field"):
        if getattr(cfg, key) is None:
            opsready.not_covered(f"not configured: webhooks.{key}")
    if cfg.register_path is None and cfg.receiver_port == 0 and not cfg.receiver_public_url:
        opsready.not_covered("not configured: webhooks.register_path (or, for a target set up "
                             "on the platform, a fixed webhooks.receiver_port)")
    if cfg.register_path is not None and service.cfg.admin_key is None:
        opsready.not_covered("not configured: service.admin_key (registering the receiver "
                             "through webhooks.register_path needs it)")
    return run_webhook_e2e(service, cfg)


def _signature(cfg: WebhooksConfig, delivery: Delivery) -> Verdict:
    return verify_signature(cfg.scheme, cfg.secret.get_secret_value(), delivery.headers,
                            delivery.body, signature_header=cfg.signature_header,
                            signature_prefix=cfg.signature_prefix,
                            signature_encoding=cfg.signature_encoding)


def _delivery(e2e: WebhookE2E) -> Delivery:
    if e2e.delivery is None:
        opsready.not_covered("the triggered event was not delivered, so there is nothing to "
                             "verify (see the delivery criterion)")
    return e2e.delivery


def test_delivery_arrives(e2e: WebhookE2E, webhooks_config: WebhooksConfig,
                          evidence: Evidence) -> None:
    """A real receiver gets the triggered event within the delivery timeout"""
    evidence.record("webhook_e2e", e2e.evidence(webhooks_config))
    evidence.measure("delivery_latency", e2e.latency_s, "s")
    count = len(e2e.stray)
    strays = (f" ({count} other deliver{'y' if count == 1 else 'ies'} arrived, none for it)"
              if count else "")
    if e2e.delivery is None and e2e.refused:
        opsready.not_covered(
            f"the receiver refused {len(e2e.refused)} request(s) larger than its "
            f"{MAX_DELIVERY_BYTES >> 20} MiB limit ({', '.join(e2e.refused[:3])}), so whether "
            f"the triggered event was among them cannot be told; trigger an event with a "
            f"smaller payload (webhooks.trigger_body)")
    assert e2e.delivery is not None, (
        f"triggered POST {e2e.trigger.path} (answered {e2e.trigger.status}) with a fresh "
        f"Idempotency-Key; no delivery with {e2e.correlation} ({e2e.expected_id!r}) reached the "
        f"receiver at {e2e.receiver_url} ({e2e.registration}) within {e2e.timeout_s:g}s"
        f"{strays}; expected the triggered event, signed; check that the platform delivers "
        f"every event to registered endpoints"
    )


def test_signature_verifies(e2e: WebhookE2E, webhooks_config: WebhooksConfig,
                            evidence: Evidence) -> None:
    """The signature verifies over the raw body with the configured scheme and secret"""
    cfg = webhooks_config
    delivery = _delivery(e2e)
    verdict = _signature(cfg, delivery)
    evidence.record("signature", {
        "scheme": cfg.scheme,
        "verdict": verdict.reason,
        "body_bytes": len(delivery.body),
        "delivery_headers": redacted_headers(delivery.headers, cfg),
    })
    assert verdict.ok, (
        f"delivery to {e2e.receiver_url} ({cfg.scheme} scheme): {verdict.reason}; expected a "
        f"valid HMAC-SHA256 signature under webhooks.secret; make the platform sign every "
        f"delivery with the secret its receivers were given"
    )


def test_timestamp_within_tolerance(e2e: WebhookE2E, webhooks_config: WebhooksConfig,
                                    evidence: Evidence) -> None:
    """The delivery's signed timestamp is within the tolerance"""
    cfg = webhooks_config
    delivery = _delivery(e2e)
    kw = {"timestamp_header": cfg.timestamp_header, "timestamp_field": cfg.timestamp_field,
          "signature_header": cfg.signature_header}
    found = delivery_timestamp(cfg.scheme, delivery.headers, delivery.body, **kw)
    if found is None:
        opsready.not_applicable("the hex scheme carries no timestamp here (webhooks."
                                "timestamp_field and timestamp_header are null)")
    if not found.signed:
        opsready.not_covered(f"the {found.source} is not covered by the hex signature (it "
                             f"signs the body only), so its freshness proves nothing against "
                             f"a replay; name a signed body field in webhooks.timestamp_field")
    # The scheme signs the timestamp only where its signature verifies: otherwise anyone
    # could have written a fresh one.
    signature = _signature(cfg, delivery)
    if not signature.ok:
        opsready.not_covered(f"the {found.source} is signed only if the delivery's signature "
                             f"verifies, and it does not ({signature.reason}); the signature "
                             f"criterion says what to fix")
    verdict = check_timestamp(cfg.scheme, delivery.headers, delivery.received_at,
                              tolerance_s=cfg.tolerance_s, body=delivery.body, **kw)
    assert verdict is not None
    evidence.record("timestamp", {"source": found.source, "value": found.raw,
                                  "verdict": verdict.reason, "received_at": delivery.received_at,
                                  "tolerance_s": cfg.tolerance_s})
    assert verdict.ok, (
        f"delivery to {e2e.receiver_url} ({cfg.scheme} scheme): {verdict.reason}; expected a "
        f"fresh signed timestamp so receivers can refuse replays; sign with the current time "
        f"and keep the platform's clock in sync"
    )
