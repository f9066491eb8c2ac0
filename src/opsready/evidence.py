"""Evidence that a check records, and the redaction every piece of it passes through.

A check asks for the ``evidence`` fixture and records four typed kinds:
``evidence.record(name, value)`` for facts (headers, rule names), ``evidence.measure(name,
value, unit)`` for measured numbers (the drill's RTO), ``evidence.table(name, rows)`` for
tables (the SLO table) and ``evidence.attach(name, content, mime)`` for documents (a drill
report). The report renders each kind the same way whoever recorded it; it never looks for
an evidence item by name. Redaction runs before anything is stored, so nothing that
reaches a report, a log or the console carries a configured secret.
"""

from __future__ import annotations

import base64
import json
import math
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

__all__ = [
    "REDACTED",
    "AttachmentItem",
    "Evidence",
    "EvidenceCut",
    "EvidenceItem",
    "MeasureItem",
    "Redactor",
    "TableItem",
    "ValueItem",
    "redactor",
]

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


class EvidenceCut(BaseModel):
    """Set on an evidence item that was cut to the per-item bound
    (``evidence_item_max_bytes``); the whole item is a file of the bundle."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    original_bytes: int = Field(description="the item's size as JSON before it was cut")
    kept_bytes: int = Field(description="how much of it the report keeps")
    file: str = Field(description="the whole item, relative to the report directory")


class _Item(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    # Most items are never cut: their JSON stays as it was, without a null ``cut``.
    cut: EvidenceCut | None = Field(default=None, exclude_if=lambda v: v is None)


class ValueItem(_Item):
    """A fact: any JSON value (headers, rule names, a backup's key and size)."""

    kind: Literal["value"] = "value"
    value: JsonValue = None


class AttachmentItem(_Item):
    """A document (a drill report). Binary content is base64."""

    kind: Literal["attachment"] = "attachment"
    value: str
    mime: str = "text/plain"
    encoding: Literal["utf-8", "base64"] = "utf-8"


class MeasureItem(_Item):
    """A measured number with its unit (an RTO in ``s``, an age in ``h``); null when the
    measurement did not complete."""

    kind: Literal["measure"] = "measure"
    value: float | None
    unit: str


class TableItem(_Item):
    """Rows of a table (the SLO compliance table): one mapping per row."""

    kind: Literal["table"] = "table"
    rows: list[dict[str, JsonValue]]
    note: str = ""


EvidenceItem = Annotated[ValueItem | AttachmentItem | MeasureItem | TableItem, Field(discriminator="kind")]


@dataclass
class Evidence:
    """What one criterion recorded. Everything is redacted on the way in."""

    items: list[EvidenceItem] = field(default_factory=list)
    redact: Redactor = field(default_factory=lambda: redactor)

    def record(self, name: str, value: Any) -> None:
        """Record a fact: any JSON-like value (dicts, lists, strings, numbers)."""
        self.items.append(ValueItem(name=name, value=self.redact.value(_jsonable(value))))

    def measure(self, name: str, value: float | None, unit: str) -> None:
        """Record a measured number with its unit (``"s"``, ``"h"``, ``"bytes"``). Every
        measure becomes a series of ``readiness.prom``."""
        number = None if value is None else float(value)
        if number is not None and not math.isfinite(number):
            number = None
        self.items.append(MeasureItem(name=name, value=number, unit=unit))

    def table(self, name: str, rows: list[dict[str, Any]], note: str = "") -> None:
        """Record a table: one mapping per row, the same keys in every row, and an optional
        note (what the numbers cover). The report shows every table in its tables section."""
        clean = self.redact.value(_jsonable(rows))
        if not isinstance(clean, list) or not all(isinstance(r, dict) for r in clean):
            raise TypeError(f"evidence.table({name!r}): rows must be a list of mappings")
        self.items.append(TableItem(name=name, rows=clean, note=self.redact.text(note)))

    def attach(self, name: str, content: str | bytes, mime: str = "text/plain") -> None:
        """Attach a document. Text is redacted; binary content is stored as base64."""
        if isinstance(content, bytes):
            try:
                text = content.decode("utf-8")
            except UnicodeDecodeError:
                data = base64.b64encode(content).decode()
                self.items.append(AttachmentItem(name=name, value=data, mime=mime, encoding="base64"))
                return
            content = text
        self.items.append(AttachmentItem(name=name, value=self.redact.text(content), mime=mime))

    def dump(self) -> list[dict[str, Any]]:
        """The items as JSON-ready mappings (what a worker sends to the controller)."""
        return [item.model_dump(mode="json") for item in self.items]


def _jsonable(value: Any) -> Any:
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return str(value)
