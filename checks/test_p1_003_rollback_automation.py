"""P1-003: the rollback automation really rolls back through Railway's public API.

What each criterion can and cannot tell:
- Token: Railway answers the smallest query the configured kind of token can; a project
  token must belong to the configured project and environment.
- Previous deployment: the active deployment is the service instance's latest deployment
  (or, while that one is still building or failed, the one still serving). A previous
  deployment that once served (SUCCESS, or superseded: REMOVED) with ``canRollback`` and
  other code than the active one must exist. Railway's retention decides ``canRollback``;
  the probe cannot tell how long it lasts.
- Automation: the rollback script is parsed (``ast`` for Python, commands for shell) and must
  send a GraphQL request carrying the ``deploymentRollback`` mutation to Railway's endpoint;
  a mention in a comment, a docstring or a notes template is no call. Where
  ``github.rollback_workflow`` names a workflow, one of its steps must make that call (inline,
  or by running the script) and its latest run must have run that step successfully; a
  workflow that never ran is not covered. A job that calls a reusable workflow of the
  repository (``jobs.<id>.uses: ./.github/workflows/...``) is read through that file; one of
  another repository cannot be read, so the criterion is then not covered. Job and step names
  written with expressions match whatever they evaluated to in the run. Static analysis
  cannot tell whether a call is reached at run time; the latest run and the drill do.
- Drill (intrusive, staging): roll back, see the active deployment change to one that runs
  the target's image or commit (not just another id), and roll forward to one that runs the
  original's again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

import opsready
from opsready._errors import UnexpectedResponse
from opsready.probes.github import newest_concluded, step_conclusions
from opsready.probes.railway import pick_rollback_target
from opsready.rollback_automation import ScriptAnalysis, analyse_script, calling_steps, patterns
from opsready.schedules import parse_workflow

if TYPE_CHECKING:
    from opsready.config import GithubConfig
    from opsready.evidence import Evidence
    from opsready.probes.github import GithubProbe
    from opsready.probes.railway import RailwayProbe

pytestmark = [pytest.mark.ticket("P1-003")]


def test_token_accepted(railway: RailwayProbe, evidence: Evidence) -> None:
    """The Railway API accepts the token"""
    identity = railway.token_check()
    evidence.record("token_check", {"token_kind": railway.cfg.token_kind, "answer": identity})
    # A project token is scoped to one project and environment: it must be this service's.
    for key, wanted in (("projectId", railway.cfg.project_id),
                        ("environmentId", railway.cfg.environment_id)):
        found = identity.get(key)
        assert found in (None, wanted), (
            f"Railway accepted the {railway.cfg.token_kind} token, but it belongs to {key} "
            f"{found}, not the configured {wanted}; use a token of this project and environment"
        )


def test_previous_deployment_can_roll_back(railway: RailwayProbe, evidence: Evidence) -> None:
    """The service has a previous deployment that can be rolled back to"""
    latest = railway.latest_deployment()
    active = railway.active_deployment()
    deployments = railway.deployments(first=10)
    candidates = railway.rollback_candidates()
    evidence.record("deployments", {
        "latest": None if latest is None else latest.summary(),
        "active": None if active is None else active.summary(),
        "newest": [d.summary() for d in deployments],
        "once_served": [d.summary() for d in candidates[:10]]})
    assert active is not None, (
        f"Railway service {railway.cfg.service_id}: nothing serves it (its latest deployment "
        f"is {latest.status if latest else 'missing'}); expected an active deployment to roll "
        f"back from; fix the service's latest deploy first"
    )
    target = pick_rollback_target(active, candidates)
    assert target is not None, (
        f"Railway service {railway.cfg.service_id}: of its {len(candidates)} newest "
        f"deployments that once served, none besides the active {active.id} ({active.source}) "
        f"has canRollback=true and runs other code; expected a previous deployment to roll "
        f"back to; deploy twice, and keep rollback images within Railway's retention"
    )
    evidence.record("rollback_target", target.summary())


def _script(github: GithubProbe, cfg: GithubConfig,
            evidence: Evidence) -> tuple[str, ScriptAnalysis] | None:
    path = cfg.rollback_script
    if not path:
        return None
    source = github.get_file(path)
    assert source is not None, (
        f"{path} does not exist in {github.repo}@{github.branch}; expected the rollback "
        f"script there; commit it or set github.rollback_script"
    )
    endpoint, shell = patterns(cfg.rollback_endpoints, cfg.rollback_shell_commands)
    analysis = analyse_script(source, path, endpoint_pattern=endpoint, shell_pattern=shell)
    evidence.record("rollback_script", {
        "path": path, "language": analysis.language, "lines": len(source.splitlines()),
        "calls": [f"{c.line}: {c.code}" for c in analysis.calls],
        "mentions_that_are_no_call": list(analysis.mentions), "problem": analysis.problem})
    if analysis.problem is not None:
        raise UnexpectedResponse(f"rollback script {path}: {analysis.problem}; cannot tell "
                                 f"whether it calls the API")
    return path, analysis


def _workflow_run_called(github: GithubProbe, cfg: GithubConfig,
                         script: tuple[str, ScriptAnalysis] | None,
                         evidence: Evidence) -> None:
    file = cfg.rollback_workflow
    workflow = github.workflow(file)
    assert workflow is not None, (
        f"GitHub {github.repo}: no workflow {file}; expected the rollback workflow "
        f"(github.rollback_workflow); add it or clear the key"
    )
    text = github.get_file(workflow.path)
    parsed = parse_workflow(text) if text is not None else None
    if parsed is None:
        raise UnexpectedResponse(f"github: {workflow.path} in {github.repo} is not a workflow")
    endpoint, shell = patterns(cfg.rollback_endpoints, cfg.rollback_shell_commands)

    def calling(workflow_steps: Any) -> list[Any]:
        return calling_steps(workflow_steps, script_path=script[0] if script else None,
                             script_calls=script is not None and script[1].calls_api,
                             endpoint_pattern=endpoint, shell_pattern=shell)

    # (the job's name in a run, the step): a job that calls a reusable workflow of this
    # repository shows up in the run as "<caller> / <called job>".
    steps = [(s.job_name, s) for s in calling(parsed.steps)]
    remote = []
    for _, caller, target in parsed.calls:
        if not target.startswith("./"):
            remote.append(target)
            continue
        called = github.get_file(target.removeprefix("./"))
        inner = parse_workflow(called) if called is not None else None
        if inner is not None:
            steps += [(f"{caller} / {s.job_name}", s) for s in calling(inner.steps)]
    run = newest_concluded(github.runs(workflow, status="completed", limit=30))
    found: dict[str, Any] = {"path": workflow.path, "state": workflow.state,
                             "calling_steps": [f"{job} / {s.name}" for job, s in steps],
                             "reusable_workflows_elsewhere": remote,
                             "latest_run": None if run is None else run.summary()}
    evidence.record("rollback_workflow", found)
    assert workflow.active, (
        f"GitHub {github.repo}: {workflow.path} is {workflow.state!r}; a disabled rollback "
        f"workflow cannot run in an incident; enable it"
    )
    if not steps and remote:
        opsready.not_covered(f"no step of {workflow.path} calls deploymentRollback itself, and "
                             f"it calls reusable workflows of other repositories "
                             f"({', '.join(remote)}), whose steps are not read")
    assert steps, (
        f"GitHub {github.repo}: no step of {workflow.path} (or of the reusable workflows of "
        f"this repository it calls) calls deploymentRollback on Railway's API, inline or "
        f"through the rollback script; expected one that does"
    )
    if run is None:
        opsready.not_covered(f"{workflow.path} has never run (cancelled and skipped runs aside), "
                             f"so no run shows that it rolls back")
    jobs = github.run_jobs(run.id)
    outcomes = {k: v for job, step in steps
                for k, v in step_conclusions(jobs, job, step.name).items()}
    evidence.record("rollback_workflow_run", {"run": run.summary(), "step_outcomes": outcomes})
    assert "success" in outcomes.values(), (
        f"GitHub {github.repo}: the latest run of {workflow.path} ({run.created_at:%Y-%m-%d}, "
        f"{run.html_url}) concluded {run.conclusion!r} and its calling step(s) "
        f"{outcomes or 'did not run'}; expected the step that calls deploymentRollback to "
        f"have succeeded; fix the workflow and run it again (in staging)"
    )


def test_rollback_script_calls_api(github: GithubProbe, evidence: Evidence) -> None:
    """The rollback automation calls the Railway API (not notes only)"""
    cfg = github.cfg
    if not cfg.rollback_script and not cfg.rollback_workflow:
        opsready.not_covered("not configured: github.rollback_script or github.rollback_workflow")
    script = _script(github, cfg, evidence)
    if script is not None:
        path, analysis = script
        assert analysis.calls_api, (
            f"{path} in {github.repo}@{github.branch} never sends a GraphQL request with the "
            f"deploymentRollback mutation to Railway's endpoint "
            f"({len(analysis.mentions)} mention(s) of it outside such a request, e.g. in "
            f"comments, docstrings or notes); expected the script to roll back through "
            f"Railway's API, not only write notes; send the mutation to "
            f"https://backboard.railway.com/graphql/v2"
        )
    if cfg.rollback_workflow:
        _workflow_run_called(github, cfg, script, evidence)


@pytest.mark.intrusive("rollback_drill")
def test_rollback_drill(railway: RailwayProbe, evidence: Evidence) -> None:
    """A rollback drill rolls back to the previous image or commit, and forward again"""
    bound = railway.cfg.drill_timeout_s
    drill = railway.rollback_drill(timeout=bound, poll=railway.cfg.drill_poll_s)
    evidence.record("rollback_drill", drill.as_evidence())
    assert drill.rolled_back, (
        f"Railway rollback to {drill.target.id} ({drill.target.source}): "
        f"{'; '.join(drill.notes) or 'no change'}; expected the active deployment to run the "
        f"target's code within railway.drill_timeout_s ({bound:g}s); check the service's deploy "
        f"logs, and whether an automatic deploy overrode the rollback"
    )
    assert drill.rolled_forward, (
        f"Railway roll-forward to {drill.original.id} ({drill.original.source}) after the "
        f"drill: {'; '.join(drill.notes)}; expected the service back on its original code "
        f"within {bound:g}s; roll it forward by hand now"
    )
