"""GithubProbe and RailwayProbe against scripted HTTP answers (httpx.MockTransport)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from opsready._errors import AccessRefused, ProbeError, UnexpectedResponse
from opsready.config import GithubConfig, RailwayConfig
from opsready.probes.github import GithubProbe, RateLimited
from opsready.probes.railway import RailwayProbe, rollback_calls

ROOT = Path(__file__).resolve().parents[1]
NOW = 1_700_000_000.0
TOKEN = "gh-test-token-0123456789"

Handler = Callable[[httpx.Request], httpx.Response]


class Clock:
    """A fake clock whose sleeps advance time, so waits are observable and instant."""

    def __init__(self) -> None:
        self.now = NOW
        self.slept: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def github(handler: Handler, clock: Clock | None = None, **cfg: object) -> GithubProbe:
    clock = clock or Clock()
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
    clock = Clock()
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
    clock = Clock()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=limits(0, NOW + 600),
                              json={"total_count": 0, "secrets": []})

    probe = github(handler, clock, rate_limit_wait_max_s=60)
    probe.secret_names()
    with pytest.raises(RateLimited, match=r"resets in 600s.*rate_limit_wait_max_s"):
        probe.secret_names()
    assert clock.slept == []


def test_403_rate_limited_is_retried_after_the_reset() -> None:
    clock = Clock()
    answers = [
        httpx.Response(403, headers=limits(0, NOW + 7), json={"message": "API rate limit exceeded"}),
        httpx.Response(200, headers=limits(4999, NOW + 3600), json={"sha": "b" * 40}),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        return answers.pop(0)

    assert github(handler, clock).head_sha() == "b" * 40
    assert clock.slept == [7.0]


def test_429_with_retry_after_is_retried() -> None:
    clock = Clock()
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


def test_workflow_matches_by_path_suffix_and_latest_run_filters() -> None:
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
        if request.url.path.endswith("/backup.yml/runs"):
            return httpx.Response(200, json={"total_count": 2, "workflow_runs": [
                {"id": 10, "created_at": "2025-10-01T02:00:00Z", "conclusion": "success"},
                {"id": 11, "created_at": "2025-10-02T02:00:00Z", "conclusion": "success"},
            ]})
        return httpx.Response(404, json={"message": "Not Found"})

    probe = github(handler)
    assert probe.workflow("backup.yml")["state"] == "disabled_manually"  # type: ignore[index]
    assert probe.workflow("Deploy")["id"] == 1  # type: ignore[index]
    assert probe.workflow("nightly.yml") is None
    run = probe.latest_run("backup.yml", event="schedule")
    assert run is not None and run["id"] == 11  # newest first, whatever the server's order
    params = seen[-1].url.params
    assert (params["branch"], params["status"], params["event"]) == ("main", "success", "schedule")
    assert probe.latest_run("unknown.yml") is None


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
    for call in (probe.head_sha, probe.secret_names, probe.workflows, lambda: probe.pull(1)):
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


def test_deployments_send_the_list_input_and_pick_the_rollback_target() -> None:
    seen: list[dict[str, object]] = []
    nodes = [
        {"id": "d3", "status": "SUCCESS", "createdAt": "2025-10-03T00:00:00Z", "canRollback": False},
        {"id": "d1", "status": "SUCCESS", "createdAt": "2025-10-01T00:00:00Z", "canRollback": True},
        {"id": "d2", "status": "SUCCESS", "createdAt": "2025-10-02T00:00:00Z", "canRollback": False},
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        return httpx.Response(200, json={"data": {"deployments": {
            "edges": [{"node": n} for n in nodes]}}})

    probe = railway(handler)
    assert probe.active_deployment()["id"] == "d3"  # type: ignore[index]
    target = probe.rollback_target()
    assert target is not None and target["id"] == "d1"  # d2 cannot be rolled back to
    variables = seen[-1]["variables"]
    assert variables["input"] == {  # type: ignore[index]
        "projectId": "p1", "environmentId": "e1", "serviceId": "s1",
        "status": {"in": ["SUCCESS"]}}


def test_rollback_mutation_has_no_selection_and_returns_the_boolean() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content)["query"])
        return httpx.Response(200, json={"data": {"deploymentRollback": True}})

    assert railway(handler).rollback("d1") is True
    assert "deploymentRollback(id: $id) }" in seen[0]


def test_rollback_calls_ignore_comments_and_notes() -> None:
    real = (ROOT / "stack" / "github_repo" / "scripts" / "rollback.py").read_text()
    notes = (ROOT / "stack" / "github_repo_variants" / "rollback_notes_only.py").read_text()
    assert rollback_calls(real)
    assert rollback_calls(notes) == []
    assert rollback_calls("# TODO: call deploymentRollback\nprint('notes')\n") == []


def test_403_naming_a_secondary_rate_limit_waits_a_minute() -> None:
    clock = Clock()
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
    """Scripted deployments: a rollback or redeploy adds a deployment that becomes active
    after ``settle[kind]`` more deployment queries; ``rollback_error`` makes the rollback call
    fail after applying it."""

    def __init__(self, settle: dict[str, int] | None = None,
                 rollback_error: Exception | None = None) -> None:
        self.active = "d3"
        self.pending: list[tuple[int, str]] = []
        self.settle = settle or {}
        self.rollback_error = rollback_error
        self.calls: list[str] = []
        self.counter = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        query = json.loads(request.content)["query"]
        if "deploymentRollback" in query:
            self.calls.append("rollback")
            self._start("rolled-back")
            if self.rollback_error is not None:
                raise self.rollback_error
            return httpx.Response(200, json={"data": {"deploymentRollback": True}})
        if "deploymentRedeploy" in query:
            self.calls.append("redeploy")
            new = self._start("redeployed")
            return httpx.Response(200, json={"data": {"deploymentRedeploy": {
                "id": new, "status": "DEPLOYING"}}})
        self.pending = [(n - 1, d) for n, d in self.pending]
        for n, d in self.pending:
            if n <= 0:
                self.active = d
        self.pending = [(n, d) for n, d in self.pending if n > 0]
        nodes = [{"id": self.active, "status": "SUCCESS", "createdAt": "2025-10-03T00:00:00Z",
                  "canRollback": False},
                 {"id": "d1", "status": "SUCCESS", "createdAt": "2025-10-01T00:00:00Z",
                  "canRollback": True}]
        return httpx.Response(200, json={"data": {"deployments": {
            "edges": [{"node": n} for n in nodes]}}})

    def _start(self, kind: str) -> str:
        self.counter += 1
        new = f"{kind}-{self.counter}"
        self.pending.append((self.settle.get(kind, 1), new))
        return new


def drill_probe(fake: FakeRailway) -> RailwayProbe:
    clock = Clock()
    config = RailwayConfig.model_validate({
        "api_url": "https://railway.test/graphql/v2", "token": RAILWAY_TOKEN,
        "project_id": "p1", "environment_id": "e1", "service_id": "s1"})
    return RailwayProbe(config, timeout=5, transport=httpx.MockTransport(fake.handler),
                        sleep=clock.sleep, clock=clock.time)


def test_rollback_drill_rolls_back_and_forward() -> None:
    fake = FakeRailway()
    drill = drill_probe(fake).rollback_drill(timeout=10, poll=1)
    assert fake.calls == ["rollback", "redeploy"]
    assert drill.rolled_back_to == "rolled-back-1" and drill.restored_to == "redeployed-2"


def test_rollback_drill_rolls_forward_when_the_rollback_call_times_out() -> None:
    fake = FakeRailway(rollback_error=httpx.ReadTimeout("slow"))
    with pytest.raises(ProbeError):
        drill_probe(fake).rollback_drill(timeout=10, poll=1)
    # The rollback may have been applied: the original version is redeployed anyway.
    assert fake.calls == ["rollback", "redeploy"]


def test_rollback_drill_needs_the_redeployed_deployment_active() -> None:
    # The rollback settles just after its wait ended, while the redeploy never does: the
    # late rollback must not pass for the roll-forward.
    fake = FakeRailway(settle={"rolled-back": 13, "redeployed": 100})
    drill = drill_probe(fake).rollback_drill(timeout=10, poll=1)
    assert fake.calls == ["rollback", "redeploy"]
    assert not drill.rolled_back and not drill.rolled_forward
    assert any("redeployed-2" in n and "did not become active" in n for n in drill.notes)
