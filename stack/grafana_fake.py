# Contract fake of Grafana's HTTP API (a SaaS that cannot run here), shaped per api-facts.md.
"""Grafana with the platform's dashboards: health, search, dashboards by uid and the
organisation's datasources.

Run as ``python -m opsready_stack.grafana_fake --dir DIR --port P``. The service-account token
comes from ``DIR/state.json``; the dashboards from ``stack/grafana/*.json``. Faults are read
from ``DIR/faults.json`` on every request.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import hmac
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from opsready_stack.part import Fault, FaultWatcher, HttpFakePart, StackContext

__all__ = [
    "DASHBOARDS_DIR",
    "DATASOURCES",
    "GOLDEN_SIGNALS_UID",
    "FakeGrafana",
    "GrafanaPart",
    "serve",
]

HERE = Path(__file__).resolve().parent
DASHBOARDS_DIR = HERE / "grafana"
GOLDEN_SIGNALS_UID = "relay-golden-signals"
VERSION = "10.4.2"
COMMIT = "701c851be7"
FOLDER = {"id": 12, "uid": "relay-ops", "title": "Relay"}
SLO_UID = "relay-slo"
PROMETHEUS_UID = "prometheus"
# The organisation's datasources, in the shape of GET /api/datasources.
DATASOURCES = (
    {"id": 1, "uid": PROMETHEUS_UID, "orgId": 1, "name": "Prometheus", "type": "prometheus",
     "typeName": "Prometheus", "access": "proxy", "url": "http://prometheus:9090",
     "basicAuth": False, "isDefault": True, "jsonData": {"httpMethod": "POST"},
     "readOnly": False},
    {"id": 2, "uid": "loki", "orgId": 1, "name": "Loki", "type": "loki", "typeName": "Loki",
     "access": "proxy", "url": "http://loki:3100", "basicAuth": False, "isDefault": False,
     "jsonData": {}, "readOnly": False},
)
# Where an export leaves its datasource input for the import to fill in.
IMPORT_PLACEHOLDER = "${DS_PROMETHEUS}"

FAULTS = (
    Fault("dashboard-missing",
          f"the {GOLDEN_SIGNALS_UID} dashboard was never imported into Grafana",
          frozenset({"P0-001"})),
    Fault("dashboard-datasource-unresolved",
          f"the {SLO_UID} dashboard was imported with its {IMPORT_PLACEHOLDER} input left "
          f"unresolved, so its panels do not render",
          frozenset({"P0-001"})),
    Fault("datasource-deleted",
          f"the Prometheus datasource was deleted and re-created under another uid; the "
          f"panels still point at uid {PROMETHEUS_UID}",
          frozenset({"P0-001"})),
    Fault("dashboard-datasource-by-name",
          f"{GOLDEN_SIGNALS_UID} names its datasource as older dashboards do (\"Prometheus\"), "
          f"and {SLO_UID} through a $datasource dashboard variable",
          frozenset(), variant=True),
)


class FakeGrafana:
    """The dashboards and the answers; no state changes, so no lock."""

    def __init__(self, dir: Path, token: str) -> None:
        self.token = token
        self.faults = FaultWatcher(dir / "faults.json")
        self.boards: dict[str, dict[str, Any]] = {}
        for i, file in enumerate(sorted(DASHBOARDS_DIR.glob("*.json")), start=1):
            board = json.loads(file.read_text(encoding="utf-8"))
            board["id"] = 100 + i
            self.boards[board["uid"]] = board
        self.started = dt.datetime.now(dt.UTC)

    def visible(self) -> dict[str, dict[str, Any]]:
        faults = self.faults()
        boards = self.boards
        if "dashboard-missing" in faults:
            boards = {u: b for u, b in boards.items() if u != GOLDEN_SIGNALS_UID}
        if "dashboard-datasource-unresolved" in faults and SLO_UID in boards:
            boards = {**boards, SLO_UID: _with_datasource(
                boards[SLO_UID], {"type": "prometheus", "uid": IMPORT_PLACEHOLDER})}
        if "dashboard-datasource-by-name" in faults:
            boards = dict(boards)
            if GOLDEN_SIGNALS_UID in boards:
                boards[GOLDEN_SIGNALS_UID] = _with_datasource(boards[GOLDEN_SIGNALS_UID],
                                                              "Prometheus")
            if SLO_UID in boards:
                board = _with_datasource(boards[SLO_UID],
                                         {"type": "prometheus", "uid": "${datasource}"})
                board["templating"] = {"list": [{
                    "type": "datasource", "name": "datasource", "label": "Datasource",
                    "query": "prometheus", "hide": 0,
                    "current": {"text": "Prometheus", "value": PROMETHEUS_UID},
                }]}
                boards[SLO_UID] = board
        return boards

    def datasources(self) -> list[dict[str, Any]]:
        found = [dict(d) for d in DATASOURCES]
        if self.faults.on("datasource-deleted"):
            for d in found:
                if d["uid"] == PROMETHEUS_UID:
                    d.update({"id": 3, "uid": "P1809F7CD0C75ACF3"})
        return found

    def authorised(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header.removeprefix("Bearer ").encode(), self.token.encode())

    def handle(self, method: str, target: str, auth: str | None) -> tuple[int, Any]:
        url = urlsplit(target)
        path = url.path.rstrip("/") or "/"
        if method != "GET":
            return 405, {"message": "Method not allowed"}
        if path == "/api/health":
            return 200, {"commit": COMMIT, "database": "ok", "version": VERSION}
        if not path.startswith("/api/"):
            return 404, {"message": "Not found"}
        if not self.authorised(auth):
            return 401, {"message": "Unauthorized", "messageId": "auth.unauthorized",
                         "statusCode": 401, "traceID": ""}
        if path == "/api/search":
            return 200, self.search(parse_qs(url.query))
        if path == "/api/datasources":
            return 200, self.datasources()
        if path.startswith("/api/datasources/uid/"):
            uid = unquote(path.removeprefix("/api/datasources/uid/"))
            found = next((d for d in self.datasources() if d["uid"] == uid), None)
            return (200, found) if found else (404, {"message": "Data source not found"})
        if path.startswith("/api/dashboards/uid/"):
            uid = unquote(path.removeprefix("/api/dashboards/uid/"))
            board = self.visible().get(uid)
            if board is None:
                return 404, {"message": "Dashboard not found", "status": "not-found"}
            return 200, {"dashboard": board, "meta": self.meta(board)}
        return 404, {"message": "Not found"}

    def search(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        kinds = query.get("type", [])
        if kinds and "dash-db" not in kinds:
            return []
        text = (query.get("query") or [""])[0].lower()
        tags = set(query.get("tag", []))
        found = []
        for board in self.visible().values():
            if text and text not in board["title"].lower():
                continue
            if tags and not tags <= set(board.get("tags", [])):
                continue
            found.append({
                "id": board["id"],
                "uid": board["uid"],
                "title": board["title"],
                "uri": f"db/{board['uid']}",
                "url": f"/d/{board['uid']}/{board['uid']}",
                "slug": "",
                "type": "dash-db",
                "tags": board.get("tags", []),
                "isStarred": False,
                "folderId": FOLDER["id"],
                "folderUid": FOLDER["uid"],
                "folderTitle": FOLDER["title"],
                "folderUrl": f"/dashboards/f/{FOLDER['uid']}/",
            })
        return sorted(found, key=lambda d: d["title"])

    def meta(self, board: dict[str, Any]) -> dict[str, Any]:
        stamp = self.started.strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "type": "db",
            "canSave": False,
            "canEdit": False,
            "canAdmin": False,
            "canStar": True,
            "slug": board["uid"],
            "url": f"/d/{board['uid']}/{board['uid']}",
            "created": stamp,
            "updated": stamp,
            "updatedBy": "admin",
            "createdBy": "admin",
            "version": board.get("version", 1),
            "isFolder": False,
            "folderId": FOLDER["id"],
            "folderUid": FOLDER["uid"],
            "folderTitle": FOLDER["title"],
            "folderUrl": f"/dashboards/f/{FOLDER['uid']}/",
            "provisioned": False,
        }


def _with_datasource(board: dict[str, Any], datasource: Any) -> dict[str, Any]:
    """A copy of ``board`` whose panels and targets all name ``datasource``."""
    board = copy.deepcopy(board)

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            if "datasource" in panel:
                panel["datasource"] = datasource
            for target in panel.get("targets") or []:
                if "datasource" in target:
                    target["datasource"] = datasource
            walk(panel.get("panels") or [])

    walk(board.get("panels") or [])
    return board


def serve(app: FakeGrafana, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        server_version = "Grafana"
        sys_version = ""

        def _answer(self, method: str) -> None:
            status, body = app.handle(method, self.path, self.headers.get("Authorization"))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._answer("GET")

        def do_POST(self) -> None:
            self._answer("POST")

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    return server


class GrafanaPart(HttpFakePart):
    """The Grafana contract fake as a part of the reference stack."""

    name = "grafana"
    ports = ("grafana",)
    faults = FAULTS
    module = "opsready_stack.grafana_fake"
    health = (("grafana", "/api/health"),)
    urls = (("grafana", "grafana", ""),)

    def env_config(self, ctx: StackContext) -> dict[str, Any]:
        uids = sorted(json.loads(f.read_text(encoding="utf-8"))["uid"]
                      for f in DASHBOARDS_DIR.glob("*.json"))
        return {"grafana": {"url": ctx.urls["grafana"], "token": ctx.secrets["grafana_token"],
                            "dashboards": uids, "datasource_types": ["prometheus"]}}


def _token(dir: Path) -> str:
    state = json.loads((dir / "state.json").read_text(encoding="utf-8"))
    return str(state["secrets"]["grafana_token"])


def main() -> None:
    parser = argparse.ArgumentParser(description="Grafana HTTP API contract fake")
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = serve(FakeGrafana(args.dir, _token(args.dir)), args.port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
