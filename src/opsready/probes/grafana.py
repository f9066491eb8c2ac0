"""Grafana HTTP API: health, dashboard search and dashboards by uid.

A dashboard that does not exist is ``None`` (the check fails on it); a refused token, an
unreachable server or a malformed answer raises a ``ProbeError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from opsready._errors import UnexpectedResponse
from opsready.config import GrafanaConfig
from opsready.probes._http import HttpTarget

__all__ = ["Dashboard", "GrafanaProbe", "count_panels"]


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    panels: int
    panel_titles: tuple[str, ...]
    version: int | None
    folder: str


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
        return Dashboard(
            uid=str(board.get("uid", uid)),
            title=str(board.get("title", "")),
            panels=len(titles),
            panel_titles=titles,
            version=version if isinstance(version, int) else None,
            folder=str(meta.get("folderTitle", "")),
        )


def count_panels(board: dict[str, Any]) -> int:
    """The number of visualisation panels, rows excluded, collapsed rows' panels included."""
    return len(_panel_titles(board))


def _panel_titles(board: dict[str, Any]) -> list[str]:
    found: list[str] = []

    def walk(panels: Any) -> None:
        if not isinstance(panels, list):
            return
        for panel in panels:
            if not isinstance(panel, dict):
                continue
            if panel.get("type") == "row":
                # A collapsed row carries its panels inside it.
                walk(panel.get("panels"))
                continue
            found.append(str(panel.get("title", "")))

    walk(board.get("panels"))
    # Dashboards of the pre-5.0 schema keep panels in rows.
    for row in board.get("rows") or []:
        if isinstance(row, dict):
            walk(row.get("panels"))
    return found
