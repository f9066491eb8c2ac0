"""The GitHub and Railway contract fakes, in process, through the real probes.

Each fake runs as its Starlette app behind a forwarding ``httpx.MockTransport``, so these
tests need no stack and take well under a second.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from opsready._errors import AccessRefused, UnexpectedResponse
from opsready.config import GithubConfig, RailwayConfig
from opsready.probes.github import GithubProbe
from opsready.probes.railway import RailwayProbe, rollback_calls
from opsready_stack.github_fake import REPO, REPO_DIR, VARIANTS_DIR
from opsready_stack.github_fake import build_app as github_app
from opsready_stack.railway_fake import IDS, parse
from opsready_stack.railway_fake import build_app as railway_app

GIT_SHA = "3f786850e387550fdab836ed7e6dc881de23001b"
GH_TOKEN = "gh-fake-token-0123456789"
RW_TOKEN = "rw-fake-token-0123456789"


def forward(app: Any) -> httpx.MockTransport:
    """A synchronous transport that hands every request to the ASGI ``app`` in process."""

    async def send(request: httpx.Request) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://fake") as client:
            return await client.request(request.method, request.url.raw_path.decode(),
                                        headers=request.headers, content=request.content)

    def handler(request: httpx.Request) -> httpx.Response:
        resp = asyncio.run(send(request))
        return httpx.Response(resp.status_code, headers=resp.headers, content=resp.content)

    return httpx.MockTransport(handler)


class Faults:
    def __init__(self, dir: Path) -> None:
        self.file = dir / "faults.json"
        self.set()

    def set(self, *names: str) -> None:
        self.file.write_text(json.dumps(list(names)))


@pytest.fixture
def stack_dir(tmp_path: Path) -> Path:
    (tmp_path / "state.json").write_text(json.dumps({
        "secrets": {"github_token": GH_TOKEN, "railway_token": RW_TOKEN},
        "settings": {"git_sha": GIT_SHA},
    }))
    return tmp_path


@pytest.fixture
def faults(stack_dir: Path) -> Faults:
    return Faults(stack_dir)


@pytest.fixture
def gh_transport(stack_dir: Path) -> httpx.MockTransport:
    return forward(github_app(stack_dir))


def gh_probe(transport: httpx.BaseTransport, token: str | None = GH_TOKEN) -> GithubProbe:
    cfg = GithubConfig(api_url="http://github.test", token=token, repo=REPO)  # type: ignore[arg-type]
    return GithubProbe(cfg, timeout=5, transport=transport)


@pytest.fixture
def gh(gh_transport: httpx.MockTransport) -> Iterator[GithubProbe]:
    probe = gh_probe(gh_transport)
    yield probe
    probe.close()


# -- GitHub fake ------------------------------------------------------------------------------

def test_github_fake_serves_the_healthy_repository(gh: GithubProbe) -> None:
    assert gh.head_sha() == GIT_SHA
    for number in (29, 30):
        pr = gh.pull(number)
        assert pr["merged"] is True and pr["merged_at"] and len(pr["merge_commit_sha"]) == 40
    assert gh.secret_names() == ["RAILWAY_TOKEN", "DATABASE_PUBLIC_URL", "ADMIN_KEY", "DEV_KEY"]
    for file in ("deploy.yml", "backup.yml", "slo-report.yml", "restore-drill.yml"):
        workflow = gh.workflow(file)
        assert workflow is not None and workflow["state"] == "active"
        run = gh.latest_run(file, status="completed")
        assert run is not None and run["conclusion"] == "success" and run["head_branch"] == "main"
    deploy = gh.latest_run("deploy.yml")
    assert deploy is not None and deploy["head_sha"] == GIT_SHA
    backup = gh.latest_run("backup.yml", event="schedule")
    assert backup is not None and backup["event"] == "schedule"
    # A newer failed run on another branch must not count for main.
    other = gh.latest_run("deploy.yml", branch="feature/chat-mvp", status=None)
    assert other is not None and other["conclusion"] == "failure"


def test_github_fake_contents_round_trip(gh: GithubProbe) -> None:
    path = ".github/workflows/restore-drill.yml"
    assert gh.get_file(path) == (REPO_DIR / path).read_text()
    assert gh.get_file("scripts/rollback.py") == (REPO_DIR / "scripts/rollback.py").read_text()
    assert gh.get_file("docs/nothing-here.md") is None
    assert gh.get_file("../github_fake.py") is None
    with pytest.raises(UnexpectedResponse, match="directory"):
        gh.get_file(".github/workflows")


def test_github_fake_requires_the_token(gh_transport: httpx.MockTransport) -> None:
    with pytest.raises(AccessRefused):
        gh_probe(gh_transport, token="wrong-token-123").pull(29)
    with pytest.raises(AccessRefused):
        gh_probe(gh_transport, token=None).secret_names()


def test_github_fake_answers_like_github(gh_transport: httpx.MockTransport) -> None:
    with httpx.Client(transport=gh_transport, base_url="http://github.test") as client:
        auth = {"Authorization": f"Bearer {GH_TOKEN}"}
        for path, status in ((f"/repos/{REPO}/pulls/30", 200), (f"/repos/{REPO}/pulls/31", 404),
                             ("/repos/other/repo/pulls/30", 404), ("/nothing", 404)):
            resp = client.get(path, headers=auth)
            assert resp.status_code == status, path
            assert resp.headers["x-ratelimit-remaining"].isdigit(), path
            assert int(resp.headers["x-ratelimit-reset"]) > 0
        resp = client.get(f"/repos/{REPO}/pulls/30")
        assert resp.status_code == 401 and "x-ratelimit-remaining" in resp.headers
        resp = client.get(f"/repos/{REPO}/pulls/30",
                          headers={**auth, "X-GitHub-Api-Version": "1999-01-01"})
        assert resp.status_code == 400
        content = client.get(f"/repos/{REPO}/contents/scripts/rollback.py", headers=auth).json()
        assert content["type"] == "file" and content["encoding"] == "base64"
        assert max(len(line) for line in content["content"].splitlines()) <= 60
        assert base64.b64decode(content["content"]) == (REPO_DIR / "scripts/rollback.py").read_bytes()
        secrets = client.get(f"/repos/{REPO}/actions/secrets", headers=auth).json()
        assert all(set(s) == {"name", "created_at", "updated_at"} for s in secrets["secrets"])


def test_github_fake_faults(gh: GithubProbe, faults: Faults) -> None:
    faults.set("pr-unmerged")
    pr = gh.pull(30)
    assert (pr["state"], pr["merged"], pr["merged_at"]) == ("open", False, None)
    assert gh.pull(29)["merged"] is True

    faults.set("secret-missing")
    assert "DEV_KEY" not in gh.secret_names()

    faults.set("slo-report-stale")
    stale = gh.latest_run("slo-report.yml")
    faults.set()
    fresh = gh.latest_run("slo-report.yml")
    assert stale is not None and fresh is not None
    assert stale["created_at"] < fresh["created_at"]

    faults.set("runbook-missing")
    assert gh.get_file("docs/runbooks/db-connections.md") is None

    faults.set("rollback-notes-only")
    notes = gh.get_file("scripts/rollback.py")
    assert notes == (VARIANTS_DIR / "rollback_notes_only.py").read_text()
    assert rollback_calls(notes) == []

    faults.set("no-drill-schedule")
    drill = gh.get_file(".github/workflows/restore-drill.yml")
    assert drill is not None and "schedule" not in drill and "workflow_dispatch" in drill

    faults.set()
    assert gh.pull(30)["merged"] is True
    assert "schedule:" in (gh.get_file(".github/workflows/restore-drill.yml") or "")
    assert rollback_calls(gh.get_file("scripts/rollback.py") or "")


# -- Railway fake -----------------------------------------------------------------------------

def rw_probe(stack_dir: Path, token: str = RW_TOKEN, kind: str = "project",
             transport: httpx.BaseTransport | None = None) -> RailwayProbe:
    cfg = RailwayConfig(api_url="http://railway.test/graphql/v2", token=token,  # type: ignore[arg-type]
                        token_kind=kind, project_id=IDS["project"],  # type: ignore[arg-type]
                        environment_id=IDS["environment"], service_id=IDS["service"])
    return RailwayProbe(cfg, timeout=5,
                        transport=transport or forward(railway_app(stack_dir, deploy_seconds=0.2)))


def test_railway_fake_token_and_history(stack_dir: Path, faults: Faults) -> None:
    probe = rw_probe(stack_dir)
    assert probe.token_check() == {"projectId": IDS["project"], "environmentId": IDS["environment"]}
    history = probe.deployments()
    assert len(history) >= 3
    successes = probe.deployments(["SUCCESS"])
    assert successes[0]["canRollback"] is False  # the active one
    target = probe.rollback_target()
    assert target is not None and target["id"] == successes[1]["id"]
    faults.set("no-rollback-target")
    assert probe.rollback_target() is None


def test_railway_fake_refuses_wrong_tokens(stack_dir: Path) -> None:
    transport = forward(railway_app(stack_dir))
    with pytest.raises(AccessRefused, match="Not Authorized"):
        rw_probe(stack_dir, token="wrong-token-123", transport=transport).deployments()
    # A project token sent as a bearer token is refused, as on Railway.
    with pytest.raises(AccessRefused):
        rw_probe(stack_dir, kind="account", transport=transport).token_check()


def test_railway_fake_rollback_and_redeploy_move_the_active_deployment(stack_dir: Path) -> None:
    probe = rw_probe(stack_dir)
    original = probe.active_deployment()
    target = probe.rollback_target()
    assert original is not None and target is not None
    assert probe.rollback(target["id"]) is True
    # The new deployment is DEPLOYING first: the active one has not changed yet.
    assert probe.active_deployment() == original
    rolled, _ = probe.wait_for_active_change(original["id"], timeout=5, poll=0.05)
    assert rolled is not None and rolled["id"] not in (original["id"], target["id"])
    new = probe.redeploy(original["id"])
    restored, _ = probe.wait_for_active_change(rolled["id"], timeout=5, poll=0.05)
    assert restored is not None and restored["id"] == new["id"]


def test_railway_fake_drill_through_the_probe(stack_dir: Path) -> None:
    drill = rw_probe(stack_dir).rollback_drill(timeout=5, poll=0.05)
    assert drill.rolled_back and drill.rolled_forward, drill
    assert drill.rollback_s is not None and drill.roll_forward_s is not None
    assert drill.notes == []


def test_railway_fake_validates_like_a_graphql_server(stack_dir: Path) -> None:
    with httpx.Client(transport=forward(railway_app(stack_dir)),
                      base_url="http://railway.test",
                      headers={"Project-Access-Token": RW_TOKEN}) as client:
        def ask(query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
            resp = client.post("/graphql/v2", json={"query": query, "variables": variables})
            assert resp.status_code == 200  # GraphQL errors come back with HTTP 200
            body: dict[str, Any] = resp.json()
            return body

        service = f'serviceId: "{IDS["service"]}"'
        wrong = ask('mutation { deploymentRollback(id: "x") { id } }')
        assert "must not have a selection" in wrong["errors"][0]["message"]
        # Validation is static: an unknown field fails even when no deployment matches.
        unknown = ask('query { deployments(input: {serviceId: "s"}) { edges { node { bogus } } } }')
        assert 'Cannot query field "bogus"' in unknown["errors"][0]["message"]
        missing = ask("query($input: DeploymentListInput!) "
                      "{ deployments(input: $input) { edges { node { id } } } }")
        assert "was not provided" in missing["errors"][0]["message"]
        listed = ask(f"query Q($first: Int) {{ deployments(input: {{{service}}}, first: $first) "
                     "{ edges { node { id ...on Deployment { status } } } } }", {"first": 2})
        assert "fragments" in listed["errors"][0]["message"]
        aliased = ask(f"{{ d: deployments(input: {{{service}}}, first: 2) "
                      "{ edges { node { key: id status } } } }")
        nodes = [e["node"] for e in aliased["data"]["d"]["edges"]]
        assert len(nodes) == 2 and set(nodes[0]) == {"key", "status"}


def test_railway_fake_parser_reads_operations() -> None:
    ops = parse("""
        # a comment
        query List($input: DeploymentListInput!, $first: Int = 10) {
          deployments(input: $input, first: $first) { edges { node { id, status } } }
        }
    """)
    assert len(ops) == 1
    op = ops[0]
    assert (op.kind, op.name) == ("query", "List")
    assert op.variables == {"input": ("DeploymentListInput!", None), "first": ("Int", 10)}
    assert [f.name for f in op.selections] == ["deployments"]
