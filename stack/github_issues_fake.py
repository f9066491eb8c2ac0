# Contract fake of GitHub's issues REST API (a SaaS that cannot run here), shaped per docs/tracker-sync.md.
"""The issues of the fake GitHub repository: what ``opsready sync --tracker github`` uses.

Mounted into the GitHub fake (``opsready_stack.github_fake``) by ``issue_routes``. It follows
the shapes GitHub documents for API version 2022-11-28:

- ``GET  /repos/{o}/{r}/issues`` with ``state``, ``labels`` (comma-separated, all must match),
  ``sort``, ``direction``, ``per_page`` (≤ 100) and ``page``; pages are linked in a ``Link``
  header (``rel="next"``, ``"last"``, ``"first"``, ``"prev"``);
- ``POST /repos/{o}/{r}/issues`` (201), ``GET`` and ``PATCH /repos/{o}/{r}/issues/{n}``
  (``title``, ``body``, ``state``, ``state_reason``, ``labels``);
- ``GET`` and ``POST /repos/{o}/{r}/issues/{n}/comments`` (paginated like the issues);
- ``POST /repos/{o}/{r}/issues/{n}/labels`` (adds, creating unknown labels with colour
  ``ededed`` as GitHub does) and ``DELETE /repos/{o}/{r}/issues/{n}/labels/{name}`` (404
  ``Label does not exist`` when the issue does not carry it).

Issues live in memory for the life of the process. Two tokens are accepted: the repository's
token (a maintainer, ``relay-lead``) and an issues-only token (``issues_token``), which
GitHub's fine-grained tokens model as the single permission "Issues: read and write"; the other
routes of the fake refuse the latter. Numbers start after the repository's pull requests.

Not GitHub routes: ``/_fake/issues/secondary-rate-limit`` arms GitHub's secondary rate limit
(the next write requests after a given number answer 403 with the documented message), and
``/_fake/issues/writes`` lists the write requests received, so a test can tell that a run
wrote nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

__all__ = ["FIRST_ISSUE_NUMBER", "IssueStore", "issue_routes", "issues_token", "tracker_env_config"]

API = "https://api.github.com"
WEB = "https://github.com"
DOCS = "https://docs.github.com/rest/issues"
SECONDARY_DOCS = ("https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api"
                  "#about-secondary-rate-limits")
SECONDARY_MESSAGE = ("You have exceeded a secondary rate limit and have been temporarily blocked from "
                     "content creation. Please retry your request again later.")
FIRST_ISSUE_NUMBER = 101
DEFAULT_LABEL_COLOR = "ededed"
MAINTAINER = "relay-lead"
BOT = "relay-ops-bot"
STATES = ("open", "closed")
STATE_REASONS = ("completed", "not_planned", "reopened")


def issues_token(repo_token: str) -> str:
    """The issues-only token of a stack, derived from the repository's token."""
    digest = hmac.new(repo_token.encode(), b"issues:read-write", hashlib.sha256).hexdigest()
    return f"github_pat_{digest[:40]}"


def tracker_env_config(api_url: str, repo_token: str, repo: str) -> dict[str, Any]:
    """What the stack's ``env.yaml`` says about the tracker: the fake's issues, reached with the
    issues-only token, and the sync allowed (a throwaway stack)."""
    return {
        "allow_writes": ["tracker_sync"],
        "tracker": {
            "github": {
                "api_url": api_url,
                "repo": repo,
                "token": issues_token(repo_token),
                "rate_limit_wait_max_s": 30,
                "write_interval_s": 0,
            },
        },
    }


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _user(login: str) -> dict[str, Any]:
    uid = int(hashlib.sha1(login.encode()).hexdigest()[:7], 16)
    return {"login": login, "id": uid, "node_id": f"U_{uid}", "type": "User",
            "url": f"{API}/users/{login}", "html_url": f"{WEB}/{login}", "site_admin": False}


@dataclass
class _Comment:
    id: int
    issue: int
    body: str
    user: str
    created_at: dt.datetime


@dataclass
class _Issue:
    number: int
    id: int
    title: str
    body: str | None
    user: str
    labels: list[str]
    created_at: dt.datetime
    updated_at: dt.datetime
    state: str = "open"
    state_reason: str | None = None
    closed_at: dt.datetime | None = None
    closed_by: str | None = None
    comments: list[int] = field(default_factory=list)


class IssueStore:
    """The issues, comments and labels of one repository, and the fake's switches."""

    def __init__(self, repo: str) -> None:
        self.repo = repo
        self._lock = threading.Lock()
        self._issues: dict[int, _Issue] = {}
        self._comments: dict[int, _Comment] = {}
        self._labels: dict[str, int] = {}
        self._numbers = itertools.count(FIRST_ISSUE_NUMBER)
        self._ids = itertools.count(2_810_000_001)
        # Secondary rate limit: after ``_limit_after`` more writes, refuse ``_limit_times``.
        self._limit_after: int | None = None
        self._limit_times = 0
        self._limit_retry_after: int | None = None
        self.writes: list[dict[str, Any]] = []

    # -- switches ----------------------------------------------------------------------------

    def arm_secondary_limit(self, after_writes: int, times: int, retry_after: int | None) -> None:
        with self._lock:
            self._limit_after, self._limit_times = after_writes, times
            self._limit_retry_after = retry_after

    def secondary_limited(self) -> tuple[bool, int | None]:
        """For a write request: whether the secondary limit refuses it, and the retry-after
        seconds to send (None: GitHub sends none, and clients wait a minute)."""
        with self._lock:
            if self._limit_after is None or self._limit_times <= 0:
                return False, None
            if self._limit_after > 0:
                self._limit_after -= 1
                return False, None
            self._limit_times -= 1
            if self._limit_times <= 0:
                self._limit_after = None
            return True, self._limit_retry_after

    def record_write(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.writes.append({"method": method, "path": path, "status": status})

    # -- shapes ------------------------------------------------------------------------------

    def label(self, name: str) -> dict[str, Any]:
        label_id = self._labels.setdefault(name, next(self._ids))
        return {"id": label_id, "node_id": f"LA_{label_id}",
                "url": f"{API}/repos/{self.repo}/labels/{quote(name, safe='')}", "name": name,
                "color": DEFAULT_LABEL_COLOR, "default": False, "description": None}

    def issue_json(self, issue: _Issue) -> dict[str, Any]:
        base = f"{API}/repos/{self.repo}/issues/{issue.number}"
        return {
            "id": issue.id,
            "node_id": f"I_kwDO{issue.id}",
            "url": base,
            "repository_url": f"{API}/repos/{self.repo}",
            "labels_url": base + "/labels{/name}",
            "comments_url": base + "/comments",
            "events_url": base + "/events",
            "html_url": f"{WEB}/{self.repo}/issues/{issue.number}",
            "number": issue.number,
            "state": issue.state,
            "state_reason": issue.state_reason,
            "title": issue.title,
            "body": issue.body,
            "user": _user(issue.user),
            "labels": [self.label(n) for n in issue.labels],
            "assignee": None,
            "assignees": [],
            "milestone": None,
            "locked": False,
            "active_lock_reason": None,
            "comments": len(issue.comments),
            "created_at": _iso(issue.created_at),
            "updated_at": _iso(issue.updated_at),
            "closed_at": _iso(issue.closed_at) if issue.closed_at else None,
            "closed_by": _user(issue.closed_by) if issue.closed_by else None,
            "author_association": "MEMBER",
        }

    def comment_json(self, comment: _Comment) -> dict[str, Any]:
        return {
            "id": comment.id,
            "node_id": f"IC_kwDO{comment.id}",
            "url": f"{API}/repos/{self.repo}/issues/comments/{comment.id}",
            "html_url": f"{WEB}/{self.repo}/issues/{comment.issue}#issuecomment-{comment.id}",
            "body": comment.body,
            "user": _user(comment.user),
            "created_at": _iso(comment.created_at),
            "updated_at": _iso(comment.created_at),
            "issue_url": f"{API}/repos/{self.repo}/issues/{comment.issue}",
            "author_association": "MEMBER",
        }

    # -- operations --------------------------------------------------------------------------

    def list_issues(self, state: str, labels: list[str], sort: str, direction: str) -> list[_Issue]:
        with self._lock:
            found = [i for i in self._issues.values()
                     if (state == "all" or i.state == state) and all(n in i.labels for n in labels)]
        key: Callable[[_Issue], Any] = {
            "updated": lambda i: (i.updated_at, i.number),
            "comments": lambda i: (len(i.comments), i.number),
        }.get(sort, lambda i: (i.created_at, i.number))
        return sorted(found, key=key, reverse=direction != "asc")

    def get(self, number: int) -> _Issue | None:
        return self._issues.get(number)

    def create(self, title: str, body: str | None, labels: list[str], user: str) -> _Issue:
        now = dt.datetime.now(dt.UTC)
        with self._lock:
            issue = _Issue(number=next(self._numbers), id=next(self._ids), title=title, body=body,
                           user=user, labels=_unique(labels), created_at=now, updated_at=now)
            self._issues[issue.number] = issue
        return issue

    def update(self, issue: _Issue, changes: dict[str, Any], user: str) -> None:
        now = dt.datetime.now(dt.UTC)
        with self._lock:
            if "title" in changes:
                issue.title = str(changes["title"])
            if "body" in changes:
                issue.body = changes["body"]
            if "labels" in changes:
                issue.labels = _unique(changes["labels"])
            state = changes.get("state")
            if state == "closed" and issue.state != "closed":
                issue.state, issue.closed_at, issue.closed_by = "closed", now, user
                issue.state_reason = changes.get("state_reason") or "completed"
            elif state == "open" and issue.state != "open":
                issue.state, issue.closed_at, issue.closed_by = "open", None, None
                issue.state_reason = "reopened"
            elif "state_reason" in changes and issue.state == "closed":
                issue.state_reason = changes["state_reason"]
            issue.updated_at = now

    def comments_of(self, issue: _Issue) -> list[_Comment]:
        with self._lock:
            return [self._comments[c] for c in issue.comments]

    def add_comment(self, issue: _Issue, body: str, user: str) -> _Comment:
        now = dt.datetime.now(dt.UTC)
        with self._lock:
            comment = _Comment(id=next(self._ids), issue=issue.number, body=body, user=user,
                               created_at=now)
            self._comments[comment.id] = comment
            issue.comments.append(comment.id)
            issue.updated_at = now
        return comment

    def add_labels(self, issue: _Issue, names: list[str]) -> None:
        with self._lock:
            issue.labels = _unique([*issue.labels, *names])
            issue.updated_at = dt.datetime.now(dt.UTC)

    def remove_label(self, issue: _Issue, name: str) -> bool:
        with self._lock:
            if name not in issue.labels:
                return False
            issue.labels.remove(name)
            issue.updated_at = dt.datetime.now(dt.UTC)
            return True


def _unique(names: list[Any]) -> list[str]:
    seen: list[str] = []
    for n in names:
        name = str(n.get("name")) if isinstance(n, dict) else str(n)
        if name and name not in seen:
            seen.append(name)
    return seen


def issue_routes(repo: str, repo_token: str, rate_headers: Callable[[bool], dict[str, str]]) -> list[Any]:
    """The Starlette routes of the issues API for ``repo``. ``rate_headers(count)`` gives the
    primary rate-limit headers of the GitHub fake, so both count against one budget."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    store = IssueStore(repo)
    owner, name = repo.split("/", 1)
    tokens = {repo_token: MAINTAINER, issues_token(repo_token): BOT}

    def reply(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        all_headers = {**rate_headers(True), "x-github-api-version-selected": "2022-11-28",
                       **(headers or {})}
        return JSONResponse(body, status_code=status, headers=all_headers)

    def error(status: int, message: str, **extra: Any) -> Response:
        return reply({"message": message, "documentation_url": DOCS, "status": str(status), **extra}, status)

    def caller(request: Request) -> str | None:
        scheme, _, value = (request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() not in ("bearer", "token"):
            return None
        for token, login in tokens.items():
            if hmac.compare_digest(value.strip().encode(), token.encode()):
                return login
        return None

    def paged(request: Request, items: list[Any]) -> Response:
        q = request.query_params
        try:
            per_page = max(1, min(100, int(q.get("per_page", "30"))))
            number = max(1, int(q.get("page", "1")))
        except ValueError:
            return error(422, "Validation Failed")
        last = max(1, -(-len(items) // per_page))
        links = []

        def at(page: int) -> str:
            return str(request.url.include_query_params(page=page, per_page=per_page))

        if number < last:
            links += [f'<{at(number + 1)}>; rel="next"', f'<{at(last)}>; rel="last"']
        if number > 1:
            links += [f'<{at(1)}>; rel="first"', f'<{at(number - 1)}>; rel="prev"']
        headers = {"link": ", ".join(links)} if links else {}
        return reply(items[(number - 1) * per_page: number * per_page], headers=headers)

    async def json_body(request: Request) -> Any:
        try:
            return await request.json()
        except ValueError:
            return None

    def endpoint(handler: Callable[..., Any], write: bool = False) -> Callable[[Request], Any]:
        async def run(request: Request) -> Response:
            version = request.headers.get("x-github-api-version")
            if version is not None and version != "2022-11-28":
                return error(400, f"API version '{version}' is not supported.")
            login = caller(request)
            if login is None:
                return error(401, "Bad credentials")
            p = request.path_params
            if (p.get("owner"), p.get("repo")) != (owner, name):
                return error(404, "Not Found")
            if write:
                limited, retry_after = store.secondary_limited()
                if limited:
                    headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
                    resp = reply({"message": SECONDARY_MESSAGE, "documentation_url": SECONDARY_DOCS},
                                 403, headers)
                    store.record_write(request.method, request.url.path, 403)
                    return resp
            issue = None
            if "number" in p:
                try:
                    issue = store.get(int(p["number"]))
                except ValueError:
                    issue = None
                if issue is None:
                    return error(404, "Not Found")
            result: Response = await handler(request, login, issue)
            if write:
                store.record_write(request.method, request.url.path, result.status_code)
            return result
        return run

    async def list_issues(request: Request, login: str, issue: Any) -> Response:
        q = request.query_params
        state = q.get("state", "open")
        if state not in ("open", "closed", "all"):
            return error(422, "Validation Failed")
        labels = [n.strip() for n in q.get("labels", "").split(",") if n.strip()]
        items = store.list_issues(state, labels, q.get("sort", "created"), q.get("direction", "desc"))
        return paged(request, [store.issue_json(i) for i in items])

    async def create_issue(request: Request, login: str, issue: Any) -> Response:
        data = await json_body(request)
        if not isinstance(data, dict) or not isinstance(data.get("title"), str | int) or data["title"] == "":
            return error(422, "Validation Failed",
                         errors=[{"resource": "Issue", "code": "missing_field", "field": "title"}])
        labels = data.get("labels") or []
        if not isinstance(labels, list):
            return error(422, "Validation Failed",
                         errors=[{"resource": "Issue", "code": "invalid", "field": "labels"}])
        body = data.get("body")
        created = store.create(str(data["title"]), body if isinstance(body, str) else None, labels, login)
        return reply(store.issue_json(created), 201,
                     {"location": f"{API}/repos/{repo}/issues/{created.number}"})

    async def get_issue(request: Request, login: str, issue: Any) -> Response:
        return reply(store.issue_json(issue))

    async def update_issue(request: Request, login: str, issue: Any) -> Response:
        data = await json_body(request)
        if not isinstance(data, dict):
            return error(400, "Problems parsing JSON")
        if "state" in data and data["state"] not in STATES:
            return error(422, "Validation Failed",
                         errors=[{"resource": "Issue", "code": "invalid", "field": "state"}])
        if data.get("state_reason") is not None and data["state_reason"] not in STATE_REASONS:
            return error(422, "Validation Failed",
                         errors=[{"resource": "Issue", "code": "invalid", "field": "state_reason"}])
        store.update(issue, data, login)
        return reply(store.issue_json(issue))

    async def list_comments(request: Request, login: str, issue: Any) -> Response:
        return paged(request, [store.comment_json(c) for c in store.comments_of(issue)])

    async def create_comment(request: Request, login: str, issue: Any) -> Response:
        data = await json_body(request)
        if not isinstance(data, dict) or not isinstance(data.get("body"), str) or not data["body"]:
            return error(422, "Validation Failed",
                         errors=[{"resource": "IssueComment", "code": "missing_field", "field": "body"}])
        comment = store.add_comment(issue, data["body"], login)
        return reply(store.comment_json(comment), 201)

    async def add_labels(request: Request, login: str, issue: Any) -> Response:
        data = await json_body(request)
        # GitHub takes {"labels": [...]}, a bare list, or a single name.
        names = data.get("labels") if isinstance(data, dict) else data
        if isinstance(names, str):
            names = [names]
        if not isinstance(names, list):
            return error(422, "Validation Failed")
        store.add_labels(issue, names)
        return reply([store.label(n) for n in issue.labels])

    async def remove_label(request: Request, login: str, issue: Any) -> Response:
        if not store.remove_label(issue, request.path_params["name"]):
            return error(404, "Label does not exist")
        return reply([store.label(n) for n in issue.labels])

    def control(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def run(request: Request) -> Response:
            if caller(request) != MAINTAINER:
                return error(401, "Bad credentials")
            result: Response = await handler(request)
            return result
        return run

    async def secondary_limit(request: Request) -> Response:
        data = await json_body(request) or {}
        retry_after = data.get("retry_after")
        store.arm_secondary_limit(int(data.get("after_writes", 0)), int(data.get("times", 1)),
                                  int(retry_after) if retry_after is not None else None)
        return JSONResponse({"armed": True})

    async def writes(request: Request) -> Response:
        return JSONResponse(list(store.writes))

    base = "/repos/{owner}/{repo}/issues"
    one = base + "/{number}"
    return [
        Route(base, endpoint(list_issues), methods=["GET"]),
        Route(base, endpoint(create_issue, write=True), methods=["POST"]),
        Route(one, endpoint(get_issue), methods=["GET"]),
        Route(one, endpoint(update_issue, write=True), methods=["PATCH"]),
        Route(one + "/comments", endpoint(list_comments), methods=["GET"]),
        Route(one + "/comments", endpoint(create_comment, write=True), methods=["POST"]),
        Route(one + "/labels", endpoint(add_labels, write=True), methods=["POST"]),
        Route(one + "/labels/{name}", endpoint(remove_label, write=True), methods=["DELETE"]),
        Route("/_fake/issues/secondary-rate-limit", control(secondary_limit), methods=["POST"]),
        Route("/_fake/issues/writes", control(writes), methods=["GET"]),
    ]
