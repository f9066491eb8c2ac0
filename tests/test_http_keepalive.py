"""A kept-alive connection the server drops as it is reused is a race, not an answer: a safe
request is sent once more on a new connection; a server that drops everything, and a request
that is not safe, still fail."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from opsready._errors import TargetUnreachable
from opsready.probes._http import HttpTarget

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return b""
        data += chunk
    return data


class DroppingServer:
    """Answers the first request of a connection, keeps it open, and closes it without an
    answer when a second request comes on it; ``always`` closes on every request."""

    def __init__(self, always: bool = False) -> None:
        self.always = always
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with self.listener:
            while not self.stop.is_set():
                try:
                    conn, _ = self.listener.accept()
                except TimeoutError:
                    continue
                self.connections += 1
                threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        with conn:
            if not _read_request(conn) or self.always:
                return
            conn.sendall(OK)
            _read_request(conn)  # the reuse: dropped without an answer

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


@pytest.fixture
def dropping() -> Iterator[DroppingServer]:
    server = DroppingServer()
    yield server
    server.close()


def test_a_get_on_a_dropped_kept_alive_connection_is_sent_again(dropping: DroppingServer) -> None:
    target = HttpTarget("service", dropping.url, timeout=5)
    try:
        assert target.get_json("/a") == {}
        assert target.get_json("/b") == {}  # the reused connection is dropped; a new one answers
    finally:
        target.close()
    assert dropping.connections == 2


def test_a_post_is_not_sent_twice(dropping: DroppingServer) -> None:
    target = HttpTarget("service", dropping.url, timeout=5)
    try:
        target.request("POST", "/a")
        with pytest.raises(TargetUnreachable, match="RemoteProtocolError"):
            target.request("POST", "/b")
    finally:
        target.close()
    assert dropping.connections == 1


def test_a_server_that_drops_every_request_is_unreachable() -> None:
    server = DroppingServer(always=True)
    target = HttpTarget("service", server.url, timeout=5)
    try:
        with pytest.raises(TargetUnreachable, match="RemoteProtocolError"):
            target.get_json("/a")
    finally:
        target.close()
        server.close()
    assert server.connections == 2
