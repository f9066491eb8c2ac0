"""The observability tickets against the reference stack: the healthy run's evidence, and
unverified when Prometheus cannot be reached. The fault matrix runs each observability fault
and variant once: which tickets open, which criterion fails, what it quotes, and what each
variant's evidence shows."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import StartedStack, VerifyResult, env_variant, evidence_value, run_verify
from opsready_stack.part import free_port

pytestmark = [pytest.mark.stack]

TICKETS = ("P0-001", "P2-001", "P2-004", "P3-001", "P3-002")
SERIAL = ("-n", "0")


def _outcomes(result: VerifyResult, ticket: str) -> dict[str, str]:
    """Test function name -> outcome for one ticket."""
    return {c["id"].split("::")[-1]: c["outcome"] for c in result.criteria(ticket)}


def _evidence(result: VerifyResult, ticket: str, criterion: str, name: str) -> Any:
    for c in result.criteria(ticket):
        if c["id"].split("::")[-1] == criterion:
            return evidence_value(c, name)
    raise AssertionError(f"{ticket} has no criterion {criterion}\n{result.explain([ticket])}")


def test_observability_tickets_done_on_healthy_stack(healthy_run: VerifyResult) -> None:
    result = healthy_run
    assert {t: result.status[t] for t in TICKETS} == dict.fromkeys(TICKETS, "done"), \
        result.explain(TICKETS)
    assert _outcomes(result, "P2-001")["test_probe_span_read_back"] == "pass"
    # One process reads ahead: the traced request went at session start, before the P0 and P1
    # criteria (the rollback drill alone takes over half a second), so its trace was
    # exported while they ran.
    trace = _evidence(result, "P2-001", "test_service_trace", "service_trace")
    assert trace["sent_before_read_back_s"] > 0.3, trace
    assert trace["waited_s"] >= trace["sent_before_read_back_s"], trace
    # The SLO table holds real numbers, computed from the running Prometheus.
    rows = {r["slo"]: r for r in _evidence(result, "P3-001", "test_slis_compute_now",
                                           "slo_table")}
    assert set(rows) == {"light endpoint p99 latency", "webhook p95 latency", "error rate",
                         "availability"}
    for name, row in rows.items():
        for column in ("value", "budget_remaining", "burn_rate"):
            assert isinstance(row[column], float | int) and math.isfinite(row[column]), \
                (name, column, row)
        assert isinstance(row["compliant"], bool), row
        # The stack's Prometheus keeps one day: the budget says it covers that, not 30 days.
        assert (row["window"], row["budget_window"]) == ("30d", "1d"), row
        assert "Prometheus keeps 1d" in row["note"], row
    assert rows["light endpoint p99 latency"]["value"] > 0
    assert rows["availability"]["value"] == pytest.approx(1.0)
    # Every selector of every alert rule was asked, and the 5xx one is exempt by config.
    selectors = _evidence(result, "P0-001", "test_alert_rules_can_fire", "alert_rule_selectors")
    assert {s["rule"] for s in selectors} >= {"ServiceDown", "DBPoolExhausted", "HighErrorRate"}
    exempt = {s["selector"]: s["exempt"] for s in selectors if s["matches"] is None}
    assert "series_may_be_empty" in exempt['http_requests_total{job="relay",status=~"5.."}']


def test_metrics_behind_auth_without_credentials_is_unverified(stack: StartedStack,
                                                                tmp_path: Path) -> None:
    def forget(env: dict[str, Any]) -> None:
        env["service"].pop("metrics_auth")

    bare = env_variant(stack, tmp_path, "no-metrics-auth", forget)
    with stack.fault("metrics-bearer-auth"):
        result = run_verify(bare, tmp_path, *SERIAL, tickets=("P2-003", "P2-004"),
                            allow_intrusive=[])
    assert {t: result.status[t] for t in ("P2-003", "P2-004")} == \
        {"P2-003": "unverified", "P2-004": "unverified"}, result.explain(["P2-003", "P2-004"])
    assert _outcomes(result, "P2-004")["test_pool_gauges_exposed"] == "error"
    assert "service.metrics_auth" in result.explain(["P2-004"])


def test_per_instance_judgement_from_prometheus(stack: StartedStack, tmp_path: Path) -> None:
    """With service.metrics_per_instance the gauges and the counter's type are read per
    instance from Prometheus: done when healthy, open naming the instance under the stub."""

    def behind_a_balancer(env: dict[str, Any]) -> None:
        env["service"]["metrics_per_instance"] = True

    spread = env_variant(stack, tmp_path, "per-instance", behind_a_balancer)
    result = run_verify(spread, tmp_path, *SERIAL, tickets=("P2-003", "P2-004"),
                        allow_intrusive=["rate_limit_burst"])
    assert {t: result.status[t] for t in ("P2-003", "P2-004")} == \
        {"P2-003": "done", "P2-004": "done"}, result.explain(["P2-003", "P2-004"])
    values = _evidence(result, "P2-004", "test_pool_gauges_sane", "pool_gauge_values")
    assert list(values) and all(instance.startswith("127.0.0.1:") for instance in values)
    with stack.fault("pool-gauges-stub"):
        # Prometheus sees the stub at its next scrape.
        time.sleep(2.5)
        result = run_verify(spread, tmp_path, *SERIAL, tickets=("P2-004",), allow_intrusive=[])
    assert result.status["P2-004"] == "open", result.explain(["P2-004"])
    assert "instance 127.0.0.1:" in result.explain(["P2-004"])


def test_a_quiet_sli_window_is_unverified(stack: StartedStack, tmp_path: Path) -> None:
    """A window with no webhook deliveries makes the p95 NaN: not a pass, not a fail."""

    def quiet(env: dict[str, Any]) -> None:
        env["slo"]["current_window"] = "5s"
        env["slo"]["slos"] = [s for s in env["slo"]["slos"] if s["name"] == "webhook p95 latency"]

    quiet_env = env_variant(stack, tmp_path, "quiet", quiet)
    time.sleep(6)
    result = run_verify(quiet_env, tmp_path, *SERIAL, tickets=("P3-001",), allow_intrusive=[])
    assert result.status["P3-001"] == "unverified", result.explain(["P3-001"])
    outcomes = _outcomes(result, "P3-001")
    assert outcomes["test_slis_compute_now"] == "skip", result.explain(["P3-001"])
    assert "quiet window" in result.explain(["P3-001"])


def test_prometheus_down_is_unverified(stack: StartedStack, tmp_path: Path) -> None:
    def close(env: dict[str, Any]) -> None:
        env["prometheus"]["url"] = f"http://127.0.0.1:{free_port()}"

    down = env_variant(stack, tmp_path, "prometheus-down", close)
    needs = ("P0-001", "P2-003", "P2-004", "P3-001", "P3-002")
    result = run_verify(down, tmp_path, *SERIAL, tickets=needs, allow_intrusive=[])
    assert {t: result.status[t] for t in needs} == dict.fromkeys(needs, "unverified"), \
        result.explain(needs)


def test_empty_platform_keys_are_not_covered(stack: StartedStack, tmp_path: Path) -> None:
    """Relay's names live in the environment, not in the code: without them the criteria
    that need them say "not configured" and their tickets are unverified."""

    def blank(env: dict[str, Any]) -> None:
        for key in ("rate_limit_metric", "pool_gauges"):
            env["service"].pop(key)
        env["prometheus"].pop("service_job")
        env["slo"].pop("slos")
        env["runbooks"].pop("paths")

    bare = env_variant(stack, tmp_path, "blank", blank)
    needs = ("P0-001", "P2-003", "P2-004", "P3-001", "P3-002")
    result = run_verify(bare, tmp_path, *SERIAL, tickets=needs, allow_intrusive=[])
    assert {t: result.status[t] for t in needs} == dict.fromkeys(needs, "unverified"), \
        result.explain(needs)
    assert _outcomes(result, "P0-001")["test_service_target_up"] == "skip"
    explained = result.explain(needs)
    for key in ("service.rate_limit_metric", "service.pool_gauges", "prometheus.service_job",
                "slo.slos", "runbooks.paths"):
        assert f"not configured: {key}" in explained, key
    assert _outcomes(result, "P2-004")["test_pool_gauges_exposed"] == "skip"
