"""P0-001 (delivery), P1-002 (drill schedule), P1-003 and P3-001 (report job) end to end against
the reference stack's GitHub, Railway and S3: the healthy run's evidence, keys left empty, and
the APIs refusing or unreachable.

Each fault is proven criterion by criterion in test_delivery_checks.py (against the same fakes,
in process) and, with each variant, once in the fault matrix against every ticket."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import StartedStack, VerifyResult, run_verify
from opsready.probes._http import HttpTarget
from opsready_stack.part import free_port

pytestmark = [pytest.mark.stack]

DELIVERY = ("test_prs_merged", "test_secrets_exist", "test_workflows_active_and_green",
            "test_deployed_version_is_main_head")
# One process: a handful of criteria, where workers would only add start-up time.
SERIAL = ("-n", "0")
ROLLBACK = ("test_token_accepted", "test_previous_deployment_can_roll_back",
            "test_rollback_script_calls_api", "test_rollback_drill")
GITHUB_READS = (*DELIVERY, "test_slo_report_job_recent", "test_restore_drill_scheduled",
                "test_rollback_script_calls_api")


def outcomes(result: VerifyResult, ticket: str) -> dict[str, str]:
    """Criterion function name -> outcome."""
    return {c["id"].split("::", 1)[1]: c["outcome"] for c in result.criteria(ticket)}


def criterion(result: VerifyResult, ticket: str, name: str) -> dict[str, Any]:
    for c in result.criteria(ticket):
        if c["id"].split("::", 1)[1] == name:
            return c
    raise AssertionError(f"{ticket}::{name} is not in the report\n{result.explain()}")


def evidence(c: dict[str, Any], name: str) -> Any:
    for item in c.get("evidence") or []:
        if item.get("name") == name:
            return item.get("value")
    raise AssertionError(f"{c['id']} recorded no evidence {name!r}: {c.get('evidence')}")


def with_env(stack: StartedStack, tmp_path: Path, section: str, **changes: Any) -> StartedStack:
    """A view of the stack whose env.yaml has ``section`` changed (the stack itself is shared)."""
    config = yaml.safe_load(stack.env_path.read_text())
    config[section].update(changes)
    copy = tmp_path / f"env-{section}-{len(list(tmp_path.glob('env-*')))}"
    copy.mkdir()
    (copy / "env.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (copy / "env.yaml").chmod(0o600)  # it holds the stack's other secrets
    return StartedStack(dir=copy, up_seconds=0.0, output="")


def test_healthy_stack_delivery_and_rollback_are_done(stack: StartedStack,
                                                      healthy_run: VerifyResult) -> None:
    result = healthy_run
    delivery = outcomes(result, "P0-001")
    assert {name: delivery.get(name) for name in DELIVERY} == dict.fromkeys(DELIVERY, "pass"), \
        result.explain(["P0-001"])
    assert outcomes(result, "P1-003") == dict.fromkeys(ROLLBACK, "pass"), result.explain(["P1-003"])
    assert result.status["P1-003"] == "done"
    # With the edge and observability checks in place too, P0-001 as a whole is done.
    assert result.status["P0-001"] == "done", result.explain(["P0-001"])
    assert outcomes(result, "P3-001")["test_slo_report_job_recent"] == "pass"

    prs = evidence(criterion(result, "P0-001", "test_prs_merged"), "pull_requests")
    assert all(pr["merged"] is True and pr["merged_at"] and pr["merge_commit_sha"]
               for pr in prs.values()), prs
    versions = evidence(criterion(result, "P0-001", "test_deployed_version_is_main_head"),
                        "versions")
    assert versions["deployed"] == versions["main_head"] == stack.state["settings"]["git_sha"]
    secrets = evidence(criterion(result, "P0-001", "test_secrets_exist"), "secrets")
    assert set(secrets["found"]) == {"RAILWAY_TOKEN", "DATABASE_PUBLIC_URL", "ADMIN_KEY",
                                     "DEV_KEY"}

    target = evidence(criterion(result, "P1-003", "test_previous_deployment_can_roll_back"),
                      "rollback_target")
    # Superseded deployments are REMOVED on Railway, and stay rollback-able.
    assert target["status"] == "REMOVED" and target["canRollback"] is True
    assert target["source"].startswith("commit ") and target["age_hours"] >= 0
    drill = evidence(criterion(result, "P1-003", "test_rollback_drill"), "rollback_drill")
    timeout = yaml.safe_load(stack.env_path.read_text())["railway"]["drill_timeout_s"]
    assert 0 < drill["rollback_seconds"] <= timeout
    assert 0 < drill["roll_forward_seconds"] <= timeout
    assert drill["active_after_rollback"]["source"] == drill["rollback_target"]["source"]
    assert drill["active_after_roll_forward"]["source"] == drill["original_deployment"]["source"]
    assert drill["active_after_roll_forward"]["id"] != drill["original_deployment"]["id"]


def test_an_org_secret_outside_the_allowed_scopes_is_named(stack: StartedStack,
                                                           tmp_path: Path) -> None:
    narrow = with_env(stack, tmp_path, "github", secret_scopes=["repository", "environment"])
    with stack.fault("secrets-across-scopes"):
        result = run_verify(narrow, tmp_path, *SERIAL, tickets=["P0-001"], allow_intrusive=[])
    c = criterion(result, "P0-001", "test_secrets_exist")
    assert c["outcome"] == "fail", result.explain(["P0-001"])
    assert "DATABASE_PUBLIC_URL (only at organization)" in c["message"]


def test_rollback_drill_not_covered_when_not_allowed(stack: StartedStack, tmp_path: Path) -> None:
    result = run_verify(stack, tmp_path, *SERIAL, tickets=["P1-003"], allow_intrusive=[])
    drill = criterion(result, "P1-003", "test_rollback_drill")
    assert (drill["outcome"], drill["skip_kind"]) == ("skip", "not_covered")
    assert "rollback_drill" in drill["message"] and "not allowed" in drill["message"]
    # The read-only criteria pass, but a drill that never ran keeps the ticket from done.
    others = {k: v for k, v in outcomes(result, "P1-003").items() if k != "test_rollback_drill"}
    assert set(others.values()) == {"pass"}, result.explain(["P1-003"])
    ticket = next(t for t in result.readiness["tickets"] if t["id"] == "P1-003")
    assert ticket["status"] == "unverified"
    assert any("rollback_drill" in line for line in ticket["not_checked"]), ticket


def test_empty_keys_leave_their_criteria_not_covered(stack: StartedStack, tmp_path: Path) -> None:
    bare = with_env(stack, tmp_path, "github", prs=[], secrets=[], backup_workflow="",
                    slo_report_workflow="", rollback_script="", rollback_workflow="")
    result = run_verify(bare, tmp_path, *SERIAL, tickets=["P0-001", "P1-003", "P3-001"],
                        allow_intrusive=[])
    for ticket, name in (("P0-001", "test_prs_merged"), ("P0-001", "test_secrets_exist"),
                         ("P0-001", "test_workflows_active_and_green"),
                         ("P1-003", "test_rollback_script_calls_api"),
                         ("P3-001", "test_slo_report_job_recent")):
        c = criterion(result, ticket, name)
        assert (c["outcome"], c.get("skip_kind")) == ("skip", "not_covered"), c
        assert "not configured: github." in c["message"], c
    assert {result.status[t] for t in ("P0-001", "P1-003", "P3-001")} == {"unverified"}


def test_refused_github_token_gives_unverified(stack: StartedStack, tmp_path: Path) -> None:
    wrong = with_env(stack, tmp_path, "github", token="not-the-token-0123456789")
    result = run_verify(wrong, tmp_path, *SERIAL, tickets=["P0-001", "P1-003", "P3-001"],
                        allow_intrusive=[])
    assert result.status["P0-001"] == "unverified", result.explain(["P0-001"])
    assert result.status["P3-001"] == "unverified", result.explain(["P3-001"])
    for ticket, name in [("P0-001", n) for n in DELIVERY] + [
            ("P1-003", "test_rollback_script_calls_api"), ("P3-001", "test_slo_report_job_recent")]:
        c = criterion(result, ticket, name)
        assert c["outcome"] == "error", c
        assert "401" in c["message"], c
        assert "not-the-token-0123456789" not in c["message"]


def test_unreachable_github_gives_unverified(stack: StartedStack, tmp_path: Path) -> None:
    gone = with_env(stack, tmp_path, "github", api_url=f"http://127.0.0.1:{free_port()}")
    result = run_verify(gone, tmp_path, *SERIAL, tickets=["P0-001", "P1-003", "P3-001"],
                        allow_intrusive=[])
    for ticket, name in [("P0-001", n) for n in DELIVERY] + [
            ("P1-003", "test_rollback_script_calls_api"), ("P3-001", "test_slo_report_job_recent")]:
        c = criterion(result, ticket, name)
        assert c["outcome"] == "error" and "could not be reached" in c["message"], c
    assert {result.status[t] for t in ("P0-001", "P1-003", "P3-001")} == {"unverified"}


def test_refused_railway_token_gives_unverified(stack: StartedStack, tmp_path: Path) -> None:
    wrong = with_env(stack, tmp_path, "railway", token="not-the-token-0123456789")
    result = run_verify(wrong, tmp_path, *SERIAL, tickets=["P1-003"], allow_intrusive=["rollback_drill"])
    assert result.status["P1-003"] == "unverified", result.explain(["P1-003"])
    for name in ("test_token_accepted", "test_previous_deployment_can_roll_back",
                 "test_rollback_drill"):
        c = criterion(result, "P1-003", name)
        assert c["outcome"] == "error", c
        assert "Not Authorized" in c["message"], c
    # The script is read from GitHub, which still accepts its token.
    assert criterion(result, "P1-003", "test_rollback_script_calls_api")["outcome"] == "pass"


def test_unreachable_railway_gives_unverified(stack: StartedStack, tmp_path: Path) -> None:
    gone = with_env(stack, tmp_path, "railway",
                    api_url=f"http://127.0.0.1:{free_port()}/graphql/v2")
    result = run_verify(gone, tmp_path, *SERIAL, tickets=["P1-003"],
                        allow_intrusive=["rollback_drill"])
    assert result.status["P1-003"] == "unverified", result.explain(["P1-003"])
    for name in ("test_token_accepted", "test_previous_deployment_can_roll_back",
                 "test_rollback_drill"):
        c = criterion(result, "P1-003", name)
        assert c["outcome"] == "error" and "could not be reached" in c["message"], c


def test_the_stack_leaves_the_service_on_its_code_after_the_drills(stack: StartedStack) -> None:
    """Every drill of the session rolled forward: the active deployment runs main's commit."""
    env = yaml.safe_load(stack.env_path.read_text())["railway"]
    query = ("query($e: String!, $s: String!) { serviceInstance(environmentId: $e, "
             "serviceId: $s) { latestDeployment { status meta } } }")
    with HttpTarget("railway", env["api_url"], timeout=5,
                    headers={"Project-Access-Token": env["token"]}) as railway:
        body = railway.request("POST", env["api_url"], json={
            "query": query, "variables": {"e": env["environment_id"], "s": env["service_id"]}}
        ).json()
    latest = body["data"]["serviceInstance"]["latestDeployment"]
    assert latest["status"] == "SUCCESS"
    assert latest["meta"]["commitHash"] == stack.state["settings"]["git_sha"]
