"""The rollback target of P1-003 among many deployments that never served: a monorepo
service with watch paths gets a SKIPPED deployment for every push that leaves it alone, and
failed builds pile up too. The target is looked for among the deployments that once served,
asked for by status, so however many others came since, it is found; with none that can roll
back, the criterion is open; a refused API is not judged."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from conftest import load_check, refusing_transport
from opsready._errors import ProbeError
from opsready.config import RailwayConfig
from opsready.evidence import Evidence
from opsready.probes.railway import RailwayProbe

ROLLBACK = load_check("test_p1_003_rollback_automation")


def _node(i: int, status: str, commit: str, *, can_rollback: bool = False) -> dict[str, Any]:
    return {"id": f"d{i}", "status": status, "createdAt": f"2026-11-{30 - i // 24:02d}T"
            f"{23 - i % 24:02d}:00:00Z", "canRollback": can_rollback, "canRedeploy": True,
            "meta": {"commitHash": commit}}


def _railway(deployments: list[dict[str, Any]]) -> RailwayProbe:
    """A Railway API answering the service's deployments newest first, honouring ``first``
    and a status filter as the real one does."""
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        query, variables = body["query"], body.get("variables") or {}
        if "latestDeployment" in query:
            return httpx.Response(200, json={"data": {"serviceInstance": {
                "latestDeployment": deployments[0]}}})
        spec = variables["input"]
        wanted = (spec.get("status") or {}).get("in")
        found = [d for d in deployments if wanted is None or d["status"] in wanted]
        edges = [{"node": d} for d in found[:variables.get("first") or 20]]
        return httpx.Response(200, json={"data": {"deployments": {"edges": edges}}})

    cfg = RailwayConfig.model_validate({"token": "t" * 24, "project_id": "p",
                                        "environment_id": "e", "service_id": "s"})
    return RailwayProbe(cfg, timeout=2, transport=httpx.MockTransport(handler))


def _history(target_can_roll_back: bool = True) -> list[dict[str, Any]]:
    active = _node(0, "SUCCESS", "c-new")
    skipped = [_node(i, "SKIPPED" if i % 5 else "FAILED", "c-new") for i in range(1, 31)]
    previous = _node(31, "REMOVED", "c-old", can_rollback=target_can_roll_back)
    return [active, *skipped, previous]


def test_the_target_is_found_behind_many_skipped_and_failed_deployments() -> None:
    evidence = Evidence()
    ROLLBACK.test_previous_deployment_can_roll_back(_railway(_history()), evidence)
    target = next(i.value for i in evidence.items if i.name == "rollback_target")
    assert target["id"] == "d31"


def test_no_deployment_that_can_roll_back_is_open() -> None:
    with pytest.raises(AssertionError, match="none besides the active d0"):
        ROLLBACK.test_previous_deployment_can_roll_back(_railway(_history(False)), Evidence())


def test_a_refused_railway_api_is_not_judged() -> None:
    cfg = RailwayConfig.model_validate({"token": "t" * 24, "project_id": "p",
                                        "environment_id": "e", "service_id": "s"})
    with pytest.raises(ProbeError):
        ROLLBACK.test_previous_deployment_can_roll_back(
            RailwayProbe(cfg, timeout=2, transport=refusing_transport()), Evidence())
