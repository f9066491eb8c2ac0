"""What ``opsready sync`` writes into an issue: the description's managed section (the
ticket's summary, impact and actions checklist, and the state it last synced), and the
comments that explain a change.

The managed section sits between ``<!-- opsready:begin -->`` and ``<!-- opsready:end -->``;
text outside the markers belongs to people and is kept. The last synced state is a JSON object
in an HTML comment inside the section (invisible when rendered): the environment, the status,
the run that last changed it, and each criterion's outcome, so the next status change can name
the criteria that changed. Every comment opens with a marker naming the ticket, the run, the
status and what was done to the issue; a comment whose marker is already on the issue is not
posted again, which keeps a re-run from repeating itself.

Text that came from the platform under audit (criterion messages) is escaped: ``<`` cannot
open an HTML comment that forges a marker, and ``@`` cannot mention anyone.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from opsready._coverage import NOT_APPLICABLE
from opsready.catalogue import Ticket as CatalogueTicket
from opsready.evidence import redactor
from opsready.report.model import STATUSES, Criterion, Run, Status, WaiverEntry
from opsready.report.model import Ticket as ReadinessTicket

__all__ = [
    "BEGIN",
    "END",
    "Announcement",
    "IssueAction",
    "RecordedState",
    "RunFacts",
    "action_criteria",
    "checklist",
    "comment_marker",
    "criterion_outcome",
    "hand_comment",
    "last_announcement",
    "managed_section",
    "merged_body",
    "read_state",
    "same_text",
    "status_comment",
]

BEGIN = "<!-- opsready:begin -->"
END = "<!-- opsready:end -->"
_STATE = re.compile(r"<!-- opsready:state (\{.*?\}) -->")
_MARKER = re.compile(r"<!-- opsready:sync ticket=(\S+) run=(\S+) status=(\w+) action=(\w+) -->")
_MESSAGE_CHARS = 300

# What a sync does to the issue's open/closed state along with a comment.
IssueAction = Literal["close", "reopen", "none"]
_ACTIONS: tuple[IssueAction, ...] = ("close", "reopen", "none")


@dataclass(frozen=True)
class RunFacts:
    """What every comment says about the run it comes from."""

    run: Run
    manifest_sha256: str
    report_url: str | None


@dataclass(frozen=True)
class RecordedState:
    """What the managed section remembers of the last sync that changed it."""

    environment: str
    status: Status
    run_id: str
    since: dt.datetime  # when that run started
    criteria: dict[str, str]  # test name -> outcome word (``criterion_outcome``)

    def marker(self) -> str:
        data = {"environment": self.environment, "status": self.status, "run": self.run_id,
                "since": self.since.isoformat(), "criteria": self.criteria}
        return f"<!-- opsready:state {json.dumps(data, sort_keys=True, separators=(',', ':'))} -->"


def read_state(body: str) -> RecordedState | None:
    """The state recorded in an issue's managed section, or None when there is none (a new
    issue, or one whose section a person removed)."""
    section = _section(body)
    m = _STATE.search(section) if section is not None else None
    if m is None:
        return None
    try:
        data = json.loads(m.group(1))
        status = next(s for s in STATUSES if s == data["status"])
        criteria = {str(k): str(v) for k, v in dict(data["criteria"]).items()}
        since = dt.datetime.fromisoformat(str(data["since"]))
        return RecordedState(environment=str(data["environment"]), status=status,
                             run_id=str(data["run"]), since=since, criteria=criteria)
    except (ValueError, KeyError, TypeError, StopIteration):
        return None


def criterion_outcome(c: Criterion) -> str:
    """One word for a criterion's outcome, telling the two kinds of skip apart."""
    if c.outcome == "skip":
        return "not applicable" if c.skip_kind == NOT_APPLICABLE else "not covered"
    return c.outcome


def state_of(rt: ReadinessTicket, run: Run) -> RecordedState:
    return RecordedState(environment=run.environment, status=rt.status, run_id=run.id,
                         since=run.started_at,
                         criteria={c.test_name: criterion_outcome(c) for c in rt.criteria})


# -- the actions checklist ---------------------------------------------------------------------


def action_criteria(action: object) -> tuple[str, tuple[str, ...] | None]:
    """An action of the catalogue: its text, and the criteria (test function names) that prove
    it, or None when the catalogue does not map the action to criteria.

    An action is either plain text or an entry with its text and a ``criteria`` list; both
    shapes are read, so the checklist uses the mapping wherever the catalogue gives one."""
    if isinstance(action, str):
        return action, None
    text = next((str(v) for v in (getattr(action, k, None) for k in ("text", "title", "action", "name"))
                 if isinstance(v, str) and v), str(action))
    names = getattr(action, "criteria", None)
    if not names:
        return text, None
    return text, tuple(str(n).split("::", 1)[-1] for n in names)


def _proves(criteria: Sequence[Criterion], names: tuple[str, ...]) -> bool:
    """Every criterion an action names passed (or does not apply to this platform), and at
    least one of them passed: a mapping that matches nothing proves nothing."""
    matched = [c for c in criteria if c.test_name in names or c.test_name.split("[", 1)[0] in names]
    passed = [c for c in matched if c.outcome == "pass"]
    return bool(passed) and all(c.outcome == "pass" or criterion_outcome(c) == "not applicable"
                                for c in matched)


# An action the run itself judged (the bundle's per-action result) is ticked in these states:
# its criteria rolled up to done, or a valid attestation covers a manual action.
_PROVEN_ACTION = ("done", "attested")


def _judged_actions(rt: ReadinessTicket) -> dict[str, bool]:
    """Action text -> proven, from the bundle's own per-action results when the run recorded
    them (a ticket's ``actions``); empty for a bundle without them."""
    found: dict[str, bool] = {}
    for result in getattr(rt, "actions", None) or []:
        text, status = getattr(result, "action", None), getattr(result, "status", None)
        if isinstance(text, str) and isinstance(status, str):
            found[text] = status in _PROVEN_ACTION
    return found


def checklist(ticket: CatalogueTicket, rt: ReadinessTicket) -> list[tuple[str, bool]]:
    """Each action of the ticket and whether it is ticked. The run's own verdict on an action
    comes first; else an action the catalogue maps to criteria is ticked when they passed; an
    action without either is proven only by the whole ticket, so it is ticked when the ticket
    is done."""
    judged = _judged_actions(rt)
    items = []
    for action in list[object](ticket.actions):
        text, names = action_criteria(action)
        if text in judged:
            items.append((text, judged[text]))
        elif names is not None:
            items.append((text, _proves(rt.criteria, names)))
        else:
            items.append((text, rt.status == "done"))
    return items


# -- the description ---------------------------------------------------------------------------


def managed_section(ticket: CatalogueTicket, rt: ReadinessTicket, state: RecordedState) -> str:
    facts = [f"**Priority** {ticket.priority}", f"**Category** {ticket.category}",
             f"**Size** {ticket.size} ({ticket.hours} h)", f"**Sprint** {ticket.sprint}"]
    lines = [
        BEGIN,
        ticket.summary.strip(),
        "",
        f"**Impact:** {ticket.impact.strip()}",
        "",
        " · ".join(facts),
        "",
        "### Actions",
        "",
        *(f"- [{'x' if ticked else ' '}] {text}" for text, ticked in checklist(ticket, rt)),
        "",
        "<sub>Kept in step with verified evidence by `opsready sync`: the `readiness:` label is the "
        "ticket's status in the latest synced run, an action is ticked when the criteria that prove "
        "it passed, and the text between the opsready markers is rewritten on every sync.</sub>",
        state.marker(),
        END,
    ]
    return "\n".join(lines)


def _section(body: str) -> str | None:
    start = body.find(BEGIN)
    end = body.find(END, start + len(BEGIN)) if start >= 0 else -1
    return body[start:end + len(END)] if start >= 0 and end >= 0 else None


def merged_body(existing: str, section: str) -> str:
    """The description with its managed section replaced by ``section``; a description
    without one keeps its text and gets the section below it."""
    current = _section(existing)
    if current is not None:
        return existing.replace(current, section, 1)
    if not existing.strip():
        return section
    return existing.rstrip() + "\n\n" + section


def same_text(a: str, b: str) -> bool:
    """Equal up to line endings and trailing spaces (GitHub stores a browser edit with CRLF)."""

    def norm(text: str) -> str:
        return "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").split("\n")).strip()

    return norm(a) == norm(b)


# -- comments ----------------------------------------------------------------------------------


def comment_marker(ticket_id: str, run_id: str, status: Status, action: IssueAction) -> str:
    return f"<!-- opsready:sync ticket={ticket_id} run={run_id} status={status} action={action} -->"


@dataclass(frozen=True)
class Announcement:
    """What the newest sync comment of an issue announced."""

    run_id: str
    status: Status
    action: IssueAction


def last_announcement(comments: Sequence[str], ticket_id: str) -> Announcement | None:
    """The newest sync comment about ``ticket_id`` among ``comments`` (oldest first)."""
    for body in reversed(comments):
        m = _MARKER.match(body.lstrip())
        if m is None or m.group(1) != ticket_id:
            continue
        status = next((s for s in STATUSES if s == m.group(3)), None)
        action = next((a for a in _ACTIONS if a == m.group(4)), None)
        if status is not None and action is not None:
            return Announcement(run_id=m.group(2), status=status, action=action)
    return None


def _escape(text: str) -> str:
    flat = " ".join(text.split())
    if len(flat) > _MESSAGE_CHARS:
        flat = flat[:_MESSAGE_CHARS - 1] + "…"
    flat = flat.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    # A zero-width space after @ keeps a message from mentioning (and notifying) anyone.
    return flat.replace("@", "@\u200b")


def _criterion_line(c: Criterion, was: str | None) -> str:
    now = criterion_outcome(c)
    change = f"{was} → **{now}**" if was is not None else f"**{now}**"
    line = f"- {_escape(c.title)} (`{c.test_name}`): {change}"
    if c.carried_forward is not None:
        line += f" ({_escape(c.carried_forward.line())})"
    elif c.message and now != "pass":
        line += f": {_escape(c.message)}"
    return line


def _criteria_lines(rt: ReadinessTicket, previous: RecordedState | None) -> list[str]:
    if previous is None:
        not_passed = [_criterion_line(c, None) for c in rt.criteria if c.outcome != "pass"]
        if not rt.criteria:
            return [f"No criterion ran: {_escape(rt.note or 'the ticket has no automated check')}."]
        if not not_passed:
            return [f"All {len(rt.criteria)} criteria passed."]
        return ["Criteria that did not pass:", "", *not_passed]
    changed = [_criterion_line(c, previous.criteria.get(c.test_name, "not run"))
               for c in rt.criteria if previous.criteria.get(c.test_name) != criterion_outcome(c)]
    current = {c.test_name for c in rt.criteria}
    changed += [f"- `{test}`: {was} → **no longer checked**"
                for test, was in sorted(previous.criteria.items()) if test not in current]
    if not changed:
        return ["No criterion changed its outcome since the last sync."]
    return ["Criteria that changed since the last sync:", "", *changed]


def _waiver_lines(rt: ReadinessTicket) -> list[str]:
    seen: list[WaiverEntry] = []
    for c in rt.criteria:
        if c.waiver is not None and c.waiver not in seen:
            seen.append(c.waiver)
    if not seen:
        return []
    lines = ["Accepted under a waiver:", ""]
    for w in seen:
        lines.append(f"- `{w.target}`: {_escape(w.reason)} (requested by {_escape(w.requested_by)}, "
                     f"approved by {_escape(w.approved_by)}, **expires {w.expires.isoformat()}**)")
    return lines


def _run_lines(facts: RunFacts) -> list[str]:
    run = facts.run
    lines = [f"Run `{run.id}` of environment `{run.environment}`, started "
             f"{run.started_at.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC. Bundle: sha256 of "
             f"`MANIFEST.sha256` is `{facts.manifest_sha256}` (check the bundle with "
             f"`opsready verify-bundle`)."]
    if facts.report_url:
        lines.append(f"Report: {facts.report_url}")
    return lines


def _state_words(action: IssueAction, status: Status) -> str:
    if action == "reopen":
        return "; the issue is reopened"
    if action == "close":
        return "; the issue is closed" + (" as not planned" if status == "waived" else " as completed")
    return ""


def _detail(rt: ReadinessTicket) -> list[str]:
    if rt.status == "waived":
        return _waiver_lines(rt)
    if rt.status == "unverified" and rt.not_checked:
        return ["What was not checked:", "", *(f"- {_escape(line)}" for line in rt.not_checked)]
    return []


def _blocks(*blocks: Iterable[str]) -> str:
    # The messages were redacted when the run wrote them; redact again with this process's
    # secrets, since a comment leaves for a third party.
    return redactor.text("\n\n".join("\n".join(b) for b in blocks if b))


def status_comment(facts: RunFacts, rt: ReadinessTicket, was: Status | None,
                   previous: RecordedState | None, action: IssueAction) -> str:
    """The comment of a status change: the new status, what it was, the criteria that changed,
    the run, the bundle's manifest hash and the report link."""
    if was is None:
        headline = f"**opsready: {rt.id} is {rt.status}** (first sync){_state_words(action, rt.status)}."
    else:
        regressed = " A ticket that was done has regressed." if was == "done" else ""
        headline = (f"**opsready: {rt.id} is now {rt.status}** (was {was})"
                    f"{_state_words(action, rt.status)}.{regressed}")
    # On a first sync of an unverified ticket every criterion that did not pass is one that
    # was not checked: the roll-up's list says it once, with the reasons.
    first_unverified = previous is None and rt.status == "unverified" and bool(rt.not_checked)
    criteria = [] if first_unverified else _criteria_lines(rt, previous)
    return _blocks([comment_marker(rt.id, facts.run.id, rt.status, action), headline],
                   criteria, _detail(rt), _run_lines(facts))


def hand_comment(facts: RunFacts, rt: ReadinessTicket, action: IssueAction) -> str:
    """The comment when a person's close or reopen disagrees with the verified status."""
    if action == "reopen":
        headline = (f"**opsready: reopened.** This issue was closed, but {rt.id} is **{rt.status}** "
                    f"in the latest run: it closes itself once a run verifies the ticket done, or a "
                    f"valid waiver accepts it.")
        failing = [_criterion_line(c, None) for c in rt.criteria if c.outcome not in ("pass", "waived")
                   and criterion_outcome(c) != "not applicable"]
        detail = ["Criteria that do not pass:", "", *failing] if failing else _detail(rt)
    else:
        verified = "accepted under a waiver" if rt.status == "waived" else "verified done"
        headline = (f"**opsready: closed again.** This issue was reopened, but {rt.id} is {verified} "
                    f"in the latest run (**{rt.status}**). If the platform is wrong in a way the "
                    f"checks miss, add a criterion that shows it; a run that finds it reopens this "
                    f"issue.")
        detail = _detail(rt)
    return _blocks([comment_marker(rt.id, facts.run.id, rt.status, action), headline], detail,
                   _run_lines(facts))
