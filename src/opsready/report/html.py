"""The readiness section of ``index.html``: the table first, then the gate, the run, waivers,
the diff, the scope, the SLO table and the per-criterion evidence.

pytest-html renders the per-test log; this section is inserted at the top of its page so the
auditor reads the verdict first. Everything the target sent back is escaped.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

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
#opsready .warn { color: #c62828; }
"""


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


def _percent(value: Any) -> str:
    return f"{value * 100:.1f} %" if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


def _badge(status: str) -> str:
    return f'<span class="badge {_e(status)}">{_e(status)}</span>'


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _evidence(items: list[dict[str, Any]]) -> str:
    if not items:
        return ""
    parts = []
    for item in items:
        name = _e(item.get("name", ""))
        if item.get("kind") == "attachment":
            if item.get("encoding") == "base64":
                body = f"<em>binary attachment ({_e(item.get('mime', ''))}), base64 in readiness.json</em>"
            else:
                body = f"<pre>{_e(item.get('value', ''))}</pre>"
        else:
            value = item.get("value")
            text = value if isinstance(value, str) else json.dumps(value, indent=2, sort_keys=True)
            body = f"<pre>{_e(text)}</pre>"
        parts.append(f"<div><strong>{name}</strong>{body}</div>")
    return "".join(parts)


def render_section(r: dict[str, Any]) -> str:
    run, gate = r["run"], r["gate"]
    rows = []
    for t in r["tickets"]:
        rows.append([
            f'<a href="#ticket-{_e(t["id"])}">{_e(t["id"])}</a>',
            _e(t["title"]),
            _e(t["priority"]),
            _badge(t["status"]),
            f'{t["passed"]}/{t["total"]}',
            f'<a href="#ticket-{_e(t["id"])}">evidence</a>'
            + (f"<br><small>{_e(t['note'])}</small>" if t["note"] else ""),
        ])
    out = [f"<style>{_CSS}</style>", '<section id="opsready">', "<h2>Readiness</h2>"]
    out.append(_table(["ticket", "title", "priority", "status", "criteria passed", "evidence"], rows))

    verdict = "passed" if gate["passed"] else "FAILED"
    cls = "gate-pass" if gate["passed"] else "gate-fail"
    pri = ", ".join(gate["priorities"]) or "none"
    blocking = ", ".join(gate["blocking"]) or "none"
    out.append(f'<h2>Gate</h2><p class="{cls}"><strong>Gate {_e(pri)}: {verdict}</strong>. '
               f"Blocking: {_e(blocking)}</p>")

    meta = [
        ["environment", _e(run.get("environment"))],
        ["environment file", _e(run.get("env_file"))],
        ["started", _e(run.get("started_at"))],
        ["finished", _e(run.get("finished_at"))],
        ["suite version", _e(run.get("suite_version"))],
        ["suite git SHA", _e(run.get("git_sha") or "unknown")],
    ]
    for name, digest in (run.get("hashes") or {}).items():
        meta.append([f"sha256 of {_e(name)}", f"<code>{_e(digest or 'absent')}</code>"])
    out.append("<h2>Run</h2>" + _table(["", ""], meta))

    w = r["waivers"]
    out.append("<h2>Waivers</h2>")
    if w["applied"]:
        out.append(_table(
            ["target", "reason", "requested by", "approved by", "expires"],
            [[_e(x[k]) for k in ("target", "reason", "requested_by", "approved_by", "expires")] for x in w["applied"]],
        ))
    else:
        out.append("<p>No waivers apply.</p>")
    for warning in w["warnings"]:
        out.append(f'<p class="warn">Waiver not applied: {_e(warning)}</p>')

    d = r["diff"]
    out.append("<h2>Since the previous run</h2>")
    if d.get("previous_run") is None:
        out.append("<p>No previous run of this environment.</p>")
    else:
        out.append(_table(["", "tickets"], [
            ["previous run", _e(d["previous_run"])],
            ["newly done", _e(", ".join(d["newly_done"]) or "none")],
            ["regressed", _e(", ".join(d["regressed"]) or "none")],
            ["still open", _e(", ".join(d["still_open"]) or "none")],
        ]))
    if d.get("expiring_waivers"):
        out.append("<p class=\"warn\">Waivers expiring within 14 days: "
                   + _e(", ".join(f'{x["target"]} ({x["expires"]})' for x in d["expiring_waivers"])) + "</p>")

    scope = r.get("scope") or {}
    out.append("<h2>Scope</h2>")
    out.append(f"<p>Configured sections: {_e(', '.join(scope.get('configured', [])) or 'none')}. "
               f"Intrusive probes allowed: {_e(', '.join(scope.get('allow_intrusive', [])) or 'none')}.</p>")
    skipped = scope.get("skipped", [])
    if skipped:
        rows = [[_e(s["criterion"]), _e(s["reason"])] for s in skipped]
        out.append(_table(["criterion", "why it did not run"], rows))

    slo = r.get("slo")
    if isinstance(slo, dict) and slo.get("rows"):
        out.append(f"<h2>SLO compliance and error budget (window {_e(slo.get('window_days'))} days)</h2>")
        out.append(_table(
            ["SLO", "target", "current", "compliant", "budget remaining", "burn rate"],
            [[_e(x.get("slo")),
              _e(f'{"≤" if x.get("objective") == "le" else "≥"} {_num(x.get("target"))} {x.get("unit") or ""}'),
              _e(f'{_num(x.get("value"))} {x.get("unit") or ""}'),
              _e({True: "yes", False: "NO"}.get(x.get("compliant"), "unknown")),
              _e(_percent(x.get("budget_remaining"))), _e(_num(x.get("burn_rate")))]
             for x in slo["rows"]],
        ))
        out.append("<p>Budget remaining: the share of the window's error budget still unspent (negative: "
                   "overspent). Burn rate: how fast the budget is being spent now; 1 spends it exactly "
                   "over the window.</p>")

    out.append("<h2>Criteria</h2>")
    for t in r["tickets"]:
        out.append(f'<h3 id="ticket-{_e(t["id"])}">{_e(t["id"])} {_e(t["title"])} {_badge(t["status"])}</h3>')
        if t["note"]:
            out.append(f"<p>{_e(t['note'])}</p>")
        for c in t["criteria"]:
            out.append(
                f'<div class="criterion"><p><span class="{_e(c["outcome"])}">[{_e(c["outcome"])}]</span> '
                f'<strong>{_e(c["title"])}</strong> <small>{_e(c["id"])} · {c["duration_s"]:.2f}s</small></p>'
                + (f"<pre>{_e(c['message'])}</pre>" if c["message"] else "")
                + _evidence(c["evidence"]) + "</div>"
            )
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
