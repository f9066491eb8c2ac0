"""The scratch PostgreSQL server of the restore drill.

The drill is the one probe that writes, and only to a database it creates for itself:

1. the guardrail refuses when the scratch target resolves to the source database;
2. leftover ``opsready_drill_<epoch>_<hex>`` databases older than a day are swept;
3. a new ``opsready_drill_<epoch>_<hex>`` database is created on the scratch server;
4. the backup is streamed into it in 1 MiB chunks: a custom-format dump goes to a temp file
   for ``pg_restore -j N`` (parallel restore needs a seekable file) or straight into
   ``pg_restore``'s stdin with one job; gzip'd or plain SQL is piped into ``psql``;
5. the expected tables and their row counts are checked;
6. the database is dropped in a ``finally`` block, and on SIGINT/SIGTERM too (handlers are
   installed for the duration of the drill and restored afterwards; the signal is then
   delivered as it would have been).

Passwords reach the client tools through ``PGPASSWORD``, never argv, and never a message.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any, Protocol

from opsready._errors import (
    AccessRefused,
    MissingInput,
    ProbeError,
    ProbeTimeout,
    TargetUnreachable,
    UnexpectedResponse,
)
from opsready.config import RestoreDrillConfig
from opsready.evidence import redactor
from opsready.probes.s3 import DumpFormat, sniff_format

__all__ = [
    "DRILL_PREFIX",
    "DrillRefused",
    "DrillResult",
    "Endpoint",
    "Readable",
    "ScratchServer",
    "drill_database_name",
    "endpoint_of",
    "same_database",
]

DRILL_PREFIX = "opsready_drill_"
CHUNK = 1 << 20
SWEEP_AFTER_S = 86400.0
_DRILL_NAME = re.compile(rf"^{DRILL_PREFIX}(\d{{9,11}})(?:_[0-9a-f]+)?$")


class DrillRefused(ProbeError):
    """The guardrail refused to run the drill against this target."""


class Readable(Protocol):
    def read(self, n: int, /) -> bytes: ...


# ---- where a DSN points ------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """The server and database a DSN resolves to. ``hosts`` are resolved addresses (with
    ``loopback`` standing for every local address, and unix sockets counting as local)."""

    hosts: frozenset[str]
    port: int
    dbname: str
    shown: str  # host:port/dbname, without credentials

    def with_db(self, dbname: str) -> Endpoint:
        host = self.shown.rsplit(":", 1)[0]
        return Endpoint(self.hosts, self.port, dbname, f"{host}:{self.port}/{dbname}")


def _resolve(host: str, port: int) -> set[str]:
    if not host or host.startswith("/") or host.startswith("@"):
        return {"loopback"}  # a unix socket: this machine
    found: set[str] = set()
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return {host.lower()}
    for info in infos:
        addr = str(info[4][0]).split("%", 1)[0]
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            found.add(addr)
            continue
        found.add("loopback" if ip.is_loopback else ip.compressed)
    return found or {host.lower()}


def endpoint_of(dsn: str) -> Endpoint:
    """Parse a URL or key/value DSN the way libpq would (defaults from PG* variables)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(dsn)
    except Exception:  # psycopg.ProgrammingError with the DSN in it
        raise MissingInput("restore_drill: a DSN could not be parsed; check its syntax") from None
    user = str(params.get("user") or os.environ.get("PGUSER") or _os_user())
    host_spec = str(params.get("hostaddr") or params.get("host") or os.environ.get("PGHOST", ""))
    port_spec = str(params.get("port") or os.environ.get("PGPORT") or "5432")
    dbname = str(params.get("dbname") or os.environ.get("PGDATABASE") or user)
    try:
        port = int(port_spec.split(",")[0])
    except ValueError:
        raise MissingInput(f"restore_drill: port {port_spec!r} is not a number") from None
    hosts: set[str] = set()
    for host in host_spec.split(",") if host_spec else [""]:
        hosts |= _resolve(host.strip(), port)
    first = host_spec.split(",")[0] if host_spec else "local socket"
    return Endpoint(frozenset(hosts), port, dbname, f"{first}:{port}/{dbname}")


def _os_user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return "postgres"


def same_database(a: Endpoint, b: Endpoint) -> bool:
    """Same host (after resolution), same port, same database."""
    return a.port == b.port and a.dbname == b.dbname and bool(a.hosts & b.hosts)


def drill_database_name(now: float | None = None) -> str:
    """``opsready_drill_<epoch seconds>_<4 hex>``: sortable, sweepable, and unique enough
    for concurrent drills."""
    return f"{DRILL_PREFIX}{int(now if now is not None else time.time())}_{secrets.token_hex(2)}"


# ---- the result --------------------------------------------------------------------------


@dataclass
class DrillResult:
    database: str
    key: str
    format: DumpFormat = "unknown"
    size_bytes: int = 0
    phases: dict[str, float] = field(default_factory=dict)
    rto_seconds: float | None = None
    tables: dict[str, int | None] = field(default_factory=dict)  # None: missing
    source_counts: dict[str, int | None] | None = None
    problems: list[str] = field(default_factory=list)
    restore_exit_code: int | None = None
    restore_errors: list[str] = field(default_factory=list)
    dropped: bool = False
    swept: list[str] = field(default_factory=list)
    started_at: str = ""
    # Set when the drill was stopped for running past its budget (twice the RTO target).
    overrun_s: float | None = None

    @property
    def verified(self) -> bool:
        """The restore finished and every table check held."""
        return self.rto_seconds is not None and not self.problems

    def summary(self) -> dict[str, Any]:
        return {
            "database": self.database, "backup_key": self.key, "format": self.format,
            "size_bytes": self.size_bytes,
            "phases_s": {k: round(v, 3) for k, v in self.phases.items()},
            "rto_seconds": None if self.rto_seconds is None else round(self.rto_seconds, 3),
            "rows": self.tables, "source_rows": self.source_counts,
            "restore_exit_code": self.restore_exit_code,
            "restore_errors": self.restore_errors[:10], "problems": self.problems,
            "dropped": self.dropped, "swept": self.swept,
        }

    def report_markdown(self, *, rto_target_s: float, rpo_hours: float | None,
                        scratch: str) -> str:
        """A short drill report for the run's evidence."""
        verdict = "PASSED" if self.verified and self.rto_seconds is not None \
            and self.rto_seconds <= rto_target_s else "FAILED"
        rto = "n/a" if self.rto_seconds is None else f"{self.rto_seconds:.2f} s"
        rpo = "n/a" if rpo_hours is None else f"{rpo_hours:.2f} h"
        lines = [
            f"# Restore drill: {verdict}",
            "",
            f"- started: {self.started_at}",
            f"- backup: `{self.key}` ({self.format} format, {self.size_bytes} bytes)",
            f"- scratch database: `{self.database}` on `{scratch}`"
            f" ({'dropped' if self.dropped else 'NOT dropped'})",
            f"- RTO: {rto} (target {rto_target_s:g} s)",
            f"- RPO (backup age at drill time): {rpo}",
            "",
            "| phase | seconds |",
            "| --- | ---: |",
            *(f"| {k} | {v:.3f} |" for k, v in self.phases.items()),
            "",
            "| table | rows restored | rows in source |",
            "| --- | ---: | ---: |",
        ]
        for table, rows in self.tables.items():
            src = (self.source_counts or {}).get(table)
            lines.append(f"| {table} | {'missing' if rows is None else rows} | "
                         f"{'-' if src is None else src} |")
        if self.problems:
            lines += ["", "## Problems", "", *(f"- {p}" for p in self.problems)]
        if self.swept:
            lines += ["", f"Swept leftover drill databases: {', '.join(self.swept)}"]
        return "\n".join(lines) + "\n"


# ---- signals -----------------------------------------------------------------------------


class _Overrun(Exception):
    """The drill ran past its time budget: the RTO is measured to exceed the target."""


class _Interrupted(BaseException):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _SignalGuard:
    """Turns SIGINT/SIGTERM into an exception while the drill runs, so the ``finally``
    drops the scratch database; during the clean-up itself a signal is only noted.
    On exit the old handlers come back and a noted signal is delivered again."""

    def __init__(self) -> None:
        self.pending: int | None = None
        self.defer = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _SignalGuard:
        # Handlers can only be installed from the main thread.
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.pending is not None:
            return
        self.pending = signum
        if not self.defer:
            raise _Interrupted(signum)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        if self.pending is None:
            return
        if self.pending == signal.SIGINT:
            raise KeyboardInterrupt
        signal.raise_signal(self.pending)
        # The old handler returned (or ignores the signal): stop the drill all the same.
        raise ProbeError(f"restore drill interrupted by signal {self.pending}")


# ---- the scratch server ------------------------------------------------------------------


class ScratchServer:
    """The configured scratch server (``restore_drill.scratch_dsn``)."""

    def __init__(self, cfg: RestoreDrillConfig, timeout: float) -> None:
        self.cfg = cfg
        self.timeout = timeout
        self._scratch_dsn = cfg.scratch_dsn.get_secret_value()
        self._source_dsn = cfg.source_dsn.get_secret_value() if cfg.source_dsn else None
        self.scratch = endpoint_of(self._scratch_dsn)
        self.source = endpoint_of(self._source_dsn) if self._source_dsn else None

    def close(self) -> None:
        return None

    # ---- guardrail and sweep ------------------------------------------------------------

    def refuse_if_source(self, drill_db: str | None = None) -> None:
        """Raise ``DrillRefused`` when the scratch DSN, or the drill database on the scratch
        server, resolves to the source database (same host after DNS resolution, same port,
        same database name). Without ``source_dsn`` there is no source to compare with; the
        drill then relies on writing only to its own ``opsready_drill_*`` database."""
        if self.source is None:
            return
        targets = [("restore_drill.scratch_dsn", self.scratch)]
        if drill_db is not None:
            targets.append(("the drill database", self.scratch.with_db(drill_db)))
        for label, target in targets:
            if same_database(target, self.source):
                raise DrillRefused(
                    f"restore drill refused: {label} ({target.shown}) resolves to the source "
                    f"database ({self.source.shown}); point restore_drill.scratch_dsn at a "
                    f"maintenance database of a separate scratch server"
                )

    def sweep(self, now: float | None = None) -> list[str]:
        """Drop ``opsready_drill_*`` databases older than a day; return their names."""
        now = time.time() if now is None else now
        with self._connect(self._scratch_dsn) as conn:
            rows = conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s",
                (DRILL_PREFIX.replace("_", r"\_") + "%",),
            ).fetchall()
        swept = []
        for (name,) in rows:
            m = _DRILL_NAME.match(str(name))
            if m is None or now - int(m.group(1)) <= SWEEP_AFTER_S:
                continue
            if self.source is not None and same_database(self.scratch.with_db(name), self.source):
                continue
            self._drop(str(name))
            swept.append(str(name))
        return swept

    # ---- the drill ----------------------------------------------------------------------

    def restore_drill(
        self,
        stream: Readable | Callable[[], Readable],
        size: int,
        *,
        key: str = "",
        on_phase: Callable[[str, float], None] | None = None,
    ) -> DrillResult:
        """Restore a dump into a new scratch database, check it, drop it.

        ``stream`` is the dump's body, or a function that opens it (then the RTO includes
        the request, and the body is closed here). The RTO runs from the start of the
        download to the end of verification. Verification findings land in
        ``DrillResult.problems``; ``ProbeError`` is raised only when the drill could not run.
        """
        db = drill_database_name()
        self.refuse_if_source(db)
        result = DrillResult(database=db, key=key,
                             started_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))

        def phase(name: str, started: float) -> None:
            result.phases[name] = time.monotonic() - started
            if on_phase is not None:
                on_phase(name, result.phases[name])

        result.swept = self.sweep()
        if self._source_dsn is not None:
            result.source_counts = self._source_counts()
        tools = _Children()
        with _SignalGuard() as guard:
            created = False
            # Recovery starts with an empty database to restore into.
            started = time.monotonic()
            deadline = started + self._drill_budget()
            # Past its budget the tools are killed, so a write to a stalled tool's stdin
            # cannot block the drill forever.
            watchdog = threading.Timer(self._drill_budget(), tools.kill_all)
            watchdog.daemon = True
            try:
                watchdog.start()
                with self._connect(self._scratch_dsn) as conn:
                    # Set before the statement: a signal or a lost answer during CREATE may
                    # still leave the database behind, and the drop is IF EXISTS.
                    created = True
                    conn.execute(f'CREATE DATABASE "{db}"')
                phase("create", started)
                opened = callable(stream)
                body: Readable = stream() if callable(stream) else stream
                try:
                    self._load(body, size, db, result, tools, phase, deadline)
                finally:
                    if opened:
                        close = getattr(body, "close", None)
                        if close is not None:
                            close()
                if size and result.size_bytes != size:
                    result.problems.append(
                        f"downloaded {result.size_bytes} bytes of {key or 'the backup'}, the "
                        f"object has {size}; the download was cut short")
                if result.restore_exit_code is not None:
                    t = time.monotonic()
                    self._verify(db, result)
                    phase("verify", t)
                    result.rto_seconds = time.monotonic() - started
            except _Overrun as exc:
                result.problems.append(str(exc))
                result.overrun_s = time.monotonic() - started
            except _Interrupted:
                pass  # the guard re-raises once the database is gone
            finally:
                guard.defer = True
                watchdog.cancel()
                tools.kill()
                if created:
                    t = time.monotonic()
                    self._drop(db)
                    result.dropped = True
                    phase("drop", t)
        return result

    def _drill_budget(self) -> float:
        # The drill may overrun its RTO target (that is a finding), but not forever.
        return max(2.0 * self.cfg.rto_target_s, 120.0)

    def _load(self, body: Readable, size: int, db: str, result: DrillResult, tools: _Children,
              phase: Callable[[str, float], None], deadline: float) -> None:
        t = time.monotonic()
        first = body.read(CHUNK)
        result.size_bytes = len(first)
        result.format = sniff_format(first[:16])
        if result.format == "unknown":
            raise UnexpectedResponse(
                f"restore drill: {result.key or 'the backup'} is neither a custom-format dump "
                f"(PGDMP) nor gzip'd or plain SQL (starts with {first[:8]!r})"
            )
        conninfo, env = self._tool_target(db)
        if result.format == "custom" and self.cfg.jobs > 1:
            # pg_restore -j needs a seekable file: spool the stream to disk, chunk by chunk.
            with _spool() as (path, fh):
                fh.write(first)
                for chunk in _chunks(body):
                    fh.write(chunk)
                    result.size_bytes += len(chunk)
                    _check_deadline(deadline, result)
                fh.close()
                phase("download", t)
                t = time.monotonic()
                argv = [self._tool(self.cfg.pg_restore), "--no-owner", "--no-privileges",
                        "--no-password", "-j", str(self.cfg.jobs), "-d", conninfo, str(path)]
                proc = tools.start(argv, env, stdin=None)
                self._finish(proc, tools, result, deadline)
                phase("restore", t)
            return
        if result.format == "custom":
            argv = [self._tool(self.cfg.pg_restore), "--no-owner", "--no-privileges",
                    "--no-password", "-d", conninfo]
        else:
            argv = [self._tool(self.cfg.psql), "-X", "-q", "--no-password", "-d", conninfo]
        proc = tools.start(argv, env, stdin=subprocess.PIPE)
        assert proc.stdin is not None
        feed = _gunzip if result.format == "gzip" else _identity
        try:
            for chunk in feed(_prepend(first, body), result):
                proc.stdin.write(chunk)
                _check_deadline(deadline, result)
        except BrokenPipeError:
            pass  # the tool exited early; its exit code and stderr say why
        finally:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
        phase("download", t)
        t = time.monotonic()
        self._finish(proc, tools, result, deadline)
        phase("restore", t)

    def _finish(self, proc: subprocess.Popen[bytes], tools: _Children, result: DrillResult,
                deadline: float) -> None:
        try:
            code = proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(proc.args, 0)  # killed by the watchdog
        except subprocess.TimeoutExpired:
            tools.kill()
            raise _Overrun(
                f"the restore did not finish within the drill's budget of "
                f"{self._drill_budget():g}s (twice the RTO target, at least 120 s); aborted"
            ) from None
        result.restore_exit_code = code
        errors = tools.stderr_lines(proc)
        result.restore_errors = [redactor.text(e) for e in errors if "ERROR" in e or
                                 "error" in e][:20]
        if code != 0:
            detail = "; ".join(result.restore_errors[:3]) or "no error output"
            tool = Path(str(proc.args[0])).name if isinstance(proc.args, list) else "restore"
            result.problems.append(f"{tool} exited with {code}: {detail}")

    def _verify(self, db: str, result: DrillResult) -> None:
        with self._connect(self._scratch_dsn, dbname=db) as conn:
            result.tables = _count_tables(conn, self.cfg.expected_tables)
        for table, rows in result.tables.items():
            if rows is None:
                result.problems.append(f"table {table} is missing from the restored database")
                continue
            floor = self.cfg.min_rows.get(table)
            if floor is not None and rows < floor:
                result.problems.append(
                    f"table {table} has {rows} rows, expected at least {floor} "
                    f"(restore_drill.min_rows)")
            src = (result.source_counts or {}).get(table)
            if src is not None and abs(rows - src) > self.cfg.row_tolerance * max(src, 1):
                result.problems.append(
                    f"table {table} has {rows} rows, the source has {src}; expected within "
                    f"{self.cfg.row_tolerance:.0%} (restore_drill.row_tolerance)")

    def _source_counts(self) -> dict[str, int | None]:
        assert self._source_dsn is not None
        # Read-only by construction: the session refuses writes.
        with self._connect(self._source_dsn, read_only=True) as conn:
            return _count_tables(conn, self.cfg.expected_tables)

    # ---- connections and tools ----------------------------------------------------------

    @contextlib.contextmanager
    def _connect(self, dsn: str, *, dbname: str | None = None,
                 read_only: bool = False) -> Iterator[Any]:
        import psycopg

        target = endpoint_of(dsn)
        shown = target.with_db(dbname).shown if dbname else target.shown
        options = f"-c statement_timeout={int(self.cfg.statement_timeout_s * 1000)}"
        if read_only:
            options += " -c default_transaction_read_only=on"
        kwargs: dict[str, Any] = {"connect_timeout": max(2, int(self.timeout)),
                                  "options": options, "autocommit": True}
        if dbname:
            kwargs["dbname"] = dbname
        try:
            conn = psycopg.connect(dsn, **kwargs)
        except psycopg.OperationalError as exc:
            raise _connect_error(exc, shown) from None
        try:
            yield conn
        except psycopg.errors.QueryCanceled:
            raise ProbeTimeout(
                f"postgres {shown}: a statement ran past restore_drill.statement_timeout_s "
                f"({self.cfg.statement_timeout_s:g}s)"
            ) from None
        except psycopg.errors.InsufficientPrivilege as exc:
            raise AccessRefused(
                f"postgres {shown}: {redactor.text(str(exc)).strip()}; the drill role needs "
                f"CREATEDB on the scratch server and SELECT on the source tables"
            ) from None
        except psycopg.OperationalError as exc:
            raise _connect_error(exc, shown) from None
        except psycopg.Error as exc:
            raise UnexpectedResponse(f"postgres {shown}: {redactor.text(str(exc)).strip()}") \
                from None
        finally:
            conn.close()

    def _drop(self, db: str) -> None:
        """Drop a drill database, ending its sessions first (PostgreSQL 13+ ``FORCE``)."""
        import psycopg

        with self._connect(self._scratch_dsn) as conn:
            try:
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            except psycopg.errors.SyntaxError:
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE datname = %s", (db,))
                conn.execute(f'DROP DATABASE IF EXISTS "{db}"')

    def _tool(self, name: str) -> str:
        found = shutil.which(name)
        if found is None:
            raise MissingInput(
                f"restore drill: {name} is not on PATH; install the PostgreSQL client tools "
                f"(a version at least as new as the server that made the dump)"
            )
        return found

    def _tool_target(self, db: str) -> tuple[str, dict[str, str]]:
        """A conninfo for argv (no password) and the environment carrying the password."""
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        params = conninfo_to_dict(self._scratch_dsn)
        password = params.pop("password", None)
        params["dbname"] = db
        params.setdefault("connect_timeout", str(max(2, int(self.timeout))))
        env = {**os.environ}
        env.pop("PGPASSWORD", None)
        if password is not None:
            env["PGPASSWORD"] = str(password)
        return make_conninfo(**{k: str(v) for k, v in params.items()}), env


def _connect_error(exc: Exception, shown: str) -> ProbeError:
    text = redactor.text(str(exc)).strip().splitlines()
    detail = text[0] if text else type(exc).__name__
    low = detail.lower()
    if "password" in low or "authentication" in low or "permission denied" in low \
            or "no pg_hba.conf entry" in low:
        return AccessRefused(f"postgres {shown}: {detail}; check the DSN's user and password")
    if "timeout" in low or "timed out" in low:
        return ProbeTimeout(f"postgres {shown}: {detail}; check the network path")
    if "does not exist" in low:
        return MissingInput(f"postgres {shown}: {detail}; check the database name in the DSN")
    return TargetUnreachable(f"postgres {shown}: {detail}; check that the server is up and the "
                             f"DSN's host and port")


def _count_tables(conn: Any, tables: list[str]) -> dict[str, int | None]:
    from psycopg import sql

    counts: dict[str, int | None] = {}
    for table in tables:
        if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is None:
            counts[table] = None
            continue
        ident = sql.Identifier(*table.split(".", 1))
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(ident)).fetchone()
        counts[table] = int(row[0])
    return counts


class _Children:
    """The client tools of one drill: each in its own session (Ctrl-C reaches us, not
    them), stderr to a temp file (no pipe to fill up), killed as a group on clean-up."""

    def __init__(self) -> None:
        self.procs: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []

    def start(self, argv: list[str], env: dict[str, str],
              stdin: int | None) -> subprocess.Popen[bytes]:
        err = tempfile.TemporaryFile()  # noqa: SIM115 - closed in kill()
        try:
            proc = subprocess.Popen(argv, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=err, env=env,
                                    start_new_session=True)
        except OSError as exc:
            err.close()
            raise MissingInput(f"restore drill: could not start {argv[0]}: {exc}") from None
        self.procs.append((proc, err))
        return proc

    def stderr_lines(self, proc: subprocess.Popen[bytes]) -> list[str]:
        for p, err in self.procs:
            if p is proc:
                err.seek(0)
                return err.read(64 * 1024).decode("utf-8", "replace").splitlines()
        return []

    def kill_all(self) -> None:
        """SIGKILL every tool still running; safe from another thread."""
        for proc, _err in list(self.procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)

    def kill(self) -> None:
        for proc, err in self.procs:
            if proc.poll() is None:
                for sig in (signal.SIGTERM, signal.SIGKILL):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(proc.pid, sig)
                    try:
                        proc.wait(timeout=3)
                        break
                    except subprocess.TimeoutExpired:
                        continue
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            err.close()
        self.procs.clear()


@contextlib.contextmanager
def _spool() -> Iterator[tuple[Path, IO[bytes]]]:
    fd, name = tempfile.mkstemp(prefix="opsready-drill-", suffix=".dump")
    path = Path(name)
    fh = os.fdopen(fd, "wb")
    try:
        yield path, fh
    finally:
        fh.close()
        path.unlink(missing_ok=True)


def _chunks(body: Readable) -> Iterator[bytes]:
    while True:
        data = body.read(CHUNK)
        if not data:
            return
        yield data


def _prepend(first: bytes, body: Readable) -> Iterator[bytes]:
    yield first
    yield from _chunks(body)


def _identity(chunks: Iterator[bytes], result: DrillResult) -> Iterator[bytes]:
    for i, chunk in enumerate(chunks):
        if i:
            result.size_bytes += len(chunk)
        yield chunk


def _gunzip(chunks: Iterator[bytes], result: DrillResult) -> Iterator[bytes]:
    """Decompress gzip (multi-member too), with bounded output per step."""
    d = zlib.decompressobj(wbits=31)
    for i, chunk in enumerate(chunks):
        if i:
            result.size_bytes += len(chunk)
        data = chunk
        while data:
            out = d.decompress(data, 4 * CHUNK)
            if out:
                yield out
            if d.eof:
                data = d.unused_data
                d = zlib.decompressobj(wbits=31)
            else:
                data = d.unconsumed_tail
    tail = d.flush()
    if tail:
        yield tail


def _check_deadline(deadline: float, result: DrillResult) -> None:
    if time.monotonic() > deadline:
        raise _Overrun(
            f"the download of {result.key or 'the backup'} ran past the drill's budget "
            f"(twice the RTO target, at least 120 s); aborted after {result.size_bytes} bytes"
        )
