# Contract fake of the GitHub REST API (a SaaS that cannot run here), shaped per api-facts.md.
"""One repository on a fake GitHub: pulls, actions secrets (repository, environment and
organization scope), workflows, runs and their jobs, contents, commits and comparisons.

Run as ``python -m opsready_stack.github_fake --dir DIR --port P``. The token and the sha the
service is deployed from (main's head unless a fault adds a commit on top) come from
``DIR/state.json``; the repository's files from ``stack/github_repo/``, and the files that
faults and variants swap in from ``stack/github_repo_variants/``. Faults are read from
``DIR/faults.json`` on every request.
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

from opsready_stack.github_issues_fake import issue_routes, tracker_env_config
from opsready_stack.part import Fault, FaultWatcher, HttpFakePart, StackContext

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
ENVIRONMENTS = ("production",)
WORKFLOWS = {
    # file -> (id, name)
    "deploy.yml": (61203311, "Deploy"),
    "backup.yml": (61203312, "Nightly database backup"),
    "slo-report.yml": (61203313, "Weekly SLO report"),
    "restore-drill.yml": (61203314, "Monthly restore drill"),
    "rollback.yml": (61203315, "Roll back production"),
}
ROLLBACK_SCRIPT = "scripts/rollback"
# The release tag on the deployed commit, for platforms that report tag-style versions.
RELEASE_TAG = "v51.3.0"
# The step of rollback.yml that runs the rollback script, as the run's jobs name it.
ROLLBACK_JOB, ROLLBACK_STEP = "rollback", "Roll back to the previous deployment"

FAULTS = (
    Fault("pr-unmerged", "PR #30 is still open, not merged", frozenset({"P0-001"})),
    Fault("secret-missing", "the DEV_KEY actions secret is absent", frozenset({"P0-001"})),
    Fault("secrets-across-scopes",
          "RAILWAY_TOKEN lives in the production environment and DATABASE_PUBLIC_URL is an "
          "organization secret shared with the repository", frozenset(), variant=True),
    Fault("deploy-run-failed", "the newest deploy run on main (a manual re-deploy) failed",
          frozenset({"P0-001"})),
    Fault("runs-cancelled",
          "the newest run of every workflow was cancelled by its concurrency group or skipped, "
          "after an older success", frozenset(), variant=True),
    Fault("backup-workflow-disabled", "backup.yml was disabled by hand (disabled_manually)",
          frozenset({"P0-001"})),
    Fault("backup-runs-stale", "backup.yml is active but its last run was 3 days ago",
          frozenset({"P0-001"})),
    Fault("head-not-deployed",
          "main's head is a code commit whose deploy run was cancelled: the service still "
          "runs the commit before it", frozenset({"P0-001"})),
    Fault("docs-commit-after-deploy",
          "main's head is a docs-only commit after the last deploy; deploy.yml's paths-ignore "
          "does not deploy it", frozenset(), variant=True),
    Fault("slo-report-stale", "the last successful weekly SLO report ran 10 days ago",
          frozenset({"P3-001"})),
    Fault("slo-report-manual-only",
          "slo-report.yml has no schedule trigger; it is run by hand (recently, successfully)",
          frozenset({"P3-001"})),
    Fault("runbook-missing", "docs/runbooks/db-connections.md is absent from the repo",
          frozenset({"P3-002"})),
    Fault("runbook-sections-empty",
          "docs/runbooks/outage.md has every heading but only 'TBD' under them",
          frozenset({"P3-002"})),
    Fault("rollback-notes-only",
          "scripts/rollback only writes markdown notes (which quote the mutation)",
          frozenset({"P1-003"})),
    Fault("rollback-shell-script",
          "scripts/rollback is a shell script that posts the mutation with curl",
          frozenset(), variant=True),
    Fault("rollback-run-failed", "the latest run of rollback.yml failed in its rollback step",
          frozenset({"P1-003"})),
    Fault("no-drill-schedule", "restore-drill.yml has no schedule trigger",
          frozenset({"P1-002"})),
    Fault("drill-run-by-hand",
          "restore-drill.yml has no schedule: the drill is run by hand and recorded in S3",
          frozenset(), variant=True),
)

# The commits of main, oldest first: (sha, files changed). The head's sha comes from the
# stack's state; a fault may put one more commit on top.
def _history(head: str) -> list[tuple[str, tuple[str, ...]]]:
    return [
        (_fake_sha("deploy", 8), ("src/relay/pool.py",)),
        (_fake_sha("deploy", 6), ("src/relay/webhooks.py",)),
        (_fake_sha("merge", 29), ("src/relay/ratelimit.py", ".github/workflows/backup.yml")),
        (head, ("src/relay/headers.py", "deploy/alerts.yml")),
    ]


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _fake_sha(*parts: object) -> str:
    return hashlib.sha1("/".join(map(str, parts)).encode()).hexdigest()


class FakeGithub:
    """The state and the answers of the fake. Times are computed per request, relative to now."""

    def __init__(self, dir: Path, repo: str, token: str, deployed_sha: str) -> None:
        self.repo = repo
        self.token = token
        # The commit the service runs: main's head unless a fault adds a commit on top.
        self.deployed_sha = deployed_sha
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

    # -- commits ----------------------------------------------------------------------------

    def commits(self) -> list[tuple[str, tuple[str, ...]]]:
        """main's commits, oldest first, as the current faults have them."""
        history = _history(self.deployed_sha)
        if self.faults.on("head-not-deployed"):
            history.append((_fake_sha("code", self.deployed_sha), ("src/relay/api.py",)))
        elif self.faults.on("docs-commit-after-deploy"):
            history.append((_fake_sha("docs", self.deployed_sha),
                            ("docs/runbooks/latency.md", "README.md")))
        return history

    @property
    def head_sha(self) -> str:
        return self.commits()[-1][0]

    def resolve(self, ref: str) -> str | None:
        if ref in (BRANCH, f"refs/heads/{BRANCH}"):
            return self.head_sha
        if ref.removeprefix("refs/tags/") == RELEASE_TAG:
            return self.deployed_sha
        return next((sha for sha, _ in self.commits() if sha == ref or
                     (len(ref) >= 7 and sha.startswith(ref))), None)

    def compare(self, base: str, head: str) -> dict[str, Any] | None:
        shas = [sha for sha, _ in self.commits()]
        b, h = self.resolve(base), self.resolve(head)
        if b is None or h is None:
            return None
        i, j = shas.index(b), shas.index(h)
        between = self.commits()[i + 1:j + 1] if j >= i else []
        files = sorted({f for _, changed in between for f in changed})
        status = "identical" if i == j else ("ahead" if j > i else "behind")
        return {
            "url": f"https://api.github.com/repos/{self.repo}/compare/{base}...{head}",
            "status": status, "ahead_by": max(0, j - i), "behind_by": max(0, i - j),
            "total_commits": max(0, j - i),
            "base_commit": {"sha": b}, "merge_base_commit": {"sha": b if j >= i else h},
            "commits": [{"sha": sha} for sha, _ in between],
            "files": [{"filename": f, "status": "modified", "additions": 3, "deletions": 1,
                       "changes": 4} for f in files],
        }

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
        merge_sha = _fake_sha("merge", number) if number == 29 else self.deployed_sha
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

    def secrets(self, scope: str, environment: str | None = None) -> list[dict[str, Any]]:
        """The secrets of one scope: ``repository``, ``environment`` or ``organization``."""
        spread = self.faults.on("secrets-across-scopes")
        homes = {name: "repository" for name in SECRETS}
        if spread:
            homes["RAILWAY_TOKEN"] = "environment:production"
            homes["DATABASE_PUBLIC_URL"] = "organization"
        if self.faults.on("secret-missing"):
            homes.pop("DEV_KEY")
        wanted = scope if environment is None else f"{scope}:{environment}"
        now = dt.datetime.now(dt.UTC)
        out = []
        for i, name in enumerate(SECRETS):
            if homes.get(name) != wanted:
                continue
            created = now - dt.timedelta(days=20 - i)
            entry = {"name": name, "created_at": _iso(created),
                     "updated_at": _iso(created + dt.timedelta(days=1))}
            if scope == "organization":
                entry["visibility"] = "selected"
            out.append(entry)
        return out

    # -- workflows and runs -----------------------------------------------------------------

    def workflows(self) -> list[dict[str, Any]]:
        created = _iso(dt.datetime(2025, 9, 18, 10, 4, 11, tzinfo=dt.UTC))
        out = []
        for file, (wf_id, name) in WORKFLOWS.items():
            path = f".github/workflows/{file}"
            state = "active"
            if file == "backup.yml" and self.faults.on("backup-workflow-disabled"):
                state = "disabled_manually"
            out.append({
                "id": wf_id,
                "node_id": f"W_kwDO{wf_id}",
                "name": name,
                "path": path,
                "state": state,
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

    def _plan(self, file: str, now: dt.datetime) -> list[tuple[dt.datetime, str, str, str, str]]:
        """(created_at, event, branch, conclusion, head_sha) of every run of one workflow."""
        head, deployed = self.head_sha, self.deployed_sha
        plan: list[tuple[dt.datetime, str, str, str, str]] = []
        cancelled = self.faults.on("runs-cancelled")
        if file == "deploy.yml":
            plan.append((now - dt.timedelta(hours=1), "push", "feature/chat-mvp", "failure",
                         _fake_sha("feature", 1)))
            if self.faults.on("head-not-deployed"):
                plan.append((now - dt.timedelta(minutes=20), "push", BRANCH, "cancelled", head))
            if self.faults.on("deploy-run-failed"):
                plan.append((now - dt.timedelta(hours=2), "workflow_dispatch", BRANCH,
                             "failure", deployed))
            if cancelled:
                plan.append((now - dt.timedelta(minutes=40), "workflow_dispatch", BRANCH,
                             "cancelled", deployed))
                plan.append((now - dt.timedelta(minutes=50), "push", BRANCH, "skipped",
                             deployed))
            plan.append((now - dt.timedelta(days=3), "push", BRANCH, "success", deployed))
            plan.append((now - dt.timedelta(days=5), "push", BRANCH, "success",
                         _fake_sha("merge", 29)))
            plan.append((now - dt.timedelta(days=6), "push", BRANCH, "failure",
                         _fake_sha("deploy", 6)))
            plan.append((now - dt.timedelta(days=8), "push", BRANCH, "success",
                         _fake_sha("deploy", 8)))
        elif file == "backup.yml":
            today = now.replace(hour=2, minute=17, second=4, microsecond=0)
            first = 3 if self.faults.on("backup-runs-stale") else 0
            for day in range(first, 30):
                t = today - dt.timedelta(days=day)
                if t > now:
                    continue
                conclusion = "failure" if day == 12 else "success"
                plan.append((t, "schedule", BRANCH, conclusion, head))
            if cancelled:
                plan.append((now - dt.timedelta(minutes=5), "workflow_dispatch", BRANCH,
                             "cancelled", head))
        elif file == "slo-report.yml":
            last = now - dt.timedelta(days=10 if self.faults.on("slo-report-stale") else 2)
            event = "workflow_dispatch" if self.faults.on("slo-report-manual-only") \
                else "schedule"
            for week in range(6):
                plan.append((last - dt.timedelta(days=7 * week), event, BRANCH, "success", head))
            if cancelled:
                plan.append((now - dt.timedelta(hours=3), "schedule", BRANCH, "cancelled", head))
        elif file == "restore-drill.yml":
            if self.faults.on("no-drill-schedule"):
                plan.append((now - dt.timedelta(days=45), "workflow_dispatch", BRANCH,
                             "success", head))
            elif self.faults.on("drill-run-by-hand"):
                plan.append((now - dt.timedelta(days=10), "workflow_dispatch", BRANCH,
                             "success", head))
            else:
                for month in range(3):
                    plan.append((now - dt.timedelta(days=12 + 30 * month), "schedule", BRANCH,
                                 "success", head))
            if cancelled:
                plan.append((now - dt.timedelta(days=1), "workflow_dispatch", BRANCH,
                             "cancelled", head))
        elif file == "rollback.yml":
            failed = self.faults.on("rollback-run-failed")
            plan.append((now - dt.timedelta(days=2 if failed else 20), "workflow_dispatch",
                         BRANCH, "failure" if failed else "success", head))
            plan.append((now - dt.timedelta(days=50), "workflow_dispatch", BRANCH, "success",
                         _fake_sha("merge", 29)))
            if cancelled:
                plan.append((now - dt.timedelta(days=1), "workflow_dispatch", BRANCH,
                             "cancelled", head))
        plan.sort(key=lambda p: p[0], reverse=True)
        return plan

    def runs(self, file: str) -> list[dict[str, Any]]:
        """Every run of one workflow, newest first."""
        now = dt.datetime.now(dt.UTC)
        found = self.find_workflow(file)
        assert found is not None
        file, wf_id, name = found
        plan = self._plan(file, now)
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
                "run_attempt": 1,
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

    def run(self, run_id: int) -> tuple[str, dict[str, Any]] | None:
        for file, (wf_id, _) in WORKFLOWS.items():
            if run_id // 1000 == wf_id:
                return next(((file, r) for r in self.runs(file) if r["id"] == run_id), None)
        return None

    def jobs(self, run_id: int) -> list[dict[str, Any]] | None:
        """The jobs of a run with their steps. Only rollback.yml's runs have named steps."""
        found = self.run(run_id)
        if found is None:
            return None
        file, run = found
        conclusion = run["conclusion"]
        if file == "rollback.yml":
            names = ["Set up job", "Run actions/checkout@v4", ROLLBACK_STEP,
                     "Upload the rollback notes", "Complete job"]
            key_step = ROLLBACK_STEP
            job_name = ROLLBACK_JOB
        else:
            names = ["Set up job", "Run actions/checkout@v4", "Complete job"]
            key_step = "Run actions/checkout@v4"
            job_name = file.removesuffix(".yml")
        steps = []
        failed_at: int | None = None
        for number, step in enumerate(names, 1):
            if conclusion == "success" or step in ("Set up job", "Complete job"):
                outcome = "success"
            elif failed_at is None and step == key_step and conclusion == "failure":
                outcome, failed_at = "failure", number
            elif conclusion == "cancelled":
                outcome = "cancelled"
            else:
                outcome = "success" if failed_at is None else "skipped"
            steps.append({"name": step, "status": "completed", "conclusion": outcome,
                          "number": number, "started_at": run["created_at"],
                          "completed_at": run["updated_at"]})
        return [{
            "id": run_id * 10 + 1, "run_id": run_id, "workflow_name": run["name"],
            "head_branch": run["head_branch"], "head_sha": run["head_sha"],
            "name": job_name, "status": "completed", "conclusion": conclusion,
            "started_at": run["created_at"], "completed_at": run["updated_at"],
            "html_url": run["html_url"] + f"/job/{run_id * 10 + 1}", "steps": steps,
        }]

    # -- contents ---------------------------------------------------------------------------

    def file_text(self, path: str) -> bytes | None:
        """The bytes of one file of the repo as the current faults serve it, or None."""
        if path == "docs/runbooks/db-connections.md" and self.faults.on("runbook-missing"):
            return None
        if path == "docs/runbooks/outage.md" and self.faults.on("runbook-sections-empty"):
            return (VARIANTS_DIR / "outage_headings_only.md").read_bytes()
        if path == ROLLBACK_SCRIPT and self.faults.on("rollback-notes-only"):
            return (VARIANTS_DIR / "rollback_notes_only.py").read_bytes()
        if path == ROLLBACK_SCRIPT and self.faults.on("rollback-shell-script"):
            return (VARIANTS_DIR / "rollback.sh").read_bytes()
        if path == ".github/workflows/restore-drill.yml" and (
                self.faults.on("no-drill-schedule") or self.faults.on("drill-run-by-hand")):
            return (VARIANTS_DIR / "restore-drill_no_schedule.yml").read_bytes()
        if path == ".github/workflows/slo-report.yml" and self.faults.on("slo-report-manual-only"):
            return (VARIANTS_DIR / "slo-report_manual_only.yml").read_bytes()
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
        return ref == RELEASE_BRANCH or self.resolve(ref) is not None


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
        items = gh.secrets("repository")
        return reply({"total_count": len(items), "secrets": page(request, items)})

    async def organization_secrets(request: Request) -> Response:
        items = gh.secrets("organization")
        return reply({"total_count": len(items), "secrets": page(request, items)})

    async def environments(request: Request) -> Response:
        items = [{"id": 1500000 + i, "name": env, "url": f"https://api.github.com/repos/{repo}/"
                  f"environments/{env}", "protection_rules": []}
                 for i, env in enumerate(ENVIRONMENTS)]
        return reply({"total_count": len(items), "environments": items})

    async def environment_secrets(request: Request) -> Response:
        env = request.path_params["environment"]
        if env not in ENVIRONMENTS:
            return not_found()
        items = gh.secrets("environment", env)
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

    async def jobs(request: Request) -> Response:
        try:
            items = gh.jobs(int(request.path_params["run_id"]))
        except ValueError:
            items = None
        if items is None:
            return not_found()
        return reply({"total_count": len(items), "jobs": page(request, items)})

    async def commit(request: Request) -> Response:
        ref = request.path_params["ref"]
        sha = gh.resolve(ref)
        if sha is None:
            return reply({"message": f"No commit found for SHA: {ref}",
                          "documentation_url": DOCS, "status": "422"}, 422)
        shas = [c for c, _ in gh.commits()]
        index = shas.index(sha)
        when = _iso(dt.datetime.now(dt.UTC) - dt.timedelta(days=len(shas) - 1 - index,
                                                            hours=1))
        changed = gh.commits()[index][1]
        return reply({
            "sha": sha,
            "node_id": f"C_{sha[:20]}",
            "commit": {
                "message": f"Change {', '.join(changed)}",
                "author": {"name": "relay-dev", "date": when},
                "committer": {"name": "GitHub", "date": when},
            },
            "html_url": f"https://github.com/{repo}/commit/{sha}",
            "parents": [{"sha": shas[index - 1]}] if index else [],
            "files": [{"filename": f, "status": "modified"} for f in changed],
        })

    async def compare(request: Request) -> Response:
        base, sep, head = request.path_params["basehead"].partition("...")
        data = gh.compare(base, head) if sep else None
        return reply(data) if data is not None else not_found()

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
        Route(base + "/actions/organization-secrets", guarded(organization_secrets)),
        Route(base + "/environments", guarded(environments)),
        Route(base + "/environments/{environment}/secrets", guarded(environment_secrets)),
        Route(base + "/actions/runs/{run_id}/jobs", guarded(jobs)),
        Route(base + "/compare/{basehead:path}", guarded(compare)),
        Route(base + "/actions/workflows", guarded(workflows)),
        Route(base + "/actions/workflows/{workflow}", guarded(workflow)),
        Route(base + "/actions/workflows/{workflow}/runs", guarded(runs)),
        Route(base + "/commits/{ref:path}", guarded(commit)),
        Route(base + "/contents", guarded(contents)),
        Route(base + "/contents/{path:path}", guarded(contents)),
        *issue_routes(repo, gh.token, gh.rate_headers),
    ]

    async def fallback(request: Request, exc: Exception) -> Response:
        return not_found()

    return Starlette(routes=routes, exception_handlers={404: fallback, 405: fallback})


class GithubPart(HttpFakePart):
    """The GitHub contract fake as a part of the reference stack."""

    name = "github"
    ports = ("github",)
    faults = FAULTS
    module = "opsready_stack.github_fake"
    health = (("github", "/rate_limit"),)
    urls = (("github", "github", ""),)
    repo = REPO

    def extra_args(self, ctx: StackContext) -> list[str]:
        return ["--repo", self.repo]

    def env_config(self, ctx: StackContext) -> dict[str, Any]:
        return {
            **tracker_env_config(ctx.urls["github"], ctx.secrets["github_token"], self.repo),
            "github": {
                "api_url": ctx.urls["github"],
                "token": ctx.secrets["github_token"],
                "repo": self.repo,
                "branch": BRANCH,
                "prs": list(PRS),
                "secrets": list(SECRETS),
                "secret_scopes": ["repository", "environment", "organization"],
                "deploy_workflow": "deploy.yml",
                "backup_workflow": "backup.yml",
                "slo_report_workflow": "slo-report.yml",
                "slo_report_max_age_days": 8,
                "drill_workflow": "restore-drill.yml",
                "rollback_script": ROLLBACK_SCRIPT,
                "rollback_workflow": "rollback.yml",
                "rate_limit_wait_max_s": 30,
            }
        }


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
