"""The ticket's actions and their evidence: each action names the criteria that prove it, or is
manual and covered by an attestation; `opsready tickets --coverage`; a run refuses an action
naming a criterion no check module defines."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import ROOT, Project, child_env, opsready_command, statuses, ticket
from opsready import _clock
from opsready._errors import ConfigError
from opsready.actions import defined_criteria
from opsready.attestations import load_attestations
from opsready.catalogue import Catalogue, load_catalogue

pytest_plugins = ["pytester"]

TODAY = _clock.now().date()
CHECK = ("import pytest\npytestmark = [pytest.mark.ticket('P2-002')]\n"
         "def test_preflight():\n    '''Preflights are answered'''\n"
         "def test_refused():\n    '''Disallowed origins are refused'''\n")
MANUAL = "Review the CORS policy with the security team"


def with_actions(project: Project, actions: list[dict[str, Any]]) -> None:
    path = project.root / "config" / "tickets.yaml"
    catalogue = yaml.safe_load(path.read_text())
    next(t for t in catalogue["tickets"] if t["id"] == "P2-002")["actions"] = actions
    path.write_text(yaml.safe_dump(catalogue, sort_keys=False))


def attest(project: Project, **overrides: Any) -> None:
    entry = {"ticket": "P2-002", "action": MANUAL, "attested_by": "dana@example.com",
             "approved_by": "lee@example.com", "date": (TODAY - dt.timedelta(days=3)).isoformat(),
             "evidence": "https://wiki.example.com/sec/cors-review",
             "expires": (TODAY + dt.timedelta(days=90)).isoformat()}
    entry.update(overrides)
    (project.root / "config" / "attestations.yaml").write_text(yaml.safe_dump({"attestations": [entry]}))


@pytest.fixture
def project(pytester: pytest.Pytester) -> Project:
    project = Project(pytester)
    project.check("test_p2_002_cors.py", CHECK)
    with_actions(project, [
        {"action": "Send preflights from every allowed origin", "criteria": ["test_preflight"]},
        {"action": "Confirm disallowed origins are refused", "criteria": ["test_refused"]},
        {"action": MANUAL, "manual": True},
    ])
    return project


# -- the real catalogue ------------------------------------------------------------------------


def test_every_action_of_the_real_catalogue_names_criteria_its_checks_define() -> None:
    catalogue = load_catalogue(ROOT / "config" / "tickets.yaml")
    defined = defined_criteria([ROOT / "checks"])
    for t in catalogue.tickets:
        assert t.actions, f"{t.id} has no actions"
        for action in t.actions:
            assert action.criteria or action.manual, f"{t.id}: '{action.action}' is proven by nothing"
            for name in action.criteria:
                assert name in defined[t.id], f"{t.id}: '{action.action}' names {name}, not in checks/"


def test_every_criterion_of_the_real_checks_proves_some_action() -> None:
    catalogue = load_catalogue(ROOT / "config" / "tickets.yaml")
    for ticket_id, names in defined_criteria([ROOT / "checks"]).items():
        named = {n for a in catalogue.get(ticket_id).actions for n in a.criteria}  # type: ignore[union-attr]
        assert names <= named, f"{ticket_id}: criteria proving no action: {sorted(names - named)}"


def test_coverage_of_the_real_catalogue_lists_every_action_and_passes() -> None:
    proc = subprocess.run([*opsready_command(), "tickets", "--coverage", "--root", str(ROOT)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=child_env(), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "    Schedule monthly drills  ->  criteria: test_restore_drill_scheduled" in proc.stdout
    total = sum(len(t.actions) for t in load_catalogue(ROOT / "config" / "tickets.yaml").tickets)
    assert proc.stdout.splitlines()[-1] == f"every action is covered: {total} actions"


# -- the catalogue's rules ---------------------------------------------------------------------


def test_a_manual_action_cannot_also_name_criteria() -> None:
    raw = yaml.safe_load((ROOT / "config" / "tickets.yaml").read_text())
    raw["tickets"][0]["actions"] = [{"action": "x", "manual": True, "criteria": ["test_prs_merged"]}]
    with pytest.raises(ValueError, match="a manual action is proven by an attestation"):
        Catalogue.model_validate(raw)


def test_an_action_naming_an_unknown_criterion_stops_the_run(project: Project) -> None:
    with_actions(project, [{"action": "Schedule monthly drills", "criteria": ["test_preflight", "test_typo"]}])
    result, data = project.run("--opsready-gate", "none")
    assert result.ret == 4
    assert data == {}
    text = result.stderr.str() + result.stdout.str()
    assert ("tickets[P2-002].actions[0].criteria: 'test_typo' (for the action 'Schedule monthly drills') is not "
            "a criterion of any check module of P2-002; use one of test_preflight, test_refused, or mark the "
            "action manual") in text


def test_opsready_verify_refuses_it_with_one_line_and_exit_4(project: Project) -> None:
    with_actions(project, [{"action": "Send preflights", "criteria": ["test_typo"]}])
    env = project.root / "env.yaml"
    proc = subprocess.run([*opsready_command(), "verify", "--root", str(project.root), "--env", str(env),
                           "--out", str(project.root / "out"), "-n", "0"],
                          capture_output=True, text=True, timeout=300, env=child_env(), cwd=project.root, check=False)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "'test_typo'" in lines[0] and "Traceback" not in proc.stderr


# -- actions in the roll-up and the report -----------------------------------------------------


def test_a_manual_action_without_an_attestation_keeps_the_ticket_unverified(project: Project) -> None:
    _, data = project.run("--opsready-gate", "none")
    p2 = ticket(data, "P2-002")
    assert p2["status"] == "unverified"
    assert p2["passed"] == p2["total"] == 2
    assert f"not checked: action '{MANUAL}' (manual, and no valid attestation in config/attestations.yaml)" \
        in p2["not_checked"]
    by_action = {a["action"]: a for a in p2["actions"]}
    assert by_action["Send preflights from every allowed origin"]["status"] == "done"
    assert by_action["Send preflights from every allowed origin"]["outcomes"] == {"P2-002::test_preflight": "pass"}
    assert by_action[MANUAL]["status"] == "not_covered"


def test_a_valid_attestation_covers_the_manual_action(project: Project) -> None:
    attest(project)
    _, data = project.run("--opsready-gate", "none", out="attested")
    p2 = ticket(data, "P2-002")
    assert p2["status"] == "done", p2["not_checked"]
    manual = next(a for a in p2["actions"] if a["manual"])
    assert manual["status"] == "attested"
    assert manual["attestation"]["attested_by"] == "dana@example.com"
    assert data["attestations"]["applied"][0]["approved_by"] == "lee@example.com"
    assert data["run"]["hashes"]["attestations"]
    page = (project.root / "reports" / "attested" / "index.html").read_text()
    section = page[page.index('id="ticket-P2-002"'):]
    assert "attested by dana@example.com on" in section and "approved by lee@example.com" in section
    assert 'href="https://wiki.example.com/sec/cors-review"' in section
    assert '<a href="#criterion-P2-002--test_preflight">Preflights are answered</a>' in section


def test_a_failing_criterion_still_opens_the_ticket_whatever_the_attestations(project: Project) -> None:
    attest(project)
    refused = "'''Disallowed origins are refused'''\n"
    project.check("test_p2_002_cors.py", CHECK.replace(refused, refused + "    assert False, 'ACAO *'\n"))
    _, data = project.run("--opsready-gate", "none")
    p2 = ticket(data, "P2-002")
    assert p2["status"] == "open"
    assert next(a for a in p2["actions"] if a["criteria"] == ["test_refused"])["status"] == "open"


@pytest.mark.parametrize(("overrides", "warning"), [
    ({"approved_by": "dana@example.com"}, "approved_by is the person who attests"),
    ({"expires": (TODAY - dt.timedelta(days=1)).isoformat()}, "expired on"),
    ({"date": (TODAY + dt.timedelta(days=1)).isoformat()}, "after today"),
    ({"evidence": "see the wiki"}, "evidence is not an http(s) URL"),
    ({"action": "Something else"}, "P2-002 has no manual action by that name"),
    ({"ticket": "P9-999"}, "unknown ticket"),
    ({"signed": "yes"}, "unknown key signed"),
])
def test_an_invalid_attestation_does_not_apply_and_says_why(project: Project, overrides: dict[str, Any],
                                                            warning: str) -> None:
    attest(project, **overrides)
    _, data = project.run("--opsready-gate", "none", out="bad")
    assert statuses(data)["P2-002"] == "unverified"
    assert any(warning in w for w in data["attestations"]["warnings"]), data["attestations"]["warnings"]
    page = (project.root / "reports" / "bad" / "index.html").read_text()
    assert "Attestation not applied:" in page


def test_an_action_whose_criteria_did_not_run_is_not_covered(project: Project) -> None:
    """A run of one module of a ticket does not prove the actions of its other modules."""
    project.check("test_p2_002_more.py", "import pytest\npytestmark = [pytest.mark.ticket('P2-002')]\n"
                  "def test_max_age():\n    '''Max-Age is set'''\n")
    with_actions(project, [{"action": "Send preflights", "criteria": ["test_preflight"]},
                           {"action": "Cache preflights", "criteria": ["test_max_age"]}])
    result = project.pytester.runpytest_subprocess(
        str(project.checks / "test_p2_002_cors.py"), "-p", "no:cacheprovider", "--opsready-env", str(project.env),
        "--opsready-root", str(project.root), "--opsready-out", str(project.root / "reports" / "one"),
        "--opsready-gate", "none")
    assert result.ret == 0
    import json

    data = json.loads((project.root / "reports" / "one" / "readiness.json").read_text())
    p2 = ticket(data, "P2-002")
    assert p2["status"] == "unverified"
    cache = next(a for a in p2["actions"] if a["action"] == "Cache preflights")
    assert cache["status"] == "not_covered"
    assert cache["reason"] == "its criteria did not run in this run: test_max_age"


# -- opsready tickets --coverage -------------------------------------------------------------


def test_coverage_lists_actions_with_no_criterion_and_no_attestation(project: Project) -> None:
    with_actions(project, [{"action": "Send preflights", "criteria": ["test_preflight"]},
                           "Tell the studio team",
                           {"action": MANUAL, "manual": True}])
    proc = subprocess.run([*opsready_command(), "tickets", "--coverage", "--root", str(project.root)],
                          capture_output=True, text=True, timeout=120, env=child_env(), check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout.splitlines()
    assert "    Tell the studio team  ->  NO criterion and not manual" in out
    assert f"    {MANUAL}  ->  manual, NO valid attestation in config/attestations.yaml" in out
    assert out[-3:] == ["2 action(s) with no criterion and no attestation:", "    P2-002: Tell the studio team",
                        f"    P2-002: {MANUAL}"]
    attest(project)
    proc = subprocess.run([*opsready_command(), "tickets", "--coverage", "--root", str(project.root)],
                          capture_output=True, text=True, timeout=120, env=child_env(), check=False)
    assert proc.returncode == 1
    assert f"P2-002: {MANUAL}" not in proc.stdout.split("no attestation:")[1]
    assert "manual, attested by dana@example.com on" in proc.stdout


def test_a_malformed_attestation_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "attestations.yaml"
    path.write_text("attestations: {ticket: P2-002}\n")
    catalogue = load_catalogue(ROOT / "config" / "tickets.yaml")
    with pytest.raises(ConfigError, match="attestations: is not a list"):
        load_attestations(path, catalogue, TODAY)
