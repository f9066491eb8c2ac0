"""The edge's header parsers (``opsready.probes.http_headers``), each against its standard:
RFC 9110 (Retry-After, HTTP-date), RFC 6797 (HSTS), CSP Level 3, Referrer Policy and Fetch
(nosniff, the CORS protocol)."""

from __future__ import annotations

import datetime as dt

import pytest

from opsready.probes.http_headers import (
    CorsResponse,
    first_value,
    hostile_origins,
    parse_csp,
    parse_hsts,
    parse_http_date,
    parse_referrer_policy,
    parse_retry_after,
)

NOW = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
DATE = "Sun, 01 Mar 2026 12:00:00 GMT"


# ----------------------------------------------------------------------- HTTP-date


@pytest.mark.parametrize("value", [
    "Sun, 01 Mar 2026 12:00:05 GMT",        # IMF-fixdate
    "Sunday, 01-Mar-26 12:00:05 GMT",       # obsolete RFC 850
    "Sun Mar  1 12:00:05 2026",             # asctime
])
def test_http_date_in_its_three_forms(value: str) -> None:
    assert parse_http_date(value, now=NOW) == NOW + dt.timedelta(seconds=5)


@pytest.mark.parametrize("value", [
    "Sun, 01 Mar 2026 12:00:05 UTC",  # the grammar says GMT
    "sun, 01 Mar 2026 12:00:05 GMT",  # names are case-sensitive
    "Sun, 1 Mar 2026 12:00:05 GMT",   # IMF-fixdate has a two-digit day
    "2026-03-01T12:00:05Z",
    "Sun, 31 Feb 2026 12:00:05 GMT",  # no such day
    "",
])
def test_not_an_http_date(value: str) -> None:
    assert parse_http_date(value, now=NOW) is None


def test_rfc850_two_digit_year_more_than_50_years_ahead_is_the_last_century() -> None:
    assert parse_http_date("Friday, 01-Mar-85 00:00:00 GMT", now=NOW).year == 1985  # type: ignore[union-attr]
    assert parse_http_date("Monday, 01-Mar-60 00:00:00 GMT", now=NOW).year == 2060  # type: ignore[union-attr]


# ----------------------------------------------------------------------- Retry-After


@pytest.mark.parametrize(("raw", "form", "seconds"), [
    ("120", "delay-seconds", 120.0),
    ("0", "delay-seconds", 0.0),
    (" 7 ", "delay-seconds", 7.0),
    ("Sun, 01 Mar 2026 12:00:30 GMT", "http-date", 30.0),
    ("Sun, 01 Mar 2026 11:59:00 GMT", "http-date", -60.0),
    ("1.5", "invalid", None),
    ("-1", "invalid", None),
    ("+5", "invalid", None),
    ("5s", "invalid", None),
    ("soon", "invalid", None),
])
def test_retry_after_forms(raw: str, form: str, seconds: float | None) -> None:
    parsed = parse_retry_after(raw, date_header=DATE, received=NOW + dt.timedelta(hours=1))
    assert parsed.form == form
    assert parsed.seconds == seconds
    assert parsed.raw == raw


def test_retry_after_date_is_compared_with_the_servers_date_header() -> None:
    # Our clock is an hour ahead of the server's: its own Date is what the date means against.
    ahead = NOW + dt.timedelta(hours=1)
    parsed = parse_retry_after("Sun, 01 Mar 2026 12:00:02 GMT", date_header=DATE, received=ahead)
    assert parsed.reference_source == "Date header" and parsed.seconds == 2.0
    fallback = parse_retry_after("Sun, 01 Mar 2026 12:00:02 GMT", date_header="not a date",
                                 received=NOW)
    assert fallback.reference_source == "receive time" and fallback.seconds == 2.0
    assert fallback.evidence()["form"] == "http-date"


# ----------------------------------------------------------------------- HSTS


def test_hsts_directives_are_case_insensitive_and_max_age_may_be_quoted() -> None:
    hsts = parse_hsts(['Max-Age="31536000"; INCLUDESUBDOMAINS; preload'])
    assert hsts.problem is None
    assert (hsts.max_age, hsts.include_subdomains, hsts.preload) == (31536000, True, True)


def test_hsts_only_the_first_field_counts() -> None:
    hsts = parse_hsts(["max-age=60", "max-age=63072000; includeSubDomains"])
    assert hsts.fields == 2 and hsts.max_age == 60 and not hsts.include_subdomains


@pytest.mark.parametrize(("value", "problem"), [
    ("includeSubDomains", "no max-age"),
    ("max-age=abc", "not delta-seconds"),
    ("max-age=-1", "not delta-seconds"),
    ("max-age=100; max-age=200", "appears twice"),
    ("max-age", "not delta-seconds"),
])
def test_hsts_a_user_agent_would_ignore(value: str, problem: str) -> None:
    hsts = parse_hsts([value])
    assert hsts.problem is not None and problem in hsts.problem


def test_no_hsts() -> None:
    assert not parse_hsts([]).present


# ----------------------------------------------------------------------- CSP


def test_csp_fetch_directives_fall_back_to_default_src() -> None:
    csp = parse_csp(["default-src 'self' 'unsafe-inline'; object-src 'none'"])
    assert csp.allows("script-src", "'unsafe-inline'")
    assert not csp.allows("object-src", "*")
    assert csp.governing("script-src") == ["default-src 'self' 'unsafe-inline'"]


def test_csp_without_a_governing_directive_allows_everything() -> None:
    csp = parse_csp(["frame-ancestors 'none'"])
    assert csp.allows("script-src", "'unsafe-inline'") and csp.allows("default-src", "*")
    # frame-ancestors has no fallback to default-src.
    assert parse_csp(["default-src 'none'"]).allows("frame-ancestors", "*")


def test_csp_a_nonce_or_hash_disables_unsafe_inline() -> None:
    for source in ("'nonce-abc123'", "'sha256-AAAA'"):
        csp = parse_csp([f"script-src 'self' {source} 'unsafe-inline'"])
        assert not csp.allows("script-src", "'unsafe-inline'")
        assert csp.allows("script-src", "'self'")


def test_csp_strict_dynamic_disables_allowlists_for_scripts() -> None:
    csp = parse_csp(["script-src 'nonce-r4nd' 'strict-dynamic' 'unsafe-inline' https: 'self'"])
    for source in ("'unsafe-inline'", "https:", "'self'"):
        assert not csp.allows("script-src", source), source
    # Not for other directives.
    assert parse_csp(["default-src 'strict-dynamic' https:"]).allows("img-src", "https:")


def test_csp_every_policy_must_allow_a_source() -> None:
    """Two policies are both enforced: the stricter one wins for each source."""
    loose_then_strict = parse_csp(["script-src 'self' 'unsafe-inline'",
                                   "script-src 'self'; object-src 'none'"])
    assert len(loose_then_strict.policies) == 2
    assert not loose_then_strict.allows("script-src", "'unsafe-inline'")
    assert loose_then_strict.allows("script-src", "'self'")
    # The comma form of the same list, in one field.
    assert parse_csp(["script-src 'unsafe-inline', default-src 'none'"]).policies[1].directives \
        == {"default-src": ("'none'",)}


def test_csp_names_are_case_insensitive_and_the_first_duplicate_wins() -> None:
    csp = parse_csp(["Script-Src 'self'; script-src *; DEFAULT-SRC 'NONE'"])
    assert not csp.allows("script-src", "*")
    assert csp.has("default-src") and csp.allows("script-src", "'SELF'")


def test_no_csp() -> None:
    csp = parse_csp([])
    assert not csp.present and csp.raw is None
    assert not parse_csp([" ; ;"]).present


# ----------------------------------------------------------------------- small headers


@pytest.mark.parametrize(("value", "applied"), [
    ("strict-origin-when-cross-origin", "strict-origin-when-cross-origin"),
    ("origin-when-cross-origin, strict-origin-when-cross-origin", "strict-origin-when-cross-origin"),
    ("no-referrer, some-future-policy", "no-referrer"),
    ("No-Referrer", "no-referrer"),
    ("unknown", None),
    (None, None),
])
def test_referrer_policy_last_recognised_token_wins(value: str | None, applied: str | None) -> None:
    assert parse_referrer_policy(value) == applied


def test_nosniff_reads_the_first_value() -> None:
    assert first_value("nosniff, foo") == "nosniff"
    assert first_value("foo, nosniff") == "foo"
    assert first_value(None) is None


# ----------------------------------------------------------------------- CORS


def _cors(status: int = 204, **headers: str) -> CorsResponse:
    named = {k.replace("_", "-").lower(): v for k, v in headers.items()}
    return CorsResponse("preflight", "http://svc/x", "/x", "https://a.example", "DELETE", {},
                        status, named)


def test_cors_ok_status_is_any_2xx() -> None:
    assert _cors(200).ok_status and _cors(204).ok_status and _cors(299).ok_status
    assert not _cors(300).ok_status and not _cors(400).ok_status


def test_cors_methods_match_case_sensitively_and_safelisted_pass() -> None:
    lower = _cors(access_control_allow_methods="get, delete")
    assert not lower.allows_method("DELETE", credentials=True)
    assert lower.allows_method("GET", credentials=True)  # safelisted, listed or not
    assert _cors(access_control_allow_methods="GET, DELETE").allows_method("DELETE", credentials=True)


def test_cors_wildcards_count_only_without_credentials() -> None:
    star = _cors(access_control_allow_methods="*", access_control_allow_headers="*")
    assert star.allows_method("DELETE", credentials=False)
    assert not star.allows_method("DELETE", credentials=True)
    assert star.allows_header("X-API-Key", credentials=False)
    assert not star.allows_header("X-API-Key", credentials=True)
    assert not star.allows_header("Authorization", credentials=False)


def test_cors_headers_match_case_insensitively() -> None:
    resp = _cors(access_control_allow_headers="idempotency-key, X-API-KEY")
    assert resp.allows_header("Idempotency-Key", credentials=True)
    assert resp.allows_header("x-api-key", credentials=True)
    assert not resp.allows_header("X-Signature", credentials=True)


@pytest.mark.parametrize(("raw", "parsed"), [("600", 600), ("0", 0), ("-1", None),
                                             ("10.5", None), ("abc", None)])
def test_cors_max_age_is_delta_seconds(raw: str, parsed: int | None) -> None:
    assert _cors(access_control_max_age=raw).max_age == parsed
    assert _cors().max_age is None


def test_cors_vary_is_a_list() -> None:
    assert _cors(vary="Accept-Encoding, Origin").vary == {"accept-encoding", "origin"}


def test_hostile_origins_derived_from_each_allowed_origin() -> None:
    found = {h.origin: (h.variant, h.derived_from) for h in hostile_origins(
        ["https://app.example.com", "http://localhost:3000"],
        ["suffix", "prefix", "scheme", "subdomain", "null"], ["https://evil.example.net"])}
    app = "https://app.example.com"
    assert found["https://app.example.com.opsready-attacker.example"] == ("suffix", app)
    assert found["https://opsready-attackerapp.example.com"] == ("prefix", app)
    assert found["http://app.example.com"] == ("scheme", app)
    assert found["https://opsready-attacker.app.example.com"] == ("subdomain", app)
    assert found["http://localhost.opsready-attacker.example:3000"][0] == "suffix"
    assert found["https://localhost:3000"][0] == "scheme"
    assert found["null"] == ("null", None)
    assert found["https://evil.example.net"] == ("configured", None)
    assert len(found) == 10


def test_hostile_origins_leave_out_allowed_ones_and_ip_subdomains() -> None:
    found = [h.origin for h in hostile_origins(
        ["https://app.example.com", "http://app.example.com", "http://127.0.0.1:8080"],
        ["scheme", "subdomain", "prefix"])]
    assert "http://app.example.com" not in found and "https://app.example.com" not in found
    assert "https://127.0.0.1:8080" in found
    assert not [o for o in found if "attacker" in o and "127.0.0.1" in o]
    assert hostile_origins(["https://app.example.com"], []) == []
