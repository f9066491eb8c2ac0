"""The delivery checks (P0-001 delivery, P1-002 drill schedule, P1-003, P3-001 report job), called
directly against the GitHub and Railway fakes in process, fault by fault and variant by
variant: each criterion fails under its fault, passes under the legitimate variants, and is
not covered or unverified where it cannot judge. The same proofs run end to end against the
reference stack in test_delivery_stack.py.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from conftest import load_check
from opsready._coverage import NotApplicable, NotCovered
from opsready._errors import AccessRefused, ProbeError, TargetUnreachable, UnexpectedResponse
from opsready.config import BackupsConfig, GithubConfig, RailwayConfig
from opsready.evidence import Evidence
from opsready.probes.github import GithubProbe
from opsready.probes.railway import RailwayProbe
from opsready.probes.s3 import DrillRecord
from opsready_stack.github_fake import RELEASE_TAG, REPO, WORKFLOWS
from opsready_stack.github_fake import build_app as github_app
from opsready_stack.railway_fake import IDS
from opsready_stack.railway_fake import build_app as railway_app
from test_delivery_fakes import GH_TOKEN, GIT_SHA, RW_TOKEN, Faults, forward

DELIVERY = load_check("test_p0_001_delivery")
ROLLBACK = load_check("test_p1_003_rollback_automation")
REPORT = load_check("test_p3_001_slo_report_job")
DRILL = load_check("test_p1_002_drill_schedule")

STACK_GITHUB = dict(
    repo=REPO, prs=[29, 30], secrets=["RAILWAY_TOKEN", "DATABASE_PUBLIC_URL", "ADMIN_KEY", "DEV_KEY"],
    secret_scopes=["repository", "environment", "organization"], deploy_workflow="deploy.yml",
    backup_workflow="backup.yml", slo_report_workflow="slo-report.yml",
    drill_workflow="restore-drill.yml", rollback_script="scripts/rollback",
    rollback_workflow="rollback.yml",
)


@pytest.fixture
def stack_dir(tmp_path: Path) -> Path:
    (tmp_path / "state.json").write_text(json.dumps({
        "secrets": {"github_token": GH_TOKEN, "railway_token": RW_TOKEN},
        "settings": {"git_sha": GIT_SHA},
    }))
    return tmp_path


@pytest.fixture
def faults(stack_dir: Path) -> Faults:
    return Faults(stack_dir)


@dataclass
class Overrides:
    """Answers that replace the fake's for some paths: path -> (status, body), or a function
    of the request that gives them."""

    answers: dict[str, Any] = field(default_factory=dict)

    def transport(self, inner: httpx.MockTransport) -> httpx.MockTransport:
        def handler(request: httpx.Request) -> httpx.Response:
            found = self.answers.get(request.url.path)
            if callable(found):
                found = found(request)
            if found is not None:
                return httpx.Response(found[0], json=found[1])
            return inner.handle_request(request)

        return httpx.MockTransport(handler)


@pytest.fixture
def overrides() -> Overrides:
    return Overrides()


GithubFactory = Callable[..., GithubProbe]


@pytest.fixture
def github(stack_dir: Path, overrides: Overrides) -> Iterator[GithubFactory]:
    made: list[GithubProbe] = []
    transport = overrides.transport(forward(github_app(stack_dir)))

    def make(**changes: Any) -> GithubProbe:
        cfg = GithubConfig.model_validate({"api_url": "http://github.test", "token": GH_TOKEN,
                                           **STACK_GITHUB, **changes})
        probe = GithubProbe(cfg, timeout=5, transport=transport)
        made.append(probe)
        return probe

    yield make
    for probe in made:
        probe.close()


@pytest.fixture
def railway(stack_dir: Path) -> Iterator[RailwayProbe]:
    cfg = RailwayConfig(api_url="http://railway.test/graphql/v2", token=RW_TOKEN,  # type: ignore[arg-type]
                        project_id=IDS["project"], environment_id=IDS["environment"],
                        service_id=IDS["service"], drill_timeout_s=5, drill_poll_s=0.1)
    probe = RailwayProbe(cfg, timeout=5, transport=forward(railway_app(stack_dir, 0.2)))
    yield probe
    probe.close()


def recorded(evidence: Evidence, name: str) -> Any:
    return next(i.value for i in evidence.items if i.name == name)


def runs_path(file: str) -> str:
    return f"/repos/{REPO}/actions/workflows/{WORKFLOWS[file][0]}/runs"


def iso(days_ago: float) -> str:
    return (dt.datetime.now(dt.UTC) - dt.timedelta(days=days_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def runs(*plan: tuple[float, str, str]) -> dict[str, Any]:
    """A runs listing: (days ago, event, conclusion) per run."""
    return {"total_count": len(plan), "workflow_runs": [
        {"id": 900 + i, "event": event, "status": "completed", "conclusion": conclusion,
         "head_branch": "main", "head_sha": GIT_SHA, "created_at": iso(days),
         "html_url": f"https://github.com/{REPO}/actions/runs/{900 + i}"}
        for i, (days, event, conclusion) in enumerate(plan)]}


# -- P0-001: workflows --------------------------------------------------------------------------

@pytest.mark.parametrize("variant", [None, "runs-cancelled", "docs-commit-after-deploy"])
def test_workflows_pass_on_the_healthy_repository(github: GithubFactory, faults: Faults,
                                                  variant: str | None) -> None:
    faults.set(*([variant] if variant else []))
    evidence = Evidence()
    DELIVERY.test_workflows_active_and_green(github(), evidence)
    seen = recorded(evidence, "workflows")
    assert {f: seen[f]["last_run"]["conclusion"] for f in seen} == {
        "deploy.yml": "success", "backup.yml": "success"}
    passed_over = [r["conclusion"] for r in seen["deploy.yml"]["passed_over"]]
    assert passed_over == (["cancelled", "skipped"] if variant == "runs-cancelled" else [])


@pytest.mark.parametrize(("fault", "says"), [
    ("deploy-run-failed", "the last run of deploy.yml on main"),
    ("backup-workflow-disabled", "backup.yml is 'disabled_manually'"),
    ("backup-runs-stale", "the last run of backup.yml on main succeeded 3."),
])
def test_workflows_fail_under_their_faults(github: GithubFactory, faults: Faults, fault: str,
                                           says: str) -> None:
    faults.set(fault)
    with pytest.raises(AssertionError, match=says):
        DELIVERY.test_workflows_active_and_green(github(), Evidence())


def test_workflow_max_age_is_configurable(github: GithubFactory) -> None:
    with pytest.raises(AssertionError, match=r"deploy.yml on main succeeded 3.* more than 1"):
        DELIVERY.test_workflows_active_and_green(github(deploy_max_age_days=1), Evidence())


def test_workflows_judge_what_is_configured_and_report_the_rest_not_covered(
        github: GithubFactory, faults: Faults) -> None:
    with pytest.raises(NotCovered, match=r"github.backup_workflow"):
        DELIVERY.test_workflows_active_and_green(github(backup_workflow=""), Evidence())
    faults.set("deploy-run-failed")
    with pytest.raises(AssertionError):
        DELIVERY.test_workflows_active_and_green(github(backup_workflow=""), Evidence())


def test_a_refused_token_leaves_every_github_criterion_unverified(github: GithubFactory) -> None:
    probe = github(token="not-the-token-0123456789")
    for check in (DELIVERY.test_prs_merged, DELIVERY.test_secrets_exist,
                  DELIVERY.test_workflows_active_and_green, REPORT.test_slo_report_job_recent,
                  ROLLBACK.test_rollback_script_calls_api):
        with pytest.raises(AccessRefused, match="401"):
            check(probe, Evidence())


# -- P0-001: secrets ----------------------------------------------------------------------------

def test_secrets_in_any_allowed_scope_pass(github: GithubFactory, faults: Faults) -> None:
    faults.set("secrets-across-scopes")
    evidence = Evidence()
    DELIVERY.test_secrets_exist(github(), evidence)
    assert recorded(evidence, "secrets")["found"] == {
        "RAILWAY_TOKEN": ["environment production"], "DATABASE_PUBLIC_URL": ["organization"],
        "ADMIN_KEY": ["repository"], "DEV_KEY": ["repository"]}


def test_a_secret_found_outside_the_allowed_scopes_fails_naming_its_scope(
        github: GithubFactory, faults: Faults) -> None:
    faults.set("secrets-across-scopes")
    with pytest.raises(AssertionError, match=r"DATABASE_PUBLIC_URL \(only at organization\)"):
        DELIVERY.test_secrets_exist(github(secret_scopes=["repository", "environment"]),
                                    Evidence())
    with pytest.raises(AssertionError, match=r"RAILWAY_TOKEN \(only at environment production"):
        DELIVERY.test_secrets_exist(github(secret_scopes=["repository", "organization"]),
                                    Evidence())


@pytest.mark.parametrize(("behind_by", "passes"), [(0, True), (3, False)])
def test_a_pr_merged_into_another_branch_counts_once_it_reached_main(
        github: GithubFactory, overrides: Overrides, behind_by: int, passes: bool) -> None:
    """Gitflow and stacked PRs merge into another branch first: the PR counts once its merge
    commit is in main's history, not before."""
    merge = "ab" * 20
    overrides.answers[f"/repos/{REPO}/pulls/29"] = (200, {
        "number": 29, "title": "Phase 2", "state": "closed", "merged": True,
        "merged_at": "2026-11-20T10:00:00Z", "merge_commit_sha": merge, "base": {"ref": "develop"}})
    overrides.answers[f"/repos/{REPO}/compare/{merge}...main"] = (200, {
        "status": "ahead" if behind_by == 0 else "diverged", "ahead_by": 4,
        "behind_by": behind_by, "files": []})
    evidence = Evidence()
    if passes:
        DELIVERY.test_prs_merged(github(), evidence)
        shown = next(i.value for i in evidence.items if i.name == "pull_requests")
        assert shown["#29"]["base"] == "develop" and shown["#29"]["reached_main"] is True
    else:
        with pytest.raises(AssertionError, match=r"#29 was merged into develop, and its merge "
                                                 r"commit abababababab is not in main's history"):
            DELIVERY.test_prs_merged(github(), evidence)


def test_prs_merged_and_an_open_pr(github: GithubFactory, faults: Faults) -> None:
    evidence = Evidence()
    DELIVERY.test_prs_merged(github(), evidence)
    assert set(recorded(evidence, "pull_requests")) == {"#29", "#30"}
    faults.set("pr-unmerged")
    with pytest.raises(AssertionError, match="#30 is open with merged=false"):
        DELIVERY.test_prs_merged(github(), Evidence())
    with pytest.raises(NotCovered, match=r"github\.prs"):
        DELIVERY.test_prs_merged(github(prs=[]), Evidence())


def test_a_missing_secret_fails_and_an_empty_list_is_not_covered(github: GithubFactory,
                                                                 faults: Faults) -> None:
    faults.set("secret-missing")
    with pytest.raises(AssertionError, match="missing: DEV_KEY"):
        DELIVERY.test_secrets_exist(github(), Evidence())
    with pytest.raises(NotCovered, match=r"github\.secrets"):
        DELIVERY.test_secrets_exist(github(secrets=[]), Evidence())
    with pytest.raises(NotCovered, match=r"github\.secret_scopes"):
        DELIVERY.test_secrets_exist(github(secret_scopes=[]), Evidence())


# -- P0-001: deployed version -------------------------------------------------------------------

def service(version: str | None) -> Any:
    health = SimpleNamespace(version=version)
    return SimpleNamespace(health=lambda: health, base_url="http://relay.test",
                           cfg=SimpleNamespace(version_field="version", health_path="/health"))


@pytest.mark.parametrize(("variant", "version", "changes"), [
    (None, GIT_SHA, {}),
    (None, GIT_SHA[:8], {}),  # a short sha
    ("docs-commit-after-deploy", GIT_SHA, {}),  # the head changes only docs: nothing deploys
    (None, RELEASE_TAG, {"version_tag_pattern": r"v\d+\.\d+\.\d+"}),
])
def test_the_deployed_version_passes(github: GithubFactory, faults: Faults, variant: str | None,
                                     version: str, changes: dict[str, Any]) -> None:
    faults.set(*([variant] if variant else []))
    DELIVERY.test_deployed_version_is_main_head(service(version), github(**changes), Evidence())


def test_an_undeployed_code_commit_fails(github: GithubFactory, faults: Faults) -> None:
    faults.set("head-not-deployed")
    with pytest.raises(AssertionError, match=r"change src/relay/api.py, which .*deploy.yml deploys"):
        DELIVERY.test_deployed_version_is_main_head(service(GIT_SHA), github(), Evidence())
    # Without a deploy workflow to tell docs from code, only main's head counts.
    faults.set("docs-commit-after-deploy")
    with pytest.raises(AssertionError):
        DELIVERY.test_deployed_version_is_main_head(service(GIT_SHA), github(deploy_workflow=""),
                                                    Evidence())


@pytest.mark.parametrize("triggers", [
    "workflow_run:\n    workflows: [CI]\n    types: [completed]\n    branches: [main]",
    "workflow_dispatch:",
])
def test_a_lag_behind_main_is_not_excused_for_a_deploy_that_does_not_run_on_push(
        github: GithubFactory, faults: Faults, overrides: Overrides, triggers: str) -> None:
    """Path filters say what a push deploys; a deploy started after CI or by hand has none,
    so even a docs-only commit since the last deploy is a lag."""
    import base64

    faults.set("docs-commit-after-deploy")
    text = f"name: Deploy\non:\n  {triggers}\njobs:\n  deploy:\n    runs-on: ubuntu-latest\n" \
           f"    steps:\n      - run: ./deploy.sh\n"
    path = ".github/workflows/deploy.yml"
    overrides.answers[f"/repos/{REPO}/contents/{path}"] = (200, {
        "type": "file", "name": "deploy.yml", "path": path, "sha": "0" * 40, "size": len(text),
        "encoding": "base64", "content": base64.b64encode(text.encode()).decode()})
    with pytest.raises(AssertionError, match="does not run on push"):
        DELIVERY.test_deployed_version_is_main_head(service(GIT_SHA), github(), Evidence())


TAG_DEPLOY = """name: Deploy
on:
  push:
    tags: ['v*']
jobs:
  deploy:
    runs-on: ubuntu-latest
    steps:
      - run: ./deploy.sh
"""


@pytest.mark.parametrize(("conclusion", "passes"), [("success", True), ("failure", False)])
def test_a_deploy_that_runs_for_tags_is_judged_by_its_tag_runs(
        github: GithubFactory, overrides: Overrides, conclusion: str, passes: bool) -> None:
    """A run for a pushed tag names the tag as its head_branch, so there is no run "on main":
    the newest finished run of a tag-only workflow counts instead."""
    _serve_file(overrides, ".github/workflows/deploy.yml", TAG_DEPLOY)
    empty, tagged = (200, runs()), (200, runs((1, "push", conclusion)))
    # The runs of a branch are none; those of every ref include the tag's.
    overrides.answers[runs_path("deploy.yml")] = \
        lambda request: empty if "branch" in request.url.params else tagged
    evidence = Evidence()
    if passes:
        DELIVERY.test_workflows_active_and_green(github(), evidence)
        assert recorded(evidence, "workflows")["deploy.yml"]["runs"] == "for a tag or release"
    else:
        with pytest.raises(AssertionError, match=r"the last run of deploy\.yml for a tag or "
                                                 r"release .* concluded 'failure'"):
            DELIVERY.test_workflows_active_and_green(github(), evidence)


def test_a_comparison_too_long_to_judge_is_unverified(github: GithubFactory, faults: Faults,
                                                       overrides: Overrides) -> None:
    faults.set("docs-commit-after-deploy")
    head = github().head_sha()
    files = [{"filename": f"docs/page-{i}.md"} for i in range(300)]
    overrides.answers[f"/repos/{REPO}/compare/{GIT_SHA}...{head}"] = (200, {
        "status": "ahead", "ahead_by": 40, "behind_by": 0, "files": files})
    with pytest.raises(UnexpectedResponse, match="cannot be told"):
        DELIVERY.test_deployed_version_is_main_head(service(GIT_SHA), github(), Evidence())


def test_versions_that_name_no_commit(github: GithubFactory) -> None:
    with pytest.raises(AssertionError, match=r"reports version 'v9.9.9'"):
        DELIVERY.test_deployed_version_is_main_head(service("v9.9.9"), github(), Evidence())
    with pytest.raises(UnexpectedResponse, match="no such tag"):
        DELIVERY.test_deployed_version_is_main_head(
            service("v9.9.9"), github(version_tag_pattern=r"v[\d.]+"), Evidence())
    with pytest.raises(NotApplicable):
        DELIVERY.test_deployed_version_is_main_head(service(None), github(), Evidence())


# -- P3-001: the weekly report job --------------------------------------------------------------

@pytest.mark.parametrize("variant", [None, "runs-cancelled"])
def test_the_scheduled_report_passes(github: GithubFactory, faults: Faults,
                                     variant: str | None) -> None:
    faults.set(*([variant] if variant else []))
    REPORT.test_slo_report_job_recent(github(), Evidence())


@pytest.mark.parametrize(("fault", "says"), [
    ("slo-report-stale", "succeeded 10.0 days ago"),
    ("slo-report-manual-only", "declares no `schedule:` trigger"),
])
def test_the_report_job_fails_under_its_faults(github: GithubFactory, faults: Faults, fault: str,
                                               says: str) -> None:
    faults.set(fault)
    with pytest.raises(AssertionError, match=says):
        REPORT.test_slo_report_job_recent(github(), Evidence())


def test_a_failed_scheduled_run_is_not_made_good_by_a_manual_one(github: GithubFactory,
                                                                 overrides: Overrides) -> None:
    path = runs_path("slo-report.yml")
    # The server filters by event: only the scheduled runs come back for event=schedule.
    overrides.answers[path] = (200, runs((1, "schedule", "failure"), (8, "schedule", "success")))
    with pytest.raises(AssertionError, match="concluded 'failure'"):
        REPORT.test_slo_report_job_recent(github(), Evidence())
    overrides.answers[path] = (200, runs())
    with pytest.raises(AssertionError, match="no finished scheduled run"):
        REPORT.test_slo_report_job_recent(github(), Evidence())
    with pytest.raises(NotCovered, match=r"github.slo_report_workflow"):
        REPORT.test_slo_report_job_recent(github(slo_report_workflow=""), Evidence())


# -- P1-003: the rollback automation ------------------------------------------------------------

@pytest.mark.parametrize("variant", [None, "rollback-shell-script", "runs-cancelled"])
def test_the_rollback_automation_passes(github: GithubFactory, faults: Faults,
                                        variant: str | None) -> None:
    faults.set(*([variant] if variant else []))
    evidence = Evidence()
    ROLLBACK.test_rollback_script_calls_api(github(), evidence)
    script = recorded(evidence, "rollback_script")
    assert script["language"] == ("shell" if variant == "rollback-shell-script" else "python")
    assert len(script["calls"]) == 1
    workflow = recorded(evidence, "rollback_workflow_run")
    assert workflow["step_outcomes"] == {
        "rollback / Roll back to the previous deployment": "success"}


@pytest.mark.parametrize(("fault", "says"), [
    ("rollback-notes-only", "never sends a GraphQL request with the deploymentRollback"),
    ("rollback-run-failed", "concluded 'failure' and its calling step"),
])
def test_the_rollback_automation_fails_under_its_faults(github: GithubFactory, faults: Faults,
                                                        fault: str, says: str) -> None:
    faults.set(fault)
    with pytest.raises(AssertionError, match=says):
        ROLLBACK.test_rollback_script_calls_api(github(), Evidence())


def test_the_script_alone_or_the_workflow_alone(github: GithubFactory, faults: Faults,
                                                overrides: Overrides) -> None:
    ROLLBACK.test_rollback_script_calls_api(github(rollback_workflow=""), Evidence())
    faults.set("rollback-notes-only")
    with pytest.raises(AssertionError, match="never sends"):
        ROLLBACK.test_rollback_script_calls_api(github(rollback_workflow=""), Evidence())
    # Without the script's path, the workflow's step that runs it cannot be told to call.
    with pytest.raises(AssertionError, match=r"no step of .*rollback.yml .*calls deploymentRollback"):
        ROLLBACK.test_rollback_script_calls_api(github(rollback_script=""), Evidence())
    with pytest.raises(NotCovered, match=r"github.rollback_script or github.rollback_workflow"):
        ROLLBACK.test_rollback_script_calls_api(github(rollback_script="", rollback_workflow=""),
                                                Evidence())
    faults.set()
    overrides.answers[runs_path("rollback.yml")] = (200, runs())
    with pytest.raises(NotCovered, match="never run"):
        ROLLBACK.test_rollback_script_calls_api(github(), Evidence())


def _serve_file(overrides: Overrides, path: str, text: str) -> None:
    import base64

    overrides.answers[f"/repos/{REPO}/contents/{path}"] = (200, {
        "type": "file", "name": path.rsplit("/", 1)[-1], "path": path, "sha": "0" * 40,
        "size": len(text), "encoding": "base64",
        "content": base64.b64encode(text.encode()).decode()})


CALLER = """name: Roll back
on:
  workflow_dispatch:
    inputs:
      environment: {type: string}
jobs:
  rollback:
    name: Roll back ${{ inputs.environment }}
    uses: %s
    secrets: inherit
"""
CALLED = """name: Railway rollback
on: workflow_call
jobs:
  railway:
    runs-on: ubuntu-latest
    steps:
      - name: Roll back on Railway
        run: scripts/rollback --notes notes.md
"""


@pytest.mark.parametrize(("conclusion", "outcome"), [("success", None), ("failure", "did not")])
def test_a_rollback_in_a_reusable_workflow_of_the_repository_is_followed(
        github: GithubFactory, overrides: Overrides, conclusion: str, outcome: str | None) -> None:
    """The calling job has no steps of its own: its reusable workflow's steps are read, and
    found in the run as "<caller> / <called job>", the caller's name evaluated."""
    _serve_file(overrides, ".github/workflows/rollback.yml",
                CALLER % "./.github/workflows/_railway-rollback.yml")
    _serve_file(overrides, ".github/workflows/_railway-rollback.yml", CALLED)
    overrides.answers[runs_path("rollback.yml")] = (200, runs((1, "workflow_dispatch", conclusion)))
    overrides.answers[f"/repos/{REPO}/actions/runs/900/jobs"] = (200, {"total_count": 1, "jobs": [
        {"id": 1, "name": "Roll back staging / railway", "status": "completed",
         "conclusion": conclusion, "steps": [
             {"number": 1, "name": "Roll back on Railway", "status": "completed",
              "conclusion": conclusion}]}]})
    evidence = Evidence()
    if outcome is None:
        ROLLBACK.test_rollback_script_calls_api(github(), evidence)
        shown = recorded(evidence, "rollback_workflow_run")["step_outcomes"]
        assert shown == {"Roll back staging / railway / Roll back on Railway": "success"}
    else:
        with pytest.raises(AssertionError, match="concluded 'failure'"):
            ROLLBACK.test_rollback_script_calls_api(github(), evidence)


def test_a_reusable_workflow_of_another_repository_is_not_covered(
        github: GithubFactory, overrides: Overrides) -> None:
    _serve_file(overrides, ".github/workflows/rollback.yml",
                CALLER % "acme/platform/.github/workflows/railway-rollback.yml@v2")
    with pytest.raises(NotCovered, match="reusable workflows of other repositories"):
        ROLLBACK.test_rollback_script_calls_api(github(), Evidence())


def test_a_missing_script_fails(github: GithubFactory) -> None:
    with pytest.raises(AssertionError, match=r"ops/rollback.sh does not exist"):
        ROLLBACK.test_rollback_script_calls_api(github(rollback_script="ops/rollback.sh"),
                                                Evidence())


@pytest.mark.parametrize("variant", [None, "railway-image-source", "railway-app-sleeping"])
def test_the_railway_criteria_pass(railway: RailwayProbe, faults: Faults,
                                   variant: str | None) -> None:
    faults.set(*([variant] if variant else []))
    ROLLBACK.test_previous_deployment_can_roll_back(railway, Evidence())
    ROLLBACK.test_rollback_drill(railway, Evidence())


def test_the_railway_criteria_fail_under_their_faults(railway: RailwayProbe,
                                                      faults: Faults) -> None:
    faults.set("no-rollback-target")
    with pytest.raises(AssertionError, match="none besides the active"):
        ROLLBACK.test_previous_deployment_can_roll_back(railway, Evidence())
    faults.set("rollback-overridden-by-autodeploy")
    with pytest.raises(AssertionError, match="not the target's commit"):
        ROLLBACK.test_rollback_drill(railway, Evidence())


def test_an_unreachable_railway_is_unverified() -> None:
    cfg = RailwayConfig(api_url="http://127.0.0.1:9/graphql/v2", token=RW_TOKEN,  # type: ignore[arg-type]
                        project_id="p", environment_id="e", service_id="s")
    probe = RailwayProbe(cfg, timeout=2)
    for check in (ROLLBACK.test_token_accepted, ROLLBACK.test_previous_deployment_can_roll_back,
                  ROLLBACK.test_rollback_drill):
        with pytest.raises(TargetUnreachable):
            check(probe, Evidence())


# -- P1-002: the drill schedule -----------------------------------------------------------------

@dataclass
class Backups:
    """The drill-record side of BackupStore."""

    record: DrillRecord | ProbeError | None
    cfg: BackupsConfig = field(default_factory=lambda: BackupsConfig.model_validate(
        {"s3": {"bucket": "relay-backups"}, "drill_record_key": "drills/last-drill.json"}))
    bucket: str = "relay-backups"

    def drill_record(self) -> DrillRecord | None:
        if isinstance(self.record, ProbeError):
            raise self.record
        return self.record


def record(days_ago: float, outcome: str | None = "passed",
           rto: float | None = 47.9) -> DrillRecord:
    finished = dt.datetime.now(dt.UTC) - dt.timedelta(days=days_ago)
    return DrillRecord("drills/last-drill.json", finished, {}, outcome=outcome, rto_seconds=rto)


def drill_check(github: GithubProbe | ProbeError | None, backups: Backups,
                rto_target: float | None = 600, workflow: str = "restore-drill.yml") -> None:
    def fixture(name: str) -> GithubProbe:
        assert name == "github"
        if isinstance(github, ProbeError):
            raise github
        assert github is not None
        return github

    env = SimpleNamespace(
        github=None if github is None else SimpleNamespace(drill_workflow=workflow),
        restore_drill=None if rto_target is None else SimpleNamespace(rto_target_s=rto_target))
    DRILL.test_restore_drill_scheduled(backups, env, SimpleNamespace(getfixturevalue=fixture),
                                       Evidence())


@pytest.mark.parametrize(("variant", "drill_record"), [
    (None, record(10)),
    (None, None),  # the monthly workflow alone
    ("drill-run-by-hand", record(10)),  # the record alone
    ("runs-cancelled", None),
])
def test_the_drill_schedule_passes(github: GithubFactory, faults: Faults, variant: str | None,
                                   drill_record: DrillRecord | None) -> None:
    faults.set(*([variant] if variant else []))
    drill_check(github(), Backups(drill_record))


def test_the_most_recent_drill_run_may_be_a_manual_one(github: GithubFactory,
                                                       overrides: Overrides) -> None:
    overrides.answers[runs_path("restore-drill.yml")] = (200, runs(
        (3, "workflow_dispatch", "success"), (5, "schedule", "failure")))
    drill_check(github(), Backups(None))
    overrides.answers[runs_path("restore-drill.yml")] = (200, runs(
        (3, "schedule", "failure"), (5, "workflow_dispatch", "success")))
    with pytest.raises(AssertionError, match="concluded 'failure'"):
        drill_check(github(), Backups(None))
    # A cron that has not fired in the window: the manual runs alone do not make it automated.
    overrides.answers[runs_path("restore-drill.yml")] = (200, runs(
        (3, "workflow_dispatch", "success"), (40, "schedule", "success")))
    with pytest.raises(AssertionError, match="has not fired within 32 days"):
        drill_check(github(), Backups(None))


@pytest.mark.parametrize(("days_ago", "fresh"), [(31.5, True), (32.5, False)])
def test_a_monthly_run_late_after_a_31_day_month_is_still_on_time(
        github: GithubFactory, overrides: Overrides, days_ago: float, fresh: bool) -> None:
    """A monthly cron runs at most 31 days apart, and schedulers start runs late: the last
    scheduled run 31.5 days ago is on time, 32.5 days ago it is not."""
    overrides.answers[runs_path("restore-drill.yml")] = (200, runs((days_ago, "schedule", "success")))
    if fresh:
        drill_check(github(), Backups(None))
    else:
        with pytest.raises(AssertionError, match="within 32 days"):
            drill_check(github(), Backups(None))


def test_a_recent_failed_drill_record_fails(github: GithubFactory) -> None:
    # The workflow's last success (12 days ago) is older than the record.
    with pytest.raises(AssertionError, match=r"the last drill failed: .*ended 'failed'"):
        drill_check(github(), Backups(record(3, "failed", None)))


def test_a_drill_record_over_the_rto_is_no_evidence(github: GithubFactory,
                                                    faults: Faults) -> None:
    slow = Backups(record(3, "passed", 900.0))
    drill_check(github(), slow)  # the monthly workflow still shows the drill succeeding
    faults.set("drill-run-by-hand")
    with pytest.raises(AssertionError, match="took 900 s, over the RTO of 600 s"):
        drill_check(github(), slow)


def test_a_failed_record_older_than_a_successful_run_does_not_fail(github: GithubFactory) -> None:
    drill_check(github(), Backups(record(20, "failed", None)))


@pytest.mark.parametrize(("fault", "drill_record", "says"), [
    ("no-drill-schedule", record(45), "has no schedule .*days old"),
    ("drill-run-by-hand", record(10, None), "has no 'result'"),
    ("drill-run-by-hand", None, "none at s3://relay-backups/drills/last-drill.json"),
])
def test_the_drill_schedule_fails_without_either_evidence(github: GithubFactory, faults: Faults,
                                                          fault: str,
                                                          drill_record: DrillRecord | None,
                                                          says: str) -> None:
    faults.set(fault)
    with pytest.raises(AssertionError, match=says):
        drill_check(github(), Backups(drill_record))


def test_the_drill_schedule_when_a_side_cannot_be_read(github: GithubFactory) -> None:
    down = TargetUnreachable("github: unreachable")
    drill_check(down, Backups(record(10)))  # the record alone passes
    with pytest.raises(TargetUnreachable):
        drill_check(down, Backups(None))
    refused = Backups(AccessRefused("s3: AccessDenied"))
    drill_check(github(), refused)  # the workflow alone passes
    with pytest.raises(AccessRefused):
        drill_check(github(), refused, workflow="")
    with pytest.raises(NotCovered, match=r"github.drill_workflow or backups.drill_record_key"):
        drill_check(None, Backups(None, cfg=BackupsConfig.model_validate(
            {"s3": {"bucket": "relay-backups"}})))
