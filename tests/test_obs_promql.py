"""Rule expressions parsed into their vector selectors, and the probe methods that ask
Prometheus about them (``series_exist``, ``rule_series``, ``increase``, ``retention``)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from opsready._errors import AccessRefused, MissingInput, UnexpectedResponse
from opsready.config import PrometheusConfig
from opsready.probes.prometheus import (
    PrometheusProbe,
    Rule,
    Selector,
    parse_selector,
    rule_selectors,
)


def _selectors(expr: str) -> list[tuple[str, str]]:
    return [(str(s.selector), s.exempt) for s in rule_selectors(expr)]


@pytest.mark.parametrize(("expr", "expected"), [
    # Inside functions and aggregations, with ranges and offsets dropped.
    ('histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket'
     '{job="relay",path="/api"}[5m] offset 1h)))',
     [('http_request_duration_seconds_bucket{job="relay",path="/api"}', "")]),
    # Both sides of a binary operation, label names of on()/by() are not metrics.
    ('sum by (instance) (a{job="x"}) / on(instance) group_left(team) b @ 1700000000',
     [('a{job="x"}', ""), ("b", "")]),
    # A subquery.
    ("max_over_time(rate(c_total[5m])[1h:1m])", [("c_total", "")]),
    # {__name__="…"} is the same selector as the bare name.
    ('{__name__="up",job="relay"} == 0', [('up{job="relay"}', "")]),
    ('{__name__=~"http_.*",job="relay"}', [('{__name__=~"http_.*",job="relay"}', "")]),
    # Unary minus, parentheses and number literals.
    ("-(x) + 1", [("x", "")]),
    # topk's parameter may itself select series.
    ("topk(scalar(n), y)", [("n", ""), ("y", "")]),
])
def test_selectors_are_found_wherever_they_are(expr: str, expected: list[tuple[str, str]]) -> None:
    assert _selectors(expr) == expected


def test_selectors_the_expression_expects_to_be_empty_are_exempt() -> None:
    # The fallback of `or vector(0)` stands in for the left side, as in pint.
    found = dict(_selectors('(sum(rate(req{status=~"5.."}[5m])) or vector(0)) / sum(rate(req[5m]))'))
    assert found['req{status=~"5.."}'] == "falls back to vector(0)"
    assert found["req"] == ""
    # absent() is there to fire when its argument matches nothing.
    assert _selectors('up{job="a"} == 0 or absent(up{job="b"})') == [
        ('up{job="a"}', ""), ('up{job="b"}', "inside absent()")]
    # The right side of `unless` need not exist.
    assert _selectors("a unless b") == [("a", ""), ("b", "right-hand side of unless")]
    # A selector that must match in one place must match, even if exempt elsewhere.
    assert _selectors("absent(x) or x > 1") == [("x", "")]


def test_selectors_only_inside_absent_are_presence_tests_not_uses() -> None:
    def presence(expr: str) -> dict[str, bool]:
        return {str(s.selector): s.presence_only for s in rule_selectors(expr)}

    assert presence("absent(a) or absent_over_time(b[5m])") == {"a": True, "b": True}
    # Read somewhere else too: its value is read.
    assert presence("absent(x) or x > 1") == {"x": False}
    # The other exempt places read values: the fallback's left side and unless' right side.
    assert presence("(a or vector(0)) > 0 unless b > 0") == {"a": False, "b": False}
    # absent() nested under another exempt place is still a presence test.
    assert presence("absent(a) or vector(0)") == {"a": True}
    rule = Rule(name="Missing", kind="alerting", group="g", file="f", health="ok",
                query='absent(pool_available{job="relay"}) or pool_waiting{job="relay"} > 0')
    assert rule.selected_metrics() == {"pool_available", "pool_waiting"}
    assert rule.used_metrics() == {"pool_waiting"}


def test_label_values_are_quoted_back_safely() -> None:
    sel = parse_selector('x{a="q\\"uote",b=~"a\\\\.b"}')
    assert sel == Selector("x", (("a", "=", 'q"uote'), ("b", "=~", "a\\.b")))
    assert parse_selector(str(sel)) == sel


def test_unparsable_expression_cannot_be_judged() -> None:
    with pytest.raises(UnexpectedResponse, match="cannot parse"):
        rule_selectors("sum(rate(x[5m])")


def test_may_be_empty_covers_by_metric_and_matchers() -> None:
    alerts = parse_selector("ALERTS")
    assert alerts.covers(parse_selector('ALERTS{alertname="X",alertstate="firing"}'))
    five = parse_selector('http_requests_total{status=~"5.."}')
    assert five.covers(parse_selector('http_requests_total{job="relay",status=~"5.."}'))
    assert not five.covers(parse_selector('http_requests_total{job="relay"}'))
    assert not five.covers(parse_selector('http_request_total{status=~"5.."}'))


def test_may_be_empty_must_be_a_selector() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="not a plain selector"):
        PrometheusConfig(url="http://p.test", series_may_be_empty=["sum(x)"])


# -- the probe against a mocked API -------------------------------------------------------------


class _Api:
    """Answers instant queries from a table: ``count(<selector>)`` -> matches or not."""

    def __init__(self, present: set[str], **extra: Any) -> None:
        self.present = present
        self.extra = extra
        self.queries: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path in self.extra:
            status, body = self.extra[path]
            return httpx.Response(status, json=body)
        if path == "/api/v1/query":
            query = parse_qs(request.url.query.decode())["query"][0]
            self.queries.append(query)
            inner = query.removeprefix("count(").removesuffix(")")
            result = [{"metric": {}, "value": [1, "1"]}] if inner in self.present else []
            return httpx.Response(200, json={"status": "success",
                                             "data": {"resultType": "vector", "result": result}})
        return httpx.Response(404, json={"status": "error", "errorType": "not_found"})


def _probe(api: Any, **cfg: Any) -> PrometheusProbe:
    # PromQL goes through prometheus-api-client (requests); route it to the mock as well.
    probe = PrometheusProbe(PrometheusConfig(url="http://prom.test", **cfg), timeout=2,
                            transport=httpx.MockTransport(api))

    def query(promql: str) -> Any:
        resp = api(httpx.Request("GET", "http://prom.test/api/v1/query",
                                 params={"query": promql}))
        from opsready.probes.prometheus import _samples

        return _samples(json.loads(resp.content)["data"]["result"], promql)

    probe.query = query  # type: ignore[method-assign]
    return probe


def _rule(name: str, query: str, kind: str = "alerting", **labels: str) -> Rule:
    return Rule(name=name, kind=kind, group="g", file="f.yml", query=query,  # type: ignore[arg-type]
                health="ok", labels=labels)


def test_rule_series_asks_each_selector_once_and_honours_exemptions() -> None:
    api = _Api({'up{job="relay"}', "slo:ratio"})
    probe = _probe(api)
    rules = [
        _rule("Down", 'up{job="relay"} == 0 or absent(up{job="relay"})'),
        _rule("Meta", 'count(ALERTS{alertstate="firing"}) > 0'),
        _rule("Typo", 'rate(http_request_total{job="relay"}[5m]) > 1'),
        _rule("slo:ratio", "sum(rate(x[5m]))", kind="recording"),
    ]
    statuses = probe.rule_series(rules, own_output=True)
    by = {(s.rule, str(s.selector)): s for s in statuses}
    assert by[("Down", 'up{job="relay"}')].matches is True
    assert by[("Meta", 'ALERTS{alertstate="firing"}')].matches is None
    assert "series_may_be_empty" in by[("Meta", 'ALERTS{alertstate="firing"}')].exempt
    assert by[("Typo", 'http_request_total{job="relay"}')].matches is False
    assert by[("slo:ratio", "x")].matches is False
    assert by[("slo:ratio", "slo:ratio")].matches is True
    assert api.queries.count('count(up{job="relay"})') == 1
    assert not any("ALERTS" in q for q in api.queries)


def test_increase_and_job_series_build_the_query() -> None:
    api = _Api(set())
    probe = _probe(api, service_job='re"lay')
    assert probe.increase("rate_limit_breaches_total", "24h") is None
    assert api.queries[-1] == 'sum(increase(rate_limit_breaches_total{job="re\\"lay"}[24h]))'
    with pytest.raises(UnexpectedResponse, match="not a PromQL duration"):
        probe.increase("x_total", "1 day")
    with pytest.raises(UnexpectedResponse, match="not a valid metric name"):
        probe.job_series("x{}")
    with pytest.raises(MissingInput, match="service_job"):
        _probe(api).job_series("x")


@pytest.mark.parametrize(("answers", "seconds", "source"), [
    ({"/api/v1/status/runtimeinfo": (200, {"status": "success",
                                           "data": {"storageRetention": "1d"}})},
     86400, "runtimeinfo"),
    ({"/api/v1/status/runtimeinfo": (200, {"status": "success",
                                           "data": {"storageRetention": "30d or 10GiB"}})},
     30 * 86400, "runtimeinfo"),
    ({"/api/v1/status/runtimeinfo": (200, {"status": "success",
                                           "data": {"storageRetention": "10GiB"}})},
     None, "runtimeinfo"),
    ({"/api/v1/status/flags": (200, {"status": "success",
                                     "data": {"storage.tsdb.retention.time": "0s"}})},
     15 * 86400, "flag"),
    ({}, None, "not served"),
])
def test_retention(answers: dict[str, Any], seconds: float | None, source: str) -> None:
    retention = _probe(_Api(set(), **answers)).retention()
    assert retention.seconds == seconds
    assert source in retention.source


def test_retention_refused_is_an_error() -> None:
    api = _Api(set(), **{"/api/v1/status/runtimeinfo": (403, {"status": "error"})})
    with pytest.raises(AccessRefused):
        _probe(api).retention()


def test_rules_are_scoped_by_group_or_file() -> None:
    probe = _probe(_Api(set()), rule_groups=["relay-*"], rule_files=["*/team-a/*.yml"])
    mine = Rule(name="a", kind="alerting", group="relay-alerts", file="/x/b.yml", query="x",
                health="ok")
    theirs = Rule(name="b", kind="alerting", group="payments", file="/x/b.yml", query="x",
                  health="ok")
    by_file = Rule(name="c", kind="alerting", group="other", file="/etc/team-a/c.yml",
                   query="x", health="ok")
    assert [probe.in_scope(r) for r in (mine, theirs, by_file)] == [True, False, True]
    assert _probe(_Api(set())).in_scope(theirs)


def test_target_metadata_per_instance() -> None:
    body = {"status": "success", "data": [
        {"target": {"instance": "a:1", "job": "relay"}, "metric": "x_total", "type": "counter",
         "help": "h", "unit": ""},
        {"target": {"instance": "b:1", "job": "relay"}, "metric": "x_total", "type": "gauge",
         "help": "h", "unit": ""},
    ]}
    api = _Api(set(), **{"/api/v1/targets/metadata": (200, body)})
    found = _probe(api, service_job="relay").target_metadata("x_total")
    assert [(m.instance, m.type) for m in found] == [("a:1", "counter"), ("b:1", "gauge")]


SLOTH = ('(sum(rate(req_count{job="svc",code=~"(5..|429)"}[5m])))'
         ' / (sum(rate(req_count{job="svc"}[5m])))')
FIVE_XX = 'req_count{code=~"(5..|429)",job="svc"}'
OUTPUT = 'slo:sli_error:ratio_rate5m{sloth_id="svc-1"}'


def _output(statuses: list[Any]) -> Any:
    return next(s for s in statuses if s.selector.metric == "slo:sli_error:ratio_rate5m")


def test_recording_output_empty_only_because_a_listed_input_is_empty_is_explained() -> None:
    """A Sloth-style ratio without ``or vector(0)``: no 5xx yet, so the numerator and the
    recorded ratio have no series. Listing the 5xx selector explains the empty output."""
    rule = _rule("slo:sli_error:ratio_rate5m", SLOTH, kind="recording", sloth_id="svc-1")
    listed = {"series_may_be_empty": [FIVE_XX]}
    no_5xx = _probe(_Api({'req_count{job="svc"}'}), **listed)
    out = _output(no_5xx.rule_series([rule], own_output=True))
    assert out.matches is False and FIVE_XX in out.exempt and "records nothing" in out.exempt
    # The 5xx series exists, yet the output is empty: nothing explains it.
    broken = _probe(_Api({'req_count{job="svc"}', FIVE_XX}), **listed)
    out = _output(broken.rule_series([rule], own_output=True))
    assert (out.matches, out.exempt) == (False, "")
    # An input that must match is missing: the input is named, the output not explained.
    renamed = _probe(_Api(set()), **listed)
    statuses = renamed.rule_series([rule], own_output=True)
    assert (_output(statuses).matches, _output(statuses).exempt) == (False, "")
    # Without the listing, the empty 5xx input is itself the finding.
    unlisted = _probe(_Api({'req_count{job="svc"}'})).rule_series([rule], own_output=True)
    assert {str(s.selector): s.matches for s in unlisted}[FIVE_XX] is False


def test_recording_output_listed_as_may_be_empty_is_exempt() -> None:
    rule = _rule("slo:sli_error:ratio_rate5m", SLOTH, kind="recording", sloth_id="svc-1")
    api = _Api({'req_count{job="svc"}'})
    probe = _probe(api, series_may_be_empty=[FIVE_XX, "slo:sli_error:ratio_rate5m"])
    out = _output(probe.rule_series([rule], own_output=True))
    assert out.matches is None and "series_may_be_empty" in out.exempt
    assert not any("slo:sli_error" in q for q in api.queries)

