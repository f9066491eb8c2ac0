"""Prometheus: loaded rules, scrape targets and build info over its HTTP API (httpx), and PromQL
through ``prometheus-api-client``.

A rule or a series that is not there is data (an empty list, ``None``): the check decides.
An API error envelope (``{"status":"error","errorType":…,"error":…}``), an HTTP error or a
malformed answer raises a ``ProbeError``: the criterion could not be judged.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import httpx

from opsready._errors import (
    AccessRefused,
    ProbeError,
    ProbeTimeout,
    TargetUnreachable,
    UnexpectedResponse,
)
from opsready.config import PrometheusConfig, SloConfig, SloSpec
from opsready.evidence import redactor
from opsready.probes._http import USER_AGENT, HttpTarget, no_cookie_policy, requests_body_limit

if TYPE_CHECKING:
    import requests

__all__ = [
    "PrometheusProbe",
    "Rule",
    "Sample",
    "SloStatus",
    "Target",
    "promql_duration",
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

    def uses(self, metric: str) -> bool:
        """True when the rule's expression names ``metric`` (a whole metric name)."""
        return re.search(rf"(?<![A-Za-z0-9_:]){re.escape(metric)}(?![A-Za-z0-9_:])",
                         self.query) is not None

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
class SloStatus:
    """One SLO as measured now. See ``PrometheusProbe.slo_status`` for the definitions."""

    name: str
    target: float
    objective: Literal["le", "ge"]
    unit: str
    value: float | None
    compliant: bool | None
    budget_fraction: float | None
    bad_fraction: float | None
    budget_remaining: float | None
    burn_rate: float | None
    query: str
    note: str = ""

    def row(self) -> dict[str, Any]:
        """The row of the report's SLO table."""
        return {
            "slo": self.name,
            "target": self.target,
            "objective": self.objective,
            "unit": self.unit,
            "value": _round(self.value),
            "compliant": self.compliant,
            "budget_remaining": _round(self.budget_remaining),
            "burn_rate": _round(self.burn_rate),
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
        self._last_response: requests.Response | None = None

    @property
    def url(self) -> str:
        return self.cfg.url

    def close(self) -> None:
        self.http.close()
        if self._session is not None:
            self._session.close()

    # -- HTTP API (httpx) -------------------------------------------------------------------

    def rules(self, kind: Literal["alert", "record"] | None = None) -> list[Rule]:
        """Every loaded rule, optionally only alerting (``alert``) or recording (``record``)."""
        params: dict[str, str] | None = {"type": kind} if kind else None
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
        self._last_response = None
        try:
            result = client.custom_query(query=promql)
        except PrometheusApiClientException:
            resp = self._last_response
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
        if not re.fullmatch(r"[A-Za-z_:][A-Za-z0-9_:]*", metric):
            raise UnexpectedResponse(f"prometheus: {metric!r} is not a valid metric name")
        job = job or self.cfg.service_job
        escaped = job.replace("\\", "\\\\").replace('"', '\\"')
        return self.query(f'{metric}{{job="{escaped}"}}')

    def slo_status(self, spec: SloSpec, slo: SloConfig) -> SloStatus:
        """Measure one SLO now.

        Definitions (``b`` is the error budget: the fraction of events allowed to be bad):

        - ``value``: the SLI over ``slo.current_window`` (``$window`` in the query).
        - ``compliant``: ``value <= target`` for ``le`` SLOs, ``value >= target`` for ``ge``.
        - ``b``: ``spec.budget_fraction``; for ratio SLOs (no unit) it defaults to ``target``
          (``le``, e.g. error rate ≤ 1 % allows 1 %) or ``1 - target`` (``ge``, e.g.
          availability ≥ 99.9 % allows 0.1 %).
        - ``bad(w)``: the fraction of bad events over window ``w``: ``spec.bad_query``, or for
          ratio SLOs the SLI itself (``le``) or ``1 - SLI`` (``ge``).
        - ``budget_remaining = 1 - bad(SLO window) / b``: 1.0 means untouched, 0 spent,
          negative overspent over ``slo.window_days``.
        - ``burn_rate = bad(current window) / b``: how fast the budget is being spent now;
          1.0 spends it exactly over the SLO window, 14.4 over an hour is the usual page.

        A column that cannot be computed (no budget, no events in the window) is ``None``
        and ``note`` says why.
        """
        window = promql_duration(slo.window_days * 86400)
        current = slo.current_window
        query = spec.query.replace("$window", current)
        value = _finite(self.value(query))
        notes: list[str] = []
        if value is None:
            notes.append(f"no value over {current} (no series, or no events in the window)")
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
            bad_window = _finite(self.value(spec.bad_query.replace("$window", window)))
            bad_current = _finite(self.value(spec.bad_query.replace("$window", current)))
        elif ratio:
            whole = _finite(self.value(spec.query.replace("$window", window)))
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
            compliant=compliant,
            budget_fraction=budget,
            bad_fraction=bad_window,
            budget_remaining=None if bad_window is None or budget is None
            else 1 - bad_window / budget,
            burn_rate=None if bad_current is None or budget is None else bad_current / budget,
            query=query,
            note="; ".join(notes),
        )

    def _connect(self) -> Any:
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
        self._last_response = resp


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
