"""Earned "done" on the reference stack: a read-only run says what it did not check; passes
of the intrusive probes carry forward while fresh, and stop at the end of their window or when
the earlier bundle was altered. The written files validate against their schemas."""

from __future__ import annotations

import datetime as dt
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest
import xmlschema

from conftest import ROOT, StartedStack, VerifyResult, run_verify
from opsready import _clock
from opsready.config import INTRUSIVE_PROBES

pytestmark = [pytest.mark.stack]

SERIAL = ("-n", "0")
# The tickets whose defining criteria need an intrusive probe (DESIGN §5).
DRILLED = ("P1-002", "P1-003", "P1-004")
READ_ONLY: list[str] = []


def _ticket(result: VerifyResult, ticket_id: str) -> dict[str, object]:
    return next(t for t in result.readiness["tickets"] if t["id"] == ticket_id)


def test_a_read_only_run_names_what_it_did_not_check(stack: StartedStack, tmp_path: Path) -> None:
    result = run_verify(stack, tmp_path, *SERIAL, allow_intrusive=READ_ONLY)
    assert {t: result.status[t] for t in DRILLED} == dict.fromkeys(DRILLED, "unverified"), result.explain(DRILLED)
    probes = {"P1-002": "restore_drill", "P1-003": "rollback_drill", "P1-004": "webhook_e2e"}
    for ticket_id, probe in probes.items():
        lines = _ticket(result, ticket_id)["not_checked"]
        assert isinstance(lines, list) and lines, ticket_id
        assert all(line.startswith("not checked: ") for line in lines), lines
        assert any(f"intrusive probe '{probe}'" in line and "not allowed" in line for line in lines), lines
        for line in lines:
            assert line in result.output, f"the console does not show {line!r}"
    # A drill not allowed is not started in the background either.
    assert "starts in the background" not in result.output, result.output
    # No ticket reads done while one of its intrusive criteria was not looked at.
    for t in result.readiness["tickets"]:
        if t["status"] == "done":
            unjudged = [c["id"] for c in t["criteria"] if c["intrusive"] and c["outcome"] != "pass"]
            assert not unjudged, f"{t['id']} is done, but {unjudged} did not run"
    # The files validate against the documented schemas.
    schema = json.loads((ROOT / "docs" / "readiness.schema.json").read_text())
    jsonschema.validate(result.readiness, schema)
    xmlschema.XMLSchema(ROOT / "tests" / "junit-10.xsd").validate(result.out_dir / "junit.xml")
    junit = ET.parse(result.out_dir / "junit.xml").getroot()
    skipped = {c.get("name") for c in junit.iter("testcase") if c.find("skipped") is not None}
    assert "test_restore_drill_restores" in skipped and "test_rollback_drill" in skipped


def test_intrusive_passes_carry_forward_until_their_window_ends(stack: StartedStack, tmp_path: Path) -> None:
    maintenance = run_verify(stack, tmp_path, *SERIAL, allow_intrusive=list(INTRUSIVE_PROBES))
    assert set(maintenance.status.values()) == {"done"}, maintenance.explain()

    nightly = run_verify(stack, tmp_path, *SERIAL, allow_intrusive=READ_ONLY)
    assert {t: nightly.status[t] for t in DRILLED} == dict.fromkeys(DRILLED, "done"), nightly.explain(DRILLED)
    today = _clock.now().date()
    drill = next(c for c in nightly.criteria("P1-002") if c["id"].endswith("test_restore_drill_restores"))
    assert drill["outcome"] == "pass"
    assert drill["message"] == f"passed {today.isoformat()} (today, carried forward from run verify-0)"
    assert drill["carried_forward"]["report"] == "../verify-0/index.html"
    assert f"passed {today.isoformat()} (today, carried forward from run verify-0)" in nightly.output
    page = (nightly.out_dir / "index.html").read_text()
    assert 'href="../verify-0/index.html#ticket-P1-002"' in page
    # Every criterion that did not run in the nightly run is carried, none is judged afresh.
    carried = [c for t in DRILLED for c in nightly.criteria(t) if c["carried_forward"]]
    assert {c["carried_forward"]["probe"] for c in carried} == {"restore_drill", "rollback_drill", "webhook_e2e"}

    # With the clock past the drills' 31-day window, nothing is carried and the tickets are
    # unverified again.
    later = {"OPSREADY_TODAY": (today + dt.timedelta(days=32)).isoformat()}
    stale = run_verify(stack, tmp_path, *SERIAL, allow_intrusive=READ_ONLY, environ=later)
    assert {t: stale.status[t] for t in DRILLED} == dict.fromkeys(DRILLED, "unverified"), stale.explain(DRILLED)
    assert stale.readiness["run"]["clock_moved_to"] == later["OPSREADY_TODAY"]
    assert not [c for t in DRILLED for c in stale.criteria(t) if c["carried_forward"]]


def test_a_tampered_earlier_bundle_carries_nothing(stack: StartedStack, tmp_path: Path) -> None:
    maintenance = run_verify(stack, tmp_path, *SERIAL, tickets=["P1-002"], allow_intrusive=["restore_drill"])
    assert maintenance.status["P1-002"] == "done", maintenance.explain(["P1-002"])
    page = maintenance.out_dir / "index.html"
    page.write_text(page.read_text().replace("Readiness", "Readyness", 1))
    nightly = run_verify(stack, tmp_path, *SERIAL, tickets=["P1-002"], allow_intrusive=READ_ONLY)
    assert nightly.status["P1-002"] == "unverified", nightly.explain(["P1-002"])
    drill = next(c for c in nightly.criteria("P1-002") if c["id"].endswith("test_restore_drill_restores"))
    assert drill["outcome"] == "skip"
    assert "run verify-0 is not used: its bundle fails verify-bundle (changed: index.html)" in drill["message"]
