"""Prometheus: loaded rules, scrape targets, build and runtime info over its HTTP API (httpx),
and PromQL through ``prometheus-api-client``.

Checks never write PromQL: the probe builds every query (``series_exist``, ``increase``,
``job_series``, ``slo_status``) and parses rule expressions into their vector selectors
(``rule_selectors``, with the maintained ``promql-parser``), so that a selector that matches
nothing can be named.

A rule or a series that is not there is data (an empty list, ``None``, ``False``): the check
decides. An API error envelope (``{"status":"error","errorType":…,"error":…}``), an HTTP error,
a malformed answer or an expression the parser cannot read raises a ``ProbeError``: the
criterion could not be judged.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import math
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import httpx

from opsready._errors import (
    AccessRefused,
    MissingInput,
    ProbeError,
    ProbeTimeout,
    TargetUnreachable,
    UnexpectedResponse,
)
from opsready.config import PrometheusConfig, SloConfig, SloSpec
from opsready.evidence import redactor
from opsready.probes._http import USER_AGENT, HttpTarget, no_cookie_policy, requests_body_limit
from opsready.probes._parallel import in_parallel
from opsready.probes._shared import shared_fact

if TYPE_CHECKING:
    import requests

__all__ = [
    "PrometheusProbe",
    "Retention",
    "Rule",
    "RuleSelector",
    "Sample",
    "Selector",
    "SelectorStatus",
    "SloStatus",
    "Target",
    "TargetMetadata",
    "parse_selector",
    "promql_duration",
    "rule_selectors",
]


@dataclass(frozen=True)
class Rule:
    """One loaded rule, as ``/api/v1/rules`` reports it."""

    name: str
    kind: Literal["alerting", "recording"]
    group: str
    file: str
    query: str
    health: str
    last_error: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    state: str | None = None

    def selected_metrics(self) -> set[str]:
        """The metric names the rule's expression selects (parsed, so a label value or a
        string that happens to spell a metric is not a use of it)."""
        return {s.selector.metric for s in rule_selectors(self.query) if s.selector.metric}

    def used_metrics(self) -> set[str]:
        """The metric names whose values the rule's expression reads: those it selects
        outside ``absent()``/``absent_over_time()`` somewhere. A metric selected only there is
        tested for having no series at all, so the rule cannot react to what it measures."""
        return {s.selector.metric for s in rule_selectors(self.query)
                if s.selector.metric and not s.presence_only}

    def uses(self, metric: str) -> bool:
        """True when the rule's expression selects ``metric``."""
        return metric in self.selected_metrics()

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "group": self.group, "health": self.health}
        if self.last_error:
            out["last_error"] = self.last_error
        return out


@dataclass(frozen=True)
class Target:
    """One active scrape target."""

    job: str
    scrape_pool: str
    scrape_url: str
    health: str
    last_error: str
    last_scrape: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Sample:
    """One element of an instant vector."""

    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class SelectorStatus:
    """One selector of one rule, and whether it matches a series now (``None``: not asked,
    because it is ``exempt``). A recording rule's output that is empty only because an input
    listed in ``prometheus.series_may_be_empty`` is empty has both: ``matches=False`` and
    ``exempt`` naming that input (see ``PrometheusProbe.rule_series``)."""

    rule: str
    selector: Selector
    exempt: str
    matches: bool | None


@dataclass(frozen=True)
class TargetMetadata:
    """What one scrape target says about one metric (``/api/v1/targets/metadata``)."""

    instance: str
    metric: str
    type: str
    help: str


@dataclass(frozen=True)
class Retention:
    """How long the server keeps samples: ``seconds`` (``None`` when it has no time limit or
    does not say), and where that came from."""

    seconds: float | None
    source: str


@dataclass(frozen=True)
class SloStatus:
    """One SLO as measured now. See ``PrometheusProbe.slo_status`` for the definitions."""

    name: str
    target: float
    objective: Literal["le", "ge"]
    unit: str
    value: float | None
    # Why ``value`` is missing: "no_series" (the query matches nothing) or "no_events" (it
    # matched, but the window had no events: NaN). Empty when there is a value.
    missing: Literal["", "no_series", "no_events"]
    compliant: bool | None
    budget_fraction: float | None
    bad_fraction: float | None
    budget_remaining: float | None
    burn_rate: float | None
    query: str
    current_window: str
    window: str
    budget_window: str
    note: str = ""

    def row(self) -> dict[str, Any]:
        """The row of the report's SLO table. ``window`` is the SLO's window; the budget
        columns were computed over ``budget_window``, shorter when Prometheus keeps less."""
        return {
            "slo": self.name,
            "target": self.target,
            "objective": self.objective,
            "unit": self.unit,
            "value": _round(self.value),
            "compliant": self.compliant,
            "budget_remaining": _round(self.budget_remaining),
            "burn_rate": _round(self.burn_rate),
            "current_window": self.current_window,
            "window": self.window,
            "budget_window": self.budget_window,
            "note": self.note,
        }


class PrometheusProbe:
    """Read-only access to one Prometheus server.

    Rules, targets and build info go through httpx with ``timeout``; PromQL queries use
    ``prometheus_api_client`` with ``cfg.timeout_s`` (queries over long windows can take
    longer than metadata calls).
    """

    def __init__(
        self,
        cfg: PrometheusConfig,
        timeout: float,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.cfg = cfg
        self.timeout = timeout
        self._headers: dict[str, str] = {}
        if cfg.bearer_token is not None and cfg.bearer_token.get_secret_value():
            self._headers["Authorization"] = f"Bearer {cfg.bearer_token.get_secret_value()}"
        self.http = HttpTarget("prometheus", cfg.url, timeout=timeout, headers=self._headers,
                               transport=transport)
        self._client: Any = None
        self._session: requests.Session | None = None
        # The raw answer of the last query, per thread: queries of one criterion overlap.
        self._answers = threading.local()
        self._connecting = threading.Lock()

    @property
    def url(self) -> str:
        return self.cfg.url

    def close(self) -> None:
        self.http.close()
        if self._session is not None:
            self._session.close()

    # -- HTTP API (httpx) -------------------------------------------------------------------

    @shared_fact
    def rules(self, kind: Literal["alert", "record"] | None = None) -> list[Rule]:
        """Every loaded rule, optionally only alerting (``alert``) or recording (``record``).

        The ``type`` filter is sent, but each rule is kept by its own ``type``: the filter is
        optional in the API and rulers that speak it (vmalert before v1.98, older Loki
        rulers) ignore it and answer every rule."""
        params: dict[str, str] | None = {"type": kind} if kind else None
        wanted = {"alert": "alerting", "record": "recording"}.get(kind or "")
        data = self._api("/api/v1/rules", params=params)
        groups = data.get("groups") if isinstance(data, dict) else None
        if not isinstance(groups, list):
            raise UnexpectedResponse(
                f"prometheus: /api/v1/rules at {self.url} has no 'groups' list; "
                f"is this a Prometheus server?"
            )
        found: list[Rule] = []
        for group in groups:
            if not isinstance(group, dict):
                continue
            for raw in group.get("rules") or []:
                if not isinstance(raw, dict):
                    continue
                rule_kind = raw.get("type")
                if rule_kind not in ("alerting", "recording"):
                    continue
                if wanted is not None and rule_kind != wanted:
                    continue
                found.append(Rule(
                    name=str(raw.get("name", "")),
                    kind=rule_kind,
                    group=str(group.get("name", "")),
                    file=str(group.get("file", "")),
                    query=str(raw.get("query", "")),
                    health=str(raw.get("health", "unknown")),
                    last_error=str(raw.get("lastError") or ""),
                    labels=_str_map(raw.get("labels")),
                    annotations=_str_map(raw.get("annotations")),
                    state=raw.get("state") if isinstance(raw.get("state"), str) else None,
                ))
        return found

    def alert_rules(self) -> list[Rule]:
        return self.rules("alert")

    def recording_rules(self) -> list[Rule]:
        return self.rules("record")

    def in_scope(self, rule: Rule) -> bool:
        """True when ``rule`` belongs to the platform: its group matches one of
        ``prometheus.rule_groups`` or its file one of ``prometheus.rule_files`` (glob
        patterns). With neither configured, every rule does."""
        groups, files = self.cfg.rule_groups, self.cfg.rule_files
        if not groups and not files:
            return True
        return (any(fnmatch.fnmatchcase(rule.group, g) for g in groups)
                or any(fnmatch.fnmatchcase(rule.file, f) for f in files))

    def scoped_rules(self, kind: Literal["alert", "record"] | None = None) -> list[Rule]:
        """The loaded rules within ``prometheus.rule_groups`` / ``rule_files``."""
        return [r for r in self.rules(kind) if self.in_scope(r)]

    def targets(self, job: str | None = None) -> list[Target]:
        """Active scrape targets, optionally only those of ``job``."""
        data = self._api("/api/v1/targets", params={"state": "active"})
        active = data.get("activeTargets") if isinstance(data, dict) else None
        if not isinstance(active, list):
            raise UnexpectedResponse(
                f"prometheus: /api/v1/targets at {self.url} has no 'activeTargets' list"
            )
        found = []
        for raw in active:
            if not isinstance(raw, dict):
                continue
            labels = _str_map(raw.get("labels"))
            target = Target(
                job=labels.get("job", str(raw.get("scrapePool", ""))),
                scrape_pool=str(raw.get("scrapePool", "")),
                scrape_url=str(raw.get("scrapeUrl", "")),
                health=str(raw.get("health", "unknown")),
                last_error=str(raw.get("lastError") or ""),
                last_scrape=str(raw.get("lastScrape", "")),
                labels=labels,
            )
            if job is None or target.job == job:
                found.append(target)
        return found

    def instance_targets(self, job: str | None = None) -> dict[str, Target]:
        """The active targets of ``job`` (the configured job) by their ``instance`` label:
        the instances every per-instance criterion must judge, whatever they export."""
        return {t.labels.get("instance", t.scrape_url): t
                for t in self.targets(job or self._job())}

    def target_metadata(self, metric: str, job: str | None = None) -> list[TargetMetadata]:
        """The type and help each target of ``job`` declared for ``metric`` in its last
        scrape (``/api/v1/targets/metadata``), one entry per instance."""
        job = job or self._job()
        data = self._api("/api/v1/targets/metadata", params={
            "match_target": f"{{job={_quote(job)}}}", "metric": _metric_name(metric)})
        if data == [] and metric.endswith("_total"):
            # OpenMetrics names a counter's family without the _total of its samples.
            data = self._api("/api/v1/targets/metadata", params={
                "match_target": f"{{job={_quote(job)}}}", "metric": metric.removesuffix("_total")})
        if not isinstance(data, list):
            raise UnexpectedResponse(f"prometheus: targets metadata at {self.url} is not a list")
        found = []
        for raw in data:
            if not isinstance(raw, dict):
                continue
            target = _str_map(raw.get("target"))
            found.append(TargetMetadata(
                instance=target.get("instance", ""), metric=str(raw.get("metric", metric)),
                type=str(raw.get("type", "")), help=str(raw.get("help", ""))))
        return found

    def retention(self) -> Retention:
        """How long the server keeps samples: ``storageRetention`` of
        ``/api/v1/status/runtimeinfo``, else the ``storage.tsdb.retention.time`` flag. A server
        that serves neither (Thanos, Mimir and other remote stores) gives ``seconds=None``."""
        resp = self.http.request("GET", "/api/v1/status/runtimeinfo")
        if resp.status_code == 200:
            data = _envelope_data(resp.status_code, resp.content, "GET /api/v1/status/runtimeinfo",
                                  self.url)
            text = str(data.get("storageRetention", "")) if isinstance(data, dict) else ""
            return Retention(_retention_seconds(text), f"runtimeinfo storageRetention {text!r}")
        if resp.status_code in (401, 403):
            _envelope_data(resp.status_code, resp.content, "GET /api/v1/status/runtimeinfo",
                           self.url)
        resp = self.http.request("GET", "/api/v1/status/flags")
        if resp.status_code == 200:
            data = _envelope_data(resp.status_code, resp.content, "GET /api/v1/status/flags",
                                  self.url)
            flags = data if isinstance(data, dict) else {}
            text = str(flags.get("storage.tsdb.retention.time") or "")
            if text in ("", "0s"):
                # Not set: Prometheus keeps 15 days unless a size limit applies.
                legacy = str(flags.get("storage.tsdb.retention") or "")
                text = legacy if legacy not in ("", "0s") else "15d"
            return Retention(_retention_seconds(text), f"flag storage.tsdb.retention.time {text!r}")
        return Retention(None, "not served (no runtimeinfo or flags API)")

    @shared_fact
    def buildinfo(self) -> dict[str, Any]:
        """``version``, ``revision`` and related fields of the server."""
        data = self._api("/api/v1/status/buildinfo")
        if not isinstance(data, dict):
            raise UnexpectedResponse(f"prometheus: buildinfo at {self.url} is not an object")
        return data

    def _api(self, path: str, *, params: dict[str, str] | None = None) -> Any:
        # Prometheus answers 503 with its own error envelope (a query timeout, say).
        resp = self.http.request("GET", path, params=params, gateway_as_data=True)
        return _envelope_data(resp.status_code, resp.content, f"GET {path}", self.url)

    # -- PromQL (prometheus-api-client) -----------------------------------------------------

    def query(self, promql: str) -> list[Sample]:
        """Evaluate an instant query now. An empty result is an empty list."""
        from prometheus_api_client.exceptions import PrometheusApiClientException
        from requests import exceptions as req

        client = self._connect()
        shown = _short(promql)
        self._answers.last = None
        try:
            result = client.custom_query(query=promql)
        except PrometheusApiClientException:
            resp: requests.Response | None = self._answers.last
            if resp is None:
                raise UnexpectedResponse(
                    f"prometheus: query {shown!r} failed without an answer from {self.url}"
                ) from None
            _envelope_data(resp.status_code, resp.content, f"query {shown!r}", self.url)
            raise UnexpectedResponse(
                f"prometheus: query {shown!r} answered {resp.status_code}"
            ) from None
        except req.JSONDecodeError:
            # Also a RequestException: a 200 that is not JSON came from something else.
            raise UnexpectedResponse(
                f"prometheus: query {shown!r} to {self.url} did not return JSON; is "
                f"prometheus.url a Prometheus server?"
            ) from None
        except req.Timeout:
            raise ProbeTimeout(
                f"prometheus: query {shown!r} to {self.url} did not answer within "
                f"{self.cfg.timeout_s:g}s; check the server, or raise prometheus.timeout_s"
            ) from None
        except req.RequestException as exc:
            raise TargetUnreachable(
                f"prometheus: {self.url} could not be reached for query {shown!r} "
                f"({type(exc).__name__}); check prometheus.url and that Prometheus is running"
            ) from None
        except (KeyError, TypeError, ValueError):
            raise UnexpectedResponse(
                f"prometheus: query {shown!r} to {self.url} did not return a query result; "
                f"is this a Prometheus server?"
            ) from None
        return _samples(result, shown)

    def value(self, promql: str) -> float | None:
        """The single value of a query that yields one series, ``None`` when it yields none.

        NaN (e.g. a ratio over a window without events) is returned as NaN.
        """
        samples = self.query(promql)
        if not samples:
            return None
        if len(samples) > 1:
            raise UnexpectedResponse(
                f"prometheus: query {_short(promql)!r} returned {len(samples)} series, "
                f"expected one; aggregate it (e.g. wrap it in sum(...))"
            )
        return samples[0].value

    def job_series(self, metric: str, job: str | None = None) -> list[Sample]:
        """The current series of ``metric`` scraped by ``job`` (the configured job)."""
        return self.query(f"{_metric_name(metric)}{{job={_quote(job or self._job())}}}")

    def series_exist(self, selectors: Iterable[Selector]) -> dict[Selector, bool]:
        """For each selector, whether it matches at least one series now (within the
        server's lookback window)."""
        wanted = list(dict.fromkeys(selectors))
        counts = in_parallel([functools.partial(self.query, f"count({selector})") for selector in wanted])
        return {selector: bool(count) for selector, count in zip(wanted, counts, strict=True)}

    def rule_series(self, rules: Iterable[Rule], *, own_output: bool = False) -> list[SelectorStatus]:
        """Whether each selector of each rule's expression matches a series now, as
        Cloudflare pint's ``promql/series`` asks. A selector the expression expects to be
        empty (see ``rule_selectors``), or one covered by ``prometheus.series_may_be_empty``,
        is exempt and not asked.

        With ``own_output``, a recording rule's own output series (its name and labels) is
        asked too: a recording rule that produces nothing is no use to the dashboards and
        alerts that read it. Its output is exempt like any selector when
        ``series_may_be_empty`` covers it. When it is empty, every input that must match
        does, and an input listed in ``series_may_be_empty`` is empty now, the empty output
        follows from that input (a ratio whose 5xx numerator has no series yet records
        nothing): its status then carries that reason in ``exempt`` with ``matches=False``.
        """
        allowed = [parse_selector(text) for text in self.cfg.series_may_be_empty]

        def listed(selector: Selector) -> str:
            cover = next((a for a in allowed if a.covers(selector)), None)
            return "" if cover is None else f"listed in prometheus.series_may_be_empty as {cover}"

        # (rule index, rule name, selector, exempt, listed in series_may_be_empty, output)
        planned: list[tuple[int, str, Selector, str, bool, bool]] = []
        for index, rule in enumerate(rules):
            for found in rule_selectors(rule.query):
                exempt = found.exempt or listed(found.selector)
                planned.append((index, rule.name, found.selector, exempt,
                                not found.exempt and bool(exempt), False))
            if own_output and rule.kind == "recording":
                labels = tuple(sorted((k, "=", v) for k, v in rule.labels.items()))
                output = Selector(rule.name, labels)
                exempt = listed(output)
                planned.append((index, rule.name, output, exempt, bool(exempt), True))
        exists = self.series_exist(p[2] for p in planned if not p[3])
        # The listed inputs of the rules whose output is empty while all they must read is there.
        explained: dict[int, list[Selector]] = {}
        for index, _, sel, exempt, _, is_output in planned:
            if not is_output or exempt or exists[sel]:
                continue
            inputs = [p for p in planned if p[0] == index and not p[5]]
            if all(p[3] or exists[p[2]] for p in inputs):
                explained[index] = [p[2] for p in inputs if p[4]]
        may_be_empty = self.series_exist(sel for sels in explained.values() for sel in sels)
        statuses = []
        for index, name, sel, exempt, _, is_output in planned:
            empty_inputs = [i for i in explained.get(index, []) if not may_be_empty[i]]
            if is_output and not exempt and empty_inputs:
                exempt = (f"records nothing while {', '.join(map(str, empty_inputs))} (listed "
                          f"in prometheus.series_may_be_empty) has no series")
                statuses.append(SelectorStatus(name, sel, exempt, False))
                continue
            statuses.append(SelectorStatus(name, sel, exempt, None if exempt else exists[sel]))
        return statuses

    def increase(self, metric: str, window: str, job: str | None = None) -> float | None:
        """How much the counter ``metric`` of ``job`` grew over ``window`` (a PromQL
        duration), summed over its series; ``None`` when it has no series in the window."""
        if not re.fullmatch(r"(\d+(ms|s|m|h|d|w|y))+", window):
            raise UnexpectedResponse(f"prometheus: {window!r} is not a PromQL duration")
        selector = f"{_metric_name(metric)}{{job={_quote(job or self._job())}}}"
        return _finite(self.value(f"sum(increase({selector}[{window}]))"))

    def instance_values(self, metric: str, job: str | None = None) -> dict[str, float]:
        """The current value of ``metric`` per ``instance`` of ``job`` (summed over any
        other labels)."""
        values: dict[str, float] = {}
        for sample in self.job_series(metric, job):
            instance = sample.labels.get("instance", "")
            values[instance] = values.get(instance, 0.0) + sample.value
        return values

    def wait_for_sum(self, metric: str, *, above: float, job: str | None = None) -> float | None:
        """The sum of ``metric`` over ``job``'s series, polled until it exceeds ``above`` or
        ``prometheus.scrape_wait_s`` passes (a change reaches Prometheus at the next scrape);
        ``None`` when it has no series."""
        deadline = time.monotonic() + self.cfg.scrape_wait_s
        while True:
            series = self.job_series(metric, job)
            total = sum(s.value for s in series) if series else None
            if (total is not None and total > above) or time.monotonic() >= deadline:
                return total
            time.sleep(min(1.0, max(deadline - time.monotonic(), 0.0)))

    def _job(self) -> str:
        if not self.cfg.service_job:
            raise MissingInput("prometheus: prometheus.service_job is not configured")
        return self.cfg.service_job

    def slo_statuses(self, specs: Iterable[SloSpec], slo: SloConfig,
                     retention_s: float | None = None) -> list[SloStatus]:
        """``slo_status`` of each SLO, in order, a few at a time (they are independent)."""
        return in_parallel([functools.partial(self.slo_status, spec, slo, retention_s) for spec in specs])

    def slo_status(self, spec: SloSpec, slo: SloConfig,
                   retention_s: float | None = None) -> SloStatus:
        """Measure one SLO now.

        Definitions (``b`` is the error budget: the fraction of events allowed to be bad):

        - ``value``: the SLI over ``slo.current_window`` (``$window`` in the query). With an
          ``up_query``, the lower of the two SLIs, so a full outage, in which no request is
          counted at all, still lowers availability.
        - ``compliant``: ``value <= target`` for ``le`` SLOs, ``value >= target`` for ``ge``.
        - ``b``: ``spec.budget_fraction``; for ratio SLOs (no unit) it defaults to ``target``
          (``le``, e.g. error rate ≤ 1 % allows 1 %) or ``1 - target`` (``ge``, e.g.
          availability ≥ 99.9 % allows 0.1 %).
        - ``bad(w)``: the fraction of bad events over window ``w``: ``spec.bad_query``, or for
          ratio SLOs the SLI itself (``le``) or ``1 - SLI`` (``ge``).
        - The budget window is ``slo.window_days``, cut to ``retention_s`` when Prometheus
          keeps less: a query over 30 days of a server that keeps one day computes over one
          day, and the row says so.
        - ``budget_remaining = 1 - bad(budget window) / b``: 1.0 means untouched, 0 spent,
          negative overspent.
        - ``burn_rate = bad(current window) / b``: how fast the budget is being spent now;
          1.0 spends it exactly over the SLO window, 14.4 over an hour is the usual page.

        A value that cannot be computed is ``None`` and ``note`` says why: no series (the
        query matches nothing), no events in the window (NaN), no budget configured.
        """
        window_s = slo.window_days * 86400
        window = promql_duration(window_s)
        budget_s = window_s if retention_s is None else min(window_s, retention_s)
        budget_window = promql_duration(budget_s)
        current = slo.current_window
        notes: list[str] = []
        if budget_s < window_s:
            notes.append(f"Prometheus keeps {budget_window}, so the budget covers "
                         f"{budget_window}, not {window}")
        value, missing = self._sli(spec, current)
        if missing == "no_series":
            notes.append(f"no series over {current}: the query matches nothing")
        elif missing == "no_events":
            notes.append(f"no events over {current} (NaN): a quiet window")
        compliant = None if value is None else (
            value <= spec.target if spec.objective == "le" else value >= spec.target)
        ratio = spec.unit in ("", "ratio")
        budget = spec.budget_fraction
        if budget is None and ratio:
            budget = spec.target if spec.objective == "le" else 1 - spec.target
        bad_window = bad_current = None
        if budget is None or budget <= 0:
            notes.append("no error budget: set budget_fraction")
            budget = None
        elif spec.bad_query:
            bad_window = self._bad(spec.bad_query, budget_window, notes)
            bad_current = self._bad(spec.bad_query, current, notes)
        elif ratio:
            whole, whole_missing = self._sli(spec, budget_window)
            if whole_missing:
                notes.append(f"no value over {budget_window} ({whole_missing.replace('_', ' ')})")
            bad_window = _bad_from_sli(whole, spec.objective)
            bad_current = _bad_from_sli(value, spec.objective)
        else:
            notes.append("no bad_query for a non-ratio SLO: budget and burn rate unknown")
        return SloStatus(
            name=spec.name,
            target=spec.target,
            objective=spec.objective,
            unit=spec.unit,
            value=value,
            missing=missing,
            compliant=compliant,
            budget_fraction=budget,
            bad_fraction=bad_window,
            budget_remaining=None if bad_window is None or budget is None
            else 1 - bad_window / budget,
            burn_rate=None if bad_current is None or budget is None else bad_current / budget,
            query=spec.query.replace("$window", current),
            current_window=current,
            window=window,
            budget_window=budget_window,
            note="; ".join(dict.fromkeys(notes)),
        )

    def _sli(self, spec: SloSpec,
             window: str) -> tuple[float | None, Literal["", "no_series", "no_events"]]:
        """The SLI over ``window``, and why it is missing when it is."""
        raw = [self.value(spec.query.replace("$window", window))]
        if spec.up_query:
            raw.append(self.value(spec.up_query.replace("$window", window)))
        finite = [v for v in raw if v is not None and math.isfinite(v)]
        if finite:
            return (min(finite) if spec.objective == "ge" else max(finite)), ""
        return None, "no_events" if any(v is not None for v in raw) else "no_series"

    def _bad(self, query: str, window: str, notes: list[str]) -> float | None:
        raw = self.value(query.replace("$window", window))
        if raw is None:
            notes.append(f"bad_query has no series over {window}")
        elif not math.isfinite(raw):
            notes.append(f"bad_query has no events over {window} (NaN)")
        return _finite(raw)

    def _connect(self) -> Any:
        with self._connecting:
            return self._client or self._new_client()

    def _new_client(self) -> Any:
        if self._client is None:
            import requests
            from prometheus_api_client import PrometheusConnect
            from urllib3.util.retry import Retry

            session = requests.Session()
            session.headers["User-Agent"] = USER_AGENT
            session.cookies.set_policy(no_cookie_policy())
            # Bodies are read within the body limit before requests would read them whole.
            session.hooks["response"].append(requests_body_limit())
            # Keep the raw answer of a failed query: the client only says "HTTP Status Code",
            # while the error envelope says what went wrong.
            session.hooks["response"].append(self._remember)
            self._session = session
            self._client = PrometheusConnect(
                url=self.url,
                headers=self._headers or None,
                # One attempt: retries with back-off would multiply the timeout.
                retry=Retry(total=0, raise_on_status=False),
                session=session,
                timeout=self.cfg.timeout_s,
            )
        return self._client

    def _remember(self, resp: requests.Response, *args: Any, **kwargs: Any) -> None:
        self._answers.last = resp


def promql_duration(seconds: float) -> str:
    """A PromQL duration for ``seconds``, in the largest whole unit (``30d``, ``36h``)."""
    whole = max(1, round(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


def _envelope_data(status: int, content: bytes, what: str, url: str) -> Any:
    """The ``data`` of a Prometheus API answer, or the ProbeError its status deserves."""
    shown = redactor.text(f"{what} at {url}")
    try:
        body = json.loads(content)
    except ValueError:
        body = None
    if status in (401, 403):
        raise AccessRefused(
            f"prometheus: {shown} answered {status}; the credentials were refused, check "
            f"prometheus.bearer_token"
        )
    if isinstance(body, dict) and body.get("status") == "error":
        kind = str(body.get("errorType", "error"))
        detail = redactor.excerpt(str(body.get("error", "")), 300)
        error: type[ProbeError] = ProbeTimeout if kind == "timeout" else UnexpectedResponse
        raise error(f"prometheus: {shown} answered {status} with {kind} error: {detail}")
    if status != 200:
        text = redactor.excerpt(content, 200)
        raise UnexpectedResponse(f"prometheus: {shown} answered {status} ({text!r}), expected 200")
    if not isinstance(body, dict) or body.get("status") != "success" or "data" not in body:
        raise UnexpectedResponse(
            f"prometheus: {shown} did not return the API envelope "
            f"({{\"status\":\"success\",\"data\":…}}); is prometheus.url a Prometheus server?"
        )
    return body["data"]


def _samples(result: Any, shown: str) -> list[Sample]:
    if not isinstance(result, list):
        raise UnexpectedResponse(f"prometheus: query {shown!r} did not return a vector")
    samples = []
    for item in result:
        try:
            labels = _str_map(item.get("metric"))
            raw = item["value"][1]
            samples.append(Sample(labels=labels, value=float(raw)))
        except (AttributeError, KeyError, IndexError, TypeError, ValueError):
            raise UnexpectedResponse(
                f"prometheus: query {shown!r} returned a {type(item).__name__} that is not an "
                f"instant-vector sample; use an instant query (no range selector at the top)"
            ) from None
    return samples


def _retention_seconds(text: str) -> float | None:
    """The time part of a retention such as ``15d``, ``1d or 10GiB`` or ``10GiB`` (size only:
    ``None``)."""
    for part in text.split(" or "):
        part = part.strip()
        if re.fullmatch(r"(\d+(ms|s|m|h|d|w|y))+", part):
            return _duration_seconds(part)
    return None


def _duration_seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", text))


def _metric_name(metric: str) -> str:
    if not re.fullmatch(r"[A-Za-z_:][A-Za-z0-9_:]*", metric):
        raise UnexpectedResponse(f"prometheus: {metric!r} is not a valid metric name")
    return metric


def _bad_from_sli(sli: float | None, objective: str) -> float | None:
    if sli is None:
        return None
    return sli if objective == "le" else 1 - sli


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def _short(promql: str) -> str:
    flat = " ".join(promql.split())
    return flat if len(flat) <= 160 else flat[:157] + "..."


# -- PromQL selectors ----------------------------------------------------------------------

_OPS = {"Equal": "=", "NotEqual": "!=", "Re": "=~", "NotRe": "!~"}
# Functions whose argument is there to be missing: absent(x) fires exactly when x matches
# nothing, so x need not match anything now.
_ABSENCE_FUNCTIONS = frozenset({"absent", "absent_over_time"})

Matcher = tuple[str, str, str]


@dataclass(frozen=True)
class Selector:
    """One vector selector of a PromQL expression, without its range, offset or ``@``:
    ``metric`` (``None`` for ``{__name__=~"…"}``-style selectors) and its label matchers as
    ``(label, op, value)`` with ``op`` one of ``=``, ``!=``, ``=~``, ``!~``. ``alternatives``
    holds the matcher groups of a Prometheus 3 ``{a="x" or b="y"}`` selector."""

    metric: str | None
    matchers: tuple[Matcher, ...] = ()
    alternatives: tuple[tuple[Matcher, ...], ...] = ()

    def __str__(self) -> str:
        groups = [self.matchers, *self.alternatives] if self.alternatives else [self.matchers]
        inner = " or ".join(",".join(f"{n}{op}{_quote(v)}" for n, op, v in g) for g in groups)
        name = self.metric or ""
        return f"{name}{{{inner}}}" if inner or not name else name

    def covers(self, other: Selector) -> bool:
        """True when this selector (from ``prometheus.series_may_be_empty``) exempts
        ``other``: the same metric, and every matcher of this one also on ``other``."""
        if self.metric != other.metric:
            return False
        return set(self.matchers) <= set(other.matchers)


@dataclass(frozen=True)
class RuleSelector:
    """A selector of a rule's expression. ``exempt`` says why it need not match a series
    (empty when it must): it is the argument of ``absent()``, the side of ``or vector(…)``
    that the fallback stands in for, or the right-hand side of ``unless``.
    ``presence_only`` is true when every place the expression selects it is inside
    ``absent()``/``absent_over_time()``: only whether it has series is read, never a value.
    (The other exempt places still read values: ``x or vector(0)`` yields ``x`` whenever it
    exists, and ``a unless b > 0`` filters ``b`` by its value.)"""

    selector: Selector
    exempt: str = ""
    presence_only: bool = False


def parse_selector(text: str) -> Selector:
    """A plain vector selector such as ``ALERTS`` or ``foo_total{job="x"}``."""
    import promql_parser

    expr = _parse(text)
    if isinstance(expr, promql_parser.MatrixSelector):
        expr = expr.vector_selector
    if not isinstance(expr, promql_parser.VectorSelector):
        raise UnexpectedResponse(f"prometheus: {_short(text)!r} is not a vector selector")
    return _selector(expr)


def rule_selectors(expr: str) -> list[RuleSelector]:
    """Every vector selector of a rule expression, in order, each once.

    Selectors inside functions, aggregations, binary operations, subqueries and range
    selectors are found; offsets and ``@`` are dropped (the series must exist now). A
    selector is exempt where the expression itself expects it to be empty: inside
    ``absent()``/``absent_over_time()``, on the left of ``or vector(…)`` (the fallback), and
    on the right of ``unless``. An expression the parser cannot read raises
    ``UnexpectedResponse``.
    """
    import promql_parser as pp

    found: dict[Selector, str] = {}
    presence: dict[Selector, bool] = {}

    def walk(node: Any, exempt: str, absence: bool) -> None:
        if isinstance(node, pp.VectorSelector):
            sel = _selector(node)
            # A selector that must match somewhere in the expression must match.
            found[sel] = exempt if found.get(sel, exempt) else ""
            # A selector whose value is read somewhere is read.
            presence[sel] = absence and presence.get(sel, absence)
        elif isinstance(node, pp.MatrixSelector):
            walk(node.vector_selector, exempt, absence)
        elif isinstance(node, pp.Call):
            name = node.func.name
            inner = exempt or (f"inside {name}()" if name in _ABSENCE_FUNCTIONS else "")
            for arg in node.args:
                walk(arg, inner, absence or name in _ABSENCE_FUNCTIONS)
        elif isinstance(node, pp.AggregateExpr):
            if isinstance(node.param, pp.Expr):
                walk(node.param, exempt, absence)
            walk(node.expr, exempt, absence)
        elif isinstance(node, pp.BinaryExpr):
            op = str(node.op).lower()
            lhs_exempt = rhs_exempt = exempt
            if op == "or" and _is_vector_literal(node.rhs):
                lhs_exempt = exempt or f"falls back to {_short(str(node.rhs))}"
            if op == "unless":
                rhs_exempt = exempt or "right-hand side of unless"
            walk(node.lhs, lhs_exempt, absence)
            walk(node.rhs, rhs_exempt, absence)
        elif isinstance(node, pp.ParenExpr | pp.UnaryExpr | pp.SubqueryExpr):
            walk(node.expr, exempt, absence)

    walk(_parse(expr), "", False)
    return [RuleSelector(sel, why, presence[sel]) for sel, why in found.items()]


def _parse(text: str) -> Any:
    import promql_parser

    try:
        return promql_parser.parse(text)
    except ValueError as exc:
        raise UnexpectedResponse(
            f"prometheus: cannot parse the PromQL expression {_short(text)!r} ({exc}); it may "
            f"use syntax newer than the parser knows"
        ) from None


def _selector(node: Any) -> Selector:
    """``foo{…}`` and ``{__name__="foo",…}`` are the same selector."""

    def group(matchers: Iterable[Any]) -> tuple[Matcher, ...]:
        out = [(str(m.name), _OPS.get(str(m.op).rsplit(".", 1)[-1], "="), str(m.value))
               for m in matchers]
        return tuple(sorted(out))

    alternatives = tuple(group(g) for g in (node.matchers.or_matchers or []))
    matchers = alternatives[0] if alternatives else group(node.matchers.matchers)
    name: str | None = node.name
    if name is None and not alternatives:
        named = [m for m in matchers if m[0] == "__name__" and m[1] == "="]
        if len(named) == 1:
            name = named[0][2]
    if name is not None:
        matchers = tuple(m for m in matchers if m != ("__name__", "=", name))
    return Selector(name, matchers, alternatives[1:])


def _is_vector_literal(node: Any) -> bool:
    """``vector(…)`` (possibly in parentheses): a constant fallback."""
    import promql_parser as pp

    while isinstance(node, pp.ParenExpr):
        node = node.expr
    return isinstance(node, pp.Call) and node.func.name == "vector"


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'
