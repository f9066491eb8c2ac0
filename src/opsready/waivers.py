"""Waivers: failing criteria accepted for a limited time, by someone else.

A waiver names one criterion (``criterion: "P3-003::test_versioning_enabled"``), or a ticket
together with the criteria it accepts (``ticket: P3-003`` and ``criteria: [test_a, test_b]``).
A ticket waiver must list its criteria: it accepts the failures that were known when it was
approved, so a criterion of the same ticket that starts failing later is not silently waived.
A name without ``[param]`` covers every parametrization of that test.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from opsready._errors import ConfigError
from opsready._yaml import safe_load

__all__ = ["Waiver", "WaiverSet", "load_waivers"]


_KEYS = ("ticket", "criterion", "criteria", "reason", "requested_by", "approved_by", "expires")


@dataclass(frozen=True)
class Waiver:
    target: str  # a ticket id, or "TICKET::criterion"
    reason: str
    requested_by: str
    approved_by: str
    expires: dt.date
    # For a ticket waiver: the test names it accepts (``test_a`` or ``test_a[param]``).
    criteria: tuple[str, ...] = ()
    source: str = ""

    @property
    def ticket(self) -> str:
        return self.target.split("::", 1)[0]

    @staticmethod
    def names(entry: str, test_name: str) -> bool:
        """``test_a`` names ``test_a`` and every ``test_a[...]``; ``test_a[x]`` only itself."""
        return test_name == entry or (test_name.startswith(entry + "[") and "[" not in entry)

    def covers(self, ticket: str, criterion: str) -> bool:
        """Whether this waiver accepts a failure of ``criterion`` (``TICKET::test_name``)."""
        ticket_of, _, test_name = criterion.partition("::")
        if "::" in self.target:
            waived_ticket, _, waived_test = self.target.partition("::")
            return waived_ticket == ticket_of and self.names(waived_test, test_name)
        return self.target == ticket == ticket_of and any(self.names(e, test_name) for e in self.criteria)


@dataclass
class WaiverSet:
    valid: list[Waiver]
    warnings: list[str]

    def find(self, ticket: str, criterion: str) -> Waiver | None:
        """The first valid waiver that accepts a failure of ``criterion``."""
        return next((w for w in self.valid if w.covers(ticket, criterion)), None)


def load_waivers(path: Path | None, known_tickets: list[str], today: dt.date) -> WaiverSet:
    """Read the waiver file. Invalid or expired entries do not apply: they become warnings.

    A file that is not YAML or not a list is a config error (exit 4): silently ignoring it
    would hide every waiver the team relies on.
    """
    if path is None or not path.is_file():
        return WaiverSet([], [])
    file = str(path)
    try:
        raw = safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        raise ConfigError(file, "", "is not valid YAML", "fix the syntax") from None
    entries = raw.get("waivers", []) if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(file, "waivers", "is not a list", "write `waivers:` followed by `- ticket: ...` entries")
    valid: list[Waiver] = []
    warnings: list[str] = []
    for i, entry in enumerate(entries):
        label = f"{file}: waivers[{i}]"
        if not isinstance(entry, dict):
            warnings.append(f"{label}: not a mapping; ignored")
            continue
        target = str(entry.get("criterion") or entry.get("ticket") or "")
        label = f"{file}: waiver for {target or f'entry {i}'}"
        unknown_keys = [str(k) for k in entry if k not in _KEYS]
        if unknown_keys:
            warnings.append(f"{label}: unknown key {', '.join(unknown_keys)} (known: {', '.join(_KEYS)}); "
                            f"not applied")
            continue
        missing = [k for k in ("reason", "requested_by", "approved_by", "expires") if not entry.get(k)]
        if not target:
            missing.insert(0, "ticket")
        if missing:
            warnings.append(f"{label}: missing {', '.join(missing)}; not applied")
            continue
        ticket = target.split("::", 1)[0]
        if ticket not in known_tickets:
            warnings.append(f"{label}: unknown ticket; not applied (known: {', '.join(known_tickets)})")
            continue
        criteria, problem = _criteria(entry, target, ticket)
        if problem:
            warnings.append(f"{label}: {problem}; not applied")
            continue
        requester, approver = str(entry["requested_by"]).strip(), str(entry["approved_by"]).strip()
        if requester.lower() == approver.lower():
            warnings.append(
                f"{label}: approved_by is the requester ({approver}); a different person must approve; not applied"
            )
            continue
        expires = entry["expires"]
        if isinstance(expires, str):
            try:
                expires = dt.date.fromisoformat(expires)
            except ValueError:
                warnings.append(f"{label}: expires {expires!r} is not a YYYY-MM-DD date; not applied")
                continue
        if isinstance(expires, dt.datetime):
            expires = expires.date()
        if not isinstance(expires, dt.date):
            warnings.append(f"{label}: expires is not a date; not applied")
            continue
        if expires < today:
            warnings.append(f"{label}: expired on {expires.isoformat()}; not applied")
            continue
        valid.append(Waiver(target, str(entry["reason"]), requester, approver, expires, criteria, file))
    return WaiverSet(valid, warnings)


def _criteria(entry: dict[Any, Any], target: str, ticket: str) -> tuple[tuple[str, ...], str | None]:
    """The criteria a ticket waiver accepts, or why the entry is malformed."""
    raw = entry.get("criteria")
    if "::" in target:
        if raw is not None:
            return (), "a criterion waiver takes no criteria list; write one waiver per criterion"
        return (), None
    if not raw:
        return (), (f"a ticket waiver must list the failing criteria it accepts, e.g. "
                    f"`criteria: [test_name]`, so a later new failure of {ticket} is not waived")
    if not isinstance(raw, list) or not all(isinstance(x, str) and x.strip() for x in raw):
        return (), "criteria is not a list of test names"
    names = []
    for name in raw:
        owner, sep, test_name = name.strip().rpartition("::")
        if sep and owner != ticket:
            return (), f"criteria entry {name!r} belongs to {owner}, not {ticket}"
        names.append(test_name)
    return tuple(names), None
