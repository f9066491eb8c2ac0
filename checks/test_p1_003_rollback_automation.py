"""P1-003: the rollback automation really rolls back through Railway's public API."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from opsready.probes.railway import age_seconds, pick_rollback_target, rollback_calls

if TYPE_CHECKING:
    from opsready.evidence import Evidence
    from opsready.probes.github import GithubProbe
    from opsready.probes.railway import RailwayProbe

pytestmark = [pytest.mark.ticket("P1-003")]


def test_token_accepted(railway: RailwayProbe, evidence: Evidence) -> None:
    """The Railway API accepts the token"""
    identity = railway.token_check()
    evidence.record("token_check", {"token_kind": railway.cfg.token_kind, "answer": identity})
    # A project token is scoped to one project and environment: it must be this service's.
    for key, wanted in (("projectId", railway.cfg.project_id),
                        ("environmentId", railway.cfg.environment_id)):
        found = identity.get(key)
        assert found in (None, wanted), (
            f"Railway accepted the {railway.cfg.token_kind} token, but it belongs to {key} "
            f"{found}, not the configured {wanted}; use a token of this project and environment"
        )


def test_previous_deployment_can_roll_back(railway: RailwayProbe, evidence: Evidence) -> None:
    """The service has a previous SUCCESS deployment that can be rolled back to"""
    successes = railway.deployments(["SUCCESS"])
    evidence.record("success_deployments", [
        {k: d.get(k) for k in ("id", "createdAt", "canRollback")} for d in successes])
    target = pick_rollback_target(successes)
    assert target is not None, (
        f"Railway service {railway.cfg.service_id}: of its {len(successes)} newest SUCCESS "
        f"deployment(s), none before the active one has canRollback=true; expected a previous deployment to "
        f"roll back to; deploy twice, and keep rollback images within Railway's retention"
    )
    evidence.record("rollback_target", {
        "id": target["id"],
        "createdAt": target.get("createdAt"),
        "age_hours": round(age_seconds(str(target.get("createdAt", ""))) / 3600, 1),
    })


def test_rollback_script_calls_api(github: GithubProbe, evidence: Evidence) -> None:
    """The rollback automation calls the Railway API (not notes only)"""
    path = github.cfg.rollback_script
    source = github.get_file(path)
    assert source is not None, (
        f"{path} does not exist in {github.repo}@{github.branch}; expected the rollback "
        f"script there; commit it or set github.rollback_script"
    )
    calls = rollback_calls(source)
    evidence.record("rollback_script", {
        "path": path, "lines": len(source.splitlines()),
        "deploymentRollback_lines": [f"{n}: {text}" for n, text in calls]})
    assert calls, (
        f"{path} in {github.repo}@{github.branch} never calls deploymentRollback (outside "
        f"comments); expected the script to roll back through Railway's API, not only write "
        f"notes; call the deploymentRollback mutation"
    )


@pytest.mark.intrusive("rollback_drill")
def test_rollback_drill(railway: RailwayProbe, evidence: Evidence) -> None:
    """A rollback drill rolls back, sees the active deployment change, and rolls forward"""
    bound = railway.cfg.drill_timeout_s
    drill = railway.rollback_drill(timeout=bound)
    evidence.record("rollback_drill", drill.as_evidence())
    assert drill.rolled_back, (
        f"Railway rollback to {drill.target_id}: the active deployment stayed "
        f"{drill.original_id} ({'; '.join(drill.notes) or 'no change'}); expected it to change "
        f"within railway.drill_timeout_s ({bound:g}s); check the service's deploy logs"
    )
    assert drill.rolled_forward, (
        f"Railway redeploy of {drill.original_id} after the drill: "
        f"{'; '.join(drill.notes)}; expected the service back on its latest deployment within "
        f"{bound:g}s; redeploy it by hand now"
    )
