"""The GitHub and Railway contract fakes, in process, through the real probes: the healthy
answers, every fault and variant of the two parts, and GraphQL validation.

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
from opsready.probes.github import GithubProbe, newest_concluded
from opsready.probes.railway import RailwayProbe
from opsready_stack.github_fake import (
    REPO,
    REPO_DIR,
    ROLLBACK_SCRIPT,
    ROLLBACK_STEP,
    VARIANTS_DIR,
    WORKFLOWS,
)
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
        assert pr.merged and pr.merged_at and pr.merge_commit_sha and len(pr.merge_commit_sha) == 40
    assert gh.secret_names() == ["RAILWAY_TOKEN", "DATABASE_PUBLIC_URL", "ADMIN_KEY", "DEV_KEY"]
    assert gh.environments() == ["production"]
    assert gh.secret_names("environment", "production") == []
    assert gh.secret_names("organization") == []
    for file in WORKFLOWS:
        workflow = gh.workflow(file)
        assert workflow is not None and workflow.active
        run = newest_concluded(gh.runs(workflow, branch="main", status="completed"))
        assert run is not None and run.conclusion == "success" and run.head_branch == "main"
    deploy = gh.runs("deploy.yml", branch="main", status="success", limit=1)
    assert deploy[0].head_sha == GIT_SHA
    backup = gh.runs("backup.yml", event="schedule", limit=1)
    assert backup[0].event == "schedule"
    # A newer failed run on another branch must not count for main.
    other = gh.runs("deploy.yml", branch="feature/chat-mvp", limit=1)
    assert other[0].conclusion == "failure"
    jobs = gh.run_jobs(gh.runs("rollback.yml", limit=1)[0].id)
    assert [s.name for s in jobs[0].steps if s.conclusion == "success"][2] == ROLLBACK_STEP
    same = gh.compare(GIT_SHA, "main")
    assert (same.status, same.ahead_by, same.files) == ("identical", 0, ())


def test_github_fake_contents_round_trip(gh: GithubProbe) -> None:
    path = ".github/workflows/restore-drill.yml"
    assert gh.get_file(path) == (REPO_DIR / path).read_text()
    assert gh.get_file(ROLLBACK_SCRIPT) == (REPO_DIR / ROLLBACK_SCRIPT).read_text()
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
                             ("/repos/other/repo/pulls/30", 404), ("/nothing", 404),
                             (f"/repos/{REPO}/environments/staging/secrets", 404),
                             (f"/repos/{REPO}/compare/{'0' * 40}...main", 404),
                             (f"/repos/{REPO}/actions/runs/1/jobs", 404)):
            resp = client.get(path, headers=auth)
            assert resp.status_code == status, path
            assert resp.headers["x-ratelimit-remaining"].isdigit(), path
            assert int(resp.headers["x-ratelimit-reset"]) > 0
        resp = client.get(f"/repos/{REPO}/pulls/30")
        assert resp.status_code == 401 and "x-ratelimit-remaining" in resp.headers
        resp = client.get(f"/repos/{REPO}/pulls/30",
                          headers={**auth, "X-GitHub-Api-Version": "1999-01-01"})
        assert resp.status_code == 400
        content = client.get(f"/repos/{REPO}/contents/{ROLLBACK_SCRIPT}", headers=auth).json()
        assert content["type"] == "file" and content["encoding"] == "base64"
        assert max(len(line) for line in content["content"].splitlines()) <= 60
        assert base64.b64decode(content["content"]) == (REPO_DIR / ROLLBACK_SCRIPT).read_bytes()
        secrets = client.get(f"/repos/{REPO}/actions/secrets", headers=auth).json()
        assert all(set(s) == {"name", "created_at", "updated_at"} for s in secrets["secrets"])
        unknown = client.get(f"/repos/{REPO}/commits/{'f' * 40}", headers=auth)
        assert unknown.status_code == 422


def test_github_fake_faults(gh: GithubProbe, faults: Faults) -> None:
    faults.set("pr-unmerged")
    pr = gh.pull(30)
    assert (pr.state, pr.merged, pr.merged_at) == ("open", False, None)
    assert gh.pull(29).merged

    faults.set("secret-missing")
    assert "DEV_KEY" not in gh.secret_names()

    faults.set("secrets-across-scopes")
    assert gh.secret_names() == ["ADMIN_KEY", "DEV_KEY"]
    assert gh.secret_names("environment", "production") == ["RAILWAY_TOKEN"]
    assert gh.secret_names("organization") == ["DATABASE_PUBLIC_URL"]

    faults.set("slo-report-stale")
    stale = gh.runs("slo-report.yml", limit=1)[0]
    faults.set()
    fresh = gh.runs("slo-report.yml", limit=1)[0]
    assert stale.created_at < fresh.created_at

    faults.set("runbook-missing")
    assert gh.get_file("docs/runbooks/db-connections.md") is None

    faults.set("rollback-notes-only")
    assert gh.get_file(ROLLBACK_SCRIPT) == (VARIANTS_DIR / "rollback_notes_only.py").read_text()
    faults.set("rollback-shell-script")
    assert gh.get_file(ROLLBACK_SCRIPT) == (VARIANTS_DIR / "rollback.sh").read_text()
    faults.set("rollback-run-failed")
    run = gh.runs("rollback.yml", limit=1)[0]
    steps = {s.name: s.conclusion for s in gh.run_jobs(run.id)[0].steps}
    assert run.conclusion == "failure" and steps[ROLLBACK_STEP] == "failure"

    for fault in ("no-drill-schedule", "drill-run-by-hand"):
        faults.set(fault)
        drill = gh.get_file(".github/workflows/restore-drill.yml")
        assert drill is not None and "schedule" not in drill and "workflow_dispatch" in drill

    faults.set("backup-workflow-disabled")
    backup = gh.workflow("backup.yml")
    assert backup is not None and backup.state == "disabled_manually"

    faults.set("runs-cancelled")
    for file in WORKFLOWS:
        assert gh.runs(file, limit=1)[0].conclusion in ("cancelled", "skipped"), file

    faults.set()
    assert gh.pull(30).merged
    assert "schedule:" in (gh.get_file(".github/workflows/restore-drill.yml") or "")


@pytest.mark.parametrize(("fault", "changed"), [
    ("docs-commit-after-deploy", ("README.md", "docs/runbooks/latency.md")),
    ("head-not-deployed", ("src/relay/api.py",)),
])
def test_github_fake_commit_on_top_of_the_deployed_one(gh: GithubProbe, faults: Faults,
                                                       fault: str, changed: tuple[str, ...]) -> None:
    faults.set(fault)
    head = gh.head_sha()
    assert head != GIT_SHA
    since = gh.compare(GIT_SHA, head)
    assert (since.status, since.ahead_by, since.files) == ("ahead", 1, changed)
    assert gh.compare(head, GIT_SHA).status == "behind"
    assert gh.get_file("docs/runbooks/outage.md", ref=head) is not None
    deployed = gh.runs("deploy.yml", branch="main", status="success", limit=1)[0]
    assert deployed.head_sha == GIT_SHA


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
    assert [d.status for d in history] == ["SUCCESS", "FAILED"] + ["REMOVED"] * 4
    active = probe.active_deployment()
    assert active == probe.latest_deployment() == history[0]
    assert active is not None and active.commit == GIT_SHA and not active.can_rollback
    # Superseded deployments are REMOVED and still rollback-able within the retention.
    target = probe.rollback_target(active)
    assert target is not None and target.status == "REMOVED" and target.can_rollback
    assert target.id == history[2].id and target.commit != GIT_SHA
    assert not history[-1].can_rollback  # older than the retention
    faults.set("no-rollback-target")
    assert probe.rollback_target(active) is None


def test_railway_fake_variants_change_what_deployments_say(stack_dir: Path,
                                                           faults: Faults) -> None:
    probe = rw_probe(stack_dir)
    faults.set("railway-image-source")
    active = probe.active_deployment()
    assert active is not None and active.commit is None
    assert active.image is not None and "@sha256:" in active.image
    faults.set("railway-app-sleeping")
    sleeping = probe.active_deployment()
    assert sleeping is not None and sleeping.status == "SLEEPING"
    assert probe.deployments(["SUCCESS"]) == []  # "the newest SUCCESS" would find nothing


def test_railway_fake_refuses_wrong_tokens(stack_dir: Path) -> None:
    transport = forward(railway_app(stack_dir))
    with pytest.raises(AccessRefused, match="Not Authorized"):
        rw_probe(stack_dir, token="wrong-token-123", transport=transport).deployments()
    # A project token sent as a bearer token is refused, as on Railway.
    with pytest.raises(AccessRefused):
        rw_probe(stack_dir, kind="account", transport=transport).token_check()


def test_railway_fake_rollback_supersedes_the_active_deployment(stack_dir: Path) -> None:
    probe = rw_probe(stack_dir)
    original = probe.active_deployment()
    assert original is not None
    target = probe.rollback_target(original)
    assert target is not None
    assert probe.rollback(target.id) is True
    # The new deployment is DEPLOYING first: the one before it still serves.
    latest = probe.latest_deployment()
    assert latest is not None and latest.status == "DEPLOYING"
    assert probe.active_deployment() == original
    rolled, _ = probe.wait_for_active(lambda d: d.id != original.id, timeout=5, poll=0.05)
    assert rolled is not None and rolled.id not in (original.id, target.id)
    assert rolled.source == target.source
    old = probe.deployment(original.id)
    assert old.status == "REMOVED" and old.can_rollback


@pytest.mark.parametrize("variant", [None, "railway-image-source", "railway-app-sleeping"])
def test_railway_fake_drill_through_the_probe(stack_dir: Path, faults: Faults,
                                              variant: str | None) -> None:
    faults.set(*([variant] if variant else []))
    drill = rw_probe(stack_dir).rollback_drill(timeout=5, poll=0.05)
    assert drill.rolled_back and drill.rolled_forward, drill
    assert drill.rollback_s is not None and drill.roll_forward_s is not None
    assert drill.notes == []
    assert drill.after_roll_forward is not None
    assert drill.after_roll_forward.source == drill.original.source


def test_railway_fake_autodeploy_overrides_the_rollback(stack_dir: Path, faults: Faults) -> None:
    faults.set("rollback-overridden-by-autodeploy")
    drill = rw_probe(stack_dir).rollback_drill(timeout=5, poll=0.05)
    # The active deployment changed, but it runs the original's code, not the target's.
    assert drill.after_rollback is not None and drill.after_rollback.id != drill.original.id
    assert drill.after_rollback.source == drill.original.source
    assert not drill.rolled_back
    assert drill.rolled_forward


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
