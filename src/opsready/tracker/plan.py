"""From one readiness bundle and what the tracker shows now, the changes that make the tracker
tell the same story; then applying them, one at a time, keeping count of what was done.

Planning only reads. Every change is derived from the difference between the wanted state and
the issue as it is, so a second sync of the same bundle plans nothing, and a sync cut short by
a failure is finished by the next one. The order of a ticket's changes makes that hold for
comments too: the comment goes first, so a re-run that still sees the old status finds the
comment's marker and does not post it twice; the labels, the open or closed state and the
description follow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from opsready._errors import AccessRefused, ProbeError, TargetUnreachable
from opsready.catalogue import Catalogue
from opsready.catalogue import Ticket as CatalogueTicket
from opsready.probes.github import RateLimited
from opsready.report.model import Readiness, Status
from opsready.report.model import Ticket as ReadinessTicket
from opsready.tracker.base import CloseReason, TrackedIssue, Tracker
from opsready.tracker.issue_text import (
    IssueAction,
    RecordedState,
    RunFacts,
    hand_comment,
    last_announcement,
    managed_section,
    merged_body,
    read_state,
    same_text,
    state_of,
    status_comment,
)

__all__ = [
    "STATUS_LABEL_PREFIX",
    "TICKET_LABEL_PREFIX",
    "Change",
    "ChangeResult",
    "TicketPlan",
    "apply_plans",
    "plan_ticket",
    "plan_tickets",
    "status_label",
    "ticket_label",
]

TICKET_LABEL_PREFIX = "opsready:"
STATUS_LABEL_PREFIX = "readiness:"
ChangeKind = Literal["create", "comment", "add_labels", "remove_label", "close", "reopen", "set_body"]

# Failures after which no further request can succeed: stop, and list the rest as not applied.
_STOPPING = (RateLimited, AccessRefused, TargetUnreachable)


def ticket_label(ticket_id: str) -> str:
    return f"{TICKET_LABEL_PREFIX}{ticket_id}"


def status_label(status: Status) -> str:
    return f"{STATUS_LABEL_PREFIX}{status}"


def _close_reason(status: Status) -> CloseReason:
    # A waiver accepts the ticket as it is: the work was not done, so "not planned".
    return "not_planned" if status == "waived" else "completed"


@dataclass(frozen=True)
class Change:
    """One write to the tracker. ``summary`` is the line the console shows."""

    ticket: str
    kind: ChangeKind
    summary: str
    title: str = ""
    body: str = ""
    labels: tuple[str, ...] = ()
    reason: CloseReason = "completed"


@dataclass
class TicketPlan:
    """The changes for one ticket's issue, or why the ticket is left alone."""

    ticket: str
    issue: TrackedIssue | None
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Set when the issue is left alone; ``blocking`` when that leaves the tracker wrong.
    left_alone: str | None = None
    blocking: bool = False

    @property
    def key(self) -> str:
        return self.issue.key if self.issue is not None else "new"


@dataclass(frozen=True)
class ChangeResult:
    change: Change
    issue: str
    state: Literal["applied", "failed", "not attempted"]
    error: str = ""


def plan_tickets(readiness: Readiness, catalogue: Catalogue, tracker: Tracker, facts: RunFacts) -> list[TicketPlan]:
    """A plan per catalogue ticket, in catalogue order. A ticket whose issue cannot be read
    gets a plan that leaves it alone and says why; reading stops at a failure no later
    request can get past (rate limit beyond its bound, refused token, tracker unreachable)."""
    plans: list[TicketPlan] = []
    stopped: str | None = None
    for ticket in catalogue.tickets:
        if stopped is not None:
            plans.append(TicketPlan(ticket.id, None, left_alone=f"not read: {stopped}", blocking=True))
            continue
        try:
            plans.append(plan_ticket(ticket, readiness.ticket(ticket.id), tracker, facts))
        except ProbeError as exc:
            plans.append(TicketPlan(ticket.id, None, left_alone=f"could not be read: {exc}", blocking=True))
            if isinstance(exc, _STOPPING):
                stopped = f"reading stopped after: {exc}"
    return plans


def plan_ticket(ticket: CatalogueTicket, rt: ReadinessTicket | None, tracker: Tracker,
                facts: RunFacts) -> TicketPlan:
    """The changes that make ``ticket``'s issue show ``rt``'s status (reads the tracker)."""
    run = facts.run
    if rt is None:
        return TicketPlan(ticket.id, None, left_alone=f"not in run {run.id}'s report")
    if not rt.selected:
        return TicketPlan(ticket.id, None, left_alone=f"not judged by run {run.id} (--ticket)")
    found = tracker.find(ticket_label(ticket.id))
    state = state_of(rt, run)
    wanted_closed = rt.status in ("done", "waived")
    labels = (ticket_label(ticket.id), status_label(rt.status))
    if not found:
        return _new_issue(ticket, rt, facts, state, labels, wanted_closed)

    issue = found[0]
    plan = TicketPlan(ticket.id, issue)
    if len(found) > 1:
        others = ", ".join(i.key for i in found[1:])
        plan.notes.append(f"{others} also carry {ticket_label(ticket.id)}; only {issue.key}, the oldest, "
                          f"is kept in step: close or relabel the others")
    recorded = read_state(issue.body)
    if recorded is not None and recorded.environment != run.environment:
        plan.left_alone = (f"{issue.key} is kept by environment '{recorded.environment}', not "
                           f"'{run.environment}': sync one environment into a repository")
        plan.blocking = True
        return plan
    if recorded is not None and recorded.since > run.started_at:
        plan.left_alone = (f"{issue.key} already shows run {recorded.run_id}, which is newer than "
                           f"run {run.id}; not moved back")
        return plan

    shown = sorted(label for label in issue.labels if label.startswith(STATUS_LABEL_PREFIX))
    action: IssueAction = "none"
    if wanted_closed and not issue.closed:
        action = "close"
    elif not wanted_closed and issue.closed:
        action = "reopen"

    # The comments say what sync last announced. The labels alone cannot: a new issue carries
    # its labels before its first comment is posted, and a person may edit labels.
    last = last_announcement(tracker.comments(issue), ticket.id)
    if last is None or last.status != rt.status:
        was = last.status if last is not None else None
        comment = status_comment(facts, rt, was, recorded if last is not None else None, action)
        what = f"status {rt.status}" + (f" (was {was})" if was else " (first sync)")
        plan.changes.append(Change(ticket.id, "comment", f"comment: {what}", body=comment))
    elif action != "none" and (last.run_id, last.action) != (run.id, action):
        # The status was announced, and the issue has since been closed or reopened against
        # it: by a person, since a sync's own close or reopen follows its comment. Within
        # one run the announcement already says it, so a repeat is not posted.
        what = f"why it is {'reopened' if action == 'reopen' else 'closed again'}"
        plan.changes.append(Change(ticket.id, "comment", f"comment: {what}",
                                   body=hand_comment(facts, rt, action)))

    missing = [label for label in labels if label not in issue.labels]
    if missing:
        plan.changes.append(Change(ticket.id, "add_labels", f"add label {', '.join(missing)}",
                                   labels=tuple(missing)))
    for label in shown:
        if label != status_label(rt.status):
            plan.changes.append(Change(ticket.id, "remove_label", f"remove label {label}", labels=(label,)))
    if action == "close":
        reason = _close_reason(rt.status)
        plan.changes.append(Change(ticket.id, "close", f"close as {reason.replace('_', ' ')}", reason=reason))
    elif action == "reopen":
        plan.changes.append(Change(ticket.id, "reopen", "reopen"))

    # The description changes only with the verdicts, so a nightly run that finds nothing new
    # does not edit it.
    unchanged = (recorded is not None and recorded.status == rt.status
                 and recorded.criteria == state.criteria)
    keep = recorded if unchanged and recorded is not None else state
    body = merged_body(issue.body, managed_section(ticket, rt, keep))
    if not same_text(body, issue.body):
        plan.changes.append(Change(ticket.id, "set_body", "update the description (checklist and state)",
                                   body=body))
    return plan


def _new_issue(ticket: CatalogueTicket, rt: ReadinessTicket, facts: RunFacts, state: RecordedState,
               labels: tuple[str, ...], wanted_closed: bool) -> TicketPlan:
    plan = TicketPlan(ticket.id, None)
    title = f"{ticket.id} {ticket.title}"
    plan.changes.append(Change(ticket.id, "create", f'create "{title}" labelled {", ".join(labels)}',
                               title=title, body=managed_section(ticket, rt, state), labels=labels))
    action: IssueAction = "close" if wanted_closed else "none"
    plan.changes.append(Change(ticket.id, "comment", f"comment: status {rt.status} (first sync)",
                               body=status_comment(facts, rt, None, None, action)))
    if wanted_closed:
        reason = _close_reason(rt.status)
        plan.changes.append(Change(ticket.id, "close", f"close as {reason.replace('_', ' ')}", reason=reason))
    return plan


def apply_plans(plans: list[TicketPlan], tracker: Tracker,
                on_result: Callable[[ChangeResult], None] | None = None,
                on_plan: Callable[[TicketPlan], None] | None = None) -> list[ChangeResult]:
    """Apply every change in order. A failure skips the rest of its ticket (those changes build
    on it); a failure no later request can get past skips everything after it. ``on_plan``
    hears of each ticket before its changes, ``on_result`` of each change after it."""
    results: list[ChangeResult] = []

    def record(result: ChangeResult) -> None:
        results.append(result)
        if on_result is not None:
            on_result(result)

    stopped: str | None = None
    for plan in plans:
        if on_plan is not None:
            on_plan(plan)
        skip_rest: str | None = stopped
        pending = list(plan.changes)
        while pending:
            change = pending.pop(0)
            if skip_rest is not None:
                record(ChangeResult(change, plan.key, "not attempted", skip_rest))
                continue
            try:
                pending[:0] = _apply(change, plan, tracker)
            except ProbeError as exc:
                record(ChangeResult(change, plan.key, "failed", str(exc)))
                skip_rest = f"after the failure above on {plan.ticket}"
                if isinstance(exc, _STOPPING):
                    stopped = skip_rest = f"stopped after: {exc}"
                continue
            record(ChangeResult(change, plan.key, "applied"))
    return results


def _apply(change: Change, plan: TicketPlan, tracker: Tracker) -> list[Change]:
    """Carry out one change; return the changes it turns out to need next."""
    if change.kind == "create":
        created = tracker.create(change.title, change.body, list(change.labels))
        plan.issue = created
        # GitHub drops the labels of a new issue silently when the token may not set them;
        # without its ticket label the issue could not be found again, so add them now.
        dropped = [label for label in change.labels if label not in created.labels]
        if dropped:
            return [Change(change.ticket, "add_labels", f"add label {', '.join(dropped)} (dropped on create)",
                           labels=tuple(dropped))]
        return []
    issue = plan.issue
    if issue is None:  # only a create makes an issue, and it comes first in a plan
        raise AssertionError(f"{change.ticket}: {change.kind} planned without an issue")
    if change.kind == "comment":
        tracker.comment(issue, change.body)
    elif change.kind == "add_labels":
        tracker.add_labels(issue, list(change.labels))
    elif change.kind == "remove_label":
        tracker.remove_label(issue, change.labels[0])
    elif change.kind == "close":
        tracker.close_issue(issue, change.reason)
    elif change.kind == "reopen":
        tracker.reopen_issue(issue)
    elif change.kind == "set_body":
        tracker.set_body(issue, change.body)
    return []
