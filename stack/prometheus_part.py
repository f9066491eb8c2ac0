"""Prometheus, the real binary: scrapes the service every second (with the bearer token the
service's ``metrics-bearer-auth`` variant asks for) and loads the platform's alert rules
(``stack/prometheus/alerts.yml``) and SLO recording rules (``slo-rules.yml``).

Faults and variants rewrite the rule files in ``DIR/prometheus/rules`` and reload Prometheus
through ``POST /-/reload`` (``--web.enable-lifecycle``); ``set_fault`` returns once the rules
API shows the new rule set, evaluated.

This part also writes the keys of ``env.yaml`` that describe what Prometheus scrapes and
judges: the ``prometheus``, ``slo`` and ``runbooks`` sections and the service's metric names
and metrics credentials.
"""

from __future__ import annotations

import secrets
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml

from opsready.probes.prometheus import rule_selectors
from opsready_stack.part import BasePart, Fault, StackContext, kill_pidfile, wait_until

__all__ = [
    "PrometheusPart",
    "alert_rule_names",
    "recording_rule_names",
    "rule_documents",
    "slo_specs",
]

HERE = Path(__file__).resolve().parent
RULES_DIR = HERE / "prometheus"
ALERTS_FILE = "alerts.yml"
SLO_FILE = "slo-rules.yml"
# Another team's rules on the same Prometheus (the `other-team-rules` variant).
OTHER_TEAM_FILE = "payments-alerts.yml"
RULE_GROUPS = ("relay-alerts", "relay-slo")
# Selectors that match nothing until something happens: the 5xx series of a counter labelled
# by status appear with the first 5xx, and Prometheus' own ALERTS with the first alert.
SERIES_MAY_BE_EMPTY = ("ALERTS", "ALERTS_FOR_STATE", 'http_requests_total{status=~"5.."}')
JOB = "relay"
POOL_ALERT = "DBPoolExhausted"
RATE_LIMIT_METRIC = "rate_limit_breaches_total"
POOL_GAUGES = {role: f"db_connection_pool_{role}"
               for role in ("size", "in_use", "available", "waiting")}
# The alert whose selectors go wrong under `alert-never-fires`, and the recording rule that
# reads a renamed metric under `slo-rule-no-series`.
RULE_NEVER_FIRES = "HighErrorRate"
RECORD_NO_SERIES = "slo:webhook_latency_seconds:p95_5m"
# Runbook links of the `runbook-links-release-branch` variant: GitHub blob links on a release
# branch, whose name holds a `/`.
RELEASE_BRANCH = "release/2024.06"
RELEASE_RUNBOOKS = "https://github.com/relay-platform/relay/blob/" + RELEASE_BRANCH + "/docs/runbooks/"
META_ALERT = "CriticalAlertFiringLong"
# The alert that loses its runbook link under the `alert-without-runbook` fault.
RULE_WITHOUT_RUNBOOK = "HighLatencyP99"
RUNBOOKS = {
    "outage": "docs/runbooks/outage.md",
    "db-connections": "docs/runbooks/db-connections.md",
    "rate-limit-breaches": "docs/runbooks/rate-limit-breaches.md",
}
LIGHT_PATH = "/api/v1/actions"
SLO_WINDOW_DAYS = 30
SLO_CURRENT_WINDOW = "1h"
# How long after_ready waits for the SLIs to have data before handing over anyway. About 6 s
# on two idle cores; a loaded runner gets the rest (it costs nothing when the data is there).
SEED_WAIT_S = 20.0

FAULTS = (
    Fault("rules-not-loaded",
          "Prometheus has no alert rules loaded (the SLO recording rules stay)",
          frozenset({"P0-001", "P2-004", "P3-002"})),
    # The error-budget burn alerts read the SLO recording rules' series: without the rules
    # they can never fire, so the alerting part of P0-001 opens too.
    Fault("no-slo-rules", "the SLO recording rules are not loaded", frozenset({"P3-001", "P0-001"})),
    Fault("alert-without-runbook",
          f"the {RULE_WITHOUT_RUNBOOK} alert rule has no runbook_url annotation",
          frozenset({"P3-002"})),
    Fault("alert-never-fires",
          f"the {RULE_NEVER_FIRES} alert selects http_request_total, a metric that does not "
          f"exist: health ok, but it can never fire",
          frozenset({"P0-001"})),
    Fault("slo-rule-no-series",
          f"the {RECORD_NO_SERIES} recording rule reads a renamed histogram and records nothing",
          frozenset({"P3-001"})),
    Fault("pool-alert-wrong-gauges",
          f"the {POOL_ALERT} alert compares in_use with size and ignores the available and "
          f"waiting gauges",
          frozenset({"P2-004"})),
    Fault("other-team-rules",
          "Prometheus also loads another team's rules (no runbooks, metrics of their own), "
          "outside the platform's rule groups",
          frozenset(), variant=True),
    Fault("runbook-links-release-branch",
          f"every runbook_url is a GitHub blob link on the {RELEASE_BRANCH} branch",
          frozenset(), variant=True),
    Fault("alert-on-alerts",
          f"a {META_ALERT} alert reads Prometheus' own ALERTS series, empty while nothing fires",
          frozenset(), variant=True),
)


def _groups(file: str) -> list[dict[str, Any]]:
    data = yaml.safe_load((RULES_DIR / file).read_text(encoding="utf-8"))
    return list(data.get("groups") or [])


def alert_rule_names() -> list[str]:
    return [r["alert"] for g in _groups(ALERTS_FILE) for r in g["rules"] if "alert" in r]


def recording_rule_names() -> list[str]:
    return [r["record"] for g in _groups(SLO_FILE) for r in g["rules"] if "record" in r]


def slo_specs() -> list[dict[str, Any]]:
    """The four SLOs of the platform over the service's metrics, for env.yaml."""
    job = f'job="{JOB}"'
    light = f'{job},path="{LIGHT_PATH}"'
    errors = f'sum(rate(http_requests_total{{{job},status=~"5.."}}[$window]))'
    total = f"sum(rate(http_requests_total{{{job}}}[$window]))"
    return [
        {
            "name": "light endpoint p99 latency",
            "target": 0.05,
            "objective": "le",
            "unit": "s",
            "budget_fraction": 0.01,
            "query": "histogram_quantile(0.99, sum by (le) "
                     f"(rate(http_request_duration_seconds_bucket{{{light}}}[$window])))",
            "bad_query": "1 - sum(rate(http_request_duration_seconds_bucket"
                         f'{{{light},le="0.05"}}[$window]))'
                         f" / sum(rate(http_request_duration_seconds_count{{{light}}}[$window]))",
        },
        {
            "name": "webhook p95 latency",
            "target": 1.2,
            "objective": "le",
            "unit": "s",
            "budget_fraction": 0.05,
            "query": "histogram_quantile(0.95, sum by (le) "
                     f"(rate(webhook_delivery_duration_seconds_bucket{{{job}}}[$window])))",
            "bad_query": "1 - sum(rate(webhook_delivery_duration_seconds_bucket"
                         f'{{{job},le="1.2"}}[$window]))'
                         f" / sum(rate(webhook_delivery_duration_seconds_count{{{job}}}[$window]))",
        },
        {
            "name": "error rate",
            "target": 0.01,
            "objective": "le",
            "query": f"({errors} or vector(0)) / {total}",
        },
        {
            "name": "availability",
            "target": 0.999,
            "objective": "ge",
            "query": f"1 - ({errors} or vector(0)) / {total}",
            # A full outage counts no requests at all; the scrapes that fail still count.
            "up_query": f"avg(avg_over_time(up{{{job}}}[$window]))",
        },
    ]


class PrometheusPart(BasePart):
    """The real Prometheus binary with generated scrape config and the repo's rule files."""

    name = "prometheus"
    ports = ("prometheus",)
    faults = FAULTS

    def start(self, ctx: StackContext) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError(
                "the prometheus binary is not on PATH; run `make system-deps` (installs the "
                "Debian package) or put a Prometheus 2.x binary on PATH"
            )
        home = ctx.dir / "prometheus"
        (home / "rules").mkdir(parents=True, exist_ok=True)
        self._write_rules(ctx)
        service = urlsplit(ctx.urls["service"])
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s",
                       "scrape_timeout": "1s"},
            "rule_files": [str(home / "rules" / f)
                           for f in (ALERTS_FILE, SLO_FILE, OTHER_TEAM_FILE)],
            "scrape_configs": [{
                "job_name": JOB,
                "metrics_path": "/metrics",
                # The service asks for it only under its `metrics-bearer-auth` variant.
                "authorization": {"type": "Bearer",
                                  "credentials": ctx.secrets["metrics_token"]},
                "static_configs": [{"targets": [service.netloc],
                                    "labels": {"service": "relay-api"}}],
            }],
        }
        (home / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        port = ctx.ports["prometheus"]
        ctx.spawn("prometheus", [
            binary,
            f"--config.file={home / 'prometheus.yml'}",
            f"--storage.tsdb.path={home / 'data'}",
            "--storage.tsdb.retention.time=1d",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-lifecycle",
            "--log.level=warn",
        ])
        ctx.urls["prometheus"] = f"http://127.0.0.1:{port}"

    def wait_ready(self, ctx: StackContext, deadline: float) -> None:
        url = ctx.urls["prometheus"]
        try:
            wait_until(lambda: httpx.get(url + "/-/ready", timeout=1.0).status_code == 200,
                       deadline, "prometheus")
            self._wait_rules(ctx, deadline)
        except RuntimeError:
            raise RuntimeError(
                f"prometheus did not become ready at {url}; see {ctx.logs / 'prometheus.log'}"
            ) from None

    def after_ready(self, ctx: StackContext) -> None:
        """Give the SLIs data: a little traffic on the light endpoint and a few webhook
        deliveries, in two rounds, so Prometheus sees the counters grow rather than appear."""
        base = ctx.urls["service"]
        prometheus = ctx.urls["prometheus"]
        deadline = time.monotonic() + SEED_WAIT_S
        with httpx.Client(base_url=base, timeout=3.0) as client, _Sink() as sink:
            admin = {"X-API-Key": ctx.secrets["admin_key"]}
            dev = {"X-API-Key": ctx.secrets["dev_key"]}
            created = client.post("/api/v1/webhooks/endpoints", json={"url": sink.url},
                                  headers=admin)
            receiver = created.json().get("id") if created.status_code == 201 else None
            try:
                for round_ in range(2):
                    self._traffic(client, dev, sink, rounds=round_)
                    # Wait for a scrape that saw this round before the next one.
                    wait_scraped(prometheus, deadline)
            finally:
                if receiver:
                    client.delete(f"/api/v1/webhooks/endpoints/{receiver}", headers=admin)
        queries = [s["query"].replace("$window", SLO_CURRENT_WINDOW) for s in slo_specs()]
        try:
            wait_until(lambda: all(_finite(prometheus, q) for q in queries), deadline,
                       "the SLO queries", interval=0.25)
        except RuntimeError:
            # The checks report it with the query and the value; the stack is still usable.
            return

    @staticmethod
    def _traffic(client: httpx.Client, dev: dict[str, str], sink: _Sink, rounds: int) -> None:
        for _ in range(5):
            client.get(LIGHT_PATH, headers=dev)
        before = sink.count
        for i in range(2):
            client.post("/api/v1/actions/execute", json={"action": "cache.purge"},
                        headers={**dev, "Idempotency-Key": f"seed-{rounds}-{i}-"
                                 + secrets.token_hex(4)})
        end = time.monotonic() + 3.0
        while sink.count < before + 2 and time.monotonic() < end:
            time.sleep(0.02)

    def env_config(self, ctx: StackContext) -> dict[str, Any]:
        return {
            "service": {
                "rate_limit_metric": RATE_LIMIT_METRIC,
                "pool_gauges": dict(POOL_GAUGES),
                "metrics_auth": {"bearer_token": ctx.secrets["metrics_token"]},
            },
            "prometheus": {
                "url": ctx.urls["prometheus"],
                "service_job": JOB,
                "alert_rules": alert_rule_names(),
                "pool_alert_rule": POOL_ALERT,
                "slo_recording_rules": recording_rule_names(),
                "rule_groups": list(RULE_GROUPS),
                "series_may_be_empty": list(SERIES_MAY_BE_EMPTY),
                "timeout_s": 10,
            },
            "slo": {
                "window_days": SLO_WINDOW_DAYS,
                "current_window": SLO_CURRENT_WINDOW,
                "slos": slo_specs(),
            },
            "runbooks": {
                "source": "github",
                "paths": dict(RUNBOOKS),
                "sections": ["Symptoms", "Impact", "Diagnosis", "Mitigation", "Escalation"],
            },
        }

    def set_fault(self, ctx: StackContext, name: str, on: bool) -> None:
        self._write_rules(ctx)
        url = ctx.urls["prometheus"]
        resp = httpx.post(url + "/-/reload", timeout=10.0)
        if resp.status_code != 200:
            raise RuntimeError(
                f"prometheus refused to reload its rules ({resp.status_code}: "
                f"{resp.text[:200]}); see {ctx.logs / 'prometheus.log'}"
            )
        self._wait_rules(ctx, time.monotonic() + 15.0)
        if "no-slo-rules" in ctx.faults():
            # Prometheus marks a removed group's series stale only after a few evaluation
            # intervals; until then a query still finds them.
            wait_until(lambda: not _series(url, '{__name__=~"slo:.+"}'), time.monotonic() + 15.0,
                       "the SLO recording rules' series to go stale", interval=0.25)

    def stop(self, ctx: StackContext) -> None:
        kill_pidfile(ctx.pids / "prometheus.pid")

    # -- rule files -------------------------------------------------------------------------

    @staticmethod
    def _write_rules(ctx: StackContext) -> None:
        rules = ctx.dir / "prometheus" / "rules"
        rules.mkdir(parents=True, exist_ok=True)
        for file, doc in rule_documents(ctx.faults()).items():
            _write(rules / file, doc)

    @staticmethod
    def _wait_rules(ctx: StackContext, deadline: float) -> None:
        """Until the rules API shows exactly the rules the fault set asks for (names, the
        metrics they select, labels and runbook links), each evaluated at least once."""
        expected = _rule_fingerprints(rule_documents(ctx.faults()))
        url = ctx.urls["prometheus"] + "/api/v1/rules"

        def settled() -> bool:
            data = httpx.get(url, timeout=2.0).json()["data"]
            rules = [r for g in data["groups"] for r in g["rules"]]
            if any(r.get("health") != "ok" for r in rules):
                return False
            got = {(r["type"], r["name"]): _fingerprint(r["query"], r.get("labels") or {},
                                                         r.get("annotations") or {})
                   for r in rules}
            return got == expected

        wait_until(settled, deadline, "prometheus rules", interval=0.1)


def rule_documents(faults: set[str]) -> dict[str, dict[str, Any]]:
    """The rule files Prometheus loads under ``faults``: file name -> YAML document."""
    alerts = _groups(ALERTS_FILE)
    records = _groups(SLO_FILE)
    for rule in (r for g in alerts for r in g["rules"]):
        name = rule.get("alert")
        if "alert-without-runbook" in faults and name == RULE_WITHOUT_RUNBOOK:
            rule.get("annotations", {}).pop("runbook_url", None)
        if "alert-never-fires" in faults and name == RULE_NEVER_FIRES:
            rule["expr"] = rule["expr"].replace("http_requests_total", "http_request_total")
        if "pool-alert-wrong-gauges" in faults and name == POOL_ALERT:
            rule["expr"] = (f'{POOL_GAUGES["in_use"]}{{job="{JOB}"}} '
                            f'>= {POOL_GAUGES["size"]}{{job="{JOB}"}}')
        if "runbook-links-release-branch" in faults and "runbook_url" in rule.get("annotations", {}):
            page = rule["annotations"]["runbook_url"].rsplit("/", 1)[-1]
            rule["annotations"]["runbook_url"] = RELEASE_RUNBOOKS + page
    if "alert-on-alerts" in faults:
        alerts[0]["rules"].append({
            "alert": META_ALERT,
            "expr": 'count(ALERTS{alertstate="firing",severity="critical",team="platform"}) > 0',
            "for": "30m",
            "labels": {"severity": "warning", "team": "platform"},
            "annotations": {
                "summary": "A critical platform alert has been firing for 30 minutes",
                "runbook_url": "github:docs/runbooks/outage.md",
            },
        })
    if "slo-rule-no-series" in faults:
        for rule in (r for g in records for r in g["rules"]):
            if rule.get("record") == RECORD_NO_SERIES:
                rule["expr"] = rule["expr"].replace("webhook_delivery_duration_seconds_bucket",
                                                    "webhook_delivery_seconds_bucket")
    docs = {
        ALERTS_FILE: {"groups": [] if "rules-not-loaded" in faults else alerts},
        SLO_FILE: {"groups": [] if "no-slo-rules" in faults else records},
        OTHER_TEAM_FILE: {"groups": []},
    }
    if "other-team-rules" in faults:
        docs[OTHER_TEAM_FILE] = {"groups": _groups(OTHER_TEAM_FILE)}
    return docs


def _rule_fingerprints(docs: dict[str, dict[str, Any]]) -> dict[tuple[str, str], Any]:
    found = {}
    for doc in docs.values():
        for rule in (r for g in doc["groups"] for r in g["rules"]):
            kind, name = ("alerting", rule["alert"]) if "alert" in rule else \
                ("recording", rule["record"])
            found[(kind, name)] = _fingerprint(rule["expr"], rule.get("labels") or {},
                                               rule.get("annotations") or {})
    return found


def _fingerprint(expr: str, labels: dict[str, str], annotations: dict[str, str]) -> Any:
    """What tells two versions of a rule apart: the selectors it reads (the API shows the
    expression re-formatted), its labels and its runbook link."""
    selectors = sorted(str(s.selector) for s in rule_selectors(expr))
    return (tuple(selectors), tuple(sorted(labels.items())), annotations.get("runbook_url"))


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    tmp.replace(path)


def _finite(prometheus: str, query: str) -> bool:
    resp = httpx.get(prometheus + "/api/v1/query", params={"query": query}, timeout=2.0)
    result = resp.json()["data"]["result"]
    if len(result) != 1:
        return False
    value = float(result[0]["value"][1])
    return value == value and abs(value) != float("inf")


def _series(prometheus: str, selector: str) -> bool:
    """Whether an instant query of ``selector`` finds any series now."""
    resp = httpx.get(prometheus + "/api/v1/query", params={"query": selector}, timeout=2.0)
    return bool(resp.json()["data"]["result"])


def wait_scraped(prometheus: str, deadline: float) -> None:
    """Until Prometheus has scraped the service after this moment."""
    since = time.time()

    def scraped() -> bool:
        resp = httpx.get(prometheus + "/api/v1/query",
                         params={"query": f'timestamp(up{{job="{JOB}"}})'}, timeout=2.0)
        result = resp.json()["data"]["result"]
        return bool(result) and float(result[0]["value"][1]) > since

    try:
        wait_until(scraped, deadline, "a scrape of the service", interval=0.1)
    except RuntimeError:
        return


class _Sink:
    """A throw-away webhook receiver that answers 204, for seeding delivery latencies."""

    def __init__(self) -> None:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                self.send_response(204)
                self.end_headers()
                with sink._lock:
                    sink.count += 1

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.count = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks/relay"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> _Sink:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
