"""P0-001, delivery part: the Phase 2/3 PRs are merged, the secrets exist, CI/CD and backups run,
and what is deployed is what the branch holds.

Everything is read through the GitHub REST API; secret values are never requested.

What each criterion can and cannot tell:
- PRs merged: ``merged`` with a ``merged_at``, per PR, into the branch: a PR merged into
  another branch (develop, a stacked branch) counts once its merge commit is in the branch's
  history (the comparison shows the branch not behind it). It cannot tell whether a later
  commit reverted them.
- Secrets: the names exist at a scope ``github.secret_scopes`` allows (repository, the
  deployment environments, the organization's secrets shared with the repository). A name
  found only at another scope is a fail that names where it lives. Whether a value is right
  cannot be seen: GitHub never returns values.
- Workflows: each is active (a disabled workflow fails), and its newest finished run on the
  branch succeeded, passing over cancelled and skipped runs (a concurrency group with
  cancel-in-progress produces them all the time), within the configured maximum age. A
  workflow that runs for pushed tags or releases only has no run on a branch (its runs name
  the tag): there its newest finished run counts. It cannot tell whether the job did what it
  should; the backup and deploy checks judge that.
- Deployed version: ``/health``'s version is the branch's head, or the head of the newest
  successful deploy run when the deploy workflow runs on push and every commit after it
  leaves its push path filters untouched (a docs-only commit deploys nothing). A deploy
  workflow started otherwise (after CI by ``workflow_run``, by hand) has no path filters to
  excuse a lag. A version matching
  ``github.version_tag_pattern`` is a tag, compared through the commit it names.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest

import opsready
from opsready._errors import UnexpectedResponse
from opsready.probes.github import newest_concluded
from opsready.schedules import parse_workflow

if TYPE_CHECKING:
    from opsready.evidence import Evidence
    from opsready.probes.github import GithubProbe, Workflow, WorkflowRun
    from opsready.probes.http import ServiceProbe

pytestmark = [pytest.mark.ticket("P0-001")]


def test_prs_merged(github: GithubProbe, evidence: Evidence) -> None:
    """The Phase 2/3 pull requests are merged into main"""
    if not github.cfg.prs:
        opsready.not_covered("not configured: github.prs")
    pulls = [github.pull(number) for number in github.cfg.prs]
    shown = {f"#{pr.number}": pr.summary() for pr in pulls}
    unmerged = [f"#{pr.number} is {pr.state} with merged={str(pr.merged).lower()}"
                for pr in pulls if not (pr.merged and pr.merged_at)]
    try:
        # Merged into another branch (develop, a stacked branch): it counts once its merge
        # commit has reached the branch.
        for pr in pulls:
            if not (pr.merged and pr.merged_at) or pr.base in (None, github.branch):
                continue
            reached = pr.merge_commit_sha is not None and \
                github.compare(pr.merge_commit_sha, github.branch).behind_by == 0
            shown[f"#{pr.number}"]["reached_" + github.branch] = reached
            if not reached:
                unmerged.append(f"#{pr.number} was merged into {pr.base}, and its merge commit "
                                f"{(pr.merge_commit_sha or 'none')[:12]} is not in "
                                f"{github.branch}'s history")
    finally:
        evidence.record("pull_requests", shown)
    assert not unmerged, (
        f"GitHub pulls of {github.repo}: {'; '.join(unmerged)}; expected every PR in "
        f"github.prs merged into {github.branch} (merged=true with a merged_at, directly or "
        f"through a branch that was merged since); merge them into {github.branch}"
    )


def test_secrets_exist(github: GithubProbe, evidence: Evidence) -> None:
    """The deployment secrets exist where the workflows can read them (names only)"""
    cfg = github.cfg
    if not cfg.secrets or not cfg.secret_scopes:
        opsready.not_covered("not configured: github.secrets"
                             if not cfg.secrets else "not configured: github.secret_scopes")
    inventory = github.secret_inventory(cfg.secret_scopes, cfg.secret_environments)
    found = {name: [s.where for s in inventory.where(name)] for name in cfg.secrets}
    evidence.record("secrets", {"scopes_that_count": list(cfg.secret_scopes),
                                "environments": list(cfg.secret_environments) or "all",
                                "found": found, "unreadable_scopes": inventory.unreadable})
    missing, elsewhere = [], []
    for name in cfg.secrets:
        places = inventory.where(name)
        if not places:
            missing.append(name)
        elif not any(s.scope in cfg.secret_scopes for s in places):
            elsewhere.append(f"{name} (only at {', '.join(s.where for s in places)})")
    assert not missing and not elsewhere, (
        f"GitHub actions secrets of {github.repo}: "
        + "; ".join(filter(None, [
            f"missing: {', '.join(missing)}" if missing else "",
            f"found only outside github.secret_scopes {list(cfg.secret_scopes)}: "
            f"{', '.join(elsewhere)}" if elsewhere else ""]))
        + f"; expected each of {', '.join(cfg.secrets)} at one of those scopes; add them under "
        f"Settings → Secrets and variables → Actions (or widen github.secret_scopes)"
    )


def _workflow_problems(github: GithubProbe, file: str, max_age_days: float | None,
                       seen: dict[str, Any]) -> list[str]:
    workflow = github.workflow(file)
    if workflow is None:
        return [f"{file} is not a workflow of the repository"]
    # The newest finished runs, by id: the configured name may be the workflow's name.
    runs = github.runs(workflow, branch=github.branch, status="completed", limit=50)
    run = newest_concluded(runs)
    where = f"on {github.branch}"
    if run is None and _runs_on_tags_only(github, workflow.path):
        # A run for a pushed tag or a release names the tag, not a branch.
        runs = github.runs(workflow, status="completed", limit=50)
        run, where = newest_concluded(runs), "for a tag or release"
    seen[file] = {"path": workflow.path, "state": workflow.state, "runs": where,
                  "max_age_days": max_age_days,
                  "passed_over": [r.summary() for r in runs[:5] if run is None
                                  or r.created_at > run.created_at],
                  "last_run": None if run is None else run.summary()}
    problems = []
    if not workflow.active:
        problems.append(f"{file} is {workflow.state!r}, expected 'active'")
    if run is None:
        problems.append(f"{file} has no finished run {where} that was not "
                        f"cancelled or skipped")
    elif run.conclusion != "success":
        when = f"{run.created_at:%Y-%m-%d %H:%M}Z"
        problems.append(f"the last run of {file} {where} ({when}) concluded "
                        f"{run.conclusion!r}")
    elif max_age_days is not None and run.age_days() > max_age_days:
        problems.append(f"the last run of {file} {where} succeeded "
                        f"{run.age_days():.1f} days ago, more than {max_age_days:g}")
    return problems


def _runs_on_tags_only(github: GithubProbe, path: str) -> bool:
    text = github.get_file(path)
    parsed = parse_workflow(text) if text is not None else None
    return parsed is not None and parsed.runs_on_tags_only


def test_workflows_active_and_green(github: GithubProbe, evidence: Evidence) -> None:
    """The deploy and backup workflows are active and their last run on main succeeded"""
    cfg = github.cfg
    problems: list[str] = []
    seen: dict[str, Any] = {}
    for file, max_age in ((cfg.deploy_workflow, cfg.deploy_max_age_days),
                          (cfg.backup_workflow, cfg.backup_max_age_days)):
        if file:
            problems += _workflow_problems(github, file, max_age, seen)
    evidence.record("workflows", seen)
    assert not problems, (
        f"GitHub Actions of {github.repo}: {'; '.join(problems)}; expected each workflow "
        f"active with its last run on {github.branch} (cancelled and skipped runs passed over) "
        f"successful and recent; enable the workflow and fix or re-run the failing job"
    )
    empty = [k for k in ("deploy_workflow", "backup_workflow") if not getattr(cfg, k)]
    if empty:
        opsready.not_covered(f"not configured: {', '.join(f'github.{k}' for k in empty)}")


def _same_commit(version: str, sha: str | None) -> bool:
    # A deployed short sha (7+ characters) names the same commit as its full form.
    return sha is not None and (version == sha.lower() or
                                (len(version) >= 7 and sha.lower().startswith(version)))


def _last_deploy(github: GithubProbe) -> tuple[Workflow | None, WorkflowRun | None]:
    if not github.cfg.deploy_workflow:
        return None, None
    workflow = github.workflow(github.cfg.deploy_workflow)
    if workflow is None:
        return None, None
    runs = github.runs(workflow, branch=github.branch, status="success", limit=1)
    if not runs and _runs_on_tags_only(github, workflow.path):
        runs = github.runs(workflow, status="success", limit=1)
    return workflow, runs[0] if runs else None


def test_deployed_version_is_main_head(
    service: ServiceProbe, github: GithubProbe, evidence: Evidence
) -> None:
    """The deployed version matches the head of main (or its last deploy, when nothing since deploys)"""
    health = service.health()
    if health.version is None:
        opsready.not_applicable(f"the service reports no '{service.cfg.version_field}' at "
                                f"{service.cfg.health_path}; nothing to compare")
    shown = health.version.strip()
    version = shown.lower()
    found: dict[str, Any] = {"deployed": health.version}
    pattern = github.cfg.version_tag_pattern
    if pattern and re.fullmatch(pattern, shown):
        tagged = github.commit_sha(shown)
        found["tag_commit"] = tagged
        if tagged is None:
            evidence.record("versions", found)
            raise UnexpectedResponse(
                f"github: the deployed version {shown!r} looks like a tag "
                f"(github.version_tag_pattern), but {github.repo} has no such tag")
        version = tagged.lower()
    head = github.head_sha()
    found[f"{github.branch}_head"] = head
    if _same_commit(version, head):
        evidence.record("versions", found)
        return
    workflow, deploy = _last_deploy(github)
    found["last_successful_deploy"] = None if deploy is None else deploy.summary()
    why = "it is not the head of the newest successful deploy run either"
    if deploy is not None and _same_commit(version, deploy.head_sha) and workflow is not None:
        text = github.get_file(workflow.path)
        parsed = parse_workflow(text) if text is not None else None
        since = github.compare(deploy.head_sha, head)
        found["changed_since_deploy"] = {"commits": since.ahead_by, "files": list(since.files[:50])}
        if parsed is None or not since.files_complete:
            evidence.record("versions", found)
            raise UnexpectedResponse(
                f"github: {shown} is the head of the last successful deploy, not of "
                f"{github.branch}; whether the {since.ahead_by} commit(s) since would deploy "
                f"cannot be told ({workflow.path} unreadable, or more changed files than the "
                f"comparison lists)")
        if since.behind_by == 0 and "push" not in parsed.events:
            # Deployed some other way (after CI, by hand): nothing says the commits since
            # would not deploy, so the lag stands.
            why = (f"{since.ahead_by} commit(s) since are not deployed, and {workflow.path} "
                   f"does not run on push ({', '.join(sorted(parsed.events)) or 'no trigger'}), "
                   f"so its path filters cannot excuse them")
        elif since.behind_by == 0:
            deploying = [f for f in since.files if parsed.push_runs_for([f])]
            found["files_that_deploy"] = deploying
            if not parsed.push_runs_for(since.files):
                evidence.record("versions", found)
                return
            why = (f"{since.ahead_by} commit(s) since it change {', '.join(deploying[:5])}, "
                   f"which {workflow.path} deploys")
        else:
            why = f"it is not in {github.branch}'s history ({since.status})"
    evidence.record("versions", found)
    last = deploy.head_sha if deploy is not None else "none"
    assert False, (  # noqa: B011 - the message is the finding
        f"{service.cfg.health_path} of {service.base_url} reports version {health.version!r}, "
        f"but the head of {github.branch} in {github.repo} is {head} and the newest "
        f"successful deploy run deployed {last}; {why}; expected the deployed version to be "
        f"{github.branch}'s head; deploy {github.branch} (check the deploy workflow's last runs)"
    )
