"""The fault matrix: each fault of the reference stack turns exactly its tickets open.

The healthy stack is the baseline: every ticket is done and the P0/P1 gate passes. Then, one
fault at a time, the tickets the fault declares must be open and every other ticket done; a
ticket that ends unverified means a check could not judge, which the matrix never accepts.

Each run is the one place its fault is judged on the stack: ``FAULT_FINDINGS`` says which
criterion a fault fails and what its message quotes, ``VARIANT_EVIDENCE`` what a variant's run
must show it judged. After every run no scratch drill database is left and the hostile
backup's command never ran.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conftest import ROOT, StartedStack, VerifyResult, evidence_value, run_verify
from opsready.catalogue import load_catalogue
from opsready.config import INTRUSIVE_PROBES
from opsready.probes.postgres import DRILL_PREFIX
from opsready_stack.orchestrator import all_faults

pytestmark = [pytest.mark.stack]

TICKETS = load_catalogue(ROOT / "config" / "tickets.yaml").ids
FAULTS = all_faults()
# Every intrusive probe runs in every fault run: a ticket whose intrusive criterion is not
# allowed is unverified (not covered), which the matrix never accepts. Carry-forward could
# stand a healthy baseline's drills in for the tickets a fault does not declare, but a fault
# that also broke another ticket's drill would then be hidden by that carried pass, and the
# matrix exists to see exactly that. The probes cost a few seconds per run here, so each run
# judges everything live, with a history of its own (its own tmp_path).
MATRIX_INTRUSIVE = tuple(INTRUSIVE_PROBES)
# One process: the stack is shared and small, and workers would only add start-up time.
SERIAL = ("-n", "0")


def test_catalogue_has_the_eleven_tickets() -> None:
    """The matrix judges all 11 tickets of the audit, P1-004 included."""
    assert len(TICKETS) == 11, TICKETS
    assert "P1-004" in TICKETS


def test_healthy_stack_is_ready(healthy_run: VerifyResult, stack: StartedStack) -> None:
    """Without faults, every ticket is done and the P0/P1 gate passes, drills included."""
    result = healthy_run
    assert result.status == dict.fromkeys(TICKETS, "done"), result.explain()
    assert result.exit_code == 0, result.output[-3000:]
    _judged_live(result)
    _left_clean(stack)


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_opens_exactly_its_tickets(stack: StartedStack, tmp_path: Path, fault: str) -> None:
    """A fault opens exactly its tickets; a variant (a legitimate way to build the platform)
    opens none."""
    opens = FAULTS[fault].tickets
    assert opens or FAULTS[fault].variant, f"fault {fault} declares no ticket"
    assert opens <= set(TICKETS), f"fault {fault} names unknown tickets {opens - set(TICKETS)}"
    with stack.fault(fault):
        result = run_verify(stack, tmp_path, *SERIAL, allow_intrusive=MATRIX_INTRUSIVE)
    expected = {t: "open" if t in opens else "done" for t in TICKETS}
    assert result.status == expected, (
        f"fault {fault} should open exactly {sorted(opens)}\n{result.explain()}"
    )
    _judged_live(result)
    for finding in FAULT_FINDINGS.get(fault, ()):
        finding.check(result, fault)
    for shown in VARIANT_EVIDENCE.get(fault, ()):
        shown.check(result, fault)
    _left_clean(stack)


def test_every_finding_names_a_declared_fault() -> None:
    """The tables below speak only of faults the stack declares, each of the right kind."""
    assert set(FAULT_FINDINGS) <= {n for n, f in FAULTS.items() if not f.variant}, \
        set(FAULT_FINDINGS) - set(FAULTS)
    assert set(VARIANT_EVIDENCE) <= {n for n, f in FAULTS.items() if f.variant}, \
        set(VARIANT_EVIDENCE) - set(FAULTS)
    for fault, findings in FAULT_FINDINGS.items():
        assert {f.ticket for f in findings} <= FAULTS[fault].tickets, fault


def _left_clean(stack: StartedStack) -> None:
    """What no run may leave behind: a scratch drill database, or a trace of the hostile
    backup's shell command."""
    __tracebackhide__ = True
    with psycopg.connect(stack.state["urls"]["postgres_dsn"], connect_timeout=5) as conn:
        left = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                            (DRILL_PREFIX.replace("_", r"\_") + "%",)).fetchall()
    assert not left, f"scratch drill databases left behind: {[r[0] for r in left]}"
    assert not (stack.dir / "hostile-backup-ran").exists(), "the hostile backup's command ran"


def _criterion(result: VerifyResult, ticket: str, key: str) -> dict[str, Any]:
    """The criterion of ``ticket`` whose function name is ``key`` or whose title starts with it."""
    for c in result.criteria(ticket):
        if c["id"].split("::", 1)[1] == key or c["title"].startswith(key):
            return c
    raise AssertionError(f"{ticket} has no criterion {key!r}: {result.explain([ticket])}")


@dataclass(frozen=True)
class Fails:
    """Under the fault, this criterion fails and its message quotes ``fragment``."""

    ticket: str
    criterion: str
    fragment: str = ""

    def check(self, result: VerifyResult, fault: str) -> None:
        __tracebackhide__ = True
        found = _criterion(result, self.ticket, self.criterion)
        assert found["outcome"] == "fail", (fault, result.explain([self.ticket]))
        assert self.fragment in (found.get("message") or ""), (fault, found.get("message"))


@dataclass(frozen=True)
class Shows:
    """Under the variant, this criterion's evidence ``name`` shows the variant was judged."""

    ticket: str
    criterion: str
    name: str
    holds: Callable[[Any], bool]

    def check(self, result: VerifyResult, fault: str) -> None:
        __tracebackhide__ = True
        value = evidence_value(_criterion(result, self.ticket, self.criterion), self.name)
        assert self.holds(value), (fault, value)


HEADERS = "The security headers meet the configured policy on every configured path"
DELIVERY = "A real receiver gets the triggered event within the delivery timeout"
BURST = "Rate limiting answers a bounded burst with 429 and says when to retry"
HOSTILE = "Hostile and disallowed origins get no Access-Control-Allow-Origin"
RPO = "The latest backup is younger than the RPO"
SIDECAR = "The latest backup matches its sha256 sidecar"
WHOLE = "The latest backup is a whole, valid dump"
DRILL = "A drill restores"

FAULT_FINDINGS: dict[str, tuple[Fails | Shows, ...]] = {
    # data
    "stale-backup": (Fails("P1-002", RPO, "h old"),),
    "only-other-backups-fresh": (Fails("P1-002", RPO, "/relay.dump: the newest backup is"),),
    "corrupt-backup": (Fails("P1-002", SIDECAR, "the sidecar says"),),
    "sidecar-wrong-name": (Fails("P1-002", SIDECAR, "names ['analytics.dump'], not relay.dump"),),
    "sidecar-no-digest": (Fails("P1-002", SIDECAR, "holds no sha256 digest"),),
    "truncated-backup": (Fails("P1-002", WHOLE, "could not read the archive to its end after"),
                         Fails("P1-002", DRILL, "pg_restore exited with 1 after reading")),
    "hostile-backup": (Fails("P1-002", WHOLE, "line 11: the psql meta-command `\\!`"),
                       Fails("P1-002", DRILL, "nothing was run (psql never started)")),
    "duplicate-key-backup": (Fails("P1-002", DRILL, "psql (ON_ERROR_STOP) exited with 3"),
                             Fails("P1-002", DRILL, "is duplicated")),
    "schema-only-backup": (Fails("P1-002", DRILL, "a schema-only dump"),),
    "backup-from-staging": (Fails("P1-002", DRILL, "rows restored but 2000 in the live source"),),
    "no-drill-schedule": (Fails("P1-002", "A restore drill is scheduled monthly"),),
    "drill-record-failed": (Fails("P1-002", "test_restore_drill_scheduled"),
                            Shows("P1-002", "test_restore_drill_scheduled", "drill_schedule",
                                  lambda v: v["drill_record"]["outcome"] == "failed")),
    "versioning-off": (Fails("P3-003", "Versioning is Enabled", "Suspended"),),
    "short-retention": (Fails("P3-003", "Backups are kept at least the retention",
                              "['backups-30-days'] apply to"),),
    "no-default-encryption": (Fails("P3-003", "Default encryption", "expected AES256"),),
    "backups-deleted-early": (Fails("P3-003", "Daily backups accumulate", "20 of the last 30 days"),
                              Fails("P3-003", "The oldest backup is as old as the claimed",
                                    "backups are deleted before their time")),
    # edge
    "cors-wildcard": (Fails("P2-002", "Access-Control-Allow-Origin equals the origin, never * with "
                                      "credentials", "'*'"),),
    "cors-reflect-any": (Fails("P2-002", HOSTILE, "[prefix of https://relay-studio-one.vercel.app]"),),
    "cors-startswith-match": (Fails("P2-002", HOSTILE,
                                    "[suffix of https://relay-studio-one.vercel.app]"),),
    "cors-credentials-casing": (Fails("P2-002", "Access-Control-Allow-Credentials is exactly true",
                                      "'True'"),),
    "cors-max-age-zero": (Fails("P2-002", "Access-Control-Max-Age is at least the configured minimum",
                                "'0'"),),
    "cors-methods-safelisted-only": (Fails("P2-002", "Every configured method is allowed: listed, or "
                                                     "CORS-safelisted", "DELETE not in"),),
    "cors-actual-no-vary": (Fails("P2-002", "The actual request from each allowed origin carries "
                                            "ACAO, ACAC and Vary: Origin", "Vary was None"),),
    "no-hsts": (Fails("P0-001", HEADERS, "no Strict-Transport-Security"),),
    "hsts-short": (Fails("P0-001", HEADERS, "max-age 86400 is below 31536000"),),
    "csp-unsafe-inline": (Fails("P0-001", HEADERS, "script-src allows 'unsafe-inline'"),),
    "referrer-unsafe-url": (Fails("P0-001", HEADERS, "'unsafe-url'"),),
    "health-reports-fail": (Fails("P0-001", "/health answers 2xx and reports itself healthy",
                                  "'fail'"),),
    "retry-after-invalid": (Fails("P0-001", BURST, "Retry-After '0."),),
    "bad-signature": (Fails("P1-004", "The signature verifies over the raw body with the configured "
                                      "scheme and secret", "does not match"),),
    "webhook-wrong-event": (Fails("P1-004", DELIVERY, "1 other delivery arrived"),),
    "webhook-stale-timestamp": (Fails("P1-004", "The delivery's signed timestamp is within the "
                                                "tolerance", "beyond the tolerance"),),
    "no-breach-metric": (Fails("P2-003", "/metrics exposes rate_limit_breaches_total as a counter"),),
    # observability
    "rules-not-loaded": (Fails("P0-001", "test_alert_rules_loaded"),
                         Fails("P2-004", "test_pool_alert_uses_gauges"),
                         Fails("P3-002", "test_alert_runbook_links_resolve")),
    "dashboard-missing": (Fails("P0-001", "test_grafana_dashboards_present"),),
    "collector-down": (Fails("P2-001", "test_collector_healthy"),),
    "no-slo-rules": (Fails("P3-001", "test_slo_recording_rules_loaded"),
                     Fails("P0-001", "test_alert_rules_can_fire", "slo:http_error_ratio:")),
    "alert-without-runbook": (Fails("P3-002", "test_alert_runbook_links_resolve"),),
    "alert-never-fires": (Fails("P0-001", "test_alert_rules_can_fire",
                                'HighErrorRate: http_request_total{job="relay"}'),),
    "dashboard-datasource-unresolved": (Fails("P0-001", "test_grafana_dashboards_render",
                                              "relay-slo: panel"),),
    "datasource-deleted": (Fails("P0-001", "test_grafana_dashboards_render", "-> uid prometheus"),),
    "breach-metric-gauge": (Fails("P2-003", "test_breach_counter_exposed", "is a gauge"),),
    "pool-alert-wrong-gauges": (Fails("P2-004", "test_pool_alert_uses_gauges",
                                      "DBPoolExhausted does not select"),),
    "pool-gauges-stub": (Fails("P2-004", "test_pool_gauges_sane", "all 4 gauges read 0"),),
    "slo-rule-no-series": (Fails("P3-001", "test_slo_recording_rules_produce_series",
                                 "slo:webhook_latency_seconds:p95_5m: webhook_delivery_seconds_bucket"),),
    "runbook-sections-empty": (Fails("P3-002", "test_runbook_sections", "outage.md: Symptoms (1 words)"),),
}


def _release_branch_runbooks(links: dict[str, Any]) -> bool:
    moved = {name: v for name, v in links.items() if name != "CriticalAlertFiringLong"}
    return len(moved) == 8 and all("/blob/release/2024.06/docs/runbooks/" in v["runbook_url"]
                                   and v["resolves"] for v in moved.values())


VARIANT_EVIDENCE: dict[str, tuple[Shows, ...]] = {
    # data
    "backup-extras": (Shows("P1-002", "The latest backup is younger", "latest_backup",
                            lambda v: v["key"].endswith("/relay.dump")),),
    "sidecar-bsd-tag": (Shows("P1-002", "The latest backup matches", "sidecar",
                              lambda v: v["names"] == ["relay.dump"]),),
    "plain-sql-backup": (Shows("P1-002", DRILL, "drill",
                               lambda v: v["format"] == "plain" and v["compressed"]
                               and v["psql_restricted_mode"] is True and v["tolerated"]),),
    "tar-backup": (Shows("P1-002", "The latest backup is a whole", "dump",
                         lambda v: v["format"] == "tar" and v["table_data_entries"] == 4),),
    "directory-backup": (Shows("P1-002", DRILL, "drill", lambda v: v["format"] == "directory"),),
    "source-grew": (Shows("P1-002", DRILL, "drill",
                          lambda v: v["source_rows"]["audit_logs"] > v["rows"]["audit_logs"]),),
    "keep-forever": (Shows("P3-003", "Backups are kept", "retention", lambda v: v["rules"] is None),),
    "tag-filtered-expiry": (Shows("P3-003", "Backups are kept", "retention",
                                  lambda v: [r["applies_to_backups"] for r in v["rules"]]
                                  == [True, False]),),
    "object-lock-retention": (Shows("P3-003", "Backups are kept", "retention",
                                    lambda v: v["object_lock"]["days"] == 400
                                    and v["effective_retention_days"] == 30),),
    "kms-encryption": (Shows("P3-003", "Default encryption", "default_encryption",
                             lambda v: v[0]["algorithm"] == "aws:kms"),),
    # edge
    "retry-after-http-date": (Shows("P0-001", BURST, "burst",
                                    lambda v: v["retry_after"]["form"] == "http-date"),),
    "ratelimit-fields": (Shows("P0-001", BURST, "burst",
                               lambda v: v["retry_after"] is None
                               and v["ratelimit_fields"]["syntax"].startswith("RateLimit list")
                               and v["ratelimit_fields"]["wait_s"] >= 1),),
    "cors-preflight-204": (Shows("P2-002", "Each allowed origin's preflight answers with an ok "
                                           "status (2xx)", "cors_exchanges",
                                 lambda rows: {r["status"] for r in rows} == {204}),),
    # observability
    "metrics-openmetrics": (Shows("P2-003", "test_breach_counter_exposed", "breach_metric",
                                  lambda v: (v["format"], v["type"]) == ("openmetrics", "counter")),),
    "runbook-links-release-branch": (Shows("P3-002", "test_alert_runbook_links_resolve",
                                           "runbook_links", _release_branch_runbooks),),
    "other-team-rules": (Shows("P3-002", "test_alert_runbook_links_resolve", "runbook_links",
                               lambda links: "LedgerReplicationLagHigh" not in links),),
    "alert-on-alerts": (Shows("P0-001", "test_alert_rules_can_fire", "alert_rule_selectors",
                              lambda sel: bool(meta := [s for s in sel if s["rule"] == "CriticalAlertFiringLong"])
                              and all(s["matches"] is None for s in meta)),),
    "dashboard-datasource-by-name": (Shows("P0-001", "test_grafana_dashboards_render", "panel_datasources",
                                           lambda panels: {p["ref"] for p in panels}
                                           == {"name 'Prometheus'", "uid ${datasource}"}),),
    # delivery
    "docs-commit-after-deploy": (Shows("P0-001", "test_deployed_version_is_main_head", "versions",
                                       lambda v: v["main_head"] != v["deployed"]
                                       and v["files_that_deploy"] == []),),
    "rollback-shell-script": (Shows("P1-003", "test_rollback_script_calls_api", "rollback_script",
                                    lambda v: v["language"] == "shell" and len(v["calls"]) == 1),),
    "railway-app-sleeping": (Shows("P1-003", "test_rollback_drill", "rollback_drill",
                                   lambda v: v["original_deployment"]["status"] == "SLEEPING"),),
    "railway-image-source": (Shows("P1-003", "test_rollback_drill", "rollback_drill",
                                   lambda v: v["rollback_target"]["source"].startswith("image ")),),
}


def _judged_live(result: VerifyResult) -> None:
    """Every verdict of a matrix run comes from this run, never from an earlier one."""
    __tracebackhide__ = True
    carried = [c["id"] for t in TICKETS for c in result.criteria(t) if c.get("carried_forward")]
    assert not carried, f"carried forward from an earlier run, not judged under the fault: {carried}"
