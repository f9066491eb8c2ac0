"""P1-002 and P3-003 against the reference stack: done when healthy, open under their faults,
and the restore drill's safety rules (guardrail, drop on a signal, sweep, streaming)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from conftest import ROOT, StartedStack, child_env, run_verify
from opsready.config import load_environment
from opsready.probes.postgres import CHUNK, DRILL_PREFIX, ScratchServer
from opsready.probes.s3 import BackupStore

pytestmark = [pytest.mark.stack]

DATA_TICKETS = ("P1-002", "P3-003")
SERIAL = ("-n", "0")


def _criterion(result: Any, ticket: str, starts: str) -> dict[str, Any]:
    for c in result.criteria(ticket):
        if c["title"].startswith(starts):
            found: dict[str, Any] = c
            return found
    raise AssertionError(f"{ticket} has no criterion starting {starts!r}: {result.explain()}")


def _evidence(criterion: dict[str, Any], name: str) -> Any:
    for item in criterion["evidence"]:
        if item["name"] == name:
            return item
    raise AssertionError(f"criterion {criterion['title']!r} recorded no {name!r}")


def _drill_databases(stack: StartedStack) -> list[str]:
    with psycopg.connect(stack.state["urls"]["postgres_dsn"], connect_timeout=5) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                            (DRILL_PREFIX.replace("_", r"\_") + "%",)).fetchall()
    return [r[0] for r in rows]


def _env_copy(stack: StartedStack, tmp_path: Path, **restore_drill: Any) -> Path:
    data = yaml.safe_load(stack.env_path.read_text())
    data["restore_drill"].update(restore_drill)
    path = tmp_path / "env.yaml"
    path.write_text(yaml.safe_dump(data))
    path.chmod(0o600)
    return path


def test_healthy_stack_data_tickets_done(stack: StartedStack, tmp_path: Path) -> None:
    """Healthy: P1-002 (drill included) and P3-003 are done, with RTO, RPO and a drill report."""
    result = run_verify(stack, tmp_path, *SERIAL, tickets=DATA_TICKETS,
                        allow_intrusive=["restore_drill"])
    assert {t: result.status[t] for t in DATA_TICKETS} == dict.fromkeys(DATA_TICKETS, "done"), \
        result.explain(DATA_TICKETS)
    outcomes = [c["outcome"] for c in result.criteria("P1-002")]
    assert outcomes == ["pass"] * len(outcomes), result.explain(["P1-002"])
    rto = _criterion(result, "P1-002", "The measured RTO")
    assert 0 < _evidence(rto, "rto_seconds")["value"] <= 600
    assert 0 < _evidence(rto, "rpo_hours")["value"] < 26
    drill = _criterion(result, "P1-002", "A drill restores")
    report = _evidence(drill, "drill-report.md")
    assert report["mime"] == "text/markdown"
    assert "# Restore drill: PASSED" in report["value"]
    rows = _evidence(drill, "rows")["value"]
    assert set(rows) == {"workspaces", "api_keys", "audit_logs", "sessions"}
    assert all(n > 0 for n in rows.values())
    pw = stack.state["secrets"]["pg_password"]
    assert pw not in (result.out_dir / "readiness.json").read_text()
    assert _drill_databases(stack) == []


@pytest.mark.parametrize(("fault", "opens", "criterion"), [
    ("stale-backup", "P1-002", "The latest backup is younger than the RPO"),
    ("corrupt-backup", "P1-002", "The latest backup matches its sha256 sidecar"),
    ("no-drill-schedule", "P1-002", "A restore drill is scheduled monthly"),
    ("versioning-off", "P3-003", "Versioning is Enabled"),
    ("no-lifecycle", "P3-003", "An enabled lifecycle rule"),
])
def test_fault_opens_its_data_ticket(stack: StartedStack, tmp_path: Path, fault: str,
                                     opens: str, criterion: str) -> None:
    # The drill runs: without it P1-002 is not covered, so it could never be done.
    with stack.fault(fault):
        result = run_verify(stack, tmp_path, *SERIAL, tickets=DATA_TICKETS,
                            allow_intrusive=["restore_drill"])
    other = next(t for t in DATA_TICKETS if t != opens)
    assert (result.status[opens], result.status[other]) == ("open", "done"), \
        result.explain(DATA_TICKETS)
    assert _criterion(result, opens, criterion)["outcome"] == "fail", result.explain([opens])
    # A failed restore drops its scratch database as well.
    assert _drill_databases(stack) == []


def test_rto_target_below_measured_opens_p1_002(stack: StartedStack, tmp_path: Path) -> None:
    env = _env_copy(stack, tmp_path, rto_target_s=0.001)
    result = run_verify(stack, tmp_path, *SERIAL, "--env", str(env), tickets=["P1-002"],
                        allow_intrusive=["restore_drill"])
    assert result.status["P1-002"] == "open", result.explain(["P1-002"])
    rto = _criterion(result, "P1-002", "The measured RTO")
    assert rto["outcome"] == "fail"
    assert "expected at most 0.001 s" in rto["message"]
    failed = [c["title"] for c in result.criteria("P1-002") if c["outcome"] != "pass"]
    assert failed == [rto["title"]], result.explain(["P1-002"])


def test_guardrail_refuses_source_as_scratch(stack: StartedStack, tmp_path: Path) -> None:
    state = stack.state
    port, pw = state["urls"]["postgres_port"], state["secrets"]["pg_password"]
    # The source says 127.0.0.1, the scratch says localhost: the same database.
    env = _env_copy(stack, tmp_path,
                    scratch_dsn=f"postgresql://relay_admin:{pw}@localhost:{port}/relay",
                    source_dsn=f"postgresql://relay_admin:{pw}@127.0.0.1:{port}/relay")
    result = run_verify(stack, tmp_path, *SERIAL, "--env", str(env), tickets=["P1-002"],
                        allow_intrusive=["restore_drill"])
    drill = _criterion(result, "P1-002", "A drill restores")
    assert drill["outcome"] == "error", result.explain(["P1-002"])
    assert "refused" in drill["message"] and "resolves to the source" in drill["message"]
    assert result.status["P1-002"] == "unverified"
    assert pw not in (result.out_dir / "readiness.json").read_text()
    assert _drill_databases(stack) == []


_DRILL_SCRIPT = """
import sys
from pathlib import Path
from opsready.config import load_environment
from opsready.probes.postgres import ScratchServer
from opsready.probes.s3 import BackupStore

env = load_environment(sys.argv[1], Path("."))
cfg = env.restore_drill.model_copy(update={"pg_restore": sys.argv[2]})
store = BackupStore(env.backups, timeout=10)
newest = store.latest().newest
ScratchServer(cfg, timeout=10).restore_drill(lambda: store.open(newest), newest.size,
                                             key=newest.key)
print("drill finished")
"""

# pg_restore that restores, then lingers: the drill is caught mid-restore, with its
# scratch database populated and a child process running.
_SLOW_PG_RESTORE = """#!/bin/sh
echo $$ > "{marks}/pid"
pg_restore "$@"
touch "{marks}/restored"
exec sleep 120
"""


@pytest.mark.parametrize(("sig", "codes"), [
    (signal.SIGINT, (-signal.SIGINT, 130)),
    (signal.SIGTERM, (-signal.SIGTERM, 143)),
])
def test_signal_mid_restore_leaves_no_scratch_database(stack: StartedStack, tmp_path: Path,
                                                       sig: int, codes: tuple[int, ...]) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    spool = tmp_path / "tmp"
    spool.mkdir()
    wrapper = tmp_path / "slow-pg-restore"
    wrapper.write_text(_SLOW_PG_RESTORE.format(marks=marks))
    wrapper.chmod(0o755)
    proc = subprocess.Popen(
        [sys.executable, "-c", _DRILL_SCRIPT, str(stack.env_path), str(wrapper)],
        cwd=ROOT, env={**child_env(), "TMPDIR": str(spool)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (marks / "restored").exists():
            assert proc.poll() is None, f"the drill ended early:\n{proc.communicate()[0]}"
            assert time.monotonic() < deadline, "the drill never reached the restore"
            time.sleep(0.05)
        during = _drill_databases(stack)
        assert len(during) == 1, during
        proc.send_signal(sig)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode in codes, output
    assert "drill finished" not in output
    assert _drill_databases(stack) == []
    # The lingering pg_restore was killed, and the spooled dump removed.
    child = int((marks / "pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)
    assert list(spool.glob("opsready-drill-*")) == []


def test_sweep_drops_only_old_drill_databases(stack: StartedStack) -> None:
    env = load_environment(str(stack.env_path), ROOT)
    assert env.restore_drill is not None
    server = ScratchServer(env.restore_drill, timeout=10)
    old = f"{DRILL_PREFIX}{int(time.time()) - 2 * 86400}_beef"
    young = f"{DRILL_PREFIX}{int(time.time()) - 60}_cafe"
    with psycopg.connect(stack.state["urls"]["postgres_dsn"], autocommit=True) as conn:
        for name in (old, young):
            conn.execute(f'CREATE DATABASE "{name}"')
    try:
        swept = server.sweep()
        assert swept == [old]
        assert _drill_databases(stack) == [young]
    finally:
        with psycopg.connect(stack.state["urls"]["postgres_dsn"], autocommit=True) as conn:
            for name in (old, young):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


class _RecordingStream:
    """Wraps the S3 body and records every read size."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.sizes: list[int] = []

    def read(self, n: int = -1) -> bytes:
        self.sizes.append(n)
        data: bytes = self.inner.read(n)
        return data


@pytest.mark.parametrize("jobs", [1, 2])
def test_drill_streams_in_bounded_chunks(stack: StartedStack, jobs: int) -> None:
    env = load_environment(str(stack.env_path), ROOT)
    assert env.backups is not None and env.restore_drill is not None
    store = BackupStore(env.backups, timeout=10)
    newest = store.latest().newest
    assert newest is not None
    cfg = env.restore_drill.model_copy(update={"jobs": jobs})
    with store.open(newest) as body:
        stream = _RecordingStream(body)
        result = ScratchServer(cfg, timeout=10).restore_drill(stream, newest.size, key=newest.key)
    assert result.verified, result.problems
    assert result.size_bytes == newest.size
    assert stream.sizes and all(0 < n <= CHUNK for n in stream.sizes), stream.sizes[:5]
    assert result.dropped and _drill_databases(stack) == []
