"""A small HTTP client shared by the HTTP-speaking probes.

It is the one place that turns what an HTTP target does into the ``ProbeError`` hierarchy:

- transport failures become ``TargetUnreachable`` / ``ProbeTimeout``, so no ``httpx``
  exception escapes a probe;
- every response is streamed and read up to the body limit (``set_body_limit``, from the
  environment's ``body_limit_bytes``); a larger body is ``BodyTooLarge``, which states the size;
- a response that takes longer than its timeout to arrive in full (a server that drips its
  body) is ``ProbeTimeout``: one request never takes more than twice its timeout;
- 502, 503 and 504 are ``GatewayAnswer``: an answer from whatever stands in front of the
  target, which says nothing of a property of the target's response (its headers, its CORS
  policy, its metrics). A criterion about availability itself, or an API whose own error
  envelope says what a 503 means (Prometheus), passes ``gateway_as_data=True`` and receives
  them as data;
- ``decode`` maps 401/403 to ``AccessRefused`` and any other unexpected status to
  ``UnexpectedResponse``.

Probes keep no cookies: a target that sets one never gets it back. Every message is redacted
before it is shortened.
"""

from __future__ import annotations

import functools
import http.cookiejar
import json
import ssl
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx

from opsready._errors import AccessRefused, ProbeError, ProbeTimeout, TargetUnreachable, UnexpectedResponse
from opsready.evidence import redactor

if TYPE_CHECKING:
    import requests

__all__ = [
    "DEFAULT_BODY_LIMIT",
    "GATEWAY_STATUSES",
    "BodyTooLarge",
    "GatewayAnswer",
    "HttpTarget",
    "body_limit",
    "describe_size",
    "no_cookie_policy",
    "no_cookies",
    "requests_body_limit",
    "set_body_limit",
    "status_error",
]

USER_AGENT = "opsready/0.1 (ops-readiness verification)"
DEFAULT_BODY_LIMIT = 16 * 1024 * 1024
GATEWAY_STATUSES = (502, 503, 504)
# RFC 9110's safe methods: sent again after a connection dropped without an answer.
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
_CHUNK = 64 * 1024
# How much of an unexpected body a message quotes.
_EXCERPT = 200

_limit_lock = threading.Lock()
_body_limit = DEFAULT_BODY_LIMIT


class BodyTooLarge(UnexpectedResponse):
    """A response body larger than the body limit; it was not read beyond the limit."""


class GatewayAnswer(UnexpectedResponse):
    """502, 503 or 504: a gateway (or an overloaded target) answered instead of the target."""


def set_body_limit(limit: int) -> None:
    """The body limit of every probe in this process (the run sets it from the environment)."""
    global _body_limit
    if limit < 1:
        raise ValueError("the body limit must be at least 1 byte")
    with _limit_lock:
        _body_limit = int(limit)


def body_limit() -> int:
    with _limit_lock:
        return _body_limit


def describe_size(size: int) -> str:
    """``16 MiB``, ``1.5 GiB``, ``512 bytes``."""
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor:
            return f"{size / factor:.4g} {unit}"
    return f"{size} bytes"


def no_cookie_policy() -> http.cookiejar.CookiePolicy:
    """A cookie policy that accepts no cookie from any domain."""
    return http.cookiejar.DefaultCookiePolicy(allowed_domains=[])


def no_cookies() -> http.cookiejar.CookieJar:
    """A cookie jar that stores nothing: a target's ``Set-Cookie`` is never sent back."""
    return http.cookiejar.CookieJar(policy=no_cookie_policy())


def status_error(name: str, shown: str, status: int, body: str | bytes, ok: tuple[int, ...]) -> ProbeError:
    """The ``ProbeError`` an unexpected status deserves (the one mapping of HTTP statuses)."""
    if status in (401, 403):
        return AccessRefused(
            f"{name}: {shown} answered {status}; the configured credentials were refused, check "
            f"the token and its scopes"
        )
    excerpt = redactor.excerpt(body, _EXCERPT)
    if status in GATEWAY_STATUSES:
        return GatewayAnswer(
            f"{name}: {shown} answered {status} ({excerpt!r}), a gateway or overload answer that "
            f"says nothing of what is being judged; run again when the {name} answers itself"
        )
    return UnexpectedResponse(
        f"{name}: {shown} answered {status} ({excerpt!r}), expected {'/'.join(map(str, ok))}"
    )


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's own default context, made once for every client of the run: loading the trust
    store costs tens of milliseconds per client, and the settings are the same for all."""
    return httpx.create_ssl_context()


class HttpTarget:
    """One HTTP endpoint family (a base URL), with a timeout on every call.

    ``name`` is used in messages, e.g. ``prometheus``, ``github``.
    """

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        timeout: float,
        headers: dict[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        follow_redirects: bool = False,
        max_body: int | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_body = max_body
        self.client = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            headers={"User-Agent": USER_AGENT, **(headers or {})},
            transport=transport,
            follow_redirects=follow_redirects,
            cookies=no_cookies(),
            event_hooks={"response": [self._bound_redirect_body]},
            verify=_tls_context(),
        )

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> HttpTarget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _bound_redirect_body(self, resp: httpx.Response) -> None:
        # httpx reads the body of every redirect it follows; read it here, within the limit.
        if resp.has_redirect_location and self.client.follow_redirects:
            limit = self.max_body if self.max_body is not None else body_limit()
            shown = self._shown(resp.request.method, str(resp.request.url))
            _read_bounded(resp, limit, time.monotonic() + self.timeout, self.name, shown)

    def _shown(self, method: str, url: str) -> str:
        return redactor.text(f"{method} {self.base_url}{url}" if url.startswith("/") else f"{method} {url}")

    def request(self, method: str, url: str, *, gateway_as_data: bool = False,
                **kwargs: Any) -> httpx.Response:
        """Send one request and read its body, bounded in size and time.

        Transport failures become ``TargetUnreachable``/``ProbeTimeout``; a body over the limit
        ``BodyTooLarge``; 502/503/504 ``GatewayAnswer`` unless ``gateway_as_data`` (the criterion
        judges whether the target answers at all, so such an answer is its finding, or the
        caller reads the target's own error envelope)."""
        shown = self._shown(method, url)
        timeout = kwargs.get("timeout")
        seconds = float(timeout) if isinstance(timeout, int | float) else self.timeout
        limit = self.max_body if self.max_body is not None else body_limit()
        begun = time.monotonic()
        try:
            resp = self._send(method, url, begun + seconds, **kwargs)
            try:
                _read_bounded(resp, limit, begun + seconds, self.name, shown)
            finally:
                resp.close()
        except httpx.TimeoutException:
            raise ProbeTimeout(
                f"{self.name}: {shown} did not answer within {seconds:g}s; "
                f"check that the {self.name} is up, or raise its timeout"
            ) from None
        except httpx.DecodingError:
            raise UnexpectedResponse(
                f"{self.name}: {shown} sent a body that cannot be decoded as its Content-Encoding says"
            ) from None
        except (httpx.TransportError, OSError) as exc:
            raise TargetUnreachable(
                f"{self.name}: {shown} could not be reached ({type(exc).__name__}: "
                f"{redactor.excerpt(str(exc), _EXCERPT) or 'no detail'}); check the URL in the "
                f"environment config and that the {self.name} is running"
            ) from None
        if resp.status_code in GATEWAY_STATUSES and not gateway_as_data:
            raise status_error(self.name, shown, resp.status_code, resp.content, (200,))
        return resp

    def _send(self, method: str, url: str, deadline: float, **kwargs: Any) -> httpx.Response:
        """Send and return the streamed response. A kept-alive connection that the server
        closes just as it is reused ("Server disconnected without sending a response") is a
        race, not an answer: a safe request is sent once more, on a new connection, within its
        time. A server that drops every request still fails."""
        try:
            return self.client.send(self.client.build_request(method, url, **kwargs), stream=True)
        except httpx.RemoteProtocolError:
            if method not in _SAFE or time.monotonic() >= deadline:
                raise
        return self.client.send(self.client.build_request(method, url, **kwargs), stream=True)

    def get_json(self, url: str, *, params: Any = None, ok: tuple[int, ...] = (200,),
                 headers: dict[str, str] | None = None) -> Any:
        """GET and decode JSON. 401/403 raise ``AccessRefused``; other statuses outside ``ok``
        raise ``UnexpectedResponse``. A gateway status listed in ``ok`` is data."""
        resp = self.request("GET", url, params=params, headers=headers,
                            gateway_as_data=any(s in GATEWAY_STATUSES for s in ok))
        return self.decode(resp, ok=ok)

    def decode(self, resp: httpx.Response, *, ok: tuple[int, ...] = (200,)) -> Any:
        shown = redactor.text(f"{resp.request.method} {resp.request.url}")
        if resp.status_code not in ok:
            raise status_error(self.name, shown, resp.status_code, resp.content, ok)
        try:
            return resp.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UnexpectedResponse(
                f"{self.name}: {shown} did not return JSON "
                f"(content-type {redactor.excerpt(resp.headers.get('content-type', 'none'), 80)!r})"
            ) from None


def _read_bounded(resp: httpx.Response, limit: int, deadline: float, name: str, shown: str) -> None:
    """Read a streamed response's body into it, at most ``limit`` decoded bytes, until
    ``deadline`` (monotonic seconds)."""
    declared = _content_length(resp.headers.get("content-length"))
    if declared is not None and declared > limit:
        raise BodyTooLarge(
            f"{name}: {shown} announced a body of {describe_size(declared)} (Content-Length "
            f"{declared}), over the body limit of {describe_size(limit)}; it was not read. Raise "
            f"body_limit_bytes in the environment if such a body is expected"
        )
    chunks: list[bytes] = []
    size = 0
    for chunk in resp.iter_bytes():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(
                f"{name}: {shown} sent a body of more than {describe_size(limit)} (read "
                f"{size} bytes before stopping), over the body limit of {describe_size(limit)}; "
                f"raise body_limit_bytes in the environment if such a body is expected"
            )
        chunks.append(chunk)
        if time.monotonic() > deadline:
            raise ProbeTimeout(
                f"{name}: {shown} was still sending its body after {describe_size(size)} when its "
                f"time ran out; a target that drips its answer cannot be judged"
            )
    # The body as read: ``.content``, ``.text`` and ``.json()`` use it.
    resp._content = b"".join(chunks)


def _content_length(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def requests_body_limit() -> Callable[..., requests.Response]:
    """A ``requests`` response hook that reads the body within the body limit (for clients
    built on ``requests``, such as ``prometheus-api-client``). Hooks run before ``requests``
    reads the body itself, so a larger body is never held in memory."""

    def hook(resp: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
        limit = body_limit()
        shown = redactor.text(f"{resp.request.method} {resp.url}")
        declared = _content_length(resp.headers.get("content-length"))
        if declared is not None and declared > limit:
            resp.close()
            raise BodyTooLarge(f"{shown} announced a body of {describe_size(declared)}, over the body "
                               f"limit of {describe_size(limit)}; raise body_limit_bytes if it is expected")
        chunks: list[bytes] = []
        size = 0
        for chunk in resp.iter_content(_CHUNK):
            size += len(chunk)
            if size > limit:
                resp.close()
                raise BodyTooLarge(f"{shown} sent more than {describe_size(limit)}, over the body "
                                   f"limit; raise body_limit_bytes if such a body is expected")
            chunks.append(chunk)
        resp._content = b"".join(chunks)
        return resp

    return hook
