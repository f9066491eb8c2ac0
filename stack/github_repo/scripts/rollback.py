#!/usr/bin/env python3
"""Roll the Relay API back to its previous successful Railway deployment.

Usage:
    RAILWAY_TOKEN=... python scripts/rollback.py --project P --environment E --service S [--dry-run]

It lists the service's SUCCESS deployments through Railway's public GraphQL API, picks the
newest one that is not the active deployment and has ``canRollback``, calls
``deploymentRollback`` on it, and waits until Railway reports the new deployment as SUCCESS.
A markdown incident note is written next to it for the post-mortem.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
import urllib.request
from pathlib import Path

API_URL = os.environ.get("RAILWAY_API_URL", "https://backboard.railway.com/graphql/v2")

DEPLOYMENTS = """
query($input: DeploymentListInput!) {
  deployments(input: $input, first: 10) {
    edges { node { id status createdAt canRollback canRedeploy staticUrl } }
  }
}
"""

ROLLBACK = "mutation($id: String!) { deploymentRollback(id: $id) }"


def graphql(query: str, variables: dict[str, object], token: str, token_kind: str) -> dict:
    # Project tokens go in their own header; account and team tokens are bearer tokens.
    headers = {"Content-Type": "application/json"}
    if token_kind == "project":
        headers["Project-Access-Token"] = token
    else:
        headers["Authorization"] = f"Bearer {token}"
    body = json.dumps({"query": query, "variables": variables}).encode()
    req = urllib.request.Request(API_URL, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        payload = json.load(resp)
    # Railway reports GraphQL errors with HTTP 200.
    if payload.get("errors"):
        messages = "; ".join(e.get("message", "?") for e in payload["errors"])
        raise SystemExit(f"railway: {messages}")
    return payload["data"]


def deployments(args: argparse.Namespace, token: str) -> list[dict]:
    data = graphql(
        DEPLOYMENTS,
        {"input": {
            "projectId": args.project,
            "environmentId": args.environment,
            "serviceId": args.service,
            "status": {"in": ["SUCCESS"]},
        }},
        token,
        args.token_kind,
    )
    return [edge["node"] for edge in data["deployments"]["edges"]]


def write_note(target: dict, active: dict, path: Path) -> None:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    path.write_text(
        f"# Rollback {now}\n\n"
        f"- rolled back from deployment `{active['id']}` ({active['createdAt']})\n"
        f"- to deployment `{target['id']}` ({target['createdAt']})\n"
        f"- by {os.environ.get('GITHUB_ACTOR', os.environ.get('USER', 'unknown'))}\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", default=os.environ.get("RAILWAY_PROJECT_ID"))
    parser.add_argument("--environment", default=os.environ.get("RAILWAY_ENVIRONMENT_ID"))
    parser.add_argument("--service", default=os.environ.get("RAILWAY_SERVICE_ID"))
    parser.add_argument("--token-kind", choices=["project", "account", "team"], default="project")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--notes", type=Path, default=Path("rollback-notes.md"))
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    token = os.environ.get("RAILWAY_TOKEN")
    if not token or not (args.project and args.environment and args.service):
        parser.error("RAILWAY_TOKEN and the project, environment and service ids are required")

    nodes = deployments(args, token)
    if len(nodes) < 2:
        print("no previous successful deployment to roll back to", file=sys.stderr)
        return 1
    active, candidates = nodes[0], [n for n in nodes[1:] if n.get("canRollback")]
    if not candidates:
        print("no previous deployment can be rolled back to", file=sys.stderr)
        return 1
    target = candidates[0]
    print(f"rolling back {active['id']} -> {target['id']} ({target['createdAt']})")
    if args.dry_run:
        return 0

    graphql(ROLLBACK, {"id": target["id"]}, token, args.token_kind)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        current = deployments(args, token)
        if current and current[0]["id"] != active["id"]:
            print(f"active deployment is now {current[0]['id']}")
            write_note(target, active, args.notes)
            return 0
        time.sleep(5)
    print(f"rollback did not become active within {args.timeout:g}s", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
