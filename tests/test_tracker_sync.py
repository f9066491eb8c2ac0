"""`opsready sync --tracker github` against the GitHub fake's issues API.

The fake (``opsready_stack.github_fake`` with ``github_issues_fake``) runs in this process on
uvicorn, one per test, so each test starts from an empty issue list. The readiness bundles are
built from the typed model by the real roll-up (``build_readiness``), written by the real
writers and sealed with the real manifest writer; the criteria are the real check functions of
``checks/``.
"""

from __future__ import annotations

import ast
import contextlib
import datetime as dt
import hashlib
import io
import json
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from opsready._options import ExitCode
from opsready.catalogue import load_catalogue, module_ticket_id
from opsready.cli import main
from opsready.report import files
from opsready.report.manifest import write_manifest
from opsready.report.model import CriterionResult, Hashes, Outcome, Readiness, Run, Scope, build_readiness
from opsready.tracker.issue_text import action_criteria
from opsready.tracker.sync import run_sync
from opsready.waivers import Waiver, WaiverSet

ROOT = Path(__file__).resolve().parents[1]
REPO = "relay-platform/relay"
TOKEN = "gh-repo-token-5b9e0c2f7d41"
ENV = "staging"
CATALOGUE = load_catalogue(ROOT / "config" / "tickets.yaml")


def _check_functions() -> dict[str, list[str]]:
    """Ticket id -> the test functions of its check modules, as the report names criteria."""
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "checks").glob("test_p*.py")):
        ticket = module_ticket_id(path.name)
        assert ticket is not None
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]
        found.setdefault(ticket, []).extend(names)
    return found


CRITERIA = _check_functions()


def criterion(ticket: str, index: int = -1) -> str:
    """A real criterion of ``ticket`` (its last check function by default)."""
    return f"{ticket}::{CRITERIA[ticket][index]}"


def name(ticket: str, index: int = -1) -> str:
    return CRITERIA[ticket][index]


# -- the fake ---------------------------------------------------------------------------------


@dataclass
class FakeGithub:
    url: str
    issues_token: str

    def _client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10,
                            headers={"Authorization": f"Bearer {TOKEN}",
                                     "X-GitHub-Api-Version": "2022-11-28"})

    def issues(self) -> list[dict[str, Any]]:
        with self._client() as c:
            found: list[dict[str, Any]] = []
            page = 1
            while True:
                resp = c.get(f"/repos/{REPO}/issues", params={"state": "all", "per_page": 100, "page": page})
                resp.raise_for_status()
                found += resp.json()
                if "next" not in resp.links:
                    return sorted(found, key=lambda i: i["number"])
                page += 1

    def issue(self, ticket: str) -> dict[str, Any]:
        matching = [i for i in self.issues() if f"opsready:{ticket}" in self.labels(i)]
        assert len(matching) == 1, f"{len(matching)} issues carry opsready:{ticket}"
        return matching[0]

    @staticmethod
    def labels(issue: dict[str, Any]) -> set[str]:
        return {label["name"] for label in issue["labels"]}

    def comments(self, issue: dict[str, Any]) -> list[str]:
        with self._client() as c:
            resp = c.get(f"/repos/{REPO}/issues/{issue['number']}/comments", params={"per_page": 100})
            resp.raise_for_status()
            return [str(x["body"]) for x in resp.json()]

    def patch(self, issue: dict[str, Any], **changes: Any) -> None:
        """A person changes an issue in the browser (the maintainer's token)."""
        with self._client() as c:
            c.patch(f"/repos/{REPO}/issues/{issue['number']}", json=changes).raise_for_status()

    def writes(self) -> list[dict[str, Any]]:
        with self._client() as c:
            resp = c.get("/_fake/issues/writes")
            resp.raise_for_status()
            data: list[dict[str, Any]] = resp.json()
            return data

    def arm_secondary_limit(self, after_writes: int, times: int, retry_after: int | None) -> None:
        with self._client() as c:
            c.post("/_fake/issues/secondary-rate-limit",
                   json={"after_writes": after_writes, "times": times, "retry_after": retry_after}
                   ).raise_for_status()

    def snapshot(self) -> list[tuple[Any, ...]]:
        """Everything sync may change, for comparing two moments."""
        return [(i["number"], i["state"], i["state_reason"], sorted(self.labels(i)), i["body"],
                 i["comments"], i["title"]) for i in self.issues()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeGithub]:
    import uvicorn

    from opsready_stack.github_fake import build_app
    from opsready_stack.github_issues_fake import issues_token

    state_dir = tmp_path / "fake"
    state_dir.mkdir()
    (state_dir / "state.json").write_text(json.dumps({"secrets": {"github_token": TOKEN},
                                                      "settings": {"git_sha": "a" * 40}}))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(build_app(state_dir, REPO), host="127.0.0.1", port=port,
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the GitHub fake did not start within 20 s"
        time.sleep(0.02)
    try:
        yield FakeGithub(url=f"http://127.0.0.1:{port}", issues_token=issues_token(TOKEN))
    finally:
        server.should_exit = True
        thread.join(timeout=10)


# -- the project and its bundles --------------------------------------------------------------


@dataclass
class Project:
    root: Path
    fake: FakeGithub
    runs: int = 0

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    def environment(self, **overrides: Any) -> None:
        tracker: dict[str, Any] = {
            "github": {"api_url": self.fake.url, "repo": REPO, "token": self.fake.issues_token,
                       "rate_limit_wait_max_s": 5, "write_interval_s": 0},
            "report_url": "https://ci.example.com/opsready/{run_id}/index.html",
        }
        env: dict[str, Any] = {"name": ENV, "allow_writes": ["tracker_sync"], "timeout_s": 10,
                               "tracker": tracker}
        env.update(overrides)
        (self.root / "config" / "environments" / f"{ENV}.yaml").write_text(yaml.safe_dump(env))

    def bundle(self, outcomes: dict[str, Outcome] | None = None, waivers: list[Waiver] | None = None,
               environment: str = ENV, selected: list[str] | None = None,
               messages: dict[str, str] | None = None) -> Path:
        """A sealed bundle of the next run: every criterion passes, except ``outcomes``
        (``"P1-002::test_name"`` -> outcome)."""
        self.runs += 1
        started = dt.datetime(2026, 3, 1, 2, 0, tzinfo=dt.UTC) + dt.timedelta(days=self.runs)
        run_id = f"{started:%Y%m%dT%H%M%SZ}-{environment}"
        out = self.reports / run_id
        out.mkdir(parents=True)
        overrides = dict(outcomes or {})
        results = []
        for ticket, names in CRITERIA.items():
            if selected is not None and ticket not in selected:
                continue
            for name in names:
                cid = f"{ticket}::{name}"
                outcome = overrides.pop(cid, "pass")
                results.append(CriterionResult(
                    id=cid, ticket=ticket, title=name.removeprefix("test_").replace("_", " "), outcome=outcome,
                    message=(messages or {}).get(cid) or ("" if outcome == "pass"
                                                          else f"{name}: found something else; fix it"),
                    skip_kind="not_covered" if outcome == "skip" else None))
        assert not overrides, f"no such criteria: {sorted(overrides)}"
        run = Run(id=run_id, environment=environment, env_file=f"{environment}.yaml", started_at=started,
                  finished_at=started + dt.timedelta(minutes=3), duration_s=180.0, today=started.date(),
                  suite_version="0.1.0", git_sha=None, python="3.11", interrupted=False,
                  hashes=Hashes(config=None, catalogue=None, waivers=None))
        scope = Scope(configured=[], allow_intrusive=[], freshness_days={}, selected=selected, checks=[],
                      skipped=[], module_errors=[])
        readiness = build_readiness(
            catalogue=CATALOGUE, results=results, waivers=WaiverSet(list(waivers or []), []), run=run,
            gate=["P0", "P1"], previous=None, previous_run=None, selected=selected, scope=scope,
            modules={t: [f"test_{t.lower().replace('-', '_')}.py"] for t in CRITERIA})
        files.write_json(out, readiness)
        (out / "index.html").write_text("<!doctype html><title>report</title>\n")
        write_manifest(out)
        files.append_history(self.reports / "history.jsonl", readiness, out)
        return out

    def sync(self, *extra: str, report: Path | None = None) -> tuple[int, str]:
        args = ["sync", "--env", ENV, "--tracker", "github", "--root", str(self.root), *extra]
        if report is not None:
            args += ["--report", str(report)]
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = main(args)
        return code, out.getvalue()


@pytest.fixture
def project(tmp_path: Path, fake: FakeGithub) -> Project:
    root = tmp_path / "project"
    (root / "config" / "environments").mkdir(parents=True)
    shutil.copy(ROOT / "config" / "tickets.yaml", root / "config" / "tickets.yaml")
    p = Project(root=root, fake=fake)
    p.environment()
    return p


def readiness_of(bundle: Path) -> Readiness:
    return Readiness.model_validate_json((bundle / "readiness.json").read_bytes())


def opsready_comments(comments: list[str]) -> list[str]:
    return [c for c in comments if "<!-- opsready:sync " in c]


def proven(ticket: str, action: object, status: str, failed: set[str]) -> bool:
    """Whether an action's checklist box is ticked: every action of a done ticket is; else an
    action the catalogue maps to criteria is when they ran and none of them failed, and an
    action without a mapping is not (only the whole ticket proves it)."""
    if status == "done":
        return True
    names = action_criteria(action)[1]
    return names is not None and bool(set(names) & set(CRITERIA[ticket])) and not set(names) & failed


# -- the tests --------------------------------------------------------------------------------


def test_first_sync_creates_one_issue_per_ticket_with_labels_and_checklist(project: Project) -> None:
    bundle = project.bundle({criterion("P1-002"): "fail",
                             criterion("P2-001", 0): "error"})
    code, output = project.sync()
    assert code == ExitCode.OK, output
    statuses = readiness_of(bundle).judged
    assert statuses["P1-002"] == "open" and statuses["P2-001"] == "unverified"

    issues = project.fake.issues()
    assert len(issues) == len(CATALOGUE.tickets) == 11, [i["title"] for i in issues]
    for ticket in CATALOGUE.tickets:
        issue = project.fake.issue(ticket.id)
        status = statuses[ticket.id]
        assert project.fake.labels(issue) == {f"opsready:{ticket.id}", f"readiness:{status}"}
        assert issue["title"] == f"{ticket.id} {ticket.title}"
        assert ticket.summary.strip() in issue["body"] and ticket.impact.strip() in issue["body"]
        for action in ticket.actions:
            text = action_criteria(action)[0]
            ticked = "x" if proven(ticket.id, action, status, {name("P1-002"), name("P2-001", 0)}) else " "
            assert f"- [{ticked}] {text}" in issue["body"], (ticket.id, text)
        assert issue["state"] == ("closed" if status in ("done", "waived") else "open")
        comments = project.fake.comments(issue)
        assert len(comments) == 1
        assert f"run={bundle.name}" in comments[0]
        assert f"is {status}** (first sync)" in comments[0]
    p1 = project.fake.comments(project.fake.issue("P1-002"))[0]
    assert name("P1-002") in p1 and "**fail**" in p1
    manifest_hash = hashlib.sha256((bundle / "MANIFEST.sha256").read_bytes()).hexdigest()
    assert manifest_hash in p1
    assert f"https://ci.example.com/opsready/{bundle.name}/index.html" in p1
    assert "synced:" in output


def test_second_sync_of_the_same_bundle_changes_nothing(project: Project) -> None:
    bundle = project.bundle({criterion("P3-002"): "fail"})
    assert project.sync()[0] == ExitCode.OK
    before, writes = project.fake.snapshot(), len(project.fake.writes())

    code, output = project.sync("--report", str(bundle))
    assert code == ExitCode.OK, output
    assert project.fake.snapshot() == before
    assert len(project.fake.writes()) == writes, project.fake.writes()[writes:]
    assert "nothing to change" in output
    assert output.count("up to date") == 11


def test_a_regression_reopens_the_issue_with_one_comment(project: Project) -> None:
    project.bundle()
    assert project.sync()[0] == ExitCode.OK
    issue = project.fake.issue("P1-002")
    assert issue["state"] == "closed"

    project.bundle({criterion("P1-002"): "fail"})
    code, output = project.sync()
    assert code == ExitCode.OK, output
    issue = project.fake.issue("P1-002")
    assert issue["state"] == "open"
    assert project.fake.labels(issue) == {"opsready:P1-002", "readiness:open"}
    comments = opsready_comments(project.fake.comments(issue))
    assert len(comments) == 2, comments
    change = comments[-1]
    assert "is now open** (was done); the issue is reopened" in change
    assert "regressed" in change
    assert f"`{name('P1-002')}`): pass → **fail**" in change
    # Only the criterion that changed is listed.
    assert name("P1-002", 0) not in change
    # The checklist unticks what the failure unproves.
    ticket = CATALOGUE.get("P1-002")
    assert ticket is not None
    for action in ticket.actions:
        box = "x" if proven("P1-002", action, "open", {name("P1-002")}) else " "
        assert f"- [{box}] {action_criteria(action)[0]}" in issue["body"]
    assert "- [ ]" in issue["body"]
    # The other tickets did not move: no new comment anywhere else.
    for ticket in CATALOGUE.ids:
        if ticket != "P1-002":
            assert len(project.fake.comments(project.fake.issue(ticket))) == 1, ticket


def test_a_waiver_closes_the_issue_with_its_reason_and_expiry(project: Project) -> None:
    project.bundle({criterion("P3-003", 0): "fail"})
    assert project.sync()[0] == ExitCode.OK
    assert project.fake.issue("P3-003")["state"] == "open"

    waiver = Waiver(target=criterion("P3-003", 0), reason="bucket migration to the new account",
                    requested_by="dana", approved_by="lee", expires=dt.date(2026, 6, 30))
    bundle = project.bundle({criterion("P3-003", 0): "fail"}, waivers=[waiver])
    assert readiness_of(bundle).judged["P3-003"] == "waived"
    code, output = project.sync()
    assert code == ExitCode.OK, output
    issue = project.fake.issue("P3-003")
    assert issue["state"] == "closed" and issue["state_reason"] == "not_planned"
    assert project.fake.labels(issue) == {"opsready:P3-003", "readiness:waived"}
    comment = opsready_comments(project.fake.comments(issue))[-1]
    assert "is now waived** (was open); the issue is closed as not planned" in comment
    assert "bucket migration to the new account" in comment
    assert "expires 2026-06-30" in comment and "approved by lee" in comment


def test_an_issue_closed_by_hand_while_open_is_reopened_with_a_reason(project: Project) -> None:
    project.bundle({criterion("P2-002"): "fail"})
    assert project.sync()[0] == ExitCode.OK
    project.fake.patch(project.fake.issue("P2-002"), state="closed")

    code, output = project.sync()
    assert code == ExitCode.OK, output
    issue = project.fake.issue("P2-002")
    assert issue["state"] == "open"
    comments = opsready_comments(project.fake.comments(issue))
    assert len(comments) == 2
    assert "reopened.** This issue was closed, but P2-002 is **open**" in comments[-1]
    assert name("P2-002") in comments[-1]
    # Once reopened, a further sync leaves it alone.
    writes = len(project.fake.writes())
    assert project.sync()[0] == ExitCode.OK
    assert len(project.fake.writes()) == writes


def test_dry_run_prints_every_change_and_writes_nothing(project: Project) -> None:
    project.bundle({criterion("P0-001", 0): "fail"})
    code, output = project.sync("--dry-run")
    assert code == ExitCode.OK, output
    assert project.fake.writes() == []
    assert project.fake.issues() == []
    assert output.count(" create \"") == 11
    assert "dry run: " in output and "none written" in output

    # Against issues that exist, a dry run names the changes it would make, and makes none.
    assert project.sync()[0] == ExitCode.OK
    before, writes = project.fake.snapshot(), len(project.fake.writes())
    project.bundle({criterion("P0-001", 0): "pass", criterion("P2-003", 0): "fail"})
    code, output = project.sync("--dry-run")
    assert code == ExitCode.OK, output
    assert project.fake.snapshot() == before and len(project.fake.writes()) == writes
    p0 = [line for line in output.splitlines() if line.startswith("P0-001")]
    assert any("comment: status done (was open)" in line for line in p0), output
    assert any("close as completed" in line for line in p0), output
    assert any("remove label readiness:open" in line for line in p0), output
    p2 = [line for line in output.splitlines() if line.startswith("P2-003")]
    assert any("reopen" in line for line in p2), output


def test_dry_run_needs_no_allowance_but_a_real_sync_does(project: Project) -> None:
    project.environment(allow_writes=[])
    project.bundle()
    code, output = project.sync()
    assert code == ExitCode.USAGE
    assert "allow_writes: does not list tracker_sync" in output and "--dry-run" in output
    assert project.fake.writes() == []
    code, output = project.sync("--dry-run")
    assert code == ExitCode.OK, output
    assert "a real sync would refuse" in output
    assert project.fake.writes() == []


def test_a_secondary_rate_limit_mid_way_is_waited_out(project: Project) -> None:
    project.bundle()
    project.fake.arm_secondary_limit(after_writes=5, times=1, retry_after=1)
    begun = time.monotonic()
    code, output = project.sync()
    assert code == ExitCode.OK, output
    assert time.monotonic() - begun >= 1.0
    refused = [w for w in project.fake.writes() if w["status"] == 403]
    assert len(refused) == 1
    assert len(project.fake.issues()) == 11
    assert all(len(project.fake.comments(i)) == 1 for i in project.fake.issues())


def test_a_secondary_rate_limit_beyond_the_bound_stops_and_a_rerun_completes(project: Project) -> None:
    statuses = readiness_of(project.bundle({criterion("P1-004"): "fail"})).judged
    # Longer than tracker.github.rate_limit_wait_max_s (5 s): the sync cannot wait it out.
    project.fake.arm_secondary_limit(after_writes=7, times=4, retry_after=600)
    code, output = project.sync()
    assert code == ExitCode.FAILED, output
    assert "not finished:" in output
    applied = output.split("\napplied:\n", 1)[1].split("\nnot applied:\n", 1)[0]
    missed = output.split("\nnot applied:\n", 1)[1]
    assert len(applied.splitlines()) == 7, applied
    assert "secondary" in missed or "rate limit" in missed, missed
    assert "run the same command again" in output
    partial = project.fake.issues()
    assert 0 < len(partial) < 11

    # The limit has passed (the fake refuses only the writes it was armed for).
    project.fake.arm_secondary_limit(after_writes=0, times=0, retry_after=None)
    code, output = project.sync()
    assert code == ExitCode.OK, output
    issues = project.fake.issues()
    assert len(issues) == 11
    for issue in issues:
        assert len(opsready_comments(project.fake.comments(issue))) == 1, issue["title"]
        ticket = issue["title"].split()[0]
        status = statuses[ticket]
        assert project.fake.labels(issue) == {f"opsready:{ticket}", f"readiness:{status}"}
        assert issue["state"] == ("closed" if status in ("done", "waived") else "open")
    # And now nothing is left to do.
    assert "nothing to change" in project.sync()[1]


def test_a_bundle_with_a_changed_byte_is_refused(project: Project) -> None:
    bundle = project.bundle()
    path = bundle / "readiness.json"
    data = bytearray(path.read_bytes())
    at = data.index(b'"done"')
    data[at + 1:at + 2] = b"D"
    path.write_bytes(bytes(data))
    code, output = project.sync("--report", str(bundle))
    assert code == ExitCode.FAILED
    assert "refused" in output and "fails verify-bundle" in output and "changed: readiness.json" in output
    assert project.fake.writes() == [] and project.fake.issues() == []
    # The newest run of the environment is found through the history, and refused the same way.
    code, output = project.sync()
    assert code == ExitCode.FAILED and "changed: readiness.json" in output


def test_a_bundle_of_another_environment_or_an_unsealed_one_is_refused(project: Project) -> None:
    other = project.bundle(environment="production")
    code, output = project.sync("--report", str(other))
    assert code == ExitCode.FAILED and "environment 'production', not 'staging'" in output
    unsealed = project.bundle()
    (unsealed / "MANIFEST.sha256").unlink()
    code, output = project.sync("--report", str(unsealed))
    assert code == ExitCode.FAILED and "MANIFEST.sha256 is missing" in output
    assert project.fake.writes() == []


def test_sync_reads_the_newest_run_of_the_environment(project: Project) -> None:
    project.bundle({criterion("P2-004", 0): "fail"})
    newest = project.bundle()
    project.bundle(environment="production")  # a later run of another environment is not used
    code, output = project.sync("--dry-run")
    assert code == ExitCode.OK, output
    assert f"run {newest.name} of environment staging" in output


def test_an_older_bundle_does_not_move_an_issue_back(project: Project) -> None:
    older = project.bundle({criterion("P2-004", 0): "fail"})
    project.bundle()
    assert project.sync()[0] == ExitCode.OK
    writes = len(project.fake.writes())
    code, output = project.sync("--report", str(older))
    assert code == ExitCode.OK, output
    assert len(project.fake.writes()) == writes
    assert project.fake.issue("P2-004")["state"] == "closed"
    assert "newer than run" in output


def test_tickets_a_run_did_not_judge_are_left_alone(project: Project) -> None:
    project.bundle(selected=["P2-002", "P3-002"])
    code, output = project.sync()
    assert code == ExitCode.OK, output
    assert sorted(i["title"].split()[0] for i in project.fake.issues()) == ["P2-002", "P3-002"]
    assert output.count("not judged by run") == 9


def test_text_outside_the_managed_section_is_kept(project: Project) -> None:
    project.bundle()
    assert project.sync()[0] == ExitCode.OK
    issue = project.fake.issue("P1-003")
    project.fake.patch(issue, body="Owner: @platform-team\r\n\r\n" + issue["body"].replace("\n", "\r\n"))
    assert project.sync()[0] == ExitCode.OK  # a browser edit (CRLF) alone is no change
    project.bundle({criterion("P1-003", 0): "fail"})
    assert project.sync()[0] == ExitCode.OK
    body = project.fake.issue("P1-003")["body"]
    assert body.startswith("Owner: @platform-team")
    assert body.count("<!-- opsready:begin -->") == 1


def test_messages_from_the_target_cannot_forge_markers_or_mention(project: Project) -> None:
    from opsready.tracker.issue_text import _escape

    hostile = "<!-- opsready:sync ticket=P0-001 run=x status=done action=none --> ping @admins"
    shown = _escape(hostile)
    assert "<!--" not in shown and "@admins" not in shown


def test_a_refused_token_stops_with_a_clear_message(project: Project) -> None:
    project.environment(tracker={"github": {"api_url": project.fake.url, "repo": REPO,
                                            "token": "not-a-token", "write_interval_s": 0}})
    project.bundle()
    code, output = project.sync()
    assert code == ExitCode.FAILED
    assert "401" in output and "tracker.github.token" in output
    assert "not-a-token" not in output
    assert output.count("left alone") >= 11 or "not applied:" in output


def test_run_sync_api_gives_the_same_verdict(project: Project) -> None:
    project.bundle()
    out = io.StringIO()
    assert run_sync(env_name=ENV, root=project.root, tracker_kind="github", report=None, dry_run=True,
                    out=out) == ExitCode.OK
    assert out.getvalue().count('create "') == 11


def test_the_nightly_workflow_syncs_after_verify_when_the_repository_enables_it() -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "verify-nightly.yml").read_text())
    steps = [s for job in workflow["jobs"].values() for s in job.get("steps", [])]
    runs = [str(s.get("run", "")) for s in steps]
    verify = next(i for i, r in enumerate(runs) if "opsready verify " in r)
    syncs = [i for i, r in enumerate(runs) if "opsready sync " in r]
    assert len(syncs) == 1 and syncs[0] > verify
    step = steps[syncs[0]]
    assert "--tracker github" in step["run"] and "--report" in step["run"]
    # It runs after a failed gate too, and only where the repository turned it on.
    assert "always()" in step["if"] and "vars.OPSREADY_TRACKER_SYNC == 'true'" in step["if"]
    assert step["env"]["OPSREADY_TRACKER_TOKEN"] == "${{ secrets.OPSREADY_TRACKER_TOKEN }}"
    # The write token never reaches the verify step.
    assert "OPSREADY_TRACKER_TOKEN" not in (steps[verify].get("env") or {})


def test_an_issue_reopened_by_hand_while_done_is_closed_again_with_a_reason(project: Project) -> None:
    project.bundle()
    assert project.sync()[0] == ExitCode.OK
    project.fake.patch(project.fake.issue("P2-001"), state="open")
    second = project.bundle()
    code, output = project.sync()
    assert code == ExitCode.OK, output
    issue = project.fake.issue("P2-001")
    assert issue["state"] == "closed"
    comments = opsready_comments(project.fake.comments(issue))
    assert len(comments) == 2 and "closed again.** This issue was reopened" in comments[-1]

    # Synced again, one run says one thing once: its comment already explains the state, so
    # the issue is put back without a second comment from the same run.
    project.fake.patch(issue, state="open")
    code, output = project.sync("--report", str(second))
    assert code == ExitCode.OK, output
    assert project.fake.issue("P2-001")["state"] == "closed"
    assert len(opsready_comments(project.fake.comments(issue))) == 2


def test_a_second_issue_with_the_same_label_is_named_and_left_alone(project: Project) -> None:
    project.bundle()
    assert project.sync()[0] == ExitCode.OK
    with project.fake._client() as c:
        c.post(f"/repos/{REPO}/issues", json={"title": "copy", "labels": ["opsready:P3-001"]}).raise_for_status()
    code, output = project.sync()
    assert code == ExitCode.OK, output
    assert "also carry opsready:P3-001; only #109, the oldest, is kept in step" in output
    copy = next(i for i in project.fake.issues() if i["title"] == "copy")
    assert copy["comments"] == 0 and copy["state"] == "open"


class Interposer(httpx.BaseTransport):
    """Between the tracker and the fake: ``lose`` forwards the Nth write and then reports a
    timeout (the change happened, the answer was lost); ``drop_labels`` strips the labels of
    a new issue, as GitHub does when the token may not set them."""

    def __init__(self, url: str, lose: Callable[[httpx.Request], bool] | None = None,
                 drop_labels: bool = False) -> None:
        self.client = httpx.Client(base_url=url, timeout=10)
        self.lose, self.drop_labels, self.lost = lose, drop_labels, False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        content = request.content
        if self.drop_labels and _creates(request):
            body = json.loads(content)
            body.pop("labels", None)
            content = json.dumps(body).encode()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("content-length", "host")}
        resp = self.client.request(request.method, request.url.raw_path.decode(), headers=headers,
                                   content=content)
        if self.lose is not None and not self.lost and request.method != "GET" and self.lose(request):
            self.lost = True
            raise httpx.ReadTimeout("the answer was lost", request=request)
        return httpx.Response(resp.status_code, headers=resp.headers, content=resp.content)


def sync_through(project: Project, transport: httpx.BaseTransport) -> tuple[ExitCode, str]:
    from opsready.config import Environment
    from opsready.tracker.github import GithubTracker

    def factory(kind: str, env: Environment, dry_run: bool) -> GithubTracker:
        assert env.tracker is not None and env.tracker.github is not None
        return GithubTracker(env.tracker.github, timeout=5, transport=transport)

    out = io.StringIO()
    code = run_sync(env_name=ENV, root=project.root, tracker_kind="github", report=None, dry_run=False,
                    out=out, tracker_factory=factory)
    return code, out.getvalue()


def _creates(request: httpx.Request) -> bool:
    return request.method == "POST" and request.url.path.endswith("/issues")


def _comments(request: httpx.Request) -> bool:
    return request.method == "POST" and request.url.path.endswith("/comments")


def _closes(request: httpx.Request) -> bool:
    return request.method == "PATCH" and b'"closed"' in request.content


@pytest.mark.parametrize("lose", [_creates, _comments, _closes], ids=["a create", "a comment", "a close"])
def test_a_lost_answer_is_listed_as_not_applied_and_the_rerun_posts_nothing_twice(
        project: Project, lose: Callable[[httpx.Request], bool]) -> None:
    """The first write of one kind happened, but its answer timed out."""
    statuses = readiness_of(project.bundle({criterion("P1-003", 0): "fail"})).judged
    assert "done" in statuses.values()
    code, output = sync_through(project, Interposer(project.fake.url, lose=lose))
    assert code == ExitCode.FAILED, output
    missed = output.split("\nnot applied:\n", 1)[1]
    assert "did not answer within" in missed, missed
    # The failure skips only the rest of its ticket; the tickets after it were synced.
    assert "P3-003 #" in output.split("\napplied:\n", 1)[1]

    code, output = project.sync()
    assert code == ExitCode.OK, output
    assert len(project.fake.issues()) == 11
    for issue in project.fake.issues():
        ticket = issue["title"].split()[0]
        comments = opsready_comments(project.fake.comments(issue))
        assert len(comments) == 1 and "(first sync)" in comments[0], (ticket, comments)
        assert issue["state"] == ("closed" if statuses[ticket] in ("done", "waived") else "open"), ticket
    assert "nothing to change" in project.sync()[1]


def test_labels_dropped_on_create_are_added_at_once(project: Project) -> None:
    statuses = readiness_of(project.bundle()).judged
    code, output = sync_through(project, Interposer(project.fake.url, drop_labels=True))
    assert code == ExitCode.OK, output
    assert output.count("(dropped on create)") == 11
    for ticket in CATALOGUE.ids:
        assert project.fake.labels(project.fake.issue(ticket)) == {f"opsready:{ticket}",
                                                                   f"readiness:{statuses[ticket]}"}
    assert "nothing to change" in project.sync()[1]


def test_a_configured_secret_in_a_message_does_not_reach_the_tracker(project: Project) -> None:
    leaked = criterion("P0-001", 0)
    project.bundle({leaked: "fail"}, messages={leaked: f"probe sent {project.fake.issues_token} and failed"})
    code, output = project.sync()
    assert code == ExitCode.OK, output
    comment = project.fake.comments(project.fake.issue("P0-001"))[0]
    assert "probe sent" in comment and project.fake.issues_token not in comment
