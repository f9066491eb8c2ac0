"""Response headers of the service's edge, parsed into typed facts, each by its standard.

- ``Retry-After``: RFC 9110 §10.2.3, delay-seconds or an HTTP-date (§5.6.7).
- ``RateLimit`` and its earlier forms: draft-ietf-httpapi-ratelimit-headers, each revision's
  syntax (Structured Fields, RFC 9651, from draft-07 on).
- ``Strict-Transport-Security``: RFC 6797 §6.1; only the first field counts (§8.1).
- ``Content-Security-Policy``: CSP Level 3: a comma-separated list of policies, each a
  ``;``-separated list of directives; the first of a repeated directive wins, fetch
  directives fall back to ``default-src``, a nonce or hash disables ``'unsafe-inline'`` and
  ``'strict-dynamic'`` disables host, scheme and ``'self'`` sources for scripts.
- ``Referrer-Policy``: Referrer Policy §11.1, the last recognised token wins.
- ``X-Content-Type-Options``: Fetch's "determine nosniff", the first value counts.
- The CORS response headers: the Fetch standard's CORS protocol (§3.2) and its
  CORS-preflight fetch.

Nothing here talks to the network and nothing here decides a verdict: a parser says what a
header means, the check says whether that is good enough.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

__all__ = [
    "CorsResponse",
    "Csp",
    "CspPolicy",
    "HostileOrigin",
    "Hsts",
    "RateLimitFields",
    "RetryAfter",
    "all_values",
    "first_value",
    "hostile_origins",
    "lower_headers",
    "parse_csp",
    "parse_hsts",
    "parse_http_date",
    "parse_ratelimit",
    "parse_referrer_policy",
    "parse_retry_after",
]

# --------------------------------------------------------------------------- HTTP-date

_DAYS = "Mon|Tue|Wed|Thu|Fri|Sat|Sun"
_LONG_DAYS = "Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH = "|".join(_MONTHS)
_TIME = r"(\d{2}):(\d{2}):(\d{2})"
_IMF_FIXDATE = re.compile(rf"(?:{_DAYS}), (\d{{2}}) ({_MONTH}) (\d{{4}}) {_TIME} GMT")
_RFC850_DATE = re.compile(rf"(?:{_LONG_DAYS}), (\d{{2}})-({_MONTH})-(\d{{2}}) {_TIME} GMT")
_ASCTIME_DATE = re.compile(rf"(?:{_DAYS}) ({_MONTH}) ([ \d]\d) {_TIME} (\d{{4}})")


def parse_http_date(value: str, *, now: dt.datetime | None = None) -> dt.datetime | None:
    """An HTTP-date (RFC 9110 §5.6.7) as an aware UTC datetime, or None when ``value`` is
    none of IMF-fixdate, the obsolete RFC 850 form or asctime. Matching is case-sensitive,
    as the grammar is."""
    text = value.strip()
    if m := _IMF_FIXDATE.fullmatch(text):
        day, month, year, hh, mm, ss = m.groups()
    elif m := _RFC850_DATE.fullmatch(text):
        day, month, yy, hh, mm, ss = m.groups()
        # A two-digit year more than 50 years ahead is the most recent such year in the past.
        this_year = (now or dt.datetime.now(dt.UTC)).year
        year_n = this_year - this_year % 100 + int(yy)
        if year_n > this_year + 50:
            year_n -= 100
        year = str(year_n)
    elif m := _ASCTIME_DATE.fullmatch(text):
        month, day, hh, mm, ss, year = m.groups()
    else:
        return None
    try:
        return dt.datetime(int(year), _MONTHS.index(month) + 1, int(day), int(hh), int(mm),
                           min(int(ss), 59), tzinfo=dt.UTC)
    except ValueError:
        return None


# --------------------------------------------------------------------------- Retry-After


@dataclass(frozen=True)
class RetryAfter:
    """A ``Retry-After`` value. ``reference`` is the response's own ``Date`` when it carries a
    valid one (the server's clock, against which its HTTP-date is meant), else the time we
    received the response."""

    raw: str
    delay_s: int | None
    date: dt.datetime | None
    reference: dt.datetime
    reference_source: Literal["Date header", "receive time"]

    @property
    def form(self) -> Literal["delay-seconds", "http-date", "invalid"]:
        if self.delay_s is not None:
            return "delay-seconds"
        return "http-date" if self.date is not None else "invalid"

    @property
    def seconds(self) -> float | None:
        """How long the client is asked to wait; negative for an HTTP-date in the past."""
        if self.delay_s is not None:
            return float(self.delay_s)
        if self.date is not None:
            return (self.date - self.reference).total_seconds()
        return None

    def evidence(self) -> dict[str, Any]:
        out: dict[str, Any] = {"value": self.raw, "form": self.form}
        if self.date is not None:
            out["date"] = self.date.isoformat()
            out["compared_with"] = f"{self.reference_source} {self.reference.isoformat()}"
        if self.seconds is not None:
            out["seconds"] = round(self.seconds, 3)
        return out


def parse_retry_after(raw: str, *, date_header: str | None,
                      received: dt.datetime) -> RetryAfter:
    """Parse ``Retry-After = HTTP-date / delay-seconds`` (``delay-seconds = 1*DIGIT``)."""
    value = raw.strip()
    server_now = parse_http_date(date_header) if date_header else None
    source: Literal["Date header", "receive time"]
    if server_now is not None:
        reference, source = server_now, "Date header"
    else:
        reference, source = received, "receive time"
    delay = int(value) if re.fullmatch(r"[0-9]+", value) else None
    date = None if delay is not None else parse_http_date(value, now=reference)
    return RetryAfter(raw, delay, date, reference, source)


# --------------------------------------------------------------------------- RateLimit

# The three shapes draft-ietf-httpapi-ratelimit-headers has given these fields.
RateLimitSyntax = Literal[
    "RateLimit list (draft-08 and later)",
    "RateLimit dictionary (draft-07)",
    "RateLimit-Remaining and RateLimit-Reset (draft-06 and earlier)",
]
# A reset this large is an epoch time, which no revision of the draft defines.
_EPOCH_LIKE = 10**9


@dataclass(frozen=True)
class RateLimitFields:
    """The IETF RateLimit header fields of one response, in whichever revision of
    draft-ietf-httpapi-ratelimit-headers the server follows:

    - draft-08 and later: ``RateLimit: "policy";r=0;t=30`` (a structured list; ``r`` the
      quota left, ``t`` the seconds within which no more than that may be used);
    - draft-07: ``RateLimit: limit=100, remaining=0, reset=30`` (a structured dictionary);
    - draft-06 and earlier: ``RateLimit-Remaining: 0`` with ``RateLimit-Reset: 30``.

    ``limits`` holds (policy, quota left, seconds) per limit, ``None`` where not given; ``problem`` says why the fields
    are malformed, and then, as every revision asks of clients, they are ignored. Vendor
    fields (``X-RateLimit-*``) are not read: their reset is seconds on some platforms and an
    epoch time on others."""

    raw: dict[str, str]
    syntax: RateLimitSyntax | None
    limits: tuple[tuple[str, int | None, int | None], ...]
    problem: str | None

    @property
    def wait_s(self) -> int | None:
        """How long the fields ask a client to wait: the longest window of a limit with no
        quota left; ``None`` when they do not say (malformed, quota left, or no window)."""
        if self.problem is not None:
            return None
        waits = [t for _, left, t in self.limits if left == 0 and t is not None]
        return max(waits) if waits else None

    def evidence(self) -> dict[str, Any]:
        return {"fields": self.raw, "syntax": self.syntax, "problem": self.problem,
                "limits": [{"policy": name, "remaining": left, "window_s": t}
                           for name, left, t in self.limits],
                "wait_s": self.wait_s}


def parse_ratelimit(headers: Mapping[str, str]) -> RateLimitFields | None:
    """The RateLimit fields of a response (``headers``: lower-cased names, repeated fields
    joined with ", "), or ``None`` when it carries none."""
    from opsready.probes.structured_fields import SfError, parse_dictionary, parse_list

    raw = {name: headers[name] for name in ("ratelimit", "ratelimit-policy", "ratelimit-limit",
                                            "ratelimit-remaining", "ratelimit-reset")
           if name in headers}
    if "ratelimit" in raw:
        value = raw["ratelimit"]
        try:
            members = parse_list(value)
        except SfError as as_list:
            try:
                entries = parse_dictionary(value)
            except SfError:
                return RateLimitFields(raw, None, (), f"RateLimit is neither a structured list "
                                                      f"nor a dictionary: {as_list}")
            return _draft07(raw, entries)
        return _draft08(raw, members)
    if "ratelimit-reset" in raw or "ratelimit-remaining" in raw:
        return _draft06(raw)
    return None


def _sf_int(value: object) -> int | None:
    """A non-negative sf-integer (``bool`` is not one)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _draft08(raw: dict[str, str], members: list[Any]) -> RateLimitFields:
    syntax: RateLimitSyntax = "RateLimit list (draft-08 and later)"
    limits: list[tuple[str, int | None, int | None]] = []
    for value, params in members:
        # Draft-10 asks for a string; a token was still under discussion: both name a policy.
        if not isinstance(value, str):
            return RateLimitFields(raw, syntax, (), f"a RateLimit member is not a policy name: "
                                                    f"{value!r}")
        left, window = _sf_int(params.get("r")), params.get("t")
        if left is None:
            return RateLimitFields(raw, syntax, (), f"policy {value!r} has no non-negative "
                                                    f"integer r (quota left)")
        if window is not None and _sf_int(window) is None:
            return RateLimitFields(raw, syntax, (), f"policy {value!r} has t={window!r}, "
                                                    f"not a non-negative integer")
        limits.append((str(value), left, _sf_int(window)))
    if not limits:
        return RateLimitFields(raw, syntax, (), "RateLimit names no policy")
    return RateLimitFields(raw, syntax, tuple(limits), None)


def _draft07(raw: dict[str, str], entries: dict[str, Any]) -> RateLimitFields:
    syntax: RateLimitSyntax = "RateLimit dictionary (draft-07)"
    values = {key: _sf_int(entries[key][0]) if key in entries else None
              for key in ("limit", "remaining", "reset")}
    missing = [key for key in ("limit", "reset") if values[key] is None]
    if missing or ("remaining" in entries and values["remaining"] is None):
        bad = missing or ["remaining"]
        return RateLimitFields(raw, syntax, (), f"RateLimit's {' and '.join(bad)} must be "
                                                f"non-negative integers (limit and reset are "
                                                f"required)")
    # Without remaining, the fields do not say the quota is used up.
    return RateLimitFields(raw, syntax, (("limit", values["remaining"], values["reset"]),), None)


def _draft06(raw: dict[str, str]) -> RateLimitFields:
    syntax: RateLimitSyntax = "RateLimit-Remaining and RateLimit-Reset (draft-06 and earlier)"
    left = _digits(raw.get("ratelimit-remaining"))
    reset = _digits(raw.get("ratelimit-reset"))
    if left is None or reset is None:
        return RateLimitFields(raw, syntax, (), "RateLimit-Remaining and RateLimit-Reset must "
                                                "both be delay-seconds style integers")
    if reset >= _EPOCH_LIKE:
        return RateLimitFields(raw, syntax, (), f"RateLimit-Reset {reset} looks like an epoch "
                                                f"time; the draft defines seconds from now")
    return RateLimitFields(raw, syntax, (("limit", left, reset),), None)


def _digits(value: str | None) -> int | None:
    text = (value or "").strip()
    return int(text) if re.fullmatch(r"[0-9]{1,15}", text) else None


# --------------------------------------------------------------------------- HSTS


@dataclass(frozen=True)
class Hsts:
    """``Strict-Transport-Security`` as a user agent reads it. ``raw`` is the first field,
    the only one a UA processes; ``problem`` says why a UA would ignore it (None: valid)."""

    raw: str | None
    fields: int
    max_age: int | None
    include_subdomains: bool
    preload: bool
    problem: str | None

    @property
    def present(self) -> bool:
        return self.raw is not None

    def evidence(self) -> dict[str, Any]:
        return {"value": self.raw, "fields": self.fields, "max_age": self.max_age,
                "includeSubDomains": self.include_subdomains, "preload": self.preload,
                "problem": self.problem}


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def parse_hsts(values: Sequence[str]) -> Hsts:
    """Parse the ``Strict-Transport-Security`` fields of one response (RFC 6797 §6.1)."""
    if not values:
        return Hsts(None, 0, None, False, False, None)
    raw = values[0]
    seen: dict[str, str | None] = {}
    problem = None
    for part in raw.split(";"):
        item = part.strip()
        if not item:
            continue
        name, eq, value = item.partition("=")
        key = name.strip().lower()
        if not _TOKEN.fullmatch(key):
            problem = f"directive {name.strip()!r} is not a token"
            continue
        if key in seen:
            problem = f"directive {key} appears twice (RFC 6797 §6.1 allows each once)"
        text = value.strip()
        if eq and len(text) >= 2 and text[0] == text[-1] == '"':
            text = text[1:-1]
        seen[key] = text if eq else None
    max_age = None
    age = seen.get("max-age")
    if "max-age" not in seen:
        problem = problem or "no max-age directive (it is required)"
    elif age is None or not re.fullmatch(r"[0-9]+", age):
        problem = problem or f"max-age {age!r} is not delta-seconds"
    else:
        max_age = int(age)
    return Hsts(raw, len(values), max_age, "includesubdomains" in seen, "preload" in seen,
                problem)


# --------------------------------------------------------------------------- CSP

# The directives each fetch directive falls back to when a policy leaves it out (CSP
# Level 3, "directive fallback list"); directives not listed have no fallback.
_FALLBACK: dict[str, tuple[str, ...]] = {
    "script-src-elem": ("script-src-elem", "script-src", "default-src"),
    "script-src-attr": ("script-src-attr", "script-src", "default-src"),
    "script-src": ("script-src", "default-src"),
    "style-src-elem": ("style-src-elem", "style-src", "default-src"),
    "style-src-attr": ("style-src-attr", "style-src", "default-src"),
    "style-src": ("style-src", "default-src"),
    "worker-src": ("worker-src", "child-src", "script-src", "default-src"),
    "child-src": ("child-src", "default-src"),
    "frame-src": ("frame-src", "child-src", "default-src"),
    **{d: (d, "default-src") for d in ("connect-src", "font-src", "img-src", "manifest-src",
                                       "media-src", "object-src")},
}
_NONCE_OR_HASH = ("'nonce-", "'sha256-", "'sha384-", "'sha512-")


@dataclass(frozen=True)
class CspPolicy:
    """One serialized policy: directive name (lower-cased) -> its source expressions."""

    directives: dict[str, tuple[str, ...]]

    def governing(self, directive: str) -> str | None:
        """The directive of this policy that governs ``directive``, after fallback."""
        for name in _FALLBACK.get(directive, (directive,)):
            if name in self.directives:
                return name
        return None

    def allows(self, directive: str, source: str) -> bool:
        """Whether this policy lets ``source`` (a keyword such as ``'unsafe-inline'``, a
        scheme such as ``https:``, or ``*``) through for ``directive``. A directive with
        nothing governing it restricts nothing."""
        governing = self.governing(directive)
        if governing is None:
            return True
        listed = self.directives[governing]
        tokens = {t.lower() for t in listed}
        if any(t.lower().startswith(_NONCE_OR_HASH) for t in listed):
            tokens.discard("'unsafe-inline'")
        if directive.startswith("script-src") and "'strict-dynamic'" in tokens:
            tokens = {t for t in tokens if t.startswith("'") and t not in ("'self'", "'unsafe-inline'")}
        return source.lower() in tokens


@dataclass(frozen=True)
class Csp:
    """Every enforced policy of a response (``Content-Security-Policy``; the report-only
    header enforces nothing and is not read)."""

    raw: str | None
    policies: tuple[CspPolicy, ...]

    @property
    def present(self) -> bool:
        return bool(self.policies)

    def has(self, directive: str) -> bool:
        return any(directive in p.directives for p in self.policies)

    def allows(self, directive: str, source: str) -> bool:
        """A resource loads only when every policy allows it."""
        return all(p.allows(directive, source) for p in self.policies)

    def governing(self, directive: str) -> list[str]:
        """For messages: what governs ``directive`` in each policy."""
        out = []
        for p in self.policies:
            name = p.governing(directive)
            out.append(f"{name} {' '.join(p.directives[name])}".strip() if name
                       else f"no {directive} and no fallback")
        return out


def parse_csp(values: Iterable[str]) -> Csp:
    """Parse every ``Content-Security-Policy`` field of a response into its policies."""
    raws = [v for v in values if v is not None]
    policies = []
    for raw in raws:
        for serialized in raw.split(","):
            directives: dict[str, tuple[str, ...]] = {}
            for token in serialized.split(";"):
                parts = token.strip().split()
                if not parts:
                    continue
                name = parts[0].lower()
                if not re.fullmatch(r"[a-z0-9-]+", name) or name in directives:
                    continue
                directives[name] = tuple(parts[1:])
            if directives:
                policies.append(CspPolicy(directives))
    return Csp(", ".join(raws) if raws else None, tuple(policies))


# --------------------------------------------------------------------------- small headers

REFERRER_POLICIES = frozenset({
    "no-referrer", "no-referrer-when-downgrade", "same-origin", "origin", "strict-origin",
    "origin-when-cross-origin", "strict-origin-when-cross-origin", "unsafe-url",
})


def parse_referrer_policy(value: str | None) -> str | None:
    """The policy a browser applies: the last recognised token of the list, None when
    there is none (unknown tokens are skipped, which lets sites list fallbacks)."""
    policy = None
    for token in (value or "").split(","):
        candidate = token.strip().lower()
        if candidate in REFERRER_POLICIES:
            policy = candidate
    return policy


def first_value(value: str | None) -> str | None:
    """The first comma-separated value of a header, as Fetch's "determine nosniff" reads
    ``X-Content-Type-Options``."""
    if value is None:
        return None
    return value.split(",")[0].strip()


# --------------------------------------------------------------------------- CORS

_SAFELISTED_METHODS = frozenset({"GET", "HEAD", "POST"})


@dataclass(frozen=True)
class CorsResponse:
    """One CORS exchange: a preflight or the actual request, what we sent and what came
    back. Header names are lower-cased; repeated headers are joined with ``, ``."""

    kind: Literal["preflight", "actual"]
    url: str
    path: str
    origin: str
    method: str
    sent: dict[str, str]
    status: int
    headers: dict[str, str]

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def _list(self, name: str) -> list[str]:
        return [t.strip() for t in (self.header(name) or "").split(",") if t.strip()]

    @property
    def ok_status(self) -> bool:
        """Fetch's "ok status": any status from 200 to 299."""
        return 200 <= self.status <= 299

    @property
    def allow_origin(self) -> str | None:
        return self.header("access-control-allow-origin")

    @property
    def allow_credentials(self) -> str | None:
        return self.header("access-control-allow-credentials")

    @property
    def allow_methods(self) -> tuple[str, ...]:
        return tuple(self._list("access-control-allow-methods"))

    @property
    def allow_headers(self) -> frozenset[str]:
        return frozenset(h.lower() for h in self._list("access-control-allow-headers"))

    @property
    def max_age(self) -> int | None:
        """``Access-Control-Max-Age`` as delta-seconds; None when absent or not digits (a
        browser then falls back to its default of 5 seconds)."""
        raw = self.header("access-control-max-age")
        return int(raw.strip()) if raw is not None and re.fullmatch(r"[0-9]+", raw.strip()) else None

    @property
    def vary(self) -> frozenset[str]:
        return frozenset(v.lower() for v in self._list("vary"))

    def allows_method(self, method: str, *, credentials: bool) -> bool:
        """Whether a browser's CORS-preflight fetch accepts ``method``: listed exactly (the
        match is case-sensitive), CORS-safelisted, or ``*`` on a request without
        credentials."""
        listed = self.allow_methods
        return (method in listed or method in _SAFELISTED_METHODS
                or ("*" in listed and not credentials))

    def allows_header(self, name: str, *, credentials: bool) -> bool:
        """Whether a browser accepts request header ``name``: listed (case-insensitively),
        or ``*`` without credentials, which never covers ``Authorization``."""
        allowed = self.allow_headers
        lower = name.lower()
        return lower in allowed or ("*" in allowed and not credentials and lower != "authorization")

    def row(self) -> dict[str, Any]:
        """One row of the evidence table."""
        return {
            "kind": self.kind, "method": self.method, "url": self.url, "origin": self.origin,
            "status": self.status, "allow_origin": self.allow_origin,
            "allow_credentials": self.allow_credentials,
            "allow_methods": self.header("access-control-allow-methods"),
            "allow_headers": self.header("access-control-allow-headers"),
            "max_age": self.header("access-control-max-age"), "vary": self.header("vary"),
        }


@dataclass(frozen=True)
class HostileOrigin:
    """An origin that must not be allowed, and how it was made."""

    origin: str
    variant: str  # suffix, prefix, scheme, subdomain, null, or configured
    derived_from: str | None


# A name under the reserved .example TLD (RFC 2606): it is nobody's real origin.
ATTACKER_LABEL = "opsready-attacker"
ATTACKER_DOMAIN = f"{ATTACKER_LABEL}.example"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _derive(origin: str, variant: str) -> str | None:
    parts = urlsplit(origin)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port is not None else ""
    if not host or parts.scheme not in ("http", "https"):
        return None
    if variant == "suffix":
        # The allowed origin as a prefix: catches an unanchored match such as startswith().
        return f"{parts.scheme}://{host}.{ATTACKER_DOMAIN}{port}"
    if variant == "prefix":
        # The allowed host as a suffix: catches endswith() without a dot boundary.
        return None if _is_ip(host) else f"{parts.scheme}://{ATTACKER_LABEL}{host}{port}"
    if variant == "scheme":
        other = "http" if parts.scheme == "https" else "https"
        return f"{other}://{host}{port}"
    if variant == "subdomain":
        return None if _is_ip(host) else f"{parts.scheme}://{ATTACKER_LABEL}.{host}{port}"
    return None


def hostile_origins(allowed: Sequence[str], variants: Iterable[str],
                    extra: Iterable[str] = ()) -> list[HostileOrigin]:
    """Origins derived from every allowed one, as attackers craft them, plus ``extra``
    (configured disallowed origins). Anything that is itself on the allow-list is left out."""
    wanted = list(variants)
    found: dict[str, HostileOrigin] = {}
    for origin in allowed:
        for variant in wanted:
            if variant == "null":
                continue
            derived = _derive(origin, variant)
            if derived is not None:
                found.setdefault(derived, HostileOrigin(derived, variant, origin))
    if "null" in wanted:
        found.setdefault("null", HostileOrigin("null", "null", None))
    for origin in extra:
        found.setdefault(origin, HostileOrigin(origin, "configured", None))
    return [h for o, h in found.items() if o not in set(allowed)]


def lower_headers(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Lower-cased names; repeated headers joined with ', ' as HTTP allows."""
    out: dict[str, str] = {}
    for name, value in items:
        key = name.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def all_values(items: Iterable[tuple[str, str]], name: str) -> list[str]:
    """Every field of header ``name``, one per line as it arrived."""
    key = name.lower()
    return [v for k, v in items if k.lower() == key]

