"""Keep an issue tracker in step with verified readiness: ``opsready sync``.

``base`` is the interface a tracker implements; ``github`` implements it for GitHub issues;
``issue_text`` renders what sync writes into an issue; ``plan`` works out and applies the
changes; ``sync`` is the command. ``docs/tracker-sync.md`` describes the behaviour.
"""

from opsready.tracker.base import CloseReason, TrackedIssue, Tracker

__all__ = ["CloseReason", "TrackedIssue", "Tracker"]
