"""P1-002 and P3-003 against the reference stack: the evidence of the healthy run, thresholds
and configuration, unverified where the suite cannot look, and the restore drill's safety rules
(guardrail, drop on a signal, sweep, streaming). Each data fault and variant is run once, in the
fault matrix, which also checks the criterion it fails and what the message quotes."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from conftest import (
    ROOT,
    StartedStack,
    VerifyResult,
    child_env,
    finish_process,
    opsready_command,
    run_verify,
)
from opsready._errors import MissingInput
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


def _wait_for_restore(proc: subprocess.Popen[str], marks: Path, timeout: float) -> None:
    """Until the slowed pg_restore marks that the drill reached its restore; fails when the
    child ended first or the mark is late."""
    deadline = time.monotonic() + timeout
    while not (marks / "restored").exists():
        assert proc.poll() is None, f"the run ended early:\n{proc.communicate()[0]}"
        assert time.monotonic() < deadline, "the drill never reached the restore"
        time.sleep(0.05)


def _drill_databases(stack: StartedStack) -> list[str]:
    with psycopg.connect(stack.state["urls"]["postgres_dsn"], connect_timeout=5) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                            (DRILL_PREFIX.replace("_", r"\_") + "%",)).fetchall()
    return [r[0] for r in rows]


def _env_copy(stack: StartedStack, tmp_path: Path, *, backups: dict[str, Any] | None = None,
              **restore_drill: Any) -> Path:
    data = yaml.safe_load(stack.env_path.read_text())
    data["restore_drill"].update(restore_drill)
    for key, value in (backups or {}).items():
        if key == "s3":
            data["backups"]["s3"].update(value)
        else:
            data["backups"][key] = value
    data["restore_drill"] = {k: v for k, v in data["restore_drill"].items() if v is not None}
    path = tmp_path / "env.yaml"
    path.write_text(yaml.safe_dump(data))
    path.chmod(0o600)
    return path


def _drill_dsn(stack: StartedStack, host: str = "127.0.0.1", db: str = "postgres") -> str:
    state = stack.state
    return (f"postgresql://opsready_drill:{state['secrets']['pg_drill_password']}@{host}:"
            f"{state['urls']['postgres_port']}/{db}")


# ---- healthy ---------------------------------------------------------------------------------


def test_healthy_stack_data_tickets_done(stack: StartedStack, healthy_run: VerifyResult) -> None:
    """Healthy: P1-002 (drill included) and P3-003 are done, with RTO, RPO and a drill report."""
    result = healthy_run
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
    # In one process the drill ran in the background, and its evidence says so.
    assert _evidence(rto, "measured_alongside_other_criteria")["value"] is True
    assert "other read-only criteria of the run were running alongside" in report["value"]
    rows = _evidence(drill, "rows")["value"]
    assert set(rows) == {"workspaces", "api_keys", "audit_logs", "sessions"}
    assert all(n > 0 for n in rows.values())
    # The guardrail asked both servers: the same cluster, the drill's own database, a role
    # without server-side powers.
    target = _evidence(drill, "drill")["value"]["target"]
    assert target["same_cluster_as"] == ["restore_drill.source_dsn"]
    assert target["scratch"]["role"] == "opsready_drill" and not target["scratch"]["superuser"]
    assert target["scratch"]["system_identifier"] == \
        target["compared_with"][0]["system_identifier"]
    listing = _evidence(_criterion(result, "P1-002", "The latest backup is younger"),
                        "listing")["value"]
    assert listing["listed_since"] is not None and listing["requests"] == 1
    retention = _evidence(_criterion(result, "P3-003", "Backups are kept"), "retention")["value"]
    assert retention["effective_retention_days"] == 400
    assert retention["noncurrent_version_expiration_days"] == {"backups-archive-then-expire": 90}
    for secret in ("pg_password", "pg_drill_password", "pg_reader_password"):
        assert stack.state["secrets"][secret] not in (result.out_dir / "readiness.json").read_text()
    assert _drill_databases(stack) == []


# ---- thresholds and configuration --------------------------------------------------------------


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


def test_required_kms_key_opens_p3_003_on_aes256(stack: StartedStack, tmp_path: Path) -> None:
    env = _env_copy(stack, tmp_path, backups={"required_encryption": "aws:kms"})
    result = run_verify(stack, tmp_path, *SERIAL, "--env", str(env), tickets=["P3-003"])
    enc = _criterion(result, "P3-003", "Default encryption")
    assert enc["outcome"] == "fail" and "expected aws:kms" in enc["message"]
    assert result.status["P3-003"] == "open"


def test_unconfigured_encryption_is_recorded_not_judged(stack: StartedStack,
                                                        tmp_path: Path) -> None:
    env = _env_copy(stack, tmp_path, backups={"required_encryption": None})
    result = run_verify(stack, tmp_path, *SERIAL, "--env", str(env), tickets=["P3-003"])
    enc = _criterion(result, "P3-003", "Default encryption")
    assert enc["outcome"] == "skip" and "required_encryption" in enc["message"]
    assert _evidence(enc, "default_encryption")["value"][0]["algorithm"] == "AES256"
    assert result.status["P3-003"] == "unverified"


def test_young_history_is_not_covered_with_a_date(stack: StartedStack, tmp_path: Path) -> None:
    """35 days of backups cannot show a 60-day window: not covered, never a pass."""
    env = _env_copy(stack, tmp_path, backups={"daily_window_days": 60, "daily_min_days": 55})
    result = run_verify(stack, tmp_path, *SERIAL, "--env", str(env), tickets=["P3-003"])
    acc = _criterion(result, "P3-003", "Daily backups accumulate")
    assert acc["outcome"] == "skip", result.explain(["P3-003"])
    oldest = dt.datetime.now(dt.UTC) - dt.timedelta(days=34, hours=1)
    judgeable = (oldest.date() + dt.timedelta(days=60)).isoformat()
    assert f"judgeable from {judgeable}" in acc["message"]
    assert result.status["P3-003"] == "unverified"


def test_history_start_shows_backups_deleted_without_a_trace(stack: StartedStack,
                                                             tmp_path: Path) -> None:
    """A history said to begin 100 days ago, with 35 days of backups kept and a lifecycle
    that claims 400: backups were deleted early."""
    start = (dt.datetime.now(dt.UTC) - dt.timedelta(days=100)).date().isoformat()
    env = _env_copy(stack, tmp_path, backups={"history_start": start})
    result = run_verify(stack, tmp_path, *SERIAL, "--env", str(env), tickets=["P3-003"])
    kept = _criterion(result, "P3-003", "The oldest backup is as old as the claimed")
    assert kept["outcome"] == "fail" and "400 days" in kept["message"], kept["message"]


@pytest.mark.parametrize(("change", "says"), [
    ({"source_dsn": None}, "restore_drill.source_dsn"),
    ({"expected_tables": []}, "restore_drill.expected_tables"),
])
def test_drill_without_its_inputs_is_not_covered(stack: StartedStack, tmp_path: Path,
                                                 change: dict[str, Any], says: str) -> None:
    env = _env_copy(stack, tmp_path, **change)
    result = run_verify(stack, tmp_path, *SERIAL, "--env", str(env), tickets=["P1-002"],
                        allow_intrusive=["restore_drill"])
    drill = _criterion(result, "P1-002", "A drill restores")
    assert drill["outcome"] == "skip" and says in drill["message"], result.explain(["P1-002"])
    assert result.status["P1-002"] == "unverified"
    assert _drill_databases(stack) == []


# ---- unverified: the suite could not look -----------------------------------------------------


class _Refusing(BaseHTTPRequestHandler):
    """An S3 endpoint that refuses every request with AccessDenied."""

    def _deny(self) -> None:
        body = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
                b"<Message>Access Denied</Message></Error>")
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_PUT = do_POST = _deny

    def log_message(self, *args: Any) -> None:
        return None


def test_access_denied_is_unverified_not_open(stack: StartedStack, tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = _env_copy(stack, tmp_path, backups={
            "s3": {"endpoint_url": f"http://127.0.0.1:{server.server_address[1]}"}})
        result = run_verify(stack, tmp_path, *SERIAL, "--env", str(env), tickets=DATA_TICKETS,
                            allow_intrusive=["restore_drill"])
    finally:
        server.shutdown()
        server.server_close()
    assert {t: result.status[t] for t in DATA_TICKETS} == \
        dict.fromkeys(DATA_TICKETS, "unverified"), result.explain(DATA_TICKETS)
    outcomes = {c["outcome"] for t in DATA_TICKETS for c in result.criteria(t)}
    assert "fail" not in outcomes
    messages = " ".join(c["message"] or "" for c in result.criteria("P3-003"))
    assert "refused with 403" in messages or "AccessDenied" in messages


def test_missing_bucket_is_open(stack: StartedStack, tmp_path: Path) -> None:
    env = _env_copy(stack, tmp_path, backups={"s3": {"bucket": "relay-backups-gone"}})
    result = run_verify(stack, tmp_path, *SERIAL, "--env", str(env), tickets=DATA_TICKETS,
                        allow_intrusive=["restore_drill"])
    assert {t: result.status[t] for t in DATA_TICKETS} == dict.fromkeys(DATA_TICKETS, "open"), \
        result.explain(DATA_TICKETS)
    rpo = _criterion(result, "P1-002", "The latest backup is younger")
    assert rpo["outcome"] == "fail" and "the bucket does not exist" in rpo["message"]


_OLD_PG_RESTORE = """#!/bin/sh
if [ "$1" = "--version" ]; then echo "pg_restore (PostgreSQL) 12.22"; exit 0; fi
exec pg_restore "$@"
"""


@pytest.mark.parametrize("tool", ["missing", "older than the dump"])
def test_missing_or_old_tools_are_unverified(stack: StartedStack, tmp_path: Path,
                                             tool: str) -> None:
    path = tmp_path / "pg_restore"
    if tool != "missing":
        path.write_text(_OLD_PG_RESTORE)
        path.chmod(0o755)
    env = _env_copy(stack, tmp_path, pg_restore=str(path))
    result = run_verify(stack, tmp_path, *SERIAL, "--env", str(env), tickets=["P1-002"],
                        allow_intrusive=["restore_drill"])
    drill = _criterion(result, "P1-002", "A drill restores")
    assert drill["outcome"] == "error", result.explain(["P1-002"])
    if tool == "missing":
        assert "could not be started" in drill["message"] or "not on PATH" in drill["message"]
    else:
        assert "pg_dump 15" in drill["message"] and "newer than" in drill["message"]
        valid = _criterion(result, "P1-002", "The latest backup is a whole")
        assert valid["outcome"] == "error" and "install PostgreSQL 15" in valid["message"]
    assert result.status["P1-002"] == "unverified"
    assert _drill_databases(stack) == []


@pytest.mark.parametrize(("magic", "packed"), [(b"\x28\xb5\x2f\xfd", "zstd"),
                                              (b"\x04\x22\x4d\x18", "lz4")])
def test_a_zstd_or_lz4_dump_leaves_the_drill_unverified(stack: StartedStack, magic: bytes,
                                                        packed: str) -> None:
    env = load_environment(str(stack.env_path), ROOT)
    assert env.restore_drill is not None
    data = magic + bytes(range(256)) * 64

    class Packed:
        key, size = f"backups/2025-03-01/relay.sql.{packed}", len(data)

        def open(self) -> io.BytesIO:
            return io.BytesIO(data)

        def files(self) -> list[str]:
            return []

        def open_file(self, name: str) -> io.BytesIO:
            raise AssertionError("a single-object dump has no files")

    with pytest.raises(MissingInput, match=f"cannot judge a {packed}-compressed dump"):
        ScratchServer(env.restore_drill, timeout=10).restore_drill(Packed())
    assert _drill_databases(stack) == []


def test_guardrail_refuses_source_as_scratch(stack: StartedStack, tmp_path: Path) -> None:
    # The source says 127.0.0.1, the scratch says localhost: the servers say they are one.
    env = _env_copy(stack, tmp_path, scratch_dsn=_drill_dsn(stack, "localhost", "relay"))
    result = run_verify(stack, tmp_path, *SERIAL, "--env", str(env), tickets=["P1-002"],
                        allow_intrusive=["restore_drill"])
    drill = _criterion(result, "P1-002", "A drill restores")
    assert drill["outcome"] == "error", result.explain(["P1-002"])
    assert "refused" in drill["message"] and "own database" in drill["message"]
    assert result.status["P1-002"] == "unverified"
    assert stack.state["secrets"]["pg_drill_password"] not in \
        (result.out_dir / "readiness.json").read_text()
    assert _drill_databases(stack) == []


def test_a_refusal_in_the_background_reaches_the_criterion_as_a_drill_alone_gives_it(
        stack: StartedStack, tmp_path: Path) -> None:
    """In one process the drill runs in the background; with a worker each criterion drills
    for itself. The guardrail's refusal reads the same either way."""
    env = _env_copy(stack, tmp_path, scratch_dsn=_drill_dsn(stack, "localhost", "relay"))
    found = {}
    for workers in ("0", "1"):
        result = run_verify(stack, tmp_path, "-n", workers, "--env", str(env),
                            tickets=["P1-002"], allow_intrusive=["restore_drill"])
        found[workers] = {c["title"]: (c["outcome"], c["message"])
                          for c in result.criteria("P1-002")}
        assert ("starts in the background" in result.output) == (workers == "0"), result.output
        # The criterion says it takes the background drill's result rather than running one.
        assert ("taking the result of the intrusive probe 'restore_drill'" in result.output) \
            == (workers == "0"), result.output
    drill = found["0"][next(t for t in found["0"] if t.startswith("A drill restores"))]
    assert drill[0] == "error" and "restore drill refused" in drill[1], drill
    assert found["0"] == found["1"]
    assert _drill_databases(stack) == []


# ---- the drill's own safety -----------------------------------------------------------------


_DRILL_SCRIPT = """
import sys
from pathlib import Path
from opsready._errors import MissingInput
from opsready.config import load_environment
from opsready.probes.postgres import ScratchServer
from opsready.probes.s3 import BackupStore

env = load_environment(sys.argv[1], Path("."))
cfg = env.restore_drill.model_copy(update={"pg_restore": sys.argv[2]})
store = BackupStore(env.backups, timeout=10)
newest = store.latest().newest
ScratchServer(cfg, timeout=10).restore_drill(store.source(newest))
print("drill finished")
"""

# pg_restore that restores, then lingers: the drill is caught mid-restore, with its
# scratch database populated and a child process running.
_SLOW_PG_RESTORE = """#!/bin/sh
if [ "$1" = "--version" ]; then exec pg_restore --version; fi
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
        _wait_for_restore(proc, marks, 60)
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


def test_sweep_drops_only_its_own_old_drill_databases(stack: StartedStack) -> None:
    env = load_environment(str(stack.env_path), ROOT)
    assert env.restore_drill is not None
    server = ScratchServer(env.restore_drill, timeout=10)
    old = f"{DRILL_PREFIX}{int(time.time()) - 2 * 86400}_beef"
    young = f"{DRILL_PREFIX}{int(time.time()) - 60}_cafe"
    foreign = f"{DRILL_PREFIX}{int(time.time()) - 3 * 86400}_f00d"
    with psycopg.connect(stack.state["urls"]["postgres_dsn"], autocommit=True) as conn:
        for name in (old, young):
            conn.execute(f'CREATE DATABASE "{name}" OWNER opsready_drill')
        # Another role's database of the same name shape: not the drill's to drop.
        conn.execute(f'CREATE DATABASE "{foreign}"')
    try:
        swept = server.sweep()
        assert swept == [old]
        assert sorted(_drill_databases(stack)) == sorted([young, foreign])
    finally:
        with psycopg.connect(stack.state["urls"]["postgres_dsn"], autocommit=True) as conn:
            for name in (old, young, foreign):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


class _RecordingSource:
    """The newest backup as a drill source whose every read size is recorded."""

    def __init__(self, store: BackupStore, key: str, size: int, body: Any) -> None:
        self.key, self.size, self.body = key, size, body
        self.sizes: list[int] = []

    def open(self) -> Any:
        return self

    def read(self, n: int = -1) -> bytes:
        self.sizes.append(n)
        data: bytes = self.body.read(n)
        return data

    def files(self) -> list[str]:
        return []

    def open_file(self, name: str) -> io.BytesIO:
        raise AssertionError("a single-object dump has no files")


@pytest.mark.parametrize("jobs", [1, 2])
def test_drill_streams_in_bounded_chunks(stack: StartedStack, jobs: int) -> None:
    env = load_environment(str(stack.env_path), ROOT)
    assert env.backups is not None and env.restore_drill is not None
    store = BackupStore(env.backups, timeout=10)
    newest = store.latest().newest
    assert newest is not None
    cfg = env.restore_drill.model_copy(update={"jobs": jobs})
    with store.open(newest) as body:
        source = _RecordingSource(store, newest.key, newest.size, body)
        result = ScratchServer(cfg, timeout=10).restore_drill(source)
    assert result.verified, result.problems
    assert result.size_bytes == newest.size
    assert source.sizes and all(0 < n <= CHUNK for n in source.sizes), source.sizes[:5]
    assert result.dropped and _drill_databases(stack) == []


def test_a_long_drill_says_where_it_is(stack: StartedStack) -> None:
    """Progress lines name the bytes downloaded of the total, the restore's time, and the
    tables verified; here a line is due every few milliseconds, as if the drill were long."""
    env = load_environment(str(stack.env_path), ROOT)
    assert env.backups is not None and env.restore_drill is not None
    store = BackupStore(env.backups, timeout=10)
    newest = store.latest().newest
    assert newest is not None
    server = ScratchServer(env.restore_drill, timeout=10)
    server.progress_interval_s = 0.005
    lines: list[str] = []
    result = server.restore_drill(store.source(newest), progress=lines.append)
    assert result.verified, result.problems
    assert lines and all(line.startswith("[opsready] restore drill, ") for line in lines), lines
    said = " ".join(lines)
    assert "MiB" in said and "verified" in said, lines
    total = len(env.restore_drill.expected_tables)
    assert not [ln for ln in lines if "verified" in ln and f"of {total} tables" not in ln], lines


# As above for the drill's restore (``-d``) only: the backup's inspection reads the dump with
# the same pg_restore (``-f /dev/null``) and must not be mistaken for the drill.
_SLOW_DRILL_PG_RESTORE = """#!/bin/sh
case " $* " in
  *" -d "*) ;;
  *) exec pg_restore "$@" ;;
esac
echo $$ > "{marks}/pid"
pg_restore "$@"
touch "{marks}/restored"
exec sleep 120
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_during_the_background_drill_drops_its_database_before_the_run_ends(
        stack: StartedStack, tmp_path: Path, sig: int) -> None:
    """The drill restores in the background while other criteria run; Ctrl-C or SIGTERM
    then reaches the main thread only. The run cancels the drill, waits for it to drop its
    scratch database, and ends as interrupted with its partial report."""
    marks = tmp_path / "marks"
    marks.mkdir()
    spool = tmp_path / "tmp"
    spool.mkdir()
    wrapper = tmp_path / "slow-pg-restore"
    wrapper.write_text(_SLOW_DRILL_PG_RESTORE.format(marks=marks))
    wrapper.chmod(0o755)
    env = _env_copy(stack, tmp_path, pg_restore=str(wrapper))
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [*opsready_command(), "verify", "--env", str(env), "--out", str(out),
         "--reports-root", str(tmp_path), "--gate", "none", "-n", "0",
         "--ticket", "P1-002", "--ticket", "P3-003", "--allow-intrusive", "restore_drill"],
        cwd=ROOT, env={**child_env(), "TMPDIR": str(spool)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        _wait_for_restore(proc, marks, 90)
        assert len(_drill_databases(stack)) == 1
        proc.send_signal(sig)
        code, output = finish_process(proc, timeout=90)
        assert code == 2, output
        assert "Traceback" not in output, output
        assert "starts in the background" in output, output
        assert "stopping it and waiting up to" in output, output
        assert _drill_databases(stack) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        # Should this test fail, what it left must not fail the later tests on this stack.
        with psycopg.connect(stack.state["urls"]["postgres_dsn"], autocommit=True) as conn:
            for name in _drill_databases(stack):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    child = int((marks / "pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)
    assert list(spool.glob("opsready-drill-*")) == []
    data = json.loads((out / "readiness.json").read_text())
    assert data["run"]["interrupted"] is True
    drills = [c for t in data["tickets"] if t["id"] == "P1-002" for c in t["criteria"]
              if c["title"].startswith(("A drill restores", "The measured RTO"))]
    assert len(drills) == 2
    assert all(c["outcome"] == "skip" and c["message"].startswith("not run: ") for c in drills), drills
    assert {t["id"]: t["status"] for t in data["tickets"]}["P1-002"] == "unverified"
