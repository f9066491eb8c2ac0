"""The observability tickets against the reference stack: done when healthy, open under their
faults, unverified when Prometheus cannot be reached. (The fault matrix checks that the other
tickets stay done.)"""

from __future__ import annotations

import math
from pathlib import Path

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


def test_observability_tickets_done_on_healthy_stack(stack: StartedStack, tmp_path: Path) -> None:
    result = run_verify(stack, tmp_path, *SERIAL, tickets=TICKETS,
                        allow_intrusive=["otel_probe_span", "rate_limit_burst"])
    assert {t: result.status[t] for t in TICKETS} == dict.fromkeys(TICKETS, "done"), \
        result.explain(TICKETS)
    assert _outcomes(result, "P2-001")["test_probe_span_read_back"] == "pass"
    # The SLO table holds real numbers, computed from the running Prometheus.
    slo = next(item for c in result.criteria("P3-001") for item in c["evidence"] if item["kind"] == "table")
    assert slo["note"].startswith("SLO window 30 days")
    rows = {r["slo"]: r for r in slo["rows"]}
    assert set(rows) == {"light endpoint p99 latency", "webhook p95 latency", "error rate",
                         "availability"}
    for name, row in rows.items():
        for column in ("value", "budget_remaining", "burn_rate"):
            assert isinstance(row[column], float | int) and math.isfinite(row[column]), \
                (name, column, row)
        assert isinstance(row["compliant"], bool), row
    assert rows["light endpoint p99 latency"]["value"] > 0
    assert rows["availability"]["value"] == pytest.approx(1.0)


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


def test_prometheus_down_is_unverified(stack: StartedStack, tmp_path: Path) -> None:
    env = yaml.safe_load(stack.env_path.read_text())
    closed = f"http://127.0.0.1:{free_port()}"
    env["prometheus"]["url"] = closed
    copy = tmp_path / "prometheus-down"
    copy.mkdir()
    (copy / "env.yaml").write_text(yaml.safe_dump(env))
    (copy / "env.yaml").chmod(0o600)
    down = StartedStack(dir=copy, up_seconds=0.0, output="")
    needs = ("P0-001", "P2-004", "P3-001", "P3-002")
    result = run_verify(down, tmp_path, *SERIAL, tickets=needs, allow_intrusive=[])
    assert {t: result.status[t] for t in needs} == dict.fromkeys(needs, "unverified"), \
        result.explain(needs)
    errors = [c for t in needs for c in result.criteria(t) if c["outcome"] == "error"]
    assert errors and all(closed in c["message"] for c in errors), result.explain(needs)
    assert not [c for t in needs for c in result.criteria(t) if c["outcome"] == "fail"]
