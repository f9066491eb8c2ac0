"""A fake clock for probes that wait: its sleeps advance its time, so waits are observable
and take no time."""

from __future__ import annotations


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now
        self.slept: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
