"""Canary secrets against servers that reflect what they receive: the real checks run against a
loopback server that answers every request with what it was sent (credentials included) and
with every configured secret, each in several encodings; not one of them may reach the
console, ``index.html``, ``readiness.json``, ``junit.xml``, ``readiness.prom`` or the history.

Also here: a gateway answering 502 in front of the service and the collector makes the
property criteria (CORS, OTLP) unverified, never open; only ``/health`` may fail on it."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest

from conftest import ROOT, child_env, opsready_command
from hostile import CORS_SECTION, HostileServer, Received, Reply, json_body

# Secrets with characters that URL encoding changes, so every encoding differs from the raw.
CANARIES = {
    "CANARY_API_KEY": "dev_CANARYk3yQ7/x+API=01",
    "CANARY_ADMIN_KEY": "adm_CANARYa9dZ/m+ADM=02",
    "CANARY_WEBHOOK": "whsec_CANARYw5hK/s+WHK=03",
    "CANARY_PROM": "prom_CANARYp2rT/b+PRM=04",
    "CANARY_GRAFANA": "glsa_CANARYg8fJ/u+GRF=05",
    "CANARY_GITHUB": "ghp_CANARYh4bV/n+GIT=06",
    "CANARY_RAILWAY": "rw_CANARYr1yE/c+RLW=07",
    "CANARY_S3_ID": "AKIACANARYS3ID000008",
    "CANARY_S3_SECRET": "s3_CANARYs7cL/q+S3S=09",
    "CANARY_PG_PASSWORD": "pg_CANARYd6sN/w+PGP=10",
}
PG_USER = "drill"
COOKIE = "sid_CANARYc0oKie11"


def _encodings(value: str) -> list[str]:
    raw = value.encode()
    found = [value, raw.hex(), raw.hex().upper(), json.dumps(value)[1:-1]]
    for prefix in (b"", b"x", b"xy"):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            found.append(encode(prefix + b"Bearer " + raw + b" tail").decode())
            found.append(encode(prefix + f"{PG_USER}:".encode() + raw).decode())
    once = quote(value, safe="")
    found += [once, quote(once, safe=""), quote(quote(once, safe=""), safe="")]
    return found


def _reflection(got: Received) -> str:
    """Everything a hostile target can echo: what it received and every secret it knows."""
    known = [*got.headers.values(), got.body.decode("utf-8", "replace"), got.path, *CANARIES.values(),
             f"{PG_USER}:{CANARIES['CANARY_PG_PASSWORD']}"]
    return " | ".join(form for value in known for form in _encodings(value))[:60000]


def _reflect(got: Received) -> Reply:
    blob = _reflection(got)
    header_safe = blob.encode("ascii", "replace").decode()[:4000]
    headers = {"Set-Cookie": f"sid={COOKIE}; Path=/", "X-Reflected": header_safe,
               "Access-Control-Allow-Origin": header_safe[:200]}
    if got.path.startswith("/metrics"):
        escaped = blob.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
        text = (f'# HELP rate_limit_breaches_total {escaped[:3000]}\n# TYPE rate_limit_breaches_total counter\n'
                f'rate_limit_breaches_total{{leak="{escaped[:3000]}"}} 1\n')
        return Reply(200, {**headers, "Content-Type": "text/plain"}, text.encode())
    if got.method == "OPTIONS":
        return Reply(204, headers)
    status = 500 if "fail" in got.path or got.method == "DELETE" else 200
    body = {"status": "error", "errorType": "bad_data", "error": blob, "version": blob, "state": blob,
            "merged": False, "message": blob, "errors": [{"message": blob}], "data": {"groups": blob}}
    return Reply(status, {**headers, "Content-Type": "application/json"}, json_body(body))


def _environment(tmp_path: Path, url: str) -> Path:
    env = tmp_path / "env.yaml"
    env.write_text(f"""
name: canary
allow_intrusive: [rate_limit_burst, webhook_e2e, otel_probe_span, rollback_drill]
timeout_s: 3
service:
  base_url: {url}
  api_key: ${{CANARY_API_KEY}}
  admin_key: ${{CANARY_ADMIN_KEY}}
  security_headers: {{paths: [/health, /api/v1/actions]}}
  rate_limit: {{path: /api/v1/actions, max_requests: 6, max_seconds: 2, concurrency: 2}}
{CORS_SECTION}webhooks:
  secret: ${{CANARY_WEBHOOK}}
  event_id_field: data.id
  register_path: /api/v1/webhooks/endpoints
  trigger_path: /api/v1/actions/execute
  delivery_timeout_s: 1
prometheus:
  url: {url}
  bearer_token: ${{CANARY_PROM}}
  alert_rules: [ServiceDown]
  pool_alert_rule: DBPoolExhausted
  slo_recording_rules: [slo:x]
  timeout_s: 3
grafana:
  url: {url}
  token: ${{CANARY_GRAFANA}}
  dashboards: [golden]
otel:
  collector_health_url: {url}/health
  otlp_http_url: {url}
  trace_api_url: {url}
  read_back_timeout_s: 1
github:
  api_url: {url}
  token: ${{CANARY_GITHUB}}
  repo: relay/relay
  prs: [29]
  secrets: [RAILWAY_TOKEN]
  secret_scopes: [repository]
  deploy_workflow: deploy.yml
  backup_workflow: backup.yml
  slo_report_workflow: slo-report.yml
  drill_workflow: restore-drill.yml
  rollback_script: scripts/rollback
  rate_limit_wait_max_s: 0
railway:
  api_url: {url}/graphql
  token: ${{CANARY_RAILWAY}}
  project_id: p
  environment_id: e
  service_id: s
  drill_timeout_s: 2
backups:
  s3:
    bucket: relay-backups
    endpoint_url: {url}
    access_key_id: ${{CANARY_S3_ID}}
    secret_access_key: ${{CANARY_S3_SECRET}}
restore_drill:
  scratch_dsn: postgresql://{PG_USER}:${{CANARY_PG_PASSWORD_URL}}@127.0.0.1:1/postgres
  source_dsn: host=127.0.0.1 port=1 user={PG_USER} password=${{CANARY_PG_PASSWORD}} dbname=relay
runbooks:
  source: github
""")
    return env


def _leaks(text: str) -> list[str]:
    """Every canary (or 8 characters of one, or an encoding of one) found in ``text``."""
    found = []
    for name, value in [*CANARIES.items(), ("cookie", COOKIE)]:
        core = value.split("CANARY", 1)[1]
        token = core.split("/", 1)[0]
        needles = ["CANARY" + token[:2], token if len(token) >= 8 else "CANARY" + token]
        needles += [e for e in _encodings(value) if len(e) >= 12]
        hexed = value.encode().hex()
        needles += [h for i in range(0, len(hexed) - 16, 2) for h in (hexed[i:i + 16], hexed[i:i + 16].upper())]
        found += [f"{name}: {n!r}" for n in needles if n in text]
    return found


@pytest.mark.parametrize("workers", ["0", "2"])
def test_canary_secrets_reach_no_output_in_any_encoding(tmp_path: Path, workers: str) -> None:
    with HostileServer(_reflect) as server:
        env = _environment(tmp_path, server.url)
        out = tmp_path / "reports" / "canary"
        proc = subprocess.run(
            [*opsready_command(), "verify", "--env", str(env), "--root", str(ROOT), "--out", str(out),
             "--reports-root", str(tmp_path / "reports"), "--gate", "none", "-n", workers],
            capture_output=True, text=True, timeout=600, cwd=ROOT, check=False,
            env={**child_env(), **CANARIES, "CANARY_PG_PASSWORD_URL": quote(CANARIES["CANARY_PG_PASSWORD"], safe="")},
        )
        received = list(server.received)
    console = proc.stdout + proc.stderr
    assert proc.returncode in (0, 1), console
    # The server did receive the credentials, and did send them back.
    sent = " ".join(v for r in received for v in r.headers.values())
    assert CANARIES["CANARY_API_KEY"] in sent and CANARIES["CANARY_GITHUB"] in sent
    # ... and never got its cookie back.
    assert not [r for r in received if COOKIE in r.headers.get("Cookie", "")]
    outputs = {"console": console}
    for name in ("index.html", "readiness.json", "junit.xml", "readiness.prom", "MANIFEST.sha256"):
        outputs[name] = (out / name).read_text(encoding="utf-8")
    outputs["history.jsonl"] = (tmp_path / "reports" / "history.jsonl").read_text()
    data = json.loads(outputs["readiness.json"])
    judged = [c for t in data["tickets"] for c in t["criteria"] if c["outcome"] in ("fail", "error")]
    assert len(judged) >= 20, "the hostile server should have been contacted by most criteria"
    assert "[redacted]" in outputs["readiness.json"], "nothing was reflected, so nothing was tested"
    leaks = {name: _leaks(text) for name, text in outputs.items()}
    assert not any(leaks.values()), {k: v[:5] for k, v in leaks.items() if v}


GATEWAY_PAGE = b"<html><head><title>502 Bad Gateway</title></head><body><center>nginx</center></body></html>"


def test_a_gateway_page_makes_property_criteria_unverified_not_open(tmp_path: Path) -> None:
    """Behind a failing gateway, CORS and OTLP cannot be judged; /health answering 502 is a fail."""
    def collector(got: Received) -> Reply:
        return Reply(200, {"Content-Type": "application/json"}, b'{"status":"Server available"}')

    with HostileServer(lambda _: Reply(502, {"Content-Type": "text/html"}, GATEWAY_PAGE)) as gateway, \
            HostileServer(collector) as healthy:
        env = tmp_path / "env.yaml"
        env.write_text(f"""
allow_intrusive: [otel_probe_span]
timeout_s: 3
service: {{base_url: {gateway.url}}}
{CORS_SECTION}otel:
  collector_health_url: {healthy.url}/
  otlp_http_url: {gateway.url}
  trace_api_url: {gateway.url}
  read_back_timeout_s: 1
""")
        out = tmp_path / "out"
        proc = subprocess.run(
            [*opsready_command(), "verify", "--env", str(env), "--root", str(ROOT), "--out", str(out),
             "--gate", "none", "-n", "0", "--ticket", "P0-001", "--ticket", "P2-001", "--ticket", "P2-002"],
            capture_output=True, text=True, timeout=600, env=child_env(), cwd=ROOT, check=False,
        )
    data = json.loads((out / "readiness.json").read_text())
    status = {t["id"]: t["status"] for t in data["tickets"]}
    assert status["P2-002"] == "unverified", proc.stdout
    assert status["P2-001"] == "unverified", proc.stdout
    crit = {c["id"]: c for t in data["tickets"] for c in t["criteria"]}
    assert crit["P0-001::test_health_ok"]["outcome"] == "fail"
    assert status["P0-001"] == "open"
    preflight = crit["P2-002::test_preflight_ok"]
    assert preflight["outcome"] == "error" and "answered 502" in preflight["message"]
    span = crit["P2-001::test_probe_span_read_back"]
    assert span["outcome"] == "error" and "answered 502" in span["message"]
