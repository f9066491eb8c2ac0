"""The readiness section of ``index.html``: the table first, then the gate, the run, waivers,
the diff, the scope, the tables the checks recorded (the SLO table) and the per-criterion
evidence, each criterion with its age (judged in this run, or carried forward from when).

pytest-html renders the per-test log; this section is inserted at the top of its page so the
auditor reads the verdict first. Everything the target sent back is escaped.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

from opsready.evidence import AttachmentItem, EvidenceItem, MeasureItem, TableItem
from opsready.report.model import Criterion, Readiness

__all__ = ["inject", "render_section"]

_CSS = """
#opsready { font-family: Helvetica, Arial, sans-serif; margin-bottom: 2em; }
#opsready table { border-collapse: collapse; margin: .5em 0 1em; }
#opsready th, #opsready td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
#opsready th { background: #f3f3f3; }
#opsready .badge { display: inline-block; padding: 1px 8px; border-radius: 9px; color: #fff; font-weight: bold; }
#opsready .done { background: #2e7d32; } #opsready .open { background: #c62828; }
#opsready .unverified { background: #ef6c00; } #opsready .waived { background: #6a1b9a; }
#opsready .pass { color: #2e7d32; } #opsready .fail { color: #c62828; font-weight: bold; }
#opsready .error { color: #ef6c00; font-weight: bold; } #opsready .skip { color: #777; }
#opsready pre { background: #f7f7f7; padding: 6px; max-height: 24em; overflow: auto; white-space: pre-wrap; }
#opsready .gate-pass { color: #2e7d32; } #opsready .gate-fail { color: #c62828; }
#opsready .warn { color: #c62828; } #opsready .carried { color: #2e7d32; font-style: italic; }
"""


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _cell(value: Any) -> str:
    """A table cell: numbers with four significant digits, booleans as yes/no."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return f"{value:.4g}"
    if value is None:
        return "unknown"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def _badge(status: str) -> str:
    return f'<span class="badge {_e(status)}">{_e(status)}</span>'


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _rows_table(rows: list[dict[str, Any]]) -> str:
    headers: list[str] = []
    for row in rows:
        headers += [k for k in row if k not in headers]
    return _table(headers, [[_e(_cell(row.get(h))) for h in headers] for row in rows])


def _evidence(items: list[EvidenceItem]) -> str:
    parts = []
    for item in items:
        name = _e(item.name)
        if isinstance(item, AttachmentItem):
            if item.encoding == "base64":
                body = f"<em>binary attachment ({_e(item.mime)}), base64 in readiness.json</em>"
            else:
                body = f"<pre>{_e(item.value)}</pre>"
        elif isinstance(item, MeasureItem):
            shown = "not measured" if item.value is None else f"{item.value:.6g} {item.unit}".strip()
            body = f" <code>{_e(shown)}</code>"
        elif isinstance(item, TableItem):
            body = (f"<p><small>{_e(item.note)}</small></p>" if item.note else "") + _rows_table(item.rows)
        else:
            value = item.value
            text = value if isinstance(value, str) else json.dumps(value, indent=2, sort_keys=True)
            body = f"<pre>{_e(text)}</pre>"
        parts.append(f"<div><strong>{name}</strong>{body}</div>")
    return "".join(parts)


def _lines(lines: list[str]) -> str:
    return "".join(f"<br><small>{_e(line)}</small>" for line in lines)


def _criterion(c: Criterion) -> str:
    if c.carried_forward is not None:
        cf = c.carried_forward
        age = (f'<p class="carried">{_e(cf.line())}: <a href="{_e(cf.report)}#ticket-{_e(c.id.split("::")[0])}">'
               f"the earlier report</a>. Not run in this run: {_e(cf.not_run_because)}</p>")
        label = "pass, carried forward"
    else:
        age = ""
        label = c.outcome if c.outcome != "skip" else f"skip: {(c.skip_kind or '').replace('_', ' ')}"
    return (
        f'<div class="criterion"><p><span class="{_e(c.outcome)}">[{_e(label)}]</span> '
        f'<strong>{_e(c.title)}</strong> <small>{_e(c.id)} · {c.duration_s:.2f}s</small></p>'
        + age
        + (f"<pre>{_e(c.message)}</pre>" if c.message and c.carried_forward is None else "")
        + _evidence(c.evidence) + "</div>"
    )


def render_section(r: Readiness) -> str:
    run, gate = r.run, r.gate
    rows = []
    for t in r.tickets:
        notes = ([t.note] if t.note else []) + (t.not_checked if t.status != "done" else [])
        notes += t.carried_forward
        rows.append([
            f'<a href="#ticket-{_e(t.id)}">{_e(t.id)}</a>',
            _e(t.title),
            _e(t.priority),
            _badge(t.status) + _lines(notes),
            f"{t.passed}/{t.total}",
            f'<a href="#ticket-{_e(t.id)}">evidence</a>',
        ])
    out = [f"<style>{_CSS}</style>", '<section id="opsready">', "<h2>Readiness</h2>"]
    out.append(_table(["ticket", "title", "priority", "status", "criteria passed", "evidence"], rows))

    verdict = "passed" if gate.passed else "FAILED"
    cls = "gate-pass" if gate.passed else "gate-fail"
    pri = ", ".join(gate.priorities) or "none"
    blocking = ", ".join(gate.blocking) or "none"
    out.append(f'<h2>Gate</h2><p class="{cls}"><strong>Gate {_e(pri)}: {verdict}</strong>. '
               f"Blocking: {_e(blocking)}</p>")

    meta = [
        ["environment", _e(run.environment)],
        ["environment file", _e(run.env_file)],
        ["started", _e(run.started_at.isoformat(timespec="seconds"))],
        ["finished", _e(run.finished_at.isoformat(timespec="seconds"))],
        ["judged as of", _e(run.today.isoformat())
         + (' <span class="warn">(clock moved with OPSREADY_TODAY)</span>' if run.clock_moved_to else "")],
        ["suite version", _e(run.suite_version)],
        ["suite git SHA", _e(run.git_sha or "unknown")],
    ]
    for name, digest in run.hashes.model_dump().items():
        meta.append([f"sha256 of {_e(name)}", f"<code>{_e(digest or 'absent')}</code>"])
    out.append("<h2>Run</h2>" + _table(["", ""], meta))

    w = r.waivers
    out.append("<h2>Waivers</h2>")
    if w.applied:
        out.append(_table(
            ["target", "criteria", "reason", "requested by", "approved by", "expires"],
            [[_e(x.target), _e(", ".join(x.criteria) or "this criterion"), _e(x.reason), _e(x.requested_by),
              _e(x.approved_by), _e(x.expires.isoformat())] for x in w.applied],
        ))
    else:
        out.append("<p>No waivers apply.</p>")
    for warning in w.warnings:
        out.append(f'<p class="warn">Waiver not applied: {_e(warning)}</p>')

    d = r.diff
    out.append("<h2>Since the previous run</h2>")
    if d.previous_run is None:
        out.append("<p>No previous run of this environment.</p>")
    else:
        out.append(_table(["", "tickets"], [
            ["previous run", _e(d.previous_run)],
            ["newly done", _e(", ".join(d.newly_done) or "none")],
            ["regressed", _e(", ".join(d.regressed) or "none")],
            ["still open", _e(", ".join(d.still_open) or "none")],
        ]))
    if d.expiring_waivers:
        out.append("<p class=\"warn\">Waivers expiring within 14 days: "
                   + _e(", ".join(f"{x.target} ({x.expires.isoformat()})" for x in d.expiring_waivers)) + "</p>")

    scope = r.scope
    out.append("<h2>Scope</h2>")
    out.append(f"<p>Configured sections: {_e(', '.join(scope.configured) or 'none')}. "
               f"Intrusive probes allowed: {_e(', '.join(scope.allow_intrusive) or 'none')}. "
               f"Freshness windows for carrying a pass forward: "
               f"{_e(', '.join(f'{k} {v:g} days' for k, v in scope.freshness_days.items()) or 'none')}.</p>")
    if scope.skipped:
        skipped = [[_e(s.criterion), _e(s.kind.replace("_", " ")), _e(s.reason)] for s in scope.skipped]
        out.append(_table(["criterion", "kind", "why it did not run"], skipped))

    tables = list(r.tables())
    if tables:
        out.append("<h2>Tables</h2>")
        for t, c, item in tables:
            note = f". {item.note}" if item.note else ""
            out.append(f"<h3>{_e(item.name)}</h3><p><small>{_e(t.id)}: {_e(c.title)}{_e(note)}</small></p>"
                       + _rows_table(item.rows))

    out.append("<h2>Criteria</h2>")
    for t in r.tickets:
        out.append(f'<h3 id="ticket-{_e(t.id)}">{_e(t.id)} {_e(t.title)} {_badge(t.status)}</h3>')
        if t.note:
            out.append(f"<p>{_e(t.note)}</p>")
        if t.not_checked:
            out.append("<ul>" + "".join(f"<li>{_e(line)}</li>" for line in t.not_checked) + "</ul>")
        for c in t.criteria:
            out.append(_criterion(c))
    out.append("<h2>Test log</h2></section>")
    return "\n".join(out)


def inject(index_html: Path, section: str) -> None:
    """Insert the readiness section at the top of pytest-html's page."""
    page = index_html.read_text(encoding="utf-8")
    marker = "<body>"
    at = page.find(marker)
    if at < 0:
        page = section + page
    else:
        at += len(marker)
        page = page[:at] + "\n" + section + "\n" + page[at:]
    index_html.write_text(page, encoding="utf-8")
