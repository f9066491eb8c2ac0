"""GithubProbe and RailwayProbe against scripted HTTP answers (httpx.MockTransport)."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from fake_clock import Clock
from opsready._errors import AccessRefused, ProbeError, UnexpectedResponse
from opsready.config import GithubConfig, RailwayConfig
from opsready.probes.github import GithubProbe, RateLimited, WorkflowRun, newest_concluded
from opsready.probes.railway import Deployment, RailwayProbe, pick_rollback_target

ROOT = Path(__file__).resolve().parents[1]
NOW = 1_700_000_000.0
TOKEN = "gh-test-token-0123456789"

Handler = Callable[[httpx.Request], httpx.Response]


def github(handler: Handler, clock: Clock | None = None, **cfg: object) -> GithubProbe:
    clock = clock or Clock(NOW)
    config = GithubConfig.model_validate({"repo": "acme/relay", "token": TOKEN,
                                          "api_url": "https://gh.test", **cfg})
    return GithubProbe(config, timeout=5, transport=httpx.MockTransport(handler),
                       sleep=clock.sleep, clock=clock.time)


def limits(remaining: int, reset: float) -> dict[str, str]:
    return {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": str(remaining),
            "x-ratelimit-reset": str(int(reset))}


# -- GitHub ---------------------------------------------------------------------------------

def test_github_sends_the_documented_headers() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"sha": "a" * 40})

    assert github(handler).head_sha() == "a" * 40
    req = seen[0]
    assert req.url.path == "/repos/acme/relay/commits/main"
    assert req.headers["authorization"] == f"Bearer {TOKEN}"
    assert req.headers["accept"] == "application/vnd.github+json"
    assert req.headers["x-github-api-version"] == "2022-11-28"
    assert req.headers["user-agent"].startswith("opsready/")


def test_github_without_token_sends_no_authorization() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"number": 1, "merged": True, "merged_at": "x"})

    github(handler, token=None).pull(1)
    assert "authorization" not in seen[0].headers


def test_exhausted_rate_limit_waits_for_the_reset_within_the_bound() -> None:
    clock = Clock(NOW)
    calls: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(clock.now)
        # The first answer uses the last request of the window; it resets 20 s later.
        remaining = 0 if len(calls) == 1 else 4999
        return httpx.Response(200, headers=limits(remaining, NOW + 20),
                              json={"total_count": 1, "secrets": [{"name": "DEV_KEY"}]})

    probe = github(handler, clock, rate_limit_wait_max_s=30)
    assert probe.secret_names() == ["DEV_KEY"]
    assert probe.secret_names() == ["DEV_KEY"]
    assert clock.slept == [20.0]
    assert calls == [NOW, NOW + 20]


def test_exhausted_rate_limit_beyond_the_bound_raises_without_waiting() -> None:
    clock = Clock(NOW)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=limits(0, NOW + 600),
                              json={"total_count": 0, "secrets": []})

    probe = github(handler, clock, rate_limit_wait_max_s=60)
    probe.secret_names()
    with pytest.raises(RateLimited, match=r"resets in 600s.*rate_limit_wait_max_s"):
        probe.secret_names()
    assert clock.slept == []


def test_403_rate_limited_is_retried_after_the_reset() -> None:
    clock = Clock(NOW)
    answers = [
        httpx.Response(403, headers=limits(0, NOW + 7), json={"message": "API rate limit exceeded"}),
        httpx.Response(200, headers=limits(4999, NOW + 3600), json={"sha": "b" * 40}),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        return answers.pop(0)

    assert github(handler, clock).head_sha() == "b" * 40
    assert clock.slept == [7.0]


def test_429_with_retry_after_is_retried() -> None:
    clock = Clock(NOW)
    answers = [
        httpx.Response(429, headers={"retry-after": "3"}, json={"message": "secondary rate limit"}),
        httpx.Response(200, json={"sha": "c" * 40}),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        return answers.pop(0)

    assert github(handler, clock).head_sha() == "c" * 40
    assert clock.slept == [3.0]


def test_retry_after_beyond_the_bound_raises() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, headers={"retry-after": "900"}, json={"message": "slow down"})

    with pytest.raises(RateLimited):
        github(handler, rate_limit_wait_max_s=60).head_sha()


def test_401_is_access_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"message": "Bad credentials"})

    with pytest.raises(AccessRefused, match="401") as info:
        github(handler).pull(29)
    assert TOKEN not in str(info.value)


def test_403_without_rate_limit_is_access_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, headers=limits(4000, NOW + 60),
                              json={"message": "Resource not accessible by integration"})

    with pytest.raises(AccessRefused):
        github(handler).secret_names()


def test_get_file_decodes_base64_and_maps_404_and_directories() -> None:
    text = "print('deploymentRollback')\n" * 10
    encoded = base64.b64encode(text.encode()).decode()
    wrapped = "\n".join(encoded[i:i + 60] for i in range(0, len(encoded), 60))

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.params["ref"] == "main"
        path = request.url.path.removeprefix("/repos/acme/relay/contents/")
        if path == "scripts/rollback.py":
            return httpx.Response(200, json={"type": "file", "encoding": "base64",
                                             "content": wrapped})
        if path == "scripts":
            return httpx.Response(200, json=[{"type": "file", "name": "rollback.py"}])
        return httpx.Response(404, json={"message": "Not Found"})

    probe = github(handler)
    assert probe.get_file("scripts/rollback.py") == text
    assert probe.get_file("docs/missing.md") is None
    with pytest.raises(UnexpectedResponse, match="directory"):
        probe.get_file("scripts")


def test_workflow_matches_by_path_suffix_and_runs_filter() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/actions/workflows"):
            return httpx.Response(200, json={"total_count": 2, "workflows": [
                {"id": 1, "name": "Deploy", "path": ".github/workflows/deploy.yml",
                 "state": "active"},
                {"id": 2, "name": "Backup", "path": ".github/workflows/backup.yml",
                 "state": "disabled_manually"},
            ]})
        if request.url.path.endswith("/workflows/2/runs"):
            return httpx.Response(200, json={"total_count": 2, "workflow_runs": [
                {"id": 10, "created_at": "2025-10-01T02:00:00Z", "status": "completed",
                 "conclusion": "success", "event": "schedule", "head_sha": "a" * 40},
                {"id": 11, "created_at": "2025-10-02T02:00:00Z", "status": "completed",
                 "conclusion": "success", "event": "schedule", "head_sha": "b" * 40},
            ]})
        return httpx.Response(404, json={"message": "Not Found"})

    probe = github(handler)
    backup = probe.workflow("backup.yml")
    assert backup is not None and backup.state == "disabled_manually" and not backup.active
    deploy = probe.workflow("Deploy")
    assert deploy is not None and deploy.id == 1
    assert probe.workflow("nightly.yml") is None
    runs = probe.runs(backup, branch="main", event="schedule", status="success")
    assert [r.id for r in runs] == [11, 10]  # newest first, whatever the server's order
    assert runs[0].created_at == dt.datetime(2025, 10, 2, 2, tzinfo=dt.UTC)
    params = seen[-1].url.params
    assert (params["branch"], params["status"], params["event"]) == ("main", "success", "schedule")
    assert probe.runs("unknown.yml") == []


def run(minutes_ago: int, conclusion: str | None, status: str = "completed") -> WorkflowRun:
    return WorkflowRun(id=minutes_ago, event="push", status=status, conclusion=conclusion,
                       head_branch="main", head_sha="a" * 40, html_url=None,
                       created_at=dt.datetime(2025, 10, 2, tzinfo=dt.UTC)
                       - dt.timedelta(minutes=minutes_ago))


def test_newest_concluded_passes_over_cancelled_skipped_and_unfinished_runs() -> None:
    runs = [run(1, None, "in_progress"), run(2, "cancelled"), run(3, "skipped"),
            run(4, "failure"), run(5, "success")]
    newest = newest_concluded(runs)
    assert newest is not None and newest.id == 4
    assert newest_concluded(runs[:3]) is None
    assert newest_concluded([run(9, "success"), run(2, "cancelled")]) == run(9, "success")


def test_secret_inventory_reads_every_scope_and_says_where() -> None:
    answers = {
        "/repos/acme/relay/actions/secrets": (200, ["ADMIN_KEY"]),
        "/repos/acme/relay/environments": (200, None),
        "/repos/acme/relay/environments/production/secrets": (200, ["RAILWAY_TOKEN"]),
        "/repos/acme/relay/environments/staging/secrets": (200, []),
        "/repos/acme/relay/actions/organization-secrets": (200, ["DATABASE_PUBLIC_URL"]),
    }

    def handler(request: httpx.Request) -> httpx.Response:
        status, names = answers[request.url.path]
        if names is None:
            return httpx.Response(200, json={"total_count": 2, "environments": [
                {"name": "production"}, {"name": "staging"}]})
        return httpx.Response(status, json={"total_count": len(names),
                                            "secrets": [{"name": n} for n in names]})

    inventory = github(handler).secret_inventory(["repository", "environment"])
    assert [(s.name, s.where) for s in inventory.secrets] == [
        ("ADMIN_KEY", "repository"), ("RAILWAY_TOKEN", "environment production"),
        ("DATABASE_PUBLIC_URL", "organization")]
    # A repository outside an organization answers 404 for organization secrets.
    answers["/repos/acme/relay/actions/organization-secrets"] = (404, [])
    only = github(handler).secret_inventory(["repository"], environments=["production"])
    assert [s.name for s in only.secrets] == ["ADMIN_KEY", "RAILWAY_TOKEN"]


def test_secret_inventory_raises_only_for_the_scopes_that_count() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/organization-secrets"):
            return httpx.Response(403, json={"message": "Resource not accessible by integration"})
        if request.url.path.endswith("/environments"):
            return httpx.Response(200, json={"total_count": 0, "environments": []})
        return httpx.Response(200, json={"total_count": 1, "secrets": [{"name": "DEV_KEY"}]})

    inventory = github(handler).secret_inventory(["repository", "environment"])
    assert [s.name for s in inventory.secrets] == ["DEV_KEY"]
    assert "403" in inventory.unreadable["organization"]
    with pytest.raises(AccessRefused):
        github(handler).secret_inventory(["repository", "organization"])


def test_compare_and_commit_sha() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/repos/acme/relay/compare/aaaaaaa...main":
            return httpx.Response(200, json={"status": "ahead", "ahead_by": 2, "behind_by": 0,
                                             "files": [{"filename": "docs/a.md"},
                                                       {"filename": "README.md"}]})
        if request.url.path == "/repos/acme/relay/commits/v1.2.3":
            return httpx.Response(200, json={"sha": "c" * 40})
        return httpx.Response(422, json={"message": "No commit found for SHA: nope"})

    probe = github(handler)
    since = probe.compare("aaaaaaa", "main")
    assert (since.status, since.ahead_by, since.files, since.files_complete) == (
        "ahead", 2, ("docs/a.md", "README.md"), True)
    assert probe.commit_sha("v1.2.3") == "c" * 40
    assert probe.commit_sha("nope") is None
    with pytest.raises(UnexpectedResponse, match="not found"):
        probe.head_sha("gone")


def test_run_jobs_reads_the_steps() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/repos/acme/relay/actions/runs/7/jobs"
        return httpx.Response(200, json={"total_count": 1, "jobs": [{
            "id": 70, "name": "rollback", "status": "completed", "conclusion": "failure",
            "steps": [{"number": 1, "name": "Set up job", "status": "completed",
                       "conclusion": "success"},
                      {"number": 2, "name": "Roll back", "status": "completed",
                       "conclusion": "failure"}]}]})

    jobs = github(handler).run_jobs(7)
    assert jobs[0].name == "rollback" and jobs[0].conclusion == "failure"
    assert [(s.name, s.conclusion) for s in jobs[0].steps] == [
        ("Set up job", "success"), ("Roll back", "failure")]


def test_secret_names_follow_pages() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        names = [f"S{i}" for i in range(100)] if page == 1 else ["LAST"]
        return httpx.Response(200, json={"total_count": 101,
                                          "secrets": [{"name": n} for n in names]})

    names = github(handler).secret_names()
    assert len(names) == 101 and names[-1] == "LAST"


def test_malformed_answers_are_probe_errors() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"unexpected": True})

    probe = github(handler)
    for call in (probe.head_sha, probe.secret_names, probe.workflows, lambda: probe.pull(1),
                 lambda: probe.runs("deploy.yml"), lambda: probe.compare("a", "b"),
                 lambda: probe.run_jobs(1)):
        with pytest.raises(ProbeError):
            call()


# -- Railway --------------------------------------------------------------------------------

RAILWAY_TOKEN = "rw-test-token-0123456789"


def railway(handler: Handler, **cfg: object) -> RailwayProbe:
    config = RailwayConfig.model_validate({
        "api_url": "https://railway.test/graphql/v2", "token": RAILWAY_TOKEN,
        "project_id": "p1", "environment_id": "e1", "service_id": "s1", **cfg})
    return RailwayProbe(config, timeout=5, transport=httpx.MockTransport(handler))


def test_project_tokens_use_their_own_header() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"data": {"projectToken": {"projectId": "p1",
                                                                   "environmentId": "e1"}}})

    assert railway(handler).token_check() == {"projectId": "p1", "environmentId": "e1"}
    req = seen[0]
    assert req.method == "POST" and req.url.path == "/graphql/v2"
    assert req.headers["project-access-token"] == RAILWAY_TOKEN
    assert "authorization" not in req.headers
    assert "projectToken" in json.loads(req.content)["query"]


def test_account_tokens_are_bearer_tokens() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"data": {"me": {"id": "u1"}}})

    railway(handler, token_kind="account").token_check()
    assert seen[0].headers["authorization"] == f"Bearer {RAILWAY_TOKEN}"
    assert "project-access-token" not in seen[0].headers


def test_graphql_not_authorized_is_access_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        # Railway reports refused credentials with HTTP 200.
        return httpx.Response(200, json={"data": None, "errors": [{"message": "Not Authorized"}]})

    with pytest.raises(AccessRefused, match="Not Authorized") as info:
        railway(handler).deployments()
    assert RAILWAY_TOKEN not in str(info.value)


def test_other_graphql_errors_are_unexpected_responses() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"data": None, "errors": [
            {"message": 'Cannot query field "bogus" on type "Deployment".'}]})

    with pytest.raises(UnexpectedResponse, match="bogus"):
        railway(handler).deployments()


def test_http_errors_without_json_are_unexpected_responses() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>bad gateway</html>")

    with pytest.raises(UnexpectedResponse, match="502"):
        railway(handler).token_check()


def node(id: str, status: str, day: int, commit: str | None = None, can_rollback: bool = False,
         image: str | None = None) -> dict[str, object]:
    meta: dict[str, object] = {}
    if commit:
        meta["commitHash"] = commit
    if image:
        meta.update({"image": image, "imageDigest": "sha256:" + "d" * 64})
    return {"id": id, "status": status, "createdAt": f"2025-10-{day:02d}T00:00:00Z",
            "canRollback": can_rollback, "canRedeploy": status != "REMOVED", "meta": meta}


def deployments_handler(latest: dict[str, object] | None, nodes: list[dict[str, object]],
                        seen: list[dict[str, object]] | None = None) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if seen is not None:
            seen.append(body)
        if "serviceInstance" in body["query"]:
            return httpx.Response(200, json={"data": {"serviceInstance": {
                "latestDeployment": latest}}})
        wanted = (body["variables"]["input"].get("status") or {}).get("in")
        listed = [n for n in nodes if wanted is None or n["status"] in wanted]
        return httpx.Response(200, json={"data": {"deployments": {
            "edges": [{"node": n} for n in listed]}}})

    return handler


def test_deployments_send_the_list_input_and_read_meta() -> None:
    seen: list[dict[str, object]] = []
    nodes = [node("d1", "REMOVED", 1, "c1", True), node("d3", "SUCCESS", 3, "c3"),
             node("d2", "FAILED", 2, "c2")]
    probe = railway(deployments_handler(nodes[1], nodes, seen))
    listed = probe.deployments(first=5)
    assert [d.id for d in listed] == ["d3", "d2", "d1"]  # newest first
    assert listed[0].commit == "c3" and listed[0].source == "commit c3"
    assert seen[-1]["variables"] == {"input": {"projectId": "p1", "environmentId": "e1",
                                               "serviceId": "s1"}, "first": 5}
    latest = probe.latest_deployment()
    assert latest is not None and latest.id == "d3"
    assert seen[-1]["variables"] == {"environmentId": "e1", "serviceId": "s1"}
    image = Deployment.from_node(node("d9", "SUCCESS", 9, image="ghcr.io/acme/api:v2"))
    assert image.source == f"image ghcr.io/acme/api:v2@sha256:{'d' * 64}"
    assert Deployment.from_node(node("d8", "SUCCESS", 8)).source is None


@pytest.mark.parametrize(("latest", "active"), [
    (node("d5", "SUCCESS", 5), "d5"),
    (node("d5", "SLEEPING", 5), "d5"),  # a sleeping service is still served by it
    (node("d5", "BUILDING", 5), "d4"),  # the previous one serves until the new one is up
    (node("d5", "FAILED", 5), "d4"),
    (node("d5", "CRASHED", 5), None),  # nothing serves
    (None, None),
])
def test_active_deployment_comes_from_the_latest_deployment(latest: dict[str, object] | None,
                                                            active: str | None) -> None:
    nodes = [node("d4", "SUCCESS", 4), node("d3", "REMOVED", 3)]
    found = railway(deployments_handler(latest, nodes)).active_deployment()
    assert (found.id if found else None) == active


def test_rollback_target_accepts_superseded_deployments_with_other_code() -> None:
    active = Deployment.from_node(node("d5", "SUCCESS", 5, "c5"))
    history = [Deployment.from_node(n) for n in (
        node("d4", "FAILED", 4, "c4", True),  # never served
        node("d3", "REMOVED", 3, "c5", True),  # the same code as the active one
        node("d2", "REMOVED", 2, "c2", True),
        node("d1", "SUCCESS", 1, "c1", True),
    )]
    target = pick_rollback_target(active, [active, *history])
    assert target is not None and target.id == "d2"
    assert pick_rollback_target(active, [active, *history[:2]]) is None
    unknown = Deployment.from_node(node("u", "SUCCESS", 6))
    fallback = pick_rollback_target(unknown, [unknown, *history])
    assert fallback is not None and fallback.id == "d3"


def test_rollback_mutation_has_no_selection_and_returns_the_boolean() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content)["query"])
        return httpx.Response(200, json={"data": {"deploymentRollback": True}})

    assert railway(handler).rollback("d1") is True
    assert "deploymentRollback(id: $id) }" in seen[0]


def test_403_naming_a_secondary_rate_limit_waits_a_minute() -> None:
    clock = Clock(NOW)
    answers = [
        httpx.Response(403, headers=limits(4000, NOW + 3600),
                       json={"message": "You have exceeded a secondary rate limit."}),
        httpx.Response(200, json={"sha": "d" * 40}),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        return answers.pop(0)

    assert github(handler, clock).head_sha() == "d" * 40
    assert clock.slept == [60.0]


class FakeRailway:
    """Scripted deployments: a rollback adds a deployment running the target's commit, a
    redeploy one running the redeployed commit; each becomes the latest at once and goes up
    after ``settle[kind]`` more queries of the latest deployment. ``rollback_error`` makes the
    rollback call fail after applying it; ``same_code`` makes the rollback's deployment run
    the active one's commit."""

    def __init__(self, settle: dict[str, int] | None = None,
                 rollback_error: Exception | None = None, same_code: bool = False) -> None:
        self.nodes = [node("d3", "SUCCESS", 3, "c3"), node("d1", "REMOVED", 1, "c1", True)]
        self.pending: dict[str, int] = {}
        self.settle = settle or {}
        self.rollback_error = rollback_error
        self.same_code = same_code
        self.calls: list[str] = []
        self.counter = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        query, variables = body["query"], body["variables"]
        if "deploymentRollback" in query:
            self.calls.append("rollback")
            source = next(n for n in self.nodes if n["id"] == variables["id"])
            active = next(n for n in self.nodes if n["status"] == "SUCCESS")
            self._start("rolled-back", active if self.same_code else source)
            if self.rollback_error is not None:
                raise self.rollback_error
            return httpx.Response(200, json={"data": {"deploymentRollback": True}})
        if "deploymentRedeploy" in query:
            self.calls.append("redeploy")
            source = next(n for n in self.nodes if n["id"] == variables["id"])
            return httpx.Response(200, json={"data": {"deploymentRedeploy": self._start(
                "redeployed", source)}})
        if "serviceInstance" in query:
            for n in self.nodes:
                if n["id"] in self.pending:
                    self.pending[n["id"]] -= 1
                    if self.pending[n["id"]] <= 0:
                        del self.pending[n["id"]]
                        for other in self.nodes:
                            if other["status"] == "SUCCESS":
                                other.update(status="REMOVED", canRollback=True)
                        n["status"] = "SUCCESS"
            return httpx.Response(200, json={"data": {"serviceInstance": {
                "latestDeployment": self.nodes[0]}}})
        if "deployment(id" in query:
            return httpx.Response(200, json={"data": {"deployment": next(
                n for n in self.nodes if n["id"] == variables["id"])}})
        return httpx.Response(200, json={"data": {"deployments": {
            "edges": [{"node": n} for n in self.nodes]}}})

    def _start(self, kind: str, source: dict[str, object]) -> dict[str, object]:
        self.counter += 1
        new = {**source, "id": f"{kind}-{self.counter}", "status": "DEPLOYING",
               "createdAt": f"2025-10-{10 + self.counter:02d}T00:00:00Z", "canRollback": False}
        self.nodes.insert(0, new)
        self.pending[str(new["id"])] = self.settle.get(kind, 1)
        return new


def drill_probe(fake: FakeRailway) -> RailwayProbe:
    clock = Clock(NOW)
    config = RailwayConfig.model_validate({
        "api_url": "https://railway.test/graphql/v2", "token": RAILWAY_TOKEN,
        "project_id": "p1", "environment_id": "e1", "service_id": "s1"})
    return RailwayProbe(config, timeout=5, transport=httpx.MockTransport(fake.handler),
                        sleep=clock.sleep, clock=clock.time)


def test_rollback_drill_rolls_back_and_forward_by_code() -> None:
    fake = FakeRailway()
    drill = drill_probe(fake).rollback_drill(timeout=10, poll=1)
    # The original is superseded (REMOVED, canRollback) after the rollback: roll forward to it.
    assert fake.calls == ["rollback", "rollback"]
    assert drill.rolled_back and drill.rolled_forward, drill.notes
    assert drill.after_rollback is not None and drill.after_rollback.commit == "c1"
    assert drill.after_roll_forward is not None and drill.after_roll_forward.commit == "c3"


def test_rollback_drill_sees_a_new_id_running_the_old_code_as_no_rollback() -> None:
    fake = FakeRailway(same_code=True)
    drill = drill_probe(fake).rollback_drill(timeout=10, poll=1)
    assert drill.after_rollback is not None and drill.after_rollback.id != "d3"
    assert not drill.rolled_back
    assert any("not the target's commit c1" in n for n in drill.notes)


def test_rollback_drill_rolls_forward_when_the_rollback_call_times_out() -> None:
    fake = FakeRailway(rollback_error=httpx.ReadTimeout("slow"))
    with pytest.raises(ProbeError):
        drill_probe(fake).rollback_drill(timeout=10, poll=1)
    # The rollback may have been applied: the original version is rolled forward to anyway.
    assert fake.calls == ["rollback", "redeploy"]


def test_rollback_drill_needs_a_new_deployment_with_the_original_code() -> None:
    # The rollback settles just after its wait ended, while the roll-forward never does: the
    # late rollback, or the original itself, must not pass for the roll-forward.
    fake = FakeRailway(settle={"rolled-back": 13, "redeployed": 100})
    drill = drill_probe(fake).rollback_drill(timeout=10, poll=1)
    assert fake.calls == ["rollback", "redeploy"]
    assert not drill.rolled_back and not drill.rolled_forward
    assert any("became active" in n for n in drill.notes)


def test_rollback_drill_refuses_deployments_that_do_not_say_what_they_run() -> None:
    nodes = [node("d3", "SUCCESS", 3), node("d1", "REMOVED", 1, can_rollback=True)]
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(json.loads(request.content)["query"])
        return deployments_handler(nodes[0], nodes)(request)

    with pytest.raises(UnexpectedResponse, match="neither an image nor a commit"):
        railway(handler).rollback_drill(timeout=1)
    assert not any("deploymentRollback" in q for q in calls)


def test_step_conclusions_match_names_written_with_expressions() -> None:
    """A job or step name with ${{ }} reaches the run evaluated; a matrix job carries its
    values in parentheses; anything else is another job."""
    from opsready.probes.github import JobStep, WorkflowJob, step_conclusions

    def job(name: str, step: str) -> WorkflowJob:
        return WorkflowJob(1, name, "completed", "success",
                           (JobStep(1, step, "completed", "success"),))

    jobs = [job("Roll back staging", "Roll back on Railway"),
            job("deploy (ubuntu, 3.11)", "Call prod"), job("Roll back", "Roll back on Railway")]
    assert step_conclusions(jobs, "Roll back ${{ inputs.environment }}", "Roll back on Railway") \
        == {"Roll back staging / Roll back on Railway": "success"}
    assert step_conclusions(jobs, "deploy", "Call ${{ inputs.target }}") == {
        "deploy (ubuntu, 3.11) / Call prod": "success"}
    assert step_conclusions(jobs, "Roll back", "Roll back on Railway") == {
        "Roll back / Roll back on Railway": "success"}
    assert step_conclusions(jobs, "Roll back prod ${{ x }}", "Roll back on Railway") == {}
