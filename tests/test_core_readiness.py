"""What a report claims, through the plugin: what was not checked, passes carried forward
with their age, JUnit from the model, waivers that name their criteria, and the check
authors' shortcuts (pytest.fail, a scalar pytestmark)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import xmlschema

from conftest import Project, criteria, statuses, ticket
from opsready import _clock

pytest_plugins = ["pytester"]

JUNIT_XSD = Path(__file__).resolve().parent / "junit-10.xsd"


@pytest.fixture
def project(pytester: pytest.Pytester) -> Project:
    return Project(pytester)


def _today() -> dt.date:
    return _clock.now().date()


# -- what was not checked ------------------------------------------------------------------

NOT_CHECKED_MODULE = '''
import datetime as dt
import pytest
import opsready

pytestmark = [pytest.mark.ticket("P3-003")]

def test_versioning():
    """Versioning is enabled"""

def test_daily_backups():
    """Daily backups accumulate"""
    opsready.not_covered("14 of 30 days of history", judgeable_from=dt.date(2026, 12, 20))

@pytest.mark.intrusive("restore_drill")
def test_drill():
    """A drill restores the latest backup"""
'''


def test_every_writer_names_what_was_not_checked(project: Project) -> None:
    project.check("test_p3_003_x.py", NOT_CHECKED_MODULE)
    result, data = project.run("--opsready-gate", "none", out="nc")
    assert statuses(data)["P3-003"] == "unverified"
    lines = ticket(data, "P3-003")["not_checked"]
    assert lines[0] == "not checked: Daily backups accumulate (14 of 30 days of history; judgeable from 2026-12-20)"
    assert lines[1].startswith("not checked: A drill restores the latest backup (intrusive probe 'restore_drill'")
    console = result.stdout.str()
    for line in lines:
        assert line in console
    out_dir = project.root / "reports" / "nc"
    page = (out_dir / "index.html").read_text()
    assert "judgeable from 2026-12-20" in page
    assert "not checked: A drill restores the latest backup (intrusive probe &#x27;restore_drill&#x27;" in page
    junit = ET.parse(out_dir / "junit.xml").getroot()
    suite = next(s for s in junit.iter("testsuite") if s.get("package") == "P3-003")
    props = {(p.get("name"), p.get("value")) for p in suite.iter("property")}
    assert ("status", "unverified") in props
    assert ("not_checked", lines[0]) in props


def test_an_error_is_named_as_not_checked(project: Project) -> None:
    project.check("test_p3_003_x.py", "import pytest\nfrom opsready import ProbeTimeout\n"
                  "pytestmark = pytest.mark.ticket('P3-003')\n"
                  "def test_a():\n    '''Versioning is enabled'''\n"
                  "    raise ProbeTimeout('S3 did not answer in 10 s')\n")
    _, data = project.run("--opsready-gate", "none")
    assert ticket(data, "P3-003")["not_checked"] == [
        "not checked: Versioning is enabled (could not judge: S3 did not answer in 10 s)"]


# -- check authors' shortcuts --------------------------------------------------------------


def test_pytest_fail_is_a_fail_and_a_scalar_pytestmark_is_accepted(project: Project) -> None:
    project.check("test_p2_002_x.py", """
        import pytest
        pytestmark = pytest.mark.ticket("P2-002")

        def test_fails():
            '''Preflight allows the origin'''
            pytest.fail("Access-Control-Allow-Origin was '*', expected the origin itself")

        def test_holds():
            '''A disallowed origin is refused'''
    """)
    result, data = project.run("--opsready-gate", "none")
    assert result.ret == 0, result.stdout.str()
    crit = criteria(data, "P2-002")
    assert crit["test_fails"]["outcome"] == "fail"
    assert crit["test_fails"]["message"] == "Access-Control-Allow-Origin was '*', expected the origin itself"
    assert crit["test_holds"]["outcome"] == "pass"
    assert statuses(data)["P2-002"] == "open"


# -- waivers name their criteria -----------------------------------------------------------

WAIVED_MODULE = """
import pytest
pytestmark = [pytest.mark.ticket("P3-003")]

def test_versioning():
    '''Versioning is enabled'''
    assert False, "versioning is Suspended"

@pytest.mark.parametrize("rule", ["daily", "weekly"])
def test_lifecycle(rule):
    '''A lifecycle rule keeps backups'''
    assert {broken}, f"rule {{rule}} is missing"

def test_encryption():
    '''Default encryption is on'''
"""


def _waiver(**extra: object) -> dict[str, object]:
    return {"ticket": "P3-003", "reason": "bucket migration in progress", "requested_by": "ana",
            "approved_by": "ben", "expires": (_today() + dt.timedelta(days=30)).isoformat(), **extra}


def test_a_ticket_waiver_covers_only_the_criteria_it_names(project: Project) -> None:
    project.check("test_p3_003_x.py", WAIVED_MODULE.format(broken="True"))
    project.waivers([_waiver(criteria=["test_versioning"])])
    _, data = project.run("--opsready-gate", "P3")
    assert statuses(data)["P3-003"] == "waived"
    assert data["waivers"]["applied"][0]["criteria"] == ["test_versioning"]
    # After the approval, another criterion of the same ticket starts failing: it is not
    # waived, and the ticket is open again.
    project.check("test_p3_003_x.py", WAIVED_MODULE.format(broken="rule == 'daily'"))
    result, data = project.run("--opsready-gate", "P3")
    crit = criteria(data, "P3-003")
    assert crit["test_versioning"]["outcome"] == "waived"
    assert crit["test_lifecycle[weekly]"]["outcome"] == "fail"
    assert statuses(data)["P3-003"] == "open"
    assert result.ret == 1
    # Naming the test without its parameter covers every parametrization.
    project.waivers([_waiver(criteria=["test_versioning", "P3-003::test_lifecycle"])])
    _, data = project.run("--opsready-gate", "P3")
    assert statuses(data)["P3-003"] == "waived"


@pytest.mark.parametrize(
    ("entry", "warning"),
    [({}, "a ticket waiver must list the failing criteria it accepts"),
     ({"criteria": ["P2-002::test_versioning"]}, "belongs to P2-002, not P3-003"),
     ({"criterias": ["test_versioning"]}, "unknown key criterias"),
     ({"criteria": ["test_nope"]}, "names test_nope, which is not a criterion of P3-003"),
     ({"ticket": None, "criterion": "P3-003::test_versioning_enabled"},
      "names test_versioning_enabled, which is not a criterion of P3-003")],
    ids=["no-criteria", "other-ticket", "typo-key", "unknown-criterion", "unknown-criterion-waiver"],
)
def test_a_malformed_ticket_waiver_waives_nothing_and_says_so(project: Project, entry: dict[str, object],
                                                               warning: str) -> None:
    project.check("test_p3_003_x.py", WAIVED_MODULE.format(broken="True"))
    project.waivers([{k: v for k, v in _waiver(**entry).items() if v is not None}])
    result, data = project.run("--opsready-gate", "P3")
    assert statuses(data)["P3-003"] == "open"
    assert warning in " | ".join(data["waivers"]["warnings"])
    assert warning in result.stdout.str()


# -- JUnit from the model ------------------------------------------------------------------

JUNIT_MODULE = '''
import pytest
import opsready
from opsready import TargetUnreachable

pytestmark = [pytest.mark.ticket("P2-002")]

def test_pass():
    """It holds"""

def test_fail():
    """It does not hold"""
    assert False, "header X was 'y', expected 'z' \\x1b[31m"

def test_error():
    """The target cannot be reached"""
    raise TargetUnreachable("service: connection refused")

def test_skip():
    """Not looked at"""
    opsready.not_covered("not configured: cors")

def test_waived():
    """Accepted for now"""
    assert False, "credentials are off"
'''


def test_junit_tells_fail_error_skip_and_waived_apart(project: Project) -> None:
    project.check("test_p2_002_x.py", JUNIT_MODULE)
    project.waivers([_waiver(ticket="P2-002", criteria=["test_waived"])])
    _, data = project.run("--opsready-gate", "none", out="junit")
    path = project.root / "reports" / "junit" / "junit.xml"
    xmlschema.XMLSchema(JUNIT_XSD).validate(path)
    root = ET.parse(path).getroot()
    assert len(root.findall(".//failure")) == 1
    assert len(root.findall(".//error")) == 1
    skipped = root.findall(".//skipped")
    assert len(skipped) == 2
    assert {s.get("type") for s in skipped} == {"not_covered", "waived"}
    waived = next(s for s in skipped if s.get("type") == "waived")
    assert "approved by ben" in (waived.get("message") or "")
    assert "not configured: cors" in next(s for s in skipped if s.get("type") == "not_covered").get("message", "")
    # One test suite per ticket, its status a property.
    suites = {s.get("package"): s for s in root.iter("testsuite")}
    assert set(suites) == {t["id"] for t in data["tickets"]}
    status = {p.get("name"): p.get("value") for p in suites["P2-002"].iter("property")}["status"]
    assert status == statuses(data)["P2-002"] == "open"
    assert suites["P2-002"].get("tests") == "5"
    assert suites["P2-002"].get("skipped") == "2"
    assert root.get("errors") == "1" and root.get("failures") == "1"


# -- carry-forward -------------------------------------------------------------------------

DRILL_MODULE = '''
import pytest
import opsready

pytestmark = [pytest.mark.ticket("P1-002")]

def test_backup_fresh():
    """The latest backup is fresh"""

@pytest.mark.intrusive("restore_drill")
def test_drill(evidence):
    """A drill restores the latest backup"""
    evidence.measure("rto_seconds", 41.5, "s")

def test_breach_counted(intrusive_allowed):
    """A breach is counted"""
    if not intrusive_allowed("rate_limit_burst"):
        opsready.not_covered("intrusive probe 'rate_limit_burst' is not allowed, and no breach was found")
'''
ALL = ("--opsready-allow-intrusive", "restore_drill", "--opsready-allow-intrusive", "rate_limit_burst")
NONE = ("--opsready-allow-intrusive", "none")


def test_a_fresh_pass_is_carried_forward_with_its_age(project: Project) -> None:
    project.check("test_p1_002_x.py", DRILL_MODULE)
    _, first = project.run("--opsready-gate", "none", *ALL, out="monthly")
    assert statuses(first)["P1-002"] == "done"
    result, nightly = project.run("--opsready-gate", "none", *NONE, out="nightly")
    assert result.ret == 0, result.stdout.str()
    assert statuses(nightly)["P1-002"] == "done"
    crit = criteria(nightly, "P1-002")
    drill = crit["test_drill"]
    assert drill["outcome"] == "pass"
    today = _today().isoformat()
    assert drill["message"] == f"passed {today} (today, carried forward from run monthly)"
    carried = drill["carried_forward"]
    assert (carried["run_id"], carried["age_days"], carried["window_days"], carried["probe"]) == \
        ("monthly", 0, 31, "restore_drill")
    assert carried["report"] == "../monthly/index.html"
    assert "restore_drill" in carried["not_run_because"]
    # A measure is of the run that measured it: the carried criterion brings no evidence.
    assert drill["evidence"] == []
    # The fixture-gated criterion is carried with the rate-limit burst's 7-day window.
    assert crit["test_breach_counted"]["carried_forward"]["window_days"] == 7
    assert crit["test_backup_fresh"]["carried_forward"] is None
    line = f"passed {today} (today, carried forward from run monthly): A drill restores the latest backup"
    assert line in ticket(nightly, "P1-002")["carried_forward"]
    assert line in result.stdout.str()
    out_dir = project.root / "reports" / "nightly"
    page = (out_dir / "index.html").read_text()
    assert f"passed {today} (today, carried forward from run monthly)" in page
    assert 'href="../monthly/index.html#ticket-P1-002"' in page
    assert "opsready_carried_forward_timestamp_seconds" in (out_dir / "readiness.prom").read_text()
    assert "opsready_evidence_measure" not in (out_dir / "readiness.prom").read_text()

    # A pass that was itself carried forward is never carried again; the clock moved to the
    # last day of the window still carries the monthly pass, one day later it is stale.
    base = _today()
    monkey = pytest.MonkeyPatch()
    try:
        monkey.setenv("OPSREADY_TODAY", (base + dt.timedelta(days=31)).isoformat())
        _, edge = project.run("--opsready-gate", "none", *NONE, out="edge")
        assert statuses(edge)["P1-002"] == "unverified"  # the 7-day burst window has passed
        assert criteria(edge, "P1-002")["test_drill"]["carried_forward"]["age_days"] == 31
        assert edge["run"]["clock_moved_to"] == (base + dt.timedelta(days=31)).isoformat()
        monkey.setenv("OPSREADY_TODAY", (base + dt.timedelta(days=32)).isoformat())
        result, stale = project.run("--opsready-gate", "P1", *NONE, out="stale")
    finally:
        monkey.undo()
    assert result.ret == 1
    assert statuses(stale)["P1-002"] == "unverified"
    drill = criteria(stale, "P1-002")["test_drill"]
    assert (drill["outcome"], drill["skip_kind"], drill["carried_forward"]) == ("skip", "not_covered", None)
    assert "no intact earlier pass within the 31-day window (freshness_days.restore_drill)" in drill["message"]
    assert any("A drill restores the latest backup" in line for line in ticket(stale, "P1-002")["not_checked"])


def test_a_tampered_earlier_bundle_is_not_carried_forward(project: Project) -> None:
    project.check("test_p1_002_x.py", DRILL_MODULE)
    project.run("--opsready-gate", "none", *ALL, out="monthly")
    earlier = project.root / "reports" / "monthly" / "readiness.json"
    earlier.write_text(earlier.read_text().replace('"duration_s": ', '"duration_s":  ', 1))
    _, nightly = project.run("--opsready-gate", "none", *NONE, out="nightly")
    assert statuses(nightly)["P1-002"] == "unverified"
    drill = criteria(nightly, "P1-002")["test_drill"]
    assert drill["outcome"] == "skip"
    assert "run monthly is not used: its bundle fails verify-bundle (changed: readiness.json)" in drill["message"]


def test_a_signing_environment_carries_only_passes_its_own_key_signed(
        project: Project, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    from opsready.report.manifest import write_manifest
    from opsready.report.signing import KEY_FILE_VARIABLE, generate_key_pair

    keys = tmp_path_factory.mktemp("keys")
    ours, _, _ = generate_key_pair(keys / "ours")
    theirs, _, _ = generate_key_pair(keys / "theirs")
    project.check("test_p1_002_x.py", DRILL_MODULE)
    # Earlier passes: one from before signing was set up, one signed with another key.
    project.run("--opsready-gate", "none", *ALL, out="unsigned")
    monkeypatch.setenv(KEY_FILE_VARIABLE, str(theirs))
    project.run("--opsready-gate", "none", *ALL, out="theirs")
    monkeypatch.setenv(KEY_FILE_VARIABLE, str(ours))
    _, nightly = project.run("--opsready-gate", "none", *NONE, out="nightly")
    assert statuses(nightly)["P1-002"] == "unverified"
    drill = criteria(nightly, "P1-002")["test_drill"]
    assert drill["outcome"] == "skip" and drill["carried_forward"] is None
    assert "run unsigned is not used: this run signs with key SHA256:" in drill["message"]
    assert "MANIFEST.sha256.sig is missing" in drill["message"]
    assert "run theirs is not used" in drill["message"] and "was made with key" in drill["message"]

    # A pass signed with this run's key is carried.
    project.run("--opsready-gate", "none", *ALL, out="ours")
    _, later = project.run("--opsready-gate", "none", *NONE, out="later")
    assert statuses(later)["P1-002"] == "done"
    assert criteria(later, "P1-002")["test_drill"]["carried_forward"]["run_id"] == "ours"

    # Whoever can write the reports directory can forge a pass and hash it again; the
    # signature then no longer holds, and nothing is carried.
    forged = project.root / "reports" / "ours"
    data = json.loads((forged / "readiness.json").read_text())
    for crit in (c for t in data["tickets"] for c in t["criteria"]):
        crit["message"] = "forged"
    (forged / "readiness.json").write_text(json.dumps(data))
    write_manifest(forged)
    for name in ("nightly", "later"):
        shutil.rmtree(project.root / "reports" / name)
    _, after = project.run("--opsready-gate", "none", *NONE, out="after")
    assert statuses(after)["P1-002"] == "unverified"
    message = criteria(after, "P1-002")["test_drill"]["message"]
    assert "run ours is not used" in message and "does not verify" in message, message


def test_nothing_is_carried_across_environments(project: Project) -> None:
    project.check("test_p1_002_x.py", DRILL_MODULE)
    project.env.write_text("name: staging\n")
    project.run("--opsready-gate", "none", *ALL, out="staging")
    project.env.write_text("name: production\n")
    _, prod = project.run("--opsready-gate", "none", *NONE, out="production")
    assert statuses(prod)["P1-002"] == "unverified"
    assert "no intact earlier pass within the 31-day window" in criteria(prod, "P1-002")["test_drill"]["message"]


def test_a_zero_window_turns_carry_forward_off(project: Project) -> None:
    project.check("test_p1_002_x.py", DRILL_MODULE)
    project.env.write_text("freshness_days:\n  restore_drill: 0\n")
    project.run("--opsready-gate", "none", *ALL)
    _, data = project.run("--opsready-gate", "none", *NONE)
    crit = criteria(data, "P1-002")
    assert crit["test_drill"]["outcome"] == "skip"
    assert "carry-forward is off for restore_drill" in crit["test_drill"]["message"]
    assert crit["test_breach_counted"]["outcome"] == "pass"


def test_a_bad_clock_override_is_a_usage_error(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    project.check("test_p1_002_x.py", DRILL_MODULE)
    monkeypatch.setenv("OPSREADY_TODAY", "next tuesday")
    result, _ = project.run("--opsready-gate", "none")
    assert result.ret == 4
    assert "OPSREADY_TODAY: value 'next tuesday' is not a YYYY-MM-DD date" in result.stderr.str()
