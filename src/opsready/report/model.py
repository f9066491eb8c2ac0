"""The readiness model (schema ``opsready.readiness/v1``): criteria outcomes rolled up per
ticket, the gate, the waivers, the diff against the previous run and the scope.

These pydantic models are the one thing every writer renders: ``readiness.json`` is
``Readiness.dump_json()``, and the HTML, the console table, ``junit.xml``, ``readiness.prom``
and the history line all take a ``Readiness``. ``docs/readiness-schema.md`` documents every
field, and a test keeps it equal to ``Readiness.model_json_schema()``.

This module knows nothing about pytest or rendering. ``build_readiness`` turns the criterion
results the plugin collected into the model.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from opsready._coverage import NOT_APPLICABLE, NOT_COVERED, SkipKind
from opsready.attestations import Attestation, AttestationSet
from opsready.catalogue import Catalogue
from opsready.catalogue import Ticket as CatalogueTicket
from opsready.evidence import EvidenceItem, MeasureItem, TableItem
from opsready.waivers import Waiver, WaiverSet

__all__ = [
    "ACTION_STATUSES",
    "NOT_RUN",
    "NOT_SELECTED",
    "OUTCOMES",
    "SCHEMA",
    "STATUSES",
    "ActionResult",
    "ActionStatus",
    "AttestationEntry",
    "Attestations",
    "CarriedForward",
    "Counts",
    "Criterion",
    "CriterionResult",
    "Diff",
    "Gate",
    "Hashes",
    "Outcome",
    "Readiness",
    "Run",
    "Scope",
    "SkippedCriterion",
    "Status",
    "StatusChange",
    "Ticket",
    "WaiverEntry",
    "Waivers",
    "build_readiness",
    "diff_runs",
    "gate_verdict",
    "rollup",
]

SCHEMA: Literal["opsready.readiness/v1"] = "opsready.readiness/v1"
Outcome = Literal["pass", "fail", "error", "skip", "waived"]
Status = Literal["done", "open", "unverified", "waived"]
Priority = Literal["P0", "P1", "P2", "P3"]
OUTCOMES: tuple[Outcome, ...] = ("pass", "fail", "error", "skip", "waived")
STATUSES: tuple[Status, ...] = ("done", "open", "unverified", "waived")
ActionStatus = Literal["done", "open", "unverified", "waived", "attested", "not_covered"]
ACTION_STATUSES: tuple[ActionStatus, ...] = ("done", "open", "unverified", "waived", "attested", "not_covered")
# How the message of a criterion that was collected but never finished begins (the run was
# interrupted, a worker crashed): "not run: <why> before this criterion finished".
NOT_RUN = "not run"
NO_CHECK = "no automated check: add a module checks/test_{slug}_*.py for this ticket"
NOT_SELECTED = "not selected in this run (--ticket)"
NO_CRITERION_RAN = "no criterion ran"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class WaiverEntry(_Model):
    """A valid waiver, as it applied in this run."""

    target: str = Field(description="a ticket id, or a criterion id TICKET::test_name")
    criteria: list[str] = Field(
        default_factory=list,
        description="for a ticket waiver: the criteria (test names) it accepts; empty for a criterion waiver")
    reason: str
    requested_by: str
    approved_by: str
    expires: dt.date

    @classmethod
    def of(cls, waiver: Waiver) -> WaiverEntry:
        return cls(target=waiver.target, criteria=list(waiver.criteria), reason=waiver.reason,
                   requested_by=waiver.requested_by, approved_by=waiver.approved_by,
                   expires=waiver.expires)


class AttestationEntry(_Model):
    """A valid attestation of a manual action, as it applied in this run."""

    ticket: str
    action: str
    attested_by: str
    approved_by: str
    date: dt.date = Field(description="when the action was done")
    evidence: str = Field(description="the URL of the record of what was done")
    expires: dt.date

    @classmethod
    def of(cls, a: Attestation) -> AttestationEntry:
        return cls(ticket=a.ticket, action=a.action, attested_by=a.attested_by, approved_by=a.approved_by,
                   date=a.date, evidence=a.evidence, expires=a.expires)


class ActionResult(_Model):
    """One action of the ticket (from the catalogue) and what proves it in this run."""

    action: str
    criteria: list[str] = Field(description="the criteria (test names) the catalogue says prove it")
    manual: bool = Field(description="true when no probe can verify it; an attestation covers it")
    status: ActionStatus = Field(
        description="for criteria: their roll-up (done, open, unverified, waived); attested for a manual "
        "action with a valid attestation; not_covered when nothing in this run proves it")
    outcomes: dict[str, Outcome] = Field(
        default_factory=dict, description="criterion id -> its outcome, for the criteria that ran")
    attestation: AttestationEntry | None = None
    reason: str = Field(default="", description="for not_covered: why nothing proves the action")


class Attestations(_Model):
    applied: list[AttestationEntry]
    warnings: list[str]


class CarriedForward(_Model):
    """Where a carried-forward pass comes from."""

    run_id: str = Field(description="the earlier run in which the criterion passed")
    passed_at: dt.datetime = Field(description="when that run started (UTC)")
    age_days: int = Field(description="days from the day of passed_at to this run's day")
    window_days: float = Field(description="the freshness window of the intrusive probe")
    probe: str = Field(description="the intrusive probe this run did not allow")
    report: str = Field(description="the earlier run's index.html, relative to this report directory")
    not_run_because: str = Field(description="why the criterion did not run in this run")

    def line(self) -> str:
        """``passed 2026-11-20 (12 days ago, carried forward from run <id>)``."""
        ago = "today" if self.age_days == 0 else ("1 day ago" if self.age_days == 1 else f"{self.age_days} days ago")
        return f"passed {self.passed_at.date().isoformat()} ({ago}, carried forward from run {self.run_id})"


class Criterion(_Model):
    """One test function's verdict."""

    id: str = Field(description="TICKET::test_name[param]")
    title: str = Field(description="the first line of the test's docstring")
    outcome: Outcome
    message: str = ""
    duration_s: float = 0.0
    evidence: list[EvidenceItem] = Field(default_factory=list)
    nodeid: str = ""
    skip_kind: SkipKind | None = Field(default=None, description="for a skip: not_applicable or not_covered")
    judgeable_from: dt.date | None = Field(
        default=None, description="for history too young: the first day it can be judged")
    intrusive: str | None = Field(default=None, description="the intrusive probe the criterion needs, if any")
    waiver: WaiverEntry | None = Field(default=None, description="the waiver that turned a fail into waived")
    carried_forward: CarriedForward | None = Field(
        default=None, description="set when the pass comes from an earlier run")

    @property
    def not_covered(self) -> bool:
        return self.outcome == "skip" and self.skip_kind != NOT_APPLICABLE

    @property
    def test_name(self) -> str:
        return self.id.split("::", 1)[-1]


class Ticket(_Model):
    id: str
    title: str
    priority: Priority
    category: str
    status: Status
    note: str = Field(description="why the ticket has no criteria: no check module, or not selected")
    not_checked: list[str] = Field(
        description="one line per criterion that was not looked at: 'not checked: <criterion> (<reason>)'")
    carried_forward: list[str] = Field(
        description="one line per criterion whose pass comes from an earlier run")
    passed: int = Field(description="criteria that passed (also carried forward) or were waived")
    total: int = Field(description="criteria of the ticket in this run")
    modules: list[str]
    criteria: list[Criterion]
    actions: list[ActionResult] = Field(
        default_factory=list, description="the ticket's actions, each with the criteria or attestation that prove it")

    @property
    def selected(self) -> bool:
        return self.note != NOT_SELECTED


class Gate(_Model):
    priorities: list[Priority]
    passed: bool
    blocking: list[str]


class Hashes(_Model):
    config: str | None
    catalogue: str | None
    waivers: str | None
    attestations: str | None = None


class Run(_Model):
    id: str = Field(description="the report directory's name")
    environment: str
    env_file: str
    started_at: dt.datetime
    finished_at: dt.datetime
    duration_s: float
    today: dt.date = Field(description="the UTC day every date of the run is judged by")
    clock_moved_to: dt.date | None = Field(
        default=None, description="set when OPSREADY_TODAY moved the clock to this day")
    suite_version: str
    git_sha: str | None
    python: str
    interrupted: bool
    hashes: Hashes
    signing_key: str | None = Field(
        default=None, description="the fingerprint (SHA256:..., as ssh-keygen -l prints it) of the key that "
        "signs MANIFEST.sha256; null when the bundle is not signed")


class Counts(_Model):
    done: int
    open: int
    unverified: int
    waived: int


class StatusChange(_Model):
    from_: Status | None = Field(alias="from")
    to: Status


class Diff(_Model):
    previous_run: str | None
    newly_done: list[str]
    regressed: list[str]
    still_open: list[str]
    changed: dict[str, StatusChange]
    expiring_waivers: list[WaiverEntry]


class Waivers(_Model):
    applied: list[WaiverEntry]
    warnings: list[str]


class SkippedCriterion(_Model):
    criterion: str
    kind: SkipKind
    reason: str


class Scope(_Model):
    configured: list[str] = Field(description="the environment sections present")
    allow_intrusive: list[str]
    freshness_days: dict[str, float] = Field(
        description="how long a pass of each intrusive probe may be carried forward")
    selected: list[str] | None = Field(description="the --ticket filter, or null for every ticket")
    checks: list[str]
    skipped: list[SkippedCriterion]
    module_errors: list[str]


class Readiness(_Model):
    """The whole readiness document of one run."""

    schema_id: Literal["opsready.readiness/v1"] = Field(default=SCHEMA, alias="schema")
    run: Run
    gate: Gate
    counts: Counts
    tickets: list[Ticket]
    waivers: Waivers
    diff: Diff
    scope: Scope
    attestations: Attestations = Field(default_factory=lambda: Attestations(applied=[], warnings=[]))

    def dump_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2) + "\n"

    def ticket(self, ticket_id: str) -> Ticket | None:
        return next((t for t in self.tickets if t.id == ticket_id), None)

    def gaps(self) -> list[str]:
        """Why this run's statuses are not the whole picture: it did not finish, or could not
        use some check modules. Empty for a whole run."""
        found = ["the run did not finish"] if self.run.interrupted else []
        if self.scope.module_errors:
            n = len(self.scope.module_errors)
            found.append(f"{n} check module{'s' if n != 1 else ''} not used")
        return found

    @property
    def judged(self) -> dict[str, Status]:
        """Ticket id -> status, for the tickets this run judged (all but --ticket exclusions)."""
        return {t.id: t.status for t in self.tickets if t.selected}

    def measures(self) -> Iterator[tuple[Ticket, Criterion, MeasureItem]]:
        for t in self.tickets:
            for c in t.criteria:
                for item in c.evidence:
                    if isinstance(item, MeasureItem):
                        yield t, c, item

    def tables(self) -> Iterator[tuple[Ticket, Criterion, TableItem]]:
        for t in self.tickets:
            for c in t.criteria:
                for item in c.evidence:
                    if isinstance(item, TableItem):
                        yield t, c, item


@dataclass
class CriterionResult:
    """What the plugin collected for one criterion, before the roll-up."""

    id: str  # "P2-002::test_allowed_origin_preflight[https://x]"
    ticket: str
    title: str
    outcome: Outcome
    message: str = ""
    duration_s: float = 0.0
    evidence: list[dict[str, Any]] = field(default_factory=list)
    nodeid: str = ""
    skip_kind: SkipKind | None = None
    judgeable_from: dt.date | None = None
    # The intrusive probe the criterion needs, and whether this run allowed it.
    intrusive: str | None = None
    intrusive_denied: bool = False

    @property
    def test_name(self) -> str:
        return self.id.split("::", 1)[-1]


# Carry-forward: given a not-covered criterion whose intrusive probe was not allowed, the
# earlier pass that stands in for it, or a sentence saying why none does.
CarryLookup = Callable[[CriterionResult], "CarriedForward | str | None"]


def rollup(outcomes: Sequence[str], not_covered: int = 0) -> Status:
    """A ticket's status from its criteria, in DESIGN §3 order. ``not_covered`` counts the
    skipped criteria that were not looked at (a not-applicable skip is neutral)."""
    if "fail" in outcomes:
        return "open"
    if "error" in outcomes or not_covered or not any(o in ("pass", "waived") for o in outcomes):
        return "unverified"
    if "waived" in outcomes:
        return "waived"
    return "done"


def gate_verdict(tickets: list[Ticket], priorities: list[Priority]) -> Gate:
    blocking = [t.id for t in tickets if t.priority in priorities and t.status not in ("done", "waived")]
    return Gate(priorities=priorities, passed=not blocking, blocking=blocking)


def diff_runs(
    previous: dict[str, str] | None,
    current: dict[str, Status],
    waivers: WaiverSet,
    today: dt.date,
    previous_run: str | None,
) -> Diff:
    """Compare ticket statuses with the previous run of the same environment."""
    prev = previous or {}
    soon = today + dt.timedelta(days=14)
    changed = {
        t: StatusChange.model_validate({"from": _status_or_none(prev.get(t)), "to": s})
        for t, s in sorted(current.items())
        if previous is not None and prev.get(t) != s
    }
    return Diff(
        previous_run=previous_run,
        newly_done=sorted(t for t, s in current.items()
                          if previous is not None and s == "done" and prev.get(t) != "done"),
        regressed=sorted(t for t, s in current.items() if prev.get(t) == "done" and s != "done"),
        still_open=sorted(t for t, s in current.items() if s == "open" and prev.get(t) == "open"),
        changed=changed,
        expiring_waivers=[WaiverEntry.of(w) for w in waivers.valid if w.expires <= soon],
    )


def _status_or_none(value: str | None) -> Status | None:
    return next((s for s in STATUSES if s == value), None)


def _not_checked_line(c: Criterion) -> str:
    reason = " ".join(c.message.split()) or "no reason given"
    if c.judgeable_from is not None and "judgeable from" not in reason:
        reason = f"{reason}; judgeable from {c.judgeable_from.isoformat()}"
    return f"not checked: {c.title} ({reason})"


def _criterion(r: CriterionResult, waivers: WaiverSet, carry: CarryLookup | None) -> Criterion:
    outcome, message, waiver, carried = r.outcome, r.message, None, None
    if outcome == "fail":
        found = waivers.find(r.ticket, r.id)
        if found is not None:
            outcome, waiver = "waived", WaiverEntry.of(found)
    elif outcome == "skip" and r.skip_kind != NOT_APPLICABLE and r.intrusive_denied and carry is not None:
        earlier = carry(r)
        if isinstance(earlier, CarriedForward):
            outcome, carried, message = "pass", earlier, earlier.line()
        elif earlier:
            message = f"{message}; {earlier}"
    skip_kind: SkipKind | None = None
    if outcome == "skip":
        skip_kind = NOT_APPLICABLE if r.skip_kind == NOT_APPLICABLE else NOT_COVERED
    return Criterion(
        id=r.id, title=r.title, outcome=outcome, message=message,
        duration_s=round(r.duration_s, 3), evidence=r.evidence, nodeid=r.nodeid,  # type: ignore[arg-type]
        skip_kind=skip_kind, judgeable_from=r.judgeable_from if outcome == "skip" else None,
        intrusive=r.intrusive, waiver=waiver, carried_forward=carried,
    )


def build_readiness(
    *,
    catalogue: Catalogue,
    results: list[CriterionResult],
    waivers: WaiverSet,
    run: Run,
    gate: list[Priority],
    previous: dict[str, str] | None,
    previous_run: str | None,
    selected: list[str] | None,
    scope: Scope,
    modules: dict[str, list[str]],
    carry: CarryLookup | None = None,
    attestations: AttestationSet | None = None,
) -> Readiness:
    """The whole readiness document. ``carry`` finds earlier passes for criteria that were not
    covered because their intrusive probe was not allowed (see ``report.carry_forward``)."""
    by_ticket: dict[str, list[Criterion]] = {t.id: [] for t in catalogue.tickets}
    for r in results:
        by_ticket.setdefault(r.ticket, []).append(_criterion(r, waivers, carry))

    tickets: list[Ticket] = []
    for t in catalogue.tickets:
        crits = by_ticket.get(t.id, [])
        note = ""
        if not crits:
            if selected is not None and t.id not in selected:
                note = NOT_SELECTED
            elif not modules.get(t.id):
                note = NO_CHECK.format(slug=t.id.lower().replace("-", "_"))
            else:
                note = NO_CRITERION_RAN
        outcomes = [c.outcome for c in crits]
        not_checked = [_not_checked_line(c) for c in crits if c.not_covered or c.outcome == "error"]
        if crits and not not_checked and not any(o in ("pass", "waived", "fail") for o in outcomes):
            not_checked = ["not checked: every criterion was not applicable, so nothing was judged"]
        actions = _actions(t, crits, attestations) if crits else []
        unproven = [a for a in actions if a.status == "not_covered"]
        not_checked += [f"not checked: action '{a.action}' ({a.reason})" for a in unproven]
        tickets.append(Ticket(
            id=t.id, title=t.title, priority=t.priority, category=t.category,
            status=rollup(outcomes, sum(c.not_covered for c in crits) + len(unproven)),
            note=note, not_checked=not_checked,
            carried_forward=[f"{c.carried_forward.line()}: {c.title}" for c in crits if c.carried_forward],
            passed=sum(o in ("pass", "waived") for o in outcomes), total=len(outcomes),
            modules=modules.get(t.id, []), criteria=crits, actions=actions,
        ))
    judged = {t.id: t.status for t in tickets if t.selected}
    warnings = list(waivers.warnings) + _unknown_waived_criteria(waivers, tickets)
    return Readiness(
        run=run,
        gate=gate_verdict(tickets, gate),
        counts=Counts(**{s: sum(1 for t in tickets if t.status == s) for s in STATUSES}),
        tickets=tickets,
        waivers=Waivers(applied=[WaiverEntry.of(w) for w in waivers.valid], warnings=warnings),
        diff=diff_runs(previous, judged, waivers, run.today, previous_run),
        scope=scope,
        attestations=Attestations(
            applied=[AttestationEntry.of(a) for a in (attestations.valid if attestations else [])],
            warnings=list(attestations.warnings) if attestations else []),
    )


def _names(entry: str, test_name: str) -> bool:
    """``test_a`` names ``test_a`` and every ``test_a[...]``; ``test_a[x]`` only itself."""
    return test_name == entry or (test_name.startswith(entry + "[") and "[" not in entry)


def _actions(ticket: CatalogueTicket, crits: list[Criterion],
             attestations: AttestationSet | None) -> list[ActionResult]:
    """Each action of a judged ticket with what proves it. An action is not covered when it is
    manual without a valid attestation, names no criterion, or none of its criteria ran."""
    results = []
    for a in ticket.actions:
        status: ActionStatus
        outcomes: dict[str, Outcome] = {}
        attestation, reason = None, ""
        if a.criteria:
            ran = [c for c in crits if any(_names(entry, c.test_name) for entry in a.criteria)]
            outcomes = {c.id: c.outcome for c in ran}
            if ran:
                status = rollup([c.outcome for c in ran], sum(c.not_covered for c in ran))
            else:
                status, reason = "not_covered", f"its criteria did not run in this run: {', '.join(a.criteria)}"
        elif a.manual:
            found = attestations.find(ticket.id, a.action) if attestations else None
            if found is not None:
                status, attestation = "attested", AttestationEntry.of(found)
            else:
                status, reason = "not_covered", "manual, and no valid attestation in config/attestations.yaml"
        else:
            status, reason = "not_covered", "the catalogue names no criterion for it and it is not manual"
        results.append(ActionResult(action=a.action, criteria=list(a.criteria), manual=a.manual, status=status,
                                    outcomes=outcomes, attestation=attestation, reason=reason))
    return results


def _unknown_waived_criteria(waivers: WaiverSet, tickets: list[Ticket]) -> list[str]:
    """A waiver naming a criterion the ticket does not have (a typo, or a renamed check)
    accepts nothing for it: say so where the waivers are listed."""
    ran = {t.id: {c.test_name for c in t.criteria} for t in tickets if t.criteria}
    lines = []
    for w in waivers.valid:
        names = ran.get(w.ticket)
        if names is None:
            continue
        named = w.criteria if "::" not in w.target else (w.target.split("::", 1)[1],)
        unknown = [n for n in named if not any(w.names(n, test) for test in names)]
        if unknown:
            lines.append(f"{w.source}: waiver for {w.target} names {', '.join(unknown)}, which "
                         f"{'is' if len(unknown) == 1 else 'are'} not a criterion of {w.ticket} in "
                         f"this run; it accepts nothing there; fix the name under criteria:")
    return lines
