"""A small HTTP client shared by the HTTP-speaking probes.

It maps transport failures onto the ``ProbeError`` hierarchy, so that a probe never lets an
``httpx`` exception escape, and it redacts the URL in every message.
"""

from __future__ import annotations

import functools
import json
import ssl
from typing import Any

import httpx

from opsready._errors import AccessRefused, ProbeTimeout, TargetUnreachable, UnexpectedResponse
from opsready.evidence import redactor

__all__ = ["HttpTarget"]

USER_AGENT = "opsready/0.1 (ops-readiness verification)"


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
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.client = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            headers={"User-Agent": USER_AGENT, **(headers or {})},
            transport=transport,
            follow_redirects=follow_redirects,
            verify=_tls_context(),
        )

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> HttpTarget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send one request. Transport failures become ``TargetUnreachable``/``ProbeTimeout``."""
        shown = redactor.text(f"{method} {self.base_url}{url}" if url.startswith("/") else f"{method} {url}")
        try:
            return self.client.request(method, url, **kwargs)
        except httpx.TimeoutException:
            raise ProbeTimeout(
                f"{self.name}: {shown} did not answer within {self.timeout:g}s; "
                f"check that the {self.name} is up, or raise its timeout"
            ) from None
        except (httpx.TransportError, OSError) as exc:
            raise TargetUnreachable(
                f"{self.name}: {shown} could not be reached ({type(exc).__name__}: "
                f"{redactor.text(str(exc)) or 'no detail'}); check the URL in the environment "
                f"config and that the {self.name} is running"
            ) from None

    def get_json(self, url: str, *, params: Any = None, ok: tuple[int, ...] = (200,),
                 headers: dict[str, str] | None = None) -> Any:
        """GET and decode JSON. 401/403 raise ``AccessRefused``; other statuses outside ``ok``
        raise ``UnexpectedResponse``."""
        resp = self.request("GET", url, params=params, headers=headers)
        return self.decode(resp, ok=ok)

    def decode(self, resp: httpx.Response, *, ok: tuple[int, ...] = (200,)) -> Any:
        shown = redactor.text(f"{resp.request.method} {resp.request.url}")
        if resp.status_code in (401, 403) and resp.status_code not in ok:
            raise AccessRefused(
                f"{self.name}: {shown} answered {resp.status_code}; the configured credentials "
                f"were refused, check the token and its scopes"
            )
        if resp.status_code not in ok:
            raise UnexpectedResponse(
                f"{self.name}: {shown} answered {resp.status_code} "
                f"({redactor.text(resp.text[:200])!r}), expected {'/'.join(map(str, ok))}"
            )
        try:
            return resp.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UnexpectedResponse(
                f"{self.name}: {shown} did not return JSON "
                f"(content-type {resp.headers.get('content-type', 'none')!r})"
            ) from None
