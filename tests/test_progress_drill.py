"""The restore drill's progress line, phase by phase, on a clock the test moves."""

from __future__ import annotations

from dataclasses import dataclass, field

from opsready._progress import DrillProgress


@dataclass
class _State:
    size_bytes: int = 0
    phases: dict[str, float] = field(default_factory=dict)
    tables: dict[str, int | None] = field(default_factory=dict)


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_each_phase_says_how_far_it_got() -> None:
    state, clock = _State(), _Clock()
    progress = DrillProgress(state, total_bytes=4 << 20, tables=4, write=print, clock=clock)
    state.size_bytes = 1 << 20
    clock.now += 12
    assert progress.line() == "[opsready] restore drill, 12s: downloaded 1.0 of 4.0 MiB (25%)"
    state.size_bytes = 4 << 20
    state.phases.update(create=0.5, download=20.0)
    clock.now += 30
    assert progress.line() == "[opsready] restore drill, 42s: restoring, 22s so far"
    state.phases["restore"] = 60.0
    state.tables.update(workspaces=10, api_keys=20)
    clock.now += 70
    assert progress.line() == "[opsready] restore drill, 112s: verified 2 of 4 tables"


def test_an_unknown_size_says_only_what_arrived() -> None:
    state = _State(size_bytes=3 << 19)
    progress = DrillProgress(state, total_bytes=0, tables=4, write=print, clock=_Clock())
    assert progress.line().endswith("downloaded 1.5 MiB")


def test_a_short_drill_stays_quiet() -> None:
    lines: list[str] = []
    progress = DrillProgress(_State(), total_bytes=1, tables=1, write=lines.append, interval=60)
    progress.start()
    progress.stop()
    assert lines == []
