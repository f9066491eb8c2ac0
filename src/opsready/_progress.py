"""Progress for long criteria (a restore drill, a rollback drill, a bounded wait for a trace).

With workers, the controller hears when each criterion starts and finishes; a heartbeat
thread there names every criterion still running after ``interval`` seconds, so a long run
never looks hung. The controller runs no checks itself, so its output is never captured.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["Heartbeat"]


class Heartbeat:
    def __init__(self, write: Callable[[str], None], interval: float = 15.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._write = write
        self._interval = interval
        self._clock = clock
        self._running: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

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

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="opsready-heartbeat", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            for line in self.due():
                self._write(line)
