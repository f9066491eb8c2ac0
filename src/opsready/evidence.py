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
import bisect
import json
import math
import re
import threading
from collections.abc import Callable, Iterable
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
    "svix-signature",
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
            r"x-signature|stripe-signature|webhook-signature|svix-signature|secret|token|password)[\"']?\s*[:=]\s*[\"']?)"
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

# Whether any pattern above can match: most evidence strings (keys, statuses, names) match
# none, and one search is cheaper than a substitution per pattern. When this finds nothing,
# no substitution would change the text, so skipping them all changes nothing.
assert all(not pattern.flags & ~(re.I | re.U) for pattern, _ in _PATTERNS), \
    "the combined search below carries over IGNORECASE only"
_ANY_PATTERN = re.compile("|".join(
    ("(?i:{})" if pattern.flags & re.I else "(?:{})").format(pattern.pattern.replace("(?P<keep>", "("))
    for pattern, _ in _PATTERNS))


class Redactor:
    """Removes secrets from text and from JSON-like values.

    Configured secret values are registered with ``add``. Each is removed wherever it appears,
    in every encoding a target may echo it back in: URL-encoded (once or several times, upper
    or lower case), hex (upper or lower case), base64 and base64url (of the secret alone, and
    of a longer string that contains it, at each of the three byte alignments), and as a JSON
    string. A registered DSN or URL also registers its password and ``user:password``, since a
    server echoes those, not the whole DSN.

    Redact first, then shorten: ``excerpt`` does both in that order, so a cut never leaves a
    secret's prefix behind. Every text also loses lone surrogates (replaced by U+FFFD), so
    whatever a target sent can be written as UTF-8.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # The registered forms, longest first (a secret that contains another is removed
        # whole), and minus each one's length in the same order (ascending, for bisect).
        # Replaced as one tuple, so a thread redacting meanwhile sees one or the other.
        self._table: tuple[list[str], list[int]] = ([], [])

    def add(self, values: Iterable[str]) -> None:
        with self._lock:
            forms = list(self._table[0])
            for value in values:
                for part in _secret_parts(value):
                    if len(part) < _MIN_SECRET:
                        continue
                    for form in _forms(part):
                        if form not in forms:
                            forms.append(form)
            forms.sort(key=len, reverse=True)
            self._table = (forms, [-len(form) for form in forms])

    def text(self, value: str) -> str:
        value = _LONE_SURROGATE.sub("\ufffd", value)
        forms, lengths = self._table
        # Only secrets no longer than the text can be in it.
        for secret in forms[bisect.bisect_left(lengths, -len(value)):]:
            if secret in value:
                value = value.replace(secret, REDACTED)
        if _ANY_PATTERN.search(value) is None:
            return value
        for pattern, repl in _PATTERNS:
            value = pattern.sub(repl, value)
        return value

    def excerpt(self, value: str | bytes, limit: int = 200) -> str:
        """At most ``limit`` characters of ``value``, redacted before it is cut (cutting first
        could leave a secret's prefix that no longer matches). Bytes are decoded leniently."""
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        clean = self.text(value)
        if len(clean) <= limit:
            return clean
        cut = clean[: max(limit - 3, 0)]
        # Never end inside the marker: half of "[redacted]" would read like data.
        mark = cut.rfind("[")
        if mark >= 0 and REDACTED.startswith(cut[mark:]):
            cut = cut[:mark]
        return cut + "..."

    def value(self, value: Any, key: str | None = None) -> Any:
        """Redact a JSON-like value. Credential header names lose their value whole."""
        if key is not None and key.lower() in _SECRET_HEADERS and value not in (None, ""):
            return REDACTED
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, bytes):
            return self.text(value.decode("utf-8", "replace"))
        if isinstance(value, dict):
            return {self.text(str(k)): self.value(v, str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value(v) for v in value]
        if value is None or isinstance(value, bool | int | float):
            return value
        return self.text(str(value))


# Shorter values are not registered: they would redact ordinary words.
_MIN_SECRET = 4
# A base64 fragment of a secret inside a longer encoded string must be at least this long to
# be matched (shorter fragments would match unrelated base64 by chance).
_MIN_FRAGMENT = 10
# How many times a target may have URL-encoded a secret before echoing it.
_URL_DEPTH = 4
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_URL_USERINFO = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://(?P<user>[^:@/?#\s]*):(?P<password>[^@/?#\s]*)@")
_KV_PASSWORD = re.compile(r"(?:^|\s)password\s*=\s*(?:'(?P<quoted>(?:[^'\\]|\\.)*)'|(?P<bare>\S+))", re.I)
_QUERY_PASSWORD = re.compile(r"[?&](?:password|passwd|pwd)=(?P<value>[^&#\s]+)", re.I)


def _secret_parts(secret: str) -> list[str]:
    """The secret, and what a server echoes of it when it is a DSN or a URL: the password and
    ``user:password``, raw and percent-decoded."""
    from urllib.parse import unquote

    parts = [secret]
    m = _URL_USERINFO.match(secret.strip())
    if m:
        user, password = m.group("user"), m.group("password")
        parts += [password, unquote(password), f"{user}:{password}", f"{unquote(user)}:{unquote(password)}"]
    for kv in _KV_PASSWORD.finditer(secret):
        quoted = kv.group("quoted")
        parts.append(re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else kv.group("bare"))
    for q in _QUERY_PASSWORD.finditer(secret):
        parts += [q.group("value"), unquote(q.group("value"))]
    return list(dict.fromkeys(p for p in parts if p))


def _forms(secret: str) -> list[str]:
    """Every encoding of ``secret`` that ``Redactor.text`` looks for."""
    from urllib.parse import quote, quote_plus

    raw = secret.encode("utf-8", "surrogatepass")
    forms = [secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1],
             raw.hex(), raw.hex().upper()]
    # URL encoding, applied up to _URL_DEPTH times, with upper- and lower-case escapes.
    encoders: list[Callable[[str], str]] = [lambda s: quote(s, safe=""), quote, quote_plus]
    for encode in encoders:
        current = secret
        for _ in range(_URL_DEPTH):
            current = encode(current)
            forms += [current, re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), current)]
    # base64 of the secret alone, and the part of the encoding of any longer string holding it
    # that depends on the secret only, at each of the three byte alignments.
    forms.append(base64.b64encode(raw).decode())
    for align in range(3):
        encoded = base64.b64encode(b"\0" * align + raw).decode().rstrip("=")
        start = -(-8 * align // 6)
        end = (8 * (align + len(raw))) // 6
        fragment = encoded[start:end]
        if len(fragment) >= _MIN_FRAGMENT:
            forms.append(fragment)
    forms += [f.replace("+", "-").replace("/", "_") for f in forms if "+" in f or "/" in f]
    return [f for f in dict.fromkeys(forms) if len(f) >= _MIN_SECRET]


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
