"""GitHub REST: pulls, actions secrets (names only), workflows, runs and their jobs, contents,
commits and comparisons.

Every request carries the headers GitHub documents (``Accept``, ``X-GitHub-Api-Version``, a
``User-Agent`` and the bearer token when one is configured) and honours the rate-limit
headers: with ``x-ratelimit-remaining: 0`` (or a 403/429 carrying ``retry-after``) the probe
waits until the reset when that is within ``rate_limit_wait_max_s``, and raises
``RateLimited`` otherwise.

The probe returns typed facts (``PullRequest``, ``Workflow``, ``WorkflowRun``,
``WorkflowJob``, ``Secret``, ``Comparison``); the checks judge them.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

import httpx

from opsready._errors import AccessRefused, ProbeError, UnexpectedResponse
from opsready.config import GithubConfig
from opsready.probes._http import HttpTarget
from opsready.probes._shared import shared_fact

__all__ = [
    "IGNORED_CONCLUSIONS",
    "Comparison",
    "GithubProbe",
    "JobStep",
    "PullRequest",
    "RateLimited",
    "Secret",
    "SecretInventory",
    "SecretScope",
    "Workflow",
    "WorkflowJob",
    "WorkflowRun",
    "newest_concluded",
    "step_conclusions",
]

API_VERSION = "2022-11-28"
# How many times one request is retried after waiting out a rate limit.
_MAX_RATE_LIMIT_RETRIES = 3
_PAGE_SIZE = 100
# Bound on pagination, so a misbehaving server cannot keep a probe looping.
_MAX_PAGES = 20
# A run that was cancelled (a concurrency group with cancel-in-progress does this all the time)
# or skipped (an `if:` that did not hold) says nothing about whether the job works.
IGNORED_CONCLUSIONS = frozenset({"cancelled", "skipped"})

SecretScope = Literal["repository", "environment", "organization"]
SECRET_SCOPES: tuple[SecretScope, ...] = ("repository", "environment", "organization")


class RateLimited(ProbeError):
    """GitHub's rate limit is exhausted and resets later than the configured bound."""


def _time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class PullRequest:
    number: int
    title: str
    state: str  # "open" or "closed"
    merged: bool
    merged_at: str | None
    merge_commit_sha: str | None
    base: str | None = None  # the branch it was (or is to be) merged into

    def summary(self) -> dict[str, Any]:
        return {"title": self.title, "state": self.state, "merged": self.merged,
                "merged_at": self.merged_at, "merge_commit_sha": self.merge_commit_sha,
                "base": self.base}


def _base_ref(base: Any) -> str | None:
    ref = base.get("ref") if isinstance(base, dict) else None
    return ref if isinstance(ref, str) else None


@dataclass(frozen=True)
class Workflow:
    id: int
    name: str
    path: str  # .github/workflows/<file>
    # active, disabled_manually, disabled_inactivity, disabled_fork or deleted
    state: str

    @property
    def active(self) -> bool:
        return self.state == "active"


@dataclass(frozen=True)
class WorkflowRun:
    id: int
    event: str  # push, schedule, workflow_dispatch, ...
    status: str  # queued, in_progress, completed, ...
    conclusion: str | None  # success, failure, cancelled, skipped, ... once completed
    head_branch: str | None
    head_sha: str
    created_at: dt.datetime
    html_url: str | None

    @property
    def succeeded(self) -> bool:
        return self.status == "completed" and self.conclusion == "success"

    def age_days(self, now: dt.datetime | None = None) -> float:
        return ((now or _now()) - self.created_at).total_seconds() / 86400

    def summary(self, now: dt.datetime | None = None) -> dict[str, Any]:
        return {"id": self.id, "event": self.event, "status": self.status,
                "conclusion": self.conclusion, "head_branch": self.head_branch,
                "head_sha": self.head_sha, "created_at": self.created_at.isoformat(),
                "age_days": round(self.age_days(now), 2), "html_url": self.html_url}


def newest_concluded(runs: Iterable[WorkflowRun]) -> WorkflowRun | None:
    """The newest completed run whose conclusion says something: cancelled and skipped runs
    are passed over."""
    done = [r for r in runs if r.status == "completed" and r.conclusion not in IGNORED_CONCLUSIONS]
    return max(done, key=lambda r: r.created_at, default=None)


@dataclass(frozen=True)
class JobStep:
    number: int
    name: str
    status: str
    conclusion: str | None


@dataclass(frozen=True)
class WorkflowJob:
    id: int
    name: str
    status: str
    conclusion: str | None
    steps: tuple[JobStep, ...]


def step_conclusions(jobs: Iterable[WorkflowJob], job_name: str,
                     step_name: str) -> dict[str, str | None]:
    """``"<job> / <step>"`` -> conclusion, for the step of that name in the job of that name
    (a matrix job's name carries its values in parentheses). A name written with expressions
    (``Roll back ${{ inputs.environment }}``) reaches the run evaluated, so each expression
    matches any text there."""
    job_pattern, step_pattern = _run_name(job_name, suffix=True), _run_name(step_name)
    return {f"{job.name} / {step.name}": step.conclusion
            for job in jobs if job_pattern.fullmatch(job.name)
            for step in job.steps if step_pattern.fullmatch(step.name)}


_EXPRESSION = re.compile(r"\$\{\{.*?\}\}")


def _run_name(written: str, *, suffix: bool = False) -> re.Pattern[str]:
    """What a workflow's job or step name looks like in a run: its expressions evaluated,
    and for a job, perhaps a matrix suffix ``(values)``."""
    parts = _EXPRESSION.split(written)
    body = ".+".join(re.escape(part) for part in parts)
    return re.compile(body + (r"(?: \(.*\))?" if suffix else ""), re.S)


@dataclass(frozen=True)
class Secret:
    """An Actions secret's name and where it lives (never its value)."""

    name: str
    scope: SecretScope
    environment: str | None = None  # for scope "environment"

    @property
    def where(self) -> str:
        return f"environment {self.environment}" if self.environment else self.scope


@dataclass(frozen=True)
class SecretInventory:
    """The secrets found per scope. ``unreadable`` names scopes outside the configured ones
    that could not be read (those were only looked at to say where a secret lives)."""

    secrets: tuple[Secret, ...]
    scopes: tuple[SecretScope, ...]  # the scopes that count
    unreadable: dict[str, str] = field(default_factory=dict)

    def where(self, name: str) -> list[Secret]:
        return [s for s in self.secrets if s.name == name]


@dataclass(frozen=True)
class Comparison:
    """``base...head`` as GitHub's compare API sees it."""

    base: str
    head: str
    status: str  # ahead, behind, identical or diverged
    ahead_by: int
    behind_by: int
    files: tuple[str, ...]
    # GitHub lists at most 300 changed files; beyond that the list is incomplete.
    files_complete: bool


class _Turns:
    """One request at a time. The running criterion (the main thread) goes before the
    read-ahead of shared facts (``opsready.prefetch``), which fills the gaps between its
    requests instead of queueing in front of them."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = False
        self._urgent = 0

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        urgent = threading.current_thread() is threading.main_thread()
        with self._cond:
            self._urgent += urgent
            try:
                self._cond.wait_for(lambda: not self._busy and (urgent or not self._urgent))
            finally:
                self._urgent -= urgent
            self._busy = True
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()


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
        # One request at a time, whichever thread sends it: GitHub asks integrations to send
        # serially, to stay clear of its secondary rate limits.
        self._one_at_a_time = _Turns()

    def close(self) -> None:
        self.http.close()

    @property
    def repo(self) -> str:
        return self.cfg.repo

    @property
    def branch(self) -> str:
        return self.cfg.branch

    # -- commits and contents ---------------------------------------------------------------

    def head_sha(self, branch: str | None = None) -> str:
        """The commit sha at the head of ``branch`` (the configured branch by default)."""
        name = branch or self.cfg.branch
        sha = self.commit_sha(name)
        if sha is None:
            raise UnexpectedResponse(
                f"github: branch {name!r} of {self.repo} was not found; check github.branch"
            )
        return sha

    def commit_sha(self, ref: str) -> str | None:
        """The commit a ref (branch, tag or sha) names, or ``None`` when GitHub knows no such
        ref."""
        resp = self._get(f"{self._repo_path}/commits/{quote(ref, safe='')}")
        # GitHub answers 422 "No commit found for SHA" for an unknown ref, 404 for others.
        if resp.status_code in (404, 422):
            return None
        data = self.http.decode(resp)
        sha = data.get("sha") if isinstance(data, dict) else None
        if not isinstance(sha, str) or not sha:
            raise UnexpectedResponse(
                f"github: commits/{ref} of {self.repo} has no 'sha'; expected a commit object"
            )
        return sha

    def compare(self, base: str, head: str) -> Comparison:
        """What changed from ``base`` to ``head``: the files, and how far apart they are."""
        basehead = f"{quote(base, safe='')}...{quote(head, safe='')}"
        data = self._json(f"{self._repo_path}/compare/{basehead}",
                          what=f"the comparison {base[:12]}...{head[:12]}")
        if not isinstance(data, dict) or not isinstance(data.get("status"), str):
            raise UnexpectedResponse(
                f"github: compare {base[:12]}...{head[:12]} of {self.repo} has no 'status'"
            )
        files = data.get("files") or []
        names = tuple(str(f["filename"]) for f in files
                      if isinstance(f, dict) and isinstance(f.get("filename"), str))
        ahead = int(data.get("ahead_by") or 0)
        return Comparison(base=base, head=head, status=data["status"], ahead_by=ahead,
                          behind_by=int(data.get("behind_by") or 0), files=names,
                          files_complete=len(names) < 300)

    def get_file(self, path: str, ref: str | None = None) -> str | None:
        """The text of one file through the contents API, or ``None`` when it does not exist.

        ``ref`` defaults to the configured branch. A directory raises ``UnexpectedResponse``.
        """
        return self._file_at(path, ref or self.cfg.branch)

    @shared_fact
    def _file_at(self, path: str, ref: str) -> str | None:
        # One shared fact per file and ref, however the caller named the ref.
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

    # -- workflows and runs -----------------------------------------------------------------

    @shared_fact
    def workflows(self) -> list[Workflow]:
        """Every workflow of the repository."""
        found = []
        for wf in self._listing("actions/workflows", "workflows", "workflows"):
            if not isinstance(wf.get("id"), int) or not isinstance(wf.get("path"), str):
                raise UnexpectedResponse(
                    f"github: a workflow of {self.repo} came without id or path")
            found.append(Workflow(id=wf["id"], name=str(wf.get("name", "")), path=wf["path"],
                                  state=str(wf.get("state", ""))))
        return found

    def workflow(self, file: str) -> Workflow | None:
        """The workflow whose path ends with ``file`` (or whose name is ``file``), or ``None``."""
        wanted = file.strip("/")
        for wf in self.workflows():
            if wf.path == wanted or wf.path.endswith("/" + wanted) or wf.name == file:
                return wf
        return None

    @shared_fact
    def runs(
        self,
        workflow: Workflow | str,
        *,
        branch: str | None = None,
        event: str | None = None,
        status: str | None = None,
        limit: int = 30,
    ) -> list[WorkflowRun]:
        """Runs of one workflow, newest first, filtered as GitHub filters them (``status``
        takes a status such as ``completed`` or a conclusion such as ``success``). A
        workflow GitHub does not know gives an empty list."""
        key = str(workflow.id) if isinstance(workflow, Workflow) else workflow
        params: dict[str, str | int] = {"per_page": max(1, min(limit, _PAGE_SIZE))}
        for name, value in (("branch", branch), ("event", event), ("status", status)):
            if value:
                params[name] = value
        url = f"{self._repo_path}/actions/workflows/{quote(key, safe='')}/runs"
        resp = self._get(url, params=params)
        if resp.status_code == 404:
            return []
        data = self.http.decode(resp)
        runs = data.get("workflow_runs") if isinstance(data, dict) else None
        if not isinstance(runs, list):
            raise UnexpectedResponse(
                f"github: runs of {key} in {self.repo} has no 'workflow_runs' list"
            )
        found = [self._run(r, key) for r in runs if isinstance(r, dict)]
        # GitHub lists newest first; sort anyway so the order never depends on the server.
        found.sort(key=lambda r: r.created_at, reverse=True)
        return found[:limit]

    def _run(self, raw: dict[str, Any], workflow: str) -> WorkflowRun:
        created = _time(raw.get("created_at"))
        if not isinstance(raw.get("id"), int) or created is None:
            raise UnexpectedResponse(
                f"github: a run of {workflow} in {self.repo} has no id or no readable "
                f"created_at ({raw.get('created_at')!r})"
            )
        conclusion = raw.get("conclusion")
        return WorkflowRun(
            id=raw["id"], event=str(raw.get("event", "")), status=str(raw.get("status", "")),
            conclusion=str(conclusion) if conclusion is not None else None,
            head_branch=raw.get("head_branch"), head_sha=str(raw.get("head_sha", "")),
            created_at=created, html_url=raw.get("html_url"),
        )

    @shared_fact
    def run_jobs(self, run_id: int) -> list[WorkflowJob]:
        """The jobs of one run (its latest attempt), with their steps."""
        jobs = []
        for job in self._listing(f"actions/runs/{int(run_id)}/jobs", "jobs",
                                 f"jobs of run {run_id}"):
            steps = tuple(
                JobStep(number=int(s.get("number") or 0), name=str(s.get("name", "")),
                        status=str(s.get("status", "")), conclusion=s.get("conclusion"))
                for s in job.get("steps") or [] if isinstance(s, dict))
            jobs.append(WorkflowJob(id=int(job.get("id") or 0), name=str(job.get("name", "")),
                                    status=str(job.get("status", "")),
                                    conclusion=job.get("conclusion"), steps=steps))
        return jobs

    # -- pulls and secrets ------------------------------------------------------------------

    def pull(self, number: int) -> PullRequest:
        """One pull request."""
        data = self._json(f"{self._repo_path}/pulls/{int(number)}", what=f"pull #{number}")
        if not isinstance(data, dict) or ("merged" not in data and "merged_at" not in data):
            raise UnexpectedResponse(
                f"github: pulls/{number} of {self.repo} is not a pull request object"
            )
        return PullRequest(
            number=int(number), title=str(data.get("title", "")), state=str(data.get("state")),
            merged=data.get("merged") is True, merged_at=data.get("merged_at"),
            merge_commit_sha=data.get("merge_commit_sha"),
            base=_base_ref(data.get("base")),
        )

    def environments(self) -> list[str]:
        """The names of the repository's deployment environments."""
        resp = self._get(f"{self._repo_path}/environments", params={"per_page": _PAGE_SIZE})
        if resp.status_code == 404:
            return []
        data = self.http.decode(resp)
        items = data.get("environments") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise UnexpectedResponse(f"github: environments of {self.repo} has no list")
        return [str(e["name"]) for e in items if isinstance(e, dict) and e.get("name")]

    def secret_names(self, scope: SecretScope = "repository",
                     environment: str | None = None) -> list[str]:
        """The names of the Actions secrets of one scope. Values are never requested.

        ``organization`` lists the organization's secrets shared with this repository."""
        if scope == "repository":
            endpoint = "actions/secrets"
        elif scope == "organization":
            endpoint = "actions/organization-secrets"
        else:
            if not environment:
                raise ValueError("an environment secret listing needs the environment")
            endpoint = f"environments/{quote(environment, safe='')}/secrets"
        # A repository that is not in an organization, or has no such environment, answers
        # 404 there; for the repository itself a 404 means it cannot be read at all.
        items = self._listing(endpoint, "secrets", f"{scope} secrets",
                              missing_ok=scope != "repository")
        return [str(s["name"]) for s in items if "name" in s]

    def secret_inventory(self, scopes: Sequence[SecretScope],
                         environments: Sequence[str] = ()) -> SecretInventory:
        """The secrets of every scope, names only. The ``scopes`` that count raise when they
        cannot be read; the other scopes are read only to say where a secret lives, and a
        failure there is noted in ``unreadable``."""
        found: list[Secret] = []
        unreadable: dict[str, str] = {}
        for scope in SECRET_SCOPES:
            try:
                if scope == "environment":
                    names = list(environments) or self.environments()
                    for env in names:
                        found.extend(Secret(n, scope, env)
                                     for n in self.secret_names(scope, env))
                else:
                    found.extend(Secret(n, scope) for n in self.secret_names(scope))
            except ProbeError as exc:
                if scope in scopes:
                    raise
                unreadable[scope] = str(exc)
        return SecretInventory(secrets=tuple(found), scopes=tuple(scopes), unreadable=unreadable)

    # -- plumbing ---------------------------------------------------------------------------

    def _listing(self, endpoint: str, key: str, what: str,
                 missing_ok: bool = False) -> list[dict[str, Any]]:
        """Every entry of a paginated ``{"total_count", key: [...]}`` listing, at most
        ``_MAX_PAGES`` pages. ``missing_ok``: a 404 is an empty listing."""
        found: list[dict[str, Any]] = []
        for page in range(1, _MAX_PAGES + 1):
            url = f"{self._repo_path}/{endpoint}"
            params = {"per_page": _PAGE_SIZE, "page": page}
            if missing_ok:
                resp = self._get(url, params=params)
                if resp.status_code == 404:
                    return found
                data = self.http.decode(resp)
            else:
                data = self._json(url, params=params, what=what)
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
        with self._one_at_a_time.turn():
            return self._send(method, url, params=params, json=json)

    def _send(self, method: str, url: str, *, params: dict[str, Any] | None,
              json: Any) -> httpx.Response:
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
