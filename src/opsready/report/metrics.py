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
``opsready_run_complete{env}``
    1 when every selected criterion ran and every check module could be used; 0 for a
    partial run (interrupted, a crashed worker, a check module that does not import), whose
    statuses are true but not the whole picture.
``opsready_evidence_measure{env,ticket,criterion,name,unit}``
    Every number a criterion measured in this run (``evidence.measure``), such as the
    restore drill's RTO (``name="rto_seconds"``); absent when nothing was measured.
``opsready_carried_forward_timestamp_seconds{env,ticket,criterion}``
    For each criterion whose pass was carried forward from an earlier run, when that run
    started: ``time() - opsready_carried_forward_timestamp_seconds`` is the evidence's age.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from urllib.parse import quote

from opsready._errors import AccessRefused, TargetUnreachable, UnexpectedResponse
from opsready.evidence import redactor
from opsready.probes._http import HttpTarget
from opsready.report.model import STATUSES, Readiness

__all__ = ["push", "render_prom"]

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


def render_prom(readiness: Readiness) -> str:
    """Render a readiness model in the Prometheus text format.

    The text passes ``promtool check metrics``; see the module docstring for the families.
    """
    env = readiness.run.environment
    status_family = _Family(
        "opsready_ticket_status",
        "Readiness of each audit ticket: 1 for the ticket's current status, 0 for the others.",
    )
    for ticket in readiness.tickets:
        for status in STATUSES:
            status_family.add(
                {"env": env, "ticket": ticket.id, "priority": ticket.priority, "status": status},
                1.0 if status == ticket.status else 0.0,
            )

    count_family = _Family("opsready_tickets", "Number of audit tickets with each status.")
    counts = readiness.counts.model_dump()
    for status in STATUSES:
        count_family.add({"env": env, "status": status}, float(counts[status]))

    gate_family = _Family("opsready_gate_passed", "1 when the readiness gate of the run passed, 0 when it failed.")
    gate_family.add({"env": env}, 1.0 if readiness.gate.passed else 0.0)

    ts_family = _Family("opsready_run_timestamp_seconds", "When the opsready run finished, in Unix seconds.")
    ts_family.add({"env": env}, readiness.run.finished_at.timestamp())

    complete_family = _Family(
        "opsready_run_complete",
        "1 when every selected criterion ran and every check module could be used, 0 for a partial run.",
    )
    complete_family.add({"env": env}, 0.0 if readiness.gaps() else 1.0)

    measure_family = _Family(
        "opsready_evidence_measure",
        "A number a criterion measured in this run (e.g. the restore drill's RTO), in its unit label.",
    )
    for ticket, criterion, item in readiness.measures():
        if item.value is not None:
            measure_family.add({"env": env, "ticket": ticket.id, "criterion": criterion.id,
                                "name": item.name, "unit": item.unit}, item.value)

    age_family = _Family(
        "opsready_carried_forward_timestamp_seconds",
        "When the earlier run whose pass is carried forward for a criterion not run now started.",
    )
    for ticket in readiness.tickets:
        for criterion in ticket.criteria:
            if criterion.carried_forward is not None:
                age_family.add({"env": env, "ticket": ticket.id, "criterion": criterion.id},
                               criterion.carried_forward.passed_at.timestamp())

    lines: list[str] = []
    for family in (status_family, count_family, gate_family, ts_family, complete_family, measure_family,
                   age_family):
        if family.samples:
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
        f"({redactor.excerpt(resp.text.strip(), 200)!r}), expected 200; check that the URL "
        f"points at a Prometheus Pushgateway"
    )
