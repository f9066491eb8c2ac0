"""Independent requests of one criterion, a few at a time.

Over a real network each request pays a round trip; the preflights of every origin, path
and method, or the dashboards of a list, do not depend on each other, so they overlap. The
HTTP clients (``httpx.Client``) are safe to share between threads, and the number in flight
is bounded, so a target sees a handful of concurrent requests, never a flood.

Not for GitHub: its REST API asks integrations to send requests one at a time, to stay clear
of its secondary rate limits, so the GitHub probe (and what reads through it, such as runbook
links in the repository) stays serial.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["MAX_IN_FLIGHT", "in_parallel"]

T = TypeVar("T")

MAX_IN_FLIGHT = 8


def in_parallel(calls: Sequence[Callable[[], T]], limit: int = MAX_IN_FLIGHT) -> list[T]:
    """The results of ``calls``, in their order, at most ``limit`` running at once. When calls
    raise, the first one's exception (by position) is raised once all have finished."""
    if len(calls) <= 1 or limit <= 1:
        return [call() for call in calls]
    with ThreadPoolExecutor(max_workers=min(limit, len(calls)), thread_name_prefix="opsready-probe") as pool:
        futures = [pool.submit(call) for call in calls]
    return [f.result() for f in futures]
