"""GitHub REST: pulls, actions secrets (names only), workflows and runs, contents, commits.

Every request carries the headers GitHub documents (``Accept``, ``X-GitHub-Api-Version``, a
``User-Agent`` and the bearer token when one is configured) and honours the rate-limit
headers: with ``x-ratelimit-remaining: 0`` (or a 403/429 carrying ``retry-after``) the probe
waits until the reset when that is within ``rate_limit_wait_max_s``, and raises
``RateLimited`` otherwise.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx

from opsready._errors import AccessRefused, ProbeError, UnexpectedResponse
from opsready.config import GithubConfig
from opsready.probes._http import HttpTarget

__all__ = ["GithubProbe", "RateLimited"]

API_VERSION = "2022-11-28"
# How many times one request is retried after waiting out a rate limit.
_MAX_RATE_LIMIT_RETRIES = 3
_PAGE_SIZE = 100
# Bound on pagination, so a misbehaving server cannot keep a probe looping.
_MAX_PAGES = 20


class RateLimited(ProbeError):
    """GitHub's rate limit is exhausted and resets later than the configured bound."""


class GithubProbe:
    """Read-only access to one repository through the GitHub REST API."""

    def __init__(
        self,
        cfg: GithubConfig,
        timeout: float,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        config_key: str = "github",
        token_needs: str | None = None,
    ) -> None:
        self.cfg = cfg
        # Messages name the config section the token and the bound come from, and what the
        # token needs: the tracker sync reuses this client with its own section and token.
        self._config_key = config_key
        self._token_needs = token_needs or f"read access to {cfg.repo}"
        headers = {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
        }
        if cfg.token is not None and cfg.token.get_secret_value():
            headers["Authorization"] = f"Bearer {cfg.token.get_secret_value()}"
        self.http = HttpTarget("github", cfg.api_url, timeout=timeout, headers=headers,
                               transport=transport)
        self._sleep = sleep
        self._clock = clock
        # Unix time until which the API told us it has no requests left for us.
        self._exhausted_until: float | None = None

    def close(self) -> None:
        self.http.close()

    @property
    def repo(self) -> str:
        return self.cfg.repo

    @property
    def branch(self) -> str:
        return self.cfg.branch

    # -- public API -------------------------------------------------------------------------

    def head_sha(self, branch: str | None = None) -> str:
        """The commit sha at the head of ``branch`` (the configured branch by default)."""
        name = branch or self.cfg.branch
        data = self._json(f"{self._repo_path}/commits/{quote(name, safe='')}",
                          what=f"branch {name!r}")
        sha = data.get("sha") if isinstance(data, dict) else None
        if not isinstance(sha, str) or not sha:
            raise UnexpectedResponse(
                f"github: commits/{name} of {self.repo} has no 'sha'; expected a commit object"
            )
        return sha

    def get_file(self, path: str, ref: str | None = None) -> str | None:
        """The text of one file through the contents API, or ``None`` when it does not exist.

        ``ref`` defaults to the configured branch. A directory raises ``UnexpectedResponse``.
        """
        ref = ref or self.cfg.branch
        url = f"{self._repo_path}/contents/{quote(path.lstrip('/'), safe='/')}"
        resp = self._get(url, params={"ref": ref})
        if resp.status_code == 404:
            return None
        data = self.http.decode(resp)
        if isinstance(data, list):
            raise UnexpectedResponse(
                f"github: {path} in {self.repo}@{ref} is a directory, expected a file; "
                f"point the config at the file itself"
            )
        if not isinstance(data, dict) or data.get("type") != "file":
            kind = data.get("type") if isinstance(data, dict) else type(data).__name__
            raise UnexpectedResponse(
                f"github: {path} in {self.repo}@{ref} is of type {kind!r}, expected a file"
            )
        content = data.get("content")
        if not isinstance(content, str):
            raise UnexpectedResponse(f"github: {path} in {self.repo}@{ref} came without content")
        encoding = data.get("encoding", "base64")
        if encoding != "base64":
            # GitHub answers with encoding "none" for files over 1 MB.
            raise UnexpectedResponse(
                f"github: {path} in {self.repo}@{ref} has encoding {encoding!r}; "
                f"only base64 content (files under 1 MB) can be read"
            )
        try:
            raw = base64.b64decode("".join(content.split()), validate=True)
        except (binascii.Error, ValueError):
            raise UnexpectedResponse(
                f"github: {path} in {self.repo}@{ref} is not valid base64"
            ) from None
        return raw.decode("utf-8", "replace")

    def workflows(self) -> list[dict[str, Any]]:
        """Every workflow of the repository (``id``, ``name``, ``path``, ``state``)."""
        return self._listing("actions/workflows", "workflows", "workflows")

    def workflow(self, file: str) -> dict[str, Any] | None:
        """The workflow whose path ends with ``file`` (or whose name is ``file``), or ``None``."""
        wanted = file.strip("/")
        for wf in self.workflows():
            path = str(wf.get("path", ""))
            if path == wanted or path.endswith("/" + wanted) or wf.get("name") == file:
                return wf
        return None

    def runs(
        self,
        workflow_file: str,
        branch: str | None = None,
        status: str | None = "success",
        event: str | None = None,
        limit: int = 10,
    ) -> list[dict[str, Any]]:
        """Runs of one workflow, newest first. ``branch`` defaults to the configured branch.

        A workflow GitHub does not know gives an empty list.
        """
        params: dict[str, str | int] = {
            "branch": branch or self.cfg.branch,
            "per_page": max(1, min(limit, _PAGE_SIZE)),
        }
        if status:
            params["status"] = status
        if event:
            params["event"] = event
        url = f"{self._repo_path}/actions/workflows/{quote(workflow_file, safe='')}/runs"
        resp = self._get(url, params=params)
        if resp.status_code == 404:
            return []
        data = self.http.decode(resp)
        runs = data.get("workflow_runs") if isinstance(data, dict) else None
        if not isinstance(runs, list):
            raise UnexpectedResponse(
                f"github: runs of {workflow_file} in {self.repo} has no 'workflow_runs' list"
            )
        clean = [r for r in runs if isinstance(r, dict)]
        # GitHub lists newest first; sort anyway so the order never depends on the server.
        clean.sort(key=lambda r: str(r.get("created_at", "")), reverse=True)
        return clean[:limit]

    def latest_run(
        self,
        workflow_file: str,
        branch: str | None = None,
        status: str | None = "success",
        event: str | None = None,
    ) -> dict[str, Any] | None:
        """The newest run matching the filters, or ``None`` when there is none.

        ``status`` is GitHub's filter (a status such as ``completed`` or a conclusion such as
        ``success``); pass ``None`` for the newest run whatever its outcome.
        """
        runs = self.runs(workflow_file, branch=branch, status=status, event=event, limit=1)
        return runs[0] if runs else None

    def pull(self, number: int) -> dict[str, Any]:
        """One pull request (``state``, ``merged``, ``merged_at``, ``merge_commit_sha``)."""
        data = self._json(f"{self._repo_path}/pulls/{int(number)}", what=f"pull #{number}")
        if not isinstance(data, dict) or ("merged" not in data and "merged_at" not in data):
            raise UnexpectedResponse(
                f"github: pulls/{number} of {self.repo} is not a pull request object"
            )
        return data

    def secret_names(self) -> list[str]:
        """The names of the repository's Actions secrets. Values are never requested."""
        items = self._listing("actions/secrets", "secrets", "actions secrets")
        return [str(s["name"]) for s in items if "name" in s]

    # -- plumbing ---------------------------------------------------------------------------

    def _listing(self, endpoint: str, key: str, what: str) -> list[dict[str, Any]]:
        """Every entry of a paginated ``{"total_count", key: [...]}`` listing, at most
        ``_MAX_PAGES`` pages."""
        found: list[dict[str, Any]] = []
        for page in range(1, _MAX_PAGES + 1):
            data = self._json(f"{self._repo_path}/{endpoint}",
                              params={"per_page": _PAGE_SIZE, "page": page}, what=what)
            items = data.get(key) if isinstance(data, dict) else None
            if not isinstance(items, list):
                raise UnexpectedResponse(f"github: {endpoint} of {self.repo} has no '{key}' list")
            found.extend(i for i in items if isinstance(i, dict))
            total = data.get("total_count")
            if len(items) < _PAGE_SIZE or (isinstance(total, int) and len(found) >= total):
                break
        return found

    @property
    def _repo_path(self) -> str:
        return f"/repos/{self.cfg.repo}"

    def _json(self, url: str, *, params: dict[str, Any] | None = None, what: str) -> Any:
        resp = self._get(url, params=params)
        if resp.status_code == 404:
            # GitHub also answers 404 for private repositories the token cannot see.
            raise UnexpectedResponse(
                f"github: {what} of {self.repo} answered 404; check the repository name and "
                f"that the token can read it"
            )
        return self.http.decode(resp)

    def _get(self, url: str, *, params: dict[str, Any] | None = None) -> httpx.Response:
        """GET with the rate-limit rules; 401 raises ``AccessRefused``."""
        return self.send("GET", url, params=params)

    def send(self, method: str, url: str, *, params: dict[str, Any] | None = None,
             json: Any = None) -> httpx.Response:
        """One request with GitHub's headers and rate-limit rules; 401 raises ``AccessRefused``.

        The probe itself only reads. ``opsready sync`` writes issues through this method, so a
        write waits out a primary or secondary rate limit exactly as a read does. A request
        that was rate-limited was not carried out, so repeating it is safe."""
        for _ in range(_MAX_RATE_LIMIT_RETRIES + 1):
            self._wait_for_reset()
            resp = self.http.request(method, url, params=params, json=json)
            self._note_rate_limit(resp)
            if resp.status_code in (403, 429):
                wait = self._limited_wait(resp)
                if wait is not None:
                    self._wait(wait, url)
                    self._exhausted_until = None
                    continue
            if resp.status_code == 401:
                raise AccessRefused(
                    f"github: {method} {url} answered 401; the token was refused, check "
                    f"{self._config_key}.token in the environment config (it needs "
                    f"{self._token_needs})"
                )
            return resp
        raise RateLimited(
            f"github: {method} {url} was still rate-limited after {_MAX_RATE_LIMIT_RETRIES} waits; "
            f"run again later or use a token with a higher limit"
        )

    def _note_rate_limit(self, resp: httpx.Response) -> None:
        remaining = resp.headers.get("x-ratelimit-remaining")
        reset = _number(resp.headers.get("x-ratelimit-reset"))
        if remaining is not None and remaining.strip() == "0" and reset is not None:
            self._exhausted_until = reset
        else:
            self._exhausted_until = None

    def _limited_wait(self, resp: httpx.Response) -> float | None:
        """Seconds to wait when a 403/429 is a rate limit, or ``None`` when it is not."""
        retry_after = _number(resp.headers.get("retry-after"))
        if retry_after is not None:
            return max(0.0, retry_after)
        if resp.headers.get("x-ratelimit-remaining", "").strip() == "0":
            reset = _number(resp.headers.get("x-ratelimit-reset"))
            # Without a reset time GitHub asks clients to wait at least a minute.
            return max(0.0, reset - self._clock()) if reset is not None else 60.0
        # A secondary rate limit may come as a bare 403 whose message names it; GitHub asks
        # clients to wait at least a minute then.
        if resp.status_code == 429 or "rate limit" in resp.text.lower():
            return 60.0
        return None

    def _wait_for_reset(self) -> None:
        if self._exhausted_until is None:
            return
        wait = self._exhausted_until - self._clock()
        if wait > 0:
            self._wait(wait, "the next request")
        self._exhausted_until = None

    def _wait(self, seconds: float, what: str) -> None:
        bound = self.cfg.rate_limit_wait_max_s
        if seconds > bound:
            raise RateLimited(
                f"github: rate limit exhausted before {what}; it resets in {seconds:.0f}s, "
                f"more than {self._config_key}.rate_limit_wait_max_s ({bound:g}s); run again after the "
                f"reset or raise the bound"
            )
        self._sleep(seconds)


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value.strip())
    except ValueError:
        return None
