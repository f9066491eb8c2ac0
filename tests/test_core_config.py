"""Environment config, catalogue, redaction and the CLI's error handling."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

import opsready
from conftest import write_plan
from opsready import ConfigError
from opsready.catalogue import load_catalogue, module_ticket_id
from opsready.config import Environment, load_environment, secret_values
from opsready.evidence import REDACTED, Evidence, Redactor

REPO = Path(__file__).resolve().parents[1]
OPSREADY = str(Path(sys.executable).parent / "opsready")


def write(tmp_path: Path, text: str, name: str = "env.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_an_empty_environment_is_valid(tmp_path: Path) -> None:
    env = load_environment(str(write(tmp_path, "")), tmp_path)
    assert env.name == "env"
    assert env.service is None
    assert env.gate == ["P0", "P1"]


def test_interpolation_with_defaults_and_secrets(tmp_path: Path) -> None:
    path = write(tmp_path, "service:\n  base_url: ${BASE:-http://127.0.0.1:8000}\n  api_key: ${KEY}\n")
    env = load_environment(str(path), tmp_path, env={"KEY": "k-123456"})
    assert env.service is not None
    assert env.service.base_url == "http://127.0.0.1:8000"
    assert secret_values(env) == ["k-123456"]
    assert "k-123456" not in repr(env)


@pytest.mark.parametrize(
    ("text", "env", "fragments"),
    [
        ("service:\n  base_url: ${MISSING}\n", {}, ["service.base_url", "${MISSING} is not set", "export MISSING"]),
        ("servce:\n  base_url: http://x\n", {}, ["servce", "unknown key", "did you mean 'service'"]),
        ("service:\n  base_url: localhost:80\n", {}, ["service.base_url", "'localhost:80'", "http://"]),
        ("service: {}\n", {}, ["service.base_url", "is required"]),
        ("allow_intrusive: [restore_dril]\n", {}, ["allow_intrusive", "did you mean 'restore_drill'"]),
        ("service:\n  base_url: http://x\n  rate_limit:\n    max_requests: 99999\n", {},
         ["service.rate_limit.max_requests", "99999"]),
        ("gate: [P5]\n", {}, ["gate", "P5"]),
        ("a: [\n", {}, ["line", "not valid YAML"]),
        ("github:\n  repo: o/r\n  api_url: api.github.com\n", {}, ["github.api_url", "http://"]),
        ("railway:\n  api_url: ftp://backboard.railway.com/graphql/v2\n", {}, ["railway.api_url", "http://"]),
        ("otel:\n  otlp_http_url: 127.0.0.1:4318\n", {}, ["otel.otlp_http_url", "http://"]),
        ("otel:\n  trace_api_url: jaeger:16686\n", {}, ["otel.trace_api_url", "http://"]),
        ("cors:\n  any_origin: true\n", {}, ["cors", "any_origin needs credentials: false"]),
    ],
    ids=["missing-var", "typo", "bad-url", "missing-field", "unknown-intrusive", "burst-bound", "gate", "yaml",
         "github-api-url", "railway-api-url", "otlp-url", "trace-api-url", "public-cors-with-credentials"],
)
def test_config_errors_name_file_field_and_fix(tmp_path: Path, text: str, env: dict[str, str],
                                               fragments: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_environment(str(path), tmp_path, env=env)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    for fragment in fragments:
        assert fragment in message


def test_api_endpoints_are_kept_as_written(tmp_path: Path) -> None:
    """An endpoint that is posted to as it is keeps its trailing slash; a base URL loses it."""
    path = write(tmp_path, "github:\n  repo: o/r\n  api_url: https://ghe.example/api/v3/\n"
                           "railway:\n  api_url: https://railway.example/graphql/v2/\n  token: t0ken-value\n"
                           "  project_id: p\n  environment_id: e\n  service_id: s\n"
                           "service:\n  base_url: https://relay.example/\n")
    env = load_environment(str(path), tmp_path, env={})
    assert env.github is not None and env.github.api_url == "https://ghe.example/api/v3/"
    assert env.railway is not None and env.railway.api_url == "https://railway.example/graphql/v2/"
    assert env.service is not None and env.service.base_url == "https://relay.example"


def test_a_secret_value_is_never_echoed_in_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "railway:\n  token: 1234567\n  project_id: p\n  environment_id: e\n  service_id: s\n")
    with pytest.raises(ConfigError) as info:
        load_environment(str(path), tmp_path)
    assert "railway.token" in str(info.value)
    assert "<secret>" in str(info.value)
    assert "1234567" not in str(info.value)


def test_environment_names_resolve_under_config(tmp_path: Path) -> None:
    (tmp_path / "config" / "environments").mkdir(parents=True)
    (tmp_path / "config" / "environments" / "staging.yaml").write_text("gate: [P0]\n")
    assert load_environment("staging", tmp_path).gate == ["P0"]
    with pytest.raises(ConfigError, match="known: staging"):
        load_environment("prod", tmp_path)


def test_the_catalogue_holds_the_eleven_tickets() -> None:
    cat = load_catalogue(REPO / "config" / "tickets.yaml")
    assert cat.ids == ["P0-001", "P1-002", "P1-003", "P1-004", "P2-001", "P2-002", "P2-003", "P2-004",
                       "P3-001", "P3-002", "P3-003"]
    assert "leaves P1-004 out" in (REPO / "config" / "tickets.yaml").read_text()


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda t: t.replace("id: P1-003", "id: P1-002"), "appears twice"),
        (lambda t: t.replace("id: P2-001\n    title: Deploy OTel tracing\n    priority: P2",
                             "id: P2-001\n    title: Deploy OTel tracing\n    priority: P3"), "does not match id"),
        (lambda t: t.replace("id: P0-001", "id: X0-001"), "ids look like P0-001"),
    ],
    ids=["duplicate", "priority-mismatch", "bad-id"],
)
def test_catalogue_validation(tmp_path: Path, edit: object, fragment: str) -> None:
    text = (REPO / "config" / "tickets.yaml").read_text()
    path = write(tmp_path, edit(text), "tickets.yaml")  # type: ignore[operator]
    with pytest.raises(ConfigError, match=fragment):
        load_catalogue(path)


def test_module_names_carry_ticket_ids() -> None:
    assert module_ticket_id("test_p2_002_cors_preflight.py") == "P2-002"
    assert module_ticket_id("test_p0_001.py") == "P0-001"
    assert module_ticket_id("test_cors.py") is None


def test_public_all_is_true() -> None:
    for name in opsready.__all__:
        assert hasattr(opsready, name), name
    import types

    public = {n for n, v in vars(opsready).items() if not n.startswith("_") and not isinstance(v, types.ModuleType)}
    assert public <= set(opsready.__all__)


def test_redaction_of_configured_secrets_and_shapes() -> None:
    r = Redactor()
    r.add(["s3cr3t-value-1"])
    assert r.text("x s3cr3t-value-1 y") == f"x {REDACTED} y"
    assert "s3cr3t" not in r.text(quote("s3cr3t-value-1 "))
    assert "czNjcjN0" not in r.text(base64.b64encode(b"s3cr3t-value-1").decode())
    assert r.text("postgresql://relay:pw0rd@db:5432/x") == f"postgresql://relay:{REDACTED}@db:5432/x"
    assert r.text("host=db password=pw0rd user=x") == f"host=db password={REDACTED} user=x"
    assert r.value({"X-API-Key": "abc", "Accept": "json"}) == {"X-API-Key": REDACTED, "Accept": "json"}
    assert r.text("sha256=" + "a" * 64) == f"sha256={REDACTED}"
    ev = Evidence(redact=r)
    ev.record("h", {"Authorization": "Bearer xyz", "body": "s3cr3t-value-1"})
    assert ev.items[0].value == {"Authorization": REDACTED, "body": REDACTED}


@given(prefix=st.text(max_size=30), suffix=st.text(max_size=30),
       secret=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=8, max_size=40))
def test_a_registered_secret_never_survives_redaction(prefix: str, suffix: str, secret: str) -> None:
    r = Redactor()
    r.add([secret])
    assert secret not in r.text(prefix + secret + suffix)


def test_environment_schema_is_strict_about_unknown_sections() -> None:
    with pytest.raises(ValueError, match="Extra inputs"):
        Environment.model_validate({"nope": {}})


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OPSREADY, *args], capture_output=True, text=True, cwd=cwd, timeout=120, check=False)


def test_cli_lists_the_tickets() -> None:
    out = run_cli("tickets")
    assert out.returncode == 0
    assert out.stdout.count("\nP") == 11
    assert "11 tickets" in out.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["verify", "--env", "no-such-env"], "no such environment file"),
        (["verify", "--env", "{bad}", "--gate", "P9"], ""),
        (["verify", "--env", "{empty}", "--gate", "P9"], "--gate"),
        (["verify", "--env", "{empty}", "--ticket", "P9-999"], "P9-999"),
        (["verify", "--env", "{empty}", "--allow-intrusive", "drop_tables"], "drop_tables"),
        (["verify", "--env", "{empty}", "--checks", "/nonexistent/checks"], "checks directory does not exist"),
        (["verify", "--env", "{empty}", "--out", "{empty}"], "is a file, not a directory"),
        (["verify", "--env", "{empty}", "--out", "{empty}/sub/run"], "cannot be created: {empty} is a file"),
        (["verify", "--env", "{empty}", "--reports-root", "{empty}/reports"], "cannot be created: {empty} is a file"),
    ],
    ids=["unknown-env", "bad-config", "bad-gate", "unknown-ticket", "unknown-intrusive", "no-checks",
         "out-is-a-file", "out-under-a-file", "reports-root-under-a-file"],
)
def test_cli_config_errors_are_one_line_and_exit_4(tmp_path: Path, args: list[str], fragment: str) -> None:
    bad = write(tmp_path, "service:\n  base_url: nope\n", "bad.yaml")
    empty = write(tmp_path, "", "empty.yaml")
    args = [a.format(bad=bad, empty=empty) for a in args]
    out = run_cli(*args)
    assert out.returncode == 4, out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("opsready: config error:")
    assert fragment.format(bad=bad, empty=empty) in lines[0]


def test_cli_done_when_scenario(tmp_path: Path) -> None:
    """The core issue's acceptance run: one passing and one failing P2-002 criterion."""
    checks = tmp_path / "checks"
    checks.mkdir()
    (checks / "test_p2_002_demo.py").write_text(
        "import pytest\npytestmark = [pytest.mark.ticket('P2-002')]\n"
        "def test_ok():\n    '''An allowed origin gets its own ACAO.'''\n"
        "def test_bad():\n    '''A disallowed origin gets no ACAO.'''\n"
        "    assert False, 'ACAO was * for https://evil.example, expected none'\n"
    )
    write_plan(checks / "test_p2_002_demo.py", {"test_ok": {"contacts": []}, "test_bad": {"contacts": []}})
    empty = write(tmp_path, "", "EMPTY.yaml")
    out_dir = tmp_path / "OUT"
    out = run_cli("verify", "--checks", str(checks), "--env", str(empty), "--out", str(out_dir), "--gate", "P2",
                  "--root", str(REPO))
    assert out.returncode == 1, out.stdout + out.stderr
    import json

    data = json.loads((out_dir / "readiness.json").read_text())
    status = {t["id"]: t["status"] for t in data["tickets"]}
    assert status.pop("P2-002") == "open"
    assert set(status.values()) == {"unverified"}
    page = (out_dir / "index.html").read_text()
    assert page.index('id="opsready"') < page.index('id="title"')
    assert f"report: {out_dir / 'index.html'}" in out.stdout
