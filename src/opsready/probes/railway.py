"""Railway's public GraphQL API: token check, deployments, rollback and redeploy.

GraphQL reports errors with HTTP 200 and an ``errors`` array. Every such answer raises a
``ProbeError``: ``Not Authorized`` becomes ``AccessRefused``, anything else
``UnexpectedResponse``. A missing rollback target is data, not an error: the probe returns
``None`` and the check decides.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from opsready._errors import AccessRefused, ProbeTimeout, TargetUnreachable, UnexpectedResponse
from opsready.config import RailwayConfig
from opsready.evidence import redactor
from opsready.probes._http import HttpTarget

__all__ = [
    "DEPLOYMENT_FIELDS",
    "RailwayProbe",
    "RollbackDrill",
    "age_seconds",
    "pick_rollback_target",
    "rollback_calls",
]

DEPLOYMENT_FIELDS = "id status createdAt canRollback canRedeploy staticUrl"

_DEPLOYMENTS = (
    "query($input: DeploymentListInput!, $first: Int) { deployments(input: $input, first: $first) "
    "{ edges { node { " + DEPLOYMENT_FIELDS + " } } } }"
)
_ROLLBACK = "mutation($id: String!) { deploymentRollback(id: $id) }"
_REDEPLOY = "mutation($id: String!) { deploymentRedeploy(id: $id) { " + DEPLOYMENT_FIELDS + " } }"
# The smallest query each kind of token can answer.
_TOKEN_QUERIES = {
    "project": "query { projectToken { projectId environmentId } }",
    "account": "query { me { id } }",
    "team": "query($id: String!) { project(id: $id) { id name } }",
}
_NOT_AUTHORIZED = ("not authorized", "unauthorized", "unauthenticated", "forbidden")


@dataclass
class RollbackDrill:
    """What a rollback drill did and saw. Times are seconds."""

    original_id: str
    target_id: str
    rolled_back_to: str | None = None  # the active deployment after the rollback
    rollback_s: float | None = None
    restored_to: str | None = None  # the active deployment after the redeploy
    roll_forward_s: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def rolled_back(self) -> bool:
        return self.rolled_back_to is not None

    @property
    def rolled_forward(self) -> bool:
        return self.restored_to is not None

    def as_evidence(self) -> dict[str, Any]:
        return {
            "original_deployment": self.original_id,
            "rollback_target": self.target_id,
            "active_after_rollback": self.rolled_back_to,
            "rollback_seconds": self.rollback_s,
            "active_after_redeploy": self.restored_to,
            "roll_forward_seconds": self.roll_forward_s,
            "notes": self.notes,
        }


class RailwayProbe:
    """One Railway service, through the public GraphQL API."""

    def __init__(
        self,
        cfg: RailwayConfig,
        timeout: float,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        token = cfg.token.get_secret_value()
        # Project tokens have their own header; account and team tokens are bearer tokens.
        if cfg.token_kind == "project":
            headers = {"Project-Access-Token": token}
        else:
            headers = {"Authorization": f"Bearer {token}"}
        headers["Content-Type"] = "application/json"
        self.http = HttpTarget("railway", cfg.api_url, timeout=timeout, headers=headers,
                               transport=transport)
        self._sleep = sleep
        self._clock = clock

    def close(self) -> None:
        self.http.close()

    # -- GraphQL ----------------------------------------------------------------------------

    def query(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run one operation and return its ``data``. Any ``errors`` entry raises."""
        what = _operation_name(query)
        # The absolute URL: httpx would add a trailing slash to a base URL with an empty path.
        resp = self.http.request("POST", self.cfg.api_url,
                                 json={"query": query, "variables": variables or {}})
        if resp.status_code in (401, 403):
            raise AccessRefused(
                f"railway: {what} answered HTTP {resp.status_code}; the token was refused, "
                f"check railway.token and railway.token_kind ({self.cfg.token_kind})"
            )
        try:
            body = resp.json()
        except ValueError:
            raise UnexpectedResponse(
                f"railway: {what} answered HTTP {resp.status_code} without JSON "
                f"({redactor.excerpt(resp.text, 200)!r})"
            ) from None
        if not isinstance(body, dict):
            raise UnexpectedResponse(f"railway: {what} answered a non-object JSON body")
        errors = body.get("errors")
        if errors:
            messages = [str(e.get("message", e)) if isinstance(e, dict) else str(e)
                        for e in (errors if isinstance(errors, list) else [errors])]
            joined = redactor.text("; ".join(messages))
            if any(m.strip().lower() in _NOT_AUTHORIZED or "not authorized" in m.lower()
                   for m in messages):
                raise AccessRefused(
                    f"railway: {what} was refused ({joined!r}); check railway.token, and that "
                    f"railway.token_kind ({self.cfg.token_kind}) matches the kind of token "
                    f"(project tokens use the Project-Access-Token header)"
                )
            raise UnexpectedResponse(f"railway: {what} returned GraphQL errors: {joined}")
        if resp.status_code != 200:
            raise UnexpectedResponse(f"railway: {what} answered HTTP {resp.status_code}")
        data = body.get("data")
        if not isinstance(data, dict):
            raise UnexpectedResponse(f"railway: {what} returned no 'data' object")
        return data

    # -- public API -------------------------------------------------------------------------

    def token_check(self) -> dict[str, Any]:
        """Run the smallest query this kind of token can answer; return what it said."""
        query = _TOKEN_QUERIES[self.cfg.token_kind]
        variables = {"id": self.cfg.project_id} if self.cfg.token_kind == "team" else None
        data = self.query(query, variables)
        root = next(iter(data.values()), None)
        if not isinstance(root, dict):
            raise UnexpectedResponse(
                f"railway: the token check ({query}) answered {data!r}, expected an object"
            )
        return root

    def deployments(self, statuses: list[str] | None = None, first: int = 10) -> list[dict[str, Any]]:
        """The configured service's deployments, newest first, optionally by status."""
        spec: dict[str, Any] = {
            "projectId": self.cfg.project_id,
            "environmentId": self.cfg.environment_id,
            "serviceId": self.cfg.service_id,
        }
        if statuses:
            spec["status"] = {"in": statuses}
        data = self.query(_DEPLOYMENTS, {"input": spec, "first": first})
        conn = data.get("deployments")
        edges = conn.get("edges") if isinstance(conn, dict) else None
        if not isinstance(edges, list):
            raise UnexpectedResponse("railway: deployments came back without 'edges'")
        nodes = [e["node"] for e in edges if isinstance(e, dict) and isinstance(e.get("node"), dict)]
        for node in nodes:
            if not isinstance(node.get("id"), str) or not isinstance(node.get("status"), str):
                raise UnexpectedResponse("railway: a deployment came back without id or status")
        nodes.sort(key=lambda n: str(n.get("createdAt", "")), reverse=True)
        return nodes

    def active_deployment(self) -> dict[str, Any] | None:
        """The newest SUCCESS deployment: the one serving traffic."""
        found = self.deployments(["SUCCESS"], first=1)
        return found[0] if found else None

    def rollback_target(self) -> dict[str, Any] | None:
        """The newest SUCCESS deployment before the active one that ``canRollback``."""
        return pick_rollback_target(self.deployments(["SUCCESS"]))

    def rollback(self, deployment_id: str) -> bool:
        """Call ``deploymentRollback``; Railway answers a bare Boolean."""
        data = self.query(_ROLLBACK, {"id": deployment_id})
        result = data.get("deploymentRollback")
        if not isinstance(result, bool):
            raise UnexpectedResponse(
                f"railway: deploymentRollback answered {result!r}, expected a Boolean"
            )
        return result

    def redeploy(self, deployment_id: str) -> dict[str, Any]:
        """Call ``deploymentRedeploy``; return the new deployment."""
        data = self.query(_REDEPLOY, {"id": deployment_id})
        result = data.get("deploymentRedeploy")
        if not isinstance(result, dict) or not isinstance(result.get("id"), str):
            raise UnexpectedResponse(
                f"railway: deploymentRedeploy answered {result!r}, expected a Deployment"
            )
        return result

    def wait_for_active_change(self, previous_id: str, timeout: float,
                               poll: float = 0.5) -> tuple[dict[str, Any] | None, float]:
        """Poll until the active deployment is no longer ``previous_id``.

        Returns the new active deployment (``None`` on timeout) and the seconds waited.
        """
        return self._wait_for_active(lambda d: d["id"] != previous_id, timeout, poll)

    def wait_for_active(self, deployment_id: str, timeout: float,
                        poll: float = 0.5) -> tuple[dict[str, Any] | None, float]:
        """Poll until ``deployment_id`` is the active deployment (``None`` on timeout)."""
        return self._wait_for_active(lambda d: d["id"] == deployment_id, timeout, poll)

    def _wait_for_active(self, done: Callable[[dict[str, Any]], bool], timeout: float,
                         poll: float) -> tuple[dict[str, Any] | None, float]:
        start = self._clock()
        while True:
            active = self.active_deployment()
            elapsed = self._clock() - start
            if active is not None and done(active):
                return active, elapsed
            if elapsed >= timeout:
                return None, elapsed
            self._sleep(min(poll, max(0.0, timeout - elapsed)))

    def rollback_drill(self, timeout: float, poll: float = 0.5) -> RollbackDrill:
        """Roll back to the previous deployment and forward again.

        Rolls forward (redeploys the original deployment) whenever the rollback was issued,
        even if waiting for it failed, so the service is never left on the old version. A
        rollback call that timed out or lost its connection may still have been applied, so
        it is rolled forward too. Raises ``UnexpectedResponse`` when there is nothing to roll
        back to.
        """
        original = self.active_deployment()
        target = self.rollback_target()
        if original is None or target is None:
            raise UnexpectedResponse(
                "railway: the rollback drill found no active deployment and previous "
                "deployment that can be rolled back to"
            )
        drill = RollbackDrill(original_id=original["id"], target_id=target["id"])
        start = self._clock()
        issued = False
        try:
            try:
                issued = self.rollback(target["id"])
            except (ProbeTimeout, TargetUnreachable):
                issued = True
                raise
            if not issued:
                drill.notes.append("deploymentRollback answered false")
                return drill
            active, _ = self.wait_for_active_change(original["id"], timeout, poll)
            if active is not None:
                drill.rolled_back_to = active["id"]
                drill.rollback_s = round(self._clock() - start, 3)
            else:
                drill.notes.append(f"the active deployment did not change within {timeout:g}s")
        finally:
            if issued:
                self._roll_forward(drill, original["id"], timeout, poll)
        return drill

    def _roll_forward(self, drill: RollbackDrill, original_id: str, timeout: float,
                      poll: float) -> None:
        start = self._clock()
        new = self.redeploy(original_id)
        # Only the redeployed deployment itself being active proves the roll-forward: a
        # rollback that settles late could otherwise pass for it.
        active, _ = self.wait_for_active(new["id"], timeout, poll)
        if active is not None:
            drill.restored_to = active["id"]
            drill.roll_forward_s = round(self._clock() - start, 3)
        else:
            drill.notes.append(f"the redeploy {new['id']} of {original_id} did not become "
                               f"active within {timeout:g}s")


def age_seconds(created_at: str, now: dt.datetime | None = None) -> float:
    """Seconds since an ISO-8601 timestamp such as ``createdAt``."""
    try:
        when = dt.datetime.fromisoformat(created_at.replace("Z", "+00:00"))
    except ValueError:
        raise UnexpectedResponse(f"railway: createdAt {created_at!r} is not an ISO timestamp") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return ((now or dt.datetime.now(dt.UTC)) - when).total_seconds()


def pick_rollback_target(successes: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Of SUCCESS deployments, newest first: the newest one before the active (first) one
    that ``canRollback``."""
    return next((d for d in successes[1:] if d.get("canRollback") is True), None)


def rollback_calls(source: str, mutation: str = "deploymentRollback") -> list[tuple[int, str]]:
    """The lines of a script (number, text) that name ``mutation`` outside a comment line.

    A script that only writes rollback notes never names the mutation; one that merely
    mentions it in a comment does not call it either.
    """
    found: list[tuple[int, str]] = []
    for number, line in enumerate(source.splitlines(), start=1):
        code = line.strip()
        if not code or code.startswith(("#", "//", "--", ";")):
            continue
        if mutation in code:
            found.append((number, redactor.excerpt(code, 200)))
    return found


def _operation_name(query: str) -> str:
    text = " ".join(query.split())
    for root in ("deploymentRollback", "deploymentRedeploy", "deployments", "projectToken",
                 "project", "me"):
        if root in text:
            return root
    return text[:40]
