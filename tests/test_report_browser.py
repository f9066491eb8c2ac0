"""The report as people read it, in real headless Chromium (Debian's package): the verdict line
first, the readiness table with JavaScript disabled under a Jenkins-style Content-Security-
Policy, no console errors, and a printed PDF that opens with the verdict and the table and
keeps the evidence folded."""

from __future__ import annotations

import functools
import http.server
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, child_env, default_plan, write_plan
from headless_chromium import browser, pdf_text, print_to_pdf
from opsready.report.html import verdict_line
from opsready.report.model import Readiness

# Jenkins serves archived HTML with this policy by default: no script runs, no inline style applies.
JENKINS_CSP = "sandbox; default-src 'none'; img-src 'self'; style-src 'self';"
FOLDED = "FOLDED-EVIDENCE-BODY-7f3a"
MODULES = {
    "test_p2_002_cors.py": f"""
import pytest
pytestmark = [pytest.mark.ticket("P2-002")]

def test_preflight(evidence):
    '''Preflights from the allowed origins are answered'''
    evidence.record("headers", {{"access-control-allow-origin": "https://a" + "/x" * 60, "z": "{FOLDED}"}})
    evidence.measure("latency_s", 0.012, "s")

def test_disallowed():
    '''A disallowed origin gets no ACAO'''
    assert False, "ACAO was * for https://evil.example, expected none"
""",
    "test_p2_003_metric.py": """
import pytest
from opsready import ProbeTimeout
pytestmark = [pytest.mark.ticket("P2-003")]

def test_counter():
    '''The breach counter is exposed'''
    raise ProbeTimeout("metrics: no answer in 10 s")
""",
    "test_p3_002_runbooks.py": """
import pytest
pytestmark = [pytest.mark.ticket("P3-002")]

def test_runbooks(evidence):
    '''Runbooks exist'''
    evidence.attach("runbook.md", "# Outage\\n<script>document.title='owned'</script>", "text/markdown")
""",
}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real report with every kind of status, written through the plugin (the real
    tickets without their actions, which name the real checks' criteria)."""
    base = tmp_path_factory.mktemp("browser")
    (base / "config").mkdir()
    catalogue = yaml.safe_load((ROOT / "config" / "tickets.yaml").read_text(encoding="utf-8"))
    for entry in catalogue["tickets"]:
        entry["actions"] = []
    (base / "config" / "tickets.yaml").write_text(yaml.safe_dump(catalogue, sort_keys=False))
    (base / "env.yaml").write_text("")
    checks = base / "checks"
    checks.mkdir()
    for name, body in MODULES.items():
        (checks / name).write_text(body)
        write_plan(checks / name, default_plan(body))
    out = base / "reports" / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(checks), "-p", "no:cacheprovider", "-q", "--opsready-env",
         str(base / "env.yaml"), "--opsready-root", str(base), "--opsready-out", str(out), "--opsready-gate", "P2"],
        cwd=base, capture_output=True, text=True, timeout=300, env=child_env(), check=False,
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def readiness(report: Path) -> Readiness:
    return Readiness.model_validate_json((report / "readiness.json").read_text())


class _CspHandler(http.server.SimpleHTTPRequestHandler):
    def end_headers(self) -> None:
        self.send_header("Content-Security-Policy", JENKINS_CSP)
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def served(report: Path) -> Iterator[str]:
    """The report directory over HTTP on loopback, with Jenkins's policy on every answer."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_CspHandler, directory=str(report)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    finally:
        server.shutdown()
        server.server_close()


def test_the_verdict_line_reads_like_the_issue_says(readiness: Readiness) -> None:
    assert verdict_line(readiness) == "1 of 11 done · 9 unverified · 1 open · gate P2 FAILED"
    counts = readiness.counts.model_copy(update={"done": 8, "unverified": 2, "open": 1})
    gate = readiness.gate.model_copy(update={"priorities": ["P0", "P1"], "passed": True})
    assert verdict_line(readiness.model_copy(update={"counts": counts, "gate": gate})) == (
        "8 of 11 done · 2 unverified · 1 open · gate P0,P1 passed")


def test_badges_carry_their_word_not_colour_alone(report: Path) -> None:
    page = (report / "index.html").read_text()
    table = page[page.index("<h2>Readiness</h2>"):page.index('<div class="report-part">')]
    for status in ("done", "open", "unverified"):
        assert re.search(rf'<span class="badge {status}">[^<]*\b{status}</span>', table), status


def test_the_readiness_table_is_visible_with_javascript_disabled_under_a_jenkins_csp(served: str) -> None:
    with browser() as page:
        page.open(served, javascript=False)
        box = page.box("#opsready table")
        assert box is not None and box[0] > 300 and box[1] > 200, box
        assert page.box("#verdict") is not None
        table = page.outer_html("#opsready table")
        for ticket_id in ("P0-001", "P2-002", "P3-003"):
            assert ticket_id in table
        # The evidence of a criterion unfolds without script, as <details>.
        assert page.box("#opsready details.evidence summary") is not None
        # The policy really applied: the inline style sheet was refused, the page still reads.
        assert any("Content Security Policy" in e or "Content-Security-Policy" in e for e in page.errors())


def test_no_console_errors(report: Path) -> None:
    with browser() as page:
        page.open((report / "index.html").as_uri())
        assert page.errors() == []
        assert page.box("#opsready table") is not None
        # An attached document's markup is shown, never run.
        assert page.send("Runtime.evaluate", {"expression": "document.title"})["result"]["value"] != "owned"


def test_the_printed_pdf_opens_with_the_verdict_and_the_readiness_table(report: Path, readiness: Readiness,
                                                                       tmp_path: Path) -> None:
    pdf = tmp_path / "report.pdf"
    print_to_pdf(report / "index.html", pdf)
    text = pdf_text(pdf)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    assert lines[0] == verdict_line(readiness)
    assert lines[1] == "Readiness"
    assert lines[2].startswith("ticket")
    # The table's rows come next, in catalogue order, before anything else of the report.
    positions = [text.index(t.id) for t in readiness.tickets]
    assert positions == sorted(positions)
    # Then the tickets, then the rest; the pytest-html log is left out.
    assert positions[-1] < text.index("Criteria") < text.index("Gate P2: FAILED")
    assert "Test log" not in text
    # Evidence folded to its summary line: the name shows, the body does not.
    assert "headers:" in text
    assert FOLDED not in text
