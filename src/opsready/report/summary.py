"""The fleet view: ``opsready summary REPORT_DIR...`` over the bundles of several environments.

Each bundle is verified first (every hash of ``MANIFEST.sha256``, and the signature when a
public key is given). The summary is one self-contained ``summary.html`` and a
``summary.json``: one row per environment (its newest run among the directories given), one
column per ticket, each cell a status badge linking into that environment's bundle, and the
age of each run. A bundle that fails verification is marked on its row, and its statuses are
not shown as if they could be trusted.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from opsready import _clock
from opsready._errors import ConfigError
from opsready._options import ExitCode
from opsready.report.manifest import verify_bundle
from opsready.report.model import Readiness

__all__ = ["SUMMARY_SCHEMA", "FleetRow", "build_rows", "render_html", "summary_command"]

SUMMARY_SCHEMA = "opsready.fleet/v1"


@dataclass
class FleetRow:
    """One bundle: its environment, whether it verified, and its tickets' statuses."""

    report_dir: Path
    environment: str
    run_id: str = ""
    finished_at: dt.datetime | None = None
    verified: bool = False
    problems: list[str] = field(default_factory=list)
    signed_by: str | None = None
    gate: str = ""
    statuses: dict[str, str] = field(default_factory=dict)
    titles: dict[str, str] = field(default_factory=dict)
    # Why the run's statuses are not the whole picture (it stopped early, or could not use a
    # check module), or None.
    partial: str | None = None

    def age_text(self, now: dt.datetime) -> str:
        if self.finished_at is None:
            return "unknown"
        hours = (now - self.finished_at).total_seconds() / 3600
        if hours < 1:
            return f"{max(int(hours * 60), 0)} min"
        if hours < 48:
            return f"{hours:.0f} h"
        return f"{hours / 24:.0f} days"


def _row(report_dir: Path, public_key: Any) -> FleetRow:
    row = FleetRow(report_dir=report_dir, environment=report_dir.name)
    check = verify_bundle(report_dir)
    row.problems = check.describe()
    if public_key is not None:
        from opsready.report.signing import check_signature

        signature = check_signature(report_dir, public_key)
        row.signed_by = signature.signed_by
        if not signature.ok:
            row.problems.insert(0, f"signature: {signature.problem}")
    try:
        readiness = Readiness.model_validate_json((report_dir / "readiness.json").read_bytes())
    except (OSError, ValidationError) as exc:
        row.problems.append(f"readiness.json cannot be read as opsready.readiness/v1 ({type(exc).__name__})")
        return row
    run = readiness.run
    row.environment, row.run_id, row.finished_at = run.environment, run.id, run.finished_at
    row.gate = (f"{','.join(readiness.gate.priorities)} {'passed' if readiness.gate.passed else 'FAILED'}"
                if readiness.gate.priorities else "none")
    row.statuses = {t.id: t.status for t in readiness.tickets}
    row.partial = "; ".join(readiness.gaps()) or None
    row.titles = {t.id: t.title for t in readiness.tickets}
    row.verified = not row.problems
    return row


def build_rows(report_dirs: list[Path], public_key: Any = None) -> list[FleetRow]:
    """One row per environment: the newest run among the given directories (ties keep the
    later argument); rows sorted by environment name."""
    newest: dict[str, FleetRow] = {}
    for report_dir in report_dirs:
        row = _row(report_dir.resolve(), public_key)
        key = row.environment
        current = newest.get(key)
        later = row.finished_at is not None and (current is None or current.finished_at is None
                                                 or row.finished_at >= current.finished_at)
        if current is None or later:
            newest[key] = row
    return [newest[k] for k in sorted(newest)]


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _link(row: FleetRow, out_dir: Path, anchor: str = "") -> str:
    target = row.report_dir / "index.html"
    try:
        rel = Path(os.path.relpath(target, out_dir)).as_posix()
    except ValueError:
        rel = target.as_posix()
    return rel + (f"#{anchor}" if anchor else "")


_CSS = """
body { font-family: Helvetica, Arial, sans-serif; color: #111; }
table { border-collapse: collapse; } th, td { border: 1px solid #999; padding: 4px 8px; text-align: left; }
th { background: #eee; }
.badge { display: inline-block; padding: 1px 6px; border-radius: 8px; font-weight: bold; border: 2px solid #000;
  white-space: nowrap; color: #000; background: #fff; text-decoration: none; }
.badge.done { background: #1b5e20; border-color: #1b5e20; color: #fff; }
.badge.open { border: 3px double #b00020; color: #b00020; }
.badge.unverified { background: #fff3e0; border-style: dashed; border-color: #8a4b00; color: #5c3200; }
.badge.waived { background: #ede7f6; border-style: dotted; border-color: #4a148c; color: #4a148c; }
.badge.untrusted { background: #fff; border-style: dashed; color: #b00020; }
.failed { color: #b00020; font-weight: bold; }
"""
_SYMBOL = {"done": "\u2713", "open": "\u2717", "unverified": "?", "waived": "~"}


def render_html(rows: list[FleetRow], out_dir: Path, now: dt.datetime) -> str:
    tickets: list[str] = []
    titles: dict[str, str] = {}
    for row in rows:
        for tid in row.statuses:
            if tid not in tickets:
                tickets.append(tid)
        titles.update(row.titles)
    failed = [r for r in rows if not r.verified]
    head = "".join(f'<th><abbr title="{_e(titles.get(t, t))}">{_e(t)}</abbr></th>' for t in tickets)
    body = []
    for row in rows:
        env = f'<a href="{_e(_link(row, out_dir))}">{_e(row.environment)}</a>'
        state = ("bundle verified" + (f", signed by {row.signed_by}" if row.signed_by else "")
                 if row.verified else "bundle FAILED verification: " + "; ".join(row.problems))
        cls = "" if row.verified else ' class="failed"'
        cells = []
        for tid in tickets:
            status = row.statuses.get(tid)
            if status is None:
                cells.append("<td>not in this run</td>")
            elif not row.verified:
                cells.append(f'<td><a class="badge untrusted" href="{_e(_link(row, out_dir, "ticket-" + tid))}">'
                             f"? untrusted ({_e(status)})</a></td>")
            else:
                cells.append(f'<td><a class="badge {_e(status)}" href="{_e(_link(row, out_dir, "ticket-" + tid))}">'
                             f"{_e(_SYMBOL.get(status, ''))} {_e(status)}</a></td>")
        body.append(f"<tr><th>{env}<br><small>run {_e(row.run_id or 'unknown')}, "
                    f"{_e(row.age_text(now))} old; gate {_e(row.gate or 'unknown')}</small>"
                    f"<br><small{cls}>{_e(state)}</small>"
                    + (f'<br><small class="failed">partial: {_e(row.partial)}</small>' if row.partial else "")
                    + f"</th>{''.join(cells)}</tr>")
    verdict = (f"{len(rows)} environment{'s' if len(rows) != 1 else ''} · "
               + (f"{len(failed)} bundle{'s' if len(failed) != 1 else ''} FAILED verification"
                  if failed else "every bundle verified"))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>opsready fleet summary</title>"
        f"<style>{_CSS}</style></head><body>"
        f'<h1>opsready fleet summary</h1><p class="verdict" id="verdict"><strong>{_e(verdict)}</strong></p>'
        f"<p>Written {_e(now.isoformat(timespec='seconds'))}. Each cell links into that environment's "
        "report; a bundle that fails verification is marked, and its statuses are not to be trusted.</p>"
        f'<table id="fleet"><thead><tr><th>environment</th>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
        "</table></body></html>\n"
    )


def render_json(rows: list[FleetRow], out_dir: Path, now: dt.datetime) -> str:
    data = {
        "schema": SUMMARY_SCHEMA,
        "generated_at": now.isoformat(),
        "environments": [
            {
                "environment": r.environment, "run_id": r.run_id or None,
                "report": _link(r, out_dir),
                "finished_at": r.finished_at.isoformat() if r.finished_at else None,
                "age_hours": round((now - r.finished_at).total_seconds() / 3600, 2) if r.finished_at else None,
                "verified": r.verified, "problems": r.problems, "signed_by": r.signed_by, "gate": r.gate or None,
                "statuses": r.statuses, "partial": r.partial,
            }
            for r in rows
        ],
    }
    return json.dumps(data, indent=2) + "\n"


def summary_command(report_dirs: list[Path], out_dir: Path, public_key_path: Path | None, *,
                    stdout: TextIO | None = None, stderr: TextIO | None = None) -> ExitCode:
    """``opsready summary REPORT_DIR... [--out DIR] [--public-key FILE]``."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    for d in report_dirs:
        if not d.is_dir():
            print(f"opsready summary: {d} is not a report directory; pass directories such as reports/latest",
                  file=err)
            return ExitCode.USAGE
    public_key = None
    if public_key_path is not None:
        from opsready.report.signing import load_public_key

        try:
            public_key = load_public_key(public_key_path)
        except ConfigError as exc:
            print(f"opsready summary: --public-key {exc}", file=err)
            return ExitCode.USAGE
    rows = build_rows(report_dirs, public_key)
    now = _clock.now()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        resolved = out_dir.resolve()
        (out_dir / "summary.html").write_text(render_html(rows, resolved, now), encoding="utf-8")
        (out_dir / "summary.json").write_text(render_json(rows, resolved, now), encoding="utf-8")
    except OSError as exc:
        print(f"opsready summary: cannot write to {out_dir} ({exc.strerror or exc}); pass --out DIR", file=err)
        return ExitCode.USAGE
    for row in rows:
        state = "verified" if row.verified else "FAILED: " + "; ".join(row.problems)
        counts: dict[str, int] = {}
        for status in row.statuses.values():
            counts[status] = counts.get(status, 0) + 1
        shown = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        partial = f"; partial: {row.partial}" if row.partial else ""
        print(f"{row.environment}: run {row.run_id or 'unknown'}, {shown or 'no tickets'}; bundle {state}{partial}",
              file=out)
    print(f"summary: {out_dir / 'summary.html'}", file=out)
    return ExitCode.FAILED if any(not r.verified for r in rows) else ExitCode.OK
