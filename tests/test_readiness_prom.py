"""readiness.prom: the Prometheus text rendering of a run, and the Pushgateway push."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from opsready import ProbeError, ProbeTimeout, TargetUnreachable, UnexpectedResponse
from opsready.evidence import AttachmentItem, MeasureItem, ValueItem
from opsready.report.metrics import push, render_prom
from opsready.report.model import (
    CarriedForward,
    Counts,
    Criterion,
    Diff,
    Gate,
    Hashes,
    Readiness,
    Run,
    Scope,
    Ticket,
    Waivers,
)

TICKETS = [
    ("P0-001", "P0", "open"),
    ("P1-002", "P1", "done"),
    ("P1-003", "P1", "unverified"),
    ("P1-004", "P1", "done"),
    ("P2-001", "P2", "done"),
    ("P2-002", "P2", "waived"),
    ("P2-003", "P2", "done"),
    ("P2-004", "P2", "done"),
    ("P3-001", "P3", "unverified"),
    ("P3-002", "P3", "open"),
    ("P3-003", "P3", "done"),
]


def sample_readiness(rto: float | None) -> Readiness:
    tickets: list[Ticket] = []
    for ticket_id, priority, status in TICKETS:
        evidence: list[Any] = [ValueItem(name="checked", value=True)]
        if ticket_id == "P1-002" and rto is not None:
            evidence = [
                ValueItem(name="rpo_hours", value=3.5),
                AttachmentItem(name="drill report", value="ok"),
                MeasureItem(name="rto_seconds", value=rto, unit="s"),
            ]
        tickets.append(Ticket(
            id=ticket_id, title=f"ticket {ticket_id} with \"quotes\" and a \\ backslash",
            priority=priority, category="Reliability", status=status, note="", not_checked=[],
            carried_forward=[], passed=1, total=2, modules=[],
            criteria=[
                Criterion(id=f"{ticket_id}::test_a", title="first", outcome="pass", duration_s=0.12,
                          evidence=evidence),
                Criterion(id=f"{ticket_id}::test_b", title="second", outcome="skip",
                          message="not configured: x.y", skip_kind="not_covered"),
            ],
        ))
    counts = {s: sum(1 for _, _, st in TICKETS if st == s) for s in ("done", "open", "unverified", "waived")}
    started = datetime.fromisoformat("2025-03-04T02:00:00+00:00")
    return Readiness(
        run=Run(id="20250304T020000Z-production", environment="production", env_file="production.yaml",
                started_at=started, finished_at=datetime.fromisoformat("2025-03-04T02:04:30.250000+00:00"),
                duration_s=270.25, today=started.date(), suite_version="0.1.0",
                git_sha="0123456789abcdef0123456789abcdef01234567", python="3.11.7", interrupted=False,
                hashes=Hashes(config="a" * 64, catalogue="b" * 64, waivers=None)),
        gate=Gate(priorities=["P0", "P1"], passed=False, blocking=["P0-001", "P1-003"]),
        counts=Counts(**counts),
        tickets=tickets,
        waivers=Waivers(applied=[], warnings=[]),
        diff=Diff(previous_run=None, newly_done=[], regressed=[], still_open=[], changed={},
                  expiring_waivers=[]),
        scope=Scope(configured=[], allow_intrusive=[], freshness_days={}, selected=None, checks=[],
                    skipped=[], module_errors=[]),
    )


def _with_run(readiness: Readiness, **run: Any) -> Readiness:
    return readiness.model_copy(update={"run": readiness.run.model_copy(update=run)})


def _with_criterion(readiness: Readiness, index: int, criterion: Criterion) -> Readiness:
    tickets = list(readiness.tickets)
    ticket = tickets[index]
    tickets[index] = ticket.model_copy(update={"criteria": [*ticket.criteria, criterion]})
    return readiness.model_copy(update={"tickets": tickets})


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge", family.name
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def promtool_check(text: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not on PATH; run `make system-deps`"
    return subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("rto", [412.75, None], ids=["with-rto", "without-rto"])
def test_promtool_accepts_the_rendering_without_lint_warnings(rto: float | None) -> None:
    result = promtool_check(render_prom(sample_readiness(rto)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == ""


def test_every_family_has_help_and_type_and_every_series_an_env_label() -> None:
    text = render_prom(sample_readiness(412.75))
    for name in ("opsready_ticket_status", "opsready_tickets", "opsready_gate_passed",
                 "opsready_run_timestamp_seconds", "opsready_run_complete", "opsready_evidence_measure"):
        assert f"# HELP {name} " in text
        assert f"# TYPE {name} gauge" in text
    for name, series in samples(text).items():
        for labels, _ in series:
            assert labels.get("env") == "production", name


def test_ticket_status_is_a_state_set_with_one_current_status_per_ticket() -> None:
    series = samples(render_prom(sample_readiness(None)))["opsready_ticket_status"]
    assert len(series) == len(TICKETS) * 4
    current = {(labels["ticket"], labels["priority"], labels["status"])
               for labels, value in series if value == 1}
    assert current == set(TICKETS)
    assert all(value in (0, 1) for _, value in series)


def test_ticket_counts_follow_the_readiness_counts() -> None:
    series = samples(render_prom(sample_readiness(None)))["opsready_tickets"]
    counts = {labels["status"]: value for labels, value in series}
    assert counts == {"done": 6, "open": 2, "unverified": 2, "waived": 1}


def test_run_timestamp_comes_from_finished_at() -> None:
    series = samples(render_prom(sample_readiness(None)))["opsready_run_timestamp_seconds"]
    expected = datetime.fromisoformat("2025-03-04T02:04:30.250000+00:00").timestamp()
    assert series == [({"env": "production"}, expected)]


def test_a_partial_run_is_not_complete() -> None:
    whole = sample_readiness(None)
    assert samples(render_prom(whole))["opsready_run_complete"] == [({"env": "production"}, 1)]
    stopped = whole.model_copy(update={"run": whole.run.model_copy(update={"interrupted": True})})
    assert samples(render_prom(stopped))["opsready_run_complete"] == [({"env": "production"}, 0)]
    broken = whole.model_copy(update={"scope": whole.scope.model_copy(
        update={"module_errors": ["test_p2_002_x.py: could not be collected (SyntaxError)"]})})
    assert samples(render_prom(broken))["opsready_run_complete"] == [({"env": "production"}, 0)]


def test_every_measure_is_a_series_and_nothing_else_is() -> None:
    with_rto = samples(render_prom(sample_readiness(412.75)))
    assert with_rto["opsready_evidence_measure"] == [(
        {"env": "production", "ticket": "P1-002", "criterion": "P1-002::test_a", "name": "rto_seconds",
         "unit": "s"}, 412.75)]
    # A fact recorded under the same name is not a measure: the kind decides, not the name.
    readiness = _with_criterion(sample_readiness(None), 0, Criterion(
        id="P0-001::test_c", title="third", outcome="pass",
        evidence=[ValueItem(name="rto_seconds", value=5.0)]))
    assert "opsready_evidence_measure" not in render_prom(readiness)
    # A measure that did not complete is absent, not zero.
    readiness = _with_criterion(sample_readiness(None), 0, Criterion(
        id="P0-001::test_c", title="third", outcome="pass",
        evidence=[MeasureItem(name="rto_seconds", value=None, unit="s")]))
    assert "opsready_evidence_measure" not in render_prom(readiness)


def test_carried_forward_criteria_have_their_age() -> None:
    passed_at = datetime.fromisoformat("2025-03-01T02:00:00+00:00")
    carried = CarriedForward(run_id="20250301T020000Z-production", passed_at=passed_at,
                             age_days=3, window_days=31, probe="restore_drill",
                             report="../20250301T020000Z-production/index.html", not_run_because="not allowed")
    readiness = _with_criterion(sample_readiness(None), 1, Criterion(
        id="P1-002::test_drill", title="drill", outcome="pass", carried_forward=carried))
    text = render_prom(readiness)
    assert promtool_check(text).returncode == 0
    assert samples(text)["opsready_carried_forward_timestamp_seconds"] == [
        ({"env": "production", "ticket": "P1-002", "criterion": "P1-002::test_drill"}, passed_at.timestamp())]


def test_label_values_are_escaped() -> None:
    readiness = _with_run(sample_readiness(None), environment='prod "eu"\\1\nb')
    text = render_prom(readiness)
    assert promtool_check(text).returncode == 0
    envs = {labels["env"] for series in samples(text).values() for labels, _ in series}
    assert envs == {'prod "eu"\\1\nb'}


class _Gateway:
    """A stand-in Pushgateway on 127.0.0.1 that records what it receives."""

    def __init__(self, status: int = 200, delay: float = 0.0) -> None:
        self.received: list[dict[str, Any]] = []
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                gateway.received.append({
                    "method": self.command,
                    "path": self.path,
                    "content_type": self.headers.get("Content-Type"),
                    "body": self.rfile.read(length).decode("utf-8"),
                })
                time.sleep(delay)
                body = b"" if status < 400 else b"pushed metrics are invalid or inconsistent"
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up (timeout test)

            do_PUT = do_POST = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _Gateway:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def gateway() -> Iterator[_Gateway]:
    with _Gateway() as gw:
        yield gw


def test_push_puts_the_text_under_the_job_path(gateway: _Gateway) -> None:
    text = render_prom(sample_readiness(412.75))
    push(gateway.url, text)
    assert len(gateway.received) == 1
    got = gateway.received[0]
    assert got["method"] == "PUT"
    assert got["path"] == "/metrics/job/opsready"
    assert got["body"] == text
    assert got["content_type"].startswith("text/plain; version=0.0.4")


def test_push_with_instance_and_a_slash_in_a_label_value(gateway: _Gateway) -> None:
    push(gateway.url + "/", "x 1\n", job="nightly", instance="prod-eu")
    push(gateway.url, "x 1\n", job="ci/nightly", instance="prod-eu")
    assert [r["path"] for r in gateway.received] == [
        "/metrics/job/nightly/instance/prod-eu",
        # The Pushgateway's base64 form for grouping values that contain '/'.
        "/metrics/job@base64/Y2kvbmlnaHRseQ==/instance/prod-eu",
    ]


def test_unreachable_pushgateway_is_a_probe_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(TargetUnreachable) as info:
        push(f"http://127.0.0.1:{port}", "x 1\n", timeout=2.0)
    assert isinstance(info.value, ProbeError)
    assert "pushgateway" in str(info.value) and f"127.0.0.1:{port}" in str(info.value)


def test_rejected_push_is_an_unexpected_response() -> None:
    with _Gateway(status=400) as gw, pytest.raises(UnexpectedResponse) as info:
        push(gw.url, "x 1\n")
    assert "400" in str(info.value) and "invalid or inconsistent" in str(info.value)


def test_slow_pushgateway_times_out() -> None:
    with _Gateway(delay=2.0) as gw, pytest.raises(ProbeTimeout):
        push(gw.url, "x 1\n", timeout=0.3)


def test_url_without_scheme_is_rejected_clearly() -> None:
    with pytest.raises(TargetUnreachable, match="not an http"):
        push("pushgateway:9091", "x 1\n")
