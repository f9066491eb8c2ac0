"""P0-001 (delivery) and P1-003 against the reference stack's GitHub and Railway fakes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import StartedStack, VerifyResult, run_verify

pytestmark = [pytest.mark.stack]

DELIVERY = ("test_prs_merged", "test_secrets_exist", "test_workflows_active_and_green",
            "test_deployed_version_is_main_head")
# One process: a handful of criteria, where workers would only add start-up time.
SERIAL = ("-n", "0")
ROLLBACK = ("test_token_accepted", "test_previous_deployment_can_roll_back",
            "test_rollback_script_calls_api", "test_rollback_drill")


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
    copy = tmp_path / f"env-{section}"
    copy.mkdir()
    (copy / "env.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (copy / "env.yaml").chmod(0o600)  # it holds the stack's other secrets
    return StartedStack(dir=copy, up_seconds=0.0, output="")


def test_healthy_stack_delivery_and_rollback_are_done(stack: StartedStack, tmp_path: Path) -> None:
    result = run_verify(stack, tmp_path, *SERIAL, tickets=["P0-001", "P1-003"],
                        allow_intrusive=["rollback_drill", "rate_limit_burst"])
    delivery = outcomes(result, "P0-001")
    assert {name: delivery.get(name) for name in DELIVERY} == dict.fromkeys(DELIVERY, "pass"), \
        result.explain(["P0-001"])
    assert outcomes(result, "P1-003") == dict.fromkeys(ROLLBACK, "pass"), result.explain(["P1-003"])
    assert result.status["P1-003"] == "done"
    # With the edge and observability checks in place too, P0-001 as a whole is done.
    assert result.status["P0-001"] == "done", result.explain(["P0-001"])

    prs = evidence(criterion(result, "P0-001", "test_prs_merged"), "pull_requests")
    assert all(pr["merged"] is True and pr["merged_at"] and pr["merge_commit_sha"]
               for pr in prs.values()), prs
    versions = evidence(criterion(result, "P0-001", "test_deployed_version_is_main_head"),
                        "versions")
    assert versions["deployed"] == stack.state["settings"]["git_sha"]

    target = evidence(criterion(result, "P1-003", "test_previous_deployment_can_roll_back"),
                      "rollback_target")
    # Another drill earlier in the session may have made its own deployment the previous one.
    assert target["id"] and isinstance(target["age_hours"], int | float) and target["age_hours"] >= 0
    drill = evidence(criterion(result, "P1-003", "test_rollback_drill"), "rollback_drill")
    timeout = yaml.safe_load(stack.env_path.read_text())["railway"]["drill_timeout_s"]
    assert 0 < drill["rollback_seconds"] <= timeout
    assert 0 < drill["roll_forward_seconds"] <= timeout
    assert drill["active_after_rollback"] not in (None, drill["original_deployment"])
    assert drill["active_after_redeploy"] not in (None, drill["active_after_rollback"])


@pytest.mark.parametrize(("fault", "ticket", "failing"), [
    ("pr-unmerged", "P0-001", "test_prs_merged"),
    ("secret-missing", "P0-001", "test_secrets_exist"),
    ("no-rollback-target", "P1-003", "test_previous_deployment_can_roll_back"),
    ("rollback-notes-only", "P1-003", "test_rollback_script_calls_api"),
])
def test_fault_opens_the_ticket(stack: StartedStack, tmp_path: Path, fault: str, ticket: str,
                                failing: str) -> None:
    with stack.fault(fault):
        result = run_verify(stack, tmp_path, *SERIAL, tickets=[ticket], allow_intrusive=[])
    assert result.status[ticket] == "open", result.explain([ticket])
    failed = {name for name, outcome in outcomes(result, ticket).items() if outcome == "fail"}
    assert failed == {failing}, result.explain([ticket])


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


def test_refused_github_token_gives_unverified(stack: StartedStack, tmp_path: Path) -> None:
    wrong = with_env(stack, tmp_path, "github", token="not-the-token-0123456789")
    result = run_verify(wrong, tmp_path, *SERIAL, tickets=["P0-001"], allow_intrusive=[])
    assert result.status["P0-001"] == "unverified", result.explain(["P0-001"])
    for name in DELIVERY:
        c = criterion(result, "P0-001", name)
        assert c["outcome"] == "error", c
        assert "401" in c["message"], c
        assert "not-the-token-0123456789" not in c["message"]


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
