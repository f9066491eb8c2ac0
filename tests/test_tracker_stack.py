"""`opsready verify` on the reference stack, then `opsready sync` into the stack's GitHub fake,
as the nightly workflow does: the tracker section and the issues-only token come from the
environment the stack writes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx

from conftest import ROOT, StartedStack, child_env, opsready_command, run_verify

JUDGED = ("P2-002", "P3-002")


def sync(stack: StartedStack, report: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*opsready_command(), "sync", "--env", str(stack.env_path), "--tracker", "github",
         "--report", str(report), *extra],
        capture_output=True, text=True, timeout=120, env=child_env(), cwd=ROOT, check=False)


def test_a_verified_run_syncs_into_the_stack_s_issues(stack: StartedStack, tmp_path: Path) -> None:
    result = run_verify(stack, tmp_path, tickets=JUDGED)
    assert result.status["P2-002"] == "done", result.explain(JUDGED)

    dry = sync(stack, result.out_dir, "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    for ticket in JUDGED:
        assert f'{ticket}  new  create "{ticket} ' in dry.stdout, dry.stdout
    assert dry.stdout.count("not judged by run") == 9
    token = stack.state["secrets"]["github_token"]
    assert token not in dry.stdout

    first = sync(stack, result.out_dir)
    assert first.returncode == 0, first.stdout + first.stderr
    again = sync(stack, result.out_dir)
    assert again.returncode == 0 and "nothing to change" in again.stdout, again.stdout

    api = stack.state["urls"]["github"]
    repo = "relay-platform/relay"
    with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {token}"}, timeout=10) as gh:
        for ticket in JUDGED:
            found = gh.get(f"/repos/{repo}/issues", params={"labels": f"opsready:{ticket}", "state": "all"})
            found.raise_for_status()
            (issue,) = found.json()
            status = result.status[ticket]
            assert {label["name"] for label in issue["labels"]} == {f"opsready:{ticket}", f"readiness:{status}"}
            assert issue["state"] == ("closed" if status in ("done", "waived") else "open")
            if status == "done":
                assert issue["state_reason"] == "completed" and "- [ ]" not in issue["body"]
            comments = gh.get(f"/repos/{repo}/issues/{issue['number']}/comments").json()
            assert len(comments) == 1 and result.out_dir.name in comments[0]["body"]
