"""A TCP delay proxy in front of every port the stack advertises, for measuring the suite over
a slow network on a machine without netem.

``opsready stack up --latency-ms N [--jitter-ms J]`` adds this part. It listens on a loopback
port of its own for every port of the other parts and forwards each connection to the real
port, holding every chunk for half the round trip in each direction (plus up to half the
jitter), in order. A new connection also pays one round trip before its first bytes go out,
as a TCP handshake does. Only ``env.yaml`` points at the proxy: the platform's own parts still
talk to each other directly, as they would inside one data centre.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import re
import socket
from pathlib import Path
from typing import Any

from opsready_stack.part import BasePart, StackContext, free_port, wait_until

__all__ = ["LatencyPart", "forward_ports", "main"]

CHUNK = 64 * 1024


class _DelayedPipe:
    """One direction of one connection: what ``reader`` gives, ``writer`` gets ``delay``
    seconds later (plus jitter), in the order it was read."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 delay: float, jitter: float, first_after: float) -> None:
        self.reader, self.writer = reader, writer
        self.delay, self.jitter = delay, jitter
        self.queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        self.last_due = first_after

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        sender = asyncio.create_task(self._send())
        try:
            while data := await self.reader.read(CHUNK):
                due = max(self.last_due, loop.time() + self.delay + random.uniform(0, self.jitter))
                self.last_due = due
                self.queue.put_nowait((due, data))
        except (ConnectionError, OSError):
            pass
        finally:
            # The end of the stream travels as late as the bytes before it.
            self.queue.put_nowait((max(self.last_due, loop.time() + self.delay), b""))
            await sender

    async def _send(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, data = await self.queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                if not data:
                    if self.writer.can_write_eof():
                        self.writer.write_eof()
                    return
                self.writer.write(data)
                await self.writer.drain()
            except (ConnectionError, OSError):
                return


async def _serve_one(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter,
                     target: int, one_way: float, jitter: float) -> None:
    loop = asyncio.get_running_loop()
    # The handshake's round trip comes before the first request byte can leave, and that
    # byte then takes its own one-way trip.
    first = loop.time() + 3 * one_way
    try:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", target)
    except OSError:
        client_w.close()
        return
    up = _DelayedPipe(client_r, server_w, one_way, jitter, first)
    down = _DelayedPipe(server_r, client_w, one_way, jitter, 0.0)
    try:
        await asyncio.gather(up.run(), down.run())
    finally:
        for w in (server_w, client_w):
            w.close()
            with contextlib.suppress(ConnectionError, OSError):
                await w.wait_closed()


async def _serve(mapping: dict[int, int], latency_ms: float, jitter_ms: float) -> None:
    one_way, jitter = latency_ms / 2000.0, jitter_ms / 2000.0
    servers = []
    for listen, target in mapping.items():
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter, target: int = target) -> None:
            await _serve_one(r, w, target, one_way, jitter)

        servers.append(await asyncio.start_server(handle, "127.0.0.1", listen, reuse_address=True))
    await asyncio.gather(*(s.serve_forever() for s in servers))


def forward_ports(text: str, mapping: dict[int, int]) -> str:
    """``text`` with every loopback address of a mapped port moved to its proxy port."""

    def swap(m: re.Match[str]) -> str:
        port = int(m.group(2))
        return f"{m.group(1)}:{mapping.get(port, port)}"

    return re.sub(r"(127\.0\.0\.1|localhost):(\d{2,5})\b", swap, text)


class LatencyPart(BasePart):
    """The delay proxy as a part of the stack. It starts after every other part, so it knows
    every port to stand in front of."""

    name = "latency"

    def __init__(self, latency_ms: float, jitter_ms: float = 0.0) -> None:
        if latency_ms < 0 or jitter_ms < 0:
            raise ValueError("latency and jitter must not be negative")
        self.latency_ms, self.jitter_ms = latency_ms, jitter_ms
        self.mapping: dict[int, int] = {}

    @classmethod
    def of(cls, ctx: StackContext) -> LatencyPart | None:
        """The proxy of a running stack, as ``up`` recorded it; None when it has none."""
        recorded = ctx.settings.get("latency")
        if not recorded:
            return None
        part = cls(float(recorded["latency_ms"]), float(recorded.get("jitter_ms", 0.0)))
        part.mapping = {int(k): int(v) for k, v in recorded["ports"].items()}
        return part

    def advertised(self, urls: dict[str, str]) -> dict[str, str]:
        """``urls`` as a client of the stack reaches them: through the proxy."""
        return {name: forward_ports(url, self.mapping) for name, url in urls.items()}

    def start(self, ctx: StackContext) -> None:
        taken = set(ctx.ports.values())
        for port in sorted(taken):
            proxy = free_port()
            while proxy in taken or proxy in self.mapping.values():
                proxy = free_port()
            self.mapping[port] = proxy
        ctx.settings["latency"] = {"latency_ms": self.latency_ms, "jitter_ms": self.jitter_ms,
                                   "ports": {str(k): v for k, v in self.mapping.items()}}
        argv = [ctx.python(), "-m", "opsready_stack.latency_proxy",
                "--latency-ms", str(self.latency_ms), "--jitter-ms", str(self.jitter_ms)]
        for target, listen in self.mapping.items():
            argv += ["--forward", f"{listen}:{target}"]
        ctx.spawn("latency", argv)

    def wait_ready(self, ctx: StackContext, deadline: float) -> None:
        def listening() -> bool:
            for listen in self.mapping.values():
                with socket.create_connection(("127.0.0.1", listen), timeout=1.0):
                    pass
            return True

        try:
            wait_until(listening, deadline, "latency proxy")
        except RuntimeError:
            raise RuntimeError(f"the latency proxy did not listen on {sorted(self.mapping.values())}; "
                               f"see {ctx.logs / 'latency.log'}") from None

    def rewrite_env(self, ctx: StackContext, config: dict[str, Any]) -> dict[str, Any]:
        def walk(node: Any) -> Any:
            if isinstance(node, dict):
                return {k: walk(v) for k, v in node.items()}
            if isinstance(node, list):
                return [walk(v) for v in node]
            return forward_ports(node, self.mapping) if isinstance(node, str) else node

        rewritten: dict[str, Any] = walk(config)
        return rewritten


def main() -> None:
    parser = argparse.ArgumentParser(description="loopback TCP proxy that delays each direction")
    parser.add_argument("--latency-ms", type=float, required=True, help="added round trip")
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="up to this much more")
    parser.add_argument("--forward", action="append", default=[], metavar="LISTEN:TARGET")
    parser.add_argument("--dir", type=Path, default=None, help="unused; names the stack in ps")
    args = parser.parse_args()
    mapping = {int(a): int(b) for a, b in (f.split(":", 1) for f in args.forward)}
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(mapping, args.latency_ms, args.jitter_ms))


if __name__ == "__main__":
    main()
