"""Environment configuration: YAML with ``${VAR}`` interpolation, validated by pydantic.

Every section is optional. A check whose section (or key) is missing skips with
``not configured: <section.key>``, so an empty file is a valid environment.
Every secret is a ``SecretStr`` and is registered with redaction as soon as it is loaded.
"""

from __future__ import annotations

import datetime as dt
import difflib
import ipaddress
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from opsready._errors import ConfigError
from opsready._yaml import SafeLoader

__all__ = [
    "HOSTILE_ORIGIN_VARIANTS",
    "INTRUSIVE_PROBES",
    "WRITE_ACTIONS",
    "BackupsConfig",
    "CorsConfig",
    "Environment",
    "FreshnessConfig",
    "GithubConfig",
    "GrafanaConfig",
    "MetricsAuthConfig",
    "OtelConfig",
    "PoolGaugesConfig",
    "PrometheusConfig",
    "RailwayConfig",
    "RateLimitConfig",
    "RestoreDrillConfig",
    "RunbooksConfig",
    "S3Config",
    "SecurityHeadersConfig",
    "ServiceConfig",
    "SloConfig",
    "SloSpec",
    "TrackerConfig",
    "TrackerGithubConfig",
    "WebhooksConfig",
    "interpolate",
    "load_environment",
    "load_yaml",
    "mask_url",
    "model_in",
    "resolve_environment_path",
    "secret_values",
    "url_problem",
]

# The names an environment may list under ``allow_intrusive``. Each names one probe that
# writes or loads something on the target.
INTRUSIVE_PROBES: dict[str, str] = {
    "rate_limit_burst": "sends a bounded burst of requests until the service answers 429",
    "webhook_e2e": "triggers a real event on the platform and registers a receiver",
    "otel_probe_span": "sends one probe span to the OTel collector",
    "restore_drill": "restores the latest backup into a scratch database, then drops it",
    "rollback_drill": "rolls the service back on Railway and forward again (staging only)",
}

# The names an environment may list under ``allow_writes``. Each names one command that writes
# somewhere other than the platform under audit and the run's own report. They are kept apart
# from ``allow_intrusive``: they do not touch the platform, have no freshness window, and
# ``verify --allow-intrusive`` must neither grant nor take them away.
WRITE_ACTIONS: dict[str, str] = {
    "tracker_sync": "opsready sync creates, labels, comments on, closes and reopens tracker issues",
}


def _check_scheme(v: str) -> str:
    if not re.match(r"^https?://[^\s/]+", v):
        raise ValueError("expected an http:// or https:// URL")
    return v


def _check_url(v: str) -> str:
    return _check_scheme(v).rstrip("/")


# An http(s) URL, kept without its trailing slash.
HttpUrlText = Annotated[str, AfterValidator(_check_url)]
# An http(s) URL, kept exactly as written: an API endpoint that is posted to as it is.
HttpEndpoint = Annotated[str, AfterValidator(_check_scheme)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _observatory_csp_forbidden() -> dict[str, list[str]]:
    """What the Mozilla HTTP Observatory's CSP test fails on: inline or broad script
    sources, broad object sources, and ``'unsafe-eval'`` in scripts or styles."""
    broad = ["*", "http:", "https:", "ftp:", "http://*", "https://*", "http://*.*", "https://*.*"]
    return {
        "script-src": ["'unsafe-inline'", "'unsafe-eval'", "data:", *broad],
        "object-src": broad,
        "style-src": ["'unsafe-eval'"],
    }


class SecurityHeadersConfig(_Section):
    """The security-header policy (P0-001). The defaults follow the Mozilla HTTP
    Observatory's tests; ``paths`` is the platform's own and has no default."""

    paths: list[str] = []
    hsts_min_max_age: int = Field(default=15768000, ge=0)
    hsts_include_subdomains: bool = False
    hsts_preload: bool = False
    require_csp: bool = True
    csp_required_directives: list[str] = []
    # Directive -> sources it must not allow. A directive the policy leaves out falls back
    # to default-src (CSP Level 3); with neither, everything is allowed.
    csp_forbidden_sources: dict[str, list[str]] = Field(default_factory=_observatory_csp_forbidden)
    content_type_options: str = "nosniff"
    referrer_policies: list[str] = [
        "no-referrer",
        "same-origin",
        "strict-origin",
        "strict-origin-when-cross-origin",
    ]

    @field_validator("csp_required_directives", "csp_forbidden_sources")
    @classmethod
    def _lower_directives(cls, v: Any) -> Any:
        # CSP directive names are ASCII case-insensitive.
        if isinstance(v, dict):
            return {k.lower(): [s.lower() for s in vals] for k, vals in v.items()}
        return [d.lower() for d in v]


class RateLimitConfig(_Section):
    """A bounded burst: at most ``max_requests`` requests and ``max_seconds`` seconds."""

    path: str | None = None
    method: str = "GET"
    max_requests: int = Field(default=300, ge=1, le=5000)
    max_seconds: float = Field(default=15.0, gt=0, le=120)
    concurrency: int = Field(default=8, ge=1, le=64)
    # The smallest acceptable delay-seconds of the 429's Retry-After (RFC 9110 §10.2.3).
    retry_after_min_s: int = Field(default=1, ge=0)
    # RFC 6585 lets a 429 omit Retry-After; false accepts a 429 without one (one that is sent
    # is still judged).
    retry_after_required: bool = True
    # Where the burst is not allowed, a breach already counted within this window (a PromQL
    # duration) still shows the breach metric at work.
    found_breach_window: str = Field(default="24h", pattern=r"^(\d+(ms|s|m|h|d|w|y))+$")


class PoolGaugesConfig(_Section):
    """The names of the DB connection-pool gauges, by what each one measures, and what the
    size gauge means."""

    size: str | None = None
    in_use: str | None = None
    available: str | None = None
    waiting: str | None = None
    # "maximum": size is the pool's configured limit (psycopg_pool max_size, HikariCP
    # maximumPoolSize), above 0 at all times. "current": size counts the connections the pool
    # holds now (node-postgres totalCount), 0 while an idle pool has closed them all.
    size_is: Literal["maximum", "current"] = "maximum"
    # Connections the pool may open beyond size under load (SQLAlchemy's max_overflow): in use
    # may reach size + max_overflow.
    max_overflow: int = Field(default=0, ge=0)

    def configured(self) -> dict[str, str]:
        """Role (``size``, ``in_use``, ``available``, ``waiting``) -> metric name, for the
        gauges that are named."""
        roles = {"size": self.size, "in_use": self.in_use, "available": self.available,
                 "waiting": self.waiting}
        return {role: name for role, name in roles.items() if name}


class MetricsAuthConfig(_Section):
    """Credentials for the service's metrics endpoint: a bearer token, or basic auth."""

    bearer_token: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None

    @model_validator(mode="after")
    def _one_scheme(self) -> MetricsAuthConfig:
        if self.bearer_token is not None and self.username is not None:
            raise ValueError("give either bearer_token or username and password, not both")
        if (self.username is None) != (self.password is None):
            raise ValueError("basic auth needs both username and password")
        return self


class ServiceConfig(_Section):
    base_url: HttpUrlText
    health_path: str = "/health"
    # The health body's field that says whether the service is healthy, and the values that
    # mean it is (compared case-insensitively); a body without the field is judged by status.
    health_status_field: str | None = "status"
    health_ok_values: list[str] = ["ok", "pass", "up", "healthy"]
    metrics_path: str = "/metrics"
    version_field: str = "version"
    api_key: SecretStr | None = None
    admin_key: SecretStr | None = None
    api_key_header: str = "X-API-Key"
    security_headers: SecurityHeadersConfig = SecurityHeadersConfig()
    rate_limit: RateLimitConfig = RateLimitConfig()
    # The counter the rate limiter increments on every 429, and the pool gauges. Empty: the
    # criteria that need them are not covered.
    rate_limit_metric: str | None = None
    pool_gauges: PoolGaugesConfig = PoolGaugesConfig()
    # Credentials of metrics_path, when it sits behind authentication.
    metrics_auth: MetricsAuthConfig | None = None
    # Several instances serve metrics_path behind base_url (a load balancer): one GET reaches
    # one of them, so counters and gauges are judged per instance from Prometheus.
    metrics_per_instance: bool = False



HostileVariant = Literal["suffix", "prefix", "scheme", "subdomain", "null"]
HOSTILE_ORIGIN_VARIANTS: tuple[HostileVariant, ...] = ("suffix", "prefix", "scheme", "subdomain",
                                                      "null")


class CorsConfig(_Section):
    """CORS as the Fetch standard defines it (P2-002). The allow-list, paths and request
    headers are the platform's own and have no default."""

    paths: list[str] = []
    allowed_origins: list[str] = []
    # Origins that must get no Access-Control-Allow-Origin, besides the hostile variants
    # derived from every allowed origin.
    disallowed_origins: list[str] = []
    hostile_variants: list[HostileVariant] = list(HOSTILE_ORIGIN_VARIANTS)
    methods: list[str] = Field(default=["GET"], min_length=1)
    request_headers: list[str] = []
    credentials: bool = True
    # A public API: every origin may read it without credentials, so "*" is its policy and a
    # hostile origin is judged only on whether it is granted credentials.
    any_origin: bool = False
    max_age_min_s: int = Field(default=1, ge=1)
    # The method of the actual (non-preflight) CORS request; keep it safe (GET or HEAD).
    actual_method: str = "GET"

    @model_validator(mode="after")
    def _public_without_credentials(self) -> CorsConfig:
        if self.any_origin and self.credentials:
            raise ValueError("any_origin needs credentials: false (Fetch never lets * through on a "
                             "credentialed request); set credentials: false, or any_origin: false")
        return self

    @field_validator("allowed_origins", "disallowed_origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        for origin in v:
            if origin != "null" and not re.fullmatch(r"[a-z][a-z0-9+.-]*://[^/\s?#]+", origin):
                raise ValueError(f"{origin!r} is not an origin; write scheme://host[:port], "
                                 f"with no path or trailing slash")
        return v

    @field_validator("methods", "actual_method")
    @classmethod
    def _methods(cls, v: Any) -> Any:
        for method in [v] if isinstance(v, str) else v:
            if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", method):
                raise ValueError(f"{method!r} is not an HTTP method")
        return v


class WebhooksConfig(_Section):
    scheme: Literal["hex", "stripe", "standard-webhooks"] = "hex"
    secret: SecretStr
    # The header carrying the signature: hex scheme, default X-Signature; stripe scheme,
    # default Stripe-Signature (platforms sign Stripe's way under their own header);
    # standard-webhooks reads its own. The hex signature covers the body only, so its
    # timestamp is judged from a body field (``timestamp_field``); a timestamp header is not
    # covered by the signature and cannot show freshness.
    signature_header: str | None = None
    # hex scheme: what comes before the digest (matched without regard to case; empty for
    # none), and how the digest is written.
    signature_prefix: str = "sha256="
    signature_encoding: Literal["hex", "base64"] = "hex"
    timestamp_header: str | None = None
    timestamp_field: str | None = None
    tolerance_s: int = Field(default=300, ge=1)
    # Which delivery is ours: the delivery body's field (dotted path) that carries the
    # trigger response's ``trigger_id_field``, or the Idempotency-Key when that is null.
    event_id_field: str | None = None
    trigger_id_field: str | None = None
    # Where the receiver listens, and the URL the platform should use to reach it.
    receiver_bind: str = "127.0.0.1"
    receiver_port: int = Field(default=0, ge=0, le=65535)
    receiver_public_url: str | None = None
    # How the receiver gets registered: through the platform's API, or a static target
    # that is already configured on the platform side (then receiver_port must be fixed).
    register_path: str | None = None
    trigger_path: str | None = None
    trigger_body: dict[str, Any] | None = None
    delivery_timeout_s: float = Field(default=10.0, gt=0, le=300)


PoolGaugeRole = Literal["size", "in_use", "available", "waiting"]


class PrometheusConfig(_Section):
    url: HttpUrlText
    bearer_token: SecretStr | None = None
    # The scrape job of the service. Empty: the criteria that need it are not covered.
    service_job: str | None = None
    alert_rules: list[str] = []
    pool_alert_rule: str | None = None
    # Which pool gauges (service.pool_gauges) the pool-exhaustion alert must use.
    pool_alert_gauges: list[PoolGaugeRole] = ["available", "waiting"]
    slo_recording_rules: list[str] = []
    # The rules judged: only those of these groups / rule files (glob patterns), for a
    # Prometheus shared with other teams. Empty: every loaded rule.
    rule_groups: list[str] = []
    rule_files: list[str] = []
    # Selectors that may legitimately match no series (Prometheus' own ALERTS until an alert
    # fires, a counter with no event yet). A rule selector is exempt when it has the same
    # metric and at least these matchers.
    series_may_be_empty: list[str] = ["ALERTS", "ALERTS_FOR_STATE"]
    timeout_s: float = Field(default=10.0, gt=0, le=120)
    # Longest wait for a change on the service to show in Prometheus (the next scrape).
    scrape_wait_s: float = Field(default=15.0, ge=0, le=300)


    @field_validator("series_may_be_empty")
    @classmethod
    def _selectors(cls, v: list[str]) -> list[str]:
        import promql_parser

        for text in v:
            try:
                expr = promql_parser.parse(text)
            except ValueError as exc:
                raise ValueError(f"{text!r} is not a PromQL selector ({exc})") from None
            if not isinstance(expr, promql_parser.VectorSelector):
                raise ValueError(f"{text!r} is not a plain selector such as ALERTS or "
                                 f'foo_total{{job="x"}}')
        return v


class GrafanaConfig(_Section):
    url: HttpUrlText
    token: SecretStr | None = None
    dashboards: list[str] = []
    # The datasource types the dashboards' panels must query (Grafana's plugin ids).
    datasource_types: list[str] = ["prometheus"]



class OtelConfig(_Section):
    collector_health_url: str | None = None
    otlp_http_url: HttpEndpoint | None = None
    trace_backend: Literal["jaeger", "tempo"] = "jaeger"
    trace_api_url: HttpEndpoint | None = None
    service_name: str = "relay-api"
    traced_path: str = "/api/v1/actions"
    # The tail-sampling processor holds spans for its decision_wait (30 s by default) before
    # they move on: a healthy pipeline may take that long to show a trace.
    read_back_timeout_s: float = Field(default=45.0, gt=0, le=300)


class GithubConfig(_Section):
    api_url: HttpEndpoint = "https://api.github.com"
    token: SecretStr | None = None
    repo: str
    branch: str = "main"
    # The platform's own PR numbers, secret names, workflow files and script paths come from
    # the environment file; a key left empty leaves its criterion not covered.
    prs: list[int] = []
    secrets: list[str] = []
    # Where Actions secrets may live: the repository, its deployment environments, and the
    # organization's secrets shared with the repository.
    secret_scopes: list[Literal["repository", "environment", "organization"]] = [
        "repository", "environment"]
    # The deployment environments whose secrets count; empty means every environment.
    secret_environments: list[str] = []
    deploy_workflow: str = ""
    # Oldest acceptable last successful run; None: any age (a deploy runs only on a push).
    deploy_max_age_days: float | None = Field(default=None, gt=0)
    backup_workflow: str = ""
    backup_max_age_days: float | None = Field(default=1.5, gt=0)
    # A deployed version that matches this regex is a tag, resolved to its commit.
    version_tag_pattern: str | None = None
    slo_report_workflow: str = ""
    slo_report_max_age_days: float = Field(default=8, gt=0)
    drill_workflow: str = ""
    rollback_script: str = ""
    rollback_workflow: str = ""
    # The commands of a shell rollback script that send HTTP requests: regexes matched
    # against a command's first word.
    rollback_shell_commands: list[str] = ["curl", "wget", "https?", "xh"]
    # Where a rollback request must go: regexes searched in the request's URL, by default
    # Railway's public GraphQL endpoint under both of its domains.
    rollback_endpoints: list[str] = [r"backboard\.railway\.com/graphql",
                                     r"backboard\.railway\.app/graphql"]
    rate_limit_wait_max_s: float = Field(default=60.0, ge=0, le=3600)

    @field_validator("repo")
    @classmethod
    def _repo(cls, v: str) -> str:
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", v):
            raise ValueError("expected owner/name, e.g. acme/relay")
        return v

    @field_validator("version_tag_pattern", "rollback_shell_commands", "rollback_endpoints")
    @classmethod
    def _regex(cls, v: str | list[str] | None) -> str | list[str] | None:
        for pattern in [v] if isinstance(v, str) else v or []:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a valid regular expression ({exc})") \
                    from None
        return v


class RailwayConfig(_Section):
    api_url: HttpEndpoint = "https://backboard.railway.com/graphql/v2"
    token: SecretStr
    token_kind: Literal["project", "account", "team"] = "project"
    project_id: str
    environment_id: str
    service_id: str
    drill_timeout_s: float = Field(default=120.0, gt=0, le=1800)
    drill_poll_s: float = Field(default=5.0, gt=0, le=60)


class S3Config(_Section):
    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None


DumpFormatName = Literal["custom", "directory", "tar", "plain"]


class BackupsConfig(_Section):
    s3: S3Config
    # Which objects under the prefix are backups: a glob with strftime date fields
    # (opsready.backup_keys). Empty: the backup criteria are not covered.
    key_pattern: str | None = None
    # pg_dump's output formats this platform's backups may use (plain: gzip'd or not).
    accepted_formats: list[DumpFormatName] = ["custom", "directory", "tar", "plain"]
    rpo_hours: float = Field(default=26.0, gt=0)
    min_size_bytes: int = Field(default=1024, ge=0)
    max_shrink_fraction: float = Field(default=0.5, ge=0, le=1)
    sidecar_suffix: str = Field(default=".sha256", min_length=1)
    # Where the last drill is recorded (JSON), for "the drill is scheduled or recent";
    # empty: no record is read.
    drill_record_key: str | None = None
    # A monthly schedule runs at most 31 days apart; a day more for a scheduler running late.
    drill_max_age_days: float = Field(default=32, gt=0)
    # The record's fields: its outcome (one of the success values when the drill passed) and
    # its measured RTO in seconds.
    drill_record_outcome_field: str = "result"
    drill_record_success_values: list[str] = ["passed", "success", "succeeded"]
    drill_record_rto_field: str = "rto_seconds"
    retention_days: int = Field(default=365, ge=1)
    # The bucket's default encryption must be at least this: AES256 (any server-side
    # encryption), aws:kms (KMS), or a KMS key id or ARN (that key). Empty: not judged.
    required_encryption: str | None = None
    # The day the platform's backups began, when older backups may have left no trace.
    history_start: dt.date | None = None
    daily_window_days: int = Field(default=30, ge=1)
    daily_min_days: int = Field(default=28, ge=1)

    @field_validator("key_pattern")
    @classmethod
    def _key_pattern(cls, v: str | None) -> str | None:
        if v:
            from opsready.backup_keys import KeyPattern

            KeyPattern.compile(v)
        return v or None

    @field_validator("accepted_formats")
    @classmethod
    def _formats(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("list at least one of custom, directory, tar, plain")
        return v

    @model_validator(mode="after")
    def _window(self) -> BackupsConfig:
        if self.daily_min_days > self.daily_window_days:
            raise ValueError(f"daily_min_days ({self.daily_min_days}) is larger than "
                             f"daily_window_days ({self.daily_window_days})")
        return self


class RestoreDrillConfig(_Section):
    # A maintenance database on the scratch server; the drill creates its own database there.
    scratch_dsn: SecretStr
    # A read-only DSN of the source: the drill asks it who it is, and counts its rows.
    source_dsn: SecretStr | None = None
    # Other databases the drill must prove it is not writing to.
    protected_dsns: list[SecretStr] = []
    expected_tables: list[str] = []
    min_rows: dict[str, int] = {}
    # Tables that may legitimately be empty in a backup.
    allowed_empty_tables: list[str] = []
    # How much the live source may grow per day of the backup's age (one day at least).
    row_growth_per_day: float = Field(default=0.1, ge=0, le=10)
    # Statements whose errors do not fail the restore (regular expressions).
    tolerated_errors: list[str] = [r"\bOWNER TO\b", r"^COMMENT ON EXTENSION\b"]
    # A superuser (or pg_execute_server_program member) restores only when named here.
    allow_privileged_role: str | None = None
    # A scratch server that is the source's own cluster (or a protected one's) shares its
    # disk, WAL and replicas: the drill refuses it unless allowed here.
    allow_source_cluster: bool = False
    rto_target_s: float = Field(default=600.0, gt=0)
    jobs: int = Field(default=2, ge=1, le=16)
    pg_restore: str = "pg_restore"
    psql: str = "psql"
    statement_timeout_s: float = Field(default=300.0, gt=0)

    @field_validator("tolerated_errors")
    @classmethod
    def _regexes(cls, v: list[str]) -> list[str]:
        for pattern in v:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None
        return v


class SloSpec(_Section):
    """One SLO. ``query`` and ``bad_query`` may contain ``$window``: it becomes a PromQL
    duration, ``slo.current_window`` for the current value and the burn rate, and the SLO
    window (``slo.window_days``) for the budget."""

    name: str
    target: float
    # ``le``: the SLI must stay at or below the target (latency, error rate);
    # ``ge``: at or above it (availability).
    objective: Literal["le", "ge"]
    unit: str = ""
    query: str
    # The fraction of events allowed to be bad, for the error-budget column.
    # Defaults from the target for ratio SLOs; latency SLOs give it explicitly.
    budget_fraction: float | None = Field(default=None, gt=0, le=1)
    # The fraction of bad events over ``$window`` (e.g. requests slower than the target).
    # Ratio SLOs (no unit) derive it from the SLI itself; a latency SLO needs it for the
    # budget and burn-rate columns.
    bad_query: str | None = None
    # For an availability SLO: an up- or probe-based SLI over ``$window`` (the share of time
    # the service answered). The SLO's value is the lower of ``query`` and ``up_query``, so a
    # full outage, in which no request reaches the service to be counted, still lowers it.
    up_query: str | None = None


class SloConfig(_Section):
    window_days: float = Field(default=30, gt=0)
    # The recent window of the "current value" and burn-rate columns (a PromQL duration).
    current_window: str = "1h"
    slos: list[SloSpec] = []

    @field_validator("current_window")
    @classmethod
    def _duration(cls, v: str) -> str:
        if not re.fullmatch(r"(\d+(ms|s|m|h|d|w|y))+", v):
            raise ValueError("expected a PromQL duration such as 1h or 30m")
        return v


class RunbooksConfig(_Section):
    source: Literal["github", "local"] = "github"
    # Runbook topic -> path (in the GitHub repo, or on disk relative to the environment file).
    paths: dict[str, str] = {}
    sections: list[str] = ["Symptoms", "Impact", "Diagnosis", "Mitigation", "Escalation"]
    # A section counts only with a body of at least this many words, not a bare heading.
    min_section_words: int = Field(default=10, ge=0)


class TrackerGithubConfig(_Section):
    """The GitHub repository whose issues ``opsready sync --tracker github`` keeps in step."""

    api_url: HttpUrlText = "https://api.github.com"
    repo: str
    # Its own token, apart from github.token: a fine-grained token with Issues read and write.
    token: SecretStr | None = None
    rate_limit_wait_max_s: float = Field(default=60.0, ge=0, le=3600)
    # GitHub asks for a pause of at least a second between POST/PATCH/DELETE requests.
    write_interval_s: float = Field(default=1.0, ge=0, le=60)


    @field_validator("repo")
    @classmethod
    def _repo(cls, v: str) -> str:
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", v):
            raise ValueError("expected owner/name, e.g. acme/relay")
        return v


class TrackerConfig(_Section):
    """Where ``opsready sync`` mirrors ticket statuses. One section per tracker kind."""

    github: TrackerGithubConfig | None = None
    # Where a run's report can be read, e.g. the CI run that keeps it as an artifact;
    # ``{run_id}`` and ``{environment}`` are filled in. Empty: comments carry no link.
    report_url: str | None = None

    @field_validator("report_url")
    @classmethod
    def _report_url(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        try:
            filled = v.format(run_id="r", environment="e")
        except (KeyError, IndexError, ValueError):
            raise ValueError("use only the placeholders {run_id} and {environment}") from None
        _check_url(filled)
        return v


class FreshnessConfig(_Section):
    """Carry-forward: for how many days a pass of a criterion that needs an intrusive probe may
    stand in for a later run that does not allow that probe. 0 turns it off for the probe.
    The drills run monthly in a maintenance window; the probes that exercise a live delivery
    path (a burst, a webhook, a probe span) can break between releases, so a week."""

    rate_limit_burst: float = Field(default=7, ge=0, le=366)
    webhook_e2e: float = Field(default=7, ge=0, le=366)
    otel_probe_span: float = Field(default=7, ge=0, le=366)
    restore_drill: float = Field(default=31, ge=0, le=366)
    rollback_drill: float = Field(default=31, ge=0, le=366)


class Environment(_Section):
    """One environment file. ``source`` is the file it came from (not a YAML key)."""

    name: str = ""
    gate: list[Literal["P0", "P1", "P2", "P3"]] = ["P0", "P1"]
    allow_intrusive: list[str] = []
    allow_writes: list[str] = []
    freshness_days: FreshnessConfig = FreshnessConfig()
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    # Every response body a probe reads stops here (the backup download streams, unbounded).
    body_limit_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, le=1 << 30)
    # The whole run ends as interrupted, with its report, after this many seconds.
    deadline_s: float = Field(default=900.0, gt=0, le=86400)
    # Each evidence item is cut to this many bytes in readiness.json and index.html; the whole
    # item is saved as a file of the bundle and linked.
    evidence_item_max_bytes: int = Field(default=65536, ge=1024, le=64 * 1024 * 1024)
    service: ServiceConfig | None = None
    cors: CorsConfig | None = None
    webhooks: WebhooksConfig | None = None
    prometheus: PrometheusConfig | None = None
    grafana: GrafanaConfig | None = None
    otel: OtelConfig | None = None
    github: GithubConfig | None = None
    railway: RailwayConfig | None = None
    backups: BackupsConfig | None = None
    restore_drill: RestoreDrillConfig | None = None
    slo: SloConfig | None = None
    runbooks: RunbooksConfig | None = None
    tracker: TrackerConfig | None = None
    source: str = Field(default="", exclude=True)

    @field_validator("allow_intrusive")
    @classmethod
    def _known_intrusive(cls, v: list[str]) -> list[str]:
        for name in v:
            if name not in INTRUSIVE_PROBES:
                hint = difflib.get_close_matches(name, INTRUSIVE_PROBES, n=1)
                known = ", ".join(sorted(INTRUSIVE_PROBES))
                extra = f"did you mean '{hint[0]}'? " if hint else ""
                raise ValueError(f"unknown intrusive probe '{name}'; {extra}known: {known}")
        return v

    @field_validator("allow_writes")
    @classmethod
    def _known_writes(cls, v: list[str]) -> list[str]:
        for name in v:
            if name not in WRITE_ACTIONS:
                hint = difflib.get_close_matches(name, WRITE_ACTIONS, n=1)
                known = ", ".join(sorted(WRITE_ACTIONS))
                extra = f"did you mean '{hint[0]}'? " if hint else ""
                raise ValueError(f"unknown write '{name}'; {extra}known: {known}")
        return v


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(value: Any, env: dict[str, str], file: str, field: str = "",
                substituted: dict[str, str] | None = None) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string of a YAML tree.
    ``substituted`` collects each value taken from a variable (value -> variable name), so an
    error can name the variable instead of showing what may be a secret."""
    if isinstance(value, dict):
        return {k: interpolate(v, env, file, f"{field}.{k}" if field else str(k), substituted)
                for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, file, f"{field}[{i}]", substituted) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            if substituted is not None:
                substituted[env[name]] = name
            return env[name]
        if default is not None:
            return default
        raise ConfigError(
            file, field, f"${{{name}}} is not set",
            f"export {name}, or give a default as ${{{name}:-value}}",
        )

    return _VAR.sub(sub, value)


def resolve_environment_path(name_or_path: str, root: Path) -> Path:
    """``NAME`` means ``config/environments/NAME.yaml`` under ``root``; anything else is a path."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or os.sep in name_or_path or "/" in name_or_path:
        return candidate
    return root / "config" / "environments" / f"{name_or_path}.yaml"


# Bounds on what a configuration file may be: an environment is a few KiB, a handful of
# levels deep. They stop a hostile or broken file (an alias bomb, 3,000 nested lists) from
# hanging or crashing the run before it starts.
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_DEPTH = 64
MAX_CONFIG_NODES = 100_000


def load_yaml(path: Path, file: str | None = None) -> Any:
    """Read one YAML configuration file, within bounds: at most ``MAX_CONFIG_BYTES``, UTF-8,
    nested at most ``MAX_CONFIG_DEPTH`` levels, at most ``MAX_CONFIG_NODES`` values once
    aliases are expanded, and no key twice in a mapping. Raises ``ConfigError``."""
    file = file or str(path)
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(file, "", f"cannot be read ({exc.strerror or type(exc).__name__})",
                          "check the path and its permissions") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(file, "", f"is larger than {MAX_CONFIG_BYTES} bytes",
                          "a configuration file is a few KiB; check that this is the right file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(file, f"line {line}", f"is not UTF-8 text (byte 0x{data[exc.start]:02x})",
                          "save the file as UTF-8") from None
    try:
        _check_nesting(text, file)
        loader = _StrictLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _check_nodes(node, file)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(file, where, "is not valid YAML", "fix the syntax at that line") from None


class _StrictLoader(SafeLoader):  # type: ignore[misc,valid-type]
    """The safe loader; ``_check_nodes`` has refused duplicate keys before it constructs."""


def _check_nesting(text: str, file: str) -> None:
    """Walk the event stream (the parser is not recursive, the composer is) for the depth."""
    def too_deep(line: int) -> ConfigError:
        return ConfigError(file, f"line {line}", f"nests deeper than {MAX_CONFIG_DEPTH} levels",
                           "flatten the structure; no opsready key is nested that deep")

    depth = 0
    try:
        for event in yaml.parse(text, Loader=SafeLoader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_CONFIG_DEPTH:
                    raise too_deep(event.start_mark.line + 1 if event.start_mark else 0)
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.MarkedYAMLError as exc:
        # libyaml's scanner reads ahead and stops at its own limit (1,000 levels) before the
        # parser hands over the event that crosses ours.
        if "nesting depth" in str(exc.problem):
            raise too_deep(exc.problem_mark.line + 1 if exc.problem_mark else 0) from None
        raise


def _check_nodes(root: yaml.Node, file: str) -> None:
    """No key twice in one mapping, and a bounded number of values with aliases expanded
    (an alias bomb expands exponentially)."""
    seen = 0
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
        seen += 1
        if seen > MAX_CONFIG_NODES:
            raise ConfigError(file, path or "", f"expands to more than {MAX_CONFIG_NODES} values "
                              "(aliases repeat what they point at)",
                              "write the values out, or use fewer aliases")
        if isinstance(node, yaml.MappingNode):
            keys: dict[str, int] = {}
            for key_node, value_node in node.value:
                key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
                sub = f"{path}.{key}" if path else key
                line = key_node.start_mark.line + 1
                if isinstance(key_node, yaml.ScalarNode) and key in keys and key != "<<":
                    raise ConfigError(file, sub, f"appears twice in one mapping (lines {keys[key]} and {line})",
                                      "keep one of them; YAML would silently use the last")
                keys[key] = line
                stack.append((value_node, sub))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(node.value))


def load_environment(name_or_path: str, root: Path, env: dict[str, str] | None = None) -> Environment:
    """Load and validate one environment. Raises ``ConfigError`` with a one-line message that
    names the file, the field path and the fix, and never a secret's value."""
    path = resolve_environment_path(name_or_path, root)
    file = str(path)
    if not path.is_file():
        known = sorted(p.stem for p in (root / "config" / "environments").glob("*.yaml"))
        listed = ", ".join(known) if known else "none"
        what = "is not a file" if path.exists() else "no such environment file"
        raise ConfigError(
            file, "", what,
            f"pass --env NAME (known: {listed}) or a path to a YAML file",
        )
    raw = load_yaml(path, file)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(file, "", "top level is not a mapping", "write `key: value` sections")
    substituted: dict[str, str] = {}
    data = interpolate(raw, dict(os.environ if env is None else env), file, substituted=substituted)
    data.setdefault("name", path.stem)
    try:
        model = Environment.model_validate(data)
    except ValidationError as exc:
        raise _config_error(file, exc, data, substituted) from None
    except RecursionError:
        raise ConfigError(file, "", "is nested too deeply to validate", "flatten the structure") from None
    _check_values(model, file)
    return model.model_copy(update={"source": file})


def _check_values(model: Environment, file: str) -> None:
    """What the section models do not check: numbers that are not finite, and URLs with an
    impossible host or port."""
    for where, value, is_secret in _walk(model, ""):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(file, where, f"value {value} is not a finite number", "give a number")
        leaf = where.rsplit(".", 1)[-1]
        if isinstance(value, str) and value and (leaf.endswith("url") or leaf.endswith("_dsn")):
            problem = url_problem(value)
            if problem is not None and is_secret:
                # Not even a part of it: a misplaced '/' in a password makes it read as a host.
                raise ConfigError(file, where, "has an impossible host or port (the value is a secret and "
                                  "not shown)", "percent-encode special characters of the password "
                                  "(/ as %2F) and give postgresql://user:password@host:5432/db")
            if problem is not None:
                raise ConfigError(file, where, f"value {mask_url(value)!r}: {problem}",
                                  "give a URL such as https://host.example:8443/path")


def _walk(obj: Any, where: str) -> Iterator[tuple[str, Any, bool]]:
    """Every leaf of a model tree: its dotted path, its value and whether it is a secret
    (a secret's value is given only for URL-shaped DSNs, to check them)."""
    if isinstance(obj, SecretStr):
        yield where, obj.get_secret_value() if "://" in obj.get_secret_value() else "", True
    elif isinstance(obj, BaseModel):
        for name in type(obj).model_fields:
            if name != "source":
                yield from _walk(getattr(obj, name), f"{where}.{name}" if where else name)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _walk(value, f"{where}.{key}")
    elif isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            yield from _walk(value, f"{where}[{i}]")
    else:
        yield where, obj, False


_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot name a reachable endpoint (no host, an impossible host or port), or
    None. Multi-host DSNs (``postgresql://u@a:1,b:2/db``) are checked host by host."""
    parts = urlsplit(url.strip())
    if not parts.scheme or not parts.netloc:
        return "is not a URL with a scheme and a host"
    hostinfo = parts.netloc.rsplit("@", 1)[-1]
    for item in hostinfo.split(","):
        host, port = item, ""
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            if rest.startswith(":"):
                port = rest[1:]
            try:
                ipaddress.IPv6Address(host.split("%", 1)[0])
            except ValueError:
                return f"has an impossible host [{host}]"
        else:
            host, _, port = item.partition(":")
            if not host:
                return "has no host"
            if not _valid_host(host):
                return f"has an impossible host {host!r}"
        if port and not (port.isdigit() and 1 <= int(port) <= 65535):
            return f"has an impossible port {port!r} (ports are 1 to 65535)"
    return None


def _valid_host(host: str) -> bool:
    if len(host) > 253:
        return False
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    labels = ascii_host.rstrip(".").split(".")
    return all(_HOST_LABEL.match(label) for label in labels)


def mask_url(text: str) -> str:
    """``text`` with the user information of every URL in it replaced by ``***``."""
    return re.sub(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^\s/@]+@", r"\g<scheme>***@", text)


def _config_error(file: str, exc: ValidationError, data: dict[str, Any],
                  substituted: dict[str, str] | None = None) -> ConfigError:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    field = _path(err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        parent = _model_at(Environment, loc[:-1])
        known = list(parent.model_fields) if parent else []
        known = [k for k in known if k != "source"]
        hint = difflib.get_close_matches(loc[-1], known, n=1)
        fix = f"did you mean '{hint[0]}'?" if hint else f"known keys: {', '.join(known)}"
        return ConfigError(file, field, "unknown key", f"remove it; {fix}")
    if kind == "missing":
        return ConfigError(file, field, "is required", f"add `{loc[-1]}:` to the section")
    msg = _mask_all(err["msg"].removeprefix("Value error, "), substituted or {})
    if isinstance(err.get("input"), dict) and _model_at(Environment, loc) is not None:
        # A check across the keys of a section: its message names them.
        return ConfigError(file, field, msg, "change the keys it names")
    shown = _shown_value(loc, err.get("input"), substituted or {})
    return ConfigError(file, field, f"value {shown} is invalid", msg)


def _path(loc: tuple[int | str, ...]) -> str:
    """``webhooks.secrets[2].value``: list indexes in brackets."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _shown_value(loc: list[str], value: Any, substituted: dict[str, str]) -> str:
    """The invalid value as an error may show it: never a secret field's value, never the
    contents of a mapping or a list (a DSN in a list), never a value that came from an
    environment variable (it may hold a secret), URL user information masked, and short."""
    if _is_secret_field(loc):
        return "<secret>"
    if _model_at(Environment, loc) is not None and not isinstance(value, dict):
        # A section given as a scalar: whatever it holds (a pasted secret) stays unshown.
        return f"<a {type(value).__name__}, where a mapping of keys belongs>"
    if isinstance(value, dict):
        return "<a mapping>"
    if isinstance(value, list | tuple):
        return f"<a list of {len(value)}>"
    if not isinstance(value, str):
        return repr(value) if isinstance(value, int | float | bool) or value is None else f"<{type(value).__name__}>"
    shown = _mask_all(value, substituted)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return repr(shown)


def _mask_all(text: str, substituted: dict[str, str]) -> str:
    for value, name in sorted(substituted.items(), key=lambda kv: -len(kv[0])):
        if len(value) >= 4 and value in text:
            text = text.replace(value, f"${{{name}}}")
    from opsready.evidence import redactor

    return redactor.text(mask_url(text))


def _model_at(model: type[BaseModel], path: list[str]) -> type[BaseModel] | None:
    current: type[BaseModel] | None = model
    for part in path:
        if current is None or part.isdigit():
            continue
        info = current.model_fields.get(part)
        if info is None:
            return None
        current = model_in(info.annotation)
    return current


def model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field's annotation holds (directly, or in a union or container)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = model_in(arg)
        if found is not None:
            return found
    return None


def _is_secret_field(loc: list[str]) -> bool:
    if any(p in {"token", "secret", "api_key", "admin_key", "bearer_token", "password"} or "dsn" in p
           or "secret" in p or "token" in p or "password" in p for p in loc):
        return True
    parent = _model_at(Environment, loc[:-1]) if loc else None
    info = parent.model_fields.get(loc[-1]) if parent is not None else None
    return info is not None and "SecretStr" in str(info.annotation)


def secret_values(model: BaseModel) -> list[str]:
    """Every ``SecretStr`` value in a model tree, for redaction."""
    found: list[str] = []

    def walk(obj: Any) -> None:
        if isinstance(obj, SecretStr):
            value = obj.get_secret_value()
            if value:
                found.append(value)
        elif isinstance(obj, BaseModel):
            for name in type(obj).model_fields:
                walk(getattr(obj, name))
        elif isinstance(obj, dict):
            for v in obj.values():
                walk(v)
        elif isinstance(obj, list | tuple):
            for v in obj:
                walk(v)

    walk(model)
    return found
