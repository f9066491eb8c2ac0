"""P0-001, delivery part: the Phase 2/3 PRs are merged, the secrets exist, CI/CD and backups run.

Everything is read through the GitHub REST API; secret values are never requested.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

import opsready

if TYPE_CHECKING:
    from opsready.evidence import Evidence
    from opsready.probes.github import GithubProbe
    from opsready.probes.http import ServiceProbe

pytestmark = [pytest.mark.ticket("P0-001")]


def test_prs_merged(github: GithubProbe, evidence: Evidence) -> None:
    """The Phase 2/3 pull requests are merged into main"""
    if not github.cfg.prs:
        opsready.not_covered("not configured: github.prs")
    seen: dict[str, Any] = {}
    unmerged: list[str] = []
    for number in github.cfg.prs:
        pr = github.pull(number)
        seen[f"#{number}"] = {k: pr.get(k) for k in
                              ("title", "state", "merged", "merged_at", "merge_commit_sha")}
        if pr.get("merged") is not True or not pr.get("merged_at"):
            merged = str(pr.get("merged")).lower()
            unmerged.append(f"#{number} is {pr.get('state')} with merged={merged}")
    evidence.record("pull_requests", seen)
    assert not unmerged, (
        f"GitHub pulls of {github.repo}: {'; '.join(unmerged)}; expected every PR in "
        f"github.prs merged (merged=true with a merged_at); merge them into {github.branch}"
    )


def test_secrets_exist(github: GithubProbe, evidence: Evidence) -> None:
    """The deployment secrets exist in the repository (names only)"""
    if not github.cfg.secrets:
        opsready.not_covered("not configured: github.secrets")
    names = github.secret_names()
    evidence.record("secret_names", sorted(names))
    missing = [s for s in github.cfg.secrets if s not in names]
    assert not missing, (
        f"GitHub actions secrets of {github.repo}: {', '.join(missing)} missing "
        f"(found {', '.join(sorted(names)) or 'none'}); expected all of "
        f"{', '.join(github.cfg.secrets)}; add them under Settings → Secrets and variables → Actions"
    )


def test_workflows_active_and_green(github: GithubProbe, evidence: Evidence) -> None:
    """The deploy and backup workflows are active and their last run on main succeeded"""
    problems: list[str] = []
    seen: dict[str, Any] = {}
    for file in (github.cfg.deploy_workflow, github.cfg.backup_workflow):
        workflow = github.workflow(file)
        if workflow is None:
            problems.append(f"{file} is not a workflow of the repository")
            continue
        # The newest finished run: one still in progress has not concluded anything yet.
        # By id: the configured name may be the workflow's name rather than its file.
        run = github.latest_run(str(workflow.get("id", file)), branch=github.branch,
                                status="completed")
        seen[file] = {
            "path": workflow.get("path"),
            "state": workflow.get("state"),
            "last_run": None if run is None else {k: run.get(k) for k in (
                "id", "event", "conclusion", "created_at", "head_sha", "html_url")},
        }
        if workflow.get("state") != "active":
            problems.append(f"{file} is {workflow.get('state')!r}, expected 'active'")
        if run is None:
            problems.append(f"{file} has no finished run on {github.branch}")
        elif run.get("conclusion") != "success":
            problems.append(f"the last run of {file} on {github.branch} "
                            f"({run.get('created_at')}) concluded {run.get('conclusion')!r}")
    evidence.record("workflows", seen)
    assert not problems, (
        f"GitHub Actions of {github.repo}: {'; '.join(problems)}; expected each workflow "
        f"active with its last run on {github.branch} successful; enable the workflow and "
        f"fix or re-run the failing job"
    )


def test_deployed_version_is_main_head(
    service: ServiceProbe, github: GithubProbe, evidence: Evidence
) -> None:
    """The deployed version matches the head of main"""
    health = service.health()
    if health.version is None:
        opsready.not_applicable(f"the service reports no '{service.cfg.version_field}' at "
                    f"{service.cfg.health_path}; nothing to compare")
    head = github.head_sha()
    version = health.version.strip().lower()
    evidence.record("versions", {"deployed": health.version, f"{github.branch}_head": head})
    # A deployed short sha (7+ characters) names the same commit as its full form.
    same = version == head.lower() or (len(version) >= 7 and head.lower().startswith(version))
    assert same, (
        f"{service.cfg.health_path} of {service.base_url} reports version {health.version!r}, "
        f"but the head of {github.branch} in {github.repo} is {head}; expected the deployed "
        f"version to be {github.branch}'s head; deploy {github.branch} (check the deploy "
        f"workflow's last run)"
    )
