"""GithubTracker against scripted answers (httpx.MockTransport), the checklist and comment text,
and the GitHub fake's issues API held to the shapes GitHub documents."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from fake_clock import Clock
from opsready._errors import AccessRefused, UnexpectedResponse
from opsready.catalogue import load_catalogue
from opsready.config import TrackerGithubConfig
from opsready.probes.github import RateLimited
from opsready.report.model import Criterion, Ticket
from opsready.tracker.base import TrackedIssue
from opsready.tracker.github import GithubTracker
from opsready.tracker.issue_text import action_criteria, checklist, merged_body, read_state, same_text

ROOT = Path(__file__).resolve().parents[1]
API = "https://gh.test"
TOKEN = "github_pat_scoped_to_issues_0123456789"
NOW = 1_800_000_000.0

Handler = Callable[[httpx.Request], httpx.Response]


def tracker(handler: Handler, clock: Clock | None = None, **cfg: Any) -> GithubTracker:
    clock = clock or Clock(NOW)
    config = TrackerGithubConfig.model_validate(
        {"api_url": API, "repo": "acme/relay", "token": TOKEN, "write_interval_s": 0, **cfg})
    return GithubTracker(config, timeout=5, transport=httpx.MockTransport(handler), sleep=clock.sleep,
                         clock=clock.time, monotonic=clock.time)


def issue_json(number: int, labels: list[str], state: str = "open", **extra: Any) -> dict[str, Any]:
    return {"number": number, "state": state, "title": f"issue {number}", "body": "text",
            "html_url": f"https://github.com/acme/relay/issues/{number}",
            "labels": [{"name": n, "color": "ededed"} for n in labels], **extra}


# -- GithubTracker ----------------------------------------------------------------------------


def test_find_follows_next_links_and_leaves_out_pull_requests() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.params.get("page") == "2":
            return httpx.Response(200, json=[issue_json(7, ["opsready:P0-001"])])
        link = f'<{API}/repositories/1/issues?labels=opsready%3AP0-001&state=all&page=2>; rel="next"'
        return httpx.Response(200, headers={"link": link}, json=[
            issue_json(3, ["opsready:P0-001"], state="closed"),
            issue_json(5, ["opsready:P0-001"], pull_request={"url": "x"}),
        ])

    found = tracker(handler).find("opsready:P0-001")
    assert [(i.key, i.closed) for i in found] == [("#3", True), ("#7", False)]
    first = seen[0]
    assert first.url.path == "/repos/acme/relay/issues"
    assert dict(first.url.params) == {"labels": "opsready:P0-001", "state": "all", "sort": "created",
                                      "direction": "asc", "per_page": "100"}
    assert first.headers["authorization"] == f"Bearer {TOKEN}"
    assert first.headers["x-github-api-version"] == "2022-11-28"
    assert seen[1].url.path == "/repositories/1/issues"


def test_a_next_link_to_another_host_is_not_followed() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return httpx.Response(200, headers={"link": '<https://evil.test/issues?page=2>; rel="next"'},
                              json=[issue_json(1, ["opsready:P0-001"])])

    with pytest.raises(UnexpectedResponse, match="points away"):
        tracker(handler).find("opsready:P0-001")
    assert len(calls) == 1


def test_writes_use_the_documented_methods_and_bodies() -> None:
    seen: list[tuple[str, str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        seen.append((request.method, request.url.raw_path.decode().split("?")[0], body))
        if request.method == "POST" and request.url.path.endswith("/issues"):
            return httpx.Response(201, json=issue_json(12, body["labels"]))
        if request.method == "DELETE":
            return httpx.Response(404, json={"message": "Label does not exist"})
        return httpx.Response(201 if request.url.path.endswith("/comments") else 200, json={})

    t = tracker(handler)
    issue = t.create("P0-001 Merge", "body", ["opsready:P0-001", "readiness:open"])
    assert issue.key == "#12" and issue.labels == {"opsready:P0-001", "readiness:open"}
    t.comment(issue, "hello")
    t.add_labels(issue, ["readiness:done"])
    t.remove_label(issue, "readiness:open")  # 404: already off the issue, which is the goal
    t.close_issue(issue, "not_planned")
    t.reopen_issue(issue)
    t.set_body(issue, "new")
    assert seen == [
        ("POST", "/repos/acme/relay/issues",
         {"title": "P0-001 Merge", "body": "body", "labels": ["opsready:P0-001", "readiness:open"]}),
        ("POST", "/repos/acme/relay/issues/12/comments", {"body": "hello"}),
        ("POST", "/repos/acme/relay/issues/12/labels", {"labels": ["readiness:done"]}),
        ("DELETE", "/repos/acme/relay/issues/12/labels/readiness%3Aopen", None),
        ("PATCH", "/repos/acme/relay/issues/12", {"state": "closed", "state_reason": "not_planned"}),
        ("PATCH", "/repos/acme/relay/issues/12", {"state": "open"}),
        ("PATCH", "/repos/acme/relay/issues/12", {"body": "new"}),
    ]


def test_a_secondary_rate_limit_on_a_write_is_waited_out_and_the_write_repeated() -> None:
    clock = Clock(NOW)
    answers = [
        httpx.Response(403, headers={"retry-after": "30", "x-ratelimit-remaining": "4980"},
                       json={"message": "You have exceeded a secondary rate limit. Please wait."}),
        httpx.Response(201, json={"id": 1}),
    ]
    posted: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        posted.append(clock.now)
        return answers.pop(0)

    t = tracker(handler, clock, rate_limit_wait_max_s=60)
    t.comment(t_issue(), "hello")
    assert clock.slept == [30.0]
    assert posted == [NOW, NOW + 30]


def test_a_secondary_rate_limit_without_retry_after_waits_a_minute() -> None:
    clock = Clock(NOW)
    answers = [httpx.Response(403, json={"message": "You have exceeded a secondary rate limit."}),
               httpx.Response(200, json={})]
    t = tracker(lambda r: answers.pop(0), clock, rate_limit_wait_max_s=60)
    t.reopen_issue(t_issue())
    assert clock.slept == [60.0]


def test_a_rate_limit_beyond_the_bound_raises_naming_the_tracker_key() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"retry-after": "900"}, json={"message": "slow down"})

    with pytest.raises(RateLimited, match=r"tracker\.github\.rate_limit_wait_max_s"):
        tracker(handler, rate_limit_wait_max_s=60).comment(t_issue(), "x")


def test_writes_are_spaced_by_the_write_interval() -> None:
    """A second from the end of one write to the start of the next; reads are not spaced."""
    clock = Clock(NOW)
    starts: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        starts.append(clock.now)
        clock.now += 0.25  # each request takes a quarter of a second
        return httpx.Response(200, json=[] if request.method == "GET" else {})

    t = tracker(handler, clock, write_interval_s=1.0)
    t.reopen_issue(t_issue())
    clock.now += 0.4  # planning the next change
    t.reopen_issue(t_issue())
    t.find("opsready:P0-001")
    t.reopen_issue(t_issue())
    assert clock.slept == pytest.approx([0.6, 0.75])
    assert starts == pytest.approx([NOW, NOW + 1.25, NOW + 1.5, NOW + 2.5])


def test_a_token_without_the_issues_permission_is_refused_with_the_fix() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json={"message": "Resource not accessible by personal access token"})

    with pytest.raises(AccessRefused, match="Issues: read and write") as info:
        tracker(handler).comment(t_issue(), "x")
    assert TOKEN not in str(info.value)


def test_a_bad_token_is_refused_naming_the_tracker_token() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"message": "Bad credentials"})

    with pytest.raises(AccessRefused, match=r"tracker\.github\.token"):
        tracker(handler).find("opsready:P0-001")


def test_disabled_issues_and_a_missing_repository_say_what_to_fix() -> None:
    def gone(request: httpx.Request) -> httpx.Response:
        return httpx.Response(410, json={"message": "Issues are disabled for this repo"})

    with pytest.raises(UnexpectedResponse, match="issues are disabled"):
        tracker(gone).find("opsready:P0-001")

    def missing(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"message": "Not Found"})

    with pytest.raises(UnexpectedResponse, match=r"check tracker\.github\.repo"):
        tracker(missing).find("opsready:P0-001")


def test_a_classic_token_is_noted() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"x-oauth-scopes": "repo, workflow"}, json=[])

    t = tracker(handler)
    t.find("opsready:P0-001")
    assert t.token_note is not None and "repo, workflow" in t.token_note
    assert "fine-grained" in t.token_note


def t_issue() -> TrackedIssue:
    return TrackedIssue(key="#9", url="", title="t", body="", labels=frozenset(), closed=False, ref="9")


# -- the checklist, the description and the recorded state ------------------------------------


@dataclass(frozen=True)
class MappedAction:
    """An action as a catalogue that maps actions to criteria gives it."""

    text: str
    criteria: tuple[str, ...]


def ticket_with(outcomes: dict[str, str], status: str = "open") -> Ticket:
    crits = [Criterion(id=f"P1-002::{name}", title=name, outcome=outcome,  # type: ignore[arg-type]
                       skip_kind="not_applicable" if outcome == "skip" else None)
             for name, outcome in outcomes.items()]
    return Ticket(id="P1-002", title="t", priority="P1", category="c", status=status,  # type: ignore[arg-type]
                  note="", not_checked=[], carried_forward=[], passed=0, total=len(crits), modules=[],
                  criteria=crits)


def test_action_criteria_reads_both_shapes_of_action() -> None:
    assert action_criteria("Run manual backup test") == ("Run manual backup test", None)
    mapped = MappedAction("Verify RTO < 10 minutes", ("P1-002::test_restore_drill_within_rto",))
    assert action_criteria(mapped) == ("Verify RTO < 10 minutes", ("test_restore_drill_within_rto",))
    assert action_criteria(MappedAction("Unmapped", ())) == ("Unmapped", None)


def test_a_mapped_action_is_ticked_when_its_criteria_pass() -> None:
    catalogue = load_catalogue(ROOT / "config" / "tickets.yaml")
    base = catalogue.get("P1-002")
    assert base is not None
    actions = [MappedAction("Verify RTO", ("test_rto",)),
               MappedAction("Restore", ("test_restores", "test_scratch")),
               MappedAction("Schedule", ("test_scheduled",)),
               MappedAction("Not a criterion of this run", ("test_absent",)),
               "Write the report"]
    ticket = base.model_copy(update={"actions": actions})
    rt = ticket_with({"test_rto": "pass", "test_restores": "pass", "test_scratch": "fail",
                      "test_scheduled[monthly]": "pass", "test_other": "skip"})
    assert checklist(ticket, rt) == [("Verify RTO", True), ("Restore", False), ("Schedule", True),
                                     ("Not a criterion of this run", False), ("Write the report", False)]
    done = ticket_with({"test_rto": "pass", "test_restores": "pass", "test_scratch": "skip"}, status="done")
    # A criterion that does not apply to the platform neither proves nor blocks an action.
    assert checklist(ticket, done)[1] == ("Restore", True)
    assert checklist(ticket, done)[4] == ("Write the report", True)


@dataclass(frozen=True)
class JudgedAction:
    """A run's verdict on one action, as a bundle that records per-action results holds it."""

    action: str
    status: str


def test_the_run_s_own_verdict_on_an_action_comes_first() -> None:
    from dataclasses import replace

    catalogue = load_catalogue(ROOT / "config" / "tickets.yaml")
    base = catalogue.get("P1-002")
    assert base is not None
    ticket = base.model_copy(update={"actions": [MappedAction("Verify RTO", ("test_rto",)),
                                                 "Attested by hand", "Still open"]})

    @dataclass(frozen=True)
    class JudgedTicket:
        criteria: list[Criterion]
        status: str
        actions: list[JudgedAction]

    rt = ticket_with({"test_rto": "pass"}, status="done")
    judged = JudgedTicket(criteria=rt.criteria, status="done", actions=[
        JudgedAction("Verify RTO", "open"), JudgedAction("Attested by hand", "attested"),
        JudgedAction("Still open", "not_covered")])
    assert checklist(ticket, judged) == [  # type: ignore[arg-type]
        ("Verify RTO", False), ("Attested by hand", True), ("Still open", False)]
    assert checklist(ticket, replace(judged, actions=[])) == [  # type: ignore[arg-type]
        ("Verify RTO", True), ("Attested by hand", True), ("Still open", True)]


def test_the_managed_section_is_replaced_and_people_s_text_is_kept() -> None:
    section = "<!-- opsready:begin -->\nnew\n<!-- opsready:end -->"
    body = "Owner: ops\n\n<!-- opsready:begin -->\nold\n<!-- opsready:end -->\n\nNotes below."
    assert merged_body(body, section) == "Owner: ops\n\n" + section + "\n\nNotes below."
    assert merged_body("", section) == section
    assert merged_body("Hand-written.", section) == "Hand-written.\n\n" + section
    assert same_text("a\r\nb  \r\n", "a\nb")
    assert read_state(body) is None


# -- the fake's issues API --------------------------------------------------------------------


def test_fake_issues_follow_github_shapes(tmp_path: Path) -> None:
    import asyncio

    from opsready_stack.github_fake import build_app
    from opsready_stack.github_issues_fake import FIRST_ISSUE_NUMBER, issues_token

    (tmp_path / "state.json").write_text(json.dumps({"secrets": {"github_token": "repo-token"},
                                                     "settings": {"git_sha": "a" * 40}}))
    app = build_app(tmp_path, "acme/relay")

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        scoped = httpx.AsyncClient(transport=transport, base_url="http://github.test",
                                   headers={"Authorization": f"Bearer {issues_token('repo-token')}"})
        async with scoped:
            for n in range(3):
                resp = await scoped.post("/repos/acme/relay/issues",
                                         json={"title": f"t{n}", "body": "b", "labels": ["opsready:X", f"n{n}"]})
                assert resp.status_code == 201
                created = resp.json()
                assert created["number"] == FIRST_ISSUE_NUMBER + n and created["state"] == "open"
                assert {"id", "node_id", "html_url", "labels", "state_reason", "user", "comments",
                        "created_at", "closed_at"} <= set(created)
                assert created["labels"][0]["color"] == "ededed"
            resp = await scoped.get("/repos/acme/relay/issues",
                                    params={"labels": "opsready:X", "state": "all", "per_page": 2,
                                            "direction": "asc"})
            assert [i["number"] for i in resp.json()] == [FIRST_ISSUE_NUMBER, FIRST_ISSUE_NUMBER + 1]
            assert "page=2" in resp.links["next"]["url"]
            assert "last" in resp.links
            page2 = await scoped.get(resp.links["next"]["url"])
            assert [i["number"] for i in page2.json()] == [FIRST_ISSUE_NUMBER + 2]
            assert "next" not in page2.links and "prev" in page2.links
            # Labels must all match; closed issues are listed only with state=closed or all.
            only = await scoped.get("/repos/acme/relay/issues", params={"labels": "opsready:X,n1"})
            assert [i["title"] for i in only.json()] == ["t1"]
            number = FIRST_ISSUE_NUMBER + 1
            closed = await scoped.patch(f"/repos/acme/relay/issues/{number}",
                                        json={"state": "closed", "state_reason": "not_planned"})
            assert closed.json()["state_reason"] == "not_planned" and closed.json()["closed_at"]
            open_only = await scoped.get("/repos/acme/relay/issues", params={"labels": "opsready:X"})
            assert number not in [i["number"] for i in open_only.json()]
            reopened = await scoped.patch(f"/repos/acme/relay/issues/{number}", json={"state": "open"})
            assert reopened.json()["state_reason"] == "reopened" and reopened.json()["closed_at"] is None
            bad = await scoped.patch(f"/repos/acme/relay/issues/{number}", json={"state": "shut"})
            assert bad.status_code == 422
            gone = await scoped.delete(f"/repos/acme/relay/issues/{number}/labels/absent")
            assert gone.status_code == 404 and gone.json()["message"] == "Label does not exist"
            left = await scoped.delete(f"/repos/acme/relay/issues/{number}/labels/n1")
            assert [label["name"] for label in left.json()] == ["opsready:X"]
            added = await scoped.post(f"/repos/acme/relay/issues/{number}/labels", json={"labels": ["new"]})
            assert [label["name"] for label in added.json()] == ["opsready:X", "new"]
            comment = await scoped.post(f"/repos/acme/relay/issues/{number}/comments", json={"body": "hi"})
            assert comment.status_code == 201 and comment.json()["body"] == "hi"
            assert comment.json()["issue_url"].endswith(f"/issues/{number}")
            untitled = await scoped.post("/repos/acme/relay/issues", json={"body": "no title"})
            assert untitled.status_code == 422
            # The issues-only token reaches nothing else of the repository.
            secrets = await scoped.get("/repos/acme/relay/actions/secrets")
            assert secrets.status_code == 401

    asyncio.run(scenario())


def test_fake_secondary_rate_limit_refuses_the_armed_writes(tmp_path: Path) -> None:
    import asyncio

    from opsready_stack.github_fake import build_app

    (tmp_path / "state.json").write_text(json.dumps({"secrets": {"github_token": "repo-token"},
                                                     "settings": {"git_sha": "a" * 40}}))
    app = build_app(tmp_path, "acme/relay")

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://github.test",
                                     headers={"Authorization": "Bearer repo-token"}) as c:
            await c.post("/_fake/issues/secondary-rate-limit",
                         json={"after_writes": 1, "times": 2, "retry_after": 3})
            codes = []
            for n in range(4):
                resp = await c.post("/repos/acme/relay/issues", json={"title": f"t{n}"})
                codes.append(resp.status_code)
                if resp.status_code == 403:
                    assert resp.headers["retry-after"] == "3"
                    assert "secondary rate limit" in resp.json()["message"]
            assert codes == [201, 403, 403, 201]
            reads = await c.get("/repos/acme/relay/issues")
            assert reads.status_code == 200  # reads are not content creation
            writes = (await c.get("/_fake/issues/writes")).json()
            assert [w["status"] for w in writes] == [201, 403, 403, 201]

    asyncio.run(scenario())


def test_recorded_state_round_trips() -> None:
    from opsready.tracker.issue_text import BEGIN, END, RecordedState

    state = RecordedState(environment="production", status="open", run_id="r1",
                          since=dt.datetime(2026, 3, 1, 2, tzinfo=dt.UTC), criteria={"test_a": "fail"})
    assert read_state(f"{BEGIN}\n{state.marker()}\n{END}") == state
    assert read_state(f"{state.marker()}") is None  # outside the managed section: not ours
