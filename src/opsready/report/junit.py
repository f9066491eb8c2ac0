"""``junit.xml`` from the readiness model, so CI tells open from unverified.

One ``<testsuite>`` per ticket, with the ticket's status (and priority) as properties, and one
``<testcase>`` per criterion:

- ``fail`` → ``<failure>`` (we looked, and it is not there: the ticket is open);
- ``error`` → ``<error>`` (we could not judge: the ticket is unverified);
- ``skip`` → ``<skipped>`` with its reason, and ``type`` ``not_applicable`` or ``not_covered``;
- ``waived`` → ``<skipped type="waived">`` naming the waiver, with the failure as its text;
- ``pass`` → an empty test case; a carried-forward pass says where it comes from in
  ``<system-out>``.

The file follows the JUnit schema of Jenkins' xUnit plugin (``junit-10.xsd``), which GitLab
and most CI systems read as well.
"""

from __future__ import annotations

import re
import socket
import xml.etree.ElementTree as ET
from pathlib import Path

from opsready.report.model import Criterion, Readiness, Ticket

__all__ = ["render_junit", "write_junit"]

# Characters XML 1.0 cannot carry, even escaped (control characters from a target's answer).
_NOT_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _text(value: str) -> str:
    return _NOT_XML.sub("\ufffd", value)


def _seconds(value: float) -> str:
    return f"{max(value, 0.0):.3f}"


def _testcase(ticket: Ticket, c: Criterion) -> ET.Element:
    module = c.nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")
    case = ET.Element("testcase", {
        "name": _text(c.test_name),
        "classname": _text(f"{ticket.id}.{module}" if module else ticket.id),
        "time": _seconds(c.duration_s),
    })
    if c.outcome == "fail":
        ET.SubElement(case, "failure", {"type": "fail", "message": _text(c.message)}).text = _text(c.message)
    elif c.outcome == "error":
        ET.SubElement(case, "error", {"type": "error", "message": _text(c.message)}).text = _text(c.message)
    elif c.outcome == "skip":
        kind = c.skip_kind or "not_covered"
        ET.SubElement(case, "skipped", {"type": kind, "message": _text(f"{kind.replace('_', ' ')}: {c.message}")})
    elif c.outcome == "waived":
        w = c.waiver
        why = (f"waived until {w.expires.isoformat()} (approved by {w.approved_by}): {w.reason}"
               if w is not None else "waived")
        ET.SubElement(case, "skipped", {"type": "waived", "message": _text(why)}).text = _text(c.message)
    out = [c.title]
    if c.carried_forward is not None:
        out.append(f"{c.carried_forward.line()}; report: {c.carried_forward.report}")
    ET.SubElement(case, "system-out").text = _text("\n".join(out))
    return case


def _testsuite(ticket: Ticket, timestamp: str, hostname: str) -> ET.Element:
    counts = {o: sum(1 for c in ticket.criteria if c.outcome == o) for o in ("fail", "error", "skip", "waived")}
    suite = ET.Element("testsuite", {
        "name": _text(f"{ticket.id} {ticket.title}"),
        "tests": str(len(ticket.criteria)),
        "failures": str(counts["fail"]),
        "errors": str(counts["error"]),
        "skipped": str(counts["skip"] + counts["waived"]),
        "time": _seconds(sum(c.duration_s for c in ticket.criteria)),
        "timestamp": timestamp,
        "hostname": hostname,
        "package": ticket.id,
    })
    props = ET.SubElement(suite, "properties")
    for name, value in (("status", ticket.status), ("priority", ticket.priority), ("category", ticket.category)):
        ET.SubElement(props, "property", {"name": name, "value": _text(value)})
    for line in ticket.not_checked:
        ET.SubElement(props, "property", {"name": "not_checked", "value": _text(line)})
    if ticket.note:
        ET.SubElement(props, "property", {"name": "note", "value": _text(ticket.note)})
    for c in ticket.criteria:
        suite.append(_testcase(ticket, c))
    return suite


def render_junit(readiness: Readiness) -> bytes:
    run = readiness.run
    timestamp = run.started_at.strftime("%Y-%m-%dT%H:%M:%S")
    hostname = socket.gethostname()
    suites = [_testsuite(t, timestamp, hostname) for t in readiness.tickets]
    root = ET.Element("testsuites", {
        "name": _text(f"opsready {run.environment}"),
        "tests": str(sum(int(s.get("tests", "0")) for s in suites)),
        "failures": str(sum(int(s.get("failures", "0")) for s in suites)),
        "errors": str(sum(int(s.get("errors", "0")) for s in suites)),
        "time": _seconds(run.duration_s),
    })
    root.extend(suites)
    ET.indent(root)
    text: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return text + b"\n"


def write_junit(out_dir: Path, readiness: Readiness) -> Path:
    path = out_dir / "junit.xml"
    tmp = path.with_suffix(".xml.tmp")
    tmp.write_bytes(render_junit(readiness))
    tmp.replace(path)
    return path
