"""Webhook signature verification (``opsready.probes.webhooks``) for the three schemes.

Our verifier is checked against the GitHub documentation vector and cross-checked against the
reference implementations (``stripe``, ``standardwebhooks``) on signatures produced by the
reference service's own signing code, in both directions where the library can sign.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import time
from types import SimpleNamespace

import httpx
import pytest
import standardwebhooks
import stripe

from conftest import load_check
from opsready._coverage import NotCovered
from opsready._errors import MissingInput, TargetUnreachable
from opsready.config import WebhooksConfig
from opsready.evidence import Evidence
from opsready.probes.http import ServiceResponse
from opsready.probes.webhooks import (
    MAX_DELIVERY_BYTES,
    Delivery,
    WebhookE2E,
    WebhookReceiver,
    body_field,
    check_timestamp,
    delivery_timestamp,
    redacted_headers,
    verify,
    verify_signature,
)
from opsready_stack.service.signing import SCHEMES, configured_secret, sign

RAW_SECRET = "relay-webhook-secret-for-tests"
BODY = json.dumps({"id": "evt_1", "type": "action.executed", "data": {"n": 1}},
                  separators=(",", ":")).encode()

GITHUB_SECRET = "It's a Secret to Everybody"
GITHUB_BODY = b"Hello, World!"
GITHUB_DIGEST = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def _headers(scheme: str, *, secret: str | None = None, body: bytes = BODY,
             ts: int | None = None) -> dict[str, str]:
    secret = secret or configured_secret(scheme, RAW_SECRET)
    return sign(scheme, secret, body, msg_id="msg_test1", timestamp=ts or int(time.time()))


def _sig_header(scheme: str) -> str:
    return {"hex": "X-Signature", "stripe": "Stripe-Signature",
            "standard-webhooks": "webhook-signature"}[scheme]


# Where the hex scheme's timestamp is read in these tests: the stack's X-Webhook-Timestamp.
HEX_TS = {"timestamp_header": "X-Webhook-Timestamp"}


# ----------------------------------------------------------------------- the GitHub vector


def test_github_doc_vector_verifies() -> None:
    headers = {"X-Hub-Signature-256": f"sha256={GITHUB_DIGEST}"}
    verdict = verify_signature("hex", GITHUB_SECRET, headers, GITHUB_BODY,
                               signature_header="X-Hub-Signature-256")
    assert verdict.ok, verdict.reason


def test_stack_signs_the_github_doc_vector() -> None:
    headers = sign("hex", GITHUB_SECRET, GITHUB_BODY, msg_id="m", timestamp=1)
    assert headers["X-Signature"] == f"sha256={GITHUB_DIGEST}"


@pytest.mark.parametrize("body", [b"Hello, World! ", b"hello, World!", b""])
def test_github_vector_rejects_other_bodies(body: bytes) -> None:
    headers = {"X-Signature": f"sha256={GITHUB_DIGEST}"}
    assert not verify_signature("hex", GITHUB_SECRET, headers, body).ok


def test_hex_header_must_carry_the_algorithm() -> None:
    verdict = verify_signature("hex", GITHUB_SECRET, {"X-Signature": GITHUB_DIGEST}, GITHUB_BODY)
    assert not verdict.ok
    assert "sha256=<hex>" in verdict.reason


def test_header_names_are_case_insensitive() -> None:
    headers = {"x-signature": f"sha256={GITHUB_DIGEST.upper()}"}
    assert verify_signature("hex", GITHUB_SECRET, headers, GITHUB_BODY).ok


# ----------------------------------------------------------------------- every scheme


@pytest.mark.parametrize("scheme", SCHEMES)
def test_own_signatures_verify(scheme: str) -> None:
    secret = configured_secret(scheme, RAW_SECRET)
    verdict = verify(scheme, secret, _headers(scheme), BODY, time.time(), **HEX_TS)
    assert verdict.ok, verdict.reason


@pytest.mark.parametrize("scheme", SCHEMES)
def test_tampered_body_rejected(scheme: str) -> None:
    secret = configured_secret(scheme, RAW_SECRET)
    tampered = BODY.replace(b'"n":1', b'"n":2')
    verdict = verify_signature(scheme, secret, _headers(scheme), tampered,
                               signature_header=_sig_header(scheme))
    assert not verdict.ok
    assert "does not match" in verdict.reason or "no " in verdict.reason


@pytest.mark.parametrize("scheme", SCHEMES)
def test_wrong_secret_rejected(scheme: str) -> None:
    wrong = configured_secret(scheme, "another-secret")
    verdict = verify_signature(scheme, wrong, _headers(scheme), BODY,
                               signature_header=_sig_header(scheme))
    assert not verdict.ok


@pytest.mark.parametrize("scheme", SCHEMES)
def test_missing_signature_rejected(scheme: str) -> None:
    headers = _headers(scheme)
    headers.pop(_sig_header(scheme))
    verdict = verify_signature(scheme, configured_secret(scheme, RAW_SECRET), headers, BODY,
                               signature_header=_sig_header(scheme))
    assert not verdict.ok
    assert "no " in verdict.reason


@pytest.mark.parametrize("scheme", SCHEMES)
def test_stale_timestamp_rejected(scheme: str) -> None:
    now = time.time()
    stale = int(now) - 3600
    secret = configured_secret(scheme, RAW_SECRET)
    headers = _headers(scheme, ts=stale)
    # The signature itself is fine; only the timestamp gives the replay away.
    assert verify_signature(scheme, secret, headers, BODY,
                            signature_header=_sig_header(scheme)).ok
    ts = check_timestamp(scheme, headers, now, tolerance_s=300, **HEX_TS)
    assert ts is not None and not ts.ok
    assert "beyond the tolerance" in ts.reason
    assert not verify(scheme, secret, headers, BODY, now, tolerance_s=300, **HEX_TS).ok


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize(("skew", "ok"), [(0, True), (300, True), (-300, True), (301, False),
                                          (-301, False)])
def test_timestamp_tolerance_edges(scheme: str, skew: int, ok: bool) -> None:
    now = 1_800_000_000
    headers = _headers(scheme, ts=now - skew)
    verdict = check_timestamp(scheme, headers, float(now), tolerance_s=300, **HEX_TS)
    assert verdict is not None and verdict.ok is ok, verdict


def test_hex_without_timestamp_header_has_no_timestamp_check() -> None:
    assert check_timestamp("hex", {}, time.time(), tolerance_s=300, timestamp_header=None) is None
    assert delivery_timestamp("hex", _headers("hex"), BODY) is None


@pytest.mark.parametrize("scheme", ["stripe", "standard-webhooks"])
def test_schemes_with_a_timestamp_sign_it(scheme: str) -> None:
    found = delivery_timestamp(scheme, _headers(scheme, ts=1_800_000_000), BODY)
    assert found is not None and found.signed and found.value == 1_800_000_000


def test_hex_timestamp_header_is_not_covered_by_the_signature() -> None:
    found = delivery_timestamp("hex", _headers("hex", ts=1_800_000_000), BODY, **HEX_TS)
    assert found is not None and not found.signed and found.value == 1_800_000_000


def test_hex_timestamp_body_field_is_covered_by_the_signature() -> None:
    body = json.dumps({"id": "evt_1", "created": 1_800_000_000}).encode()
    found = delivery_timestamp("hex", {}, body, timestamp_field="created", **HEX_TS)
    assert found is not None and found.signed and found.value == 1_800_000_000
    assert found.source == "body field created"
    verdict = check_timestamp("hex", {}, 1_800_000_400.0, tolerance_s=300, body=body,
                              timestamp_field="created")
    assert verdict is not None and not verdict.ok and "+400s" in verdict.reason
    missing = check_timestamp("hex", {}, time.time(), tolerance_s=300, body=b"{}",
                              timestamp_field="created")
    assert missing is not None and not missing.ok and "no body field created" in missing.reason
    text = check_timestamp("hex", {}, time.time(), tolerance_s=300, body=b'{"created": "soon"}',
                           timestamp_field="created")
    assert text is not None and "is not a time: expected unix seconds or milliseconds" in text.reason


@pytest.mark.parametrize(("value", "read_as"), [
    (1_800_000_000, None),
    (1_800_000_000.25, None),
    ("1800000000", None),
    (1_800_000_000_250, "unix milliseconds"),
    ("2027-01-15T08:00:00Z", "an RFC 3339 date-time"),
    ("2027-01-15T09:00:00.000000+01:00", "an RFC 3339 date-time"),
])
def test_a_body_field_time_in_any_common_form(value: object, read_as: str | None) -> None:
    """No scheme constrains a body field's form: seconds (whole or not), milliseconds, or an
    RFC 3339 date-time with its offset (Standard Webhooks' payload timestamp) all say when."""
    body = json.dumps({"created": value}).encode()
    sent = dt.datetime(2027, 1, 15, 8, tzinfo=dt.UTC).timestamp() if isinstance(value, str) \
        and "T" in value else 1_800_000_000
    found = delivery_timestamp("hex", {}, body, timestamp_field="created")
    assert found is not None and found.read_as == read_as and found.value is not None
    assert abs(found.value - sent) < 1
    fresh = check_timestamp("hex", {}, sent + 10, tolerance_s=300, body=body,
                            timestamp_field="created")
    stale = check_timestamp("hex", {}, sent + 4000, tolerance_s=300, body=body,
                            timestamp_field="created")
    assert fresh is not None and fresh.ok and "+10s" in fresh.reason
    assert stale is not None and not stale.ok and "+4000s" in stale.reason


@pytest.mark.parametrize(("value", "why"), [
    ("2027-01-15T08:00:00", "without a UTC offset"),
    (True, "not a time"),
    ("NaN", "not a time"),
])
def test_a_body_field_that_is_no_time(value: object, why: str) -> None:
    body = json.dumps({"created": value}).encode()
    verdict = check_timestamp("hex", {}, time.time(), tolerance_s=300, body=body,
                              timestamp_field="created")
    assert verdict is not None and not verdict.ok and why in verdict.reason


def test_the_schemes_own_timestamps_stay_integer_seconds() -> None:
    headers = _headers("standard-webhooks")
    headers["webhook-timestamp"] = "2027-01-15T08:00:00Z"
    verdict = check_timestamp("standard-webhooks", headers, time.time(), tolerance_s=300)
    assert verdict is not None and not verdict.ok and "expected integer unix seconds" in verdict.reason


def test_body_field_follows_dotted_paths() -> None:
    doc = {"data": {"execution_id": "ex_1", "n": 0}, "list": [1]}
    assert body_field(doc, "data.execution_id") == "ex_1"
    assert body_field(doc, "data.n") == 0
    assert body_field(doc, "data.missing") is None
    assert body_field(doc, "list.0") is None
    assert body_field(None, "data") is None


def test_redacted_headers_hide_every_signature() -> None:
    for scheme in SCHEMES:
        cfg = WebhooksConfig(scheme=scheme, secret="s3cret-value")  # type: ignore[arg-type]
        shown = redacted_headers(_headers(scheme), cfg)
        assert shown[_sig_header(scheme)] == "[redacted]"
        sig = _headers(scheme)[_sig_header(scheme)]
        assert sig not in json.dumps(shown)


def test_standard_webhooks_secret_must_be_whsec_base64() -> None:
    with pytest.raises(MissingInput, match="whsec_"):
        verify_signature("standard-webhooks", "whsec_not base64!", _headers("standard-webhooks"),
                         BODY)


def test_an_unpadded_whsec_secret_works_as_in_the_reference_library() -> None:
    """The reference libraries pad the secret's base64 before decoding it: a platform that
    shows it without padding is judged, not refused."""
    padded = "whsec_" + base64.b64encode(b"thirty-one bytes of webhook key").decode()
    unpadded = padded.rstrip("=")
    assert unpadded != padded
    ts = dt.datetime.now(dt.UTC).replace(microsecond=0)
    signature = standardwebhooks.Webhook(unpadded).sign("msg_pad", ts, BODY.decode())
    headers = {"webhook-id": "msg_pad", "webhook-timestamp": str(int(ts.timestamp())),
               "webhook-signature": signature}
    assert verify_signature("standard-webhooks", unpadded, headers, BODY).ok
    assert not verify_signature("standard-webhooks", unpadded, headers, BODY + b" ").ok


@pytest.mark.parametrize(("header", "prefix", "encoding", "value"), [
    ("X-Hub-Signature-256", "sha256=", "hex", f"sha256={GITHUB_DIGEST}"),
    ("X-Hub-Signature-256", "sha256=", "hex", f"SHA256={GITHUB_DIGEST.upper()}"),
    ("X-Signature", "", "hex", GITHUB_DIGEST),
    ("X-Shopify-Hmac-Sha256", "", "base64",
     base64.b64encode(bytes.fromhex(GITHUB_DIGEST)).decode()),
    ("X-Signature", "hmac-sha256 ", "base64",
     "hmac-sha256 " + base64.urlsafe_b64encode(bytes.fromhex(GITHUB_DIGEST)).decode()),
])
def test_hex_scheme_reads_the_digest_forms_platforms_use(header: str, prefix: str, encoding: str,
                                                         value: str) -> None:
    """One HMAC-SHA256 of the raw body, written as platforms write it: GitHub's prefixed hex,
    a bare hex digest, Shopify's bare base64."""
    kw = {"signature_header": header, "signature_prefix": prefix, "signature_encoding": encoding}
    assert verify_signature("hex", GITHUB_SECRET, {header: value}, GITHUB_BODY, **kw).ok
    assert not verify_signature("hex", GITHUB_SECRET, {header: value}, GITHUB_BODY + b"!", **kw).ok
    assert not verify_signature("hex", "another secret", {header: value}, GITHUB_BODY, **kw).ok


@pytest.mark.parametrize(("value", "prefix", "encoding"), [
    (GITHUB_DIGEST, "sha256=", "hex"),  # the prefix is missing
    (f"sha256={GITHUB_DIGEST[:-1]}", "sha256=", "hex"),  # an odd digit count
    ("sha256=", "sha256=", "hex"),  # no digest
    (f"sha256={GITHUB_DIGEST}", "", "base64"),  # not base64
])
def test_hex_scheme_refuses_a_digest_in_another_form(value: str, prefix: str, encoding: str) -> None:
    verdict = verify_signature("hex", GITHUB_SECRET, {"X-Signature": value}, GITHUB_BODY,
                               signature_prefix=prefix, signature_encoding=encoding)
    assert not verdict.ok and f"is not in the form {prefix}<{encoding}>" in verdict.reason


def test_stripe_scheme_under_a_platform_header() -> None:
    """Platforms that sign Stripe's way (t=...,v1=...) often name the header after
    themselves: the signature and its timestamp are read from webhooks.signature_header."""
    headers = {"X-Kit-Signature": _headers("stripe")["Stripe-Signature"]}
    assert verify_signature("stripe", RAW_SECRET, headers, BODY,
                            signature_header="X-Kit-Signature").ok
    found = delivery_timestamp("stripe", headers, BODY, signature_header="X-Kit-Signature")
    assert found is not None and found.source == "X-Kit-Signature t=" and found.value is not None
    assert verify("stripe", RAW_SECRET, headers, BODY, time.time(),
                  signature_header="X-Kit-Signature").ok
    assert verify_signature("stripe", RAW_SECRET, headers, BODY).reason == \
        "no Stripe-Signature header in the delivery"
    shown = redacted_headers(headers, WebhooksConfig.model_validate(
        {"secret": RAW_SECRET, "scheme": "stripe", "signature_header": "X-Kit-Signature"}))
    assert shown["X-Kit-Signature"] == "[redacted]"


def test_svix_named_headers_verify_as_standard_webhooks() -> None:
    """Svix sends the standard's headers as svix-id, svix-timestamp and svix-signature unless
    a platform renames them; Svix's own libraries accept both sets."""
    secret = configured_secret("standard-webhooks", RAW_SECRET)
    ts = dt.datetime.now(dt.UTC).replace(microsecond=0)
    signature = standardwebhooks.Webhook(secret).sign("msg_svix", ts, BODY.decode())
    headers = {"svix-id": "msg_svix", "svix-timestamp": str(int(ts.timestamp())),
               "svix-signature": signature}
    assert verify("standard-webhooks", secret, headers, BODY, time.time()).ok
    found = delivery_timestamp("standard-webhooks", headers, BODY)
    assert found is not None and found.source == "svix-timestamp header" and found.signed
    assert not verify_signature("standard-webhooks", secret, headers, BODY + b" ").ok
    assert redacted_headers(headers, WebhooksConfig(secret=secret))["svix-signature"] == "[redacted]"
    # Half of each set is no delivery of either.
    mixed = {"webhook-id": "msg_svix", "svix-timestamp": headers["svix-timestamp"],
             "svix-signature": signature}
    assert verify_signature("standard-webhooks", secret, mixed, BODY).reason == \
        "no webhook-timestamp, webhook-signature header in the delivery"


def test_an_asymmetric_standard_webhooks_key_is_named_as_such() -> None:
    with pytest.raises(MissingInput, match="asymmetric key"):
        verify_signature("standard-webhooks", "whpk_" + base64.b64encode(b"k" * 32).decode(),
                         _headers("standard-webhooks"), BODY)


def test_unknown_scheme_is_not_a_verdict() -> None:
    with pytest.raises(MissingInput, match="unknown webhook scheme"):
        verify_signature("md5", "s", {}, BODY)


# ----------------------------------------------------------------------- stripe cross-checks


def test_stripe_library_accepts_stack_signatures() -> None:
    headers = _headers("stripe")
    assert stripe.WebhookSignature.verify_header(BODY.decode(), headers["Stripe-Signature"],
                                                 RAW_SECRET, tolerance=300)
    event = stripe.Webhook.construct_event(BODY, headers["Stripe-Signature"], RAW_SECRET)
    assert event["id"] == "evt_1"


def test_stripe_library_and_we_agree_on_rejections() -> None:
    headers = _headers("stripe")
    tampered = BODY + b" "
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(tampered, headers["Stripe-Signature"], RAW_SECRET)
    assert not verify_signature("stripe", RAW_SECRET, headers, tampered).ok
    stale = _headers("stripe", ts=int(time.time()) - 3600)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(BODY, stale["Stripe-Signature"], RAW_SECRET)
    assert not verify("stripe", RAW_SECRET, stale, BODY, time.time()).ok


def test_we_accept_a_stripe_header_with_several_signatures() -> None:
    # Stripe sends one v1 per active secret during a rotation, plus a v0 test signature.
    t = int(time.time())
    good = hmac.new(RAW_SECRET.encode(), f"{t}.".encode() + BODY, hashlib.sha256).hexdigest()
    header = f"t={t},v1={'0' * 64},v1={good},v0=abc"
    assert stripe.WebhookSignature.verify_header(BODY.decode(), header, RAW_SECRET, tolerance=300)
    assert verify("stripe", RAW_SECRET, {"Stripe-Signature": header}, BODY, time.time()).ok


# ----------------------------------------------------------------------- standardwebhooks


def test_standardwebhooks_library_accepts_stack_signatures() -> None:
    secret = configured_secret("standard-webhooks", RAW_SECRET)
    headers = _headers("standard-webhooks")
    payload = standardwebhooks.Webhook(secret).verify(BODY, headers)
    assert payload["id"] == "evt_1"


def test_we_accept_standardwebhooks_library_signatures() -> None:
    secret = configured_secret("standard-webhooks", RAW_SECRET)
    ts = dt.datetime.now(dt.UTC).replace(microsecond=0)
    signature = standardwebhooks.Webhook(secret).sign("msg_lib", ts, BODY.decode())
    headers = {"webhook-id": "msg_lib", "webhook-timestamp": str(int(ts.timestamp())),
               "webhook-signature": f"v1,{'A' * 44} {signature}"}
    assert verify("standard-webhooks", secret, headers, BODY, time.time()).ok


def test_standardwebhooks_library_and_we_agree_on_rejections() -> None:
    secret = configured_secret("standard-webhooks", RAW_SECRET)
    wrong = "whsec_" + base64.b64encode(b"another key").decode()
    headers = _headers("standard-webhooks")
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(wrong).verify(BODY, headers)
    assert not verify_signature("standard-webhooks", wrong, headers, BODY).ok
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(secret).verify(BODY + b" ", headers)
    assert not verify_signature("standard-webhooks", secret, headers, BODY + b" ").ok


# ----------------------------------------------------------------------- the receiver


def _cfg(**kw: object) -> WebhooksConfig:
    return WebhooksConfig(secret="s3cret-value", **kw)  # type: ignore[arg-type]


def test_receiver_keeps_the_raw_body_and_headers() -> None:
    raw = b'{ "a" :1,\n "b": "\xc3\xa9" }  '
    with WebhookReceiver(_cfg()) as receiver:
        assert receiver.url.startswith("http://127.0.0.1:")
        resp = httpx.post(receiver.url, content=raw, headers={"X-Signature": "sha256=00"},
                          timeout=5)
        assert resp.status_code == 200
        delivery = receiver.wait_for_delivery(2.0)
    assert delivery is not None
    assert delivery.body == raw
    assert delivery.header("X-Signature") == "sha256=00"
    assert delivery.method == "POST"
    assert abs(delivery.received_at - time.time()) < 5


def test_receiver_takes_large_deliveries_and_notes_what_it_refuses() -> None:
    """Deliveries up to GitHub's 25 MB cap are taken; a larger one is refused with 413 and
    noted, so the delivery criterion can say it could not tell."""
    import socket

    big = b'{"blob": "' + b"x" * (2 << 20) + b'"}'
    with WebhookReceiver(_cfg()) as receiver:
        assert httpx.post(receiver.url, content=big, timeout=10).status_code == 200
        delivery = receiver.wait_for_delivery(2.0)
        assert delivery is not None and delivery.body == big
        # A request that says it is larger is refused before its body is read.
        path = receiver.url.split(str(receiver.port), 1)[1]
        with socket.create_connection(("127.0.0.1", receiver.port), timeout=5) as sock:
            sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: "
                         f"{MAX_DELIVERY_BYTES + 1}\r\n\r\n".encode())
            assert sock.recv(64).startswith(b"HTTP/1.1 413")
        assert receiver.refused == [f"POST of {MAX_DELIVERY_BYTES + 1} bytes"]
        assert len(receiver.deliveries) == 1


def _e2e(refused: list[str]) -> WebhookE2E:
    trigger = ServiceResponse("POST", "/api/v1/actions", 202, {}, "{}", 0.01)
    return WebhookE2E("http://127.0.0.1:1/hook", "registered", "key-1", trigger, 5.0, "ex_1",
                      "data.execution_id = trigger's execution_id", refused=refused)


def test_no_delivery_fails_unless_the_receiver_refused_one_as_too_large() -> None:
    cfg = _cfg(trigger_path="/api/v1/actions", event_id_field="data.execution_id")
    with pytest.raises(AssertionError, match=r"no delivery with data\.execution_id"):
        CHECK.test_delivery_arrives(_e2e([]), cfg, Evidence())
    with pytest.raises(NotCovered, match=r"refused 1 request.*larger than its 25 MiB limit"):
        CHECK.test_delivery_arrives(_e2e(["POST of 30000000 bytes"]), cfg, Evidence())


def test_receiver_reads_chunked_bodies() -> None:
    def chunks() -> object:
        yield b"part one,"
        yield b"part two"

    with WebhookReceiver(_cfg()) as receiver:
        httpx.post(receiver.url, content=chunks(), timeout=5)  # type: ignore[arg-type]
        delivery = receiver.wait_for_delivery(2.0)
    assert delivery is not None and delivery.body == b"part one,part two"


def test_receiver_wait_is_bounded() -> None:
    with WebhookReceiver(_cfg()) as receiver:
        begun = time.monotonic()
        assert receiver.wait_for_delivery(0.3) is None
        assert time.monotonic() - begun < 1.5


def test_receiver_reachability_check_is_not_a_delivery() -> None:
    with WebhookReceiver(_cfg()) as receiver:
        receiver.check_reachable(2.0)
        assert receiver.deliveries == []
        assert receiver.wait_for_delivery(0.2) is None


def test_receiver_port_in_use_is_a_probe_error() -> None:
    with WebhookReceiver(_cfg()) as first, pytest.raises(TargetUnreachable, match="cannot listen"):
        WebhookReceiver(_cfg(receiver_port=first.port)).start()


# ----------------------------------------------------------------------- the timestamp criterion

CHECK = load_check("test_p1_004_webhook_signing")


def _judged(scheme: str, headers: dict[str, str], body: bytes = BODY, **cfg: object) -> Evidence:
    """The timestamp criterion on one delivery of ``headers`` and ``body``, received now."""
    delivery = Delivery("POST", "/hook", {k.lower(): v for k, v in headers.items()}, body,
                        time.time(), time.monotonic())
    config = WebhooksConfig.model_validate(
        {"secret": configured_secret(scheme, RAW_SECRET), "scheme": scheme, **cfg})
    evidence = Evidence()
    CHECK.test_timestamp_within_tolerance(SimpleNamespace(delivery=delivery, receiver_url="http://r"),
                                          config, evidence)
    return evidence


@pytest.mark.parametrize("scheme", ["stripe", "standard-webhooks"])
def test_a_fresh_timestamp_under_a_valid_signature_passes(scheme: str) -> None:
    shown = next(i.value for i in _judged(scheme, _headers(scheme)).items if i.name == "timestamp")
    assert "within" in shown["verdict"]


@pytest.mark.parametrize("scheme", ["stripe", "standard-webhooks"])
def test_a_stale_timestamp_under_a_valid_signature_fails(scheme: str) -> None:
    with pytest.raises(AssertionError, match="expected a fresh signed timestamp"):
        _judged(scheme, _headers(scheme, ts=int(time.time()) - 3600))


@pytest.mark.parametrize("scheme", ["stripe", "standard-webhooks", "hex"])
def test_a_fresh_timestamp_under_a_signature_that_does_not_verify_is_not_judged(scheme: str) -> None:
    """A timestamp is signed only if the signature verifies: a fresh one under a wrong
    signature is no sign of replay protection, and is not judged either way."""
    other = ("whsec_" + base64.b64encode(b"another key").decode() if scheme == "standard-webhooks"
             else "another secret")
    # The hex scheme signs the body only: its timestamp is a body field.
    body = json.dumps({"created": int(time.time())}).encode() if scheme == "hex" else BODY
    cfg = {"timestamp_field": "created"} if scheme == "hex" else {}
    with pytest.raises(NotCovered, match="signed only if the delivery's signature verifies"):
        _judged(scheme, _headers(scheme, secret=other, body=body), body, **cfg)
