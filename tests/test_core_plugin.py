"""The readiness plugin through pytester: outcomes, roll-up, gate, waivers, collection rules,
xdist parity, the diff and redaction."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from conftest import Project, criteria, statuses
from opsready.report.model import rollup

pytest_plugins = ["pytester"]


@pytest.fixture
def project(pytester: pytest.Pytester) -> Project:
    return Project(pytester)


OUTCOMES_MODULE = """
import pytest
from opsready import TargetUnreachable

pytestmark = [pytest.mark.ticket("P2-002")]

@pytest.fixture
def broken():
    raise TargetUnreachable("service: GET http://127.0.0.1:1/ could not be reached")

def test_pass(evidence):
    '''It holds.'''
    evidence.record("seen", {"a": 1})

def test_fail():
    '''It does not hold.'''
    assert False, "header X was 'y', expected 'z'"

def test_probe_error():
    '''The target cannot be reached.'''
    raise TargetUnreachable("service: connection refused")

def test_bug():
    '''The check itself is broken.'''
    {}["missing"]

def test_setup_error(broken):
    '''A fixture could not reach the target.'''

def test_skip():
    '''Not applicable here.'''
    pytest.skip("not configured: cors")
"""


def test_rollup_rules_in_design_order() -> None:
    assert rollup(["pass", "fail", "error", "waived"]) == "open"
    assert rollup(["pass", "error"]) == "unverified"
    assert rollup(["skip", "skip"]) == "unverified"
    assert rollup([]) == "unverified"
    assert rollup(["pass", "waived", "skip"]) == "waived"
    assert rollup(["waived"]) == "waived"
    # A not-applicable skip is neutral; a not-covered one keeps the ticket from done.
    assert rollup(["pass", "skip"]) == "done"
    assert rollup(["pass", "skip"], not_covered=1) == "unverified"
    assert rollup(["pass", "fail", "skip"], not_covered=1) == "open"


SKIP_KINDS_MODULE = '''
import datetime as dt
import pytest
import opsready

pytestmark = [pytest.mark.ticket("P1-002")]

def test_pass():
    """It holds."""

def test_not_applicable():
    """Credentials are checked."""
    opsready.not_applicable("cors.credentials is false: the platform sends no credentials")

def test_too_young():
    """Daily backups accumulate."""
    opsready.not_covered("14 of 30 days of history", judgeable_from=dt.date(2026, 12, 20))

def test_plain_skip():
    """A plain pytest.skip."""
    pytest.skip("for some reason")

@pytest.mark.intrusive("restore_drill")
def test_drill():
    """A drill restores the latest backup."""
'''


@pytest.mark.parametrize(
    ("names", "expected"),
    [(["test_pass", "test_not_applicable"], "done"),
     (["test_pass", "test_not_applicable", "test_too_young"], "unverified"),
     (["test_pass", "test_plain_skip"], "unverified"),
     (["test_pass", "test_drill"], "unverified")],
    ids=["not-applicable-is-neutral", "not-covered", "plain-skip-is-not-covered", "intrusive-not-allowed"],
)
def test_skip_kinds_in_the_rollup(project: Project, names: list[str], expected: str) -> None:
    project.check("test_p1_002_x.py", SKIP_KINDS_MODULE)
    project.env.write_text("allow_intrusive: []\n")
    _, data = project.run("--opsready-gate", "none", "-k", " or ".join(names))
    ticket = next(t for t in data["tickets"] if t["id"] == "P1-002")
    assert ticket["status"] == expected, ticket
    crit = criteria(data, "P1-002")
    if "test_not_applicable" in names:
        assert crit["test_not_applicable"]["skip_kind"] == "not_applicable"
    if expected == "unverified":
        # The ticket names what was not checked, and why.
        assert ticket["not_checked"], ticket
    if "test_too_young" in names:
        assert crit["test_too_young"]["skip_kind"] == "not_covered"
        assert crit["test_too_young"]["judgeable_from"] == "2026-12-20"
        assert "judgeable from 2026-12-20" in " ".join(ticket["not_checked"])
    if "test_drill" in names:
        assert crit["test_drill"]["skip_kind"] == "not_covered"
        assert any("A drill restores the latest backup" in line and "restore_drill" in line
                   and "not allowed" in line for line in ticket["not_checked"]), ticket


def test_every_outcome_is_classified(project: Project) -> None:
    project.check("test_p2_002_outcomes.py", OUTCOMES_MODULE)
    result, data = project.run("--opsready-gate", "none")
    assert result.ret == 0, result.stdout.str()
    crit = criteria(data, "P2-002")
    assert crit["test_pass"]["outcome"] == "pass"
    assert crit["test_pass"]["title"] == "It holds."
    assert crit["test_pass"]["evidence"] == [{"name": "seen", "kind": "value", "value": {"a": 1}}]
    assert crit["test_fail"]["outcome"] == "fail"
    assert crit["test_fail"]["message"] == "header X was 'y', expected 'z'"
    assert crit["test_probe_error"]["outcome"] == "error"
    assert "connection refused" in crit["test_probe_error"]["message"]
    assert crit["test_bug"]["outcome"] == "error"
    assert "KeyError" in crit["test_bug"]["message"]
    assert crit["test_setup_error"]["outcome"] == "error"
    assert "during setup" in crit["test_setup_error"]["message"]
    assert crit["test_skip"]["outcome"] == "skip"
    assert crit["test_skip"]["message"] == "not configured: cors"
    assert statuses(data)["P2-002"] == "open"
    assert data["schema"] == "opsready.readiness/v1"
    assert {"criterion": "P2-002::test_skip", "kind": "not_covered",
            "reason": "not configured: cors"} in data["scope"]["skipped"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("def test_a():\n    '''a'''\n", "done"),
        ("from opsready import ProbeTimeout\ndef test_a():\n    '''a'''\n    raise ProbeTimeout('slow')\n"
         "def test_b():\n    '''b'''\n", "unverified"),
        ("import pytest\ndef test_a():\n    '''a'''\n    pytest.skip('n/a')\n", "unverified"),
    ],
    ids=["done", "error-is-unverified", "all-skipped-is-unverified"],
)
def test_ticket_rollup_through_the_plugin(project: Project, body: str, expected: str) -> None:
    project.check("test_p3_002_x.py", "import pytest\npytestmark = [pytest.mark.ticket('P3-002')]\n" + body)
    _, data = project.run("--opsready-gate", "none")
    assert statuses(data)["P3-002"] == expected
    # Every other catalogued ticket has no module: unverified, with the reason.
    other = next(t for t in data["tickets"] if t["id"] == "P0-001")
    assert other["status"] == "unverified"
    assert "no automated check" in other["note"]


def test_gate_exit_codes(project: Project) -> None:
    project.check("test_p0_001_x.py", "import pytest\npytestmark = [pytest.mark.ticket('P0-001')]\n"
                  "def test_a():\n    '''a'''\n")
    project.check("test_p1_002_x.py", "import pytest\npytestmark = [pytest.mark.ticket('P1-002')]\n"
                  "def test_a():\n    '''a'''\n    assert False, 'backup is 40 h old, expected < 26 h'\n")
    assert project.run("--opsready-gate", "P0")[0].ret == 0
    result, data = project.run("--opsready-gate", "P0,P1")
    assert result.ret == 1
    assert data["gate"] == {"priorities": ["P0", "P1"], "passed": False, "blocking": ["P1-002", "P1-003", "P1-004"]}
    assert project.run("--opsready-gate", "none")[0].ret == 0
    # The environment's own gate applies when no --gate is given.
    project.env.write_text("gate: [P0]\n")
    assert project.run()[0].ret == 0


def test_waivers(project: Project) -> None:
    project.check("test_p3_003_x.py", "import pytest\npytestmark = [pytest.mark.ticket('P3-003')]\n"
                  "def test_a():\n    '''a'''\n    assert False, 'versioning is Suspended'\n"
                  "def test_b():\n    '''b'''\n")
    today = dt.date.today()
    valid = {"ticket": "P3-003", "criteria": ["test_a"], "reason": "bucket migration in progress",
             "requested_by": "ana", "approved_by": "ben", "expires": (today + dt.timedelta(days=30)).isoformat()}
    project.waivers([valid])
    _, data = project.run("--opsready-gate", "P3")
    assert statuses(data)["P3-003"] == "waived"
    assert "P3-003" not in data["gate"]["blocking"]
    assert criteria(data, "P3-003")["test_a"]["waiver"]["approved_by"] == "ben"

    expired = {**valid, "expires": (today - dt.timedelta(days=1)).isoformat()}
    self_approved = {**valid, "approved_by": "Ana"}
    unknown = {**valid, "ticket": "P9-999"}
    project.waivers([expired, self_approved, unknown])
    result, data = project.run("--opsready-gate", "P3")
    assert result.ret == 1
    assert statuses(data)["P3-003"] == "open"
    assert "P3-003" in data["gate"]["blocking"]
    warnings = " | ".join(data["waivers"]["warnings"])
    assert "expired on" in warnings
    assert "approved_by is the requester" in warnings
    assert "unknown ticket" in warnings
    assert "waiver not applied" in result.stdout.str()
    # Waivers expiring within 14 days show in the diff.
    project.waivers([{**valid, "expires": (today + dt.timedelta(days=3)).isoformat()}])
    _, data = project.run("--opsready-gate", "P3")
    assert [w["target"] for w in data["diff"]["expiring_waivers"]] == ["P3-003"]


@pytest.mark.parametrize(
    ("name", "body", "fragment"),
    [
        ("test_cors.py", "import pytest\npytestmark = [pytest.mark.ticket('P2-002')]\ndef test_a(): pass\n",
         "carries no ticket id"),
        ("test_p2_002_x.py", "def test_a(): pass\n", "no ticket marker"),
        ("test_p2_002_y.py", "import pytest\npytestmark = [pytest.mark.ticket('P2-003')]\ndef test_a(): pass\n",
         "the marker says P2-003 but the file name says P2-002"),
        ("test_p2_009_z.py", "import pytest\npytestmark = [pytest.mark.ticket('P2-009')]\ndef test_a(): pass\n",
         "is not in the catalogue"),
    ],
    ids=["no-id-in-name", "no-marker", "mismatch", "unknown-id"],
)
def test_collection_rules(project: Project, name: str, body: str, fragment: str) -> None:
    project.check(name, body)
    result, _ = project.run("--opsready-gate", "none")
    assert result.ret == 4
    assert fragment in result.stdout.str()
    assert name in result.stdout.str()


def test_intrusive_probe_skips_with_reason_unless_allowed(project: Project) -> None:
    project.check("test_p2_003_x.py", "import pytest\npytestmark = [pytest.mark.ticket('P2-003')]\n"
                  "@pytest.mark.intrusive('rate_limit_burst')\ndef test_a():\n    '''a'''\n"
                  "def test_b():\n    '''b'''\n")
    _, data = project.run("--opsready-gate", "none")
    skipped = criteria(data, "P2-003")["test_a"]
    assert skipped["outcome"] == "skip"
    assert "intrusive probe 'rate_limit_burst'" in skipped["message"]
    assert "allow_intrusive" in skipped["message"]
    _, data = project.run("--opsready-gate", "none", "--opsready-allow-intrusive", "rate_limit_burst")
    assert criteria(data, "P2-003")["test_a"]["outcome"] == "pass"
    project.env.write_text("allow_intrusive: [rate_limit_burst]\n")
    _, data = project.run("--opsready-gate", "none")
    assert criteria(data, "P2-003")["test_a"]["outcome"] == "pass"


def test_ticket_selection(project: Project) -> None:
    project.check("test_p2_002_outcomes.py", OUTCOMES_MODULE)
    project.check("test_p3_002_x.py", "import pytest\npytestmark = [pytest.mark.ticket('P3-002')]\n"
                  "def test_a():\n    '''a'''\n")
    _, data = project.run("--opsready-gate", "none", "--opsready-ticket", "P3-002")
    assert statuses(data)["P3-002"] == "done"
    p2 = next(t for t in data["tickets"] if t["id"] == "P2-002")
    assert p2["status"] == "unverified"
    assert p2["note"] == "not selected in this run (--ticket)"


def test_xdist_gives_the_same_tickets(project: Project) -> None:
    project.check("test_p2_002_outcomes.py", OUTCOMES_MODULE)
    project.check("test_p3_002_x.py", "import pytest\npytestmark = [pytest.mark.ticket('P3-002')]\n"
                  "def test_a(evidence):\n    '''a'''\n    evidence.attach('doc.md', '# hi', 'text/markdown')\n")
    _, serial = project.run("--opsready-gate", "none", "-p", "no:xdist")
    _, parallel = project.run("--opsready-gate", "none", "-n", "2")

    def comparable(data: dict[str, Any]) -> list[Any]:
        return [
            (t["id"], t["status"], t["passed"], t["total"],
             sorted((c["id"], c["outcome"], c["message"], json.dumps(c["evidence"])) for c in t["criteria"]))
            for t in data["tickets"]
        ]

    assert comparable(serial) == comparable(parallel)


def test_diff_against_the_previous_run(project: Project) -> None:
    ok = "import pytest\npytestmark = [pytest.mark.ticket('{t}')]\ndef test_a():\n    '''a'''\n"
    bad = ok + "    assert False, 'nope'\n"
    project.check("test_p2_002_a.py", ok.format(t="P2-002"))
    project.check("test_p2_003_a.py", bad.format(t="P2-003"))
    project.check("test_p2_004_a.py", bad.format(t="P2-004"))
    result, first = project.run("--opsready-gate", "none")
    assert first["diff"]["previous_run"] is None
    project.check("test_p2_002_a.py", bad.format(t="P2-002"))
    project.check("test_p2_003_a.py", ok.format(t="P2-003"))
    result, second = project.run("--opsready-gate", "none")
    diff = second["diff"]
    assert diff["previous_run"] == "run1"
    assert diff["regressed"] == ["P2-002"]
    assert diff["newly_done"] == ["P2-003"]
    assert diff["still_open"] == ["P2-004"]
    history = (project.root / "reports" / "history.jsonl").read_text().splitlines()
    assert len(history) == 2
    assert (project.root / "reports" / "latest").resolve() == (project.root / "reports" / "run2").resolve()
    # --fail-on-regression turns a regression into exit 1 even when the gate passes.
    result, _ = project.run("--opsready-gate", "none", "--opsready-fail-on-regression")
    assert result.ret == 0  # P2-002 was already open in run2: no new regression
    project.check("test_p2_003_a.py", bad.format(t="P2-003"))
    result, third = project.run("--opsready-gate", "none", "--opsready-fail-on-regression")
    assert third["diff"]["regressed"] == ["P2-003"]
    assert result.ret == 1


CANARY = "canary-s3cr3t-7f3a9c21e4"


def test_a_canary_secret_reaches_no_output(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSREADY_TEST_TOKEN", CANARY)
    project.env.write_text(
        "service:\n  base_url: http://127.0.0.1:9\n  api_key: ${OPSREADY_TEST_TOKEN}\n"
        "grafana:\n  url: http://127.0.0.1:9\n  token: " + CANARY + "x\n"
    )
    project.check("test_p2_002_leak.py", """
import pytest
pytestmark = [pytest.mark.ticket("P2-002")]

def test_leaky(evidence, opsready_env):
    '''A check that tries hard to leak.'''
    key = opsready_env.service.api_key.get_secret_value()
    print("stdout:", key)
    evidence.record("headers", {"X-Custom": key, "url": "postgresql://u:" + key + "@db/x"})
    evidence.attach("log.txt", "token " + key)
    assert key == "other", f"key was {key}"

def test_dsn_and_token_shapes(evidence):
    '''Shapes of secrets that were never configured.'''
    evidence.record("dsn", "postgresql://admin:hunter2hunter2@db:5432/relay")
    evidence.record("gh", "ghp_abcdefghijklmnopqrstuvwxyz0123456789")
    evidence.record("hdr", {"Authorization": "Bearer abc.def.ghi", "X-API-Key": "short"})
""")
    result, data = project.run("--opsready-gate", "none", out="leak")
    out_dir = project.root / "reports" / "leak"
    outputs = {
        "console": result.stdout.str() + result.stderr.str(),
        "json": (out_dir / "readiness.json").read_text(),
        "html": (out_dir / "index.html").read_text(),
        "junit": (out_dir / "junit.xml").read_text(),
    }
    for name, text in outputs.items():
        assert CANARY not in text, f"the canary secret leaked into the {name} output"
        assert "hunter2hunter2" not in text, f"a DSN password leaked into the {name} output"
        assert "ghp_abcdefghijklmnopqrstuvwxyz0123456789" not in text, f"a GitHub token leaked into {name}"
    crit = criteria(data, "P2-002")["test_leaky"]
    assert crit["outcome"] == "fail"
    assert "[redacted]" in json.dumps(crit)
    assert "abc.def.ghi" not in outputs["json"]


def test_html_report_opens_with_the_readiness_table(project: Project) -> None:
    project.check("test_p2_002_outcomes.py", OUTCOMES_MODULE.replace(
        "evidence.record(\"seen\", {\"a\": 1})", "evidence.record(\"seen\", \"<script>alert(1)</script>\")"))
    project.run("--opsready-gate", "none", out="html")
    page = (project.root / "reports" / "html" / "index.html").read_text()
    body = page[page.index("<body>"):]
    assert body.index('id="opsready"') < body.index("<h1")
    section = body[body.index('id="opsready"'):body.index("Test log")]
    assert "<h2>Readiness</h2>" in section
    headings = ["<h2>Readiness</h2>", "<h2>Gate</h2>", "<h2>Run</h2>", "<h2>Waivers</h2>", "<h2>Criteria</h2>"]
    positions = [section.index(h) for h in headings]
    assert positions == sorted(positions)
    assert "<script>alert(1)</script>" not in section
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in section
    assert "http" not in page.split("<style", 1)[0].lower().replace("http-equiv", "")  # nothing loaded from outside


def test_a_ticket_subset_run_does_not_regress_the_others(project: Project) -> None:
    ok = "import pytest\npytestmark = [pytest.mark.ticket('{t}')]\ndef test_a():\n    '''a'''\n"
    project.check("test_p2_002_a.py", ok.format(t="P2-002"))
    project.check("test_p2_003_a.py", ok.format(t="P2-003"))
    project.run("--opsready-gate", "none")
    result, subset = project.run("--opsready-gate", "none", "--opsready-ticket", "P2-002",
                                 "--opsready-fail-on-regression")
    assert subset["diff"]["regressed"] == []
    assert result.ret == 0
    # The next full run compares P2-003 with the last run that judged it (the first one).
    project.check("test_p2_003_a.py", ok.format(t="P2-003") + "    assert False, 'broken'\n")
    _, full = project.run("--opsready-gate", "none")
    assert full["diff"]["regressed"] == ["P2-003"]


def test_an_interrupted_run_exits_2_and_still_writes_its_report(project: Project) -> None:
    project.check("test_p2_002_a.py", "import pytest\npytestmark = [pytest.mark.ticket('P2-002')]\n"
                  "def test_a():\n    '''a'''\n"
                  "def test_b():\n    '''b'''\n    raise KeyboardInterrupt\n")
    result, data = project.run("--opsready-gate", "none")
    assert result.ret == 2
    assert data["run"]["interrupted"] is True
    assert criteria(data, "P2-002")["test_a"]["outcome"] == "pass"


def test_readiness_metrics_are_pushed_to_a_pushgateway(project: Project) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    received: list[tuple[str, str, bytes]] = []

    class Gateway(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append((self.command, self.path, body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        project.check("test_p2_002_a.py", "import pytest\npytestmark = [pytest.mark.ticket('P2-002')]\n"
                      "def test_a():\n    '''a'''\n")
        url = f"http://127.0.0.1:{server.server_port}"
        result, _ = project.run("--opsready-gate", "none", "--opsready-pushgateway", url)
        assert result.ret == 0
    finally:
        server.shutdown()
    assert len(received) == 1
    method, path, body = received[0]
    assert method == "PUT"
    assert path.startswith("/metrics/job/opsready")
    assert b'opsready_ticket_status{env="env",ticket="P2-002",priority="P2",status="done"} 1' in body


def test_long_criteria_are_reported_while_they_run(project: Project) -> None:
    project.check("test_p1_002_slow.py", "import time, pytest\npytestmark = [pytest.mark.ticket('P1-002')]\n"
                  "@pytest.mark.intrusive('restore_drill')\n"
                  "def test_drill():\n    '''A long drill.'''\n    time.sleep(2.5)\n")
    result, _ = project.run("--opsready-gate", "none", "--opsready-allow-intrusive", "restore_drill",
                            "-n", "1", "--opsready-heartbeat", "1")
    assert "[opsready] still running after" in result.stdout.str()
    assert "test_p1_002_slow.py::test_drill" in result.stdout.str()
    result, _ = project.run("--opsready-gate", "none", "--opsready-allow-intrusive", "restore_drill",
                            "-p", "no:xdist")
    assert "[opsready] P1-002: running the intrusive probe 'restore_drill' (A long drill.)" in result.stdout.str()


def test_heartbeat_names_only_the_slow_criteria() -> None:
    from opsready._progress import Heartbeat

    now = [100.0]
    beat = Heartbeat(lambda line: None, interval=10, clock=lambda: now[0])
    beat.started("a")
    now[0] = 105
    beat.started("b")
    now[0] = 112
    assert beat.due() == ["[opsready] still running after 12s: a"]
    beat.finished("a")
    now[0] = 120
    assert beat.due() == ["[opsready] still running after 15s: b"]
