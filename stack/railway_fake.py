# Contract fake of Railway's public GraphQL (a SaaS that cannot run here), shaped per api-facts.md.
"""One Railway service with its deployment history, behind ``POST /graphql/v2``.

Run as ``python -m opsready_stack.railway_fake --dir DIR --port P``. The project token comes
from ``DIR/state.json``; faults from ``DIR/faults.json`` on every request.

Only the operations the suite and the rollback script send are understood: ``deployments``,
``deployment``, ``serviceInstance`` (with its ``latestDeployment``), ``projectToken``,
``project``, ``me``, ``deploymentRollback`` and ``deploymentRedeploy``. Queries are parsed
(operations, variables, arguments, aliases and selection sets, no fragments), and answers
carry exactly the selected fields, so a query that would fail on Railway fails here too.
Errors come back with HTTP 200.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import hmac
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opsready_stack.part import Fault, FaultWatcher, HttpFakePart, StackContext

__all__ = ["IDS", "GraphQLError", "RailwayPart", "build_app", "parse"]

_NS = uuid.UUID("5d2c7a52-3f0e-4a57-9a55-0c1d1f1e7c11")


def _id(name: str) -> str:
    return str(uuid.uuid5(_NS, name))


IDS = {
    "project": _id("project/relay"),
    "environment": _id("environment/production"),
    "service": _id("service/relay-api"),
}
STATIC_URL = "relay-api-production.up.railway.app"
# Railway keeps images for rollback for a limited time; older deployments cannot be restored.
ROLLBACK_RETENTION = dt.timedelta(days=30)

FAULTS = (
    Fault("no-rollback-target",
          "no previous deployment can be rolled back to (images expired)",
          frozenset({"P1-003"})),
    Fault("rollback-overridden-by-autodeploy",
          "right after a rollback an automatic deploy of main's head takes over: the active "
          "deployment changes, but back to the code it ran before", frozenset({"P1-003"})),
    Fault("railway-image-source",
          "the service is deployed from a container image: deployments carry meta.image and "
          "no commit", frozenset(), variant=True),
    Fault("railway-app-sleeping",
          "the service sleeps when idle (serverless): its active deployment is SLEEPING",
          frozenset(), variant=True),
)


class GraphQLError(Exception):
    """An error reported in the ``errors`` array (HTTP 200)."""

    def __init__(self, message: str, path: list[str] | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.path = path
        self.code = code

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"message": self.message}
        if self.path:
            out["path"] = self.path
        if self.code:
            out["extensions"] = {"code": self.code}
        return out


# -- a small GraphQL parser -------------------------------------------------------------------

_TOKEN = re.compile(
    r"""(?P<skip>[\s,\ufeff]+|\#[^\n]*)
      |(?P<punct>\.\.\.|[!$():=@\[\]{}|])
      |(?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
      |(?P<string>"(?:\\.|[^"\\\n])*")
      |(?P<name>[_A-Za-z][_0-9A-Za-z]*)""",
    re.X,
)


@dataclass
class Var:
    name: str


@dataclass
class Enum:
    name: str


@dataclass
class FieldNode:
    name: str
    alias: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    selections: list[FieldNode] | None = None

    @property
    def key(self) -> str:
        return self.alias or self.name


@dataclass
class Operation:
    kind: str  # "query" or "mutation"
    name: str | None
    variables: dict[str, tuple[str, Any]]  # name -> (type, default)
    selections: list[FieldNode]


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise GraphQLError(f'Syntax Error: Unexpected character "{text[pos]}".',
                               code="GRAPHQL_PARSE_FAILED")
        pos = m.end()
        kind = m.lastgroup or ""
        if kind != "skip":
            out.append((kind, m.group()))
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, value: str | None = None, kind: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value) or (kind and tok[0] != kind):
            found = "<EOF>" if tok is None else f'"{tok[1]}"'
            want = f'"{value}"' if value else (kind or "token")
            raise GraphQLError(f"Syntax Error: Expected {want}, found {found}.",
                               code="GRAPHQL_PARSE_FAILED")
        self.i += 1
        return tok[1]

    def at(self, value: str) -> bool:
        tok = self.peek()
        return tok is not None and tok[1] == value

    def operations(self) -> list[Operation]:
        ops = []
        while self.peek() is not None:
            ops.append(self.operation())
        if not ops:
            raise GraphQLError("Syntax Error: Unexpected <EOF>.", code="GRAPHQL_PARSE_FAILED")
        return ops

    def operation(self) -> Operation:
        if self.at("{"):
            return Operation("query", None, {}, self.selection_set())
        kind = self.take(kind="name")
        if kind == "fragment":
            raise GraphQLError("fragments are not supported by this server",
                               code="GRAPHQL_VALIDATION_FAILED")
        if kind not in ("query", "mutation", "subscription"):
            raise GraphQLError(f'Syntax Error: Unexpected Name "{kind}".',
                               code="GRAPHQL_PARSE_FAILED")
        tok = self.peek()
        name = self.take(kind="name") if tok is not None and tok[0] == "name" else None
        variables: dict[str, tuple[str, Any]] = {}
        if self.at("("):
            self.take("(")
            while not self.at(")"):
                self.take("$")
                var = self.take(kind="name")
                self.take(":")
                typ = self.type_ref()
                default = None
                if self.at("="):
                    self.take("=")
                    default = self.value(const=True)
                variables[var] = (typ, default)
            self.take(")")
        return Operation(kind, name, variables, self.selection_set())

    def type_ref(self) -> str:
        if self.at("["):
            self.take("[")
            inner = self.type_ref()
            self.take("]")
            typ = f"[{inner}]"
        else:
            typ = self.take(kind="name")
        if self.at("!"):
            self.take("!")
            typ += "!"
        return typ

    def selection_set(self) -> list[FieldNode]:
        self.take("{")
        fields = []
        while not self.at("}"):
            if self.at("..."):
                raise GraphQLError("fragments are not supported by this server",
                                   code="GRAPHQL_VALIDATION_FAILED")
            fields.append(self.field())
        self.take("}")
        if not fields:
            raise GraphQLError('Syntax Error: Expected Name, found "}".',
                               code="GRAPHQL_PARSE_FAILED")
        return fields

    def field(self) -> FieldNode:
        name = self.take(kind="name")
        alias = None
        if self.at(":"):
            self.take(":")
            alias, name = name, self.take(kind="name")
        node = FieldNode(name=name, alias=alias)
        if self.at("("):
            self.take("(")
            while not self.at(")"):
                arg = self.take(kind="name")
                self.take(":")
                node.args[arg] = self.value(const=False)
            self.take(")")
        if self.at("{"):
            node.selections = self.selection_set()
        return node

    def value(self, const: bool) -> Any:
        tok = self.peek()
        if tok is None:
            raise GraphQLError("Syntax Error: Unexpected <EOF>.", code="GRAPHQL_PARSE_FAILED")
        kind, text = tok
        if text == "$" and not const:
            self.take("$")
            return Var(self.take(kind="name"))
        if text == "[":
            self.take("[")
            items = []
            while not self.at("]"):
                items.append(self.value(const))
            self.take("]")
            return items
        if text == "{":
            self.take("{")
            obj = {}
            while not self.at("}"):
                key = self.take(kind="name")
                self.take(":")
                obj[key] = self.value(const)
            self.take("}")
            return obj
        self.i += 1
        if kind == "string":
            return json.loads(text)
        if kind == "number":
            return float(text) if any(c in text for c in ".eE") else int(text)
        if kind == "name":
            return {"true": True, "false": False, "null": None}.get(text, Enum(text))
        raise GraphQLError(f'Syntax Error: Unexpected "{text}".', code="GRAPHQL_PARSE_FAILED")


def parse(text: str) -> list[Operation]:
    """Parse a GraphQL document into its operations (the subset this fake understands)."""
    return _Parser(text).operations()


def _resolve_value(value: Any, variables: dict[str, Any]) -> Any:
    if isinstance(value, Var):
        return variables.get(value.name)
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, list):
        return [_resolve_value(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: _resolve_value(v, variables) for k, v in value.items()}
    return value


# -- the Railway model ------------------------------------------------------------------------

class Json(dict[str, Any]):
    """A value of Railway's ``JSON`` scalar: returned whole, never projected."""


@dataclass
class Obj:
    """A GraphQL object value: its type name and its fields."""

    typename: str
    fields: dict[str, Any]


@dataclass
class Deployment:
    id: str
    status: str
    created: dt.datetime
    meta: dict[str, Any]
    ready_at: float | None = None  # monotonic time a DEPLOYING record becomes SUCCESS
    updated: dt.datetime | None = None
    served: bool = False  # it was live once: a superseded deployment stays rollback-able


class RailwayModel:
    """The project, its one service and the service's deployments.

    As on Railway, a deployment that goes live supersedes the one before it, which goes
    REMOVED and stays rollback-able within the retention; a rollback creates a new deployment
    from the target's image."""

    def __init__(self, dir: Path, token: str, head_sha: str, deploy_seconds: float) -> None:
        self.token = token
        self.faults = FaultWatcher(dir / "faults.json")
        self.deploy_seconds = deploy_seconds
        self.lock = threading.Lock()
        now = dt.datetime.now(dt.UTC)
        history = [
            # (days ago, status, served, commit, message)
            (3, "SUCCESS", True, head_sha, "Merge pull request #30 (Sprint 51 Phase 3)"),
            (4, "FAILED", False, _sha("wip", 4), "Tighten CSP for the studio origin"),
            (5, "REMOVED", True, _sha("merge", 29), "Merge pull request #29 (Sprint 51 Phase 2)"),
            (8, "REMOVED", True, _sha("deploy", 8), "Bump psycopg_pool to 3.2"),
            (10, "REMOVED", True, _sha("deploy", 10), "Move sessions to a separate pool"),
            (40, "REMOVED", True, _sha("deploy", 40), "Sprint 50 release"),
        ]
        self.deployments: list[Deployment] = []
        for days, status, served, commit, message in history:
            created = now - dt.timedelta(days=days, hours=2, minutes=11)
            self.deployments.append(Deployment(
                id=_id(f"deployment/{days}"), status=status, created=created, served=served,
                meta={"commitHash": commit, "commitMessage": message, "branch": "main",
                      "reason": "deploy"},
            ))

    # Times and statuses settle lazily, whenever the model is read.
    def settle(self) -> None:
        now = time.monotonic()
        for d in sorted(self.deployments, key=lambda d: d.created):
            if d.status == "DEPLOYING" and d.ready_at is not None and now >= d.ready_at:
                d.status, d.served = "SUCCESS", True
                d.updated = dt.datetime.now(dt.UTC)
                for other in self.deployments:
                    if other is not d and other.status == "SUCCESS":
                        other.status, other.updated = "REMOVED", d.updated

    def ordered(self) -> list[Deployment]:
        return sorted(self.deployments, key=lambda d: d.created, reverse=True)

    def latest(self) -> Deployment | None:
        found = self.ordered()
        return found[0] if found else None

    def active(self) -> Deployment | None:
        return next((d for d in self.ordered() if d.status == "SUCCESS"), None)

    def status(self, d: Deployment) -> str:
        """The status as the API reports it: a sleeping service's live deployment sleeps."""
        if d.status == "SUCCESS" and self.faults.on("railway-app-sleeping"):
            return "SLEEPING"
        return d.status

    def can_rollback(self, d: Deployment) -> bool:
        if self.faults.on("no-rollback-target"):
            return False
        active = self.active()
        return (d.served and d.status in ("SUCCESS", "REMOVED")
                and (active is None or d.id != active.id)
                and dt.datetime.now(dt.UTC) - d.created <= ROLLBACK_RETENTION)

    def meta(self, d: Deployment) -> dict[str, Any]:
        if not self.faults.on("railway-image-source"):
            return d.meta
        commit = str(d.meta.get("commitHash", ""))
        return {"image": f"ghcr.io/relay-platform/relay-api:sha-{commit[:12]}",
                "imageDigest": "sha256:" + hashlib.sha256(commit.encode()).hexdigest(),
                "reason": d.meta.get("reason"),
                **({"sourceDeploymentId": d.meta["sourceDeploymentId"]}
                   if "sourceDeploymentId" in d.meta else {})}

    def obj(self, d: Deployment) -> Obj:
        return Obj("Deployment", {
            "id": d.id,
            "status": self.status(d),
            "createdAt": _iso(d.created),
            "updatedAt": _iso(d.updated or d.created),
            "canRollback": self.can_rollback(d),
            "canRedeploy": d.status != "REMOVED",
            "staticUrl": STATIC_URL,
            "url": f"https://{STATIC_URL}",
            "projectId": IDS["project"],
            "environmentId": IDS["environment"],
            "serviceId": IDS["service"],
            "meta": Json(self.meta(d)),
        })

    def find(self, deployment_id: Any, path: list[str]) -> Deployment:
        for d in self.deployments:
            if d.id == deployment_id:
                return d
        raise GraphQLError("Deployment not found", path=path, code="NOT_FOUND")

    def new_deployment(self, source: Deployment, reason: str) -> Deployment:
        now = dt.datetime.now(dt.UTC)
        # Keep creation times strictly increasing, even for two calls within a microsecond.
        newest = self.ordered()[0].created if self.deployments else now
        created = max(now, newest + dt.timedelta(milliseconds=1))
        d = Deployment(id=str(uuid.uuid4()), status="DEPLOYING", created=created,
                       meta={**source.meta, "reason": reason, "sourceDeploymentId": source.id},
                       ready_at=time.monotonic() + self.deploy_seconds)
        self.deployments.append(d)
        return d


def _sha(*parts: object) -> str:
    return hashlib.sha1("/".join(map(str, parts)).encode()).hexdigest()


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


# -- the schema subset ------------------------------------------------------------------------

_SCALARS = {"String", "Boolean", "Int", "DateTime", "JSON", "DeploymentStatus"}
_DEPLOYMENT = {
    "id": "String", "status": "DeploymentStatus", "createdAt": "DateTime",
    "updatedAt": "DateTime", "canRollback": "Boolean", "canRedeploy": "Boolean",
    "staticUrl": "String", "url": "String", "projectId": "String", "environmentId": "String",
    "serviceId": "String", "meta": "JSON",
}
SCHEMA: dict[str, dict[str, str]] = {
    "Query": {"projectToken": "ProjectToken", "me": "User", "project": "Project",
              "deployments": "DeploymentDeploymentsConnection", "deployment": "Deployment",
              "serviceInstance": "ServiceInstance"},
    "Mutation": {"deploymentRollback": "Boolean", "deploymentRedeploy": "Deployment"},
    "ProjectToken": {"projectId": "String", "environmentId": "String", "project": "Project",
                     "environment": "Environment"},
    "User": {"id": "String", "name": "String", "email": "String"},
    "Project": {"id": "String", "name": "String"},
    "Environment": {"id": "String", "name": "String"},
    "ServiceInstance": {"id": "String", "serviceId": "String", "environmentId": "String",
                        "latestDeployment": "Deployment"},
    "DeploymentDeploymentsConnection": {"edges": "DeploymentDeploymentsConnectionEdge",
                                        "pageInfo": "PageInfo"},
    "DeploymentDeploymentsConnectionEdge": {"node": "Deployment", "cursor": "String"},
    "PageInfo": {"hasNextPage": "Boolean", "hasPreviousPage": "Boolean",
                 "startCursor": "String", "endCursor": "String"},
    "Deployment": _DEPLOYMENT,
}
# Scalars as a client sees them in error messages.
_SHOWN = {"deploymentRollback": "Boolean!"}


def validate(op: Operation) -> None:
    """Reject unknown fields and wrong selection sets before anything runs."""
    root = {"query": "Query", "mutation": "Mutation"}.get(op.kind)
    if root is None:
        raise GraphQLError("Subscriptions are not supported over HTTP",
                           code="GRAPHQL_VALIDATION_FAILED")
    _validate_selections(root, op.selections)


def _validate_selections(typename: str, selections: list[FieldNode]) -> None:
    fields = SCHEMA[typename]
    for node in selections:
        if node.name == "__typename":
            continue
        if node.name not in fields:
            raise GraphQLError(f'Cannot query field "{node.name}" on type "{typename}".',
                               code="GRAPHQL_VALIDATION_FAILED")
        child = fields[node.name]
        if child in _SCALARS:
            if node.selections is not None:
                shown = _SHOWN.get(node.name, child)
                raise GraphQLError(
                    f'Field "{node.name}" must not have a selection since type "{shown}" has '
                    f"no subfields.", code="GRAPHQL_VALIDATION_FAILED")
        elif node.selections is None:
            raise GraphQLError(
                f'Field "{node.name}" of type "{child}" must have a selection of subfields. '
                f'Did you mean "{node.name} {{ ... }}"?', code="GRAPHQL_VALIDATION_FAILED")
        else:
            _validate_selections(child, node.selections)


# -- execution --------------------------------------------------------------------------------

@dataclass
class Caller:
    """Who is calling: a project token scoped to one environment, or nobody."""

    authorized: bool
    project_id: str | None = None
    environment_id: str | None = None


def _not_authorized(path: list[str]) -> GraphQLError:
    return GraphQLError("Not Authorized", path=path, code="UNAUTHENTICATED")


def execute(model: RailwayModel, caller: Caller, op: Operation,
            variables: dict[str, Any]) -> tuple[dict[str, Any] | None, list[GraphQLError]]:
    validate(op)
    for name, (typ, default) in op.variables.items():
        if name not in variables or variables[name] is None:
            if default is not None:
                variables[name] = default
            elif typ.endswith("!"):
                raise GraphQLError(
                    f'Variable "${name}" of required type "{typ}" was not provided.',
                    code="BAD_USER_INPUT",
                )
    data: dict[str, Any] = {}
    errors: list[GraphQLError] = []
    for node in op.selections:
        path = [node.key]
        args = {k: _resolve_value(v, variables) for k, v in node.args.items()}
        try:
            used = _variables_in(node.args)
            undeclared = used - set(op.variables)
            if undeclared:
                raise GraphQLError(f'Variable "${sorted(undeclared)[0]}" is not defined.',
                                   code="GRAPHQL_VALIDATION_FAILED")
            with model.lock:
                model.settle()
                value = _root(model, caller, op.kind, node, args, path)
                data[node.key] = _project(value, node, path)
        except GraphQLError as exc:
            if exc.path is None:
                exc.path = path
            errors.append(exc)
            data[node.key] = None
    return data, errors


def _variables_in(value: Any) -> set[str]:
    if isinstance(value, Var):
        return {value.name}
    if isinstance(value, dict):
        return set().union(*(_variables_in(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_variables_in(v) for v in value)) if value else set()
    return set()


def _root(model: RailwayModel, caller: Caller, kind: str, node: FieldNode,
          args: dict[str, Any], path: list[str]) -> Any:
    name = node.name
    if kind == "query":
        if name == "__typename":
            return "Query"
        if not caller.authorized:
            raise _not_authorized(path)
        if name == "projectToken":
            return Obj("ProjectToken", {
                "projectId": caller.project_id,
                "environmentId": caller.environment_id,
                "project": Obj("Project", {"id": IDS["project"], "name": "relay"}),
                "environment": Obj("Environment", {"id": IDS["environment"],
                                                   "name": "production"}),
            })
        if name == "me":
            # Project tokens are not tied to a user.
            raise _not_authorized(path)
        if name == "project":
            if args.get("id") != caller.project_id:
                raise _not_authorized(path)
            return Obj("Project", {"id": IDS["project"], "name": "relay"})
        if name == "deployments":
            return _deployments(model, caller, args, path)
        if name == "deployment":
            return model.obj(model.find(args.get("id"), path))
        if name == "serviceInstance":
            if args.get("environmentId") != caller.environment_id:
                raise _not_authorized(path)
            if args.get("serviceId") != IDS["service"]:
                raise GraphQLError("ServiceInstance not found", path=path, code="NOT_FOUND")
            latest = model.latest()
            return Obj("ServiceInstance", {
                "id": _id("service-instance/relay-api/production"),
                "serviceId": IDS["service"], "environmentId": IDS["environment"],
                "latestDeployment": None if latest is None else model.obj(latest)})
        raise GraphQLError(f'Cannot query field "{name}" on type "Query".',
                           code="GRAPHQL_VALIDATION_FAILED")
    if kind == "mutation":
        if name not in ("deploymentRollback", "deploymentRedeploy"):
            raise GraphQLError(f'Cannot query field "{name}" on type "Mutation".',
                               code="GRAPHQL_VALIDATION_FAILED")
        if "id" not in args or not isinstance(args["id"], str):
            raise GraphQLError(
                f'Field "{name}" argument "id" of type "String!" is required, '
                f"but it was not provided.", code="GRAPHQL_VALIDATION_FAILED")
        if not caller.authorized:
            raise _not_authorized(path)
        target = model.find(args["id"], path)
        if name == "deploymentRollback":
            if not model.can_rollback(target):
                raise GraphQLError("Deployment cannot be rolled back", path=path,
                                   code="BAD_USER_INPUT")
            active = model.active()
            model.new_deployment(target, "rollback")
            if active is not None and model.faults.on("rollback-overridden-by-autodeploy"):
                # The service deploys main's head on its own, and that deploy lands on top.
                model.new_deployment(active, "deploy")
            return True
        if target.status == "REMOVED":
            raise GraphQLError("Deployment cannot be redeployed", path=path,
                               code="BAD_USER_INPUT")
        return model.obj(model.new_deployment(target, "redeploy"))
    raise GraphQLError("Subscriptions are not supported over HTTP",
                       code="GRAPHQL_VALIDATION_FAILED")


def _deployments(model: RailwayModel, caller: Caller, args: dict[str, Any],
                 path: list[str]) -> Any:
    spec = args.get("input")
    if not isinstance(spec, dict):
        raise GraphQLError('Field "deployments" argument "input" of type '
                           '"DeploymentListInput!" is required, but it was not provided.',
                           code="GRAPHQL_VALIDATION_FAILED")
    if spec.get("projectId") not in (None, caller.project_id) or \
            spec.get("environmentId") not in (None, caller.environment_id):
        raise _not_authorized(path)
    items = model.ordered()
    if spec.get("serviceId") not in (None, IDS["service"]):
        items = []
    status = spec.get("status") or {}
    if isinstance(status, dict):
        if status.get("in"):
            items = [d for d in items if model.status(d) in status["in"]]
        if status.get("notIn"):
            items = [d for d in items if model.status(d) not in status["notIn"]]
    first = args.get("first")
    after = args.get("after")
    if after:
        ids = [d.id for d in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    page = items[:first] if isinstance(first, int) and first >= 0 else items
    return Obj("DeploymentDeploymentsConnection", {
        "edges": [Obj("DeploymentDeploymentsConnectionEdge",
                      {"node": model.obj(d), "cursor": d.id}) for d in page],
        "pageInfo": Obj("PageInfo", {
            "hasNextPage": len(items) > len(page),
            "hasPreviousPage": bool(after),
            "startCursor": page[0].id if page else None,
            "endCursor": page[-1].id if page else None,
        }),
    })


def _project(value: Any, node: FieldNode, path: list[str]) -> Any:
    """Keep exactly the selected fields, and reject selections a real schema would reject."""
    if value is None:
        return None  # a nullable object field without a value
    if isinstance(value, list):
        return [_project(v, node, path) for v in value]
    if isinstance(value, Obj):
        if node.selections is None:
            raise GraphQLError(
                f'Field "{node.name}" of type "{value.typename}" must have a selection of '
                f'subfields. Did you mean "{node.name} {{ ... }}"?',
                code="GRAPHQL_VALIDATION_FAILED")
        out: dict[str, Any] = {}
        for sub in node.selections:
            if sub.name == "__typename":
                out[sub.key] = value.typename
                continue
            if sub.name not in value.fields:
                raise GraphQLError(
                    f'Cannot query field "{sub.name}" on type "{value.typename}".',
                    code="GRAPHQL_VALIDATION_FAILED")
            out[sub.key] = _project(value.fields[sub.name], sub, [*path, sub.key])
        return out
    if node.selections is not None:
        typ = {bool: "Boolean!", str: "String!", Json: "JSON"}.get(type(value), "scalar")
        raise GraphQLError(
            f'Field "{node.name}" must not have a selection since type "{typ}" has no '
            f"subfields.", code="GRAPHQL_VALIDATION_FAILED")
    return dict(value) if isinstance(value, Json) else value


# -- HTTP -------------------------------------------------------------------------------------

def build_app(dir: Path, deploy_seconds: float = 1.0) -> Any:
    """The Starlette app of the fake, configured from ``dir/state.json``."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    state = json.loads((dir / "state.json").read_text())
    model = RailwayModel(dir, state["secrets"]["railway_token"],
                         state["settings"]["git_sha"], deploy_seconds)

    def caller_of(request: Request) -> Caller:
        project_token = request.headers.get("project-access-token")
        if project_token and hmac.compare_digest(project_token.encode(), model.token.encode()):
            return Caller(True, IDS["project"], IDS["environment"])
        # The configured token is a project token: as a bearer token Railway refuses it.
        return Caller(False)

    def reply(body: dict[str, Any], status: int = 200) -> Response:
        return JSONResponse(body, status_code=status, headers={
            "x-ratelimit-limit": "10000", "x-ratelimit-remaining": "9990",
        })

    async def graphql(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return reply({"errors": [{"message": "POST body sent invalid JSON."}]}, 400)
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return reply({"errors": [{"message": "GraphQL operations must contain a "
                                                 "non-empty `query`."}]}, 400)
        variables = body.get("variables") or {}
        if not isinstance(variables, dict):
            return reply({"errors": [{"message": "Variables must be an object."}]}, 400)
        try:
            ops = parse(body["query"])
            wanted = body.get("operationName")
            if wanted:
                ops = [o for o in ops if o.name == wanted]
                if not ops:
                    raise GraphQLError(f'Unknown operation named "{wanted}".')
            elif len(ops) > 1:
                raise GraphQLError("Must provide operation name if query contains multiple "
                                   "operations.")
            data, errors = execute(model, caller_of(request), ops[0], dict(variables))
        except GraphQLError as exc:
            return reply({"errors": [exc.to_dict()], "data": None})
        out: dict[str, Any] = {"data": data}
        if errors:
            out["errors"] = [e.to_dict() for e in errors]
            # Railway's non-null roots null the whole data object on error.
            out["data"] = None
        return reply(out)

    async def health(request: Request) -> Response:
        return reply({"ok": True})

    async def fallback(request: Request, exc: Exception) -> Response:
        return reply({"errors": [{"message": "Not Found"}]}, 404)

    return Starlette(
        routes=[Route("/graphql/v2", graphql, methods=["POST"]), Route("/health", health)],
        exception_handlers={404: fallback, 405: fallback},
    )


class RailwayPart(HttpFakePart):
    """The Railway contract fake as a part of the reference stack."""

    name = "railway"
    ports = ("railway",)
    faults = FAULTS
    module = "opsready_stack.railway_fake"
    health = (("railway", "/health"),)
    urls = (("railway", "railway", "/graphql/v2"),)
    # Deployments take this long to go from DEPLOYING to SUCCESS after a rollback/redeploy:
    # long enough that a drill sees them deploying, short enough to run the drill often.
    deploy_seconds = 0.3

    def extra_args(self, ctx: StackContext) -> list[str]:
        return ["--deploy-seconds", str(self.deploy_seconds)]

    def env_config(self, ctx: StackContext) -> dict[str, Any]:
        return {
            "railway": {
                "api_url": ctx.urls["railway"],
                "token": ctx.secrets["railway_token"],
                "token_kind": "project",
                "project_id": IDS["project"],
                "environment_id": IDS["environment"],
                "service_id": IDS["service"],
                "drill_timeout_s": 30,
                "drill_poll_s": 0.1,
            }
        }


def main() -> None:
    parser = argparse.ArgumentParser(description="Railway public GraphQL contract fake")
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--deploy-seconds", type=float, default=1.0)
    args = parser.parse_args()

    import uvicorn

    uvicorn.run(build_app(args.dir, args.deploy_seconds), host="127.0.0.1", port=args.port,
                log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
