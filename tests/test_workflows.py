"""The GitHub Actions workflows: their triggers, every command they run exists, they pass
actionlint and zizmor, actions are pinned by commit SHA, and each job has the least
permissions it needs."""

from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
NIGHTLY = WORKFLOWS / "verify-nightly.yml"
CI = WORKFLOWS / "ci.yml"
OPSREADY = ROOT / ".venv" / "bin" / "opsready"
EXAMPLE = ROOT / "config" / "environments" / "production.example.yaml"


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path.name} is not a mapping"
    return data


def triggers(workflow: dict[str, Any]) -> dict[str, Any]:
    # YAML 1.1 reads the bare key `on` as the boolean True.
    on = workflow.get("on", workflow.get(True))
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return dict.fromkeys(on)
    assert isinstance(on, dict), f"unexpected `on`: {on!r}"
    return on


def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def run_scripts(workflow: dict[str, Any]) -> list[str]:
    # A trailing backslash continues a shell command on the next line.
    return [step["run"].replace("\\\n", " ") for step in steps(workflow) if "run" in step]


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return {
        m.group(1)
        for m in re.finditer(r"^([A-Za-z0-9_][A-Za-z0-9_.-]*)\s*:(?!=)", text, re.M)
    }


def make_targets_used(scripts: list[str]) -> list[str]:
    used = []
    for script in scripts:
        for m in re.finditer(r"(?:^|[\s;&|(])make((?:[ \t]+[^\s;&|#]+)*)", script, re.M):
            used += [t for t in m.group(1).split() if not t.startswith("-") and "=" not in t]
    return used


def opsready_commands(scripts: list[str]) -> list[tuple[str, list[str]]]:
    """Each ``opsready SUB ...`` invocation: the subcommand and the flags on its line."""
    found = []
    for script in scripts:
        for line in script.splitlines():
            # In command position: at the start of a line, or after ; && || | or $(.
            m = re.search(
                r"(?:^|[;&|]|\$\()\s*(?:[\w.-]*/)*opsready\s+([a-z][\w-]*)(.*)$", line
            )
            if m is None:
                continue
            flags = re.findall(r"(?<![\w-])(--[a-z][\w-]*|-[A-Za-z])(?![\w-])", m.group(2))
            found.append((m.group(1), flags))
    return found


@functools.cache
def cli_help(*args: str) -> str:
    if not OPSREADY.exists():
        pytest.fail(f"{OPSREADY} is missing; run `make setup`")
    result = subprocess.run(
        [str(OPSREADY), *args, "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 0, f"opsready {' '.join(args)} --help: {result.stderr}"
    return result.stdout


def test_nightly_runs_on_a_schedule_and_on_manual_dispatch() -> None:
    on = triggers(load(NIGHTLY))
    assert "workflow_dispatch" in on
    crons = [entry["cron"] for entry in on.get("schedule") or []]
    assert crons, "verify-nightly.yml has no schedule"
    for cron in crons:
        assert len(cron.split()) == 5, f"not a five-field cron: {cron!r}"


def test_ci_runs_make_test_on_push_and_pull_request() -> None:
    workflow = load(CI)
    assert {"push", "pull_request"} <= set(triggers(workflow))
    assert "test" in make_targets_used(run_scripts(workflow))


def test_nightly_installs_with_make_setup_before_verifying() -> None:
    scripts = run_scripts(load(NIGHTLY))
    setup = next(i for i, s in enumerate(scripts) if "setup" in make_targets_used([s]))
    verify = next(i for i, s in enumerate(scripts) if "opsready verify" in s)
    assert setup < verify


def _verify_step(workflow: dict[str, Any]) -> dict[str, Any]:
    found = [s for s in steps(workflow) if "opsready verify " in s.get("run", "")]
    assert len(found) == 1, "verify-nightly.yml should run `opsready verify` once"
    return found[0]


def test_nightly_verifies_each_environment_of_its_matrix_and_fails_on_regression() -> None:
    workflow = load(NIGHTLY)
    job = workflow["jobs"]["verify"]
    assert "production" in job["strategy"]["matrix"]["environment"]
    assert job["strategy"]["fail-fast"] is False  # one environment's failure does not cancel the others
    assert job["env"]["ENVIRONMENT"] == "${{ matrix.environment }}"
    step = _verify_step(workflow)
    assert '--env "$ENVIRONMENT"' in step["run"]
    assert "--fail-on-regression" in step["run"]
    # The job must fail when verify exits non-zero: no swallowing of the exit code.
    assert not step.get("continue-on-error")
    assert "|| true" not in step["run"]


def test_every_secret_of_the_production_example_comes_from_repository_secrets() -> None:
    names = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", EXAMPLE.read_text("utf-8")))
    names.discard("VAR")  # the file's own comment about the ${VAR} syntax
    env = _verify_step(load(NIGHTLY)).get("env") or {}
    for name in sorted(names):
        assert name in env, f"the verify step does not set {name}"
        assert re.fullmatch(r"\$\{\{\s*secrets\.\w+\s*\}\}", str(env[name])), (
            f"{name} must come from a repository secret, not {env[name]!r}"
        )


def test_nightly_uploads_the_report_for_90_days_even_when_verify_fails() -> None:
    workflow = load(NIGHTLY)
    uploads = [s for s in workflow["jobs"]["verify"]["steps"] if str(s.get("uses", "")).startswith(
        "actions/upload-artifact@")]
    assert len(uploads) == 1
    upload = uploads[0]
    assert "${{ matrix.environment }}" in upload["with"]["name"]
    assert upload["with"]["retention-days"] == 90
    assert "always()" in str(upload.get("if", ""))
    assert upload["with"]["path"], "the upload has no path"


def test_nightly_keeps_the_history_and_the_earlier_reports_carry_forward_needs() -> None:
    """The diff reads reports/history.jsonl; carry-forward also reads the earlier runs'
    readiness.json and checks their bundles, so the whole reports/ directory is kept."""
    all_steps = load(NIGHTLY)["jobs"]["verify"]["steps"]
    uses = [str(s.get("uses", "")) for s in all_steps]
    verify = all_steps.index(_verify_step(load(NIGHTLY)))
    restore = next(i for i, u in enumerate(uses) if u.startswith("actions/cache/restore@"))
    save = next(i for i, u in enumerate(uses) if u.startswith("actions/cache/save@"))
    assert restore < verify < save
    assert "always()" in str(all_steps[save].get("if", ""))
    for i in (restore, save):
        assert all_steps[i]["with"]["path"].strip() == "reports"
        assert "${{ matrix.environment }}" in all_steps[i]["with"]["key"]
    # Reports are pruned only past the longest default freshness window.
    from opsready.config import FreshnessConfig

    keep = int(load(NIGHTLY)["jobs"]["verify"]["env"]["KEEP_REPORT_DAYS"])
    assert keep > max(FreshnessConfig().model_dump().values())
    prune = next(i for i, s in enumerate(all_steps) if "KEEP_REPORT_DAYS" in s.get("run", ""))
    assert verify < prune < save


@pytest.mark.parametrize("path", [NIGHTLY, CI], ids=lambda p: p.name)
def test_every_make_target_exists(path: Path) -> None:
    used = make_targets_used(run_scripts(load(path)))
    assert used, f"{path.name} runs no make target"
    unknown = sorted(set(used) - makefile_targets())
    assert not unknown, f"{path.name} runs make {', '.join(unknown)}, not in the Makefile"


@pytest.mark.parametrize("path", [NIGHTLY, CI], ids=lambda p: p.name)
def test_every_opsready_subcommand_and_flag_exists(path: Path) -> None:
    commands = opsready_commands(run_scripts(load(path)))
    top = cli_help()
    for sub, flags in commands:
        assert re.search(rf"^\s+{re.escape(sub)}\b", top, re.M), (
            f"{path.name} runs `opsready {sub}`, which `opsready --help` does not list"
        )
        help_text = cli_help(sub)
        for flag in flags:
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text), (
                f"{path.name} passes {flag} to `opsready {sub}`, which its --help does not list"
            )


def test_the_nightly_command_is_found_by_the_parser() -> None:
    """Guards the two tests above against a parser that silently finds nothing."""
    commands = opsready_commands(run_scripts(load(NIGHTLY)))
    assert ("verify", ["--env", "--fail-on-regression", "--pushgateway"]) in commands
    assert ("summary", ["--out"]) in commands


# -- signing, attestation and the fleet view ---------------------------------------------------


def _step_using(job: dict[str, Any], action: str) -> dict[str, Any]:
    found = [s for s in job["steps"] if str(s.get("uses", "")).startswith(f"{action}@")]
    assert len(found) == 1, f"expected one step using {action}"
    return found[0]


def test_nightly_signs_with_a_repository_secret() -> None:
    env = _verify_step(load(NIGHTLY))["env"]
    assert env["OPSREADY_SIGNING_KEY"] == "${{ secrets.OPSREADY_SIGNING_KEY }}"


def test_nightly_attests_the_uploaded_bundle() -> None:
    job = load(NIGHTLY)["jobs"]["verify"]
    upload = _step_using(job, "actions/upload-artifact")
    attest = _step_using(job, "actions/attest-build-provenance")
    assert job["steps"].index(upload) < job["steps"].index(attest)
    assert attest["with"]["subject-digest"] == f"sha256:${{{{ steps.{upload['id']}.outputs.artifact-digest }}}}"
    assert attest["with"]["subject-name"] == upload["with"]["name"] + ".zip"


def test_a_final_job_summarises_the_fleet() -> None:
    jobs = load(NIGHTLY)["jobs"]
    fleet = jobs["fleet"]
    assert fleet["needs"] == "verify"
    assert fleet["if"] == "always()"
    download = _step_using(fleet, "actions/download-artifact")
    assert download["with"]["pattern"].startswith("opsready-*-")
    summary = next(s for s in fleet["steps"] if "opsready summary" in s.get("run", ""))
    upload = _step_using(fleet, "actions/upload-artifact")
    order = [fleet["steps"].index(x) for x in (download, summary, upload)]
    assert order == sorted(order)
    # The bundles travel with the summary, whose badges link into them.
    assert download["with"]["path"].startswith(upload["with"]["path"] + "/")


ACTION_REF = re.compile(r"^(?P<action>[\w.-]+/[\w./-]+)@(?P<ref>\S+)$")


@pytest.mark.parametrize("path", sorted(WORKFLOWS.glob("*.yml")), ids=lambda p: p.name)
def test_every_action_is_pinned_by_commit_sha_with_its_version_noted(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    uses = re.findall(r"^\s*-?\s*uses:\s*(\S+)(.*)$", text, re.M)
    assert uses, f"{path.name} uses no action"
    for ref, rest in uses:
        m = ACTION_REF.match(ref)
        assert m, f"{path.name}: {ref!r} is not owner/name@ref"
        assert re.fullmatch(r"[0-9a-f]{40}", m.group("ref")), f"{path.name}: {ref} is not pinned by commit SHA"
        assert re.search(r"#\s*v\d+(\.\d+)*", rest), f"{path.name}: {ref} does not note its version tag"


@pytest.mark.parametrize("path", sorted(WORKFLOWS.glob("*.yml")), ids=lambda p: p.name)
def test_least_permissions_per_job(path: Path) -> None:
    workflow = load(path)
    assert workflow.get("permissions") == {}, f"{path.name}: the workflow grants permissions to every job"
    for name, job in workflow["jobs"].items():
        perms = job.get("permissions")
        assert isinstance(perms, dict), f"{path.name}: job {name} does not state its permissions"
        assert all(v in ("read", "write", "none") for v in perms.values())
        attests = any(str(s.get("uses", "")).startswith("actions/attest-build-provenance@") for s in job["steps"])
        for scope in ("id-token", "attestations"):
            assert (perms.get(scope) == "write") == attests, (
                f"{path.name}: job {name} has {scope}: {perms.get(scope)}; write only where it attests")
        writes = {k for k, v in perms.items() if v == "write"} - {"id-token", "attestations"}
        assert not writes, f"{path.name}: job {name} writes {sorted(writes)}"
        for step in job["steps"]:
            if str(step.get("uses", "")).startswith("actions/checkout@"):
                assert step.get("with", {}).get("persist-credentials") is False


def _tool(name: str) -> str:
    tool = ROOT / ".venv" / "bin" / name
    if not tool.exists():
        pytest.fail(f"{tool} is missing; run `make setup` (it is a dev dependency)")
    return str(tool)


def test_every_workflow_passes_actionlint() -> None:
    result = subprocess.run([_tool("actionlint"), *map(str, sorted(WORKFLOWS.glob("*.yml")))], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_workflow_passes_zizmor() -> None:
    result = subprocess.run([_tool("zizmor"), "--offline", "--format", "plain", str(WORKFLOWS)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout + result.stderr


def test_make_lint_runs_both() -> None:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    lint = text[text.index("\nlint:"):].split("\n\n", 1)[0]
    assert "actionlint .github/workflows/" in lint and "zizmor --offline" in lint
