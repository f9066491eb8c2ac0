"""Shared facts read ahead at session start (``opsready.prefetch``): read once, before the
criteria that need them; an error raised by the criterion that reads it, with the message a
direct read gives; nothing read for deselected criteria; no read alongside an intrusive
criterion; and an interrupted run that does not wait for a read in flight.

The runs are the real ``opsready verify`` on small check modules of their own, against a
Grafana stand-in on loopback that logs every request (the fact's probe is the real
``GrafanaProbe``)."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import ROOT, child_env, criteria, finish_process, opsready_command
from opsready.prefetch import FACTS, Prefetch
from opsready.probes._shared import SharedFacts, shared_fact

# ---- the facts themselves ------------------------------------------------------------------


class Counter:
    """A probe with one shared fact that counts its reads."""

    def __init__(self, fail: int = 0, delay: float = 0.0) -> None:
        self.reads = 0
        self.fail = fail
        self.delay = delay

    @shared_fact
    def listing(self, kind: str = "all") -> list[str]:
        self.reads += 1
        time.sleep(self.delay)
        if self.reads <= self.fail:
            raise ValueError(f"listing {kind}: refused (read {self.reads})")
        return [kind, str(self.reads)]


def test_without_a_shared_store_every_call_reads() -> None:
    probe = Counter()
    probe.listing()
    probe.listing()
    assert probe.reads == 2


def test_a_fact_is_read_once_per_arguments() -> None:
    probe = Counter()
    probe.shared = SharedFacts()  # type: ignore[attr-defined]
    first = probe.listing()
    assert probe.listing() is first
    assert probe.listing("alert") == ["alert", "2"]
    assert probe.reads == 2


def test_a_criterion_waits_for_the_read_in_flight_instead_of_sending_its_own() -> None:
    probe = Counter(delay=0.3)
    shared = probe.shared = SharedFacts()  # type: ignore[attr-defined]
    ahead = threading.Thread(target=shared.ahead, args=(probe.listing,))
    ahead.start()
    time.sleep(0.1)
    assert probe.listing() == ["all", "1"]
    ahead.join()
    assert probe.reads == 1


def test_an_error_read_ahead_is_raised_once_by_the_criterion_that_asks_then_read_afresh() -> None:
    probe = Counter(fail=1)
    shared = probe.shared = SharedFacts()  # type: ignore[attr-defined]
    shared.ahead(probe.listing)  # the read-ahead meets the error and keeps it
    assert probe.reads == 1
    with pytest.raises(ValueError, match=r"^listing all: refused \(read 1\)$"):
        probe.listing()
    # As without sharing: the next criterion reads for itself.
    assert probe.listing() == ["all", "2"]
    assert probe.reads == 2


def test_lanes_of_different_targets_overlap_and_pausing_waits_for_reads_in_flight() -> None:
    from opsready.prefetch import Fact

    slow = [Counter(delay=0.4), Counter(delay=0.4)]
    prefetch = Prefetch()
    for i, probe in enumerate(slow):
        prefetch.add(Fact(f"t{i}.listing", f"t{i}", lambda p, env: p.listing()), probe, None)  # type: ignore[arg-type]
    begun = time.monotonic()
    prefetch.start()
    time.sleep(0.05)
    prefetch.pause()
    # Both were in flight when the pause came; it returned once they had finished, together.
    assert [p.reads for p in slow] == [1, 1]
    assert time.monotonic() - begun < 0.75
    prefetch.resume()
    prefetch.close()
    assert prefetch.alive() == []


def test_a_paused_prefetch_starts_nothing_and_close_cancels_it() -> None:
    from opsready.prefetch import Fact

    probe = Counter()
    prefetch = Prefetch()
    prefetch.add(Fact("t.listing", "t", lambda p, env: p.listing()), probe, None)  # type: ignore[arg-type]
    prefetch.start(paused=True)
    time.sleep(0.2)
    prefetch.close()
    assert probe.reads == 0
    assert prefetch.alive() == []


def test_every_fact_reads_through_shared_methods_of_its_target() -> None:
    """A fact whose reads bypass ``shared_fact`` would be read twice: once ahead, once by
    its criterion. Each fact's target names a fixture of a probe."""
    from opsready import fixtures

    for fact in FACTS.values():
        assert fact.name.split(".", 1)[0] == fact.target, fact.name
        assert hasattr(fixtures, fact.target), fact.name


# ---- in a run ------------------------------------------------------------------------------


class GrafanaStandIn:
    """Answers ``/api/datasources`` and ``/api/dashboards/uid/<uid>`` as Grafana does, logs
    each request to a file the check modules can read, and can fail or hang a path."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.log.write_text("")
        self.status: dict[str, int] = {}
        self.hang: set[str] = set()
        self.requests: list[str] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                stand_in.requests.append(path)
                with stand_in.log.open("a") as fh:
                    fh.write(path + "\n")
                if path in stand_in.hang:
                    time.sleep(60)
                status = stand_in.status.get(path, 200)
                if path == "/api/datasources":
                    body: Any = [{"uid": "prom", "name": "Prometheus", "type": "prometheus"}]
                else:
                    uid = path.rsplit("/", 1)[-1]
                    body = {"dashboard": {"uid": uid, "title": uid, "panels": [{"title": "p"}]},
                            "meta": {}}
                data = json.dumps(body if status == 200 else {"message": "boom"}).encode()
                # A hanging read's client has gone by the time it answers.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def grafana_stand_in(tmp_path: Path) -> Iterator[GrafanaStandIn]:
    server = GrafanaStandIn(tmp_path / "requests.log")
    yield server
    server.close()


# Runs first: it waits a moment, then says what the stand-in had been asked by then.
VIEWS = '''
import os, time, pytest
from pathlib import Path

pytestmark = [pytest.mark.ticket("P0-001")]
LOG = Path(os.environ["OPSREADY_TEST_LOG"])
MARKS = Path(os.environ["OPSREADY_TEST_MARKS"])


@pytest.mark.intrusive("rate_limit_burst")
def test_alone(evidence):
    """An intrusive criterion: nothing is read alongside it"""
    time.sleep(0.5)
    evidence.record("seen", LOG.read_text().split())


def test_first(evidence):
    """A criterion that reads nothing, while the shared facts are read ahead"""
    (MARKS / "started").write_text("x")
    time.sleep(float(os.environ.get("OPSREADY_TEST_HOLD_S", "0.5")))
    evidence.record("seen", LOG.read_text().split())


def test_datasources(grafana, evidence):
    """The datasources are listed"""
    evidence.record("datasources", [d.uid for d in grafana.datasources()])


def test_datasources_again(grafana, evidence):
    """The datasources are listed again"""
    evidence.record("datasources", [d.uid for d in grafana.datasources()])
'''

BOARDS = '''
import pytest

pytestmark = [pytest.mark.ticket("P3-003")]


def test_boards(grafana, evidence):
    """The dashboards are there"""
    evidence.record("boards", {uid: b is not None for uid, b in grafana.dashboards(["main"]).items()})
'''

PLANS = {
    "test_p0_001_views.py": {
        "test_alone": {"contacts": [], "intrusive": "rate_limit_burst"},
        "test_first": {"contacts": []},
        "test_datasources": {"contacts": [], "facts": ["grafana.datasources"]},
        "test_datasources_again": {"contacts": [], "facts": ["grafana.datasources"]},
    },
    "test_p3_003_boards.py": {"test_boards": {"contacts": [], "facts": ["grafana.dashboards"]}},
}


class Verify:
    """``opsready verify`` of the two modules above against the stand-in."""

    def __init__(self, tmp: Path, grafana: GrafanaStandIn, *args: str, hold_s: float = 0.5) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        checks = tmp / "checks"
        checks.mkdir(exist_ok=True)
        for name, source in (("test_p0_001_views.py", VIEWS), ("test_p3_003_boards.py", BOARDS)):
            (checks / name).write_text(source)
            (checks / name.replace(".py", ".plan.yaml")).write_text(yaml.safe_dump(PLANS[name]))
        self.marks = tmp / "marks"
        self.marks.mkdir(exist_ok=True)
        env = tmp / "env.yaml"
        env.write_text(yaml.safe_dump({"timeout_s": 30, "allow_intrusive": ["rate_limit_burst"],
                                       "grafana": {"url": grafana.url, "dashboards": ["main"]}}))
        self.out = tmp / "reports" / "run"
        self.proc = subprocess.Popen(
            [*opsready_command(), "verify", "--checks", str(checks), "--env", str(env), "--root", str(ROOT),
             "--reports-root", str(tmp / "reports"), "--out", str(self.out), "--gate", "none", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
            env={**child_env(), "OPSREADY_TEST_LOG": str(grafana.log), "OPSREADY_TEST_MARKS": str(self.marks),
                 "OPSREADY_TEST_HOLD_S": str(hold_s)})

    def finish(self, timeout: float = 120) -> tuple[int, str]:
        return finish_process(self.proc, timeout)

    def criteria(self) -> dict[str, dict[str, Any]]:
        data = json.loads((self.out / "readiness.json").read_text())
        return {**criteria(data, "P0-001"), **(criteria(data, "P3-003") if any(
            t["id"] == "P3-003" and t["criteria"] for t in data["tickets"]) else {})}


def _seen(criterion: dict[str, Any]) -> list[str]:
    return next(e["value"] for e in criterion["evidence"] if e["name"] == "seen")


def test_shared_facts_are_read_once_ahead_and_never_alongside_an_intrusive_criterion(
        tmp_path: Path, grafana_stand_in: GrafanaStandIn) -> None:
    run = Verify(tmp_path, grafana_stand_in, "-n", "0")
    code, output = run.finish()
    assert code == 0, output
    found = run.criteria()
    assert {k: c["outcome"] for k, c in found.items()} == {
        "test_alone": "pass", "test_first": "pass", "test_datasources": "pass",
        "test_datasources_again": "pass", "test_boards": "pass"}, output
    # The intrusive criterion ran first, alone: nothing had been read yet.
    assert _seen(found["test_alone"]) == []
    # Then the facts were read while a criterion that needs none ran, each once in the run.
    assert sorted(_seen(found["test_first"])) == ["/api/dashboards/uid/main", "/api/datasources"]
    assert sorted(grafana_stand_in.requests) == ["/api/dashboards/uid/main", "/api/datasources"]


def test_the_facts_of_deselected_criteria_are_not_read(tmp_path: Path,
                                                       grafana_stand_in: GrafanaStandIn) -> None:
    run = Verify(tmp_path, grafana_stand_in, "-n", "0", "--ticket", "P0-001")
    code, output = run.finish()
    assert code == 0, output
    assert grafana_stand_in.requests == ["/api/datasources"]
    assert set(run.criteria()) == {"test_alone", "test_first", "test_datasources", "test_datasources_again"}


def test_an_error_read_ahead_reaches_the_criterion_that_needs_it_with_the_message_of_a_direct_read(
        tmp_path: Path, grafana_stand_in: GrafanaStandIn) -> None:
    grafana_stand_in.status["/api/datasources"] = 500
    ahead = Verify(tmp_path / "ahead", grafana_stand_in, "-n", "0")
    ahead.finish()
    ahead_requests = list(grafana_stand_in.requests)
    grafana_stand_in.requests.clear()
    # With a worker nothing is read ahead: each criterion reads for itself.
    direct = Verify(tmp_path / "direct", grafana_stand_in, "-n", "1")
    direct.finish()
    got, expected = ahead.criteria(), direct.criteria()
    assert {k: c["outcome"] for k, c in got.items()} == {
        "test_alone": "pass", "test_first": "pass", "test_datasources": "error",
        "test_datasources_again": "error", "test_boards": "pass"}
    assert "/api/datasources" in got["test_datasources"]["message"]
    assert "500" in got["test_datasources"]["message"]
    for name in ("test_datasources", "test_datasources_again"):
        assert got[name]["message"] == expected[name]["message"]
    # Read ahead once, raised once; the second criterion asked again, as a direct read does.
    assert ahead_requests.count("/api/datasources") == 2
    assert grafana_stand_in.requests.count("/api/datasources") == 2


def test_an_interrupt_does_not_wait_for_a_read_ahead_in_flight(tmp_path: Path,
                                                              grafana_stand_in: GrafanaStandIn) -> None:
    grafana_stand_in.hang.add("/api/datasources")
    run = Verify(tmp_path, grafana_stand_in, "-n", "0", hold_s=120)
    deadline = time.monotonic() + 60
    while not ((run.marks / "started").exists() and "/api/datasources" in grafana_stand_in.requests):
        assert run.proc.poll() is None and time.monotonic() < deadline, run.finish()[1]
        time.sleep(0.05)
    begun = time.monotonic()
    run.proc.send_signal(signal.SIGINT)
    code, output = run.finish(timeout=60)
    # The read in flight would hold for 30 s (timeout_s); the run ends well before.
    assert time.monotonic() - begun < 15, output
    assert code == 2, output
    assert "Traceback" not in output, output
    found = run.criteria()
    assert found["test_datasources"]["outcome"] == "skip"
    assert found["test_datasources"]["message"].startswith("not run: ")


def test_github_gets_one_request_at_a_time_and_the_criterion_goes_first() -> None:
    """The read-ahead and the running criterion share the GitHub probe; GitHub still sees
    one request at a time, and a criterion waits for at most the read-ahead's request in
    flight, not for its queue."""
    import httpx

    from opsready.config import GithubConfig
    from opsready.probes.github import GithubProbe

    lock = threading.Lock()
    in_flight, peak, order = 0, 0, []

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.05)
        with lock:
            in_flight -= 1
            order.append(request.url.path.rsplit("/", 1)[-1])
        return httpx.Response(200, json={"type": "file", "content": "", "encoding": "base64"})

    probe = GithubProbe(GithubConfig.model_validate({"repo": "acme/relay", "api_url": "https://gh.test"}),
                        timeout=5, transport=httpx.MockTransport(handler))
    ahead = threading.Thread(target=lambda: [probe.get_file(f"ahead-{i}") for i in range(10)])
    ahead.start()
    time.sleep(0.12)
    probe.get_file("criterion-0")
    probe.get_file("criterion-1")
    ahead.join()
    assert peak == 1
    # Each of the criterion's requests waited for at most the read-ahead's request in flight.
    first, second = order.index("criterion-0"), order.index("criterion-1")
    assert first <= 4 and second - first <= 2, order
