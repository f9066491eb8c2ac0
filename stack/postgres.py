"""PostgreSQL for the reference stack: an ephemeral cluster made with the machine's binaries.

``initdb`` runs into the stack directory with password (SCRAM) authentication for the
superuser ``relay_admin``; the server listens on 127.0.0.1 only, with its unix socket inside
the stack directory. PostgreSQL refuses to run as root, so when we are root the cluster is
owned by a dedicated system user (created once with ``useradd --system``), and its processes
run with that user's own group. A stack directory only its owner may enter (``mktemp -d``
makes it 0700) gets the search bit for others, and ``up`` says so.

Two more roles, as a real platform would give the drill: ``opsready_drill`` (LOGIN CREATEDB
and nothing else: the restore drill's scratch role) and ``relay_reader`` (a member of
``pg_read_all_data``: the drill's read-only view of the source).

The source database ``relay`` holds the platform's key tables (``workspaces``, ``api_keys``,
``audit_logs``, ``sessions``). Rows are generated in SQL with ``generate_series``, so a
benchmark-sized database (``--rows``) seeds in seconds rather than minutes.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import pwd
import re
import secrets
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from opsready_stack.part import BasePart, Fault, StackContext, wait_until

__all__ = ["DRILL_ROLE", "PG_USER", "READER_ROLE", "PostgresPart", "find_bindir",
           "seed_counts"]

# The system user that owns the cluster when the stack runs as root.
PG_USER = "opsready-pg"
ADMIN_ROLE = "relay_admin"
DRILL_ROLE = "opsready_drill"
READER_ROLE = "relay_reader"
SOURCE_DB = "relay"
TABLES = ("workspaces", "api_keys", "audit_logs", "sessions")

# Unix socket paths are limited to 107 bytes; past this the socket is left out (TCP only).
_MAX_SOCKET_PATH = 100


def find_bindir() -> Path:
    """The PostgreSQL server binaries: ``pg_config --bindir``, else the newest
    ``/usr/lib/postgresql/*/bin``. Debian's ``pg_config`` may point at the client-only
    ``/usr/bin``, so the answer must hold ``initdb``."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                                 timeout=10, check=True).stdout.strip()
            if out and (Path(out) / "initdb").is_file():
                return Path(out)

    def version(path: str) -> tuple[int, ...]:
        m = re.search(r"/postgresql/([\d.]+)/", path)
        return tuple(int(x) for x in m.group(1).split(".")) if m else (0,)

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version)
    for candidate in reversed(found):
        if (Path(candidate) / "initdb").is_file():
            return Path(candidate)
    raise RuntimeError(
        "PostgreSQL server binaries not found (no initdb via pg_config or "
        "/usr/lib/postgresql/*/bin); install the Debian `postgresql` package"
    )


def seed_counts(rows: int) -> dict[str, int]:
    """How many rows each table gets for ``--rows N``."""
    n = max(int(rows), 10)
    workspaces = max(3, n // 20)
    return {
        "workspaces": workspaces,
        "api_keys": max(workspaces, n // 2),
        "sessions": n,
        "audit_logs": n * 10,
    }


# Keys, foreign keys and indexes come after the bulk load (_CONSTRAINTS): one sorted index
# build and one validating join per key are far cheaper than a check per inserted row.
_SCHEMA = """
CREATE TABLE workspaces (
    id          bigint GENERATED ALWAYS AS IDENTITY,
    slug        text NOT NULL,
    name        text NOT NULL,
    plan        text NOT NULL CHECK (plan IN ('free', 'team', 'enterprise')),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE api_keys (
    id            bigint GENERATED ALWAYS AS IDENTITY,
    workspace_id  bigint NOT NULL,
    name          text NOT NULL,
    prefix        text NOT NULL,
    key_hash      text NOT NULL,
    role          text NOT NULL CHECK (role IN ('admin', 'developer', 'viewer')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
CREATE TABLE audit_logs (
    id            bigint GENERATED ALWAYS AS IDENTITY,
    workspace_id  bigint NOT NULL,
    api_key_id    bigint,
    action        text NOT NULL,
    target        text NOT NULL,
    ip            inet,
    metadata      jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE sessions (
    id            uuid NOT NULL DEFAULT gen_random_uuid(),
    workspace_id  bigint NOT NULL,
    user_email    text NOT NULL,
    user_agent    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);
"""

# Parameters: %(workspaces)s, %(api_keys)s, %(sessions)s, %(audit_logs)s.
_SEED = """
INSERT INTO workspaces (slug, name, plan, created_at)
SELECT 'ws-' || g, 'Workspace ' || g,
       (ARRAY['free', 'team', 'enterprise'])[1 + g %% 3],
       now() - make_interval(days => 400 - (g %% 400))
FROM generate_series(1, %(workspaces)s) AS g;

INSERT INTO api_keys (workspace_id, name, prefix, key_hash, role, created_at, last_used_at,
                      revoked_at)
SELECT 1 + g %% %(workspaces)s, 'key ' || g, 'rk_' || substr(md5('p' || g), 1, 8),
       encode(sha256(('key-' || g)::bytea), 'hex'),
       (ARRAY['admin', 'developer', 'viewer'])[1 + g %% 3],
       now() - make_interval(days => 1 + g %% 300),
       now() - make_interval(mins => g %% 5000),
       CASE WHEN g %% 17 = 0 THEN now() - make_interval(days => g %% 30) END
FROM generate_series(1, %(api_keys)s) AS g;

INSERT INTO sessions (workspace_id, user_email, user_agent, created_at, expires_at)
SELECT 1 + g %% %(workspaces)s, 'user' || g || '@example.com',
       (ARRAY['Mozilla/5.0 (X11; Linux x86_64)', 'Mozilla/5.0 (Macintosh)', 'relay-cli/2.4'])
           [1 + g %% 3],
       now() - make_interval(mins => g %% 10000),
       now() + make_interval(days => 1 + g %% 14)
FROM generate_series(1, %(sessions)s) AS g;

INSERT INTO audit_logs (workspace_id, api_key_id, action, target, ip, metadata, created_at)
SELECT 1 + g %% %(workspaces)s, 1 + g %% %(api_keys)s,
       (ARRAY['action.execute', 'webhook.deliver', 'key.rotate', 'member.invite',
              'endpoint.register'])[1 + g %% 5],
       'act_' || lpad(to_hex(g::bigint * 2654435761 %% 281474976710656), 12, '0'),
       '10.0.0.1'::inet + (g %% 16777000),
       -- A few literal documents: building one jsonb per row would double the load time.
       (ARRAY['{"status": 200, "duration_ms": 14, "client": "sdk-python"}',
              '{"status": 200, "duration_ms": 87, "client": "sdk-node"}',
              '{"status": 202, "duration_ms": 312, "client": "relay-cli"}',
              '{"status": 429, "duration_ms": 2, "client": "sdk-python"}',
              '{"status": 200, "duration_ms": 45, "client": "studio"}',
              '{"status": 500, "duration_ms": 1203, "client": "sdk-node"}']::jsonb[])
           [1 + g %% 6],
       now() - g * interval '2 seconds'
FROM generate_series(1, %(audit_logs)s) AS g;
"""

_CONSTRAINTS = """
ALTER TABLE workspaces ADD PRIMARY KEY (id), ADD UNIQUE (slug);
ALTER TABLE api_keys ADD PRIMARY KEY (id), ADD UNIQUE (key_hash),
    ADD FOREIGN KEY (workspace_id) REFERENCES workspaces(id) ON DELETE CASCADE;
ALTER TABLE sessions ADD PRIMARY KEY (id),
    ADD FOREIGN KEY (workspace_id) REFERENCES workspaces(id) ON DELETE CASCADE;
ALTER TABLE audit_logs ADD PRIMARY KEY (id),
    ADD FOREIGN KEY (workspace_id) REFERENCES workspaces(id) ON DELETE CASCADE,
    ADD FOREIGN KEY (api_key_id) REFERENCES api_keys(id) ON DELETE SET NULL;
CREATE INDEX audit_logs_workspace_created ON audit_logs (workspace_id, created_at);
CREATE INDEX api_keys_workspace ON api_keys (workspace_id);
CREATE INDEX sessions_workspace ON sessions (workspace_id);
"""


class PostgresPart(BasePart):
    name = "postgres"
    ports: tuple[str, ...] = ("postgres",)
    faults: tuple[Fault, ...] = (
        Fault("source-grew",
              "the live source gained 8% more audit_logs rows since the newest backup",
              frozenset(), variant=True),
    )

    # ---- layout -------------------------------------------------------------------------

    def _root(self, ctx: StackContext) -> Path:
        """Where the cluster lives: ``DIR/pg`` when the cluster owner can reach it, else a
        per-stack directory under /tmp (e.g. DIR below a 0700 pytest temp root)."""
        inside = ctx.dir / "pg"
        if os.geteuid() != 0 or _traversable_by_others(ctx.dir.parent):
            return inside
        digest = hashlib.sha1(str(ctx.dir.resolve()).encode()).hexdigest()[:12]
        return Path(f"/tmp/opsready-pg-{digest}")

    def _user(self) -> str | None:
        return PG_USER if os.geteuid() == 0 else None

    def _dsn(self, ctx: StackContext, dbname: str, role: str = ADMIN_ROLE) -> str:
        pw = ctx.secrets[_PASSWORDS[role]]
        return f"postgresql://{role}:{pw}@127.0.0.1:{ctx.ports['postgres']}/{dbname}"

    # ---- Part protocol ------------------------------------------------------------------

    def start(self, ctx: StackContext) -> None:
        bindir = find_bindir()
        user = self._user()
        uid = gid = None
        for role, secret in _PASSWORDS.items():
            if role != ADMIN_ROLE and secret not in ctx.secrets:
                ctx.secrets[secret] = secrets.token_urlsafe(24)
        if user is not None:
            _ensure_system_user(user)
            entry = pwd.getpwnam(user)
            uid, gid = entry.pw_uid, entry.pw_gid
        root = self._root(ctx)
        if root.parent == ctx.dir:
            ctx.dir.mkdir(parents=True, exist_ok=True)
            # The cluster owner must be able to traverse the stack directory.
            mode = ctx.dir.stat().st_mode
            if user is not None and not mode & stat.S_IXOTH:
                ctx.dir.chmod(mode | stat.S_IXOTH)
                print(f"[stack] postgres: {ctx.dir} was mode {stat.S_IMODE(mode):04o}; added "
                      f"the search bit for others ({stat.S_IMODE(mode | stat.S_IXOTH):04o}) so "
                      f"the cluster owner {user} can reach {root}", file=sys.stderr, flush=True)
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        data, sock = root / "data", root / "sock"
        if data.exists():
            # Left by a crashed earlier stack of this directory: its superuser password is
            # not this stack's (secrets are new on every `up`), so start from a fresh cluster.
            self._stop_cluster(data)
            shutil.rmtree(data, ignore_errors=True)
        sock.mkdir(mode=0o700, exist_ok=True)
        if uid is not None and gid is not None:
            os.chown(root, uid, gid)
            os.chown(sock, uid, gid)
        self._initdb(ctx, bindir, root, data, user, uid, gid)

        port = ctx.ports["postgres"]
        socket_dir = str(sock) if len(f"{sock}/.s.PGSQL.{port}") <= _MAX_SOCKET_PATH else ""
        argv = [
            str(bindir / "postgres"), "-D", str(data),
            "-c", "listen_addresses=127.0.0.1",
            "-c", f"port={port}",
            "-c", f"unix_socket_directories={socket_dir}",
            # A throwaway cluster: durability buys nothing, speed does.
            "-c", "fsync=off",
            "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off",
            "-c", "max_connections=60",
            "-c", "shared_buffers=64MB",
            "-c", "max_wal_size=1GB",
            # Tables created and loaded in one transaction then skip the WAL entirely.
            "-c", "wal_level=minimal",
            "-c", "max_wal_senders=0",
            "-c", "maintenance_work_mem=256MB",
            "-c", "log_min_messages=warning",
            "-c", "log_line_prefix=%m [%p] ",
        ]
        ctx.spawn(self.name, argv, user=user, cwd=root)
        ctx.urls["postgres_dsn"] = self._dsn(ctx, SOURCE_DB)
        ctx.urls["postgres_host"] = "127.0.0.1"
        ctx.urls["postgres_port"] = str(port)

    def wait_ready(self, ctx: StackContext, deadline: float) -> None:
        import psycopg

        admin = self._dsn(ctx, "postgres")

        def up() -> bool:
            with psycopg.connect(admin, connect_timeout=2):
                return True

        try:
            wait_until(up, deadline, "postgres", interval=0.05)
        except RuntimeError:
            raise RuntimeError(
                f"postgres did not accept connections in time; see {ctx.logs / 'postgres.log'}"
            ) from None
        # Seeding is part of readiness: the S3 part dumps this database right after.
        self._seed(ctx, admin)

    def after_ready(self, ctx: StackContext) -> None:
        return None

    def env_config(self, ctx: StackContext) -> dict[str, Any]:
        return {
            "restore_drill": {
                # The maintenance database of the same server, as the CREATEDB-only drill
                # role: the drill proves by system identifier that it writes only its own
                # new opsready_drill_<ts> database there, never `relay`. The stack has one
                # cluster, so the source's own cluster is allowed by name.
                "scratch_dsn": self._dsn(ctx, "postgres", DRILL_ROLE),
                "allow_source_cluster": True,
                "source_dsn": self._dsn(ctx, SOURCE_DB, READER_ROLE),
                "expected_tables": list(TABLES),
                # What `--rows` seeds, halved, as floors: a bigger --rows still passes.
                "min_rows": {t: n // 2 for t, n in seed_counts(ctx.rows).items()},
                "row_growth_per_day": 0.1,
                "rto_target_s": 600,
                "jobs": 2,
            },
        }

    def set_fault(self, ctx: StackContext, name: str, on: bool) -> None:
        import psycopg

        if name != "source-grew":
            return
        seeded = seed_counts(ctx.rows)["audit_logs"]
        with psycopg.connect(self._dsn(ctx, SOURCE_DB), autocommit=True,
                             connect_timeout=5) as conn:
            # The seed numbers rows 1..N; later rows are the growth.
            conn.execute("DELETE FROM audit_logs WHERE id > %s", (seeded,))
            if on:
                conn.execute(
                    "INSERT INTO audit_logs (workspace_id, api_key_id, action, target, ip, "
                    "metadata, created_at) SELECT workspace_id, api_key_id, action, target, ip, "
                    "metadata, now() FROM audit_logs ORDER BY id LIMIT %s",
                    (max(1, seeded * 8 // 100),))

    def stop(self, ctx: StackContext) -> None:
        root = self._root(ctx)
        self._stop_cluster(root / "data")
        # A cluster outside the stack directory is ours to remove; inside, the stack's
        # own clean-up removes the directory with everything else.
        if root.parent != ctx.dir:
            shutil.rmtree(root, ignore_errors=True)

    # ---- internals ----------------------------------------------------------------------

    def _stop_cluster(self, data: Path) -> None:
        if not (data / "postmaster.pid").is_file():
            return
        with contextlib.suppress(OSError, subprocess.SubprocessError, RuntimeError):
            subprocess.run(
                [str(find_bindir() / "pg_ctl"), "stop", "-D", str(data), "-m", "fast",
                 "-w", "-t", "15"],
                capture_output=True, timeout=20, check=False, **_as_user(self._user()),
            )

    def _initdb(self, ctx: StackContext, bindir: Path, root: Path, data: Path,
                user: str | None, uid: int | None, gid: int | None) -> None:
        pwfile = root / "pwfile"
        pwfile.write_text(ctx.secrets["pg_password"] + "\n")
        pwfile.chmod(0o600)
        if uid is not None and gid is not None:
            os.chown(pwfile, uid, gid)
        # Named postgres-*.log, so the orchestrator's failure message shows its tail.
        log = ctx.logs / "postgres-initdb.log"
        ctx.logs.mkdir(parents=True, exist_ok=True)
        try:
            proc = subprocess.run(
                [str(bindir / "initdb"), "-D", str(data), "-U", ADMIN_ROLE,
                 "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8",
                 "--locale=C", "--no-sync", "--no-instructions"],
                cwd=root, capture_output=True, text=True, timeout=120, check=False,
                **_as_user(user),
            )
        except (OSError, subprocess.SubprocessError) as exc:
            log.write_text(f"could not run {bindir / 'initdb'} as {user or 'this user'}: "
                           f"{exc}\n")
            raise RuntimeError(f"initdb could not start; see {log}") from None
        finally:
            pwfile.unlink(missing_ok=True)
        if proc.returncode != 0:
            log.write_text(proc.stdout + proc.stderr)
            raise RuntimeError(f"initdb failed; see {log}")

    def _seed(self, ctx: StackContext, admin_dsn: str) -> None:
        import psycopg

        with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (SOURCE_DB,)
            ).fetchone()
            if exists:
                return
            conn.execute(f"CREATE DATABASE {SOURCE_DB}")
            # Passwords are literals (utility statements take no parameters).
            from psycopg import sql

            for role, rights in ((DRILL_ROLE, "LOGIN CREATEDB"),
                                 (READER_ROLE, "LOGIN IN ROLE pg_read_all_data")):
                conn.execute(sql.SQL("CREATE ROLE {} " + rights + " PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(ctx.secrets[_PASSWORDS[role]])))
        started = time.monotonic()
        with psycopg.connect(self._dsn(ctx, SOURCE_DB), connect_timeout=5) as conn:
            conn.execute(_SCHEMA)
            # Integers only, formatted here: a multi-statement script cannot be prepared.
            conn.execute(_SEED % seed_counts(ctx.rows))  # type: ignore[arg-type]
            conn.execute(_CONSTRAINTS)
            conn.commit()
            conn.autocommit = True
            conn.execute("ANALYZE")
        (ctx.logs / "postgres-seed.log").write_text(
            f"seeded {seed_counts(ctx.rows)} in {time.monotonic() - started:.2f}s\n"
        )


_PASSWORDS = {ADMIN_ROLE: "pg_password", DRILL_ROLE: "pg_drill_password",
              READER_ROLE: "pg_reader_password"}


def _as_user(user: str | None) -> dict[str, Any]:
    """``subprocess`` arguments that run as ``user`` with that user's own group and no other
    (``user=`` alone keeps our group, root, whose permission bits then apply)."""
    if user is None:
        return {}
    return {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}


def _traversable_by_others(path: Path) -> bool:
    """True when every directory from / down to ``path`` lets other users pass through."""
    current = path.resolve()
    for p in [current, *current.parents]:
        try:
            if not p.stat().st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


def _ensure_system_user(name: str) -> None:
    """Create the cluster owner once; a concurrent creation by another stack is fine."""
    try:
        pwd.getpwnam(name)
        return
    except KeyError:
        pass
    proc = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", "/usr/sbin/nologin", name],
        capture_output=True, text=True, timeout=30, check=False,
    )
    try:
        pwd.getpwnam(name)
    except KeyError:
        raise RuntimeError(
            f"could not create the system user {name!r} for PostgreSQL: "
            f"{proc.stderr.strip() or proc.returncode}"
        ) from None
