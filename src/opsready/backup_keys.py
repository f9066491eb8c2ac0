"""Which objects of a bucket are backups: a key pattern with date fields.

``backups.key_pattern`` is a glob relative to ``backups.s3.prefix`` in which ``%Y``, ``%m``
and ``%d`` (and optionally ``%H``, ``%M``, ``%S``) stand for the backup's date, as in
``strftime``; ``*`` matches any run of characters except ``/`` and ``?`` one character;
``%%`` is a literal ``%``. For example ``%Y-%m-%d/relay.*`` matches
``2025-03-01/relay.dump`` but neither ``2025-03-01/relay.dump.sha256`` (sidecars are never
backups), ``2025-03-01/backup.log`` nor ``2025-03-01/analytics.dump``.

The date fields come first and in calendar order (year, month, day, then hour, minute,
second), with nothing variable before them. Keys then sort by date, so the probe lists only
the days it needs with S3's ``StartAfter`` instead of the whole history on every run.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

__all__ = ["KeyPattern", "KeyPatternError"]

_FIELDS = {"Y": r"(?P<Y>\d{4})", "m": r"(?P<m>\d{2})", "d": r"(?P<d>\d{2})",
           "H": r"(?P<H>\d{2})", "M": r"(?P<M>\d{2})", "S": r"(?P<S>\d{2})"}
_ORDER = "YmdHMS"
_TOKEN = re.compile(r"%(.)|\*|\?|[^%*?]+", re.S)


class KeyPatternError(ValueError):
    """The pattern cannot be used; the message says why and how to fix it."""


@dataclass(frozen=True)
class KeyPattern:
    """A compiled ``backups.key_pattern`` under a prefix."""

    prefix: str
    pattern: str
    literal_head: str  # the fixed text between the prefix and the first date field
    regex: re.Pattern[str]
    fields: str  # the date fields in order, e.g. "Ymd"
    # The pattern from its first date field on: ("field", "Y"), ("text", "-"), ("wild", "*").
    after_head: tuple[tuple[str, str], ...]

    @classmethod
    def compile(cls, pattern: str, prefix: str = "") -> KeyPattern:
        parts: list[str] = []
        after: list[tuple[str, str]] = []
        fields = ""
        head: str | None = None
        literal = ""
        for m in _TOKEN.finditer(pattern):
            tok = m.group()
            if m.group(1) is not None:
                name = m.group(1)
                if name == "%":
                    parts.append("%")
                    if head is None:
                        literal += "%"
                    else:
                        after.append(("text", "%"))
                    continue
                if name not in _FIELDS:
                    raise KeyPatternError(f"%{name} is not a date field; use %Y, %m, %d, %H, "
                                          f"%M or %S")
                if name in fields:
                    raise KeyPatternError(f"%{name} appears twice")
                if head is None:
                    head = literal
                fields += name
                parts.append(_FIELDS[name])
                after.append(("field", name))
            elif tok in ("*", "?"):
                if head is None:
                    raise KeyPatternError(
                        "a wildcard comes before the date; put %Y-%m-%d (or similar) before any "
                        "* or ? so backups can be listed by date")
                parts.append("[^/]*" if tok == "*" else "[^/]")
                after.append(("wild", tok))
            else:
                parts.append(re.escape(tok))
                if head is None:
                    literal += tok
                else:
                    after.append(("text", tok))
        if not fields.startswith("Ymd") or _ORDER[:len(fields)] != fields:
            raise KeyPatternError(
                "the date fields must be %Y, %m, %d (then optionally %H, %M, %S), in that "
                "order, so that keys sort by date")
        regex = re.compile("^" + re.escape(prefix) + "".join(parts) + "$", re.S)
        return cls(prefix=prefix, pattern=pattern, literal_head=head or "", regex=regex,
                   fields=fields, after_head=tuple(after))

    def date_of(self, key: str) -> dt.datetime | None:
        """The date a backup key names (UTC), or ``None`` when the key is not a backup."""
        m = self.regex.match(key)
        if m is None:
            return None
        values = {k: int(v) for k, v in m.groupdict().items() if v is not None}
        try:
            return dt.datetime(values["Y"], values["m"], values["d"], values.get("H", 0),
                               values.get("M", 0), values.get("S", 0), tzinfo=dt.UTC)
        except ValueError:
            return None

    def matches(self, key: str) -> bool:
        return self.date_of(key) is not None

    @property
    def list_prefix(self) -> str:
        """The longest fixed start of every backup key: the ``Prefix`` to list."""
        return self.prefix + self.literal_head

    def start_after(self, day: dt.date) -> str:
        """A ``StartAfter`` key before every backup of ``day`` and after every earlier day's:
        the pattern rendered up to its day field (``2025-03-01``). A key of that day is
        longer, so it sorts after it; a key of an earlier day differs in the date and sorts
        before it."""
        rendered = ""
        values = {"Y": f"{day.year:04d}", "m": f"{day.month:02d}", "d": f"{day.day:02d}"}
        for kind, value in self.after_head:
            if kind == "field":
                rendered += values[value]
                if value == "d":
                    break
            elif kind == "wild":
                break  # a coarser bound is still a correct one
            else:
                rendered += value
        return self.list_prefix + rendered
