"""How a run stops early: Ctrl-C, SIGTERM and the run's deadline all end it the same way.

The first stop raises ``KeyboardInterrupt`` in the main thread: a criterion's clean-up runs
(the drill drops its scratch database), pytest ends the session as interrupted, and the
plugin writes the partial report (exit 2). A run with workers forwards the stop to them, so
their criteria clean up too. Every later stop is noted on stderr and otherwise ignored: it
must not cut the clean-up or the report short. While the report is being written, even the
first stop only marks the run interrupted.

The deadline (``deadline_s`` in the environment, ``--deadline``) is a timer that stops the run
like a SIGINT aimed at the main thread, so a check blocked in a socket call wakes up.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = ["StopSignals", "stop_signals"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_NAMES = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM"}


class StopSignals:
    """The stop handling of this process (one per process: see ``stop_signals``)."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.forward_to_children = False
        self._writing = False
        self._pending: str | None = None
        self._previous: dict[int, Any] = {}
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        # The terminal's stderr as it was when the handlers were installed: pytest captures
        # fd 2 while a criterion runs, and these lines must reach the person pressing Ctrl-C.
        self._stderr: int | None = None

    @property
    def stopped(self) -> bool:
        return self.reason is not None

    def install(self) -> None:
        """Take over SIGINT and SIGTERM (main thread only; elsewhere this does nothing)."""
        if threading.current_thread() is not threading.main_thread() or self._previous:
            return
        # A new run in this process starts with no stop of an earlier one.
        self.reason = self._pending = None
        self._writing = self.forward_to_children = False
        with contextlib.suppress(OSError):
            self._stderr = os.dup(2)
        for sig in _SIGNALS:
            with contextlib.suppress(ValueError, OSError):
                self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        self.cancel_deadline()
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, handler in self._previous.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(sig, handler)
        self._previous.clear()
        if self._stderr is not None:
            with contextlib.suppress(OSError):
                os.close(self._stderr)
            self._stderr = None

    def writing_report(self) -> None:
        """From now on a stop only marks the run interrupted: the report is being written."""
        self._writing = True
        self.cancel_deadline()

    def start_deadline(self, seconds: float) -> None:
        """Stop the run after ``seconds``."""
        self.cancel_deadline()
        main = threading.main_thread().ident
        if main is None:
            return

        def expire() -> None:
            with self._lock:
                if self.reason is not None or self._writing:
                    return
                self._pending = f"the run deadline of {seconds:g}s passed (deadline_s)"
            signal.pthread_kill(main, signal.SIGINT)

        self._timer = threading.Timer(seconds, expire)
        self._timer.daemon = True
        self._timer.name = "opsready-deadline"
        self._timer.start()

    def cancel_deadline(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        with self._lock:
            first = self.reason is None
            if first:
                self.reason = self._pending or _NAMES.get(signal.Signals(signum), f"signal {signum}")
        if not first:
            self.say("opsready: already stopping; finishing the clean-up and the report")
            return
        if self.forward_to_children:
            _signal_children(signal.SIGINT)
        if self._writing:
            self.say(f"opsready: {self.reason}: finishing the report, then exiting as interrupted")
            return
        raise KeyboardInterrupt(self.reason)

    def say(self, line: str) -> None:
        """Write a line to the terminal's standard error, past pytest's capture, from any
        thread (a drill running in the background says where it is)."""
        with contextlib.suppress(OSError):
            os.write(self._stderr if self._stderr is not None else 2, (line + "\n").encode())


def _signal_children(sig: int) -> None:
    """Send ``sig`` to this process's children (the xdist workers). Linux ``/proc`` only."""
    for pid in _children():
        with contextlib.suppress(OSError):
            os.kill(pid, sig)


def _children() -> list[int]:
    me = os.getpid()
    found: list[int] = []
    for task in Path(f"/proc/{me}/task").glob("*/children"):
        with contextlib.suppress(OSError, ValueError):
            found += [int(p) for p in task.read_text().split()]
    if found:
        return found
    # Kernels without /proc/.../children: the parent pid is field 4 of /proc/<pid>/stat.
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == me:
                found.append(int(stat.parent.name))
    return found


_instance = StopSignals()


def stop_signals() -> StopSignals:
    """The process's stop handling."""
    return _instance
