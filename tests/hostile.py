"""Small hostile HTTP servers on loopback, for the adversarial tests (``test_hardening_*``).

``HostileServer(behaviour)`` serves every request with ``behaviour(request) -> Reply``. The
replies below do what a hostile or broken target does: reflect what they received (in several
encodings), send a body far over any limit, drip a body byte by byte, never answer, answer
from a "gateway" with 502/503/504, or put script into everything they return.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote

__all__ = [
    "SCRIPT_PAYLOAD",
    "Blackhole",
    "HostileServer",
    "Received",
    "Reply",
    "encodings_of",
]

# Everything a report must show as text and never run: a script, an event handler, a
# javascript: link, a style break, and a request to a listener that would prove execution.
SCRIPT_PAYLOAD = (
    '<script>document.title="PWNED";fetch("http://127.0.0.1:{port}/script")</script>'
    '<img src=x onerror="document.title=\'PWNED\';fetch(\'http://127.0.0.1:{port}/onerror\')">'
    '<a href="javascript:fetch(\'http://127.0.0.1:{port}/link\')">click</a>'
    '</style><style>body{{background:url(http://127.0.0.1:{port}/css)}}</style>'
    '"><svg onload="fetch(\'http://127.0.0.1:{port}/svg\')">'
    "</textarea></pre></code><iframe src=\"http://127.0.0.1:{port}/iframe\"></iframe>"
)


# The CORS section every hostile environment shares: one allowed and one disallowed origin.
CORS_SECTION = """cors:
  paths: [/api/v1/actions]
  allowed_origins: [https://app.example.com]
  disallowed_origins: [https://evil.example.com]
  methods: [POST]
  request_headers: [X-API-Key]
"""


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | Iterable[bytes] = b""
    # Seconds to wait between the chunks of an iterable body.
    drip_s: float = 0.0
    # Never answer at all (the connection stays open until the server stops).
    hang: bool = False


def encodings_of(secret: str) -> list[str]:
    """The encodings a target may echo a secret in: raw, hex (both cases), base64 of longer
    strings holding it at the three alignments, and URL encoding applied one to three times."""
    found = [secret, secret.encode().hex(), secret.encode().hex().upper()]
    for prefix in ("", "x", "xy"):
        found.append(base64.b64encode(f"{prefix}Bearer {secret} tail".encode()).decode())
        found.append(base64.urlsafe_b64encode(f"{prefix}user:{secret}".encode()).decode())
    once = quote(secret + "/#", safe="")
    found += [once, quote(once, safe=""), quote(quote(once, safe=""), safe="")]
    return found


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        got = Received(self.command, self.path, {k: v for k, v in self.headers.items()}, body)
        self.server.received.append(got)
        reply = self.server.behaviour(got)
        if reply.hang:
            self.server.hung.wait(60)
            self.close_connection = True
            return
        self.send_response(reply.status)
        headers = {k.lower(): v for k, v in reply.headers.items()}
        chunks: Iterator[bytes]
        if isinstance(reply.body, bytes):
            headers.setdefault("content-length", str(len(reply.body)))
            chunks = iter([reply.body])
        else:
            headers.setdefault("transfer-encoding", "chunked")
            chunks = iter(reply.body)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        chunked = headers.get("transfer-encoding") == "chunked"
        try:
            for chunk in chunks:
                if self.server.hung.is_set():
                    break
                if chunked:
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                else:
                    self.wfile.write(chunk)
                self.wfile.flush()
                if reply.drip_s:
                    time.sleep(reply.drip_s)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_OPTIONS = do_HEAD = _serve

    def log_message(self, format: str, *args: object) -> None:
        return


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    behaviour: Callable[[Received], Reply]
    received: list[Received]
    hung: threading.Event


class HostileServer:
    """A loopback HTTP server answering every request with ``behaviour``. A context manager."""

    def __init__(self, behaviour: Callable[[Received], Reply]) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.behaviour = behaviour
        self._server.received = []
        self._server.hung = threading.Event()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def received(self) -> list[Received]:
        return self._server.received

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.hung.set()
        self._server.shutdown()
        self._server.server_close()


class Blackhole:
    """A TCP port that accepts connections and never says a word."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        self._sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            self._conns.append(conn)

    def __enter__(self) -> Blackhole:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for conn in self._conns:
            conn.close()
        self._sock.close()


def json_body(value: object) -> bytes:
    return json.dumps(value).encode()
