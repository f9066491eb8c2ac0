"""The latency proxy of ``opsready stack up --latency-ms``: it delays each direction, keeps
every byte in order, points env.yaml at itself, and a verify through it at 50 ms reaches the
same verdicts as the healthy run at 0 ms."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from conftest import StartedStack, VerifyResult, run_verify
from opsready.config import INTRUSIVE_PROBES
from opsready_stack.latency_proxy import LatencyPart, forward_ports
from opsready_stack.orchestrator import UsageError, up
from opsready_stack.part import StackContext
from opsready_stack.processes import kill_pidfile


def _echo_server() -> tuple[int, threading.Event]:
    """A loopback server that sends back whatever it reads, until ``stop`` is set."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        with listener:
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                with conn:
                    while data := conn.recv(65536):
                        conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1], stop


@pytest.fixture
def proxied_echo(tmp_path: Path) -> Iterator[tuple[int, float]]:
    """An echo server behind the proxy at 80 ms: (proxy port, latency in seconds)."""
    port, stop = _echo_server()
    ctx = StackContext(dir=tmp_path, ports={"echo": port})
    part = LatencyPart(80.0)
    part.start(ctx)
    try:
        part.wait_ready(ctx, time.monotonic() + 20)
        yield part.mapping[port], 0.080
    finally:
        kill_pidfile(ctx.pids / "latency.pid")
        stop.set()


def test_each_round_trip_pays_the_latency_and_bytes_keep_their_order(
        proxied_echo: tuple[int, float]) -> None:
    port, latency = proxied_echo
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"warm")
        assert conn.recv(16) == b"warm"  # the handshake's round trip is paid here
        trips = []
        payload = bytes(range(256)) * 512  # 128 KiB: several chunks, in order
        for _ in range(3):
            begun = time.monotonic()
            conn.sendall(payload)
            got = b""
            while len(got) < len(payload):
                got += conn.recv(65536)
            trips.append(time.monotonic() - begun)
            assert got == payload
    # Generous above: the machine is shared.
    assert all(latency * 0.95 <= t < latency + 2.0 for t in trips), trips


def test_a_new_connection_pays_a_round_trip_before_its_first_answer(
        proxied_echo: tuple[int, float]) -> None:
    port, latency = proxied_echo
    begun = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"x")
        assert conn.recv(1) == b"x"
    assert time.monotonic() - begun >= 2 * latency * 0.95


def test_env_addresses_move_to_the_proxy_ports() -> None:
    mapping = {5432: 40001, 9000: 40002}
    assert forward_ports("postgresql://u:p@127.0.0.1:5432/relay", mapping) == \
        "postgresql://u:p@127.0.0.1:40001/relay"
    assert forward_ports("http://localhost:9000/x", mapping) == "http://localhost:40002/x"
    assert forward_ports("http://127.0.0.1:8080/", mapping) == "http://127.0.0.1:8080/"
    assert forward_ports("https://example.com:9000/", mapping) == "https://example.com:9000/"


def test_summary_and_status_show_the_proxied_addresses_and_check_the_proxy(tmp_path: Path) -> None:
    """What `stack up` prints is what env.yaml holds, and `stack status` notices a dead proxy."""
    import io

    from opsready_stack.grafana_fake import GrafanaPart
    from opsready_stack.orchestrator import down, status

    summary = up(tmp_path / "s", parts=[GrafanaPart()], latency_ms=20, out=io.StringIO())
    try:
        env = yaml.safe_load(summary.env_path.read_text())
        assert summary.urls["grafana"] == env["grafana"]["url"]
        state = json.loads((summary.dir / "state.json").read_text())
        assert f":{state['ports']['grafana']}" not in env["grafana"]["url"]
        rows = {r.name: r for r in status(summary.dir, parts=[GrafanaPart()])}
        assert rows["grafana"].up and rows["grafana"].detail == env["grafana"]["url"]
        assert rows["latency"].up and "20 ms round trip in front of 1 port" in rows["latency"].detail
        kill_pidfile(summary.dir / "pids" / "latency.pid")
        rows = {r.name: r for r in status(summary.dir, parts=[GrafanaPart()])}
        assert not rows["latency"].up and "latency.log" in rows["latency"].detail
        assert not rows["processes"].up and "latency" in rows["processes"].detail
    finally:
        down(summary.dir, out=io.StringIO())


@pytest.mark.parametrize(("latency", "jitter", "says"), [
    (-1.0, 0.0, "must not be negative"),
    (0.0, 5.0, "--jitter-ms needs --latency-ms"),
])
def test_bad_latency_options_are_usage_errors(tmp_path: Path, latency: float, jitter: float,
                                              says: str) -> None:
    with pytest.raises(UsageError, match=says):
        up(tmp_path / "never", latency_ms=latency, jitter_ms=jitter)
    assert not (tmp_path / "never").exists()


@pytest.mark.stack
def test_verdicts_are_the_same_at_50_ms(stack: StartedStack, healthy_run: VerifyResult,
                                        tmp_path: Path) -> None:
    """The smoke test of the proxy: the stack seen through 50 ms round trips gives every
    criterion the outcome it has at 0 ms."""
    from opsready_stack.orchestrator import _load_ctx

    ctx = _load_ctx(stack.dir)
    part = LatencyPart(50.0)
    part.start(ctx)
    try:
        part.wait_ready(ctx, time.monotonic() + 30)
        config = part.rewrite_env(ctx, yaml.safe_load(stack.env_path.read_text()))
        assert str(ctx.ports["service"]) not in config["service"]["base_url"]
        slow = tmp_path / "slow"
        slow.mkdir()
        (slow / "env.yaml").write_text(yaml.safe_dump(config))
        (slow / "env.yaml").chmod(0o600)
        result = run_verify(StartedStack(slow, 0.0, ""), tmp_path, "--gate", "P0,P1", "-n", "0",
                            allow_intrusive=list(INTRUSIVE_PROBES))
    finally:
        kill_pidfile(ctx.pids / "latency.pid")

    def outcomes(run: VerifyResult) -> dict[str, str]:
        return {c["id"]: c["outcome"] for t in run.readiness["tickets"] for c in t["criteria"]}

    assert result.status == healthy_run.status, result.explain()
    assert outcomes(result) == outcomes(healthy_run), result.explain()
    assert result.exit_code == healthy_run.exit_code == 0
