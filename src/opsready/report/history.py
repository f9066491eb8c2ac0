"""``reports/history.jsonl``: one line per run, append-only and bounded.

When the file holds ``ROTATE_AFTER_LINES`` lines, the next run moves it aside whole, to
``history-<UTC timestamp>.jsonl`` next to it, and starts a new one; no line is ever rewritten.
Readers (the diff against the previous run, carry-forward, the baseline charts) read the
moved-aside segments, oldest first, then the live file, so nothing they need is lost at a
rotation.

Each line also carries the run's measures (``evidence.measure``: the drill's RTO, the newest
backup's age), so the report can chart them over time without opening earlier bundles.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from opsready.report.model import Readiness

__all__ = ["ROTATE_AFTER_LINES", "entries", "lines", "measures_of", "rotate_if_full", "segments"]

ROTATE_AFTER_LINES = 10_000


def segments(history: Path) -> list[Path]:
    """The moved-aside segments, oldest first, then the live file (when present)."""
    archived = sorted(history.parent.glob(f"{history.stem}-*{history.suffix}"))
    return [*archived, *([history] if history.is_file() else [])]


def lines(history: Path) -> Iterator[str]:
    """Every line of every segment, oldest first."""
    for segment in segments(history):
        try:
            with segment.open(encoding="utf-8", errors="replace") as fh:
                yield from fh
        except FileNotFoundError:
            continue  # moved aside by a concurrent run while we listed it: read on


def entries(history: Path, environment: str | None = None) -> Iterator[dict[str, Any]]:
    """Every well-formed entry, oldest first; only ``environment``'s when given. A torn line
    from an interrupted run is skipped."""
    for line in lines(history):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and (environment is None or entry.get("environment") == environment):
            yield entry


def _count_lines(path: Path) -> int:
    count = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            count += chunk.count(b"\n")
    return count


def rotate_if_full(history: Path, limit: int = ROTATE_AFTER_LINES, now: dt.datetime | None = None) -> Path | None:
    """Move ``history`` aside when it holds ``limit`` lines or more; return the new segment's
    path, or None when nothing moved. Call it under the history lock, before appending."""
    if not history.is_file() or _count_lines(history) < limit:
        return None
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%S%fZ")
    target = history.with_name(f"{history.stem}-{stamp}{history.suffix}")
    n = 0
    while target.exists():
        n += 1
        target = history.with_name(f"{history.stem}-{stamp}-{n}{history.suffix}")
    try:
        history.rename(target)
    except FileNotFoundError:
        return None  # another run moved it first
    return target


def measures_of(readiness: Readiness) -> list[dict[str, Any]]:
    """The run's measured numbers, for its history line."""
    return [
        {"ticket": t.id, "criterion": c.id, "name": m.name, "value": m.value, "unit": m.unit}
        for t, c, m in readiness.measures() if m.value is not None
    ]
