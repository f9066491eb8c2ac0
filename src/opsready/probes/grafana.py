"""Grafana HTTP API: health, dashboard search, dashboards by uid, and the datasources the
dashboards' panels query.

A dashboard that does not exist is ``None`` (the check fails on it); a panel whose datasource
Grafana does not have resolves to ``None``. A refused token (one without ``datasources:read``
included), an unreachable server or a malformed answer raises a ``ProbeError``.

How a panel names its datasource (Grafana's dashboard JSON model): an object
``{"type", "uid"}`` (8.3 and later), a plain string (the datasource's name, older
dashboards), ``null`` or nothing (the default datasource), or a ``${var}`` / ``$var`` /
``[[var]]`` reference to a dashboard variable of type ``datasource``. An export's
``${DS_PROMETHEUS}`` is such a reference to a variable that only exists until the import
replaces it; left in place it resolves to nothing, and the panel does not render. A target's
own datasource overrides the panel's; the panel-level ``-- Mixed --`` datasource leaves every
target to name its own.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from opsready._errors import UnexpectedResponse
from opsready.config import GrafanaConfig
from opsready.probes._http import HttpTarget
from opsready.probes._parallel import in_parallel
from opsready.probes._shared import shared_fact

__all__ = [
    "Dashboard",
    "Datasource",
    "DatasourceRef",
    "GrafanaProbe",
    "PanelDatasource",
    "count_panels",
    "resolve_datasources",
]

# Grafana's built-in pseudo datasources: they query no datasource of their own. ``__expr__``
# (formerly uid ``-100``) is a server-side expression over the panel's other queries.
_BUILT_IN = frozenset({"grafana", "-- grafana --", "-- mixed --", "-- dashboard --", "dashboard",
                       "__expr__", "-100"})
_BUILT_IN_TYPES = frozenset({"datasource", "__expr__"})
_MIXED = "-- mixed --"
_VARIABLE = re.compile(r"^\$\{([A-Za-z0-9_]+)(?::[a-z]+)?\}$|^\$([A-Za-z0-9_]+)$|^\[\[([A-Za-z0-9_]+)\]\]$")


@dataclass(frozen=True)
class Datasource:
    """One datasource of the Grafana organisation (``/api/datasources``)."""

    uid: str
    name: str
    type: str
    is_default: bool = False
    id: int | None = None


@dataclass(frozen=True)
class DatasourceRef:
    """Where one panel (or one of its targets) says its data comes from, as written in the
    dashboard JSON. ``uid``, ``name`` and ``type`` are ``None`` when not given; all three
    ``None`` means the default datasource."""

    panel: str
    panel_id: int | None
    uid: str | None = None
    name: str | None = None
    type: str | None = None

    def text(self) -> str:
        if self.uid is not None:
            return f"uid {self.uid}"
        if self.name is not None:
            return f"name {self.name!r}"
        return "the default datasource" + (f" of type {self.type}" if self.type else "")


@dataclass(frozen=True)
class PanelDatasource:
    """A panel's datasource reference and the datasource it resolves to (``None``: Grafana
    has no such datasource). ``built_in`` marks Grafana's own pseudo datasources."""

    ref: DatasourceRef
    datasource: Datasource | None
    detail: str
    built_in: bool = False


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    panels: int
    panel_titles: tuple[str, ...]
    version: int | None
    folder: str
    # Every datasource reference of the panels and their targets, each panel's once.
    datasource_refs: tuple[DatasourceRef, ...] = ()
    # The dashboard's datasource variables: name -> (plugin type, current value or "").
    datasource_variables: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    # Library panels Grafana no longer has: "panel title (library panel uid)".
    missing_library_panels: tuple[str, ...] = ()


class GrafanaProbe:
    """Read-only access to one Grafana instance with a service-account token."""

    def __init__(
        self,
        cfg: GrafanaConfig,
        timeout: float,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.cfg = cfg
        headers = {"Accept": "application/json"}
        if cfg.token is not None and cfg.token.get_secret_value():
            headers["Authorization"] = f"Bearer {cfg.token.get_secret_value()}"
        self.http = HttpTarget("grafana", cfg.url, timeout=timeout, headers=headers,
                               transport=transport)

    def close(self) -> None:
        self.http.close()

    def health(self) -> dict[str, Any]:
        """``/api/health``: ``database`` ("ok" or "failing"), ``version``, ``commit``.

        Grafana answers 503 when its database fails; that is returned, not raised.
        """
        data = self.http.get_json("/api/health", ok=(200, 503))
        if not isinstance(data, dict):
            raise UnexpectedResponse(f"grafana: /api/health at {self.cfg.url} is not an object")
        return data

    def search(self, query: str = "") -> list[dict[str, Any]]:
        """Dashboards matching ``query`` (``uid``, ``title``, ``url``, ``folderTitle``...)."""
        data = self.http.get_json("/api/search", params={"type": "dash-db", "query": query})
        if not isinstance(data, list):
            raise UnexpectedResponse(f"grafana: /api/search at {self.cfg.url} is not a list")
        return [d for d in data if isinstance(d, dict)]

    def dashboards(self, uids: Iterable[str]) -> dict[str, Dashboard | None]:
        """``dashboard`` for each uid, a few at a time."""
        wanted = list(dict.fromkeys(uids))
        return dict(zip(wanted, in_parallel([functools.partial(self.dashboard, uid) for uid in wanted]),
                        strict=True))

    @shared_fact
    def dashboard(self, uid: str) -> Dashboard | None:
        """The dashboard with ``uid``, or ``None`` when Grafana answers 404."""
        path = f"/api/dashboards/uid/{quote(uid, safe='')}"
        resp = self.http.request("GET", path)
        if resp.status_code == 404:
            return None
        data = self.http.decode(resp)
        board = data.get("dashboard") if isinstance(data, dict) else None
        if not isinstance(board, dict):
            raise UnexpectedResponse(
                f"grafana: {path} at {self.cfg.url} has no 'dashboard' object"
            )
        meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
        titles = tuple(_panel_titles(board))
        version = board.get("version")
        library, missing = self._library_models(board)
        return Dashboard(
            uid=str(board.get("uid", uid)),
            title=str(board.get("title", "")),
            panels=len(titles),
            panel_titles=titles,
            version=version if isinstance(version, int) else None,
            folder=str(meta.get("folderTitle", "")),
            datasource_refs=tuple(dict.fromkeys(_datasource_refs(board)
                                                + _datasource_refs({"panels": library}))),
            datasource_variables=_datasource_variables(board),
            missing_library_panels=tuple(missing),
        )

    def _library_models(self, board: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
        """The models of the dashboard's library panels, which the dashboard holds only as a
        reference (``libraryPanel: {uid, name}``), each under its panel's title; and the
        panels whose library element Grafana no longer has."""
        models: list[dict[str, Any]] = []
        missing: list[str] = []
        # One read per library element, however many panels of the dashboard use it.
        read: dict[str, dict[str, Any] | None] = {}
        for panel in _panels(board):
            link = panel.get("libraryPanel")
            if not isinstance(link, dict):
                continue
            uid = link.get("uid")
            if not isinstance(uid, str) or not uid or panel.get("targets"):
                continue
            title = str(panel.get("title") or link.get("name") or uid)
            if uid not in read:
                read[uid] = self._library_model(uid)
            model = read[uid]
            if model is None:
                missing.append(f"{title} (library panel {uid})")
                continue
            models.append({**model, "title": title, "id": panel.get("id")})
        return models, missing

    def _library_model(self, uid: str) -> dict[str, Any] | None:
        """A library panel's model, or ``None`` when the library no longer has it."""
        path = f"/api/library-elements/{quote(uid, safe='')}"
        resp = self.http.request("GET", path)
        if resp.status_code == 404:
            return None
        data = self.http.decode(resp)
        result = data.get("result") if isinstance(data, dict) else None
        model = result.get("model") if isinstance(result, dict) else None
        if not isinstance(model, dict):
            raise UnexpectedResponse(
                f"grafana: {path} at {self.cfg.url} has no 'result.model' object")
        return model

    @shared_fact
    def datasources(self) -> list[Datasource]:
        """Every datasource of the organisation (``GET /api/datasources``; the token needs
        ``datasources:read``, which Grafana's Viewer role has)."""
        data = self.http.get_json("/api/datasources")
        if not isinstance(data, list):
            raise UnexpectedResponse(f"grafana: /api/datasources at {self.cfg.url} is not a list")
        found = []
        for raw in data:
            if not isinstance(raw, dict) or not raw.get("uid"):
                continue
            found.append(Datasource(
                uid=str(raw["uid"]), name=str(raw.get("name", "")), type=str(raw.get("type", "")),
                is_default=bool(raw.get("isDefault", False)),
                id=raw.get("id") if isinstance(raw.get("id"), int) else None))
        return found


def count_panels(board: dict[str, Any]) -> int:
    """The number of visualisation panels, rows excluded, collapsed rows' panels included."""
    return len(_panel_titles(board))


def _panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every visualisation panel of ``board``: rows are walked, not counted (a collapsed row
    carries its panels inside it, and dashboards of the pre-5.0 schema keep them in ``rows``)."""

    def walk(panels: Any) -> Iterator[dict[str, Any]]:
        if not isinstance(panels, list):
            return
        for panel in panels:
            if not isinstance(panel, dict):
                continue
            if panel.get("type") == "row":
                yield from walk(panel.get("panels"))
                continue
            yield panel

    yield from walk(board.get("panels"))
    for row in board.get("rows") or []:
        if isinstance(row, dict):
            yield from walk(row.get("panels"))


def _panel_titles(board: dict[str, Any]) -> list[str]:
    return [str(panel.get("title", "")) for panel in _panels(board)]


def resolve_datasources(board: Dashboard,
                        datasources: Sequence[Datasource]) -> list[PanelDatasource]:
    """Resolve every datasource reference of ``board`` against Grafana's datasources: by uid,
    by name (older dashboards), through the dashboard's datasource variables, or to the
    default datasource (of the variable's type where one is given)."""
    by_uid = {d.uid: d for d in datasources}
    by_name = {d.name: d for d in datasources}

    def default(kind: str | None) -> Datasource | None:
        for d in datasources:
            if d.is_default and (kind is None or d.type == kind):
                return d
        # A variable of a type whose datasources are not the default: Grafana picks the
        # first of that type.
        return next((d for d in datasources if kind is not None and d.type == kind), None)

    def lookup(key: str) -> Datasource | None:
        return by_uid.get(key) or by_name.get(key)

    out = []
    for ref in board.datasource_refs:
        key = ref.uid if ref.uid is not None else ref.name
        if key is None:
            found = default(ref.type)
            out.append(PanelDatasource(ref, found, "the default datasource" if found else
                                       "no default datasource"))
            continue
        if key.lower() in _BUILT_IN or ref.type in _BUILT_IN_TYPES:
            out.append(PanelDatasource(ref, None, f"Grafana's built-in {key}", built_in=True))
            continue
        variable = _VARIABLE.match(key)
        if variable is not None:
            name = next(g for g in variable.groups() if g)
            declared = board.datasource_variables.get(name)
            if declared is None:
                out.append(PanelDatasource(
                    ref, None, f"${{{name}}} is not a datasource variable of the dashboard "
                               f"(an unresolved import placeholder)"))
                continue
            kind, current = declared
            found = lookup(current) if current and current != "default" else default(kind)
            out.append(PanelDatasource(ref, found, f"variable ${{{name}}} = "
                                       f"{current or 'default'} ({kind})"))
            continue
        found = lookup(key)
        out.append(PanelDatasource(ref, found, "found" if found else f"no datasource {key}"))
    return out


def _datasource_refs(board: dict[str, Any]) -> list[DatasourceRef]:
    found: dict[DatasourceRef, None] = {}

    def ref(raw: Any, panel: dict[str, Any]) -> DatasourceRef | None:
        title = str(panel.get("title", "")) or f"panel {panel.get('id', '?')}"
        pid = panel.get("id") if isinstance(panel.get("id"), int) else None
        if raw is None:
            return DatasourceRef(title, pid)
        if isinstance(raw, str):
            # Before Grafana 8.3 a panel named its datasource; a variable may stand in.
            return DatasourceRef(title, pid, uid=raw if _VARIABLE.match(raw) else None,
                                 name=None if _VARIABLE.match(raw) else raw)
        if isinstance(raw, dict):
            uid = raw.get("uid")
            kind = raw.get("type")
            return DatasourceRef(title, pid, uid=str(uid) if uid not in (None, "") else None,
                                 type=str(kind) if kind else None)
        return None

    for panel in _panels(board):
        targets = [t for t in panel.get("targets") or [] if isinstance(t, dict)]
        if not targets and "datasource" not in panel:
            continue  # a text panel, or a library panel (its model is read on its own)
        own = ref(panel.get("datasource"), panel)
        mixed = own is not None and (own.uid or "").lower() == _MIXED
        if own is not None and not (targets and mixed):
            found[own] = None
        for target in targets:
            if "datasource" in target:
                inner = ref(target.get("datasource"), panel)
                if inner is not None:
                    found[inner] = None
    return list(found)


def _datasource_variables(board: dict[str, Any]) -> dict[str, tuple[str, str]]:
    templating = board.get("templating")
    variables = templating.get("list") if isinstance(templating, dict) else None
    out = {}
    for var in variables or []:
        if not isinstance(var, dict) or var.get("type") != "datasource" or not var.get("name"):
            continue
        current = var.get("current")
        value = current.get("value") if isinstance(current, dict) else None
        if isinstance(value, list):
            value = value[0] if value else ""
        out[str(var["name"])] = (str(var.get("query", "")), str(value or ""))
    return out
