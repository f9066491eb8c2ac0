"""How a 429 says when to come back: Retry-After (RFC 9110 §10.2.3), or the IETF RateLimit
fields of draft-ietf-httpapi-ratelimit-headers in each revision's syntax, read through a
Structured Fields parser (RFC 9651). The parser is checked against values written by a
serializer of the RFC's rules; the rate-limit criterion is called directly with a service on
a mocked transport: it fails under each fault, passes under each legitimate variant, and is
not judged where the service cannot be reached. The stack shows the current syntax end to
end (the fault matrix's ``ratelimit-fields`` variant)."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import load_check, refusing_transport
from opsready._errors import ProbeError
from opsready.config import RateLimitConfig, ServiceConfig
from opsready.evidence import Evidence
from opsready.probes.http import ServiceProbe
from opsready.probes.http_headers import parse_ratelimit
from opsready.probes.structured_fields import SfError, Token, parse_dictionary, parse_list

EDGE = load_check("test_p0_001_edge")


# ---- Structured Fields: written by the RFC's serializing rules, read back ---------------------

KEYS = st.from_regex(r"[a-z*][a-z0-9_\-.*]{0,6}", fullmatch=True)
BARE = st.one_of(
    st.integers(-999_999_999_999_999, 999_999_999_999_999),
    st.decimals(min_value=-999_999_999_999, max_value=999_999_999_999, places=3,
                allow_nan=False, allow_infinity=False),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12),
    st.from_regex(r"[A-Za-z*][A-Za-z0-9!#$%&'*+\-.^_`|~:/]{0,8}", fullmatch=True).map(Token),
    st.binary(max_size=12),
    st.booleans(),
)


def _bare(value: Any) -> str:
    if isinstance(value, bool):
        return "?1" if value else "?0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Token):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bytes):
        return ":" + base64.b64encode(value).decode() + ":"
    text = format(value, "f")
    whole, _, frac = text.partition(".")
    return f"{whole}.{(frac or '0').rstrip('0') or '0'}"


def _params(params: dict[str, Any]) -> str:
    return "".join(f";{k}" if v is True else f";{k}={_bare(v)}" for k, v in params.items())


def _expected(value: Any) -> Any:
    """What the parser gives back for ``value``: a Decimal comes back as a float."""
    return float(value) if not isinstance(value, bool | int | str | bytes) else value


ITEMS = st.tuples(BARE, st.dictionaries(KEYS, BARE, max_size=3))


@settings(max_examples=200, deadline=None)
@given(members=st.lists(ITEMS, max_size=5), spaces=st.sampled_from([",", ", ", " ,\t", ",  "]))
def test_a_list_written_by_the_rfc_rules_reads_back(members: list[tuple[Any, dict[str, Any]]],
                                                    spaces: str) -> None:
    text = spaces.join(_bare(v) + _params(p) for v, p in members)
    parsed = parse_list(text)
    assert [(v, {k: x for k, x in p.items()}) for v, p in parsed] == \
        [(_expected(v), {k: _expected(x) for k, x in p.items()}) for v, p in members]
    assert [type(v) is Token for v, _ in parsed] == [type(v) is Token for v, _ in members]


@settings(max_examples=200, deadline=None)
@given(members=st.dictionaries(KEYS, ITEMS, max_size=5))
def test_a_dictionary_written_by_the_rfc_rules_reads_back(
        members: dict[str, tuple[Any, dict[str, Any]]]) -> None:
    text = ", ".join(f"{k}{_params(p)}" if v is True else f"{k}={_bare(v)}{_params(p)}"
                     for k, (v, p) in members.items())
    parsed = parse_dictionary(text)
    assert {k: (v, dict(p)) for k, (v, p) in parsed.items()} == \
        {k: (_expected(v), {pk: _expected(x) for pk, x in p.items()}) for k, (v, p) in members.items()}


@pytest.mark.parametrize("text", [
    '"a",', '"a" "b"', "1.2345", "1234567890123456", '"unterminated', '"bad \\x escape"',
    "?2", ":not base64!:", "a=1", "é", "(1 2", "1.", "-", "@1.5",
])
def test_malformed_lists_are_refused_whole(text: str) -> None:
    with pytest.raises(SfError):
        parse_list(text)


def test_inner_lists_dates_and_display_strings() -> None:
    assert parse_list('("a" "b");q=1, @1659578233, %"caf%c3%a9"') == [
        ([("a", {}), ("b", {})], {"q": 1}), (parse_list("@1659578233")[0][0], {}), ("café", {})]


# ---- the IETF RateLimit fields ----------------------------------------------------------------


@pytest.mark.parametrize(("headers", "syntax", "wait"), [
    ({"ratelimit": '"default";r=0;t=30'}, "draft-08", 30),
    ({"ratelimit": 'default;r=0;t=30'}, "draft-08", 30),
    ({"ratelimit": '"burst"; r=5; t=1, "daily";r=0;t=3600'}, "draft-08", 3600),
    ({"ratelimit": '"default";r=0;t=30', "ratelimit-policy": '"default";q=100;w=60'}, "draft-08", 30),
    ({"ratelimit": "limit=100, remaining=0, reset=30"}, "draft-07", 30),
    ({"ratelimit-limit": "100", "ratelimit-remaining": "0", "ratelimit-reset": "7"}, "draft-06", 7),
])
def test_ratelimit_fields_that_say_when_to_come_back(headers: dict[str, str], syntax: str,
                                                     wait: int) -> None:
    fields = parse_ratelimit(headers)
    assert fields is not None and fields.problem is None and syntax in (fields.syntax or "")
    assert fields.wait_s == wait


@pytest.mark.parametrize(("headers", "why"), [
    ({"ratelimit": '"default";r=3;t=30'}, None),  # quota left: not a "wait"
    ({"ratelimit": '"default";r=0'}, None),  # no window
    ({"ratelimit": "limit=100, reset=30"}, None),  # draft-07 without remaining
    ({"ratelimit": '"default";t=30'}, "no non-negative integer r"),
    ({"ratelimit": '"default";r=0;t=-1'}, "not a non-negative integer"),
    ({"ratelimit": '"default";r=0;t=1.5'}, "not a non-negative integer"),
    ({"ratelimit": '"default";r=?0;t=30'}, "no non-negative integer r"),
    ({"ratelimit": "30"}, "not a policy name"),
    ({"ratelimit": "limit=100, remaining=0"}, "reset"),
    ({"ratelimit": "{{garbage"}, "neither a structured list nor a dictionary"),
    ({"ratelimit-remaining": "0", "ratelimit-reset": "1765000000"}, "epoch time"),
    ({"ratelimit-remaining": "0", "ratelimit-reset": "soon"}, "integers"),
])
def test_ratelimit_fields_that_do_not(headers: dict[str, str], why: str | None) -> None:
    fields = parse_ratelimit(headers)
    assert fields is not None and fields.wait_s is None
    assert fields.problem == why if why is None else why in (fields.problem or "")


def test_vendor_fields_are_not_ratelimit_fields() -> None:
    assert parse_ratelimit({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "30"}) is None


# ---- the criterion ------------------------------------------------------------------------------


def _limited(headers: dict[str, str], after: int = 3) -> ServiceProbe:
    """A service that answers 200 to the first ``after`` requests and then 429 with
    ``headers``."""
    seen = [0]

    def handler(request: httpx.Request) -> httpx.Response:
        seen[0] += 1
        if seen[0] <= after:
            return httpx.Response(200, json={"ok": True})
        return httpx.Response(429, headers=headers, json={"error": "rate limit exceeded"})

    cfg = ServiceConfig(base_url="http://svc.test", rate_limit=RateLimitConfig(
        path="/api/v1/actions", max_requests=50, concurrency=1))
    return ServiceProbe(cfg, timeout=2, transport=httpx.MockTransport(handler))


def _judge(service: ServiceProbe) -> Evidence:
    evidence = Evidence()
    EDGE.test_rate_limit_burst(service, evidence)
    return evidence


def _recorded(evidence: Evidence, name: str) -> Any:
    return next(i for i in evidence.items if i.name == name).value


@pytest.mark.parametrize("headers", [
    {"RateLimit": '"workspace";r=0;t=12', "RateLimit-Policy": '"workspace";q=20;w=60'},
    {"RateLimit": "limit=20, remaining=0, reset=12"},
    {"RateLimit-Limit": "20", "RateLimit-Remaining": "0", "RateLimit-Reset": "12"},
])
def test_a_429_with_ratelimit_fields_instead_of_retry_after_is_done(headers: dict[str, str]) -> None:
    evidence = _judge(_limited(headers))
    assert "asks clients to wait 12s instead" in _recorded(evidence, "retry_after")
    assert _recorded(evidence, "burst")["ratelimit_fields"]["wait_s"] == 12


def test_retry_after_decides_where_both_are_sent() -> None:
    with pytest.raises(AssertionError, match="Retry-After '0' is below the minimum"):
        _judge(_limited({"Retry-After": "0", "RateLimit": '"workspace";r=0;t=12'}))


@pytest.mark.parametrize(("headers", "quoted"), [
    ({}, "carried no Retry-After;"),
    ({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "12"}, "carried no Retry-After;"),
    ({"RateLimit": '"workspace";r=4;t=12'}, "no limit with no quota left has a window"),
    ({"RateLimit": '"workspace";r=0;t=1.5'}, "not a non-negative integer"),
])
def test_a_429_that_does_not_say_when_to_come_back_is_open(headers: dict[str, str],
                                                           quoted: str) -> None:
    with pytest.raises(AssertionError, match="carried no Retry-After") as failed:
        _judge(_limited(headers))
    assert quoted in str(failed.value)


def test_a_ratelimit_window_below_the_minimum_is_open() -> None:
    with pytest.raises(AssertionError, match=r"leaves no quota for 0s, below the minimum of 1s"):
        _judge(_limited({"RateLimit": '"workspace";r=0;t=0'}))


def test_an_unreachable_service_is_not_judged() -> None:
    cfg = ServiceConfig(base_url="http://svc.test",
                        rate_limit=RateLimitConfig(path="/api/v1/actions", max_requests=5))
    with pytest.raises(ProbeError):
        _judge(ServiceProbe(cfg, timeout=2, transport=refusing_transport()))
