"""readiness.prom: the Prometheus text rendering of a run, and the Pushgateway push."""

from __future__ import annotations

import copy
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
from opsready.report.metrics import push, render_prom

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


def sample_readiness(rto: float | None) -> dict[str, Any]:
    tickets: list[dict[str, Any]] = []
    for ticket_id, priority, status in TICKETS:
        evidence: list[dict[str, Any]] = [{"name": "checked", "kind": "value", "value": True}]
        if ticket_id == "P1-002" and rto is not None:
            evidence = [
                {"name": "rpo_hours", "kind": "value", "value": 3.5},
                {"name": "drill report", "kind": "attachment", "value": "ok",
                 "mime": "text/plain", "encoding": "utf-8"},
                {"name": "rto_seconds", "kind": "value", "value": rto},
            ]
        tickets.append({
            "id": ticket_id,
            "title": f"ticket {ticket_id} with \"quotes\" and a \\ backslash",
            "priority": priority,
            "status": status,
            "passed": 1,
            "total": 2,
            "criteria": [
                {"id": f"{ticket_id}::test_a", "title": "first", "outcome": "pass",
                 "message": "", "duration_s": 0.12, "evidence": evidence},
                {"id": f"{ticket_id}::test_b", "title": "second", "outcome": "skip",
                 "message": "not configured: x.y", "duration_s": 0.0, "evidence": []},
            ],
        })
    counts = {s: sum(1 for _, _, st in TICKETS if st == s)
              for s in ("done", "open", "unverified", "waived")}
    return {
        "schema": "opsready.readiness/v1",
        "run": {
            "environment": "production",
            "started_at": "2025-03-04T02:00:00+00:00",
            "finished_at": "2025-03-04T02:04:30.250000+00:00",
            "suite_version": "0.1.0",
            "git_sha": "0123456789abcdef0123456789abcdef01234567",
            "hashes": {"config": "a" * 64, "catalogue": "b" * 64, "waivers": None},
        },
        "gate": {"priorities": ["P0", "P1"], "passed": False, "blocking": ["P0-001", "P1-003"]},
        "tickets": tickets,
        "counts": counts,
        "waivers": {"applied": [], "warnings": []},
        "diff": {"newly_done": [], "regressed": [], "still_open": [], "expiring": []},
        "slo": None,
    }


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
    for name in ("opsready_ticket_status", "opsready_tickets",
                 "opsready_run_timestamp_seconds", "opsready_restore_rto_seconds"):
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


def test_rto_is_present_only_when_measured() -> None:
    with_rto = samples(render_prom(sample_readiness(412.75)))
    assert with_rto["opsready_restore_rto_seconds"] == [({"env": "production"}, 412.75)]
    without = render_prom(sample_readiness(None))
    assert "opsready_restore_rto_seconds" not in without


def test_rto_recorded_on_another_ticket_is_ignored() -> None:
    readiness = sample_readiness(None)
    readiness["tickets"][0]["criteria"][0]["evidence"].append(
        {"name": "rto_seconds", "kind": "value", "value": 5.0}
    )
    assert "opsready_restore_rto_seconds" not in render_prom(readiness)


def test_label_values_are_escaped() -> None:
    readiness = sample_readiness(None)
    readiness["run"]["environment"] = 'prod "eu"\\1\nb'
    text = render_prom(readiness)
    assert promtool_check(text).returncode == 0
    envs = {labels["env"] for series in samples(text).values() for labels, _ in series}
    assert envs == {'prod "eu"\\1\nb'}


def test_rendering_does_not_modify_the_model() -> None:
    readiness = sample_readiness(412.75)
    before = copy.deepcopy(readiness)
    render_prom(readiness)
    assert readiness == before


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
