"""Railway's public GraphQL API: token check, deployments, rollback and redeploy.

GraphQL reports errors with HTTP 200 and an ``errors`` array. Every such answer raises a
``ProbeError``: ``Not Authorized`` becomes ``AccessRefused``, anything else
``UnexpectedResponse``. A missing rollback target is data, not an error: the probe returns
``None`` and the check decides.

Deployments come back as ``Deployment`` facts that say what they run (``meta.image`` or
``meta.commitHash``). The active deployment is read from the service instance's latest
deployment, not guessed as "the newest SUCCESS": a sleeping service's deployment is
``SLEEPING``, and a superseded one goes ``REMOVED`` while it stays rollback-able.
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
    "ACTIVE_STATUSES",
    "DEPLOYMENT_FIELDS",
    "ROLLBACK_STATUSES",
    "Deployment",
    "RailwayProbe",
    "RollbackDrill",
    "pick_rollback_target",
]

DEPLOYMENT_FIELDS = "id status createdAt canRollback canRedeploy staticUrl meta"

_DEPLOYMENTS = (
    "query($input: DeploymentListInput!, $first: Int) { deployments(input: $input, first: $first) "
    "{ edges { node { " + DEPLOYMENT_FIELDS + " } } } }"
)
_DEPLOYMENT = "query($id: String!) { deployment(id: $id) { " + DEPLOYMENT_FIELDS + " } }"
_LATEST = (
    "query($environmentId: String!, $serviceId: String!) { serviceInstance(environmentId: "
    "$environmentId, serviceId: $serviceId) { latestDeployment { " + DEPLOYMENT_FIELDS + " } } }"
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

# A deployment in one of these states serves the service (a sleeping one wakes on a request).
ACTIVE_STATUSES = frozenset({"SUCCESS", "SLEEPING"})
# While the newest deployment is on its way, or when it failed to come up, Railway keeps the
# one before it serving.
_NOT_YET_SERVING = frozenset({"INITIALIZING", "QUEUED", "WAITING", "NEEDS_APPROVAL", "BUILDING",
                              "DEPLOYING", "FAILED", "SKIPPED"})
# Deployments that once served: a superseded one goes REMOVING, then REMOVED, and stays
# rollback-able (canRollback) within the plan's retention.
ROLLBACK_STATUSES = frozenset({"SUCCESS", "SLEEPING", "REMOVING", "REMOVED"})


@dataclass(frozen=True)
class Deployment:
    """One deployment of the service, with what it runs (from its ``meta``)."""

    id: str
    status: str
    created_at: str
    can_rollback: bool
    can_redeploy: bool | None
    commit: str | None  # meta.commitHash, for a service built from a repository
    image: str | None  # meta.image (with its digest when given), for an image service

    @property
    def source(self) -> str | None:
        """What the deployment runs: its image, or else its commit; ``None`` when unknown."""
        if self.image:
            return f"image {self.image}"
        if self.commit:
            return f"commit {self.commit}"
        return None

    def age_hours(self, now: dt.datetime | None = None) -> float | None:
        """Hours since ``createdAt``; ``None`` when it is not an ISO-8601 timestamp."""
        try:
            when = dt.datetime.fromisoformat(self.created_at.replace("Z", "+00:00"))
        except ValueError:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return ((now or dt.datetime.now(dt.UTC)) - when).total_seconds() / 3600

    def summary(self) -> dict[str, Any]:
        age = self.age_hours()
        return {"id": self.id, "status": self.status, "createdAt": self.created_at,
                "age_hours": None if age is None else round(age, 1),
                "canRollback": self.can_rollback, "source": self.source}

    @classmethod
    def from_node(cls, node: dict[str, Any]) -> Deployment:
        if not isinstance(node.get("id"), str) or not isinstance(node.get("status"), str):
            raise UnexpectedResponse("railway: a deployment came back without id or status")
        raw_meta = node.get("meta")
        meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
        image = meta.get("image") if isinstance(meta.get("image"), str) else None
        digest = meta.get("imageDigest")
        if image and isinstance(digest, str) and digest and "@" not in image:
            image = f"{image}@{digest}"
        commit = meta.get("commitHash")
        return cls(id=node["id"], status=node["status"], created_at=str(node.get("createdAt", "")),
                   can_rollback=node.get("canRollback") is True,
                   can_redeploy=node.get("canRedeploy") if isinstance(node.get("canRedeploy"),
                                                                      bool) else None,
                   commit=commit if isinstance(commit, str) and commit else None,
                   image=image or None)


@dataclass
class RollbackDrill:
    """What a rollback drill did and saw. Times are seconds."""

    original: Deployment
    target: Deployment
    after_rollback: Deployment | None = None  # the active deployment once it changed
    rollback_s: float | None = None
    after_roll_forward: Deployment | None = None
    roll_forward_s: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def rolled_back(self) -> bool:
        """The active deployment changed, and now runs what the target ran."""
        after = self.after_rollback
        return (after is not None and after.id != self.original.id
                and after.source == self.target.source)

    @property
    def rolled_forward(self) -> bool:
        """A new active deployment runs what the original ran."""
        after = self.after_roll_forward
        return after is not None and after.source == self.original.source and (
            self.after_rollback is None or after.id != self.after_rollback.id)

    def as_evidence(self) -> dict[str, Any]:
        def shown(d: Deployment | None) -> dict[str, Any] | None:
            return None if d is None else {"id": d.id, "status": d.status, "source": d.source}

        return {
            "original_deployment": shown(self.original),
            "rollback_target": shown(self.target),
            "active_after_rollback": shown(self.after_rollback),
            "rollback_seconds": self.rollback_s,
            "active_after_roll_forward": shown(self.after_roll_forward),
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

    def deployments(self, statuses: list[str] | None = None, first: int = 20) -> list[Deployment]:
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
        found = [Deployment.from_node(e["node"]) for e in edges
                 if isinstance(e, dict) and isinstance(e.get("node"), dict)]
        found.sort(key=lambda d: d.created_at, reverse=True)
        return found

    def deployment(self, deployment_id: str) -> Deployment:
        data = self.query(_DEPLOYMENT, {"id": deployment_id})
        node = data.get("deployment")
        if not isinstance(node, dict):
            raise UnexpectedResponse(f"railway: deployment {deployment_id} came back empty")
        return Deployment.from_node(node)

    def latest_deployment(self) -> Deployment | None:
        """The service instance's latest deployment, whatever its status."""
        data = self.query(_LATEST, {"environmentId": self.cfg.environment_id,
                                    "serviceId": self.cfg.service_id})
        instance = data.get("serviceInstance")
        if not isinstance(instance, dict):
            raise UnexpectedResponse(
                f"railway: service {self.cfg.service_id} has no instance in environment "
                f"{self.cfg.environment_id}; check railway.service_id and environment_id"
            )
        node = instance.get("latestDeployment")
        return Deployment.from_node(node) if isinstance(node, dict) else None

    def active_deployment(self) -> Deployment | None:
        """The deployment serving the service: the instance's latest deployment when it is up;
        while the latest is still on its way or failed to come up, the newest one before it
        that is up; ``None`` when nothing serves (the latest crashed or was removed)."""
        latest = self.latest_deployment()
        if latest is None or latest.status in ACTIVE_STATUSES:
            return latest
        if latest.status not in _NOT_YET_SERVING:
            return None
        earlier = [d for d in self.deployments(sorted(ACTIVE_STATUSES))
                   if d.created_at < latest.created_at]
        return earlier[0] if earlier else None

    def rollback_candidates(self, first: int = 50) -> list[Deployment]:
        """The newest deployments that once served, newest first: asked for by status, so
        skipped (watch paths) and failed deployments, however many, hide none of them."""
        return self.deployments(sorted(ROLLBACK_STATUSES), first=first)

    def rollback_target(self, active: Deployment) -> Deployment | None:
        """The deployment a rollback would return to (see ``pick_rollback_target``)."""
        return pick_rollback_target(active, self.rollback_candidates())

    def rollback(self, deployment_id: str) -> bool:
        """Call ``deploymentRollback``; Railway answers a bare Boolean."""
        data = self.query(_ROLLBACK, {"id": deployment_id})
        result = data.get("deploymentRollback")
        if not isinstance(result, bool):
            raise UnexpectedResponse(
                f"railway: deploymentRollback answered {result!r}, expected a Boolean"
            )
        return result

    def redeploy(self, deployment_id: str) -> Deployment:
        """Call ``deploymentRedeploy``; return the new deployment."""
        data = self.query(_REDEPLOY, {"id": deployment_id})
        result = data.get("deploymentRedeploy")
        if not isinstance(result, dict):
            raise UnexpectedResponse(
                f"railway: deploymentRedeploy answered {result!r}, expected a Deployment"
            )
        return Deployment.from_node(result)

    def wait_for_active(self, done: Callable[[Deployment], bool], timeout: float,
                        poll: float = 0.5) -> tuple[Deployment | None, float]:
        """Poll the active deployment until ``done`` holds for it; return it (``None`` on
        timeout) and the seconds waited."""
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

        The drill judges by what the deployments run (their image or commit), not only by
        their ids. It rolls forward whenever the rollback was issued, even if waiting for it
        failed, so the service is never left on the old version; a rollback call that timed
        out or lost its connection may still have been applied, so it is rolled forward too.
        Raises ``UnexpectedResponse`` before changing anything when there is nothing to roll
        back to, or when the deployments do not say what they run.
        """
        original = self.active_deployment()
        target = self.rollback_target(original) if original is not None else None
        if original is None or target is None:
            raise UnexpectedResponse(
                "railway: the rollback drill found no active deployment and previous "
                "deployment running other code that can be rolled back to"
            )
        if original.source is None or target.source is None:
            raise UnexpectedResponse(
                f"railway: deployments {original.id} and {target.id} carry neither an image "
                f"nor a commit in their meta, so a drill could only see ids change; the drill "
                f"did not run"
            )
        drill = RollbackDrill(original=original, target=target)
        start = self._clock()
        issued = False
        try:
            try:
                issued = self.rollback(target.id)
            except (ProbeTimeout, TargetUnreachable):
                issued = True
                raise
            if not issued:
                drill.notes.append("deploymentRollback answered false")
                return drill
            active, _ = self.wait_for_active(lambda d: d.id != original.id, timeout, poll)
            if active is not None:
                drill.after_rollback = active
                drill.rollback_s = round(self._clock() - start, 3)
                if active.source != target.source:
                    drill.notes.append(f"after the rollback the active deployment {active.id} "
                                       f"runs {active.source}, not the target's {target.source}")
            else:
                drill.notes.append(f"the active deployment did not change within {timeout:g}s")
        finally:
            if issued:
                self._roll_forward(drill, timeout, poll)
        return drill

    def _roll_forward(self, drill: RollbackDrill, timeout: float, poll: float) -> None:
        """Return to the original: roll back to it (it is now a superseded deployment), or
        redeploy it where Railway cannot roll back to it."""
        original = drill.original
        start = self._clock()
        before = {d.id for d in self.deployments(first=50)}
        current = self.deployment(original.id)
        if current.can_rollback:
            self.rollback(original.id)
        else:
            before.discard(self.redeploy(original.id).id)
        # Only a deployment made by this call proves the roll-forward: the original itself, or
        # a rollback that settles late, could otherwise pass for it.
        active, _ = self.wait_for_active(
            lambda d: d.id not in before and d.source == original.source, timeout, poll)
        if active is not None:
            drill.after_roll_forward = active
            drill.roll_forward_s = round(self._clock() - start, 3)
        else:
            drill.notes.append(f"no new deployment running {original.source} became active "
                               f"within {timeout:g}s of rolling forward to {original.id}")


def pick_rollback_target(active: Deployment, deployments: list[Deployment]) -> Deployment | None:
    """Of the deployments (newest first), the newest one other than the active one that once
    served (SUCCESS, or superseded: REMOVING/REMOVED) and ``canRollback``, and that runs other
    code than the active one. When the deployments do not say what they run, the newest such
    deployment."""
    candidates = [d for d in deployments if d.id != active.id and d.can_rollback
                  and d.status in ROLLBACK_STATUSES]
    if active.source is None:
        return candidates[0] if candidates else None
    return next((d for d in candidates if d.source != active.source), None)


def _operation_name(query: str) -> str:
    text = " ".join(query.split())
    for root in ("deploymentRollback", "deploymentRedeploy", "serviceInstance", "deployments",
                 "deployment", "projectToken", "project", "me"):
        if root in text:
            return root
    return text[:40]
