"""The reference stack itself: it starts within its budget, every part answers, faults flip,
the rule files are valid, and `down` leaves nothing behind, even after a crash.

These tests start their own stack (the crash test breaks it on purpose), through the same
command line a person uses.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from conftest import (
    ROOT,
    StartedStack,
    child_env,
    running_stack,
    stack_command,
)
from opsready.config import INTRUSIVE_PROBES, load_environment
from opsready_stack import orchestrator
from opsready_stack.part import group_alive, read_pidfile

pytestmark = [pytest.mark.stack]

UP_BUDGET_S = 20.0
# The budget is 20 s on two idle cores; a busy CI runner gets twice that before we fail.
UP_LIMIT_S = 40.0
PROMETHEUS_RULE_DIR = ROOT / "stack" / "prometheus"


def stack_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(stack_command(*args), capture_output=True, text=True, timeout=timeout,
                          env=child_env(), cwd=ROOT, check=False)


def pids_of(dir: Path) -> dict[str, int]:
    found = {}
    for pidfile in sorted((dir / "pids").glob("*.pid")):
        pid = read_pidfile(pidfile)
        if pid is not None:
            found[pidfile.stem] = pid
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def own() -> Iterator[StartedStack]:
    """A stack of this module's own; the last test crashes and stops it."""
    with running_stack() as started:
        yield started


def env_of(started: StartedStack) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(started.env_path.read_text())
    return data


def test_up_is_ready_within_budget(own: StartedStack) -> None:
    """`opsready stack up` is ready in ≤ 20 s on two cores and prints the time it took."""
    print(f"\nstack up: ready in {own.up_seconds:.1f}s (budget {UP_BUDGET_S:.0f}s)")
    print("\n".join(line for line in own.output.splitlines() if line.startswith("[stack]")))
    assert "[stack] ready in" in own.output
    assert own.up_seconds <= UP_LIMIT_S, f"stack up took {own.up_seconds:.1f}s"


def test_up_writes_a_valid_private_environment(own: StartedStack) -> None:
    """env.yaml validates, allows every intrusive probe, and it and state.json are 0600."""
    for name in ("env.yaml", "state.json", "secrets.env"):
        mode = stat.S_IMODE((own.dir / name).stat().st_mode)
        assert mode == 0o600, f"{name} has mode {oct(mode)}; it holds secrets"
    env = load_environment(str(own.env_path), ROOT, env={})
    assert env.name == "local-stack"
    assert env.allow_intrusive == list(INTRUSIVE_PROBES)
    state = own.state
    assert set(state) >= {"ports", "secrets", "urls", "settings", "rows"}
    assert len(state["settings"]["git_sha"]) == 40
    assert state["settings"]["webhook_scheme"] == "hex"
    for name in ("postgres", "s3", "github", "railway", "grafana", "service", "prometheus"):
        assert any(key.startswith(name) for key in state["urls"]), f"no url for {name}"
    # No secret on the console.
    for value in state["secrets"].values():
        assert value not in own.output


def test_every_part_answers(own: StartedStack) -> None:
    """`stack status` exits 0: every process is alive and every part answers."""
    proc = stack_cli("status", "--dir", str(own.dir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}
    assert names >= {name for name, _, _ in orchestrator.PART_SPECS}, proc.stdout
    for name, pid in pids_of(own.dir).items():
        assert group_alive(pid), f"process {name} ({pid}) is not running"
    urls = own.state["urls"]
    assert httpx.get(urls["service"] + "/health", timeout=5).status_code == 200
    assert httpx.get(urls["prometheus"] + "/-/ready", timeout=5).status_code == 200
    assert httpx.get(urls["grafana"] + "/api/health", timeout=5).json()["database"] == "ok"
    assert httpx.get(urls["otel_health"], timeout=5).status_code == 200


def test_prometheus_scrapes_the_service(own: StartedStack) -> None:
    """Prometheus's scrape target for the service is up."""
    env = env_of(own)
    url, job = env["prometheus"]["url"], env["prometheus"].get("service_job", "relay")
    deadline = time.monotonic() + 20
    targets: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        answer = httpx.get(f"{url}/api/v1/targets", params={"state": "active"}, timeout=5)
        targets = answer.json()["data"]["activeTargets"]
        mine = [t for t in targets if t["labels"].get("job") == job]
        if mine and all(t["health"] == "up" for t in mine):
            return
        time.sleep(0.5)
    pytest.fail(f"no healthy target of job {job!r} in 20 s: {json.dumps(targets)[:1500]}")


def test_every_fault_flips_on_and_off(own: StartedStack) -> None:
    """Every fault turns on and off at runtime; afterwards every part is up again."""
    faults = orchestrator.all_faults()
    assert faults
    # One flip through the command line; the rest in-process to keep the test short.
    first = next(iter(faults))
    proc = stack_cli("fault", "on", first, "--dir", str(own.dir))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((own.dir / "faults.json").read_text()) == [first]
    proc = stack_cli("fault", "off", first, "--dir", str(own.dir))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((own.dir / "faults.json").read_text()) == []
    for name in faults:
        assert orchestrator.set_fault(own.dir, name, True) == [name]
        assert json.loads((own.dir / "faults.json").read_text()) == [name]
        assert orchestrator.set_fault(own.dir, name, False) == []
        assert json.loads((own.dir / "faults.json").read_text()) == []
    proc = stack_cli("status", "--dir", str(own.dir))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_unknown_fault_is_a_usage_error(own: StartedStack) -> None:
    """An unknown fault name exits 4 with one line that lists the known faults."""
    proc = stack_cli("fault", "on", "no-such-fault", "--dir", str(own.dir))
    assert proc.returncode == 4
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "no-such-fault" in lines[0]
    assert all(name in lines[0] for name in orchestrator.all_faults())


def test_up_where_a_stack_runs_is_a_usage_error_that_touches_nothing(own: StartedStack) -> None:
    """`up` in the directory of a running stack starts nothing and stops nothing."""
    before = pids_of(own.dir)
    proc = stack_cli("up", "--dir", str(own.dir))
    assert proc.returncode == 4, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "a stack is already running in" in lines[0], proc.stderr
    assert pids_of(own.dir) == before and all(group_alive(p) for p in before.values())


@pytest.mark.parametrize("where", ["file", "under-a-file"])
def test_up_in_a_directory_that_cannot_be_one_is_a_usage_error(tmp_path: Path, where: str) -> None:
    blocking = tmp_path / "a-file"
    blocking.write_text("x")
    target = blocking if where == "file" else blocking / "stack"
    proc = stack_cli("up", "--dir", str(target))
    assert proc.returncode == 4, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert str(target) in lines[0] and "pick another --dir" in lines[0]


def test_promtool_accepts_the_rule_files() -> None:
    """`promtool check rules` passes on every rule file of stack/prometheus/."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed (make system-deps installs it)"
    rule_files = [
        p for p in sorted(PROMETHEUS_RULE_DIR.glob("*.yml"))
        if "groups" in (yaml.safe_load(p.read_text()) or {})
    ]
    assert rule_files, f"no rule files in {PROMETHEUS_RULE_DIR}"
    proc = subprocess.run([promtool, "check", "rules", *map(str, rule_files)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_local_environment_matches_the_stack(own: StartedStack) -> None:
    """config/environments/local.yaml, given the stack's secrets.env, is the environment
    `stack up` wrote to env.yaml."""
    variables = {}
    for line in (own.dir / "secrets.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = shlex.split(line)[0].partition("=")
            variables[name] = value
    written = load_environment(str(own.env_path), ROOT, env={})
    local = load_environment("local", ROOT, env=variables)
    local = local.model_copy(update={"name": written.name, "source": written.source})
    differ = [f for f in type(written).model_fields if getattr(local, f) != getattr(written, f)]
    assert not differ, f"local.yaml differs from {own.env_path} in: {', '.join(differ)}"


def readme_fault_rows() -> list[tuple[str, str]]:
    text = (ROOT / "stack" / "README.md").read_text()
    table = text.split("<!-- faults:start -->")[1].split("<!-- faults:end -->")[0]
    rows = []
    for line in table.strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows.append((cells[0].strip("`"), cells[1]))
    return rows


def test_readme_fault_table_matches_the_parts() -> None:
    """stack/README.md lists every fault with exactly the tickets its parts declare, and
    every variant as opening none."""
    declared = [(f.name, ", ".join(sorted(f.tickets)) or "none (a legitimate variant)")
                for f in orchestrator.all_faults().values()]
    assert readme_fault_rows() == declared, (
        "regenerate the table with `python -m opsready_stack.cli faults --markdown`"
    )


def test_up_again_after_a_crash(own: StartedStack) -> None:
    """After every process died without `down`, `up` in the same directory cleans up the
    remains and starts a working stack (a fresh database cluster for the new secrets)."""
    old_secrets = own.state["secrets"]
    for pid in pids_of(own.dir).values():
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(group_alive(p) for p in pids_of(own.dir).values()):
        time.sleep(0.1)
    proc = stack_cli("up", "--dir", str(own.dir), timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "cleaning up the remains" in proc.stderr
    assert own.state["secrets"] != old_secrets
    status = stack_cli("status", "--dir", str(own.dir))
    assert status.returncode == 0, status.stdout + status.stderr


def test_down_after_a_crash_leaves_nothing_behind(own: StartedStack) -> None:
    """After a part crashes and state.json is lost, `down` still stops every process from
    the pid files, frees every port and removes the directory; a second `down` is a no-op."""
    pids = pids_of(own.dir)
    ports = list(own.state["ports"].values())
    assert pids and ports
    os.kill(pids["postgres"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and stack_cli("status", "--dir", str(own.dir)).returncode == 0:
        time.sleep(0.2)
    crashed = stack_cli("status", "--dir", str(own.dir))
    assert crashed.returncode == 1, "status did not notice the crashed postgres"

    (own.dir / "state.json").unlink()
    proc = stack_cli("down", "--dir", str(own.dir), timeout=120)
    assert proc.returncode == 0, proc.stderr
    alive = {name: pid for name, pid in pids.items() if group_alive(pid)}
    assert not alive, f"still running after down: {alive}"
    assert not [p for p in ports if port_open(p)], "ports still answering after down"
    assert not own.dir.exists(), f"{own.dir} is still there after down"
    assert orchestrator.processes_using(own.dir) == []
    inside = str(own.dir) + os.sep
    mention = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
               if inside.encode() in _cmdline(pid)]
    assert not mention, f"processes still name {own.dir}: {mention}"

    again = stack_cli("down", "--dir", str(own.dir))
    assert again.returncode == 0, again.stderr
