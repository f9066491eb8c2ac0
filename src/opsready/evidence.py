"""Evidence that a check records, and the redaction every piece of it passes through.

A check asks for the ``evidence`` fixture and calls ``evidence.record(name, value)`` for
facts (headers, measured RTO, rule names) and ``evidence.attach(name, content, mime)`` for
documents (a drill report). Redaction runs before anything is stored, so nothing that
reaches a report, a log or the console carries a configured secret.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["REDACTED", "Evidence", "EvidenceItem", "Redactor", "redactor"]

REDACTED = "[redacted]"

# Header names whose values are credentials, whatever they contain.
_SECRET_HEADERS = {
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "cookie",
    "set-cookie",
    "project-access-token",
    "x-signature",
    "x-hub-signature-256",
    "stripe-signature",
    "webhook-signature",
    "x-amz-security-token",
}

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # Passwords in DSNs and URLs: scheme://user:password@host
    (re.compile(r"(?P<keep>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]+:)[^\s@/]+(?=@)"), r"\g<keep>" + REDACTED),
    # password=... in key/value DSNs
    (re.compile(r"(?P<keep>\bpassword\s*=\s*)('[^']*'|\S+)", re.I), r"\g<keep>" + REDACTED),
    # Authorization-style values
    (re.compile(r"(?P<keep>\b(?:Bearer|Basic|token)\s+)[A-Za-z0-9._~+/=-]{8,}", re.I), r"\g<keep>" + REDACTED),
    # Header lines and JSON/dict entries for credential headers
    (
        re.compile(
            r"(?P<keep>[\"']?(?:authorization|x-api-key|project-access-token|api[_-]?key|"
            r"x-signature|stripe-signature|webhook-signature|secret|token|password)[\"']?\s*[:=]\s*[\"']?)"
            r"[^\"'\s,}]{4,}",
            re.I,
        ),
        r"\g<keep>" + REDACTED,
    ),
    # Token shapes: GitHub, Slack, Stripe, Standard Webhooks, AWS keys, JWTs
    (re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})\b"), REDACTED),
    (re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b"), REDACTED),
    (re.compile(r"\b(?:sk|rk|pk|whsec)_(?:live_|test_)?[A-Za-z0-9+/=]{12,}"), REDACTED),
    (re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"), REDACTED),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\b"), REDACTED),
    # hex signatures such as sha256=<64 hex>
    (re.compile(r"\bsha256=[0-9a-fA-F]{64}\b"), "sha256=" + REDACTED),
]


class Redactor:
    """Removes secrets from text and from JSON-like values.

    Configured secret values are registered with ``add``; they are removed wherever they
    appear, including URL-encoded and base64-encoded forms.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: list[str] = []

    def add(self, values: Iterable[str]) -> None:
        with self._lock:
            for value in values:
                if len(value) < 4:
                    continue
                for form in _forms(value):
                    if form not in self._secrets:
                        self._secrets.append(form)
            # Longest first, so a secret that contains another is removed whole.
            self._secrets.sort(key=len, reverse=True)

    def clear(self) -> None:
        with self._lock:
            self._secrets.clear()

    @property
    def secrets(self) -> list[str]:
        return list(self._secrets)

    def text(self, value: str) -> str:
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        for pattern, repl in _PATTERNS:
            value = pattern.sub(repl, value)
        return value

    def value(self, value: Any, key: str | None = None) -> Any:
        """Redact a JSON-like value. Credential header names lose their value whole."""
        if key is not None and key.lower() in _SECRET_HEADERS and value not in (None, ""):
            return REDACTED
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, bytes):
            return self.text(value.decode("utf-8", "replace"))
        if isinstance(value, dict):
            return {str(k): self.value(v, str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value(v) for v in value]
        if value is None or isinstance(value, bool | int | float):
            return value
        return self.text(str(value))


def _forms(secret: str) -> list[str]:
    from urllib.parse import quote

    forms = [secret, quote(secret, safe=""), base64.b64encode(secret.encode()).decode()]
    return [f for f in forms if len(f) >= 4]


# The process-wide redactor. Config loading registers every SecretStr with it.
redactor = Redactor()


@dataclass
class EvidenceItem:
    name: str
    # "value": any JSON fact; "attachment": a document; "measure": a number with a unit
    # (an RTO, a backup's age); "table": rows of a report table (the SLO table).
    kind: str
    value: Any = None
    mime: str = "application/json"
    encoding: str = "utf-8"  # "utf-8" or "base64" for attachments
    unit: str = ""  # measures only

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "value": self.value}
        if self.kind == "attachment":
            out["mime"] = self.mime
            out["encoding"] = self.encoding
        if self.kind == "measure":
            out["unit"] = self.unit
        return out


@dataclass
class Evidence:
    """What one criterion recorded. Everything is redacted on the way in."""

    items: list[EvidenceItem] = field(default_factory=list)
    redact: Redactor = field(default_factory=lambda: redactor)

    def record(self, name: str, value: Any) -> None:
        """Record a fact: any JSON-like value (dicts, lists, strings, numbers)."""
        clean = self.redact.value(_jsonable(value))
        self.items.append(EvidenceItem(name=name, kind="value", value=clean))

    def measure(self, name: str, value: float | None, unit: str) -> None:
        """Record a measured number with its unit (``"s"``, ``"h"``, ``"bytes"``). The report
        reads measures by name, e.g. the drill's ``rto_seconds``."""
        number = None if value is None else float(value)
        self.items.append(EvidenceItem(name=name, kind="measure", value=number, unit=unit))

    def table(self, name: str, rows: list[dict[str, Any]]) -> None:
        """Record a table: one dict per row, the same keys in every row. The report renders
        tables it knows by name (e.g. ``slo_table``)."""
        clean = self.redact.value(_jsonable(rows))
        self.items.append(EvidenceItem(name=name, kind="table", value=clean))

    def attach(self, name: str, content: str | bytes, mime: str = "text/plain") -> None:
        """Attach a document. Text is redacted; binary content is stored as base64."""
        if isinstance(content, bytes):
            try:
                text = content.decode("utf-8")
            except UnicodeDecodeError:
                data = base64.b64encode(content).decode()
                self.items.append(
                    EvidenceItem(name=name, kind="attachment", value=data, mime=mime, encoding="base64")
                )
                return
            content = text
        self.items.append(
            EvidenceItem(name=name, kind="attachment", value=self.redact.text(content), mime=mime)
        )

    def to_json(self) -> str:
        return json.dumps([i.to_dict() for i in self.items], default=str)

    @staticmethod
    def from_json(text: str) -> list[dict[str, Any]]:
        data = json.loads(text)
        return data if isinstance(data, list) else []


def _jsonable(value: Any) -> Any:
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return str(value)
