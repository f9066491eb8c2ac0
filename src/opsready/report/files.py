"""Files of a run: its report directory, ``readiness.json``, ``reports/history.jsonl``,
``reports/latest``, and the console table. Each writer takes the readiness model.

Concurrent runs lose nothing: each claims its own report directory exclusively (a name with
a short run id, or an ``--out`` directory that is new or empty); ``history.jsonl`` gets one
whole line per run, appended under an exclusive lock; ``latest`` is replaced atomically,
through a temporary link of the run's own.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

from opsready._errors import ConfigError
from opsready.report import history as history_file
from opsready.report.model import Readiness

__all__ = [
    "CLAIM_NAME",
    "append_history",
    "claim_report_dir",
    "console_table",
    "file_in_the_way",
    "previous_run",
    "release_report_dir",
    "update_latest",
    "write_json",
]

# Marks a report directory as claimed by one run (its id inside) until the run publishes.
CLAIM_NAME = ".opsready-run"


def file_in_the_way(path: Path) -> Path | None:
    """The nearest ancestor of ``path`` that exists and is not a directory, if any: creating
    ``path`` would fail there with an error that does not say so."""
    return next((p for p in path.parents if p.exists() and not p.is_dir()), None)


def claim_report_dir(path: Path, run_id: str, source: str = "--out") -> None:
    """Make ``path`` this run's report directory, or raise ``ConfigError`` (one line): it is a
    file, it cannot be created or written, or it already holds something (another run's
    report). Calling it again with the same run id is a no-op."""
    if path.exists() and not path.is_dir():
        raise ConfigError(source, str(path), "is a file, not a directory",
                          "pass a new directory for the report")
    blocking = file_in_the_way(path)
    if blocking is not None:
        # mkdir's FileExistsError would read like another run's claim.
        raise ConfigError(source, str(path), f"cannot be created: {blocking} is a file, not a directory",
                          "pass a directory under a directory this user can write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            path.mkdir()
        marker = path / CLAIM_NAME
        if marker.is_file() and marker.read_text(encoding="utf-8", errors="replace").strip() == run_id:
            return
        if any(p.name != CLAIM_NAME for p in path.iterdir()) or marker.exists():
            raise ConfigError(source, str(path), "already holds files (another run's report?)",
                              "pass a new or empty directory; each run writes its own")
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise ConfigError(source, str(path), "was claimed by another run at the same moment",
                          "pass a new directory for this run") from None
    except OSError as exc:
        reason = exc.strerror or errno.errorcode.get(exc.errno or 0, type(exc).__name__)
        raise ConfigError(source, str(path), f"cannot be created or written ({reason})",
                          "pass a directory this user can write") from None
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(run_id + "\n")


def release_report_dir(path: Path) -> None:
    """Remove the claim marker once the bundle is complete (it is not part of the bundle)."""
    with contextlib.suppress(OSError):
        (path / CLAIM_NAME).unlink()


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


@contextlib.contextmanager
def _locked(history: Path) -> Iterator[None]:
    """An exclusive ``flock`` for the block, on a lock file beside ``history``: the history
    itself may be moved aside (rotated) while runs wait for the lock."""
    fd = os.open(history.with_name(f".{history.name}.lock"), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def append_history(history: Path, readiness: Readiness, report_dir: Path) -> None:
    """One line for this run, written whole under an exclusive lock, so concurrent runs
    append one valid line each. Carry-forward reads ``environment``, ``started_at`` and
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
    line = (json.dumps(entry, sort_keys=True) + "\n").encode("utf-8")
    with _locked(history):
        history_file.rotate_if_full(history)
        fd = os.open(history, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            # A torn line left by a run killed mid-write must not swallow this one.
            if os.fstat(fd).st_size and _last_byte(history) != b"\n":
                line = b"\n" + line
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)


def _last_byte(path: Path) -> bytes:
    with path.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1)


def update_latest(reports_root: Path, report_dir: Path) -> None:
    """Point ``reports_root/latest`` at ``report_dir`` (a relative symlink, replaced atomically)."""
    link = reports_root / "latest"
    try:
        target = os.path.relpath(report_dir, reports_root)
    except ValueError:
        target = str(report_dir)
    # A temporary name of this run's own: concurrent runs never trip over each other's.
    tmp = reports_root / f".latest.{report_dir.name}.{os.getpid()}.tmp"
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
