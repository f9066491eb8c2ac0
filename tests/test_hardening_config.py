"""No crash on any configuration: every fuzzed environment file and option ends with exit 4
and one line naming the file (or the option) and the field path, and no error shows a secret.

The cases run through ``opsready.cli.main`` in this process (a traceback would fail the test);
a few run as the real console script, to prove the exit code the shell sees."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import ROOT, child_env, opsready_command
from opsready.cli import main

CANARY = "CANARYs3cretV4lue9f8e7d"


def _bomb() -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 12):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    lines.append("service: *a11")
    return "\n".join(lines) + "\n"


# (environment file content, extra args, fragments the one line must hold)
ENV_CASES: dict[str, tuple[bytes | str, list[str], list[str]]] = {
    "non-utf8": (b"service:\n  base_url: http://h\xff\xfe\n", [], ["line 2", "not UTF-8"]),
    "deep": ("a: " + "[" * 3000 + "]" * 3000 + "\n", [], ["line 1", "nests deeper than 64 levels"]),
    "alias-bomb": (_bomb(), [], ["expands to more than 100000 values"]),
    "too-big": ("# " + "x" * (2 << 20) + "\n", [], ["larger than 1048576 bytes"]),
    "nan": ("slo:\n  slos:\n    - {name: x, target: .nan, objective: le, query: up}\n", [],
            ["slo.slos[0].target", "not a finite number"]),
    "nan-bounded": ("backups:\n  s3: {bucket: b}\n  drill_max_age_days: .nan\n", [],
                    ["backups.drill_max_age_days"]),
    "nan-string": ("slo:\n  slos:\n    - {name: x, target: 'NaN', objective: le, query: up}\n", [],
                   ["slo.slos[0].target", "not a finite number"]),
    "duplicate": ("service:\n  base_url: http://a.example\n  base_url: http://b.example\n", [],
                  ["service.base_url", "appears twice", "lines 2 and 3"]),
    "port": ("service:\n  base_url: http://api.example.com:99999\n", [],
             ["service.base_url", "impossible port '99999'"]),
    "port-zero": ("prometheus:\n  url: http://prom.example.com:0\n", [], ["prometheus.url", "impossible port"]),
    "host": ("grafana:\n  url: http://bad..host\n", [], ["grafana.url", "impossible host"]),
    "host-dash": ("otel:\n  trace_api_url: http://-nope-.example\n", [], ["otel.trace_api_url", "impossible host"]),
    "daily-window": ("backups:\n  s3: {bucket: b}\n  daily_min_days: 40\n  daily_window_days: 30\n", [],
                     ["backups", "daily_min_days (40)", "daily_window_days (30)"]),
    "gate-commas": ("", ["--gate", ",,"], ["--gate", "gate", "'none'"]),
    "gate-empty": ("", ["--gate", ""], ["--gate"]),
    "workers-negative": ("", ["-n", "-1"], ["-n", "from 0 to 32"]),
    "workers-huge": ("", ["-n", "100000"], ["-n", "from 0 to 32"]),
    "pushgateway-port": ("", ["--pushgateway", "http://gw.example:99999"], ["--pushgateway", "impossible port"]),
    "pushgateway-host": ("", ["--pushgateway", "http://:9091"], ["--pushgateway"]),
    "pushgateway-scheme": ("", ["--pushgateway", f"ftp://u:{CANARY}@gw.example"], ["--pushgateway", "***@"]),
    "deadline": ("", ["--deadline", "-5"], ["--deadline"]),
    "deadline-nan": ("", ["--deadline", "nan"], ["--deadline"]),
}


def _verify(tmp_path: Path, content: bytes | str, *args: str, out: Path | None = None) -> list[str]:
    env = tmp_path / "env.yaml"
    env.write_bytes(content if isinstance(content, bytes) else content.encode())
    argv = ["verify", "--env", str(env), "--root", str(ROOT), "--out", str(out or tmp_path / "out"), *args]
    return argv


def _one_line(capsys: pytest.CaptureFixture[str], code: int) -> str:
    captured = capsys.readouterr()
    assert code == 4, captured.err
    assert "Traceback" not in captured.err + captured.out
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


@pytest.mark.parametrize("case", sorted(ENV_CASES))
def test_every_fuzzed_configuration_is_one_line_and_exit_4(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           case: str) -> None:
    content, extra, fragments = ENV_CASES[case]
    begun = time.monotonic()
    line = _one_line(capsys, main(_verify(tmp_path, content, *extra)))
    assert time.monotonic() - begun < 20, "a bounded input must be refused quickly"
    assert line.startswith("opsready: config error: ")
    if not extra:
        assert str(tmp_path / "env.yaml") in line
    for fragment in fragments:
        assert fragment in line, line
    assert CANARY not in line
    assert not (tmp_path / "out").exists(), "nothing is written before the configuration is valid"


@pytest.mark.parametrize("where", ["file", "under-a-file", "not-permitted", "holds-a-report"])
def test_out_at_a_file_or_an_unwritable_path_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       where: str) -> None:
    targets: dict[str, Callable[[], Path]] = {
        "file": lambda: _touch(tmp_path / "a-file"),
        "under-a-file": lambda: _touch(tmp_path / "a-file") / "report",
        "not-permitted": lambda: Path("/sys/opsready-report"),
        "holds-a-report": lambda: _touch(tmp_path / "earlier" / "readiness.json").parent,
    }
    out = targets[where]()
    line = _one_line(capsys, main(_verify(tmp_path, "", out=out)))
    assert line.startswith("opsready: config error: --out: ")
    assert str(out) in line


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x")
    return path


def test_no_command_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    line = _one_line(capsys, main([]))
    assert "no command given" in line and "verify" in line


SECRET_CASES = {
    # A secret-holding section given as a string: the value is never echoed.
    "section-as-string": (f"webhooks: {CANARY}\n", "webhooks"),
    "secret-field": (f"webhooks:\n  secret: [{CANARY}]\n", "webhooks.secret"),
    "dsn-in-a-list": (f"allow_intrusive: ['postgresql://drill:{CANARY}@db.example/relay']\n", "allow_intrusive"),
    "ftp-userinfo": (f"service:\n  base_url: ftp://u:{CANARY}@files.example\n", "service.base_url"),
    "userinfo-bad-port": (f"service:\n  base_url: https://u:{CANARY}@api.example:70000\n", "service.base_url"),
    "dsn-bad-port": (f"restore_drill:\n  scratch_dsn: postgresql://d:{CANARY}@db.example:0/postgres\n",
                     "restore_drill.scratch_dsn"),
    # An unencoded '/' in the password makes the password read as host and port.
    "dsn-slash-in-password": (f"restore_drill:\n  scratch_dsn: postgresql://d:{CANARY[:9]}/{CANARY[9:]}@db/x\n",
                              "restore_drill.scratch_dsn"),
    "from-a-variable": ("service:\n  base_url: ${LEAKY_URL}\n", "service.base_url"),
}


@pytest.mark.parametrize("case", sorted(SECRET_CASES))
def test_a_config_error_never_shows_a_secret(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    content, field = SECRET_CASES[case]
    monkeypatch.setenv("LEAKY_URL", f"{CANARY}-not-a-url")
    line = _one_line(capsys, main(_verify(tmp_path, content)))
    assert f": {field}" in line, line
    assert CANARY not in line, line
    assert CANARY[:8] not in line, line


def test_the_console_script_exits_4_on_a_fuzzed_file(tmp_path: Path) -> None:
    env = tmp_path / "env.yaml"
    env.write_text(_bomb())
    for args in (["verify", "--env", str(env)], ["verify", "--env", str(tmp_path / "x.yaml"), "-n", "-1"], []):
        proc = subprocess.run([*opsready_command(), *args], capture_output=True, text=True, timeout=120,
                              env=child_env(), cwd=ROOT, check=False)
        assert proc.returncode == 4, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "Traceback" not in proc.stderr
