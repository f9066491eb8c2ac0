"""Waivers: a failing ticket or criterion accepted for a limited time, by someone else."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from opsready._errors import ConfigError

__all__ = ["Waiver", "WaiverSet", "load_waivers"]


@dataclass(frozen=True)
class Waiver:
    target: str  # a ticket id, or "TICKET::criterion"
    reason: str
    requested_by: str
    approved_by: str
    expires: dt.date

    @property
    def ticket(self) -> str:
        return self.target.split("::", 1)[0]

    def covers(self, ticket: str, criterion: str) -> bool:
        return self.target in (ticket, criterion)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "reason": self.reason,
            "requested_by": self.requested_by,
            "approved_by": self.approved_by,
            "expires": self.expires.isoformat(),
        }


@dataclass
class WaiverSet:
    valid: list[Waiver]
    warnings: list[str]

    def find(self, ticket: str, criterion: str) -> Waiver | None:
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
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
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
        missing = [k for k in ("reason", "requested_by", "approved_by", "expires") if not entry.get(k)]
        if not target:
            missing.insert(0, "ticket")
        if missing:
            warnings.append(f"{label}: missing {', '.join(missing)}; not applied")
            continue
        if target.split("::", 1)[0] not in known_tickets:
            warnings.append(f"{label}: unknown ticket; not applied (known: {', '.join(known_tickets)})")
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
        valid.append(Waiver(target, str(entry["reason"]), requester, approver, expires))
    return WaiverSet(valid, warnings)
