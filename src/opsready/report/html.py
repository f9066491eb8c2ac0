"""The readiness section of ``index.html``: a one-line verdict, the readiness table, then the
gate, the run, waivers, attestations, the diff, the scope, the baselines over time, the tables
the checks recorded (the SLO table), and each ticket with its actions and its criteria's
evidence, each criterion with its age (judged in this run, or carried forward from when).

pytest-html renders the per-test log; this section is inserted at the top of its page so the
auditor reads the verdict first. Everything the target sent back is escaped.

The section needs no JavaScript: evidence folds with ``<details>``, charts are inline SVG, and
nothing is fetched, so it reads the same under a strict Content-Security-Policy (Jenkins serves
reports with ``sandbox; default-src 'none'``, which also drops the inline style sheet: the page
is then unstyled but complete). Status badges carry their word, never colour alone. In print,
the pytest-html log is left out, the tickets follow the readiness table, and evidence stays
folded to its one-line summaries.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

from opsready.evidence import AttachmentItem, EvidenceItem, MeasureItem, TableItem
from opsready.report.charts import Series, render_series
from opsready.report.model import NOT_RUN, ActionResult, Criterion, Readiness, Ticket

__all__ = ["inject", "render_section", "verdict_line"]

_CSS = """
#opsready { font-family: Helvetica, Arial, sans-serif; margin-bottom: 2em; color: #111; }
#opsready .verdict { font-size: 1.25em; font-weight: bold; margin: .4em 0 .6em; }
#opsready table { border-collapse: collapse; margin: .5em 0 1em; }
#opsready th, #opsready td { border: 1px solid #999; padding: 4px 8px; text-align: left; vertical-align: top; }
#opsready th { background: #eee; }
#opsready .id { white-space: nowrap; }
#opsready .badge { display: inline-block; padding: 1px 8px; border-radius: 9px; font-weight: bold;
  border: 2px solid #000; background: #fff; color: #000; white-space: nowrap; }
#opsready .badge.done { background: #1b5e20; border-color: #1b5e20; color: #fff; }
#opsready .badge.open { background: #fff; border: 3px double #b00020; color: #b00020; }
#opsready .badge.unverified { background: #fff3e0; border-style: dashed; border-color: #8a4b00; color: #5c3200; }
#opsready .badge.waived { background: #ede7f6; border-style: dotted; border-color: #4a148c; color: #4a148c; }
#opsready .badge.attested { background: #e8f5e9; border-color: #1b5e20; color: #1b5e20; }
#opsready .badge.not_covered { background: #fff3e0; border-style: dashed; border-color: #8a4b00; color: #5c3200; }
#opsready .pass { color: #1b5e20; } #opsready .fail { color: #b00020; font-weight: bold; }
#opsready .error { color: #8a4b00; font-weight: bold; } #opsready .skip { color: #555; }
#opsready pre { background: #f5f5f5; padding: 6px; max-height: 24em; overflow: auto; white-space: pre-wrap; }
#opsready .gate-pass { color: #1b5e20; } #opsready .gate-fail { color: #b00020; }
#opsready .warn { color: #b00020; } #opsready .carried { color: #1b5e20; font-style: italic; }
#opsready details { margin: .2em 0; } #opsready summary { cursor: pointer; }
#opsready .chart-row { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
#opsready .chart-numbers { max-height: 220px; overflow: auto; }
#opsready .chart-numbers table { margin: 0; font-size: .9em; }
#opsready figure { margin: 0 0 1.5em; }
@media print {
  body > *:not(#opsready) { display: none !important; }
  #opsready { display: flex; flex-direction: column; }
  #opsready > .report-part { order: 3; }
  #opsready > .report-head { order: 1; }
  #opsready > .report-tickets { order: 2; }
  #opsready > .test-log { display: none; }
  #opsready pre { max-height: none; overflow: visible; }
  #opsready .chart-numbers { max-height: none; overflow: visible; }
  #opsready details:not([open]) > :not(summary) { display: none; }
  #opsready .ticket { break-inside: avoid-page; }
  #opsready a { color: inherit; text-decoration: none; }
}
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


_SYMBOL = {"done": "\u2713", "open": "\u2717", "unverified": "?", "waived": "~", "attested": "\u2713",
           "not_covered": "?"}


def _badge(status: str) -> str:
    """A status badge: its word (and a symbol), so it reads without colour."""
    symbol = _SYMBOL.get(status, "")
    word = status.replace("_", " ")
    return f'<span class="badge {_e(status)}">{_e(symbol)} {_e(word)}</span>'


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _rows_table(rows: list[dict[str, Any]]) -> str:
    headers: list[str] = []
    for row in rows:
        headers += [k for k in row if k not in headers]
    return _table(headers, [[_e(_cell(row.get(h))) for h in headers] for row in rows])


def _size(n: int) -> str:
    return f"{n} bytes" if n < 1024 else (f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.1f} MiB")


def _summary(item: EvidenceItem) -> str:
    """One line that stands for the item when it is folded (and in print)."""
    if isinstance(item, MeasureItem):
        return "not measured" if item.value is None else f"{item.value:.6g} {item.unit}".strip()
    if isinstance(item, TableItem):
        return f"table, {len(item.rows)} row{'s' if len(item.rows) != 1 else ''}"
    if isinstance(item, AttachmentItem):
        return f"document, {item.mime}"
    value = item.value
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    text = " ".join(text.split())
    return text if len(text) <= 90 else text[:87] + "..."


def _evidence(items: list[EvidenceItem]) -> str:
    parts = []
    for item in items:
        name = _e(item.name)
        cut = ""
        if item.cut is not None:
            cut = (f' <span class="warn">cut from {_e(_size(item.cut.original_bytes))} to fit the bound; the whole '
                   f'item: <a href="{_e(item.cut.file)}">{_e(item.cut.file)}</a></span>')
        if isinstance(item, MeasureItem):
            # A number is its own summary: nothing to unfold.
            parts.append(f'<div class="evidence"><strong>{name}</strong>: <code>{_e(_summary(item))}</code></div>')
            continue
        if isinstance(item, AttachmentItem):
            if item.encoding == "base64":
                body = f"<p><em>binary attachment ({_e(item.mime)}), base64 in readiness.json</em></p>"
            else:
                body = f"<pre>{_e(item.value)}</pre>"
        elif isinstance(item, TableItem):
            body = (f"<p><small>{_e(item.note)}</small></p>" if item.note else "") + _rows_table(item.rows)
        else:
            body = _record_body(item.value)
        parts.append(f'<details class="evidence"><summary><strong>{name}</strong>: {_e(_summary(item))}{cut}'
                     f"</summary>{body}</details>")
    return "".join(parts)


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _record_body(value: Any) -> str:
    """A recorded value as a reader wants it: a list of flat records as a table, a flat mapping
    as a key/value table, anything else as indented JSON."""
    if isinstance(value, list) and value and all(
            isinstance(row, dict) and all(_scalar(v) for v in row.values()) for row in value):
        return _rows_table([{str(k): v for k, v in row.items()} for row in value])
    if isinstance(value, dict) and value and all(_scalar(v) for v in value.values()):
        return _table(["key", "value"], [[_e(k), _e(_cell(v))] for k, v in value.items()])
    text = value if isinstance(value, str) else json.dumps(value, indent=2, sort_keys=True)
    return f"<pre>{_e(text)}</pre>"


def _lines(lines: list[str]) -> str:
    return "".join(f"<br><small>{_e(line)}</small>" for line in lines)


def _anchor(criterion_id: str) -> str:
    return "criterion-" + "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in criterion_id)


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
        f'<div class="criterion" id="{_e(_anchor(c.id))}"><p><span class="{_e(c.outcome)}">[{_e(label)}]</span> '
        f'<strong>{_e(c.title)}</strong> <small>{_e(c.id)} · {c.duration_s:.2f}s</small></p>'
        + age
        + (f"<pre>{_e(c.message)}</pre>" if c.message and c.carried_forward is None else "")
        + _evidence(c.evidence) + "</div>"
    )


def _action_row(a: ActionResult, ticket: Ticket) -> list[str]:
    if a.attestation is not None:
        at = a.attestation
        proof = (f"attested by {_e(at.attested_by)} on {_e(at.date.isoformat())}, approved by "
                 f"{_e(at.approved_by)}, expires {_e(at.expires.isoformat())}: "
                 f'<a href="{_e(at.evidence)}">evidence</a>')
    elif a.criteria:
        ran = {c.id: c for c in ticket.criteria}
        items = []
        for cid, result in a.outcomes.items():
            title = ran[cid].title if cid in ran else cid
            items.append(f'<a href="#{_e(_anchor(cid))}">{_e(title)}</a> <span class="{_e(result)}">'
                         f"[{_e(result)}]</span>")
        missing = [n for n in a.criteria if not any(cid.split("::", 1)[-1].split("[")[0] == n for cid in a.outcomes)]
        items += [f"<code>{_e(n)}</code> [did not run]" for n in missing]
        proof = "<br>".join(items)
    else:
        proof = "manual: no valid attestation" if a.manual else "nothing: the catalogue names no criterion"
    outcome = _badge(a.status) + (_lines([a.reason]) if a.reason else "")
    return [_e(a.action), proof, outcome]


def verdict_line(r: Readiness) -> str:
    """``8 of 11 done · 2 unverified · 1 open · gate P0,P1 passed``: what a reader sees first."""
    c = r.counts
    parts = [f"{c.done} of {len(r.tickets)} done"]
    parts += [f"{n} {name}" for name, n in (("unverified", c.unverified), ("open", c.open), ("waived", c.waived)) if n]
    gate = r.gate
    if not gate.priorities:
        parts.append("no gate")
    else:
        parts.append(f"gate {','.join(gate.priorities)} {'passed' if gate.passed else 'FAILED'}")
    return " · ".join(parts + r.gaps())


def _partial_run(r: Readiness) -> list[str]:
    """What makes this report partial, said before the table: an auditor must not read a run
    that stopped early, or that could not use a check module, as a whole one."""
    notes = []
    if r.run.interrupted:
        not_run = sum(1 for t in r.tickets for c in t.criteria
                      if c.outcome == "skip" and c.message.startswith(f"{NOT_RUN}: "))
        what = "1 criterion" if not_run == 1 else f"{not_run} criteria"
        notes.append(f"This run did not finish: {what} did not run (each says why, under its ticket), so "
                     f"their tickets cannot be done in this report.")
    notes += [f"Check module not used: {e}" for e in r.scope.module_errors]
    return [f'<p class="warn partial">{_e(n)}</p>' for n in notes]


def render_section(r: Readiness, charts: list[Series] | None = None) -> str:
    """The whole readiness section. ``charts``: the baselines over time (``report.charts``)."""
    run, gate = r.run, r.gate
    rows = []
    for t in r.tickets:
        notes = ([t.note] if t.note else []) + (t.not_checked if t.status != "done" else [])
        notes += t.carried_forward
        rows.append([
            f'<a class="id" href="#ticket-{_e(t.id)}">{_e(t.id)}</a>',
            _e(t.title),
            _e(t.priority),
            _badge(t.status) + _lines(notes),
            f"{t.passed}/{t.total}",
            f'<a href="#ticket-{_e(t.id)}">evidence</a>',
        ])
    out = [f"<style>{_CSS}</style>", '<section id="opsready">', '<div class="report-head">']
    out.append(f'<p class="verdict" id="verdict">{_e(verdict_line(r))}</p>')
    out.extend(_partial_run(r))
    out.append("<h2>Readiness</h2>")
    out.append(_table(["ticket", "title", "priority", "status", "criteria passed", "evidence"], rows))
    out.append("</div>")
    out.append('<div class="report-part">')

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
        ["bundle signed by", f"<code>{_e(run.signing_key)}</code> (MANIFEST.sha256.sig; check it with "
         "<code>opsready verify-bundle --public-key</code> or <code>ssh-keygen -Y verify</code>)"
         if run.signing_key else "not signed: no signing key was configured (OPSREADY_SIGNING_KEY)"],
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

    att = r.attestations
    if att.applied or att.warnings:
        out.append("<h2>Attestations</h2>")
        if att.applied:
            out.append(_table(
                ["ticket", "action", "attested by", "approved by", "date", "expires", "evidence"],
                [[_e(a.ticket), _e(a.action), _e(a.attested_by), _e(a.approved_by), _e(a.date.isoformat()),
                  _e(a.expires.isoformat()), f'<a href="{_e(a.evidence)}">{_e(a.evidence)}</a>'] for a in att.applied],
            ))
        for warning in att.warnings:
            out.append(f'<p class="warn">Attestation not applied: {_e(warning)}</p>')

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

    if charts:
        out.append(f"<h2>Baselines over time</h2><p><small>From reports/history.jsonl, environment "
                   f"{_e(run.environment)}, this run included.</small></p>")
        out.append(render_series(charts))

    tables = list(r.tables())
    if tables:
        out.append("<h2>Tables</h2>")
        for t, c, item in tables:
            note = f". {item.note}" if item.note else ""
            out.append(f"<h3>{_e(item.name)}</h3><p><small>{_e(t.id)}: {_e(c.title)}{_e(note)}</small></p>"
                       + _rows_table(item.rows))
    out.append("</div>")

    out.append('<div class="report-tickets">')
    out.append("<h2>Criteria</h2>")
    for t in r.tickets:
        out.append(f'<div class="ticket"><h3 id="ticket-{_e(t.id)}">{_e(t.id)} {_e(t.title)} {_badge(t.status)}</h3>')
        if t.note:
            out.append(f"<p>{_e(t.note)}</p>")
        if t.not_checked:
            out.append("<ul>" + "".join(f"<li>{_e(line)}</li>" for line in t.not_checked) + "</ul>")
        if t.actions:
            out.append(_table(["action", "proven by", "outcome"], [_action_row(a, t) for a in t.actions]))
        out.append("</div>")
        for c in t.criteria:
            out.append(_criterion(c))
    out.append("</div>")
    out.append('<h2 class="test-log">Test log</h2></section>')
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
