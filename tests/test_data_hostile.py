"""Adversarial tests of the restore drill on the reference stack's real PostgreSQL.

A hostile backup runs nothing: a plain script with ``\\!`` or ``\\connect`` is refused, naming
the line, before psql starts, and the source stays untouched; if the scan were ever bypassed,
psql's restricted mode still refuses; custom-format dumps go through pg_restore, where
backslashes are data. The drill refuses a role with server-side powers unless allowed by
name. The guardrail asks the servers who they are, so no spelling of the source's DSN slips
through: ``::ffff:127.0.0.1``, a ``service=`` entry, a multi-host list, or no source at all.
"""

from __future__ import annotations

import gzip
import io
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conftest import StartedStack
from opsready._errors import MissingInput
from opsready.config import RestoreDrillConfig
from opsready.probes import postgres as postgres_probe
from opsready.probes.postgres import DRILL_PREFIX, DrillRefused, ScratchServer
from opsready_stack.backup_job import dump_bytes

pytestmark = [pytest.mark.stack]


class BytesSource:
    """A backup held in memory, as the drill reads one."""

    def __init__(self, data: bytes, key: str = "backups/2025-03-01/relay.sql.gz") -> None:
        self.data, self.key, self.size = data, key, len(data)

    def open(self) -> io.BytesIO:
        return io.BytesIO(self.data)

    def files(self) -> list[str]:
        return []

    def open_file(self, name: str) -> io.BytesIO:
        raise AssertionError("a single-object dump has no files")


def _port(stack: StartedStack) -> int:
    return int(stack.state["urls"]["postgres_port"])


def _secret(stack: StartedStack, name: str) -> str:
    value: str = stack.state["secrets"][name]
    return value


def _dsn(stack: StartedStack, role: str = "opsready_drill", db: str = "postgres",
         host: str = "127.0.0.1") -> str:
    password = {"opsready_drill": "pg_drill_password", "relay_reader": "pg_reader_password",
                "relay_admin": "pg_password"}[role]
    return f"postgresql://{role}:{_secret(stack, password)}@{host}:{_port(stack)}/{db}"


def _admin(stack: StartedStack, db: str = "relay") -> psycopg.Connection[Any]:
    return psycopg.connect(_dsn(stack, "relay_admin", db), autocommit=True, connect_timeout=5)


def _server(stack: StartedStack, **cfg: Any) -> ScratchServer:
    base: dict[str, Any] = {"scratch_dsn": _dsn(stack), "source_dsn": _dsn(stack, "relay_reader",
                                                                            "relay"),
                            "expected_tables": ["workspaces"], "jobs": 1,
                            # The stack has one cluster: scratch and source share it.
                            "allow_source_cluster": True}
    return ScratchServer(RestoreDrillConfig.model_validate({**base, **cfg}), timeout=10)


def _drill_databases(stack: StartedStack) -> list[str]:
    with _admin(stack, "postgres") as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                            (DRILL_PREFIX.replace("_", r"\_") + "%",)).fetchall()
    return [r[0] for r in rows]


@pytest.fixture(scope="module")
def plain(stack: StartedStack) -> str:
    return dump_bytes(_dsn(stack, "relay_admin", "relay"), "plain").decode()


# ---- a hostile plain script runs nothing ------------------------------------------------------


def test_shell_command_in_a_gzip_plain_dump_never_runs(stack: StartedStack, plain: str,
                                                       tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    hostile = plain.replace("SET lock_timeout = 0;\n", f"SET lock_timeout = 0;\n\\! touch {marker}\n",
                            1)
    line = hostile.splitlines().index(f"\\! touch {marker}") + 1
    result = _server(stack).restore_drill(BytesSource(gzip.compress(hostile.encode())))
    assert not marker.exists(), "the backup's shell command ran"
    assert result.refused is not None and f"line {line}:" in result.refused
    assert "`\\!`" in result.refused and "psql never started" in result.refused
    assert result.restore_exit_code is None and not result.verified
    assert result.dropped and _drill_databases(stack) == []


def test_connect_to_the_source_never_runs(stack: StartedStack, plain: str) -> None:
    """``\\connect relay`` then CREATE TABLE would write into the source database."""
    hostile = plain.replace(
        "SET lock_timeout = 0;\n",
        "SET lock_timeout = 0;\n\\connect relay\nCREATE TABLE public.opsready_pwned (x int);\n", 1)
    result = _server(stack).restore_drill(BytesSource(gzip.compress(hostile.encode())))
    assert result.refused is not None and "`\\connect`" in result.refused
    with _admin(stack) as conn:
        assert conn.execute("SELECT to_regclass('public.opsready_pwned')").fetchone() == (None,)
    assert _drill_databases(stack) == []


def test_a_pg_dump_create_script_restores_into_the_scratch_database(stack: StartedStack) -> None:
    """``pg_dump --create`` opens with CREATE DATABASE and its one ``\\connect``: a legitimate
    script. The drill leaves that prologue out, restores into its scratch database, and the
    source stays as it was; a ``\\connect`` to another database stays refused."""
    data = dump_bytes(_dsn(stack, "relay_admin", "relay"), "plain", "--create").decode()
    assert "\nCREATE DATABASE relay " in data and "\n\\connect relay\n" in data
    with _admin(stack) as conn:
        owner_before = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database "
                                    "WHERE datname = 'relay'").fetchone()
    result = _server(stack).restore_drill(BytesSource(gzip.compress(data.encode()),
                                                      key="backups/2025-03-01/relay.sql.gz"))
    assert result.refused is None and result.verified, (result.refused, result.problems)
    assert result.tables["workspaces"] > 0
    with _admin(stack) as conn:
        assert conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database "
                            "WHERE datname = 'relay'").fetchone() == owner_before
    assert _drill_databases(stack) == []

    hostile = data.replace("\\connect relay\n", "\\connect relay\n\\connect postgres\n", 1)
    refused = _server(stack).restore_drill(BytesSource(hostile.encode()))
    assert refused.refused is not None and "`\\connect` to 'postgres'" in refused.refused
    assert _drill_databases(stack) == []


def test_a_created_database_named_like_the_source_keeps_psql_in_the_scratch_database(
        stack: StartedStack, plain: str) -> None:
    """A script that creates a database named like the source and connects to it: both are
    left out, so what follows lands in the scratch database, never in the source."""
    hostile = plain.replace(
        "SET lock_timeout = 0;\n",
        "SET lock_timeout = 0;\nCREATE DATABASE relay;\n\\connect relay\n"
        "CREATE TABLE public.opsready_pwned (x int);\n", 1)
    _server(stack).restore_drill(BytesSource(gzip.compress(hostile.encode())))
    with _admin(stack) as conn:
        assert conn.execute("SELECT to_regclass('public.opsready_pwned')").fetchone() == (None,)
    assert _drill_databases(stack) == []


@pytest.mark.parametrize(("line", "says"), [
    ("-- Dumped by pg_dump version ", "was written by pg_dump 99"),
    ("-- Dumped from database version ", "comes from a PostgreSQL 99 server"),
])
def test_a_dump_newer_than_the_scratch_server_is_not_judged(stack: StartedStack, plain: str,
                                                            line: str, says: str) -> None:
    """pg_dump's output is not promised to load into an older server (pg_dump 17 sets
    transaction_timeout, unknown to 16): a scratch server older than the dump's source or its
    pg_dump cannot judge the backup, which is not to blame."""
    import re

    newer = re.sub(re.escape(line) + r"\S+", line + "99.0", plain, count=1)
    assert newer != plain
    with pytest.raises(MissingInput, match=says + r", newer than the scratch server"):
        _server(stack).restore_drill(BytesSource(gzip.compress(newer.encode())))
    assert _drill_databases(stack) == []


def test_restricted_mode_holds_if_the_scan_were_bypassed(stack: StartedStack, plain: str,
                                                         tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Defense in depth: with a guard that lets everything through, psql itself refuses the
    meta-command in its restricted mode, and ON_ERROR_STOP ends the restore."""

    class Blind(postgres_probe.PlainScriptGuard):
        def _sql_line(self, line: bytes) -> Iterator[bytes]:
            self._note_line(line)
            self.line += 1
            yield line

    monkeypatch.setattr(postgres_probe, "PlainScriptGuard", Blind)
    marker = tmp_path / "pwned"
    hostile = plain.replace("SET lock_timeout = 0;\n", f"SET lock_timeout = 0;\n\\! touch {marker}\n",
                            1)
    result = _server(stack).restore_drill(BytesSource(hostile.encode()))
    assert result.restricted_mode is True
    assert not marker.exists(), "psql ran the meta-command outside restricted mode"
    assert result.restore_exit_code not in (None, 0)
    assert "restricted" in " ".join(result.restore_errors), result.restore_errors
    assert _drill_databases(stack) == []


def test_backslashes_in_data_are_data(stack: StartedStack, tmp_path: Path) -> None:
    """A database whose comments, function bodies and rows hold "\\! touch ..." dumps and
    restores in custom format (pg_restore) and as a plain script (psql): nothing runs."""
    marker = tmp_path / "pwned"
    db = "opsready_hostile_source"
    with _admin(stack, "postgres") as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db}"')
        conn.execute(f'CREATE DATABASE "{db}"')
    try:
        with _admin(stack, db) as conn:
            conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
            conn.execute("INSERT INTO notes VALUES (1, %s), (2, %s)",
                         (f"\\! touch {marker}", f"\n\\! touch {marker}\n\\.\n"))
            conn.execute(f"COMMENT ON TABLE notes IS '\\! touch {marker}'")
            conn.execute("CREATE FUNCTION shout() RETURNS text LANGUAGE sql AS "
                         f"$$ SELECT E'\\\\! touch {marker}' $$")
        source = _dsn(stack, "relay_admin", db)
        for fmt in ("custom", "plain"):
            data = dump_bytes(source, fmt, "--no-owner")
            result = _server(stack, source_dsn=source, expected_tables=["notes"]).restore_drill(
                BytesSource(data, key=f"backups/2025-03-01/hostile.{fmt}"))
            assert result.format == fmt
            assert result.verified, (fmt, result.problems, result.refused)
            assert result.tables == {"notes": 2}
            assert not marker.exists(), f"the {fmt} restore ran a command"
    finally:
        with _admin(stack, "postgres") as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    assert _drill_databases(stack) == []


def test_rows_are_compared_with_a_source_that_moved_since_the_backup(stack: StartedStack) -> None:
    """The source loses rows after a backup too (purges, drained queues): within the daily
    allowance that is no missing data, beyond it the backup holds rows the source never had.
    A source count that row-level security filters for the counting role is not compared.
    An ORM's quoted mixed-case table is counted as written."""
    db = "opsready_moving_source"
    with _admin(stack, "postgres") as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db}"')
        conn.execute(f'CREATE DATABASE "{db}"')
        conn.execute(f'GRANT CONNECT ON DATABASE "{db}" TO relay_reader')
    try:
        with _admin(stack, db) as conn:
            conn.execute("CREATE TABLE jobs (id int PRIMARY KEY)")
            conn.execute("INSERT INTO jobs SELECT generate_series(1, 100)")
            conn.execute('CREATE TABLE "User" (id int PRIMARY KEY)')
            conn.execute('INSERT INTO "User" SELECT generate_series(1, 30)')
            conn.execute("CREATE TABLE secrets (id int PRIMARY KEY, owner text)")
            conn.execute("INSERT INTO secrets SELECT i, 'someone' FROM generate_series(1, 20) i")
            conn.execute("ALTER TABLE secrets ENABLE ROW LEVEL SECURITY")
            conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO relay_reader")
        data = dump_bytes(_dsn(stack, "relay_admin", db), "custom", "--no-owner")
        with _admin(stack, db) as conn:
            conn.execute("DELETE FROM jobs WHERE id > 95")  # drained since the backup
        source = _dsn(stack, "relay_reader", db)
        tables = ["jobs", "User", "secrets"]
        result = _server(stack, source_dsn=source, expected_tables=tables).restore_drill(
            BytesSource(data, key="backups/2025-03-01/moving.dump"))
        assert result.verified, result.problems
        assert result.tables == {"jobs": 100, "User": 30, "secrets": 20}
        assert result.source_counts == {"jobs": 95, "User": 30, "secrets": 0}
        assert result.source_filtered == ["secrets"]
        with _admin(stack, db) as conn:
            conn.execute("DELETE FROM jobs WHERE id > 50")  # far beyond a day's allowance
        result = _server(stack, source_dsn=source, expected_tables=tables).restore_drill(
            BytesSource(data, key="backups/2025-03-01/moving.dump"))
        assert not result.verified
        assert any("table jobs has 100 rows restored but 50 in the live source" in p
                   for p in result.problems), result.problems
    finally:
        with _admin(stack, "postgres") as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    assert _drill_databases(stack) == []


# ---- a role with server-side powers ------------------------------------------------------------


def test_superuser_is_refused_unless_allowed_by_name(stack: StartedStack) -> None:
    admin = _dsn(stack, "relay_admin")
    with pytest.raises(DrillRefused) as exc:
        _server(stack, scratch_dsn=admin).check_target()
    assert "relay_admin, which is superuser" in str(exc.value)
    assert "restore_drill.allow_privileged_role: relay_admin" in str(exc.value)
    assert _secret(stack, "pg_password") not in str(exc.value)
    # Allowed by name: the drill runs, and its report says so.
    server = _server(stack, scratch_dsn=admin, allow_privileged_role="relay_admin",
                     expected_tables=["workspaces", "api_keys", "audit_logs", "sessions"])
    dump = dump_bytes(_dsn(stack, "relay_admin", "relay"), "custom")
    result = server.restore_drill(BytesSource(dump, key="backups/2025-03-01/relay.dump"))
    assert result.verified, result.problems
    assert result.target["privileged_role_allowed"] == "relay_admin"
    report = result.report_markdown(rto_target_s=600, rpo_hours=1, scratch=server.scratch)
    assert "restored as the privileged role `relay_admin`, allowed by name" in report
    # A name that is not the role's allows nothing.
    with pytest.raises(DrillRefused):
        _server(stack, scratch_dsn=admin, allow_privileged_role="someone_else").check_target()


def test_server_program_role_is_refused(stack: StartedStack) -> None:
    with _admin(stack, "postgres") as conn:
        conn.execute("DROP ROLE IF EXISTS opsready_prog")
        conn.execute("CREATE ROLE opsready_prog LOGIN CREATEDB PASSWORD 'prog-pw-1234' "
                     "IN ROLE pg_execute_server_program")
    try:
        dsn = f"postgresql://opsready_prog:prog-pw-1234@127.0.0.1:{_port(stack)}/postgres"
        with pytest.raises(DrillRefused) as exc:
            _server(stack, scratch_dsn=dsn).check_target()
        assert "pg_execute_server_program" in str(exc.value)
        assert "COPY ... TO PROGRAM" in str(exc.value)
    finally:
        with _admin(stack, "postgres") as conn:
            conn.execute("DROP ROLE IF EXISTS opsready_prog")


# ---- the guardrail asks the servers ------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _kv(stack: StartedStack, **params: str) -> str:
    base = {"user": "opsready_drill", "password": _secret(stack, "pg_drill_password")}
    return " ".join(f"{k}={v}" for k, v in {**base, **params}.items())


def test_ipv4_mapped_ipv6_spelling_of_the_source_is_refused(stack: StartedStack) -> None:
    scratch = _kv(stack, host="::ffff:127.0.0.1", port=str(_port(stack)), dbname="relay")
    with pytest.raises(DrillRefused) as exc:
        _server(stack, scratch_dsn=scratch).check_target()
    assert "own database" in str(exc.value)
    # The same spelling of the maintenance database is fine: the drill creates its own.
    ok = _server(stack, scratch_dsn=_kv(stack, host="::ffff:127.0.0.1", port=str(_port(stack)),
                                        dbname="postgres")).check_target()
    assert ok.same_cluster_as == ("restore_drill.source_dsn",)


def test_the_sources_own_cluster_is_refused_unless_allowed_by_name(stack: StartedStack) -> None:
    """A scratch database beside the source shares its server's disk, WAL and replicas: the
    drill refuses that cluster unless restore_drill.allow_source_cluster says otherwise."""
    with pytest.raises(DrillRefused) as exc:
        _server(stack, allow_source_cluster=False).check_target()
    assert "the same as restore_drill.source_dsn" in str(exc.value)
    assert "restore_drill.allow_source_cluster: true" in str(exc.value)
    assert _server(stack).check_target().same_cluster_as == ("restore_drill.source_dsn",)


def test_service_file_spelling_of_the_source_is_refused(stack: StartedStack, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    services = tmp_path / "pg_service.conf"
    services.write_text(f"[relay_prod]\nhost=127.0.0.1\nport={_port(stack)}\ndbname=relay\n")
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    with pytest.raises(DrillRefused) as exc:
        _server(stack, scratch_dsn=_kv(stack, service="relay_prod")).check_target()
    assert "own database" in str(exc.value)


def test_multi_host_spelling_of_the_source_is_refused(stack: StartedStack) -> None:
    """libpq skips the first (closed) host and lands on the source's port."""
    hosts = _kv(stack, host="127.0.0.1,127.0.0.1", port=f"{_closed_port()},{_port(stack)}",
                dbname="relay")
    with pytest.raises(DrillRefused) as exc:
        _server(stack, scratch_dsn=hosts).check_target()
    assert "own database" in str(exc.value)
    # Allowed on the maintenance database, and pinned to the host and port that answered.
    check = _server(stack, scratch_dsn=_kv(stack, host="127.0.0.1,127.0.0.1",
                                           port=f"{_closed_port()},{_port(stack)}",
                                           dbname="postgres")).check_target()
    assert f"port={_port(stack)}" in check.pinned_dsn and "," not in check.pinned_dsn


def test_no_source_dsn_refuses_and_says_what_to_set(stack: StartedStack) -> None:
    server = ScratchServer(RestoreDrillConfig.model_validate({"scratch_dsn": _dsn(stack)}),
                           timeout=10)
    with pytest.raises(DrillRefused, match="set source_dsn"):
        server.restore_drill(BytesSource(b""))
    assert _drill_databases(stack) == []


def test_protected_databases_are_compared_too(stack: StartedStack) -> None:
    other_app = _dsn(stack, "relay_reader", "postgres")
    with pytest.raises(DrillRefused) as exc:
        _server(stack, protected_dsns=[other_app]).check_target()
    assert "restore_drill.protected_dsns[0]" in str(exc.value)


def test_without_pg_control_system_the_drill_refuses_and_names_the_grant(
        stack: StartedStack) -> None:
    with _admin(stack, "postgres") as conn:
        conn.execute("REVOKE EXECUTE ON FUNCTION pg_control_system() FROM PUBLIC")
    try:
        with pytest.raises(DrillRefused) as exc:
            _server(stack).check_target()
        message = str(exc.value)
        assert "GRANT EXECUTE ON FUNCTION pg_catalog.pg_control_system() TO opsready_drill" \
            in message
        assert "cannot prove" in message
    finally:
        with _admin(stack, "postgres") as conn:
            conn.execute("GRANT EXECUTE ON FUNCTION pg_control_system() TO PUBLIC")
    _server(stack).check_target()
