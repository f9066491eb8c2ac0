"""Readiness as Prometheus metrics: ``readiness.prom`` and the Pushgateway push.

Every series carries an ``env`` label (the run's environment). The families:

``opsready_ticket_status{env,ticket,priority,status}``
    A state set: one series per ticket *and* per status (done, open, unverified, waived);
    the series of the ticket's current status is 1, the others are 0. Every ticket always
    has all of its series, so a status change never makes a series vanish from a graph,
    and ``opsready_ticket_status{status="done"} == 0`` selects the tickets not done.
``opsready_tickets{env,status}``
    How many tickets have each status.
``opsready_gate_passed{env}``
    1 when the run's gate passed, else 0.
``opsready_run_timestamp_seconds{env}``
    When the run finished, in Unix seconds.
``opsready_restore_rto_seconds{env}``
    The restore time measured by the P1-002 drill; only present when a drill ran.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

from opsready._errors import AccessRefused, TargetUnreachable, UnexpectedResponse
from opsready.evidence import redactor
from opsready.probes._http import HttpTarget

__all__ = ["STATUSES", "push", "render_prom"]

STATUSES: tuple[str, ...] = ("done", "open", "unverified", "waived")

# Where the restore drill records its measured RTO (see the P1-002 check).
RTO_TICKET = "P1-002"
RTO_EVIDENCE = "rto_seconds"

_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class _Family:
    def __init__(self, name: str, help_text: str) -> None:
        self.name = name
        self.help_text = help_text
        self.samples: list[tuple[dict[str, str], float]] = []

    def add(self, labels: Mapping[str, str], value: float) -> None:
        self.samples.append((dict(labels), value))

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} gauge"]
        for labels, value in self.samples:
            shown = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
            lines.append(f"{self.name}{{{shown}}} {_number(value)}")
        return lines


def _timestamp(run: Mapping[str, Any]) -> float | None:
    for key in ("finished_at", "started_at"):
        raw = run.get(key)
        if not isinstance(raw, str) or not raw:
            continue
        try:
            when = datetime.fromisoformat(raw)
        except ValueError:
            continue
        # A naive timestamp in a report is UTC (the run directories are named in UTC).
        if when.tzinfo is None:
            return (when - datetime(1970, 1, 1)).total_seconds()
        return when.timestamp()
    return None


def _measured_rto(tickets: Iterable[Mapping[str, Any]]) -> float | None:
    for ticket in tickets:
        if ticket.get("id") != RTO_TICKET:
            continue
        for criterion in ticket.get("criteria") or []:
            for item in criterion.get("evidence") or []:
                if (
                    isinstance(item, Mapping)
                    and item.get("name") == RTO_EVIDENCE
                    and item.get("kind", "value") == "value"
                ):
                    value = item.get("value")
                    # bool is an int; a True is not a measured duration.
                    if isinstance(value, int | float) and not isinstance(value, bool):
                        return float(value)
    return None


def render_prom(readiness: Mapping[str, Any]) -> str:
    """Render a readiness model (schema ``opsready.readiness/v1``) in the Prometheus text format.

    The text passes ``promtool check metrics``; see the module docstring for the families.
    """
    run: Mapping[str, Any] = readiness.get("run") or {}
    env = str(run.get("environment") or "")
    tickets: list[Mapping[str, Any]] = list(readiness.get("tickets") or [])

    statuses = list(STATUSES)
    for ticket in tickets:
        status = str(ticket.get("status", ""))
        if status and status not in statuses:
            statuses.append(status)

    status_family = _Family(
        "opsready_ticket_status",
        "Readiness of each audit ticket: 1 for the ticket's current status, 0 for the others.",
    )
    for ticket in tickets:
        current = str(ticket.get("status", ""))
        for status in statuses:
            status_family.add(
                {
                    "env": env,
                    "ticket": str(ticket.get("id", "")),
                    "priority": str(ticket.get("priority", "")),
                    "status": status,
                },
                1.0 if status == current else 0.0,
            )

    counts: Mapping[str, Any] = readiness.get("counts") or {}
    count_family = _Family("opsready_tickets", "Number of audit tickets with each status.")
    for status in statuses:
        raw = counts.get(status)
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            value = float(raw)
        else:
            value = float(sum(1 for t in tickets if t.get("status") == status))
        count_family.add({"env": env, "status": status}, value)

    families = [status_family, count_family]

    gate: Mapping[str, Any] = readiness.get("gate") or {}
    if isinstance(gate.get("passed"), bool):
        gate_family = _Family(
            "opsready_gate_passed", "1 when the readiness gate of the run passed, 0 when it failed."
        )
        gate_family.add({"env": env}, 1.0 if gate["passed"] else 0.0)
        families.append(gate_family)

    when = _timestamp(run)
    if when is not None:
        ts_family = _Family(
            "opsready_run_timestamp_seconds", "When the opsready run finished, in Unix seconds."
        )
        ts_family.add({"env": env}, when)
        families.append(ts_family)

    rto = _measured_rto(tickets)
    if rto is not None:
        rto_family = _Family(
            "opsready_restore_rto_seconds",
            "Restore time measured by the restore drill, from backup download to verified restore.",
        )
        rto_family.add({"env": env}, rto)
        families.append(rto_family)

    lines: list[str] = []
    for family in families:
        lines.extend(family.render())
    return "\n".join(lines) + "\n"


def _path_segment(label: str, value: str) -> str:
    """A Pushgateway grouping-key segment; values with ``/`` (or empty) go base64-encoded."""
    if not value or "/" in value:
        encoded = base64.urlsafe_b64encode(value.encode()).decode() or "="
        return f"{label}@base64/{encoded}"
    return f"{label}/{quote(value, safe='')}"


def push(
    url: str,
    text: str,
    job: str = "opsready",
    instance: str | None = None,
    timeout: float = 10.0,
) -> None:
    """PUT ``text`` to a Pushgateway at ``url`` under ``/metrics/job/<job>[/instance/<x>]``.

    PUT replaces every metric of that group, so the gateway always holds the latest run.
    Raises ``TargetUnreachable``, ``ProbeTimeout``, ``AccessRefused`` or
    ``UnexpectedResponse`` (all ``ProbeError``) when the push does not go through.
    """
    base = url.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise TargetUnreachable(
            f"pushgateway: {redactor.text(url)!r} is not an http:// or https:// URL; "
            f"pass --pushgateway http://HOST:9091"
        )
    path = "/metrics/" + _path_segment("job", job)
    if instance is not None:
        path += "/" + _path_segment("instance", instance)
    with HttpTarget("pushgateway", base, timeout=timeout) as target:
        resp = target.request(
            "PUT", path, content=text.encode("utf-8"), headers={"Content-Type": _CONTENT_TYPE}
        )
    if resp.status_code in (200, 202):
        return
    shown = redactor.text(f"PUT {base}{path}")
    if resp.status_code in (401, 403):
        raise AccessRefused(
            f"pushgateway: {shown} answered {resp.status_code}; the gateway refused the push, "
            f"check its credentials or the proxy in front of it"
        )
    raise UnexpectedResponse(
        f"pushgateway: {shown} answered {resp.status_code} "
        f"({redactor.text(resp.text[:200].strip())!r}), expected 200; check that the URL "
        f"points at a Prometheus Pushgateway"
    )
