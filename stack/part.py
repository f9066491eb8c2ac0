"""The contract between the stack orchestrator and each part of the reference stack.

A part is one running thing (PostgreSQL, the S3 server, Prometheus, the service, a fake).
The orchestrator (``opsready_stack.orchestrator``) allocates ports, starts the parts in order,
waits for them, writes ``DIR/env.yaml`` from what each part contributes, and stops them.

Runtime faults: the set of active faults lives in ``DIR/faults.json`` (a JSON list of names).
Python apps of the stack (the service and the fakes) re-read it on every request (cheap: they
compare the file's mtime), so most faults flip without a restart. Parts whose faults need an
action (rewrite a rule file and reload Prometheus, mutate the S3 bucket) do it in ``set_fault``.

``BasePart`` gives every step a no-op default; ``HttpFakePart`` is the whole part of a contract
fake that runs as ``python -m MODULE --dir DIR --port PORT`` and answers a health path. How
processes are started and stopped lives in ``opsready_stack.processes``.
"""

from __future__ import annotations

import json
import secrets as _secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from opsready_stack.processes import (
    free_port,
    group_alive,
    kill_pidfile,
    read_pidfile,
    spawn,
    wait_until,
)

__all__ = [
    "BasePart",
    "Fault",
    "FaultWatcher",
    "HttpFakePart",
    "Part",
    "StackContext",
    "active_faults",
    "free_port",
    "group_alive",
    "kill_pidfile",
    "read_pidfile",
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
        """``opsready_stack.processes.spawn`` into this stack's ``logs/`` and ``pids/``."""
        return spawn(name, argv, logs=self.logs, pids=self.pids, env=env, cwd=cwd, user=user)

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

    def rewrite_env(self, ctx: StackContext, config: dict[str, Any]) -> dict[str, Any]:
        """The whole ``env.yaml`` as this part needs it seen (e.g. through a proxy)."""

    def set_fault(self, ctx: StackContext, name: str, on: bool) -> None:
        """Act on a fault flip beyond ``faults.json`` (already updated by the orchestrator)."""

    def stop(self, ctx: StackContext) -> None:
        """Extra clean-up beyond killing the pids (e.g. ``pg_ctl stop``)."""


class BasePart:
    """A part whose every step does nothing until a subclass says otherwise."""

    name: ClassVar[str] = ""
    ports: tuple[str, ...] = ()
    faults: tuple[Fault, ...] = ()

    def start(self, ctx: StackContext) -> None:
        return None

    def wait_ready(self, ctx: StackContext, deadline: float) -> None:
        return None

    def after_ready(self, ctx: StackContext) -> None:
        return None

    def env_config(self, ctx: StackContext) -> dict[str, Any]:
        return {}

    def rewrite_env(self, ctx: StackContext, config: dict[str, Any]) -> dict[str, Any]:
        return config

    def set_fault(self, ctx: StackContext, name: str, on: bool) -> None:
        # Most faults are read from faults.json by the part's app on every request.
        return None

    def stop(self, ctx: StackContext) -> None:
        return None


class HttpFakePart(BasePart):
    """A contract fake of a SaaS API: one Python process, ``python -m MODULE --dir DIR`` with
    one ``--NAME-port`` per port (just ``--port`` for a single one), ready once every path of
    ``health`` answers one of ``ready_statuses``.

    ``health`` holds (port name, path asked on it); ``urls`` holds (key of
    ``StackContext.urls``, port name, path), filled at start. Faults are read from
    faults.json by the fake on every request, so ``set_fault`` has nothing to do."""

    module: ClassVar[str] = ""
    health: tuple[tuple[str, str], ...] = ()
    ready_statuses: ClassVar[tuple[int, ...] | None] = (200,)  # None: any answer
    urls: tuple[tuple[str, str, str], ...] = ()

    def extra_args(self, ctx: StackContext) -> list[str]:
        return []

    def base_url(self, ctx: StackContext, port_name: str) -> str:
        return f"http://127.0.0.1:{ctx.ports[port_name]}"

    def start(self, ctx: StackContext) -> None:
        argv = [ctx.python(), "-m", self.module, "--dir", str(ctx.dir)]
        if len(self.ports) == 1:
            argv += ["--port", str(ctx.ports[self.ports[0]])]
        else:
            for port_name in self.ports:
                flag = port_name.removeprefix(f"{self.name}_").replace("_", "-")
                argv += [f"--{flag}-port", str(ctx.ports[port_name])]
        ctx.spawn(self.name, argv + self.extra_args(ctx))
        for key, port_name, path in self.urls:
            ctx.urls[key] = self.base_url(ctx, port_name) + path

    def wait_ready(self, ctx: StackContext, deadline: float) -> None:
        import httpx

        asked = {port_name: self.base_url(ctx, port_name) + path
                 for port_name, path in self.health}

        def up() -> bool:
            statuses = [httpx.get(url, timeout=1.0).status_code for url in asked.values()]
            return self.ready_statuses is None or all(s in self.ready_statuses for s in statuses)

        try:
            wait_until(up, deadline, f"{self.name} fake")
        except RuntimeError:
            raise RuntimeError(
                f"{self.name} fake did not answer at {', '.join(asked.values())}; "
                f"see {ctx.logs / (self.name + '.log')}"
            ) from None

    def stop(self, ctx: StackContext) -> None:
        kill_pidfile(ctx.pids / f"{self.name}.pid")


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


