"""Read-only facts that several criteria share: read once per run, possibly ahead of time.

A probe method marked ``shared_fact`` behaves exactly as before until the run gives its probe
a ``SharedFacts`` (``opsready.prefetch`` does, for the probes it reads ahead on). From then
on each call (method and arguments) is read once: by the read-ahead on its own thread, or by
the first criterion that asks, whichever comes first; a criterion that asks while the
read-ahead is reading waits for that read instead of sending its own.

Errors stay with the criterion that reads the fact: an error the read-ahead met is raised,
with its message, by the first criterion that asks for the fact, exactly as if that
criterion had called the probe; the fact is then forgotten, so a later criterion reads it
afresh, as it did before. A fact that no criterion asks for raises nowhere.

Only reads that nothing in a run changes are marked: rules, bucket settings, listings of
backups, dashboards, workflow listings and files of a repository. A value that moves while a
run goes on (a counter, an SLI) is never a shared fact. One request is marked for another
reason: the service's traced GET, whose trace takes the service's export delay to show, so
it is worth sending early; it is sent once per run either way.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any, Concatenate, ParamSpec, TypeVar

__all__ = ["SharedFacts", "shared_fact"]

P = ParamSpec("P")
S = TypeVar("S")
T = TypeVar("T")


class SharedFacts:
    """The facts of one probe, a future per call (method and arguments)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._facts: dict[Hashable, Future[Any]] = {}
        self._ahead = threading.local()

    def ahead(self, reads: Callable[[], object]) -> None:
        """Run ``reads`` on this thread as the read-ahead: the facts it reads are kept, errors
        included, for the criteria that ask for them."""
        self._ahead.on = True
        try:
            reads()
        except BaseException:  # kept in the fact's future for the criterion that asks
            pass
        finally:
            self._ahead.on = False

    def read(self, key: Hashable, read: Callable[[], T]) -> T:
        """The fact under ``key``: read here when nobody has, else the outcome of that read."""
        with self._lock:
            future = self._facts.get(key)
            mine = future is None
            if future is None:
                future = Future()
                future.set_running_or_notify_cancel()
                self._facts[key] = future
        if mine:
            try:
                future.set_result(read())
            except BaseException as exc:  # handed to whoever reads the fact, as a call would raise it
                future.set_exception(exc)
        try:
            result: T = future.result()
        except BaseException:
            if not getattr(self._ahead, "on", False):
                # Raised once, to the criterion that asked; the next one reads afresh.
                with self._lock:
                    if self._facts.get(key) is future:
                        del self._facts[key]
            raise
        return result

    def known(self) -> list[Hashable]:
        """The calls read so far (or being read)."""
        with self._lock:
            return list(self._facts)


def shared_fact(method: Callable[Concatenate[S, P], T]) -> Callable[Concatenate[S, P], T]:
    """Mark a read-only probe method as a fact criteria may share (see the module docstring).
    The probe keeps its facts in a ``shared`` attribute (``SharedFacts``) once it has one."""
    name = method.__name__

    @functools.wraps(method)
    def read(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        facts: SharedFacts | None = getattr(self, "shared", None)
        if facts is None:
            return method(self, *args, **kwargs)
        key = (name, args, tuple(sorted(kwargs.items())))
        try:
            hash(key)
        except TypeError:
            return method(self, *args, **kwargs)
        return facts.read(key, lambda: method(self, *args, **kwargs))

    return read
