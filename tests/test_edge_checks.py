"""The service-edge checks (P0-001 edge, P1-004, P2-002, P2-003) against the reference stack.

The fault matrix (test_fault_matrix.py) runs every edge fault and variant once, checking that
it opens exactly its tickets, which criterion fails and what its message quotes; here the
healthy run's evidence, and the paths that must end unverified: an unreachable service or
receiver, a config key left empty, a timestamp the signature does not cover. The webhook
schemes run end to end against a second service.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import StartedStack, VerifyResult, env_variant, evidence_value, run_verify
from opsready_stack.part import StackContext, free_port
from opsready_stack.service.app import load_settings, serve_in_thread
from opsready_stack.service.part import ServicePart

pytestmark = [pytest.mark.stack]

EDGE = ("P0-001", "P1-004", "P2-002", "P2-003")
EDGE_PROBES = ["rate_limit_burst", "webhook_e2e"]
# One process: the runs are small, and xdist workers would only add start-up time.
SERIAL = ("-n", "0")


def _criterion(result: Any, ticket: str, title: str) -> dict[str, Any]:
    for c in result.criteria(ticket):
        if c["title"] == title:
            found: dict[str, Any] = c
            return found
    raise AssertionError(f"{ticket} has no criterion {title!r}: "
                         f"{[c['title'] for c in result.criteria(ticket)]}")


def test_edge_tickets_done_on_the_healthy_stack(stack: StartedStack, healthy_run: VerifyResult) -> None:
    result = healthy_run
    assert {t: result.status[t] for t in EDGE} == dict.fromkeys(EDGE, "done"), result.explain(EDGE)

    preflight = _criterion(result, "P2-002", "Access-Control-Allow-Origin equals the origin, "
                                             "never * with credentials")
    rows = evidence_value(preflight, "cors_exchanges")
    assert {r["origin"] for r in rows} == {"https://relay-studio-one.vercel.app",
                                           "http://localhost:3000"}
    assert {r["method"] for r in rows} == {"POST", "DELETE"}
    assert all(r["allow_origin"] == r["origin"] and r["kind"] == "preflight" for r in rows)
    hostile = _criterion(result, "P2-002", "Hostile and disallowed origins get no "
                                           "Access-Control-Allow-Origin")
    variants = {h["variant"] for h in evidence_value(hostile, "hostile_origins")}
    assert variants == {"suffix", "prefix", "scheme", "subdomain", "null", "configured"}
    assert all(r["allow_origin"] is None for r in evidence_value(hostile, "cors_exchanges"))

    delivery = _criterion(result, "P1-004", "A real receiver gets the triggered event within the "
                                            "delivery timeout")
    assert 0 < evidence_value(delivery, "delivery_latency") < 10
    run = evidence_value(delivery, "webhook_e2e")
    headers = run["delivery"]["headers"]
    assert headers["x-signature"] == "[redacted]"
    assert run["delivery"]["event_id"] == run["expected_event_id"]
    timestamp = _criterion(result, "P1-004", "The delivery's signed timestamp is within the "
                                             "tolerance")
    assert evidence_value(timestamp, "timestamp")["source"] == "body field created"

    headers_seen = _criterion(result, "P0-001", "The security headers meet the configured policy "
                                                "on every configured path")
    assert "protects nobody" in evidence_value(headers_seen, "hsts_note")
    assert len(evidence_value(headers_seen, "security_headers")) == 2
    health = _criterion(result, "P0-001", "/health answers 2xx and reports itself healthy")
    assert evidence_value(health, "health")["reported_status"] == "ok"
    burst = _criterion(result, "P0-001", "Rate limiting answers a bounded burst with 429 and says "
                                         "when to retry")
    took = evidence_value(burst, "requests_to_429")
    assert 1 <= took <= 300
    assert evidence_value(burst, "burst")["retry_after"]["form"] == "delay-seconds"

    secrets = [v for v in stack.state["secrets"].values() if len(v) >= 8]
    text = json.dumps(result.readiness)
    assert not [s for s in secrets if s in text], "a stack secret reached readiness.json"


HEADERS = "The security headers meet the configured policy on every configured path"
DELIVERY = "A real receiver gets the triggered event within the delivery timeout"


def test_no_rate_limit_fails_both_bursts_even_after_earlier_breaches(
    stack: StartedStack, tmp_path: Path
) -> None:
    # Earlier runs left the breach counter above zero: that must not pass for a breach now.
    with stack.fault("no-rate-limit"):
        result = run_verify(stack, tmp_path, *SERIAL, tickets=["P0-001", "P2-003"],
                            allow_intrusive=EDGE_PROBES)
    assert result.status["P0-001"] == "open" and result.status["P2-003"] == "open", \
        result.explain(["P0-001", "P2-003"])
    counted = _criterion(result, "P2-003", "rate_limit_breaches_total increases after a breach")
    assert counted["outcome"] == "fail" and "got no 429" in counted["message"]
    burst = evidence_value(counted, "burst")
    assert burst["requests_sent"] == 300 and burst["stopped_by"] == "max_requests"


def test_disallowed_intrusive_probes_skip_with_their_reason(stack: StartedStack,
                                                            tmp_path: Path) -> None:
    result = run_verify(stack, tmp_path, *SERIAL, tickets=["P1-004", "P0-001", "P2-003"],
                        allow_intrusive=[])
    for c in result.criteria("P1-004"):
        assert c["outcome"] == "skip", c
        assert "'webhook_e2e'" in c["message"] and "not allowed" in c["message"]
    assert result.status["P1-004"] == "unverified"
    burst = _criterion(result, "P0-001", "Rate limiting answers a bounded burst with 429 and says "
                                         "when to retry")
    assert burst["outcome"] == "skip" and "'rate_limit_burst'" in burst["message"]
    # Without the burst, P2-003 accepts a breach counted earlier, and says so; with none
    # counted yet it skips for the same reason.
    counted = _criterion(result, "P2-003", "rate_limit_breaches_total increases after a breach")
    if counted["outcome"] == "pass":
        found = evidence_value(counted, "breach_found_already")
        assert found["counter_now"] > 0 or any(
            (v or 0) > 0 for k, v in found.items() if k.startswith("prometheus_increase")), found
    else:
        assert counted["outcome"] == "skip" and "'rate_limit_burst'" in counted["message"]


def test_unreachable_service_is_unverified_not_open(stack: StartedStack, tmp_path: Path) -> None:
    def unreachable(env: dict[str, Any]) -> None:
        env["service"]["base_url"] = f"http://127.0.0.1:{free_port()}"

    result = run_verify(env_variant(stack, tmp_path, "unreachable", unreachable), tmp_path,
                        *SERIAL, tickets=EDGE, allow_intrusive=EDGE_PROBES)
    assert {t: result.status[t] for t in EDGE} == dict.fromkeys(EDGE, "unverified"), \
        result.explain(EDGE)
    for ticket in ("P0-001", "P2-002"):
        errors = [c for c in result.criteria(ticket)
                  if c["outcome"] == "error" and "could not be reached" in c["message"]]
        assert errors, result.explain([ticket])
    assert not [c for t in EDGE for c in result.criteria(t) if c["outcome"] == "fail"]


def test_unreachable_receiver_url_is_unverified_not_open(stack: StartedStack,
                                                         tmp_path: Path) -> None:
    def dead_receiver(env: dict[str, Any]) -> None:
        env["webhooks"]["receiver_public_url"] = f"http://127.0.0.1:{free_port()}/hook"

    result = run_verify(env_variant(stack, tmp_path, "dead-receiver", dead_receiver), tmp_path,
                        *SERIAL, tickets=["P1-004"], allow_intrusive=EDGE_PROBES)
    assert result.status["P1-004"] == "unverified", result.explain(["P1-004"])
    delivery = _criterion(result, "P1-004", DELIVERY)
    assert delivery["outcome"] == "error" and "does not reach the receiver" in delivery["message"]


def test_refused_keys_are_unverified_not_open(stack: StartedStack, tmp_path: Path) -> None:
    def wrong_keys(env: dict[str, Any]) -> None:
        env["service"]["api_key"] = "not-a-key-of-this-platform"
        env["service"]["admin_key"] = "not-an-admin-key-either"

    tickets = ["P0-001", "P1-004"]
    result = run_verify(env_variant(stack, tmp_path, "refused", wrong_keys), tmp_path, *SERIAL,
                        tickets=tickets, allow_intrusive=EDGE_PROBES)
    assert {t: result.status[t] for t in tickets} == dict.fromkeys(tickets, "unverified"), \
        result.explain(tickets)
    for ticket, title in [("P0-001", HEADERS), ("P1-004", DELIVERY),
                          ("P0-001", "Rate limiting answers a bounded burst with 429 and says "
                                     "when to retry")]:
        refused = _criterion(result, ticket, title)
        assert refused["outcome"] == "error" and "was refused" in refused["message"], refused
    assert _criterion(result, "P0-001", "/health answers 2xx and reports itself healthy")[
        "outcome"] == "pass"


def test_cors_without_credentials_is_not_applicable_not_open(stack: StartedStack,
                                                            tmp_path: Path) -> None:
    def no_credentials(env: dict[str, Any]) -> None:
        env["cors"]["credentials"] = False

    result = run_verify(env_variant(stack, tmp_path, "no-credentials", no_credentials),
                        tmp_path, *SERIAL, tickets=["P2-002"], allow_intrusive=EDGE_PROBES)
    skipped = _criterion(result, "P2-002", "Access-Control-Allow-Credentials is exactly true")
    assert skipped["outcome"] == "skip" and skipped["skip_kind"] == "not_applicable"
    assert result.status["P2-002"] == "done", result.explain(["P2-002"])


BURST = "Rate limiting answers a bounded burst with 429 and says when to retry"


def test_a_bare_429_is_done_where_the_environment_makes_retry_after_optional(stack: StartedStack,
                                                                             tmp_path: Path) -> None:
    """RFC 6585 lets a 429 omit Retry-After (nginx's and Envoy's defaults do). Required by
    default, and the failure names the key; optional where the environment says so; and a
    Retry-After that is sent is judged either way."""
    def optional(env: dict[str, Any]) -> None:
        env["service"]["rate_limit"]["retry_after_required"] = False

    relaxed = env_variant(stack, tmp_path, "retry-after-optional", optional)
    with stack.fault("retry-after-missing"):
        done = run_verify(relaxed, tmp_path, *SERIAL, tickets=["P0-001"], allow_intrusive=EDGE_PROBES)
        strict = run_verify(stack, tmp_path, *SERIAL, tickets=["P0-001"], allow_intrusive=EDGE_PROBES)
    assert done.status["P0-001"] == "done", done.explain(["P0-001"])
    assert "absent: RFC 6585 makes it optional" in evidence_value(_criterion(done, "P0-001", BURST), "retry_after")
    missing = _criterion(strict, "P0-001", BURST)
    assert missing["outcome"] == "fail" and "carried no Retry-After" in missing["message"]
    assert "service.rate_limit.retry_after_required: false" in missing["message"]

    with stack.fault("retry-after-invalid"):
        invalid = run_verify(relaxed, tmp_path, *SERIAL, tickets=["P0-001"], allow_intrusive=EDGE_PROBES)
    judged = _criterion(invalid, "P0-001", BURST)
    assert judged["outcome"] == "fail" and "neither delay-seconds" in judged["message"], judged
    assert invalid.status["P0-001"] == "open"


HOSTILE = "Hostile and disallowed origins get no Access-Control-Allow-Origin"


def test_a_public_api_is_done_where_the_environment_says_any_origin(stack: StartedStack,
                                                                    tmp_path: Path) -> None:
    """`cors-public` (* for every origin, no credentials) is how a public API does CORS right.
    Done where the environment says so; where it lists the allowed origins, the hostile ones
    let through open P2-002; and a public API that grants a hostile origin credentials opens
    it too."""
    def public(env: dict[str, Any]) -> None:
        env["cors"].update(credentials=False, any_origin=True)

    def allow_list(env: dict[str, Any]) -> None:
        env["cors"]["credentials"] = False

    args = (*SERIAL,)
    with stack.fault("cors-public"):
        done = run_verify(env_variant(stack, tmp_path, "public", public), tmp_path, *args,
                          tickets=["P2-002"], allow_intrusive=EDGE_PROBES)
        listed = run_verify(env_variant(stack, tmp_path, "allow-list", allow_list), tmp_path, *args,
                            tickets=["P2-002"], allow_intrusive=EDGE_PROBES)
    assert done.status["P2-002"] == "done", done.explain(["P2-002"])
    assert evidence_value(_criterion(done, "P2-002", HOSTILE), "cors_exchanges")[0]["allow_origin"] == "*"
    assert listed.status["P2-002"] == "open", listed.explain(["P2-002"])
    refused = _criterion(listed, "P2-002", HOSTILE)
    assert refused["outcome"] == "fail" and "got Access-Control-Allow-Origin '*'" in refused["message"]
    assert "set cors.any_origin: true" in refused["message"]

    # The fault for a public API: a hostile origin granted credentials (reflected, with
    # Access-Control-Allow-Credentials: true).
    with stack.fault("cors-reflect-any"):
        leaky = run_verify(env_variant(stack, tmp_path, "public-leaky", public), tmp_path, *args,
                           tickets=["P2-002"], allow_intrusive=EDGE_PROBES)
    assert leaky.status["P2-002"] == "open", leaky.explain(["P2-002"])
    granted = _criterion(leaky, "P2-002", HOSTILE)
    assert granted["outcome"] == "fail", granted
    assert "got Access-Control-Allow-Credentials 'true'" in granted["message"]
    assert "expected no credentials for any origin" in granted["message"]


def test_the_lenient_settings_leave_an_unreachable_service_unverified(stack: StartedStack,
                                                                     tmp_path: Path) -> None:
    """cors.any_origin and retry_after_required: false relax what is judged, never whether it
    was looked at: an unreachable service is still an error, not a pass."""
    def lenient_and_unreachable(env: dict[str, Any]) -> None:
        env["cors"].update(credentials=False, any_origin=True)
        env["service"]["rate_limit"]["retry_after_required"] = False
        env["service"]["base_url"] = f"http://127.0.0.1:{free_port()}"

    result = run_verify(env_variant(stack, tmp_path, "lenient-unreachable", lenient_and_unreachable),
                        tmp_path, *SERIAL, tickets=["P0-001", "P2-002"], allow_intrusive=EDGE_PROBES)
    for ticket, title in (("P0-001", BURST), ("P2-002", HOSTILE)):
        judged = _criterion(result, ticket, title)
        assert judged["outcome"] == "error" and "could not be reached" in judged["message"], judged
        assert result.status[ticket] == "unverified", result.explain([ticket])


def test_empty_platform_keys_leave_their_criteria_not_covered(stack: StartedStack,
                                                              tmp_path: Path) -> None:
    def forget(env: dict[str, Any]) -> None:
        del env["service"]["security_headers"]["paths"]
        del env["service"]["rate_limit"]["path"]
        env["cors"] = {"allowed_origins": env["cors"]["allowed_origins"]}
        del env["webhooks"]["event_id_field"]

    result = run_verify(env_variant(stack, tmp_path, "forgotten", forget), tmp_path, *SERIAL,
                        tickets=["P0-001", "P2-002", "P1-004"], allow_intrusive=EDGE_PROBES)
    for ticket, title, key in [
        ("P0-001", HEADERS, "service.security_headers.paths"),
        ("P0-001", "Rate limiting answers a bounded burst with 429 and says when to retry",
         "service.rate_limit.path"),
        ("P2-002", "Each allowed origin's preflight answers with an ok status (2xx)", "cors.paths"),
        ("P2-002", "Hostile and disallowed origins get no Access-Control-Allow-Origin",
         "cors.paths"),
        ("P1-004", DELIVERY, "webhooks.event_id_field"),
    ]:
        skipped = _criterion(result, ticket, title)
        assert skipped["outcome"] == "skip" and skipped["skip_kind"] == "not_covered", skipped
        assert f"not configured: {key}" in skipped["message"]
    assert {t: result.status[t] for t in ("P0-001", "P2-002", "P1-004")} == dict.fromkeys(
        ("P0-001", "P2-002", "P1-004"), "unverified"), result.explain()


def test_hex_timestamp_header_is_not_covered(stack: StartedStack, tmp_path: Path) -> None:
    """The stack's X-Webhook-Timestamp is outside the hex signature: a replay can refresh it."""
    def header_only(env: dict[str, Any]) -> None:
        del env["webhooks"]["timestamp_field"]
        env["webhooks"]["timestamp_header"] = "X-Webhook-Timestamp"

    result = run_verify(env_variant(stack, tmp_path, "ts-header", header_only), tmp_path,
                        *SERIAL, tickets=["P1-004"], allow_intrusive=EDGE_PROBES)
    timestamp = _criterion(result, "P1-004", "The delivery's signed timestamp is within the "
                                             "tolerance")
    assert timestamp["outcome"] == "skip" and timestamp["skip_kind"] == "not_covered", timestamp
    assert "not covered by the hex signature" in timestamp["message"]
    assert result.status["P1-004"] == "unverified"


@pytest.mark.parametrize("scheme", ["stripe", "standard-webhooks"])
def test_webhook_scheme_verifies_end_to_end(stack: StartedStack, tmp_path: Path,
                                            scheme: str) -> None:
    """A second service, signing with ``scheme``, next to the stack's (which signs hex)."""
    svc_dir = tmp_path / scheme
    svc_dir.mkdir()
    state = {**stack.state, "settings": {**stack.state["settings"], "webhook_scheme": scheme}}
    state["urls"] = {k: v for k, v in state["urls"].items() if k != "otel_otlp"}
    (svc_dir / "state.json").write_text(json.dumps(state))
    with serve_in_thread(load_settings(svc_dir), free_port()) as url:
        ctx = StackContext(dir=svc_dir, secrets=state["secrets"], urls={"service": url},
                           settings=state["settings"])
        (svc_dir / "env.yaml").write_text(yaml.safe_dump(ServicePart().env_config(ctx)))
        result = run_verify(StartedStack(svc_dir, 0.0, ""), tmp_path, *SERIAL,
                            tickets=["P1-004"],
                            allow_intrusive=["webhook_e2e"])
    assert result.status["P1-004"] == "done", result.explain(["P1-004"])
    timestamp = _criterion(result, "P1-004", "The delivery's signed timestamp is within the "
                                             "tolerance")
    assert timestamp["outcome"] == "pass"
