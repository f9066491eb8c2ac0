"""A hostile report opened in a real browser runs nothing: every criterion runs against a
loopback server whose every answer (bodies, header values, JSON fields, metric labels) is full
of ``<script>``, ``onerror=``, ``javascript:`` links and ``</style>`` breaks, each of which would
change the page title or make a request to a listener on loopback if it ran. The report is then
opened in headless Chromium (Debian's ``chromium``, installed by ``stack/install-deps.sh``)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, child_env, opsready_command
from hostile import CORS_SECTION, SCRIPT_PAYLOAD, HostileServer, Received, Reply, json_body

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    "--virtual-time-budget=8000",
]


def _hostile(payload: str) -> object:
    ascii_payload = payload.encode("ascii", "replace").decode()

    def answer(got: Received) -> Reply:
        headers = {"X-Hostile": ascii_payload, "Access-Control-Allow-Origin": ascii_payload,
                   "Strict-Transport-Security": ascii_payload, "Content-Security-Policy": ascii_payload,
                   "Retry-After": ascii_payload}
        if got.path.startswith("/metrics"):
            label = payload.replace("\\", "\\\\").replace('"', '\\"')
            text = (f"# HELP rate_limit_breaches_total {payload}\n# TYPE rate_limit_breaches_total counter\n"
                    f'rate_limit_breaches_total{{x="{label}"}} 1\n')
            return Reply(200, {**headers, "Content-Type": "text/plain"}, text.encode())
        if got.method == "OPTIONS":
            return Reply(204, headers)
        body = {"status": payload, "version": payload, "state": payload, "merged": False, "message": payload,
                "error": payload, "errorType": payload, "errors": [{"message": payload}], "name": payload,
                "data": {"groups": [{"name": payload, "file": payload, "rules": [
                    {"type": "alerting", "name": payload, "health": payload, "query": payload,
                     "annotations": {"runbook_url": f"javascript:fetch('{payload}')"}}]}]}}
        return Reply(200 if got.path != "/health" else 500, {**headers, "Content-Type": "application/json"},
                     json_body(body))

    return answer


def test_a_hostile_report_runs_nothing_in_a_real_browser(tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is not installed; run `make system-deps` (stack/install-deps.sh) as root")
    with HostileServer(lambda got: Reply(204)) as listener:
        payload = SCRIPT_PAYLOAD.format(port=listener.port)
        with HostileServer(_hostile(payload)) as target:  # type: ignore[arg-type]
            env = tmp_path / "env.yaml"
            env.write_text(f"""
name: hostile
allow_intrusive: [rate_limit_burst, otel_probe_span]
timeout_s: 3
service:
  base_url: {target.url}
  api_key: k-0123456789
  security_headers: {{paths: [/health, /api/v1/actions]}}
  rate_limit: {{path: /api/v1/actions, max_requests: 4, max_seconds: 2, concurrency: 2}}
{CORS_SECTION}prometheus:
  url: {target.url}
  alert_rules: [ServiceDown]
grafana:
  url: {target.url}
  dashboards: [golden]
otel:
  collector_health_url: {target.url}/collector
  otlp_http_url: {target.url}
  trace_api_url: {target.url}
  read_back_timeout_s: 1
github:
  api_url: {target.url}
  repo: relay/relay
  prs: [29]
  deploy_workflow: deploy.yml
  slo_report_workflow: slo-report.yml
  rate_limit_wait_max_s: 0
runbooks:
  source: github
""")
            out = tmp_path / "report"
            proc = subprocess.run(
                [*opsready_command(), "verify", "--env", str(env), "--root", str(ROOT), "--out", str(out),
                 "--gate", "none", "-n", "0"],
                capture_output=True, text=True, timeout=600, env=child_env(), cwd=ROOT, check=False,
            )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        page = (out / "index.html").read_text(encoding="utf-8")
        assert "onerror" in page and "javascript:" in page, "the hostile text did not reach the report"
        before = len(listener.received)
        profile = tmp_path / "chromium-profile"
        dom = subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", (out / "index.html").as_uri()],
            capture_output=True, text=True, timeout=180, check=False,
        )
        requests = [r.path for r in listener.received[before:]]
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert _title(dom.stdout) == "index.html", _title(dom.stdout)
    assert requests == [], f"the report made requests from hostile text: {requests}"
    # The hostile text is in the page, as text.
    assert "&lt;script&gt;document.title" in dom.stdout
    data = json.loads((out / "readiness.json").read_text())
    assert any("<script>document.title=" in json.dumps(c) for t in data["tickets"] for c in t["criteria"])


def _title(dom: str) -> str:
    found = re.search(r"<title[^>]*>(.*?)</title>", dom, re.S)
    return found.group(1) if found else "<no title>"
