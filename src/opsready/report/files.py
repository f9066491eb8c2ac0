"""Files of a run: ``readiness.json``, ``reports/history.jsonl``, ``reports/latest``,
and the console table."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

NOT_SELECTED = "not selected in this run (--ticket)"

__all__ = [
    "NOT_SELECTED",
    "append_history",
    "console_table",
    "previous_run",
    "update_latest",
    "write_json",
]


def write_json(out_dir: Path, readiness: dict[str, Any]) -> Path:
    path = out_dir / "readiness.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(readiness, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def previous_run(history: Path, environment: str) -> tuple[dict[str, str] | None, str | None]:
    """The last known status of each ticket in earlier runs of ``environment``, and the id of
    the newest such run.

    A run limited with ``--ticket`` records only the tickets it judged, so a ticket keeps the
    status of the last run that looked at it.
    """
    if not history.is_file():
        return None, None
    statuses_so_far: dict[str, str] = {}
    last_id: str | None = None
    with history.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a torn line from an interrupted run must not stop the next one
            if isinstance(entry, dict) and entry.get("environment") == environment:
                statuses = entry.get("statuses")
                if isinstance(statuses, dict):
                    statuses_so_far.update({str(k): str(v) for k, v in statuses.items()})
                    last_id = str(entry.get("run_id"))
    return (statuses_so_far if last_id is not None else None), last_id


def append_history(history: Path, readiness: dict[str, Any], run_id: str, report_dir: Path) -> None:
    history.parent.mkdir(parents=True, exist_ok=True)
    entry = {
        "run_id": run_id,
        "environment": readiness["run"]["environment"],
        "started_at": readiness["run"]["started_at"],
        "finished_at": readiness["run"]["finished_at"],
        "report_dir": str(report_dir),
        "gate_passed": readiness["gate"]["passed"],
        "counts": readiness["counts"],
        # Only the tickets this run judged: a --ticket run says nothing of the others.
        "statuses": {t["id"]: t["status"] for t in readiness["tickets"] if t.get("note") != NOT_SELECTED},
    }
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


def console_table(readiness: dict[str, Any]) -> list[str]:
    """A compact table for the end of every run."""
    rows = [("ticket", "priority", "status", "criteria", "title")]
    for t in readiness["tickets"]:
        rows.append((t["id"], t["priority"], t["status"], f'{t["passed"]}/{t["total"]}', t["title"]))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4] for r in rows]
    gate = readiness["gate"]
    pri = ",".join(gate["priorities"]) or "none"
    if not gate["priorities"]:
        lines.append("gate: none (every result is reported, nothing blocks)")
    elif gate["passed"]:
        lines.append(f"gate {pri}: passed")
    else:
        lines.append(f"gate {pri}: FAILED, blocking: {', '.join(gate['blocking'])}")
    diff = readiness.get("diff") or {}
    if diff.get("regressed"):
        lines.append(f"regressed since the previous run: {', '.join(diff['regressed'])}")
    for warning in readiness["waivers"]["warnings"]:
        lines.append(f"waiver not applied: {warning}")
    return lines
