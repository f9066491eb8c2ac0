"""The readiness model: criteria outcomes rolled up per ticket, the gate, and the diff.

This module knows nothing about pytest or rendering. The plugin feeds it criterion results;
the writers in this package turn the one model into JSON, HTML, JUnit and metrics.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from opsready.catalogue import Catalogue
from opsready.report.files import NOT_SELECTED
from opsready.waivers import WaiverSet

__all__ = [
    "OUTCOMES",
    "SCHEMA",
    "STATUSES",
    "CriterionResult",
    "build_readiness",
    "diff_runs",
    "gate_verdict",
    "rollup",
]

SCHEMA = "opsready.readiness/v1"
OUTCOMES = ("pass", "fail", "error", "skip", "waived")
STATUSES = ("done", "open", "unverified", "waived")
NO_CHECK = "no automated check: add a module checks/test_{slug}_*.py for this ticket"


@dataclass
class CriterionResult:
    """One test function's verdict."""

    id: str  # "P2-002::test_allowed_origin_preflight[https://x]"
    ticket: str
    title: str
    outcome: str
    message: str = ""
    duration_s: float = 0.0
    evidence: list[dict[str, Any]] = field(default_factory=list)
    nodeid: str = ""
    waiver: dict[str, Any] | None = None
    # For a skip: "not_applicable" (neutral) or "not_covered" (we did not look).
    skip_kind: str | None = None
    judgeable_from: str | None = None

    @property
    def not_covered(self) -> bool:
        return self.outcome == "skip" and self.skip_kind != "not_applicable"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "title": self.title,
            "outcome": self.outcome,
            "message": self.message,
            "duration_s": round(self.duration_s, 3),
            "evidence": self.evidence,
            "nodeid": self.nodeid,
        }
        if self.waiver is not None:
            out["waiver"] = self.waiver
        if self.outcome == "skip":
            out["skip_kind"] = "not_covered" if self.not_covered else "not_applicable"
            if self.judgeable_from:
                out["judgeable_from"] = self.judgeable_from
        return out


def rollup(outcomes: list[str], not_covered: int = 0) -> str:
    """A ticket's status from its criteria, in DESIGN §3 order. ``not_covered`` counts the
    skipped criteria that were not looked at (a not-applicable skip is neutral)."""
    if "fail" in outcomes:
        return "open"
    if "error" in outcomes or not_covered or not any(o in ("pass", "waived") for o in outcomes):
        return "unverified"
    if "waived" in outcomes:
        return "waived"
    return "done"


def gate_verdict(tickets: list[dict[str, Any]], priorities: list[str]) -> dict[str, Any]:
    blocking = [
        t["id"] for t in tickets if t["priority"] in priorities and t["status"] not in ("done", "waived")
    ]
    return {"priorities": priorities, "passed": not blocking, "blocking": blocking}


def diff_runs(
    previous: dict[str, str] | None,
    current: dict[str, str],
    waivers: WaiverSet,
    today: dt.date,
    previous_run: str | None,
) -> dict[str, Any]:
    """Compare ticket statuses with the previous run of the same environment."""
    prev = previous or {}
    soon = today + dt.timedelta(days=14)
    return {
        "previous_run": previous_run,
        "newly_done": sorted(
            t for t, s in current.items() if previous is not None and s == "done" and prev.get(t) != "done"
        ),
        "regressed": sorted(t for t, s in current.items() if prev.get(t) == "done" and s != "done"),
        "still_open": sorted(t for t, s in current.items() if s == "open" and prev.get(t) == "open"),
        "changed": {
            t: {"from": prev.get(t), "to": s}
            for t, s in sorted(current.items())
            if previous is not None and prev.get(t) != s
        },
        "expiring_waivers": [w.to_dict() for w in waivers.valid if w.expires <= soon],
    }


def build_readiness(
    *,
    catalogue: Catalogue,
    results: list[CriterionResult],
    waivers: WaiverSet,
    run: dict[str, Any],
    gate: list[str],
    previous: dict[str, str] | None,
    previous_run: str | None,
    selected: list[str] | None,
    scope: dict[str, Any],
    today: dt.date,
    modules: dict[str, list[str]],
) -> dict[str, Any]:
    """The whole readiness document (schema ``opsready.readiness/v1``)."""
    by_ticket: dict[str, list[CriterionResult]] = {t.id: [] for t in catalogue.tickets}
    for r in results:
        if r.outcome == "fail":
            waiver = waivers.find(r.ticket, r.id)
            if waiver is not None:
                r.outcome = "waived"
                r.waiver = waiver.to_dict()
        by_ticket.setdefault(r.ticket, []).append(r)

    tickets: list[dict[str, Any]] = []
    for t in catalogue.tickets:
        crits = by_ticket.get(t.id, [])
        note = ""
        if not crits:
            if selected is not None and t.id not in selected:
                note = NOT_SELECTED
            elif not modules.get(t.id):
                note = NO_CHECK.format(slug=t.id.lower().replace("-", "_"))
            else:
                note = "no criterion ran"
        outcomes = [c.outcome for c in crits]
        not_checked = [f"{c.title}: {c.message}" for c in crits if c.not_covered]
        tickets.append(
            {
                "id": t.id,
                "title": t.title,
                "priority": t.priority,
                "category": t.category,
                "status": rollup(outcomes, len(not_checked)),
                "note": note,
                "not_checked": not_checked,
                "passed": sum(o in ("pass", "waived") for o in outcomes),
                "total": len(outcomes),
                "modules": modules.get(t.id, []),
                "criteria": [c.to_dict() for c in crits],
            }
        )
    judged = {t["id"]: t["status"] for t in tickets if t["note"] != NOT_SELECTED}
    counts = {s: sum(1 for t in tickets if t["status"] == s) for s in STATUSES}
    return {
        "schema": SCHEMA,
        "run": run,
        "gate": gate_verdict(tickets, gate),
        "counts": counts,
        "tickets": tickets,
        "waivers": {
            "applied": [w.to_dict() for w in waivers.valid],
            "warnings": waivers.warnings,
        },
        "diff": diff_runs(previous, judged, waivers, today, previous_run),
        "scope": scope,
        "slo": _lift(tickets, "slo_table"),
    }


def _lift(tickets: list[dict[str, Any]], name: str) -> Any:
    """The first evidence value named ``name`` across all criteria (e.g. the SLO table)."""
    for t in tickets:
        for c in t["criteria"]:
            for item in c["evidence"]:
                if item.get("name") == name and item.get("kind") in ("value", "table"):
                    return item.get("value")
    return None
