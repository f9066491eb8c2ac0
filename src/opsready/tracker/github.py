"""GitHub issues as a ``Tracker``, through the GitHub REST API (version 2022-11-28).

Requests go through ``GithubProbe.send``: the same headers, timeouts and primary and secondary
rate-limit waits as the GitHub probe, bounded by ``tracker.github.rate_limit_wait_max_s``.
Writes are spaced by ``tracker.github.write_interval_s`` (GitHub asks for a second between
POST, PATCH and DELETE requests). The endpoints and the answer shapes used are listed in
``docs/tracker-sync.md``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from opsready._errors import AccessRefused, UnexpectedResponse
from opsready.config import GithubConfig, TrackerGithubConfig
from opsready.evidence import redactor
from opsready.probes.github import GithubProbe
from opsready.tracker.base import CloseReason, TrackedIssue

__all__ = ["GithubTracker"]

_PAGE_SIZE = 100
# Bound on pagination: one label names one issue, and a ticket gets a comment per change.
_MAX_PAGES = 20


class GithubTracker:
    """The issues of one GitHub repository."""

    name = "github"

    def __init__(
        self,
        cfg: TrackerGithubConfig,
        timeout: float,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        client_cfg = GithubConfig(api_url=cfg.api_url, token=cfg.token, repo=cfg.repo,
                                  rate_limit_wait_max_s=cfg.rate_limit_wait_max_s)
        self.api = GithubProbe(client_cfg, timeout, transport=transport, sleep=sleep, clock=clock,
                               config_key="tracker.github",
                               token_needs=f"Issues: read and write on {cfg.repo}")
        self._sleep = sleep
        self._monotonic = monotonic
        self._last_write: float | None = None
        # Set once a response shows a classic token, whose scopes reach far beyond issues.
        self.token_note: str | None = None

    @property
    def location(self) -> str:
        return self.cfg.repo

    def close(self) -> None:
        self.api.close()

    # -- reads -------------------------------------------------------------------------------

    def find(self, label: str) -> list[TrackedIssue]:
        params = {"labels": label, "state": "all", "sort": "created", "direction": "asc",
                  "per_page": _PAGE_SIZE}
        items = self._pages(f"{self._repo_path}/issues", params, f"issues labelled {label!r}")
        # The issues endpoint lists pull requests too; a pull request is never a ticket's issue.
        return [self._issue(i) for i in items if "pull_request" not in i]

    def comments(self, issue: TrackedIssue) -> list[str]:
        items = self._pages(f"{self._repo_path}/issues/{issue.ref}/comments", {"per_page": _PAGE_SIZE},
                            f"comments of {issue.key}")
        return [str(c.get("body") or "") for c in items]

    # -- writes ------------------------------------------------------------------------------

    def create(self, title: str, body: str, labels: list[str]) -> TrackedIssue:
        data = self._write("POST", f"{self._repo_path}/issues",
                           {"title": title, "body": body, "labels": labels}, "create an issue")
        if not isinstance(data, dict):
            raise UnexpectedResponse(f"github: creating an issue in {self.location} did not return an issue")
        return self._issue(data)

    def comment(self, issue: TrackedIssue, body: str) -> None:
        self._write("POST", f"{self._repo_path}/issues/{issue.ref}/comments", {"body": body},
                    f"comment on {issue.key}")

    def add_labels(self, issue: TrackedIssue, labels: list[str]) -> None:
        self._write("POST", f"{self._repo_path}/issues/{issue.ref}/labels", {"labels": labels},
                    f"label {issue.key}")

    def remove_label(self, issue: TrackedIssue, label: str) -> None:
        # 404 "Label does not exist": the label is already off the issue, which is the goal.
        self._write("DELETE", f"{self._repo_path}/issues/{issue.ref}/labels/{quote(label, safe='')}",
                    None, f"remove label {label!r} from {issue.key}", absent_ok=True)

    def set_body(self, issue: TrackedIssue, body: str) -> None:
        self._write("PATCH", f"{self._repo_path}/issues/{issue.ref}", {"body": body},
                    f"update the description of {issue.key}")

    def close_issue(self, issue: TrackedIssue, reason: CloseReason) -> None:
        self._write("PATCH", f"{self._repo_path}/issues/{issue.ref}",
                    {"state": "closed", "state_reason": reason}, f"close {issue.key}")

    def reopen_issue(self, issue: TrackedIssue) -> None:
        self._write("PATCH", f"{self._repo_path}/issues/{issue.ref}", {"state": "open"},
                    f"reopen {issue.key}")

    # -- plumbing ----------------------------------------------------------------------------

    @property
    def _repo_path(self) -> str:
        return f"/repos/{self.cfg.repo}"

    def _pages(self, url: str, params: dict[str, Any] | None, what: str) -> list[dict[str, Any]]:
        """Every item of a listing that GitHub pages with ``Link: <…>; rel="next"``."""
        found: list[dict[str, Any]] = []
        next_url: str | None = url
        for _ in range(_MAX_PAGES):
            if next_url is None:
                return found
            resp = self.api.send("GET", next_url, params=params)
            data = self._decode(resp, (200,), what)
            if not isinstance(data, list):
                raise UnexpectedResponse(f"github: {what} in {self.location} is not a list")
            found.extend(i for i in data if isinstance(i, dict))
            # The next link carries every parameter; it must stay on the configured API host,
            # or the token would follow it elsewhere.
            next_url, params = resp.links.get("next", {}).get("url"), None
            if next_url is not None and not self._same_origin(next_url):
                raise UnexpectedResponse(
                    f"github: {what}: the next page link points away from {self.cfg.api_url}; not followed")
        raise UnexpectedResponse(f"github: {what} in {self.location} has more than {_MAX_PAGES} pages")

    def _same_origin(self, url: str) -> bool:
        a, b = urlsplit(url), urlsplit(self.cfg.api_url)
        return (a.scheme, a.netloc) == (b.scheme, b.netloc)

    def _write(self, method: str, url: str, body: Any, what: str, *, absent_ok: bool = False) -> Any:
        if self._last_write is not None:
            rest = self.cfg.write_interval_s - (self._monotonic() - self._last_write)
            if rest > 0:
                self._sleep(rest)
        try:
            resp = self.api.send(method, url, json=body)
        finally:
            self._last_write = self._monotonic()
        if absent_ok and resp.status_code == 404:
            return None
        return self._decode(resp, (200, 201), what)

    def _decode(self, resp: httpx.Response, ok: tuple[int, ...], what: str) -> Any:
        self._note_token(resp)
        if resp.status_code in ok:
            return self.api.http.decode(resp, ok=ok)
        message = _message(resp)
        if resp.status_code == 403:
            raise AccessRefused(
                f"github: could not {what} in {self.location}: 403 ({message}); tracker.github.token "
                f"needs the permission Issues: read and write on {self.location}")
        if resp.status_code == 404:
            raise UnexpectedResponse(
                f"github: could not {what}: 404 ({message}); check tracker.github.repo "
                f"({self.location}) and that the token can see it")
        if resp.status_code == 410:
            raise UnexpectedResponse(
                f"github: could not {what}: issues are disabled in {self.location} (410); "
                f"turn them on in the repository settings or point tracker.github.repo elsewhere")
        raise UnexpectedResponse(f"github: could not {what} in {self.location}: {resp.status_code} ({message})")

    def _note_token(self, resp: httpx.Response) -> None:
        scopes = resp.headers.get("x-oauth-scopes")
        if scopes is None or self.token_note is not None:
            return
        shown = scopes.strip() or "none"
        self.token_note = (
            f"tracker.github.token is a classic token (scopes: {shown}); a fine-grained token "
            f"with only the permission Issues: read and write on {self.location} is enough")

    def _issue(self, data: dict[str, Any]) -> TrackedIssue:
        number, state = data.get("number"), data.get("state")
        if not isinstance(number, int) or state not in ("open", "closed"):
            raise UnexpectedResponse(
                f"github: an issue of {self.location} has no number or state; expected an issue object")
        labels = frozenset(str(label.get("name")) if isinstance(label, dict) else str(label)
                           for label in data.get("labels") or [])
        return TrackedIssue(
            key=f"#{number}", url=str(data.get("html_url") or ""), title=str(data.get("title") or ""),
            body=str(data.get("body") or ""), labels=labels, closed=state == "closed", ref=str(number))


def _message(resp: httpx.Response) -> str:
    # Redacted before it is cut: a cut secret no longer matches.
    try:
        data = resp.json()
    except ValueError:
        return redactor.excerpt(resp.text, 200)
    message = data.get("message") if isinstance(data, dict) else None
    return redactor.excerpt(str(message), 200) if message else redactor.excerpt(resp.text, 200)
