"""Attestations: a person's signed-off statement that a manual action of a ticket was done.

Some actions no probe can verify (a rehearsal with the on-call team, a review meeting). The
catalogue marks them ``manual: true``; each is covered by an entry of
``config/attestations.yaml``::

    attestations:
      - ticket: P1-003
        action: Rehearse a rollback on staging
        attested_by: dana@example.com
        approved_by: lee@example.com      # a different person
        date: 2026-11-20                   # when it was done
        evidence: https://wiki.example.com/ops/rollback-rehearsal
        expires: 2027-05-20                # when it must be done again

An entry that is malformed, self-approved, dated in the future, expired, without an http(s)
evidence URL, or naming no manual action of its ticket does not apply, and the report lists it
as a warning. A manual action without a valid attestation is not covered: its ticket is
unverified.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from opsready._errors import ConfigError
from opsready._yaml import safe_load
from opsready.catalogue import Catalogue

__all__ = ["Attestation", "AttestationSet", "load_attestations"]

_KEYS = ("ticket", "action", "attested_by", "approved_by", "date", "evidence", "expires")
_URL = re.compile(r"^https?://[^\s/]+\S*$")


@dataclass(frozen=True)
class Attestation:
    ticket: str
    action: str
    attested_by: str
    approved_by: str
    date: dt.date
    evidence: str
    expires: dt.date
    source: str = ""


@dataclass
class AttestationSet:
    valid: list[Attestation]
    warnings: list[str]

    def find(self, ticket: str, action: str) -> Attestation | None:
        """The valid attestation of this action that expires last."""
        found = [a for a in self.valid if a.ticket == ticket and _same(a.action, action)]
        return max(found, key=lambda a: a.expires) if found else None


def _same(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


def _date(value: Any) -> dt.date | None:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            return None
    return None


def load_attestations(path: Path | None, catalogue: Catalogue, today: dt.date) -> AttestationSet:
    """Read the attestation file. Invalid or expired entries do not apply: they become warnings.
    A file that is not YAML or not a list is a config error (exit 4)."""
    if path is None or not path.is_file():
        return AttestationSet([], [])
    file = str(path)
    try:
        raw = safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError):
        raise ConfigError(file, "", "is not valid YAML", "fix the syntax") from None
    entries = raw.get("attestations", []) if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(file, "attestations", "is not a list",
                          "write `attestations:` followed by `- ticket: ...` entries")
    valid: list[Attestation] = []
    warnings: list[str] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            warnings.append(f"{file}: attestations[{i}]: not a mapping; not applied")
            continue
        label = f"{file}: attestation of {entry.get('ticket') or '?'} '{entry.get('action') or f'entry {i}'}'"
        problem = _problem(entry, catalogue, today)
        if problem:
            warnings.append(f"{label}: {problem}; not applied")
            continue
        valid.append(Attestation(
            ticket=str(entry["ticket"]), action=str(entry["action"]),
            attested_by=str(entry["attested_by"]).strip(), approved_by=str(entry["approved_by"]).strip(),
            date=_date(entry["date"]) or today, evidence=str(entry["evidence"]).strip(),
            expires=_date(entry["expires"]) or today, source=file,
        ))
    return AttestationSet(valid, warnings)


def _problem(entry: dict[Any, Any], catalogue: Catalogue, today: dt.date) -> str | None:
    unknown = [str(k) for k in entry if k not in _KEYS]
    if unknown:
        return f"unknown key {', '.join(unknown)} (known: {', '.join(_KEYS)})"
    missing = [k for k in _KEYS if not entry.get(k)]
    if missing:
        return f"missing {', '.join(missing)}"
    ticket = catalogue.get(str(entry["ticket"]))
    if ticket is None:
        return f"unknown ticket (known: {', '.join(catalogue.ids)})"
    manual = [a.action for a in ticket.actions if a.manual]
    if not any(_same(str(entry["action"]), m) for m in manual):
        known = "; ".join(f"'{m}'" for m in manual) or "none"
        return f"{ticket.id} has no manual action by that name (its manual actions: {known})"
    attested_by, approved_by = str(entry["attested_by"]).strip(), str(entry["approved_by"]).strip()
    if attested_by.casefold() == approved_by.casefold():
        return f"approved_by is the person who attests ({approved_by}); a different person must approve"
    if not _URL.match(str(entry["evidence"]).strip()):
        return "evidence is not an http(s) URL; link the record of what was done"
    done, expires = _date(entry["date"]), _date(entry["expires"])
    if done is None:
        return f"date {entry['date']!r} is not a YYYY-MM-DD date"
    if expires is None:
        return f"expires {entry['expires']!r} is not a YYYY-MM-DD date"
    if done > today:
        return f"dated {done.isoformat()}, after today ({today.isoformat()})"
    if expires <= done:
        return f"expires {expires.isoformat()}, not after its date {done.isoformat()}"
    if expires < today:
        return f"expired on {expires.isoformat()}"
    return None
