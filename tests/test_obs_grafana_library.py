"""Library panels: a dashboard holds only their reference (``libraryPanel: {uid, name}``), and
their model lives in Grafana's panel library. The render criterion reads each from the
library: a library panel on a deleted datasource, or gone from the library, does not render;
a dashboard with nothing to judge is not covered; a library Grafana refuses to show is not
judged."""

from __future__ import annotations

from typing import Any

import httpx

from conftest import load_check
from opsready.config import GrafanaConfig
from opsready.probes.grafana import GrafanaProbe
from test_obs_checks import _run

P0 = load_check("test_p0_001_observability")
DATASOURCES = [{"id": 1, "uid": "prom-1", "name": "Prometheus", "type": "prometheus",
                "isDefault": True}]


def _grafana(panels: list[dict[str, Any]], library: dict[str, Any], *,
             library_status: int = 200, asked: list[str] | None = None) -> GrafanaProbe:
    board = {"uid": "golden", "title": "Golden", "panels": panels}

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if asked is not None:
            asked.append(path)
        if path == "/api/datasources":
            return httpx.Response(200, json=DATASOURCES)
        if path == "/api/dashboards/uid/golden":
            return httpx.Response(200, json={"dashboard": board, "meta": {}})
        if path.startswith("/api/library-elements/"):
            uid = path.rsplit("/", 1)[-1]
            if library_status != 200:
                return httpx.Response(library_status, json={"message": "denied"})
            if uid not in library:
                return httpx.Response(404, json={"message": "library element could not be found"})
            return httpx.Response(200, json={"result": {"uid": uid, "name": uid,
                                                        "model": library[uid]}})
        return httpx.Response(404, json={})

    cfg = GrafanaConfig(url="http://grafana.test", token="t", dashboards=["golden"])  # type: ignore[arg-type]
    return GrafanaProbe(cfg, timeout=2, transport=httpx.MockTransport(handler))


def _library_panel(uid: str) -> dict[str, Any]:
    return {"id": 7, "gridPos": {"h": 8, "w": 12, "x": 0, "y": 0}, "title": "Errors",
            "libraryPanel": {"uid": uid, "name": uid}}


def _model(datasource: str) -> dict[str, Any]:
    return {"type": "timeseries", "datasource": {"type": "prometheus", "uid": datasource},
            "targets": [{"expr": "up"}]}


def _render(grafana: GrafanaProbe) -> str:
    return _run(P0.test_grafana_dashboards_render, grafana=grafana)


def test_a_library_panel_is_judged_by_its_model() -> None:
    assert _render(_grafana([_library_panel("errors")], {"errors": _model("prom-1")})) == "pass"
    # Two panels of one library element: both judged, the element read once.
    asked: list[str] = []
    twice = _grafana([_library_panel("errors"), {**_library_panel("errors"), "id": 8}],
                     {"errors": _model("deleted-ds")}, asked=asked)
    assert _render(twice) == "fail" and asked.count("/api/library-elements/errors") == 1
    assert _render(_grafana([_library_panel("errors")], {"errors": _model("deleted-ds")})) == "fail"


def test_a_library_panel_gone_from_the_library_does_not_render() -> None:
    assert _render(_grafana([_library_panel("errors")], {})) == "fail"


def test_a_dashboard_with_nothing_to_judge_is_not_covered() -> None:
    text = [{"id": 1, "type": "text", "title": "About", "options": {"content": "hi"}}]
    assert _render(_grafana(text, {})) == "not covered"


def test_a_library_grafana_refuses_to_show_is_not_judged() -> None:
    assert _render(_grafana([_library_panel("errors")], {}, library_status=403)) == "error"
