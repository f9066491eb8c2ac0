"""The scratch PostgreSQL server of the restore drill.

The drill is the one probe that writes, and only to a database it creates for itself. A
backup is untrusted input, so before anything is written:

1. **The target is proven not to be the source, by the servers themselves.** The drill
   connects to the scratch server and to the source (and to every ``protected_dsns`` entry)
   and compares ``pg_control_system().system_identifier`` and ``current_database()``. No
   spelling of a DSN (``::ffff:127.0.0.1``, a ``service=`` entry, a multi-host list) can hide
   a server from that. The source's own cluster (or a protected one's) is refused as the
   scratch server, since a restore there shares its disk, WAL and replicas, unless
   ``restore_drill.allow_source_cluster`` allows it; even then the drill only creates its new
   ``opsready_drill_*`` database, never uses the source's database. The tools are then pinned
   to the very host and port that were checked. Without ``source_dsn``, or without the right
   to call ``pg_control_system()``, the drill refuses and says what to configure.
2. **The drill role holds no server-side powers.** A superuser, or a member of
   ``pg_execute_server_program`` (``COPY ... TO PROGRAM`` runs commands on the database host)
   or of ``pg_read_server_files``/``pg_write_server_files``, is refused unless
   ``restore_drill.allow_privileged_role`` names that role; the result then says so.
3. **A plain-SQL backup runs no psql meta-command.** It is scanned whole
   (``dumps.PlainScriptGuard``, streaming, spooled to a temp file) before psql starts; any
   backslash command outside COPY data refuses the restore, naming the line. psql then runs
   with ``ON_ERROR_STOP`` and, where the client supports it (17.6, 16.10, 15.14, 14.19, 13.22
   and later), in its restricted mode under a key the backup cannot know. Custom, tar and
   directory dumps go through ``pg_restore``, which runs no meta-commands.

Then leftover ``opsready_drill_<epoch>_<hex>`` databases of this role older than a day are
swept, a new one is created, the backup is streamed in (1 MiB chunks), the expected tables
and their rows are checked, and the database is dropped in a ``finally`` block, on SIGINT
and SIGTERM too.

A drill may also run on a thread of its own (``BackgroundDrill``), alongside read-only
probes: it writes only to its own database. A thread hears no signal, so there the run stops
it explicitly (``DrillCancel``): the tools are killed at once, the drill stops at its next
step, and the ``finally`` drops its database as above.

Passwords reach the client tools through ``PGPASSWORD``, never argv, and never a message.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
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
from opsready._progress import DrillProgress
from opsready.config import RestoreDrillConfig
from opsready.evidence import redactor
from opsready.probes.dumps import (
    ArchiveHeader,
    DumpFormat,
    DumpProblem,
    GzipStream,
    HostileDump,
    PlainScriptGuard,
    foreign_compression,
    is_gzip,
    major_version,
    parse_archive_header,
    sniff,
)

__all__ = [
    "DRILL_PREFIX",
    "PRIVILEGED_ROLES",
    "BackgroundDrill",
    "DrillCancel",
    "DrillCancelled",
    "DrillRefused",
    "DrillResult",
    "DumpSource",
    "Readable",
    "ScratchServer",
    "ServerIdentity",
    "ToolTooOld",
    "drill_database_name",
    "psql_has_restricted_mode",
]

DRILL_PREFIX = "opsready_drill_"
CHUNK = 1 << 20
SWEEP_AFTER_S = 86400.0
# A plain DROP DATABASE waits up to 5 s for other sessions itself; a few more tries.
_DROP_ATTEMPTS = 4
# Built-in roles whose members can run programs or touch files on the database host.
PRIVILEGED_ROLES = ("pg_execute_server_program", "pg_write_server_files", "pg_read_server_files")
_DRILL_NAME = re.compile(rf"^{DRILL_PREFIX}(\d{{9,11}})(?:_[0-9a-f]+)?$")
# The first minor release of each branch with psql's \restrict (CVE-2025-8714).
_RESTRICTED_SINCE = {13: 22, 14: 19, 15: 14, 16: 10, 17: 6}
_STDERR_LIMIT = 1 << 20


class DrillRefused(ProbeError):
    """The guardrail refused to run the drill against this target."""


class DrillCancelled(ProbeError):
    """The run stopped a drill running on its own thread (Ctrl-C, SIGTERM, the deadline)."""


class ToolTooOld(MissingInput):
    """The client tools or the scratch server are older than the dump: this environment
    cannot judge the backup, which is not to blame."""


class Readable(Protocol):
    def read(self, n: int, /) -> bytes: ...


class DumpSource(Protocol):
    """One backup to restore. ``files()`` is empty for a single-object dump (custom, tar,
    plain); for a directory-format dump it names its files (``toc.dat`` and the data files)."""

    key: str
    size: int

    def open(self) -> Readable: ...

    def files(self) -> list[str]: ...

    def open_file(self, name: str) -> Readable: ...


def drill_database_name(now: float | None = None) -> str:
    """``opsready_drill_<epoch seconds>_<4 hex>``: sortable, sweepable, and unique enough
    for concurrent drills."""
    return f"{DRILL_PREFIX}{int(now if now is not None else time.time())}_{secrets.token_hex(2)}"


def psql_has_restricted_mode(version: tuple[int, int] | None) -> bool:
    """Whether a psql of this (major, minor) version has ``\\restrict``."""
    if version is None:
        return False
    major, minor = version
    return major >= 18 or minor >= _RESTRICTED_SINCE.get(major, 10**6)


# ---- who the servers are ---------------------------------------------------------------------


@dataclass(frozen=True)
class ServerIdentity:
    """What a server says about itself on one connection."""

    label: str  # the config key the DSN came from
    system_identifier: int
    database: str
    role: str
    superuser: bool
    privileged_roles: tuple[str, ...]
    server_version_num: int
    host: str  # where libpq actually connected (a host name, an address or a socket dir)
    hostaddr: str
    port: int

    @property
    def shown(self) -> str:
        return f"{self.host}:{self.port}/{self.database}"

    def describe(self) -> dict[str, Any]:
        return {"dsn": self.label, "connected_to": self.shown,
                "system_identifier": str(self.system_identifier), "database": self.database,
                "role": self.role, "superuser": self.superuser,
                "privileged_roles": list(self.privileged_roles),
                "server_version_num": self.server_version_num}


@dataclass(frozen=True)
class TargetCheck:
    """The guardrail's verdict on the scratch target: who is who, and the pinned DSN the
    drill uses from then on."""

    scratch: ServerIdentity
    others: tuple[ServerIdentity, ...]
    same_cluster_as: tuple[str, ...]
    privileged_allowed: str | None
    pinned_dsn: str

    def describe(self) -> dict[str, Any]:
        return {"scratch": self.scratch.describe(),
                "compared_with": [o.describe() for o in self.others],
                "same_cluster_as": list(self.same_cluster_as),
                "privileged_role_allowed": self.privileged_allowed}


# ---- the result ---------------------------------------------------------------------------


@dataclass
class DrillResult:
    database: str
    key: str
    format: DumpFormat = "unknown"
    compressed: bool = False
    size_bytes: int = 0
    phases: dict[str, float] = field(default_factory=dict)
    rto_seconds: float | None = None
    tables: dict[str, int | None] = field(default_factory=dict)  # None: missing
    source_counts: dict[str, int | None] | None = None
    # Tables whose source count row-level security filters for the counting role: their
    # restored rows are not compared with it.
    source_filtered: list[str] = field(default_factory=list)
    backup_age_hours: float | None = None
    problems: list[str] = field(default_factory=list)
    # Set when the backup itself was refused (a psql meta-command in a plain script).
    refused: str | None = None
    restore_exit_code: int | None = None
    restore_errors: list[str] = field(default_factory=list)
    tolerated: list[str] = field(default_factory=list)
    restricted_mode: bool | None = None  # psql's \restrict, for plain scripts
    target: dict[str, Any] = field(default_factory=dict)
    dump: dict[str, Any] = field(default_factory=dict)
    dropped: bool = False
    swept: list[str] = field(default_factory=list)
    started_at: str = ""
    # Set when the drill was stopped for running past its budget (twice the RTO target).
    overrun_s: float | None = None
    # Set when the drill ran in the background while other read-only criteria ran: the RTO
    # was measured with them sharing the machine and the network.
    alongside: bool = False
    # From the guardrail's first question to the drop: the whole drill, on its own clock.
    duration_s: float | None = None

    @property
    def verified(self) -> bool:
        """The restore finished and every table check held."""
        return self.rto_seconds is not None and not self.problems and self.refused is None

    def summary(self) -> dict[str, Any]:
        return {
            "database": self.database, "backup_key": self.key, "format": self.format,
            "compressed": self.compressed, "size_bytes": self.size_bytes,
            "phases_s": {k: round(v, 3) for k, v in self.phases.items()},
            "rto_seconds": None if self.rto_seconds is None else round(self.rto_seconds, 3),
            "rows": self.tables, "source_rows": self.source_counts,
            "source_rows_filtered_by_row_security": self.source_filtered,
            "restore_exit_code": self.restore_exit_code,
            "restore_errors": self.restore_errors[:10], "tolerated": self.tolerated[:10],
            "problems": self.problems, "refused": self.refused,
            "psql_restricted_mode": self.restricted_mode, "target": self.target,
            "dump": self.dump, "dropped": self.dropped, "swept": self.swept,
            "measured_alongside_other_criteria": self.alongside,
            "duration_s": None if self.duration_s is None else round(self.duration_s, 3),
        }

    def report_markdown(self, *, rto_target_s: float, rpo_hours: float | None,
                        scratch: str) -> str:
        """A short drill report for the run's evidence."""
        verdict = "PASSED" if self.verified and self.rto_seconds is not None \
            and self.rto_seconds <= rto_target_s else "FAILED"
        rto = "n/a" if self.rto_seconds is None else f"{self.rto_seconds:.2f} s"
        rpo = "n/a" if rpo_hours is None else f"{rpo_hours:.2f} h"
        kind = self.format + (" (gzip)" if self.compressed else "")
        lines = [
            f"# Restore drill: {verdict}",
            "",
            f"- started: {self.started_at}",
            f"- backup: `{self.key}` ({kind} format, {self.size_bytes} bytes)",
            f"- scratch database: `{self.database}` on `{scratch}`"
            f" ({'dropped' if self.dropped else 'NOT dropped'})",
            f"- RTO: {rto} (target {rto_target_s:g} s)",
            f"- RPO (backup age at drill time): {rpo}",
        ]
        if self.alongside:
            lines.append("- measured in the background, while other read-only criteria of the "
                         "run were running alongside")
        allowed = self.target.get("privileged_role_allowed")
        if allowed:
            lines.append(f"- restored as the privileged role `{allowed}`, allowed by name in "
                         f"restore_drill.allow_privileged_role")
        if self.restricted_mode is not None:
            mode = "on" if self.restricted_mode else "not supported by this psql"
            lines.append(f"- psql restricted mode: {mode}")
        if self.refused:
            lines += ["", "## Refused", "", self.refused]
        lines += [
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
        if self.tolerated:
            lines += ["", "## Tolerated errors", "", *(f"- {t}" for t in self.tolerated[:20])]
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


# ---- a drill on a thread of its own ---------------------------------------------------------


class DrillCancel:
    """Stops a drill that runs on another thread. The drill checks it between its steps and
    while it streams the backup; ``cancel`` also kills its client tools at once, so a
    restore in progress ends now rather than at its next step."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._tools: _Children | None = None
        self.reason = ""
        # The drill's scratch database, once named: what the clean-up drops.
        self.database: str | None = None

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def cancel(self, reason: str) -> None:
        with self._lock:
            self.reason = reason
            self._event.set()
            tools = self._tools
        if tools is not None:
            tools.kill_all()

    def attach(self, tools: _Children) -> None:
        with self._lock:
            self._tools = tools

    def check(self) -> None:
        """Raise ``DrillCancelled`` once a cancel was asked for."""
        if self._event.is_set():
            raise DrillCancelled(f"restore drill cancelled: {self.reason}")


class BackgroundDrill:
    """One drill run on a thread of its own while the rest of the run goes on, for the drill
    criteria to take its result when they come to it (``take``).

    ``find`` names the backup to restore and its age in hours, or ``None`` when there is none
    to drill (the criteria then find out why themselves). The drill is the very drill a
    criterion runs (``ScratchServer.restore_drill``): its guardrail refusal or error is
    raised by ``take`` with its own message. ``stop`` cancels a drill still running and waits,
    bounded, for it to drop its scratch database."""

    def __init__(self, server: ScratchServer,
                 find: Callable[[], tuple[DumpSource, float] | None],
                 progress: Callable[[str], None] | None) -> None:
        self.server, self._find, self._progress = server, find, progress
        self._cancel = DrillCancel()
        self._outcome: Future[tuple[str, DrillResult] | None] = Future()
        self._thread = threading.Thread(target=self._run, name="opsready-restore-drill",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        self._outcome.set_running_or_notify_cancel()
        try:
            found = self._find()
            if found is None or self._cancel.requested:
                self._outcome.set_result(None)
                return
            source, age_hours = found
            result = self.server.drill(source, backup_age_hours=age_hours,
                                       progress=self._progress, cancel=self._cancel)
            result.alongside = True
            self._outcome.set_result((source.key, result))
        except BaseException as exc:  # handed to the criterion that takes the result
            self._outcome.set_exception(exc)

    def take(self, key: str) -> DrillResult | None:
        """The drill's result when it restored the backup ``key`` (waiting for it to end),
        ``None`` when it drilled no backup or another one; its error is raised here."""
        while True:
            try:
                # In slices, so Ctrl-C reaches the waiting thread promptly.
                outcome = self._outcome.result(timeout=0.5)
                break
            except TimeoutError:
                continue
        if outcome is None or outcome[0] != key:
            return None
        return outcome[1]

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, reason: str, wait_s: float, say: Callable[[str], None]) -> bool:
        """Cancel the drill if it still runs and wait up to ``wait_s`` for its clean-up,
        saying what it waits for; whether the drill has ended."""
        if not self._thread.is_alive():
            return True
        self._cancel.cancel(reason)
        db = self._cancel.database or f"{DRILL_PREFIX}*"
        say(f"[opsready] restore drill: {reason}; stopping it and waiting up to {wait_s:g}s "
            f"for it to drop its scratch database {db} on {self.server.scratch}")
        self._thread.join(wait_s)
        if self._thread.is_alive():
            say(f"[opsready] restore drill: still running after {wait_s:g}s; drop the database "
                f"{db} on {self.server.scratch} by hand if it is left")
            return False
        return True


# ---- the scratch server ------------------------------------------------------------------


class ScratchServer:
    """The configured scratch server (``restore_drill.scratch_dsn``)."""

    def __init__(self, cfg: RestoreDrillConfig, timeout: float) -> None:
        self.cfg = cfg
        self.timeout = timeout
        self._scratch_dsn = cfg.scratch_dsn.get_secret_value()
        self._source_dsn = cfg.source_dsn.get_secret_value() if cfg.source_dsn else None
        self._tool_versions: dict[str, tuple[int, int] | None] = {}
        # Where a long drill says where it is, and how often (see ``restore_drill``).
        self.progress: Callable[[str], None] | None = None
        self.progress_interval_s = 10.0
        # A drill started ahead on its own thread (``drill_in_background``), if any.
        self.background: BackgroundDrill | None = None

    @functools.cached_property
    def scratch(self) -> str:
        """The scratch server as messages show it (``host:port/dbname``). Worked out when
        first needed: parsing the DSN imports psycopg, which a background drill does on its
        own thread rather than the session's."""
        return _shown(self._scratch_dsn)

    def close(self) -> None:
        return None

    # ---- the guardrail ------------------------------------------------------------------

    def identify(self, dsn: str, label: str, *, read_only: bool = False) -> ServerIdentity:
        """Ask the server behind ``dsn`` who it is."""
        import psycopg

        with self._connect(dsn, read_only=read_only, shown=f"{label} ({_shown(dsn)})") as conn:
            try:
                row = conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()
            except psycopg.errors.InsufficientPrivilege:
                user = conn.execute("SELECT current_user").fetchone()[0]
                raise DrillRefused(
                    f"restore drill refused: {label} ({_shown(dsn)}): role {user} may not call "
                    f"pg_control_system(), so the drill cannot prove the scratch server is not "
                    f"the source; run GRANT EXECUTE ON FUNCTION pg_catalog.pg_control_system() "
                    f"TO {user} on that server (PostgreSQL grants it to PUBLIC unless revoked)"
                ) from None
            sysid = int(row[0])
            info = conn.execute(
                "SELECT current_database(), current_user, r.rolsuper, "
                "current_setting('server_version_num')::int, "
                "ARRAY(SELECT b.rolname FROM pg_roles b WHERE b.rolname = ANY(%s) "
                "      AND pg_has_role(current_user, b.oid, 'MEMBER') ORDER BY 1) "
                "FROM pg_roles r WHERE r.rolname = current_user",
                (list(PRIVILEGED_ROLES),)).fetchone()
            host = str(conn.info.host or "")
            hostaddr = str(getattr(conn.info, "hostaddr", "") or "")
            port = int(conn.info.port)
        return ServerIdentity(label=label, system_identifier=sysid, database=str(info[0]),
                              role=str(info[1]), superuser=bool(info[2]),
                              privileged_roles=tuple(str(r) for r in info[4]),
                              server_version_num=int(info[3]), host=host, hostaddr=hostaddr,
                              port=port)

    def check_target(self, drill_db: str | None = None) -> TargetCheck:
        """Raise ``DrillRefused`` unless the scratch target is provably not the source (nor
        any protected database) and its role holds no server-side powers; return the
        identities and the DSN pinned to the checked host."""
        if self._source_dsn is None:
            raise DrillRefused(
                "restore drill refused: restore_drill.source_dsn is not set, so the drill cannot "
                "prove that restore_drill.scratch_dsn is not the source; set source_dsn to a "
                "read-only DSN of the source database")
        scratch = self.identify(self._scratch_dsn, "restore_drill.scratch_dsn")
        others: list[ServerIdentity] = []
        for label, dsn in [("restore_drill.source_dsn", self._source_dsn),
                           *((f"restore_drill.protected_dsns[{i}]", d.get_secret_value())
                             for i, d in enumerate(self.cfg.protected_dsns))]:
            try:
                others.append(self.identify(dsn, label, read_only=True))
            except DrillRefused:
                raise
            except ProbeError as exc:
                raise DrillRefused(
                    f"restore drill refused: cannot ask {label} who it is ({exc}); the drill "
                    f"runs only once it has proven the scratch server is not that database"
                ) from None
        same: list[str] = []
        for other in others:
            if other.system_identifier != scratch.system_identifier:
                continue
            same.append(other.label)
            clash = [(what, name) for what, name in (("restore_drill.scratch_dsn",
                                                       scratch.database),
                                                      ("the drill database", drill_db))
                     if name is not None and name == other.database]
            if clash:
                what, name = clash[0]
                raise DrillRefused(
                    f"restore drill refused: {what} is database {name} on the cluster with "
                    f"system identifier {scratch.system_identifier}, which is {other.label}'s "
                    f"own database; point restore_drill.scratch_dsn at a maintenance database "
                    f"(e.g. postgres) of a separate scratch server")
            if other.database.startswith(DRILL_PREFIX):
                raise DrillRefused(
                    f"restore drill refused: {other.label} is named {other.database}, like the "
                    f"drill's own databases, on the same cluster as the scratch target")
        if same and not self.cfg.allow_source_cluster:
            raise DrillRefused(
                f"restore drill refused: restore_drill.scratch_dsn is on the cluster with system "
                f"identifier {scratch.system_identifier}, the same as {', '.join(same)}; a "
                f"restore there would fill that server's disk and write through its WAL and "
                f"replicas; point restore_drill.scratch_dsn at a separate scratch server, or "
                f"allow this one with restore_drill.allow_source_cluster: true")
        allowed = self._privileges(scratch)
        return TargetCheck(scratch=scratch, others=tuple(others), same_cluster_as=tuple(same),
                           privileged_allowed=allowed, pinned_dsn=self._pinned(scratch))

    def _privileges(self, scratch: ServerIdentity) -> str | None:
        powers = (["superuser"] if scratch.superuser else []) + list(scratch.privileged_roles)
        if not powers:
            return None
        if self.cfg.allow_privileged_role == scratch.role:
            return scratch.role
        raise DrillRefused(
            f"restore drill refused: restore_drill.scratch_dsn logs in as {scratch.role}, "
            f"which is {' and '.join(powers)}: a backup restored by it could run programs or "
            f"read and write files on the scratch host (COPY ... TO PROGRAM); use a role with "
            f"only LOGIN CREATEDB, or allow this one by name with "
            f"restore_drill.allow_privileged_role: {scratch.role}")

    def _pinned(self, scratch: ServerIdentity) -> str:
        """The scratch DSN bound to the host and port that were checked, so neither libpq's
        host list nor DNS can send a tool elsewhere."""
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        params = conninfo_to_dict(self._scratch_dsn)
        for key in ("target_session_attrs", "load_balance_hosts"):
            params.pop(key, None)
        params["host"] = scratch.host
        params["port"] = str(scratch.port)
        if scratch.hostaddr:
            params["hostaddr"] = scratch.hostaddr
        else:
            params.pop("hostaddr", None)
        return make_conninfo(**{k: str(v) for k, v in params.items()})

    def sweep(self, dsn: str | None = None, now: float | None = None) -> list[str]:
        """Drop this role's ``opsready_drill_*`` databases older than a day; their names."""
        dsn = dsn or self._pinned(self.identify(self._scratch_dsn, "restore_drill.scratch_dsn"))
        now = time.time() if now is None else now
        with self._connect(dsn) as conn:
            rows = conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s "
                "AND pg_get_userbyid(datdba) = current_user",
                (DRILL_PREFIX.replace("_", r"\_") + "%",),
            ).fetchall()
        swept = []
        for (name,) in rows:
            m = _DRILL_NAME.match(str(name))
            if m is None or now - int(m.group(1)) <= SWEEP_AFTER_S:
                continue
            self._drop(dsn, str(name))
            swept.append(str(name))
        return swept

    # ---- the drill ----------------------------------------------------------------------

    def drill_in_background(self, find: Callable[[], tuple[DumpSource, float] | None],
                            progress: Callable[[str], None] | None) -> BackgroundDrill:
        """Start the drill of the backup ``find`` names on a thread of its own; the next
        ``restore_drill`` of that backup takes its result instead of drilling again."""
        self.background = BackgroundDrill(self, find, progress)
        self.background.start()
        return self.background

    def restore_drill(
        self,
        source: DumpSource,
        *,
        backup_age_hours: float | None = None,
        on_phase: Callable[[str, float], None] | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> DrillResult:
        """Restore a backup into a new scratch database, check it, drop it.

        The RTO runs from the start of the download to the end of verification. Findings
        (a refused or broken backup, restore errors, missing rows) land in
        ``DrillResult.problems``; ``ProbeError`` is raised only when the drill could not
        judge (refused target, unreachable server, missing or too old tools). ``progress``
        gets a line now and then while a long drill runs (see ``DrillProgress``).

        When this backup's drill was started ahead (``drill_in_background``), its result
        (or its error) is taken instead, once; ``DrillResult.alongside`` says so."""
        background, self.background = self.background, None
        if background is not None:
            taken = background.take(source.key)
            if taken is not None:
                return taken
        return self.drill(source, backup_age_hours=backup_age_hours, on_phase=on_phase,
                          progress=progress)

    def drill(
        self,
        source: DumpSource,
        *,
        backup_age_hours: float | None = None,
        on_phase: Callable[[str, float], None] | None = None,
        progress: Callable[[str], None] | None = None,
        cancel: DrillCancel | None = None,
    ) -> DrillResult:
        """The drill itself (see ``restore_drill``); ``cancel`` stops it from another thread."""
        begun = time.monotonic()
        db = drill_database_name()
        checkpoint = cancel.check if cancel is not None else _nothing
        if cancel is not None:
            cancel.database = db
        check = self.check_target(db)
        checkpoint()
        dsn = check.pinned_dsn
        result = DrillResult(database=db, key=source.key, backup_age_hours=backup_age_hours,
                             started_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                             target=check.describe())

        def phase(name: str, started: float) -> None:
            result.phases[name] = time.monotonic() - started
            if on_phase is not None:
                on_phase(name, result.phases[name])

        result.swept = self.sweep(dsn)
        result.source_counts = self._source_counts(result.source_filtered)
        checkpoint()
        tools = _Children(cancel)
        say = progress if progress is not None else self.progress
        ticker = DrillProgress(result, source.size or 0, len(self.cfg.expected_tables), say,
                               interval=self.progress_interval_s) if say is not None else None
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
                if ticker is not None:
                    ticker.start()
                with self._connect(dsn) as conn:
                    # Set before the statement: a signal or a lost answer during CREATE may
                    # still leave the database behind, and the drop is IF EXISTS.
                    created = True
                    conn.execute(f'CREATE DATABASE "{db}"')
                phase("create", started)
                checkpoint()
                _Load(self, source, db, dsn, check.scratch, result, tools, phase,
                      deadline).run()
                checkpoint()
                if result.restore_exit_code is not None and not result.problems:
                    t = time.monotonic()
                    self._verify(dsn, db, result)
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
                if ticker is not None:
                    ticker.stop()
                tools.kill()
                if created:
                    t = time.monotonic()
                    self._drop(dsn, db)
                    result.dropped = True
                    phase("drop", t)
                result.duration_s = time.monotonic() - begun
        return result

    def _drill_budget(self) -> float:
        # The drill may overrun its RTO target (that is a finding), but not forever.
        return max(2.0 * self.cfg.rto_target_s, 120.0)

    def _verify(self, dsn: str, db: str, result: DrillResult) -> None:
        cfg = self.cfg
        with self._connect(dsn, dbname=db) as conn:
            _count_tables(conn, cfg.expected_tables, into=result.tables)
        age_days = max((result.backup_age_hours or 0.0) / 24.0, 1.0)
        for table, rows in result.tables.items():
            if rows is None:
                result.problems.append(f"table {table} is missing from the restored database")
                continue
            if rows == 0 and table not in cfg.allowed_empty_tables:
                result.problems.append(
                    f"table {table} is empty: a schema-only dump restores no data; expected "
                    f"rows (or list it in restore_drill.allowed_empty_tables)")
                continue
            floor = cfg.min_rows.get(table)
            if floor is not None and rows < floor:
                result.problems.append(
                    f"table {table} has {rows} rows, expected at least {floor} "
                    f"(restore_drill.min_rows)")
                continue
            src = (result.source_counts or {}).get(table)
            if src is None or table in result.source_filtered:
                continue
            # The source moves both ways after the backup: rows added, and rows deleted
            # (purges, drained queues), by up to the same share per day.
            allowance = math.ceil(max(src, rows) * cfg.row_growth_per_day * age_days)
            if rows > src + allowance:
                result.problems.append(
                    f"table {table} has {rows} rows restored but {src} in the live source, "
                    f"more than the {allowance} rows it may have lost since the backup "
                    f"({cfg.row_growth_per_day:.0%} per day, restore_drill.row_growth_per_day, "
                    f"over {age_days:.1f} days): a backup cannot hold rows the source never "
                    f"had; check that the backup job dumps this database")
                continue
            if rows < src - allowance:
                result.problems.append(
                    f"table {table} has {rows} rows restored, the live source has {src}; the "
                    f"source may have grown by {allowance} rows since the backup "
                    f"({cfg.row_growth_per_day:.0%} per day, restore_drill.row_growth_per_day, "
                    f"over {age_days:.1f} days), so the backup is missing rows")

    def _source_counts(self, filtered: list[str] | None = None) -> dict[str, int | None] | None:
        """The live source's row counts; ``filtered`` gets the tables whose count row-level
        security filters for the counting role."""
        if self._source_dsn is None:
            return None
        # Read-only by construction: the session refuses writes.
        with self._connect(self._source_dsn, read_only=True,
                           shown=f"restore_drill.source_dsn ({_shown(self._source_dsn)})") as conn:
            return _count_tables(conn, self.cfg.expected_tables, filtered=filtered)

    # ---- connections and tools ----------------------------------------------------------

    @contextlib.contextmanager
    def _connect(self, dsn: str, *, dbname: str | None = None, read_only: bool = False,
                 shown: str | None = None) -> Iterator[Any]:
        import psycopg

        where = shown or (_shown(dsn) if dbname is None else f"{_shown(dsn)} ({dbname})")
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
            raise _connect_error(exc, where) from None
        except psycopg.ProgrammingError:  # an unparsable DSN (psycopg quotes it: not shown)
            raise MissingInput(f"postgres {where}: the DSN could not be parsed; check its "
                               f"syntax") from None
        try:
            yield conn
        except psycopg.errors.QueryCanceled:
            raise ProbeTimeout(
                f"postgres {where}: a statement ran past restore_drill.statement_timeout_s "
                f"({self.cfg.statement_timeout_s:g}s)"
            ) from None
        except psycopg.errors.InsufficientPrivilege as exc:
            raise AccessRefused(
                f"postgres {where}: {redactor.text(str(exc)).strip()}; the drill role needs "
                f"CREATEDB on the scratch server and SELECT on the source tables"
            ) from None
        except psycopg.OperationalError as exc:
            raise _connect_error(exc, where) from None
        except psycopg.Error as exc:
            raise UnexpectedResponse(f"postgres {where}: {redactor.text(str(exc)).strip()}") \
                from None
        finally:
            conn.close()

    def _drop(self, dsn: str, db: str) -> None:
        """Drop a drill database, ending its sessions first (PostgreSQL 13+ ``FORCE``).

        ``FORCE`` refuses when a session it may not end is there, and an autovacuum worker
        on the freshly restored tables is such a session for the drill role; a plain DROP
        stops autovacuum workers by itself, so it follows, a few times while they exit."""
        import psycopg

        with self._connect(dsn) as conn:
            try:
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
                return
            except psycopg.errors.SyntaxError:
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE datname = %s", (db,))
            except psycopg.errors.InsufficientPrivilege:
                pass
            for attempt in range(_DROP_ATTEMPTS):
                try:
                    conn.execute(f'DROP DATABASE IF EXISTS "{db}"')
                    return
                except psycopg.errors.ObjectInUse:
                    if attempt + 1 == _DROP_ATTEMPTS:
                        raise
                    time.sleep(0.5)

    def tool(self, name: str) -> str:
        found = shutil.which(name)
        if found is None:
            raise MissingInput(
                f"restore drill: {name} is not on PATH; install the PostgreSQL client tools "
                f"(a version at least as new as the server that made the dump)"
            )
        return found

    def tool_version(self, path: str) -> tuple[int, int] | None:
        """``(major, minor)`` of a client tool, from ``--version``; ``None`` if unreadable."""
        if path not in self._tool_versions:
            try:
                out = subprocess.run([path, "--version"], capture_output=True, text=True,
                                     timeout=15, check=False).stdout
            except (OSError, subprocess.SubprocessError):
                out = ""
            m = re.search(r"\)\s*(\d+)(?:\.(\d+))?", out)
            self._tool_versions[path] = (int(m.group(1)), int(m.group(2) or 0)) if m else None
        return self._tool_versions[path]

    def tool_target(self, dsn: str, db: str) -> tuple[str, dict[str, str]]:
        """A conninfo for argv (no password) and the environment carrying the password."""
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        params = conninfo_to_dict(dsn)
        password = params.pop("password", None)
        params["dbname"] = db
        params.setdefault("connect_timeout", str(max(2, int(self.timeout))))
        env = {k: v for k, v in os.environ.items() if k not in ("PGPASSWORD", "PGOPTIONS")}
        if password is not None:
            env["PGPASSWORD"] = str(password)
        return make_conninfo(**{k: str(v) for k, v in params.items()}), env


class _Load:
    """Streams one backup into the drill database with the right tool."""

    def __init__(self, server: ScratchServer, source: DumpSource, db: str, dsn: str,
                 scratch: ServerIdentity, result: DrillResult, tools: _Children,
                 phase: Callable[[str, float], None], deadline: float) -> None:
        self.server, self.cfg = server, server.cfg
        self.source, self.db, self.dsn, self.scratch = source, db, dsn, scratch
        self.result, self.tools, self.phase, self.deadline = result, tools, phase, deadline

    def run(self) -> None:
        t = time.monotonic()
        if self.source.files():
            self._directory(t)
            return
        body = self.source.open()
        try:
            self._single(body, t)
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
        if self.source.size and self.result.size_bytes != self.source.size \
                and not self.result.problems:
            self.result.problems.append(
                f"downloaded {self.result.size_bytes} bytes of {self.source.key}, the object "
                f"has {self.source.size}; the download was cut short")

    def _check(self) -> None:
        """Between chunks: past the budget, or asked to stop, the drill ends here."""
        _check_deadline(self.deadline, self.result)
        if self.tools.cancel is not None:
            self.tools.cancel.check()

    # ---- formats ----------------------------------------------------------------------

    def _single(self, body: Readable, t: float) -> None:
        result = self.result
        first = body.read(CHUNK)
        result.size_bytes = len(first)
        raw = _RawStream(first, body, result)
        packed = foreign_compression(first)
        if packed is not None:
            raise MissingInput(
                f"restore drill: {self.source.key} is a {packed}-compressed dump: cannot judge "
                f"a {packed}-compressed dump here, only gzip is unwrapped; restore it by hand "
                f"({packed} -dc, then pg_restore or psql) or back up with gzip compression")
        result.compressed = is_gzip(first)
        gz = GzipStream() if result.compressed else None
        stream = _gunzipped(iter(raw), gz) if gz is not None else iter(raw)
        head = b""
        pieces: list[bytes] = []
        try:
            for piece in stream:
                pieces.append(piece)
                head += piece[:4096 - len(head)]
                if len(head) >= 4096:
                    break
        except DumpProblem as exc:
            result.problems.append(f"{self.source.key}: {exc}")
            return
        result.format = sniff(head)
        if result.format == "plain":
            self._plain(_prepend_pieces(pieces, stream), raw, gz, t)
            return
        raw.forget()
        if result.format not in ("custom", "tar"):
            result.problems.append(
                f"{self.source.key} is not a PostgreSQL dump (custom, tar or plain SQL, gzip'd "
                f"or not): it starts with {first[:8]!r}")
            return
        self._check_versions(parse_archive_header(head if result.format == "custom"
                                                  else head[512:]))
        argv_tail = ["--no-owner", "--no-privileges", "--no-password"]
        conninfo, env = self.server.tool_target(self.dsn, self.db)
        pg_restore = self.server.tool(self.cfg.pg_restore)
        data = _prepend_pieces(pieces, stream)
        if result.format == "custom" and self.cfg.jobs > 1:
            # pg_restore -j needs a seekable file: spool the stream to disk, chunk by chunk.
            with _spool(".dump") as (path, fh):
                self._pump(data, fh.write, gz)
                fh.close()
                self.phase("download", t)
                t = time.monotonic()
                proc = self.tools.start([pg_restore, *argv_tail, "-j", str(self.cfg.jobs),
                                         "-d", conninfo, str(path)], env, stdin=None)
                self._finish_pg_restore(proc)
                self.phase("restore", t)
            return
        proc = self.tools.start([pg_restore, *argv_tail, "-d", conninfo], env,
                                stdin=subprocess.PIPE)
        self._feed(proc, data, gz)
        self.phase("download", t)
        t = time.monotonic()
        self._finish_pg_restore(proc)
        self.phase("restore", t)

    def _directory(self, t: float) -> None:
        result = self.result
        result.format = "directory"
        names = self.source.files()
        with tempfile.TemporaryDirectory(prefix="opsready-drill-") as tmp:
            root = Path(tmp)
            for name in names:
                if "/" in name or name.startswith("."):
                    result.problems.append(f"{self.source.key}: unexpected file name {name!r}")
                    return
                body = self.source.open_file(name)
                try:
                    with open(root / name, "wb") as fh:
                        for chunk in _chunks(body):
                            fh.write(chunk)
                            result.size_bytes += len(chunk)
                            self._check()
                finally:
                    close = getattr(body, "close", None)
                    if close is not None:
                        close()
            self.phase("download", t)
            toc = (root / "toc.dat").read_bytes()[:4096] if (root / "toc.dat").is_file() else b""
            try:
                self._check_versions(parse_archive_header(toc))
            except DumpProblem as exc:
                result.problems.append(f"{self.source.key}/toc.dat: {exc}")
                return
            t = time.monotonic()
            conninfo, env = self.server.tool_target(self.dsn, self.db)
            proc = self.tools.start([self.server.tool(self.cfg.pg_restore), "--no-owner",
                                     "--no-privileges", "--no-password", "-j",
                                     str(self.cfg.jobs), "-d", conninfo, str(root)],
                                    env, stdin=None)
            self._finish_pg_restore(proc)
            self.phase("restore", t)

    def _plain(self, script: Iterator[bytes], raw: _RawStream, gz: GzipStream | None,
               t: float) -> None:
        """Scan the whole script while spooling the raw bytes to disk; only a script that
        passes reaches psql, read back from the spool through the same guard."""
        result = self.result
        psql = self.server.tool(self.cfg.psql)
        version = self.server.tool_version(psql)
        restricted = psql_has_restricted_mode(version)
        result.restricted_mode = restricted
        guard = PlainScriptGuard(self.cfg.tolerated_errors)
        with _spool(".sql") as (path, fh):
            raw.attach(fh)
            try:
                for piece in script:
                    for _ in guard.feed(piece):
                        pass
                    self._check()
                if gz is not None:
                    for _ in guard.feed(gz.finish()):
                        pass
                for _ in guard.finish():
                    pass
            except HostileDump as exc:
                result.refused = (f"refused to restore {self.source.key}: {exc}; nothing was "
                                  f"run (psql never started)")
                result.problems.append(result.refused)
                return
            except DumpProblem as exc:
                result.problems.append(f"{self.source.key}: {exc}")
                return
            fh.close()
            result.dump = {"header": guard.header_seen, "trailer": guard.trailer_seen,
                           "dumped_from": guard.dumped_from, "dumped_by": guard.dumped_by,
                           "copy_blocks": guard.copy_blocks,
                           "tolerated_statements": guard.tolerated_statements}
            if not guard.trailer_seen:
                result.problems.append(
                    f"{self.source.key}: the script ends at byte {result.size_bytes} (line "
                    f"{guard.line}) without the '-- PostgreSQL database dump complete' "
                    f"trailer: the backup is truncated")
                return
            self._check_server_version(guard.dumped_from, guard.dumped_by)
            self.phase("download", t)
            t = time.monotonic()
            conninfo, env = self.server.tool_target(self.dsn, self.db)
            # -f -: psql names the line of each error (psql:<stdin>:LINE:).
            proc = self.tools.start([psql, "-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=1",
                                     "-f", "-", "-d", conninfo], env, stdin=subprocess.PIPE)
            assert proc.stdin is not None
            prelude = b""
            if restricted:
                # From here on psql refuses every meta-command but \unrestrict with our key.
                prelude = b"\\restrict " + secrets.token_hex(16).encode() + b"\n"
            replay = PlainScriptGuard(self.cfg.tolerated_errors)
            try:
                proc.stdin.write(prelude)
                with open(path, "rb") as again:
                    gz2 = GzipStream() if gz is not None else None
                    for chunk in _chunks(again):
                        pieces = gz2.feed(chunk) if gz2 is not None else iter([chunk])
                        for piece in pieces:
                            for out in replay.feed(piece):
                                proc.stdin.write(out)
                        self._check()
                    if gz2 is not None:
                        for out in replay.feed(gz2.finish()):
                            proc.stdin.write(out)
                    for out in replay.finish():
                        proc.stdin.write(out)
            except BrokenPipeError:
                pass  # psql stopped (ON_ERROR_STOP): its exit code and stderr say why
            finally:
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.close()
            self._finish_psql(proc, prelude_lines=1 if restricted else 0)
            self.phase("restore", t)

    # ---- versions ---------------------------------------------------------------------

    def _check_versions(self, header: ArchiveHeader | None) -> None:
        if header is None:
            self.result.problems.append(f"{self.source.key}: the archive header could not be "
                                        f"read")
            return
        self.result.dump = header.describe()
        tool = self.server.tool(self.cfg.pg_restore)
        version = self.server.tool_version(tool)
        dumped_by = major_version(header.pg_dump_version)
        if version is not None and dumped_by is not None and dumped_by > version[0]:
            raise ToolTooOld(
                f"restore drill: {self.source.key} was written by pg_dump {dumped_by} (archive "
                f"{header.version_text}), newer than {self.cfg.pg_restore} {version[0]}; "
                f"install PostgreSQL {dumped_by} client tools to judge this backup")
        self._check_server_version(header.server_version, header.pg_dump_version)

    def _check_server_version(self, dumped_from: str | None, dumped_by: str | None) -> None:
        """A scratch server older than the source, or than the pg_dump that wrote the dump,
        may not load it (pg_dump's output is not promised to load into an older server:
        pg_dump 17 sets transaction_timeout, which 16 does not know)."""
        scratch_major = self.scratch.server_version_num // 10000
        for major, what in ((major_version(dumped_from), "comes from a PostgreSQL {} server"),
                            (major_version(dumped_by), "was written by pg_dump {}")):
            if major is not None and major >= 10 and major > scratch_major:
                raise ToolTooOld(
                    f"restore drill: {self.source.key} {what.format(major)}, newer than the "
                    f"scratch server ({scratch_major}); use a scratch server of version "
                    f"{major} or later")

    # ---- feeding the tools --------------------------------------------------------------

    def _pump(self, data: Iterator[bytes], write: Callable[[bytes], Any],
              gz: GzipStream | None) -> None:
        try:
            for piece in data:
                write(piece)
                self._check()
            if gz is not None:
                write(gz.finish())
        except DumpProblem as exc:
            self.result.problems.append(f"{self.source.key}: {exc}")

    def _feed(self, proc: subprocess.Popen[bytes], data: Iterator[bytes],
              gz: GzipStream | None) -> None:
        assert proc.stdin is not None
        stdin = proc.stdin
        try:
            self._pump(data, stdin.write, gz)
        except BrokenPipeError:
            pass  # the tool exited early; its exit code and stderr say why
        finally:
            with contextlib.suppress(BrokenPipeError):
                stdin.close()

    def _wait(self, proc: subprocess.Popen[bytes]) -> int:
        try:
            code = proc.wait(timeout=max(self.deadline - time.monotonic(), 0.1))
            if self.tools.cancel is not None:
                self.tools.cancel.check()  # the tool was killed by the cancel
            if time.monotonic() > self.deadline:
                raise subprocess.TimeoutExpired(proc.args, 0)  # killed by the watchdog
        except subprocess.TimeoutExpired:
            self.tools.kill()
            raise _Overrun(
                f"the restore did not finish within the drill's budget of "
                f"{self.server._drill_budget():g}s (twice the RTO target, at least 120 s); "
                f"aborted") from None
        self.result.restore_exit_code = code
        return code

    def _finish_pg_restore(self, proc: subprocess.Popen[bytes]) -> None:
        """pg_restore continues past errors; each error is judged against
        ``tolerated_errors`` with the statement pg_restore names after it."""
        code = self._wait(proc)
        lines = self.tools.stderr_lines(proc)
        text = "\n".join(lines)
        if "unsupported version" in text:
            raise ToolTooOld(f"restore drill: {self.cfg.pg_restore} cannot read "
                             f"{self.source.key}: {redactor.text(_first_error(lines))}; install "
                             f"newer PostgreSQL client tools")
        failures: list[str] = []
        for error, command in _pg_restore_errors(lines):
            shown = redactor.text(error)
            if command and _tolerated(command, self.cfg.tolerated_errors):
                self.result.tolerated.append(f"{shown} (in: {redactor.text(command)[:160]})")
            else:
                failures.append(shown + (f" (in: {redactor.text(command)[:160]})"
                                         if command else ""))
        self.result.restore_errors = failures[:20]
        if failures or (code != 0 and not self.result.tolerated):
            detail = "; ".join(failures[:3]) or redactor.text(_first_error(lines)) \
                or "no error output"
            self.result.problems.append(
                f"pg_restore exited with {code} after reading {self.result.size_bytes} bytes of "
                f"{self.source.size or '?'}: {detail}")

    def _finish_psql(self, proc: subprocess.Popen[bytes], *, prelude_lines: int) -> None:
        code = self._wait(proc)
        lines = self.tools.stderr_lines(proc)
        errors: list[str] = []
        for line in lines:
            line = _shift_psql_line(line, prelude_lines)
            if "opsready tolerated:" in line:
                self.result.tolerated.append(redactor.text(line.split("opsready tolerated:",
                                                                      1)[1].strip()))
            elif line.startswith("DETAIL:") and errors:
                errors[-1] += " " + redactor.text(line)
            elif line.strip() and not re.search(r"\b(WARNING|NOTICE|HINT|CONTEXT|LINE \d+):",
                                                line):
                errors.append(redactor.text(line))
        self.result.restore_errors = errors[:20]
        if code != 0:
            detail = "; ".join(errors[:3]) or "no error output"
            self.result.problems.append(
                f"psql (ON_ERROR_STOP) exited with {code}: {detail}; the backup's statements "
                f"must restore without errors other than restore_drill.tolerated_errors")


def _shown(dsn: str) -> str:
    """``host:port/dbname`` of a DSN as written (no user, no password), for messages."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(dsn)
    except Exception:  # psycopg.ProgrammingError quotes the DSN: never show it
        return "an unparsable DSN"
    if params.get("service") and not params.get("host"):
        return f"service={params['service']}"
    host = str(params.get("host") or params.get("hostaddr") or "local socket")
    return f"{host}:{params.get('port') or 5432}/{params.get('dbname') or ''}"


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


# Whether row-level security hides rows of a table from the current role: enabled on it, and
# the role neither bypasses it nor owns the table (an owner is exempt unless it is forced).
_RLS_FILTERS = """
SELECT c.relrowsecurity
       AND NOT (r.rolsuper OR r.rolbypassrls)
       AND (c.relforcerowsecurity OR NOT pg_has_role(c.relowner, 'USAGE'))
FROM pg_class c, pg_roles r WHERE c.oid = %s AND r.rolname = current_user
"""


def _count_tables(conn: Any, tables: list[str], into: dict[str, int | None] | None = None,
                  filtered: list[str] | None = None) -> dict[str, int | None]:
    """Row counts (``None``: no such table), filled in ``into`` table by table as they come.
    A name is read as SQL reads it (``public."User"``); one with capitals and no quotes is
    also tried as written, since ORMs create such tables quoted. With ``filtered``, the tables
    whose rows row-level security hides from this role are listed there."""
    from psycopg import sql

    counts: dict[str, int | None] = {} if into is None else into
    for table in tables:
        oid = conn.execute("SELECT to_regclass(%s)::oid", (table,)).fetchone()[0]
        if oid is None and '"' not in table and table != table.lower():
            quoted = ".".join('"' + part + '"' for part in table.split(".", 1))
            oid = conn.execute("SELECT to_regclass(%s)::oid", (quoted,)).fetchone()[0]
        if oid is None:
            counts[table] = None
            continue
        schema, name = conn.execute(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE c.oid = %s", (oid,)).fetchone()
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
            sql.Identifier(schema, name))).fetchone()
        counts[table] = int(row[0])
        if filtered is not None and conn.execute(_RLS_FILTERS, (oid,)).fetchone()[0]:
            filtered.append(table)
    return counts


def _tolerated(statement: str, patterns: list[str]) -> bool:
    text = " ".join(statement.split())
    return any(re.search(p, text, re.I) for p in patterns)


def _pg_restore_errors(lines: list[str]) -> Iterator[tuple[str, str | None]]:
    """``(error, statement)`` pairs from pg_restore's stderr: each ``error: ...`` line and
    the ``Command was: ...`` that follows it (possibly over several lines), past the DETAIL,
    HINT and CONTEXT lines libpq puts between them."""
    current: str | None = None
    command: list[str] | None = None
    for line in lines:
        if line.startswith("Command was:"):
            command = [line[len("Command was:"):].strip()]
            continue
        if command is not None and line and not line.startswith("pg_restore:"):
            command.append(line.strip())
            continue
        if current is not None and command is None and line and not line.startswith("pg_restore:"):
            # The error's own DETAIL:, HINT:, CONTEXT: or LINE lines, before its Command was:.
            continue
        if current is not None:
            yield current, " ".join(command) if command else None
            current, command = None, None
        if line.startswith("pg_restore: error:") and "errors ignored on restore" not in line:
            current = line.removeprefix("pg_restore: error:").strip()
    if current is not None:
        yield current, " ".join(command) if command else None


def _first_error(lines: list[str]) -> str:
    for line in lines:
        if "error" in line.lower():
            return line.strip()
    return lines[0].strip() if lines else ""


def _shift_psql_line(line: str, prelude_lines: int) -> str:
    """psql names lines of what it read; the prelude made them one later than the backup's."""
    if not prelude_lines:
        return line
    return re.sub(r"^psql:<stdin>:(\d+):",
                  lambda m: f"psql:<stdin>:{int(m.group(1)) - prelude_lines}:", line)


class _Children:
    """The client tools of one drill: each in its own session (Ctrl-C reaches us, not
    them), stderr to a temp file (no pipe to fill up), killed as a group on clean-up."""

    def __init__(self, cancel: DrillCancel | None = None) -> None:
        self.procs: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []
        self.cancel = cancel
        if cancel is not None:
            cancel.attach(self)

    def start(self, argv: list[str], env: dict[str, str],
              stdin: int | None) -> subprocess.Popen[bytes]:
        if self.cancel is not None:
            self.cancel.check()
        err = tempfile.TemporaryFile()  # noqa: SIM115 - closed in kill()
        try:
            proc = subprocess.Popen(argv, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=err, env=env,
                                    start_new_session=True)
        except OSError as exc:
            err.close()
            raise MissingInput(f"restore drill: could not start {argv[0]}: {exc}") from None
        self.procs.append((proc, err))
        if self.cancel is not None and self.cancel.requested:
            self.kill_all()  # the cancel came while the tool started
        return proc

    def stderr_lines(self, proc: subprocess.Popen[bytes]) -> list[str]:
        for p, err in self.procs:
            if p is proc:
                err.seek(0)
                return err.read(_STDERR_LIMIT).decode("utf-8", "replace").splitlines()
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


class _RawStream:
    """The raw object, chunk by chunk, counting bytes. What is read before the format is
    known is kept, so a plain script can still be spooled whole: ``attach(sink)`` writes it
    there and every later chunk too; ``forget()`` drops it for the other formats."""

    def __init__(self, first: bytes, body: Readable, result: DrillResult) -> None:
        self.body, self.result = body, result
        self.kept: list[bytes] | None = [first]
        self.sink: IO[bytes] | None = None
        self._first: bytes | None = first

    def __iter__(self) -> Iterator[bytes]:
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        for chunk in _chunks(self.body):
            self.result.size_bytes += len(chunk)
            if self.sink is not None:
                self.sink.write(chunk)
            elif self.kept is not None:
                self.kept.append(chunk)
            yield chunk

    def attach(self, sink: IO[bytes]) -> None:
        for chunk in self.kept or []:
            sink.write(chunk)
        self.kept, self.sink = None, sink

    def forget(self) -> None:
        self.kept = None


@contextlib.contextmanager
def _spool(suffix: str) -> Iterator[tuple[Path, IO[bytes]]]:
    fd, name = tempfile.mkstemp(prefix="opsready-drill-", suffix=suffix)
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


def _gunzipped(chunks: Iterator[bytes], gz: GzipStream) -> Iterator[bytes]:
    for chunk in chunks:
        yield from gz.feed(chunk)


def _prepend_pieces(pieces: list[bytes], rest: Iterator[bytes]) -> Iterator[bytes]:
    yield from pieces
    yield from rest


def _nothing() -> None:
    return None


def _check_deadline(deadline: float, result: DrillResult) -> None:
    if time.monotonic() > deadline:
        raise _Overrun(
            f"the download of {result.key or 'the backup'} ran past the drill's budget "
            f"(twice the RTO target, at least 120 s); aborted after {result.size_bytes} bytes"
        )
