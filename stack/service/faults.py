"""The service's faults and variants, declared once: the app reads each by its name, the part
lists them for the orchestrator, the fault matrix and the README's table."""

from __future__ import annotations

from opsready_stack.part import Fault

__all__ = ["METRICS_FAULTS", "SCRAPED_FAULT_NAMES", "SERVICE_FAULTS"]

CORS_WILDCARD = Fault(
    "cors-wildcard",
    "CORS answers Access-Control-Allow-Origin: * with credentials",
    frozenset({"P2-002"}),
)
CORS_REFLECT_ANY = Fault(
    "cors-reflect-any",
    "CORS reflects any origin, including disallowed ones",
    frozenset({"P2-002"}),
)
CORS_STARTSWITH_MATCH = Fault(
    "cors-startswith-match",
    "CORS allows any origin that merely starts with an allowed one",
    frozenset({"P2-002"}),
)
CORS_CREDENTIALS_CASING = Fault(
    "cors-credentials-casing",
    "CORS sends Access-Control-Allow-Credentials: True, which Fetch does not accept",
    frozenset({"P2-002"}),
)
CORS_MAX_AGE_ZERO = Fault(
    "cors-max-age-zero",
    "preflights answer Access-Control-Max-Age: 0",
    frozenset({"P2-002"}),
)
CORS_METHODS_SAFELISTED_ONLY = Fault(
    "cors-methods-safelisted-only",
    "preflights list only GET, HEAD, POST in Access-Control-Allow-Methods",
    frozenset({"P2-002"}),
)
CORS_ACTUAL_NO_VARY = Fault(
    "cors-actual-no-vary",
    "actual CORS responses lack Vary: Origin",
    frozenset({"P2-002"}),
)
# A public API's CORS: right for an environment with cors.any_origin and no credentials (a test
# proves it stays done there), a fault under the stack's own environment, which expects
# credentials and an allow-list.
CORS_PUBLIC = Fault(
    "cors-public",
    "CORS serves every origin as a public API: Access-Control-Allow-Origin: * and no credentials",
    frozenset({"P2-002"}),
)
CORS_PREFLIGHT_204 = Fault(
    "cors-preflight-204",
    "preflights answer 204 and echo the requested method and headers",
    frozenset(),
    variant=True,
)
NO_HSTS = Fault(
    "no-hsts",
    "responses carry no Strict-Transport-Security header",
    frozenset({"P0-001"}),
)
HSTS_SHORT = Fault(
    "hsts-short",
    "Strict-Transport-Security has max-age=86400",
    frozenset({"P0-001"}),
)
CSP_UNSAFE_INLINE = Fault(
    "csp-unsafe-inline",
    "the CSP allows 'unsafe-inline' in script-src",
    frozenset({"P0-001"}),
)
REFERRER_UNSAFE_URL = Fault(
    "referrer-unsafe-url",
    "Referrer-Policy is unsafe-url",
    frozenset({"P0-001"}),
)
SECURITY_HEADERS_ALTERNATIVE = Fault(
    "security-headers-alternative",
    "a nonce-based strict CSP plus a second policy, a preloadable two-year HSTS and a "
    "Referrer-Policy with a fallback token",
    frozenset(),
    variant=True,
)
HEALTH_REPORTS_FAIL = Fault(
    "health-reports-fail",
    "/health answers 200 with status fail",
    frozenset({"P0-001"}),
)
HEALTH_DRAFT_FORMAT = Fault(
    "health-draft-format",
    "/health answers application/health+json with status pass",
    frozenset(),
    variant=True,
)
NO_RATE_LIMIT = Fault(
    "no-rate-limit",
    "the rate limiter is off: no 429, no breaches counted",
    frozenset({"P0-001", "P2-003"}),
)
RETRY_AFTER_INVALID = Fault(
    "retry-after-invalid",
    "429 responses carry a fractional Retry-After (0.040)",
    frozenset({"P0-001"}),
)
# A bare 429, as nginx's and Envoy's rate limits answer by default: right for an environment
# with retry_after_required: false (a test proves it stays done there), a fault under the
# stack's own environment, which requires Retry-After.
RETRY_AFTER_MISSING = Fault(
    "retry-after-missing",
    "429 responses carry no Retry-After",
    frozenset({"P0-001"}),
)
RETRY_AFTER_HTTP_DATE = Fault(
    "retry-after-http-date",
    "429 responses carry Retry-After as an HTTP-date",
    frozenset(),
    variant=True,
)
# The IETF RateLimit fields in place of Retry-After (draft-ietf-httpapi-ratelimit-headers,
# current syntax): a 429 that still says when to come back.
RATELIMIT_FIELDS = Fault(
    "ratelimit-fields",
    "429 responses say when to come back with RateLimit and RateLimit-Policy, no Retry-After",
    frozenset(),
    variant=True,
)
BAD_SIGNATURE = Fault(
    "bad-signature",
    "webhooks are signed with a secret the receivers do not have",
    frozenset({"P1-004"}),
)
UNSIGNED_WEBHOOK = Fault(
    "unsigned-webhook",
    "webhooks are sent without a signature header",
    frozenset({"P1-004"}),
)
WEBHOOK_WRONG_EVENT = Fault(
    "webhook-wrong-event",
    "the delivery carries another execution's event",
    frozenset({"P1-004"}),
)
WEBHOOK_STALE_TIMESTAMP = Fault(
    "webhook-stale-timestamp",
    "events and their signatures are dated an hour back",
    frozenset({"P1-004"}),
)
WEBHOOK_PING_FIRST = Fault(
    "webhook-ping-first",
    "a new endpoint first gets a signed ping event",
    frozenset(),
    variant=True,
)
# Without the metrics, the alert rules that read them can never fire (P0-001).
NO_BREACH_METRIC = Fault(
    "no-breach-metric",
    "rate_limit_breaches_total is absent from /metrics",
    frozenset({"P0-001", "P2-003"}),
)
NO_POOL_METRICS = Fault(
    "no-pool-metrics",
    "the db_connection_pool_* gauges are absent from /metrics",
    frozenset({"P0-001", "P2-004"}),
)
NO_TRACING = Fault(
    "no-tracing",
    "the service exports no spans",
    frozenset({"P2-001"}),
)
BREACH_METRIC_GAUGE = Fault(
    "breach-metric-gauge",
    "rate_limit_breaches_total is exported as a gauge, not a counter",
    frozenset({"P2-003"}),
)
POOL_GAUGES_STUB = Fault(
    "pool-gauges-stub",
    "the four db_connection_pool_* gauges are a stub that always reads 0",
    frozenset({"P2-004"}),
)
METRICS_OPENMETRICS = Fault(
    "metrics-openmetrics",
    "/metrics serves the OpenMetrics exposition (application/openmetrics-text)",
    frozenset(),
    variant=True,
)
METRICS_BEARER_AUTH = Fault(
    "metrics-bearer-auth",
    "/metrics needs a bearer token; Prometheus and the environment have it",
    frozenset(),
    variant=True,
)

# The faults of /metrics' exposition.
METRICS_FAULTS = (
    BREACH_METRIC_GAUGE,
    POOL_GAUGES_STUB,
    METRICS_OPENMETRICS,
    METRICS_BEARER_AUTH,
)
# Every fault that changes what Prometheus scrapes from /metrics: a flip takes effect there
# only at the next scrape.
SCRAPED_FAULT_NAMES = frozenset(f.name for f in (*METRICS_FAULTS, NO_BREACH_METRIC, NO_POOL_METRICS))
SERVICE_FAULTS = (
    CORS_WILDCARD,
    CORS_REFLECT_ANY,
    CORS_STARTSWITH_MATCH,
    CORS_CREDENTIALS_CASING,
    CORS_MAX_AGE_ZERO,
    CORS_METHODS_SAFELISTED_ONLY,
    CORS_ACTUAL_NO_VARY,
    CORS_PUBLIC,
    CORS_PREFLIGHT_204,
    NO_HSTS,
    HSTS_SHORT,
    CSP_UNSAFE_INLINE,
    REFERRER_UNSAFE_URL,
    SECURITY_HEADERS_ALTERNATIVE,
    HEALTH_REPORTS_FAIL,
    HEALTH_DRAFT_FORMAT,
    NO_RATE_LIMIT,
    RETRY_AFTER_INVALID,
    RETRY_AFTER_MISSING,
    RETRY_AFTER_HTTP_DATE,
    RATELIMIT_FIELDS,
    BAD_SIGNATURE,
    UNSIGNED_WEBHOOK,
    WEBHOOK_WRONG_EVENT,
    WEBHOOK_STALE_TIMESTAMP,
    WEBHOOK_PING_FIRST,
    NO_BREACH_METRIC,
    NO_POOL_METRICS,
    NO_TRACING,
    *METRICS_FAULTS,
)
