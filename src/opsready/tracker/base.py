"""The tracker interface: what ``opsready sync`` needs from an issue tracker.

A tracker holds one issue per catalogue ticket. Sync finds it by a label, reads its labels,
state, body and comments, and changes them with the few operations below. GitHub implements
it (``opsready.tracker.github``); Jira or GitLab need the same nine operations, with their own
words for them (a Jira transition for close and reopen, a GitLab note for a comment).
Every operation raises a ``ProbeError`` subclass when the tracker cannot be reached, refuses
the token or answers in a shape it cannot read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = ["CloseReason", "TrackedIssue", "Tracker"]

# Why an issue is closed: the ticket is verified done, or a waiver accepts it as it is.
CloseReason = Literal["completed", "not_planned"]


@dataclass(frozen=True)
class TrackedIssue:
    """One issue as the tracker shows it now."""

    key: str  # how people name it: "#12" on GitHub, "OPS-12" on Jira
    url: str  # where a person opens it
    title: str
    body: str
    labels: frozenset[str]
    closed: bool
    ref: str  # what the tracker's API addresses it by (GitHub: the number)


class Tracker(Protocol):
    """An issue tracker, as ``opsready sync`` uses it."""

    @property
    def name(self) -> str:
        """The tracker's kind, e.g. ``github``."""

    @property
    def location(self) -> str:
        """Where the issues live, e.g. ``acme/relay``."""

    def find(self, label: str) -> list[TrackedIssue]:
        """Every issue, open or closed, that carries ``label``, oldest first."""

    def comments(self, issue: TrackedIssue) -> list[str]:
        """The text of every comment of the issue, oldest first."""

    def create(self, title: str, body: str, labels: list[str]) -> TrackedIssue:
        """Create an open issue. The returned labels are those the tracker really set."""

    def comment(self, issue: TrackedIssue, body: str) -> None: ...

    def add_labels(self, issue: TrackedIssue, labels: list[str]) -> None: ...

    def remove_label(self, issue: TrackedIssue, label: str) -> None: ...

    def set_body(self, issue: TrackedIssue, body: str) -> None: ...

    def close_issue(self, issue: TrackedIssue, reason: CloseReason) -> None: ...

    def reopen_issue(self, issue: TrackedIssue) -> None: ...

    def close(self) -> None:
        """Release the connection to the tracker."""
