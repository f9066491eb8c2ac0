"""Independent requests of a criterion overlap, bounded, and keep their order."""

from __future__ import annotations

import threading
import time

import pytest

from opsready.probes._parallel import in_parallel


def test_results_keep_the_order_of_the_calls() -> None:
    calls = [lambda i=i: (time.sleep(0.01 * (5 - i)), i)[1] for i in range(5)]
    assert in_parallel(calls) == [0, 1, 2, 3, 4]


def test_at_most_the_limit_run_at_once_and_they_overlap() -> None:
    running, peak, lock = 0, 0, threading.Lock()

    def call() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1

    in_parallel([call] * 12, limit=3)
    assert peak == 3


def test_the_first_failure_by_position_is_raised_after_all_finished() -> None:
    finished: list[int] = []

    def ok(i: int) -> int:
        time.sleep(0.02)
        finished.append(i)
        return i

    def fail(msg: str) -> int:
        raise ValueError(msg)

    with pytest.raises(ValueError, match="first"):
        in_parallel([lambda: ok(0), lambda: fail("first"), lambda: fail("second"), lambda: ok(3)])
    assert sorted(finished) == [0, 3]
