# Contract fake of Grafana's HTTP API (a SaaS that cannot run here), shaped per api-facts.md.
"""Grafana with the platform's dashboards: health, search and dashboards by uid.

Run as ``python -m opsready_stack.grafana_fake --dir DIR --port P``. The service-account token
comes from ``DIR/state.json``; the dashboards from ``stack/grafana/*.json``. Faults are read
from ``DIR/faults.json`` on every request.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hmac
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from opsready_stack.part import Fault, FaultWatcher, StackContext, kill_pidfile, wait_until

__all__ = ["DASHBOARDS_DIR", "GOLDEN_SIGNALS_UID", "FakeGrafana", "GrafanaPart", "serve"]

HERE = Path(__file__).resolve().parent
DASHBOARDS_DIR = HERE / "grafana"
GOLDEN_SIGNALS_UID = "relay-golden-signals"
VERSION = "10.4.2"
COMMIT = "701c851be7"
FOLDER = {"id": 12, "uid": "relay-ops", "title": "Relay"}

FAULTS = (
    Fault("dashboard-missing",
          f"the {GOLDEN_SIGNALS_UID} dashboard was never imported into Grafana",
          frozenset({"P0-001"})),
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
        if self.faults.on("dashboard-missing"):
            return {u: b for u, b in self.boards.items() if u != GOLDEN_SIGNALS_UID}
        return self.boards

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


class GrafanaPart:
    """The Grafana contract fake as a part of the reference stack."""

    name = "grafana"
    ports = ("grafana",)
    faults = FAULTS

    def start(self, ctx: StackContext) -> None:
        port = ctx.ports["grafana"]
        ctx.spawn("grafana", [ctx.python(), "-m", "opsready_stack.grafana_fake",
                              "--dir", str(ctx.dir), "--port", str(port)])
        ctx.urls["grafana"] = f"http://127.0.0.1:{port}"

    def wait_ready(self, ctx: StackContext, deadline: float) -> None:
        import httpx

        url = ctx.urls["grafana"] + "/api/health"
        try:
            wait_until(lambda: httpx.get(url, timeout=1.0).status_code == 200, deadline,
                       "grafana fake")
        except RuntimeError:
            raise RuntimeError(
                f"grafana fake did not answer at {url}; see {ctx.logs / 'grafana.log'}"
            ) from None

    def after_ready(self, ctx: StackContext) -> None:
        return None

    def env_config(self, ctx: StackContext) -> dict[str, Any]:
        uids = sorted(json.loads(f.read_text(encoding="utf-8"))["uid"]
                      for f in DASHBOARDS_DIR.glob("*.json"))
        return {"grafana": {"url": ctx.urls["grafana"], "token": ctx.secrets["grafana_token"],
                            "dashboards": uids}}

    def set_fault(self, ctx: StackContext, name: str, on: bool) -> None:
        # Read from faults.json per request.
        return None

    def stop(self, ctx: StackContext) -> None:
        kill_pidfile(ctx.pids / "grafana.pid")


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
