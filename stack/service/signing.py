"""How the reference service signs its outbound webhooks, in the three supported schemes.

- ``hex``: ``X-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>`` plus
  ``X-Webhook-Timestamp`` and ``X-Webhook-Id`` (the platform under audit).
- ``stripe``: ``Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "t.body")>``.
- ``standard-webhooks``: ``webhook-id``, ``webhook-timestamp`` and
  ``webhook-signature: v1,<base64 HMAC-SHA256(key, "id.ts.body")>``; the secret is
  ``whsec_<base64 key>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

__all__ = ["SCHEMES", "SIGNATURE_HEADERS", "configured_secret", "sign"]

SCHEMES = ("hex", "stripe", "standard-webhooks")

# The header that carries the signature itself (the `unsigned-webhook` fault drops it).
SIGNATURE_HEADERS = {
    "hex": "X-Signature",
    "stripe": "Stripe-Signature",
    "standard-webhooks": "webhook-signature",
}


def configured_secret(scheme: str, raw: str) -> str:
    """The secret as both sides configure it: Standard Webhooks wants ``whsec_<base64>``."""
    if scheme == "standard-webhooks":
        return "whsec_" + base64.b64encode(raw.encode()).decode()
    return raw


def _standard_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def sign(scheme: str, secret: str, body: bytes, *, msg_id: str, timestamp: int) -> dict[str, str]:
    """The signature headers for one delivery of ``body`` (the exact bytes sent)."""
    if scheme == "hex":
        digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return {
            "X-Signature": f"sha256={digest}",
            "X-Webhook-Timestamp": str(timestamp),
            "X-Webhook-Id": msg_id,
        }
    if scheme == "stripe":
        payload = f"{timestamp}.".encode() + body
        digest = hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()
        return {"Stripe-Signature": f"t={timestamp},v1={digest}", "X-Webhook-Id": msg_id}
    if scheme == "standard-webhooks":
        payload = f"{msg_id}.{timestamp}.".encode() + body
        mac = hmac.new(_standard_key(secret), payload, hashlib.sha256).digest()
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": "v1," + base64.b64encode(mac).decode(),
        }
    raise ValueError(f"unknown webhook scheme {scheme!r}; known: {', '.join(SCHEMES)}")
