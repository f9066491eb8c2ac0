"""Files of a run: ``readiness.json``, ``reports/history.jsonl``, ``reports/latest``,
and the console table. Each takes the readiness model."""

from __future__ import annotations

import json
import os
from pathlib import Path

from opsready.report import history as history_file
from opsready.report.model import Readiness

__all__ = [
    "append_history",
    "console_table",
    "previous_run",
    "update_latest",
    "write_json",
]


def write_json(out_dir: Path, readiness: Readiness) -> Path:
    path = out_dir / "readiness.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(readiness.dump_json(), encoding="utf-8")
    tmp.replace(path)
    return path


def previous_run(history: Path, environment: str) -> tuple[dict[str, str] | None, str | None]:
    """The last known status of each ticket in earlier runs of ``environment``, and the id of
    the newest such run.

    A run limited with ``--ticket`` records only the tickets it judged, so a ticket keeps the
    status of the last run that looked at it.
    """
    statuses_so_far: dict[str, str] = {}
    last_id: str | None = None
    # Across rotated segments too; a torn line from an interrupted run is skipped.
    for entry in history_file.entries(history, environment):
        statuses = entry.get("statuses")
        if isinstance(statuses, dict):
            statuses_so_far.update({str(k): str(v) for k, v in statuses.items()})
            last_id = str(entry.get("run_id"))
    return (statuses_so_far if last_id is not None else None), last_id


def append_history(history: Path, readiness: Readiness, report_dir: Path) -> None:
    """One line for this run. Carry-forward reads ``environment``, ``started_at`` and
    ``report_dir`` from it to find the earlier bundles."""
    history.parent.mkdir(parents=True, exist_ok=True)
    run = readiness.run
    entry = {
        "run_id": run.id,
        "environment": run.environment,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat(),
        "report_dir": str(report_dir),
        "gate_passed": readiness.gate.passed,
        "counts": readiness.counts.model_dump(),
        # Only the tickets this run judged: a --ticket run says nothing of the others.
        "statuses": readiness.judged,
        # The numbers the baseline charts draw (the drill's RTO, the newest backup's age).
        "measures": history_file.measures_of(readiness),
    }
    history_file.rotate_if_full(history)
    with history.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry, sort_keys=True) + "\n")


def update_latest(reports_root: Path, report_dir: Path) -> None:
    """Point ``reports_root/latest`` at ``report_dir`` (a relative symlink, replaced atomically)."""
    link = reports_root / "latest"
    try:
        target = os.path.relpath(report_dir, reports_root)
    except ValueError:
        target = str(report_dir)
    tmp = reports_root / ".latest.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    tmp.replace(link)


def console_table(readiness: Readiness) -> list[str]:
    """A compact table for the end of every run; under a ticket that is not done, what was
    not checked, and under any ticket, the passes carried forward from earlier runs."""
    rows = [("ticket", "priority", "status", "criteria", "title")]
    details: list[list[str]] = [[]]
    for t in readiness.tickets:
        rows.append((t.id, t.priority, t.status, f"{t.passed}/{t.total}", t.title))
        lines = [f"    {line}" for line in t.not_checked] if t.status != "done" else []
        lines += [f"    {line}" for line in t.carried_forward]
        details.append(lines)
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = []
    for row, extra in zip(rows, details, strict=True):
        lines.append("  ".join(row[i].ljust(widths[i]) for i in range(4)) + "  " + row[4])
        lines.extend(extra)
    gate = readiness.gate
    pri = ",".join(gate.priorities) or "none"
    if not gate.priorities:
        lines.append("gate: none (every result is reported, nothing blocks)")
    elif gate.passed:
        lines.append(f"gate {pri}: passed")
    else:
        lines.append(f"gate {pri}: FAILED, blocking: {', '.join(gate.blocking)}")
    if readiness.diff.regressed:
        lines.append(f"regressed since the previous run: {', '.join(readiness.diff.regressed)}")
    for warning in readiness.waivers.warnings:
        lines.append(f"waiver not applied: {warning}")
    if readiness.run.clock_moved_to is not None:
        lines.append(f"clock moved to {readiness.run.clock_moved_to.isoformat()} (OPSREADY_TODAY)")
    return lines
