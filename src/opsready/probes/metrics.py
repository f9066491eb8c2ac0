"""The service's metrics endpoint: one GET of ``service.metrics_path``, parsed in the
exposition format the endpoint really serves.

The request asks for what Prometheus asks for (OpenMetrics first, the Prometheus text format
as fallback), and the answer's ``Content-Type`` picks the parser: prometheus_client's
OpenMetrics parser for ``application/openmetrics-text``, its text parser for ``text/plain``.
Both name a counter family without ``_total`` and keep ``_total`` on its samples, so a
counter is judged by its family's type in either format.

A missing family is data (``None``). An endpoint that refuses us (401/403), answers anything
but 200, serves a format we cannot read, or text that does not parse raises a
``ProbeError``: the criterion could not be judged.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import httpx
from prometheus_client.metrics_core import Metric

from opsready._errors import AccessRefused, UnexpectedResponse
from opsready.config import ServiceConfig
from opsready.evidence import redactor
from opsready.probes._http import HttpTarget

__all__ = ["ACCEPT", "MetricsEndpoint", "MetricsSnapshot"]

# The Accept header of Prometheus' own scrapes: what the endpoint serves to Prometheus is
# what gets judged.
ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
          "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")

Format = Literal["openmetrics", "prometheus-text"]


@dataclass(frozen=True)
class MetricsSnapshot:
    """A parsed exposition: its families by name, the format it came in and its text."""

    families: dict[str, Metric]
    text: str
    format: Format = "prometheus-text"
    content_type: str = ""

    def family(self, name: str) -> Metric | None:
        """The family that exposes ``name``. Both parsers strip ``_total`` from counter
        families, so ``rate_limit_breaches_total`` is found as the ``rate_limit_breaches``
        family; a gauge keeps its full name."""
        found = self.families.get(name)
        if found is None and name.endswith("_total"):
            found = self.families.get(name.removesuffix("_total"))
        return found

    def samples(self, name: str) -> list[tuple[dict[str, str], float]]:
        """The samples named ``name`` (a counter's ``_total`` samples, a gauge's values)."""
        fam = self.family(name)
        if fam is None:
            return []
        return [(dict(s.labels), float(s.value)) for s in fam.samples if s.name == name]

    def total(self, name: str) -> float | None:
        """The sum over every sample named ``name``, or None when there is none."""
        values = [v for _, v in self.samples(name)]
        return sum(values) if values else None


class MetricsEndpoint:
    """``GET service.metrics_path``, with ``service.metrics_auth`` when configured.

    ``http`` shares an existing client (the service probe's); otherwise one is made for
    ``cfg.base_url`` with ``timeout``.
    """

    def __init__(self, cfg: ServiceConfig, timeout: float = 10.0, *,
                 http: HttpTarget | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.cfg = cfg
        self._own = http is None
        self.http = http or HttpTarget("service", cfg.base_url, timeout=timeout,
                                       transport=transport)

    @property
    def url(self) -> str:
        return f"{self.cfg.base_url}{self.cfg.metrics_path}"

    def close(self) -> None:
        if self._own:
            self.http.close()

    def read(self) -> MetricsSnapshot:
        """One scrape of the endpoint, parsed by its ``Content-Type``."""
        path = self.cfg.metrics_path
        resp = self.http.request("GET", path, headers={"Accept": ACCEPT, **self._auth()})
        shown = redactor.text(self.url)
        if resp.status_code in (401, 403):
            auth = self.cfg.metrics_auth
            fix = ("the configured service.metrics_auth was refused; check it" if auth else
                   "the endpoint needs credentials: set service.metrics_auth (bearer_token, or "
                   "username and password)")
            raise AccessRefused(f"service: GET {shown} answered {resp.status_code}; {fix}")
        if resp.status_code != 200:
            raise UnexpectedResponse(
                f"service: GET {shown} answered {resp.status_code}, expected 200 with a "
                f"Prometheus or OpenMetrics exposition; check service.metrics_path")
        content_type = resp.headers.get("content-type", "")
        fmt, parse = _parser(content_type, shown)
        try:
            families = {f.name: f for f in parse(resp.text)}
        except (ValueError, TypeError, IndexError, KeyError) as exc:
            raise UnexpectedResponse(
                f"service: {shown} is not a valid {fmt} exposition "
                f"(Content-Type {content_type or 'none'!r}: {exc})") from None
        return MetricsSnapshot(families, resp.text, fmt, content_type)

    def _auth(self) -> dict[str, str]:
        auth = self.cfg.metrics_auth
        if auth is None:
            return {}
        if auth.bearer_token is not None:
            return {"Authorization": f"Bearer {auth.bearer_token.get_secret_value()}"}
        if auth.username is not None and auth.password is not None:
            pair = f"{auth.username}:{auth.password.get_secret_value()}".encode()
            return {"Authorization": f"Basic {base64.b64encode(pair).decode()}"}
        return {}


def _parser(content_type: str, shown: str) -> tuple[Format, Callable[[str], Iterable[Metric]]]:
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/openmetrics-text":
        from prometheus_client.openmetrics.parser import text_string_to_metric_families as om

        return "openmetrics", om
    # No Content-Type at all: Prometheus reads such an answer as its text format too.
    if media in ("text/plain", ""):
        from prometheus_client.parser import text_string_to_metric_families as text

        return "prometheus-text", text
    raise UnexpectedResponse(
        f"service: {shown} answered Content-Type {content_type!r}, neither the Prometheus text "
        f"format (text/plain) nor OpenMetrics (application/openmetrics-text); serve one of them")
