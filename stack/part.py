"""The contract between the stack orchestrator and each part of the reference stack.

A part is one running thing (PostgreSQL, the S3 server, Prometheus, the service, a fake).
The orchestrator (``opsready_stack.orchestrator``) allocates ports, starts the parts in order,
waits for them, writes ``DIR/env.yaml`` from what each part contributes, and stops them.

Runtime faults: the set of active faults lives in ``DIR/faults.json`` (a JSON list of names).
Python apps of the stack (the service and the fakes) re-read it on every request (cheap: they
compare the file's mtime), so most faults flip without a restart. Parts whose faults need an
action (rewrite a rule file and reload Prometheus, mutate the S3 bucket) do it in ``set_fault``.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets as _secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "Fault",
    "Part",
    "StackContext",
    "active_faults",
    "free_port",
    "wait_until",
]


@dataclass(frozen=True)
class Fault:
    """A named switch. A *fault* breaks the platform the way real platforms break and turns
    exactly ``tickets`` open. A *variant* (``variant=True``, no tickets) builds the platform
    another legitimate way, as real platforms do it right, and every ticket stays done."""

    name: str
    description: str
    tickets: frozenset[str]  # the exact tickets it turns open (none for a variant)
    variant: bool = False

    def __post_init__(self) -> None:
        if self.variant and self.tickets:
            raise ValueError(f"variant {self.name} must not name tickets: a variant opens none")
        if not self.variant and not self.tickets:
            raise ValueError(f"fault {self.name} names no ticket; declare it variant=True if "
                             f"it is a legitimate way to build the platform")


@dataclass
class StackContext:
    """Shared state of one stack directory.

    - ``ports``: allocated before any part starts; a part asks for names in ``Part.ports``.
    - ``secrets``: generated once per stack (see ``SECRET_NAMES``), persisted in state.json.
    - ``urls``: filled by parts as they start (``urls["service"]``, ``urls["postgres_dsn"]``, ...).
    """

    dir: Path
    ports: dict[str, int] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)
    rows: int = 200
    settings: dict[str, Any] = field(default_factory=dict)

    SECRET_NAMES = (
        "admin_key",
        "dev_key",
        "viewer_key",
        "webhook_secret",
        "github_token",
        "railway_token",
        "grafana_token",
        "metrics_token",
        "s3_access_key",
        "s3_secret_key",
        "pg_password",
    )

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    @property
    def pids(self) -> Path:
        return self.dir / "pids"

    @property
    def faults_file(self) -> Path:
        return self.dir / "faults.json"

    def ensure_secrets(self) -> None:
        for name in self.SECRET_NAMES:
            if name not in self.secrets:
                self.secrets[name] = _secrets.token_urlsafe(24)

    def faults(self) -> set[str]:
        return active_faults(self.faults_file)

    def spawn(
        self,
        name: str,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
    ) -> int:
        """Start a background process in its own session; log to ``logs/NAME.log`` and
        write ``pids/NAME.pid``. ``user`` runs it as that user, with that user's own group
        (used for PostgreSQL as root)."""
        self.logs.mkdir(parents=True, exist_ok=True)
        self.pids.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        full_env = {**os.environ, **(env or {})}
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            cwd=str(cwd) if cwd else None,
            start_new_session=True,
            user=user,
            # Our group (root) would otherwise stay, and its permission bits apply first.
            group=pwd.getpwnam(user).pw_gid if user else None,
            extra_groups=[] if user else None,
        )
        log.close()
        (self.pids / f"{name}.pid").write_text(str(proc.pid))
        return proc.pid

    def python(self) -> str:
        return sys.executable


class Part(Protocol):
    """One part of the reference stack."""

    name: str
    ports: tuple[str, ...]  # port names to allocate, e.g. ("service",)
    faults: tuple[Fault, ...]

    def start(self, ctx: StackContext) -> None:
        """Prepare and spawn the part's processes. Must not wait for readiness."""

    def wait_ready(self, ctx: StackContext, deadline: float) -> None:
        """Block until the part answers, or raise ``RuntimeError`` naming the log file."""

    def after_ready(self, ctx: StackContext) -> None:
        """Seed data once every part is ready (e.g. the backup history)."""

    def env_config(self, ctx: StackContext) -> dict[str, Any]:
        """Sections this part contributes to ``env.yaml``."""
        return {}

    def set_fault(self, ctx: StackContext, name: str, on: bool) -> None:
        """Act on a fault flip beyond ``faults.json`` (already updated by the orchestrator)."""

    def stop(self, ctx: StackContext) -> None:
        """Extra clean-up beyond killing the pids (e.g. ``pg_ctl stop``)."""


def active_faults(path: Path) -> set[str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return set()
    return {str(x) for x in data} if isinstance(data, list) else set()


class FaultWatcher:
    """For the stack's Python apps: the current fault set, re-read when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime: float | None = None
        self._faults: set[str] = set()

    def __call__(self) -> set[str]:
        try:
            mtime = self.path.stat().st_mtime_ns
        except OSError:
            return set()
        if mtime != self._mtime:
            self._mtime = mtime
            self._faults = active_faults(self.path)
        return self._faults

    def on(self, name: str) -> bool:
        return name in self()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    check: Callable[[], bool], deadline: float, what: str, interval: float = 0.1
) -> None:
    """Poll ``check`` until it returns true or ``deadline`` (time.monotonic) passes."""
    while True:
        try:
            if check():
                return
        except Exception:  # not ready yet, whatever the reason
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not become ready in time")
        time.sleep(interval)


def _reap(pid: int) -> None:
    """Collect ``pid``'s exit status when it is our own child (the orchestrator ran
    in-process), so a dead child does not linger as a zombie that still looks alive."""
    # Not our child: its parent (or init) reaps it.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def read_pidfile(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid > 1 else None


def group_alive(pgid: int) -> bool:
    """True while any process of the process group ``pgid`` is alive (zombies do not count).

    Every stack process is spawned with ``start_new_session=True``, so its pid is also its
    process-group id, and the group outlives a crashed leader."""
    _reap(pgid)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # The group exists, but its members may all be zombies waiting for a parent (or init)
    # that reaps lazily; those are gone for every purpose that matters here.
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command: state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def _is_ours(pid: int) -> bool:
    """Guard against a recycled pid after a crash: a process we spawned leads its own
    session. A dead leader whose group still has members is ours too (the group keeps
    its id only while members remain)."""
    try:
        return os.getsid(pid) == pid
    except ProcessLookupError:
        return True
    except PermissionError:
        return False


def signal_pidfile(pidfile: Path, sig: int) -> bool:
    """Send ``sig`` to the process group of a pid file; True when the group was alive."""
    pid = read_pidfile(pidfile)
    if pid is None or not group_alive(pid) or not _is_ours(pid):
        return False
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def kill_pidfile(pidfile: Path, grace: float = 5.0) -> None:
    """Terminate the process group of a pid file, then kill it after ``grace`` seconds,
    and remove the pid file. Safe on a missing file, a dead group or a recycled pid."""
    pid = read_pidfile(pidfile)
    if pid is not None and group_alive(pid) and _is_ours(pid):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            end = time.monotonic() + grace
            while time.monotonic() < end and group_alive(pid):
                time.sleep(0.05)
            if not group_alive(pid):
                break
    pidfile.unlink(missing_ok=True)
