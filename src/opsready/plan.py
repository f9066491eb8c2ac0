"""What each criterion would touch: the plan metadata next to every check module, and
``opsready verify --plan``, which prints it for an environment and sends nothing.

Each check module ``checks/test_<id>_<topic>.py`` has a sibling ``test_<id>_<topic>.plan.yaml``
with one entry per criterion (test function), as data::

    test_health_ok:
      contacts: ["GET {service.base_url}{service.health_path}"]
      reads: [service.version_field]
    test_rate_limit_burst:
      contacts: ["{service.rate_limit.method} {service.base_url}{service.rate_limit.path}"]
      reads: [service.api_key]
      bounds: [service.rate_limit.max_requests, service.rate_limit.max_seconds]
      intrusive: rate_limit_burst

- ``contacts``: what the criterion would contact, with ``{config.key}`` placeholders. A secret
  key may appear only as ``{key|host}`` (its host, port and database, never the rest);
  ``{key?text}`` (or ``{key|host?text}``) shows ``text`` when the key is not set
  (``{backups.s3.endpoint_url?AWS S3}``).
- ``reads``: further configuration keys it reads (the placeholders count already).
- ``bounds``: keys whose values bound it in time or size (timeouts, burst size), printed
  with their values.
- ``intrusive``: the intrusive probe it uses; required when the criterion carries the
  ``intrusive`` marker (then equal to it) or asks ``intrusive_allowed``.
- ``facts``: the shared read-only facts it reads (``opsready.prefetch.FACTS``), which a run
  reads ahead, concurrently, at session start.

Collection fails when a criterion has no entry, an entry names no criterion, or a key does not
exist in the environment schema, so the plan cannot drift from the checks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr

from opsready._errors import ConfigError
from opsready.config import INTRUSIVE_PROBES, Environment, load_yaml, model_in
from opsready.evidence import redactor

__all__ = ["PLAN_SUFFIX", "CriterionPlan", "PlanLine", "load_plan", "plan_path", "render_plan"]

PLAN_SUFFIX = ".plan.yaml"
_KEYS = {"contacts", "reads", "bounds", "intrusive", "facts"}
_PLACEHOLDER = re.compile(r"\{(?P<key>[A-Za-z_][A-Za-z0-9_.]*)(?:\|(?P<filter>host))?(?:\?(?P<fallback>[^}]*))?\}")


@dataclass(frozen=True)
class CriterionPlan:
    """The plan entry of one criterion."""

    contacts: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()
    bounds: tuple[str, ...] = ()
    intrusive: str | None = None
    facts: tuple[str, ...] = ()

    def keys(self) -> list[str]:
        """Every configuration key the criterion reads, in order, once."""
        found = [m.group("key") for c in self.contacts for m in _PLACEHOLDER.finditer(c)]
        return list(dict.fromkeys([*found, *self.reads, *self.bounds]))


def plan_path(module: Path) -> Path:
    return module.with_name(module.stem + PLAN_SUFFIX)


def load_plan(module: Path) -> dict[str, CriterionPlan]:
    """The plan entries of a check module, checked against the environment schema. Raises
    ``ConfigError`` naming the plan file, the entry and the fix."""
    path = plan_path(module)
    file = str(path)
    if not path.is_file():
        raise ConfigError(file, "", "is missing", f"add it with one entry per criterion of {module.name} "
                          "(what it contacts and reads; see opsready.plan)")
    raw = load_yaml(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(file, "", "top level is not a mapping", "write `test_name: {contacts: [...]}`")
    plans: dict[str, CriterionPlan] = {}
    for name, entry in raw.items():
        plans[str(name)] = _entry(file, str(name), entry)
    return plans


def _entry(file: str, name: str, entry: Any) -> CriterionPlan:
    if not isinstance(entry, dict):
        raise ConfigError(file, name, "is not a mapping", "write `contacts: [...]` under it")
    unknown = set(entry) - _KEYS
    if unknown:
        raise ConfigError(file, f"{name}.{sorted(map(str, unknown))[0]}", "unknown key",
                          f"use {', '.join(sorted(_KEYS))}")
    if "contacts" not in entry:
        raise ConfigError(file, name, "has no contacts", "list what it contacts, or `contacts: []`")
    lists: dict[str, tuple[str, ...]] = {}
    for key in ("contacts", "reads", "bounds", "facts"):
        value = entry.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(file, f"{name}.{key}", "is not a list of strings", f"write `{key}: [a, b]`")
        lists[key] = tuple(value)
    intrusive = entry.get("intrusive")
    if intrusive is not None and intrusive not in INTRUSIVE_PROBES:
        raise ConfigError(file, f"{name}.intrusive", f"{intrusive!r} is not an intrusive probe",
                          f"use one of {', '.join(sorted(INTRUSIVE_PROBES))}")
    for contact in lists["contacts"]:
        for m in _PLACEHOLDER.finditer(contact):
            annotation = _annotation(m.group("key"))
            if annotation is None:
                raise ConfigError(file, f"{name}.contacts", f"{{{m.group('key')}}} is not a configuration key",
                                  "use a dotted key of docs/configuration.md")
            if "SecretStr" in annotation and m.group("filter") != "host":
                raise ConfigError(file, f"{name}.contacts", f"{{{m.group('key')}}} is a secret",
                                  f"a plan never shows a secret; write {{{m.group('key')}|host}}")
    for key in (*lists["reads"], *lists["bounds"]):
        if _annotation(key) is None:
            raise ConfigError(file, f"{name}", f"{key!r} is not a configuration key",
                              "use a dotted key of docs/configuration.md")
    from opsready.prefetch import FACTS

    unknown_facts = [f for f in lists["facts"] if f not in FACTS]
    if unknown_facts:
        raise ConfigError(file, f"{name}.facts", f"{unknown_facts[0]!r} is not a shared fact",
                          f"use one of {', '.join(sorted(FACTS))}")
    return CriterionPlan(lists["contacts"], lists["reads"], lists["bounds"], intrusive, lists["facts"])


def _annotation(key: str) -> str | None:
    """The type of a dotted key of the environment schema, as text, or None when it is not one."""
    model: type[BaseModel] | None = Environment
    annotation: Any = None
    for part in key.split("."):
        if model is None:
            return None
        info = model.model_fields.get(part)
        # Environment.source is the file it came from, not a key.
        if info is None or (model is Environment and part == "source"):
            return None
        annotation = info.annotation
        model = model_in(annotation)
    return str(annotation)


# -- rendering ----------------------------------------------------------------------------

_MISSING = object()


def _value(env: Environment, key: str) -> Any:
    current: Any = env
    for part in key.split("."):
        current = getattr(current, part, _MISSING) if current is not None else None
        if current is _MISSING:
            return None
    return current


def _host_of(value: str) -> str:
    """Host, port and database of a URL or a DSN; never its user, password or query."""
    if "://" in value:
        parts = urlsplit(value)
        host = parts.netloc.rsplit("@", 1)[-1]
        path = parts.path if parts.scheme.startswith("postgres") else ""
        return f"{parts.scheme}://{host}{path}"
    fields = dict(re.findall(r"(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", value))
    host = fields.get("host", "localhost").strip("'")
    port = fields.get("port", "5432").strip("'")
    db = fields.get("dbname", "").strip("'")
    return f"postgresql://{host}:{port}/{db}"


def _shown(value: Any) -> str:
    if value is None:
        return "not set"
    if isinstance(value, SecretStr):
        return "<secret>"
    if isinstance(value, list | tuple):
        return ",".join(_shown(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    text = str(value)
    if "://" in text:
        parts = urlsplit(text)
        text = f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}{parts.path}"
    return redactor.text(text)


def _render(contact: str, env: Environment, missing: list[str]) -> str:
    def sub(m: re.Match[str]) -> str:
        key, fallback = m.group("key"), m.group("fallback")
        value = _value(env, key)
        if value is None or value == "" or value == []:
            section = key.split(".", 1)[0]
            if getattr(env, section, None) is None and "." in key:
                missing.append(f"the {section} section")
            elif fallback is not None:
                return fallback
            else:
                missing.append(key)
            return f"<{key} not set>"
        if m.group("filter") == "host":
            items = value if isinstance(value, list | tuple) else [value]
            raws = [v.get_secret_value() if isinstance(v, SecretStr) else str(v) for v in items]
            return redactor.text(",".join(_host_of(raw) for raw in raws))
        return _shown(value)

    return _PLACEHOLDER.sub(sub, contact)


@dataclass
class PlanLine:
    """One criterion of the plan, rendered for an environment."""

    ticket: str
    nodeid: str
    title: str
    contacts: list[str]
    keys: list[str]
    bounds: list[str]
    intrusive: str | None
    required: bool
    allowed: bool
    missing: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        if self.intrusive is None:
            return "read-only"
        verdict = "allowed here" if self.allowed else "not allowed here: it will be not covered"
        if self.required:
            return f"intrusive ({self.intrusive}), {verdict}"
        fallback = "" if self.allowed else "; it judges from what it finds without it"
        return f"read-only, or intrusive ({self.intrusive}) where allowed: {verdict.split(':')[0]}{fallback}"


def plan_line(ticket: str, nodeid: str, title: str, entry: CriterionPlan, env: Environment,
              allowed: Iterable[str], marked_intrusive: str | None) -> PlanLine:
    missing: list[str] = []
    contacts = [_render(c, env, missing) for c in entry.contacts]
    bounds = [f"{k}={_shown(_value(env, k))}" for k in entry.bounds]
    intrusive = marked_intrusive or entry.intrusive
    return PlanLine(ticket=ticket, nodeid=nodeid, title=title, contacts=contacts, keys=entry.keys(),
                    bounds=bounds, intrusive=intrusive, required=marked_intrusive is not None,
                    allowed=intrusive in set(allowed) if intrusive else True, missing=sorted(set(missing)))


def render_plan(lines: list[PlanLine], env: Environment, *, body_limit: int, deadline_s: float,
                problems: Mapping[str, str] | None = None) -> list[str]:
    """The plan as text: one block per criterion, then the totals."""
    from opsready.probes._http import describe_size

    out = [f"opsready plan for environment '{env.name}' ({env.source or 'no file'}): nothing is sent",
           f"every request: timeout {env.timeout_s:g}s (a whole answer within twice that), "
           f"body limit {describe_size(body_limit)}; the whole run: deadline {deadline_s:g}s", ""]
    for line in lines:
        out.append(f"{line.ticket}  {line.nodeid}")
        out.append(f"    {line.title}")
        for contact in line.contacts or ["contacts nothing over the network"]:
            out.append(f"    contacts: {contact}")
        out.append(f"    kind: {line.kind}")
        out.append(f"    reads: {', '.join(line.keys) or 'nothing from the environment'}")
        if line.bounds:
            out.append(f"    bounds: {', '.join(line.bounds)}")
        if line.missing:
            out.append(f"    not configured: {', '.join(line.missing)}; it will be not covered")
    hosts = sorted({_host(c) for line in lines for c in line.contacts if _host(c)})
    intrusive = [x for x in lines if x.intrusive and x.required]
    may = [x for x in lines if x.intrusive and not x.required]
    out += ["", f"totals: {len(lines)} criteria; {len(lines) - len(intrusive)} read-only "
            f"({len(may)} of them may use an intrusive probe where allowed), {len(intrusive)} intrusive "
            f"({sum(x.allowed for x in intrusive)} allowed here, {sum(not x.allowed for x in intrusive)} not); "
            f"{sum(bool(x.missing) for x in lines)} not configured; {len(hosts)} distinct targets"
            + (f": {', '.join(hosts)}" if hosts else "")]
    for where, problem in (problems or {}).items():
        out.append(f"collection rule broken: {where}: {problem}")
    return out


def _host(contact: str) -> str:
    m = re.search(r"\b[a-z][a-z0-9+.-]*://[^/\s<]+", contact)
    return m.group(0) if m else ""
