# Contract fake of the GitHub REST API (a SaaS that cannot run here), shaped per api-facts.md.
"""One repository on a fake GitHub: pulls, actions secrets, workflows and runs, contents, commits.

Run as ``python -m opsready_stack.github_fake --dir DIR --port P``. The token and the head
sha of main come from ``DIR/state.json``; the repository's files from ``stack/github_repo/``.
Faults are read from ``DIR/faults.json`` on every request.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import hmac
import json
import threading
import time
from pathlib import Path
from typing import Any

from opsready_stack.part import Fault, FaultWatcher, StackContext, kill_pidfile, wait_until

__all__ = ["REPO", "GithubPart", "build_app"]

REPO = "relay-platform/relay"
BRANCH = "main"
# A release branch with the same files as main: its name holds a `/`, as blob links to it do.
RELEASE_BRANCH = "release/2024.06"
HERE = Path(__file__).resolve().parent
REPO_DIR = HERE / "github_repo"
VARIANTS_DIR = HERE / "github_repo_variants"
SUPPORTED_API_VERSIONS = ("2022-11-28",)
RATE_LIMIT = 5000
DOCS = "https://docs.github.com/rest"

PRS = (29, 30)
SECRETS = ("RAILWAY_TOKEN", "DATABASE_PUBLIC_URL", "ADMIN_KEY", "DEV_KEY")
WORKFLOWS = {
    # file -> (id, name)
    "deploy.yml": (61203311, "Deploy"),
    "backup.yml": (61203312, "Nightly database backup"),
    "slo-report.yml": (61203313, "Weekly SLO report"),
    "restore-drill.yml": (61203314, "Monthly restore drill"),
}

FAULTS = (
    Fault("pr-unmerged", "PR #30 is still open, not merged", frozenset({"P0-001"})),
    Fault("secret-missing", "the DEV_KEY actions secret is absent", frozenset({"P0-001"})),
    Fault("slo-report-stale", "the last successful weekly SLO report ran 10 days ago",
          frozenset({"P3-001"})),
    Fault("runbook-missing", "docs/runbooks/db-connections.md is absent from the repo",
          frozenset({"P3-002"})),
    Fault("runbook-sections-empty",
          "docs/runbooks/outage.md has every heading but only 'TBD' under them",
          frozenset({"P3-002"})),
    Fault("rollback-notes-only", "scripts/rollback.py only writes markdown notes",
          frozenset({"P1-003"})),
    Fault("no-drill-schedule", "restore-drill.yml has no schedule trigger",
          frozenset({"P1-002"})),
)


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _fake_sha(*parts: object) -> str:
    return hashlib.sha1("/".join(map(str, parts)).encode()).hexdigest()


class FakeGithub:
    """The state and the answers of the fake. Times are computed per request, relative to now."""

    def __init__(self, dir: Path, repo: str, token: str, head_sha: str) -> None:
        self.repo = repo
        self.token = token
        self.head_sha = head_sha
        self.faults = FaultWatcher(dir / "faults.json")
        self._lock = threading.Lock()
        self._window_start = 0
        self._used = 0

    # -- rate limit -------------------------------------------------------------------------

    def rate_headers(self, count: bool) -> dict[str, str]:
        now = int(time.time())
        with self._lock:
            if now >= self._window_start + 3600:
                self._window_start, self._used = now, 0
            if count:
                self._used += 1
            used = self._used
            reset = self._window_start + 3600
        return {
            "x-ratelimit-limit": str(RATE_LIMIT),
            "x-ratelimit-remaining": str(max(0, RATE_LIMIT - used)),
            "x-ratelimit-reset": str(reset),
            "x-ratelimit-used": str(used),
            "x-ratelimit-resource": "core",
        }

    def authorized(self, header: str | None) -> bool:
        if not header:
            return False
        scheme, _, value = header.partition(" ")
        # GitHub accepts both "Bearer" and the older "token" scheme.
        return scheme.lower() in ("bearer", "token") and hmac.compare_digest(
            value.strip().encode(), self.token.encode()
        )

    # -- pulls ------------------------------------------------------------------------------

    def pull(self, number: int) -> dict[str, Any] | None:
        if number not in PRS:
            return None
        now = dt.datetime.now(dt.UTC)
        titles = {
            29: "Sprint 51 Phase 2: CI/CD, nightly backups, rate limiting",
            30: "Sprint 51 Phase 3: security headers, SLO monitoring, alert rules",
        }
        created = now - dt.timedelta(days=9 if number == 29 else 7)
        merged_at = now - dt.timedelta(days=5 if number == 29 else 3)
        merge_sha = _fake_sha("merge", number) if number == 29 else self.head_sha
        base = {
            "url": f"https://api.github.com/repos/{self.repo}/pulls/{number}",
            "html_url": f"https://github.com/{self.repo}/pull/{number}",
            "number": number,
            "title": titles[number],
            "user": {"login": "relay-dev"},
            "created_at": _iso(created),
            "head": {"ref": f"sprint-51/phase-{number - 27}", "sha": _fake_sha("head", number)},
            "base": {"ref": BRANCH},
            "draft": False,
        }
        if number == 30 and self.faults.on("pr-unmerged"):
            # An open PR still carries the sha of GitHub's test merge commit.
            return {**base, "state": "open", "merged": False, "merged_at": None,
                    "closed_at": None, "updated_at": _iso(now - dt.timedelta(hours=6)),
                    "mergeable": True, "merge_commit_sha": _fake_sha("test-merge", number),
                    "merged_by": None}
        return {**base, "state": "closed", "merged": True, "merged_at": _iso(merged_at),
                "closed_at": _iso(merged_at), "updated_at": _iso(merged_at),
                "mergeable": None, "merge_commit_sha": merge_sha,
                "merged_by": {"login": "relay-lead"}}

    # -- secrets ----------------------------------------------------------------------------

    def secrets(self) -> list[dict[str, Any]]:
        now = dt.datetime.now(dt.UTC)
        names = [n for n in SECRETS if not (n == "DEV_KEY" and self.faults.on("secret-missing"))]
        out = []
        for i, name in enumerate(names):
            created = now - dt.timedelta(days=20 - i)
            out.append({"name": name, "created_at": _iso(created),
                        "updated_at": _iso(created + dt.timedelta(days=1))})
        return out

    # -- workflows and runs -----------------------------------------------------------------

    def workflows(self) -> list[dict[str, Any]]:
        created = _iso(dt.datetime(2025, 9, 18, 10, 4, 11, tzinfo=dt.UTC))
        out = []
        for file, (wf_id, name) in WORKFLOWS.items():
            path = f".github/workflows/{file}"
            out.append({
                "id": wf_id,
                "node_id": f"W_kwDO{wf_id}",
                "name": name,
                "path": path,
                "state": "active",
                "created_at": created,
                "updated_at": created,
                "url": f"https://api.github.com/repos/{self.repo}/actions/workflows/{wf_id}",
                "html_url": f"https://github.com/{self.repo}/blob/{BRANCH}/{path}",
                "badge_url": f"https://github.com/{self.repo}/workflows/{name}/badge.svg",
            })
        return out

    def find_workflow(self, key: str) -> tuple[str, int, str] | None:
        for file, (wf_id, name) in WORKFLOWS.items():
            if key in (file, str(wf_id)):
                return file, wf_id, name
        return None

    def runs(self, file: str) -> list[dict[str, Any]]:
        """Every run of one workflow, newest first."""
        now = dt.datetime.now(dt.UTC)
        found = self.find_workflow(file)
        assert found is not None
        file, wf_id, name = found
        # (created_at, event, branch, conclusion, head_sha)
        plan: list[tuple[dt.datetime, str, str, str, str]] = []
        if file == "deploy.yml":
            plan.append((now - dt.timedelta(hours=1), "push", "feature/chat-mvp", "failure",
                         _fake_sha("feature", 1)))
            plan.append((now - dt.timedelta(days=3), "push", BRANCH, "success", self.head_sha))
            plan.append((now - dt.timedelta(days=5), "push", BRANCH, "success",
                         _fake_sha("merge", 29)))
            plan.append((now - dt.timedelta(days=6), "push", BRANCH, "failure",
                         _fake_sha("deploy", 6)))
            plan.append((now - dt.timedelta(days=8), "push", BRANCH, "success",
                         _fake_sha("deploy", 8)))
        elif file == "backup.yml":
            today = now.replace(hour=2, minute=17, second=4, microsecond=0)
            for day in range(30):
                t = today - dt.timedelta(days=day)
                if t > now:
                    continue
                conclusion = "failure" if day == 12 else "success"
                plan.append((t, "schedule", BRANCH, conclusion, self.head_sha))
        elif file == "slo-report.yml":
            last = now - dt.timedelta(days=10 if self.faults.on("slo-report-stale") else 2)
            for week in range(6):
                plan.append((last - dt.timedelta(days=7 * week), "schedule", BRANCH, "success",
                             self.head_sha))
        elif file == "restore-drill.yml":
            if self.faults.on("no-drill-schedule"):
                plan.append((now - dt.timedelta(days=45), "workflow_dispatch", BRANCH,
                             "success", self.head_sha))
            else:
                for month in range(3):
                    plan.append((now - dt.timedelta(days=12 + 30 * month), "schedule", BRANCH,
                                 "success", self.head_sha))
        runs = []
        for i, (created, event, branch, conclusion, sha) in enumerate(plan):
            run_id = wf_id * 1000 + len(plan) - i
            updated = created + dt.timedelta(minutes=3, seconds=17)
            runs.append({
                "id": run_id,
                "name": name,
                "workflow_id": wf_id,
                "path": f".github/workflows/{file}",
                "run_number": len(plan) - i,
                "event": event,
                "status": "completed",
                "conclusion": conclusion,
                "head_branch": branch,
                "head_sha": sha,
                "created_at": _iso(created),
                "updated_at": _iso(updated),
                "run_started_at": _iso(created),
                "html_url": f"https://github.com/{self.repo}/actions/runs/{run_id}",
            })
        return runs

    # -- contents ---------------------------------------------------------------------------

    def file_text(self, path: str) -> bytes | None:
        """The bytes of one file of the repo as the current faults serve it, or None."""
        if path == "docs/runbooks/db-connections.md" and self.faults.on("runbook-missing"):
            return None
        if path == "docs/runbooks/outage.md" and self.faults.on("runbook-sections-empty"):
            return (VARIANTS_DIR / "outage_headings_only.md").read_bytes()
        if path == "scripts/rollback.py" and self.faults.on("rollback-notes-only"):
            return (VARIANTS_DIR / "rollback_notes_only.py").read_bytes()
        if path == ".github/workflows/restore-drill.yml" and self.faults.on("no-drill-schedule"):
            return (VARIANTS_DIR / "restore-drill_no_schedule.yml").read_bytes()
        target = self._resolve(path)
        if target is None or not target.is_file():
            return None
        return target.read_bytes()

    def directory(self, path: str) -> list[str] | None:
        target = self._resolve(path)
        if target is None or not target.is_dir():
            return None
        names = []
        for child in sorted(target.iterdir()):
            rel = child.relative_to(REPO_DIR).as_posix()
            if child.is_file() and self.file_text(rel) is None:
                continue
            names.append(rel)
        return names

    def _resolve(self, path: str) -> Path | None:
        target = (REPO_DIR / path).resolve()
        if target != REPO_DIR and REPO_DIR not in target.parents:
            return None
        if any(part.startswith("__") for part in target.relative_to(REPO_DIR).parts):
            return None
        return target

    def content_entry(self, path: str, data: bytes | None, kind: str) -> dict[str, Any]:
        sha = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() if data is not None \
            else _fake_sha("tree", path)
        entry: dict[str, Any] = {
            "type": kind,
            "name": path.rsplit("/", 1)[-1],
            "path": path,
            "sha": sha,
            "size": len(data) if data is not None else 0,
            "url": f"https://api.github.com/repos/{self.repo}/contents/{path}?ref={BRANCH}",
            "html_url": f"https://github.com/{self.repo}/blob/{BRANCH}/{path}",
            "download_url": (f"https://raw.githubusercontent.com/{self.repo}/{BRANCH}/{path}"
                             if kind == "file" else None),
        }
        return entry

    def known_ref(self, ref: str) -> bool:
        return ref in (BRANCH, self.head_sha, f"refs/heads/{BRANCH}", RELEASE_BRANCH)


def _b64_lines(data: bytes) -> str:
    # GitHub wraps base64 content at 60 characters per line.
    text = base64.b64encode(data).decode()
    return "\n".join(text[i:i + 60] for i in range(0, len(text), 60)) + "\n"


def build_app(dir: Path, repo: str = REPO) -> Any:
    """The Starlette app of the fake, configured from ``dir/state.json``."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    state = json.loads((dir / "state.json").read_text())
    gh = FakeGithub(dir, repo, state["secrets"]["github_token"], state["settings"]["git_sha"])
    owner, name = repo.split("/", 1)

    def reply(body: Any, status: int = 200, count: bool = True) -> Response:
        headers = {**gh.rate_headers(count), "x-github-api-version-selected": "2022-11-28"}
        return JSONResponse(body, status_code=status, headers=headers)

    def not_found() -> Response:
        return reply({"message": "Not Found", "documentation_url": DOCS, "status": "404"}, 404)

    def guarded(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            version = request.headers.get("x-github-api-version")
            if version is not None and version not in SUPPORTED_API_VERSIONS:
                return reply({"message": f"API version '{version}' is not supported.",
                              "documentation_url": DOCS, "status": "400"}, 400)
            if not gh.authorized(request.headers.get("authorization")):
                return reply({"message": "Bad credentials", "documentation_url": DOCS,
                              "status": "401"}, 401)
            p = request.path_params
            if (p.get("owner"), p.get("repo")) != (owner, name):
                return not_found()
            result: Response = await handler(request)
            return result
        return endpoint

    def page(request: Request, items: list[Any]) -> list[Any]:
        try:
            per_page = max(1, min(100, int(request.query_params.get("per_page", "30"))))
            number = max(1, int(request.query_params.get("page", "1")))
        except ValueError:
            per_page, number = 30, 1
        return items[(number - 1) * per_page: number * per_page]

    async def rate_limit(request: Request) -> Response:
        core = {k.removeprefix("x-ratelimit-"): int(v) for k, v in gh.rate_headers(False).items()
                if k != "x-ratelimit-resource"}
        return reply({"resources": {"core": core}, "rate": core}, count=False)

    async def repository(request: Request) -> Response:
        return reply({"id": 870112233, "name": name, "full_name": repo, "private": True,
                      "default_branch": BRANCH, "owner": {"login": owner}})

    async def pull(request: Request) -> Response:
        try:
            number = int(request.path_params["number"])
        except ValueError:
            return not_found()
        data = gh.pull(number)
        return reply(data) if data is not None else not_found()

    async def secrets(request: Request) -> Response:
        items = gh.secrets()
        return reply({"total_count": len(items), "secrets": page(request, items)})

    async def workflows(request: Request) -> Response:
        items = gh.workflows()
        return reply({"total_count": len(items), "workflows": page(request, items)})

    async def workflow(request: Request) -> Response:
        found = gh.find_workflow(request.path_params["workflow"])
        if found is None:
            return not_found()
        return reply(next(w for w in gh.workflows() if w["id"] == found[1]))

    async def runs(request: Request) -> Response:
        found = gh.find_workflow(request.path_params["workflow"])
        if found is None:
            return not_found()
        q = request.query_params
        items = gh.runs(found[0])
        if q.get("branch"):
            items = [r for r in items if r["head_branch"] == q["branch"]]
        if q.get("event"):
            items = [r for r in items if r["event"] == q["event"]]
        if q.get("status"):
            # GitHub's status filter takes a status or a conclusion.
            items = [r for r in items if q["status"] in (r["status"], r["conclusion"])]
        if q.get("head_sha"):
            items = [r for r in items if r["head_sha"] == q["head_sha"]]
        return reply({"total_count": len(items), "workflow_runs": page(request, items)})

    async def commit(request: Request) -> Response:
        ref = request.path_params["ref"]
        if not gh.known_ref(ref):
            return reply({"message": f"No commit found for SHA: {ref}",
                          "documentation_url": DOCS, "status": "422"}, 422)
        when = _iso(dt.datetime.now(dt.UTC) - dt.timedelta(days=3))
        return reply({
            "sha": gh.head_sha,
            "node_id": f"C_{gh.head_sha[:20]}",
            "commit": {
                "message": "Merge pull request #30 from relay-platform/sprint-51/phase-3",
                "author": {"name": "relay-lead", "date": when},
                "committer": {"name": "GitHub", "date": when},
            },
            "html_url": f"https://github.com/{repo}/commit/{gh.head_sha}",
            "parents": [{"sha": _fake_sha("parent", 1)}, {"sha": _fake_sha("head", 30)}],
        })

    async def contents(request: Request) -> Response:
        path = request.path_params.get("path", "").strip("/")
        ref = request.query_params.get("ref", BRANCH)
        if not gh.known_ref(ref):
            return reply({"message": f"No commit found for the ref {ref}",
                          "documentation_url": DOCS, "status": "404"}, 404)
        listing = gh.directory(path)
        if listing is not None:
            entries = []
            for rel in listing:
                data = gh.file_text(rel)
                entries.append(gh.content_entry(rel, data, "file" if data is not None else "dir"))
            return reply(entries)
        data = gh.file_text(path)
        if data is None:
            return not_found()
        entry = gh.content_entry(path, data, "file")
        entry.update({"encoding": "base64", "content": _b64_lines(data)})
        return reply(entry)

    base = "/repos/{owner}/{repo}"
    routes = [
        Route("/rate_limit", rate_limit),
        Route(base, guarded(repository)),
        Route(base + "/pulls/{number}", guarded(pull)),
        Route(base + "/actions/secrets", guarded(secrets)),
        Route(base + "/actions/workflows", guarded(workflows)),
        Route(base + "/actions/workflows/{workflow}", guarded(workflow)),
        Route(base + "/actions/workflows/{workflow}/runs", guarded(runs)),
        Route(base + "/commits/{ref:path}", guarded(commit)),
        Route(base + "/contents", guarded(contents)),
        Route(base + "/contents/{path:path}", guarded(contents)),
    ]

    async def fallback(request: Request, exc: Exception) -> Response:
        return not_found()

    return Starlette(routes=routes, exception_handlers={404: fallback, 405: fallback})


class GithubPart:
    """The GitHub contract fake as a part of the reference stack."""

    name = "github"
    ports = ("github",)
    faults = FAULTS
    repo = REPO

    def start(self, ctx: StackContext) -> None:
        port = ctx.ports["github"]
        ctx.spawn("github", [ctx.python(), "-m", "opsready_stack.github_fake",
                             "--dir", str(ctx.dir), "--port", str(port), "--repo", self.repo])
        ctx.urls["github"] = f"http://127.0.0.1:{port}"

    def wait_ready(self, ctx: StackContext, deadline: float) -> None:
        import httpx

        url = ctx.urls["github"] + "/rate_limit"

        def up() -> bool:
            return httpx.get(url, timeout=1.0).status_code == 200

        try:
            wait_until(up, deadline, "github fake")
        except RuntimeError:
            raise RuntimeError(
                f"github fake did not answer at {url}; see {ctx.logs / 'github.log'}"
            ) from None

    def after_ready(self, ctx: StackContext) -> None:
        pass

    def env_config(self, ctx: StackContext) -> dict[str, Any]:
        return {
            "github": {
                "api_url": ctx.urls["github"],
                "token": ctx.secrets["github_token"],
                "repo": self.repo,
                "branch": BRANCH,
                "prs": list(PRS),
                "secrets": list(SECRETS),
                "deploy_workflow": "deploy.yml",
                "backup_workflow": "backup.yml",
                "slo_report_workflow": "slo-report.yml",
                "slo_report_max_age_days": 8,
                "drill_workflow": "restore-drill.yml",
                "rollback_script": "scripts/rollback.py",
                "rate_limit_wait_max_s": 30,
            }
        }

    def set_fault(self, ctx: StackContext, name: str, on: bool) -> None:
        # Every fault of this part is read from faults.json per request.
        pass

    def stop(self, ctx: StackContext) -> None:
        kill_pidfile(ctx.pids / "github.pid")


def main() -> None:
    parser = argparse.ArgumentParser(description="GitHub REST contract fake")
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--repo", default=REPO)
    args = parser.parse_args()

    import uvicorn

    uvicorn.run(build_app(args.dir, args.repo), host="127.0.0.1", port=args.port,
                log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
