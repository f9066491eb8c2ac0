"""No secret reaches any output, in any encoding (unit level): DSN passwords, every encoding a
target may echo a secret in, redaction before truncation, lone surrogates, and no cookies.

The end-to-end run with canary secrets against reflecting servers is in
``test_hardening_canary.py``."""

from __future__ import annotations

import base64
import re
from urllib.parse import quote

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostile import HostileServer, Received, Reply, encodings_of, json_body
from opsready.evidence import REDACTED, Redactor

SECRET_CHARS = st.characters(min_codepoint=33, max_codepoint=126)


def test_a_dsn_registers_its_password_and_user_password() -> None:
    r = Redactor()
    r.add(["postgresql://relay:C4nary%2Fpw!@db-a:5432,db-b:5433/relay?sslmode=require"])
    # A server echoes the decoded password, not the DSN.
    assert "C4nary/pw!" not in r.text("password authentication failed: C4nary/pw!")
    assert "C4nary" not in r.text("FATAL: role relay:C4nary/pw! unknown")
    assert "C4nary" not in r.text("login relay:C4nary%2Fpw! refused")


def test_a_key_value_dsn_registers_its_password() -> None:
    r = Redactor()
    r.add(["host=db port=5432 user=relay password='s3cr et\\'x' dbname=relay"])
    assert "s3cr et'x" not in r.text("the server said: s3cr et'x")
    r.add(["host=db password=plainpw99 dbname=x"])
    assert r.text("echo plainpw99") == f"echo {REDACTED}"


@settings(max_examples=60, deadline=None)
@given(secret=st.text(alphabet=SECRET_CHARS, min_size=12, max_size=48),
       prefix=st.text(max_size=20), suffix=st.text(max_size=20))
def test_every_encoding_of_a_secret_is_removed(secret: str, prefix: str, suffix: str) -> None:
    r = Redactor()
    r.add([secret])
    for form in encodings_of(secret):
        shown = r.text(prefix + form + suffix)
        assert form not in shown, (form, shown)
        assert secret not in shown


# Pieces of text that the secret-shaped patterns match, or almost match.
_SHAPED = ["postgresql://", "user:", "pw", "@host", "password", "=", " ", "'", '"', ":",
           "Bearer ", "basic ", "token ", "x-api-key", "ghp_", "github_pat_", "xoxb-", "sk_live_",
           "whsec_", "AKIA", "eyJ", ".", "sha256=", "0123456789abcdef", "ABCDEFGHIJKLMNOP", "é"]


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(st.sampled_from(_SHAPED) | st.text(max_size=8), max_size=14))
def test_text_that_no_pattern_matches_is_left_as_every_substitution_would_leave_it(
        parts: list[str]) -> None:
    """The shortcut for text that no secret-shaped pattern matches gives what applying every
    pattern in turn gives."""
    from opsready.evidence import _PATTERNS

    text = "".join(parts)
    expected = text
    for pattern, repl in _PATTERNS:
        expected = pattern.sub(repl, expected)
    assert Redactor().text(text) == expected


@pytest.mark.parametrize("align", [0, 1, 2])
def test_base64_of_a_bearer_header_at_every_alignment(align: int) -> None:
    token = "ghs_CANARY0123456789abcdefghijKLMN"
    r = Redactor()
    r.add([token])
    before = "x" * align + "Authorization: Bearer "
    header = (before + token + "\r\n").encode()
    # The characters of the encoding that carry the token's bits only.
    first, last = -(-8 * len(before) // 6), 8 * (len(before) + len(token)) // 6
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        encoded = encode(header).decode()
        shown = r.text(f"reflected: {encoded}")
        carried = encoded[first:last]
        assert not any(carried[i:i + 8] in shown for i in range(len(carried) - 8)), shown


def test_url_encoding_applied_several_times_and_lower_case_escapes() -> None:
    secret = "CANARY/key+with=odd&chars"
    r = Redactor()
    r.add([secret])
    text = secret
    for _ in range(3):
        text = quote(text, safe="")
        assert "CANARY" not in r.text(f"?next={text}"), text
        lower = re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), text)
        assert "CANARY" not in r.text(lower), lower


def test_hex_upper_and_lower() -> None:
    secret = "adm_CANARY_4f9b2c"
    r = Redactor()
    r.add([secret])
    raw = secret.encode()
    assert raw.hex() not in r.text("dump " + raw.hex())
    assert raw.hex().upper() not in r.text("DUMP " + raw.hex().upper())


@given(cut=st.integers(min_value=0, max_value=80), limit=st.integers(min_value=20, max_value=120))
def test_redaction_comes_before_the_cut(cut: int, limit: int) -> None:
    """Whatever the cut, not even a prefix of the secret survives (cutting first left 8 of the
    admin key's characters)."""
    secret = "adm_CANARYa1b2c3d4e5f6"
    r = Redactor()
    r.add([secret])
    shown = r.excerpt("x" * cut + secret + " tail" * 20, limit)
    assert len(shown) <= limit
    assert not any(secret[:n] in shown for n in range(4, len(secret) + 1)), shown


def test_lone_surrogates_become_replacement_characters() -> None:
    r = Redactor()
    shown = r.text("a\ud800b\udfffc")
    assert shown == "a\ufffdb\ufffdc"
    shown.encode("utf-8")
    assert r.value({"k\udc80": ["\ud83d"]}) == {"k\ufffd": ["\ufffd"]}


def test_http_messages_are_redacted_before_they_are_cut() -> None:
    """A 500 page quoting the key just past the excerpt's end leaves no prefix in the message."""
    from opsready.evidence import redactor
    from opsready.probes._http import HttpTarget

    key = "adm_CANARYmsgcut0123456789"
    redactor.add([key])
    body = "e" * 190 + key
    target = HttpTarget("service", "http://svc.test", timeout=2,
                        transport=httpx.MockTransport(lambda r: httpx.Response(500, text=body)))
    with pytest.raises(Exception) as info:
        target.get_json("/x")
    assert not any(key[:n] in str(info.value) for n in range(4, len(key))), str(info.value)


def _cookie_setter(got: Received) -> Reply:
    return Reply(200, {"Set-Cookie": "session=CANARYcookie; Path=/", "Content-Type": "application/json"},
                 json_body({"status": "success",
                            "data": {"resultType": "vector", "result": [], "groups": []}}))


def test_probes_keep_no_cookies() -> None:
    from opsready.probes._http import HttpTarget

    with HostileServer(_cookie_setter) as server, HttpTarget("service", server.url, timeout=5) as target:
        target.request("GET", "/one")
        target.request("GET", "/two")
    assert [r.path for r in server.received] == ["/one", "/two"]
    assert all("cookie" not in {k.lower() for k in r.headers} for r in server.received)


def test_the_promql_client_keeps_no_cookies() -> None:
    from opsready.config import PrometheusConfig
    from opsready.probes.prometheus import PrometheusProbe

    with HostileServer(_cookie_setter) as server:
        probe = PrometheusProbe(PrometheusConfig(url=server.url), timeout=5)
        try:
            assert probe.query("up") == []
            assert probe.query("up") == []
            probe.rules()
        finally:
            probe.close()
    assert len(server.received) == 3
    assert all("cookie" not in {k.lower() for k in r.headers} for r in server.received)
