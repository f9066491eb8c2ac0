"""Alert rule names need not be unique (a warning and a critical tier of one alert, another
team's rule on a shared Prometheus): the loaded-rules criterion judges every in-scope rule of
each configured name, so a healthy namesake cannot hide a broken one, and another team's rule
outside the scope cannot stand in for ours."""

from __future__ import annotations

from typing import Any

import httpx

from conftest import load_check
from test_obs_checks import FakePrometheus, _prometheus, _rule, _run

P0 = load_check("test_p0_001_observability")
EXPR = 'sum(rate(http_requests_total{job="relay",status=~"5.."}[5m])) > 1'


class WithBuildInfo(FakePrometheus):
    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/status/buildinfo":
            return httpx.Response(200, json={"status": "success", "data": {"version": "2.53.0"}})
        return super().__call__(request)


def _loaded(rules: list[dict[str, Any]], **cfg: Any) -> str:
    probe = _prometheus(WithBuildInfo(rules), alert_rules=["HighErrorRate"], **cfg)
    return _run(P0.test_alert_rules_loaded, prometheus=probe)


def test_a_broken_rule_is_not_hidden_by_a_healthy_namesake() -> None:
    warning = _rule("HighErrorRate", EXPR)
    critical = {**_rule("HighErrorRate", EXPR), "health": "err",
                "lastError": "vector cannot contain metrics with the same labelset"}
    assert _loaded([critical, warning]) == "fail"
    assert _loaded([warning, critical]) == "fail"
    assert _loaded([warning, _rule("HighErrorRate", EXPR)]) == "pass"


def test_another_teams_namesake_outside_the_scope_does_not_count() -> None:
    ours = {**_rule("HighErrorRate", EXPR), "group": "relay-alerts"}
    theirs = {**_rule("HighErrorRate", EXPR), "group": "billing-alerts", "health": "err"}
    assert _loaded([ours, theirs], rule_groups=["relay-alerts"]) == "pass"
    assert _loaded([theirs], rule_groups=["relay-alerts"]) == "fail"


def test_prometheus_down_is_not_judged() -> None:
    probe = _prometheus(WithBuildInfo([], down=True), alert_rules=["HighErrorRate"])
    assert _run(P0.test_alert_rules_loaded, prometheus=probe) == "error"
