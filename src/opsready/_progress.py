"""Progress for long criteria (a restore drill, a rollback drill, a bounded wait for a trace).

With workers, the controller hears when each criterion starts and finishes; a heartbeat
thread there names every criterion still running after ``interval`` seconds, so a long run
never looks hung. The controller runs no checks itself, so its output is never captured.

A restore drill also says where it is (``DrillProgress``), with or without workers: the
drill's own lines go around pytest's capture to the terminal.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["DrillProgress", "Heartbeat"]


class _Ticker:
    """Writes ``lines()`` every ``interval`` seconds from a daemon thread, until ``stop``."""

    thread_name = "opsready-ticker"

    def __init__(self, write: Callable[[str], None], interval: float,
                 clock: Callable[[], float]) -> None:
        self._write, self._interval, self._clock = write, interval, clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def lines(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            for line in self.lines():
                self._write(line)


class Heartbeat(_Ticker):
    thread_name = "opsready-heartbeat"

    def __init__(self, write: Callable[[str], None], interval: float = 15.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(write, interval, clock)
        self._running: dict[str, float] = {}
        self._lock = threading.Lock()

    def started(self, nodeid: str) -> None:
        with self._lock:
            self._running[nodeid] = self._clock()

    def finished(self, nodeid: str) -> None:
        with self._lock:
            self._running.pop(nodeid, None)

    def due(self) -> list[str]:
        """Lines for the criteria running longer than the interval, longest first."""
        now = self._clock()
        with self._lock:
            slow = sorted(((now - t, n) for n, t in self._running.items() if now - t >= self._interval),
                          reverse=True)
        return [f"[opsready] still running after {age:.0f}s: {nodeid}" for age, nodeid in slow]

    def lines(self) -> list[str]:
        return self.due()


class DrillProgress(_Ticker):
    """Progress of a long restore drill, so an operator can see it is not hung: the bytes
    downloaded out of the total, how long the restore has run, the tables verified.

    It reads the drill's own result as the drill fills it in (``size_bytes``, ``phases``,
    ``tables``) and writes a line every ``interval`` seconds from a thread of its own, the
    first only once the drill has run that long, so a short drill stays quiet."""

    thread_name = "opsready-drill-progress"

    def __init__(self, result: _DrillState, total_bytes: int, tables: int,
                 write: Callable[[str], None], interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(write, interval, clock)
        self.result, self.total, self.tables = result, total_bytes, tables
        self._started = clock()

    def line(self) -> str:
        """Where the drill is now, in one line."""
        phases = self.result.phases
        elapsed = self._clock() - self._started
        if "download" not in phases:
            mib = self.result.size_bytes / (1 << 20)
            if self.total:
                detail = (f"downloaded {mib:.1f} of {self.total / (1 << 20):.1f} MiB "
                          f"({100 * self.result.size_bytes / self.total:.0f}%)")
            else:
                detail = f"downloaded {mib:.1f} MiB"
        elif "restore" not in phases:
            since = elapsed - sum(v for k, v in phases.items() if k in ("create", "download"))
            detail = f"restoring, {max(since, 0.0):.0f}s so far"
        else:
            detail = f"verified {len(self.result.tables or {})} of {self.tables} tables"
        return f"[opsready] restore drill, {elapsed:.0f}s: {detail}"

    def lines(self) -> list[str]:
        return [self.line()]


class _DrillState(Protocol):
    size_bytes: int
    phases: dict[str, float]
    tables: dict[str, int | None]
