"""The observability tickets against the reference stack: done when healthy, open under their
faults, unverified when Prometheus cannot be reached. (The fault matrix checks that the other
tickets stay done.)"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import StartedStack, VerifyResult, run_verify
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
            for item in c["evidence"]:
                if item.get("name") == name:
                    # A table carries its rows; every other kind of evidence its value.
                    return item.get("rows") if item.get("kind") == "table" else item.get("value")
    raise AssertionError(f"{ticket} {criterion} recorded no {name}\n{result.explain([ticket])}")


def _env_copy(stack: StartedStack, tmp_path: Path, name: str,
              change: Callable[[dict[str, Any]], None]) -> StartedStack:
    """The stack's environment with ``change`` applied, as a stack to run verify against."""
    env = yaml.safe_load(stack.env_path.read_text())
    change(env)
    copy = tmp_path / name
    copy.mkdir()
    (copy / "env.yaml").write_text(yaml.safe_dump(env))
    (copy / "env.yaml").chmod(0o600)
    return StartedStack(dir=copy, up_seconds=0.0, output="")


def test_observability_tickets_done_on_healthy_stack(stack: StartedStack, tmp_path: Path) -> None:
    result = run_verify(stack, tmp_path, *SERIAL, tickets=TICKETS,
                        allow_intrusive=["otel_probe_span", "rate_limit_burst"])
    assert {t: result.status[t] for t in TICKETS} == dict.fromkeys(TICKETS, "done"), \
        result.explain(TICKETS)
    assert _outcomes(result, "P2-001")["test_probe_span_read_back"] == "pass"
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


@pytest.mark.parametrize(("fault", "failing"), [
    ("rules-not-loaded", {"P0-001": "test_alert_rules_loaded",
                          "P2-004": "test_pool_alert_uses_gauges",
                          "P3-002": "test_alert_runbook_links_resolve"}),
    ("dashboard-missing", {"P0-001": "test_grafana_dashboards_present"}),
    ("collector-down", {"P2-001": "test_collector_healthy"}),
    ("no-slo-rules", {"P3-001": "test_slo_recording_rules_loaded"}),
    ("alert-without-runbook", {"P3-002": "test_alert_runbook_links_resolve"}),
])
def test_fault_opens_its_tickets(stack: StartedStack, tmp_path: Path, fault: str,
                                 failing: dict[str, str]) -> None:
    with stack.fault(fault):
        result = run_verify(stack, tmp_path, *SERIAL, tickets=list(failing),
                            allow_intrusive=["otel_probe_span"])
    assert {t: result.status[t] for t in failing} == dict.fromkeys(failing, "open"), \
        result.explain(failing)
    for ticket, criterion in failing.items():
        assert _outcomes(result, ticket)[criterion] == "fail", result.explain([ticket])


# Faults that break one criterion each, on different criteria, so one run can show them all
# (the fault matrix runs each alone against every ticket): fault -> (ticket, criterion, what
# the failure names).
CRITERION_FAULTS = {
    "alert-never-fires": ("P0-001", "test_alert_rules_can_fire",
                          'HighErrorRate: http_request_total{job="relay"}'),
    "dashboard-datasource-unresolved": ("P0-001", "test_grafana_dashboards_render",
                                        "relay-slo: panel"),
    "datasource-deleted": ("P0-001", "test_grafana_dashboards_render", "-> uid prometheus"),
    "breach-metric-gauge": ("P2-003", "test_breach_counter_exposed", "is a gauge"),
    "pool-alert-wrong-gauges": ("P2-004", "test_pool_alert_uses_gauges",
                                "DBPoolExhausted does not select"),
    "pool-gauges-stub": ("P2-004", "test_pool_gauges_sane", "all 4 gauges read 0"),
    "slo-rule-no-series": ("P3-001", "test_slo_recording_rules_produce_series",
                           "slo:webhook_latency_seconds:p95_5m: webhook_delivery_seconds_bucket"),
    "runbook-sections-empty": ("P3-002", "test_runbook_sections", "outage.md: Symptoms (1 words)"),
}


def test_each_fault_fails_its_own_criterion(stack: StartedStack, tmp_path: Path) -> None:
    tickets = sorted({t for t, _, _ in CRITERION_FAULTS.values()})
    with contextlib.ExitStack() as faults:
        for fault in CRITERION_FAULTS:
            faults.enter_context(stack.fault(fault))
        result = run_verify(stack, tmp_path, *SERIAL, tickets=tickets, allow_intrusive=[])
    for fault, (ticket, criterion, named) in CRITERION_FAULTS.items():
        found = next(c for c in result.criteria(ticket) if c["id"].endswith(f"::{criterion}"))
        assert found["outcome"] == "fail", (fault, result.explain([ticket]))
        assert named in (found.get("message") or ""), (fault, found.get("message"))


VARIANTS = ("metrics-openmetrics", "metrics-bearer-auth", "other-team-rules",
            "runbook-links-templated", "alert-on-alerts", "dashboard-datasource-by-name")


def test_variants_keep_their_tickets_done(stack: StartedStack, tmp_path: Path) -> None:
    """Every observability variant at once (the fault matrix runs each alone): the tickets
    stay done, and the evidence shows the variant was really judged."""
    tickets = ("P0-001", "P2-003", "P2-004", "P3-001", "P3-002")
    with contextlib.ExitStack() as variants:
        for variant in VARIANTS:
            variants.enter_context(stack.fault(variant))
        result = run_verify(stack, tmp_path, *SERIAL, tickets=tickets,
                            allow_intrusive=["rate_limit_burst"])
    assert {t: result.status[t] for t in tickets} == dict.fromkeys(tickets, "done"), \
        result.explain(tickets)
    seen = _evidence(result, "P2-003", "test_breach_counter_exposed", "breach_metric")
    assert (seen["format"], seen["type"]) == ("openmetrics", "counter"), seen
    links = _evidence(result, "P3-002", "test_alert_runbook_links_resolve", "runbook_links")
    templated = {name: v for name, v in links.items() if name != "CriticalAlertFiringLong"}
    assert len(templated) == 8 and all(
        "/blob/release/2024.06/docs/runbooks/" in v["runbook_url"] and v["resolves"]
        for v in templated.values()), links
    assert "LedgerReplicationLagHigh" not in links
    selectors = _evidence(result, "P0-001", "test_alert_rules_can_fire", "alert_rule_selectors")
    meta = [s for s in selectors if s["rule"] == "CriticalAlertFiringLong"]
    assert meta and all(s["matches"] is None for s in meta), meta
    panels = _evidence(result, "P0-001", "test_grafana_dashboards_render", "panel_datasources")
    assert {p["ref"] for p in panels} == {"name 'Prometheus'", "uid ${datasource}"}, panels


def test_metrics_behind_auth_without_credentials_is_unverified(stack: StartedStack,
                                                                tmp_path: Path) -> None:
    def forget(env: dict[str, Any]) -> None:
        env["service"].pop("metrics_auth")

    bare = _env_copy(stack, tmp_path, "no-metrics-auth", forget)
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

    spread = _env_copy(stack, tmp_path, "per-instance", behind_a_balancer)
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

    quiet_env = _env_copy(stack, tmp_path, "quiet", quiet)
    time.sleep(6)
    result = run_verify(quiet_env, tmp_path, *SERIAL, tickets=("P3-001",), allow_intrusive=[])
    assert result.status["P3-001"] == "unverified", result.explain(["P3-001"])
    outcomes = _outcomes(result, "P3-001")
    assert outcomes["test_slis_compute_now"] == "skip", result.explain(["P3-001"])
    assert "quiet window" in result.explain(["P3-001"])


def test_prometheus_down_is_unverified(stack: StartedStack, tmp_path: Path) -> None:
    def close(env: dict[str, Any]) -> None:
        env["prometheus"]["url"] = f"http://127.0.0.1:{free_port()}"

    down = _env_copy(stack, tmp_path, "prometheus-down", close)
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

    bare = _env_copy(stack, tmp_path, "blank", blank)
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
