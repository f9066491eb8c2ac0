"""Start, stop, inspect and break the reference stack.

``up`` allocates ports and secrets, starts every part in order, waits for all of them under
one deadline, seeds data, turns on the initial faults and writes ``DIR/env.yaml``. ``down``
stops everything from the pid files alone, so it also works after a crash. ``set_fault``
flips a fault at runtime. The command line lives in ``opsready_stack.cli``.

Files in a stack directory::

    .opsready-stack   marker: this directory belongs to a stack (and whether ``up`` made it)
    state.json        ports, secrets, urls, settings, rows (0600: it holds secrets)
    faults.json       the active faults, re-read by the stack's apps on every request
    env.yaml          the environment for ``opsready verify`` (0600)
    secrets.env       the same values as shell variables for ``config/environments/local.yaml``
    logs/ pids/       one log and one pid file per process
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import secrets as _secrets
import shlex
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from opsready_stack.part import Fault, Part, StackContext
from opsready_stack.processes import (
    STACK_ENV,
    free_port,
    kill_all,
    marked,
    open_ports,
    pidfile_alive,
    pidfiles,
    processes_using,
    sigterm_interrupts,
    sweep,
    uninterrupted,
)

__all__ = [
    "DEFAULT_DIR",
    "DEFAULT_ROWS",
    "PART_SPECS",
    "STACK_ENV",
    "WEBHOOK_SCHEMES",
    "PartStatus",
    "StackError",
    "StackSummary",
    "UnknownFault",
    "all_faults",
    "down",
    "load_parts",
    "local_env_vars",
    "processes_using",
    "resolve_dir",
    "set_fault",
    "sigterm_interrupts",
    "status",
    "up",
]

DEFAULT_DIR = Path(".stack")
DEFAULT_ROWS = 200
WEBHOOK_SCHEMES = ("hex", "stripe", "standard-webhooks")
READY_TIMEOUT_S = 60.0
# A large --rows seeds, indexes, dumps and uploads for longer: this much more time per row
# (3,600,000 rows, a 1 GiB dump, get six more minutes).
READY_S_PER_ROW = 1e-4
STOP_TIMEOUT_S = 20.0
MARKER = ".opsready-stack"

# (part name, module, class) in start order.
PART_SPECS: tuple[tuple[str, str, str], ...] = (
    ("postgres", "opsready_stack.postgres", "PostgresPart"),
    ("s3", "opsready_stack.s3", "S3Part"),
    ("github", "opsready_stack.github_fake", "GithubPart"),
    ("railway", "opsready_stack.railway_fake", "RailwayPart"),
    ("grafana", "opsready_stack.grafana_fake", "GrafanaPart"),
    ("otel", "opsready_stack.otel_fake", "OtelPart"),
    ("service", "opsready_stack.service.part", "ServicePart"),
    ("prometheus", "opsready_stack.prometheus_part", "PrometheusPart"),
)

# A part starts only once these parts answer. Everything else starts at once and is waited
# for together, which is what keeps ``up`` within its time budget on two cores: the service
# opens its connection pool at start-up, so it needs PostgreSQL; nothing else needs more than
# an earlier part's URL, which is known as soon as that part has been started.
NEEDS_READY: dict[str, tuple[str, ...]] = {"service": ("postgres",)}


class StackError(Exception):
    """``up``/``down``/``status``/``set_fault`` could not do their job. ``str()`` is the
    message for the console; ``exit_code`` is what the command line returns."""

    exit_code = 1

    def __init__(self, message: str, *, part: str | None = None, log_tail: str = "") -> None:
        super().__init__(message)
        self.part = part
        self.log_tail = log_tail


class UnknownFault(StackError):
    exit_code = 4


class UsageError(StackError):
    exit_code = 4


@dataclass
class StackSummary:
    dir: Path
    env_path: Path
    urls: dict[str, str]
    seconds: float
    ready_s: dict[str, float] = field(default_factory=dict)
    faults: list[str] = field(default_factory=list)


@dataclass
class PartStatus:
    name: str
    up: bool
    detail: str


# --------------------------------------------------------------------------------------------
# parts and faults


def load_parts() -> list[Part]:
    """One fresh instance of every part, in start order."""
    parts: list[Part] = []
    for name, module_name, class_name in PART_SPECS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            raise StackError(f"part {name}: module {module_name} is missing") from None
        part: Part = getattr(module, class_name)()
        parts.append(part)
    return parts


def all_faults(parts: Sequence[Part] | None = None) -> dict[str, Fault]:
    """Every fault any part declares, in start order. A fault declared by several parts is
    one switch; its declarations must name the same tickets."""
    found: dict[str, Fault] = {}
    owner: dict[str, str] = {}
    for part in load_parts() if parts is None else parts:
        for fault in part.faults:
            known = found.get(fault.name)
            if known is None:
                found[fault.name] = fault
                owner[fault.name] = part.name
            elif known.tickets != fault.tickets:
                raise StackError(
                    f"fault {fault.name}: part {owner[fault.name]} says it opens "
                    f"{sorted(known.tickets)}, part {part.name} says {sorted(fault.tickets)}"
                )
    return found


def _declaring(parts: Sequence[Part], name: str) -> list[Part]:
    return [p for p in parts if any(f.name == name for f in p.faults)]


def _check_faults(names: Iterable[str], faults: dict[str, Fault]) -> None:
    for name in names:
        if name not in faults:
            raise UnknownFault(f"unknown fault '{name}'; known faults: {', '.join(sorted(faults))}")


# --------------------------------------------------------------------------------------------
# files


def _write_private(path: Path, text: str, mode: int = 0o600) -> None:
    """Write atomically (temp file + rename) with ``mode`` from the first byte on."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write_state(ctx: StackContext, **extra: Any) -> None:
    state = _read_json(ctx.dir / "state.json")
    state.update(
        {
            "ports": ctx.ports,
            "secrets": ctx.secrets,
            "urls": ctx.urls,
            "settings": ctx.settings,
            "rows": ctx.rows,
            **extra,
        }
    )
    _write_private(ctx.dir / "state.json", json.dumps(state, indent=2, sort_keys=True) + "\n")


def _write_faults(ctx: StackContext, names: Iterable[str]) -> None:
    path = ctx.faults_file
    try:
        old = path.stat().st_mtime_ns
    except OSError:
        old = 0
    _write_private(path, json.dumps(sorted(set(names))) + "\n", mode=0o644)
    # The apps notice a change by mtime; file-system timestamps are coarse (a few ms), so make
    # sure two quick flips never leave the same mtime behind.
    now = max(time.time_ns(), old + 1_000_000)
    os.utime(path, ns=(now, now))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _load_ctx(dir: Path) -> StackContext:
    state = _read_json(dir / "state.json")
    return StackContext(
        dir=dir,
        ports=dict(state.get("ports", {})),
        secrets=dict(state.get("secrets", {})),
        urls=dict(state.get("urls", {})),
        rows=int(state.get("rows", DEFAULT_ROWS)),
        settings=dict(state.get("settings", {})),
    )


def resolve_dir(dir: Path | str | None) -> Path:
    return Path(DEFAULT_DIR if dir is None else dir).absolute()


def _log_tail(dir: Path, part: str, lines: int = 30) -> str:
    """The end of the log files a part wrote (named after the part), newest first."""
    logs = sorted(
        (dir / "logs").glob(f"{part}*.log"), key=lambda p: p.stat().st_mtime, reverse=True
    )
    chunks = []
    for log in logs[:2]:
        text = log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        chunks.append(f"--- {log} (last {len(text)} lines)\n" + "\n".join(text))
    return "\n".join(chunks) if chunks else f"(no log file {dir / 'logs'}/{part}*.log)"


# --------------------------------------------------------------------------------------------
# up


def _allocate_ports(names: Iterable[str]) -> dict[str, int]:
    ports: dict[str, int] = {}
    for name in names:
        if name in ports:
            continue
        port = free_port()
        while port in ports.values():
            port = free_port()
        ports[name] = port
    return ports


def _deep_merge(into: dict[str, Any], new: dict[str, Any], owners: dict[str, str], part: str,
                path: str = "") -> None:
    for key, value in new.items():
        where = f"{path}.{key}" if path else key
        if key in into and isinstance(into[key], dict) and isinstance(value, dict):
            _deep_merge(into[key], value, owners, part, where)
        elif key in into and into[key] != value:
            raise StackError(
                f"env.yaml: {where} is set by part {owners.get(where, '?')} and differently "
                f"by part {part}",
                part=part,
            )
        else:
            into[key] = value
            owners[where] = part


class _Console:
    """Progress lines from several threads; silent once ``up`` has given up."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.lock = threading.Lock()
        self.closed = False

    def say(self, text: str, *, last: bool = False) -> None:
        with self.lock:
            if not self.closed:
                print(f"[stack] {text}", file=self.out, flush=True)
            self.closed = self.closed or last


class _Waiter(threading.Thread):
    """Waits for one part in the background, so every part's time is its own."""

    def __init__(self, part: Part, ctx: StackContext, deadline: float, started: float,
                 console: _Console) -> None:
        super().__init__(name=f"wait-{part.name}", daemon=True)
        self.part, self.ctx, self.deadline, self.started = part, ctx, deadline, started
        self.console = console
        self.seconds: float | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.part.wait_ready(self.ctx, self.deadline)
        except BaseException as exc:  # reported by the orchestrator with the part's log
            self.error = exc
            return
        self.seconds = time.monotonic() - self.started
        self.console.say(f"{self.part.name} … ready in {self.seconds:.1f}s")


def _prepare_dir(dir: Path, parts: Sequence[Part], out: TextIO) -> bool:
    """Make ``dir`` ready for a new stack; returns whether ``up`` created it."""
    marker = dir / MARKER
    if dir.exists() and not dir.is_dir():
        raise UsageError(f"{dir} is a file, not a directory; pick another --dir")
    if not dir.exists():
        try:
            dir.mkdir(parents=True)
        except OSError as exc:
            raise UsageError(f"{dir} cannot be created ({exc.strerror or type(exc).__name__}); "
                             f"pick another --dir") from None
        return True
    if marker.exists():
        alive = [p.stem for p in pidfiles(dir) if pidfile_alive(p)]
        if alive:
            # Nothing was started, and nothing of the running stack is touched.
            raise UsageError(
                f"a stack is already running in {dir} ({', '.join(alive)}); "
                f"stop it with `opsready stack down --dir {dir}` or pick another --dir"
            )
        created = bool(_read_json(marker).get("created", False))
        print(f"[stack] cleaning up the remains of an earlier stack in {dir}", file=out)
        _teardown(dir, parts, out, remove=False)
        return created
    if any(dir.iterdir()):
        raise UsageError(f"{dir} exists and is not empty; pick another --dir")
    return False


def up(
    dir: Path | str | None = None,
    faults: Iterable[str] = (),
    rows: int = DEFAULT_ROWS,
    webhook_scheme: str = "hex",
    *,
    parts: Sequence[Part] | None = None,
    timeout: float | None = None,
    out: TextIO | None = None,
    latency_ms: float = 0.0,
    jitter_ms: float = 0.0,
) -> StackSummary:
    """Start the stack in ``dir`` and return once every part answers and ``env.yaml`` is
    written. On failure everything started is stopped and ``StackError`` names the part.
    ``latency_ms`` > 0 puts the delay proxy in front of every part (``env.yaml`` points at it)."""
    dir = resolve_dir(dir)
    if latency_ms < 0 or jitter_ms < 0:
        raise UsageError("--latency-ms and --jitter-ms must not be negative")
    if jitter_ms and not latency_ms:
        raise UsageError("--jitter-ms needs --latency-ms")
    parts = load_parts() if parts is None else list(parts)
    if latency_ms:
        from opsready_stack.latency_proxy import LatencyPart

        parts.append(LatencyPart(latency_ms, jitter_ms))
    if timeout is None:
        timeout = READY_TIMEOUT_S + rows * READY_S_PER_ROW
    with marked(dir):
        return _up(dir, faults, rows, webhook_scheme, parts=parts, timeout=timeout,
                   out=sys.stderr if out is None else out)


def _up(dir: Path, faults: Iterable[str], rows: int, webhook_scheme: str, *,
        parts: list[Part], timeout: float, out: TextIO) -> StackSummary:
    t0 = time.monotonic()
    initial = list(dict.fromkeys(faults))
    _check_faults(initial, all_faults(parts))
    if webhook_scheme not in WEBHOOK_SCHEMES:
        raise UsageError(
            f"unknown webhook scheme '{webhook_scheme}'; use one of {', '.join(WEBHOOK_SCHEMES)}"
        )
    if rows < 1:
        raise UsageError(f"--rows must be at least 1, got {rows}")

    created = _prepare_dir(dir, parts, out)
    _write_private(dir / MARKER, json.dumps({"created": created}) + "\n", mode=0o644)
    ctx = StackContext(dir=dir, rows=rows)
    ctx.ensure_secrets()
    ctx.settings["git_sha"] = _secrets.token_hex(20)
    ctx.settings["webhook_scheme"] = webhook_scheme
    ctx.ports = _allocate_ports(name for part in parts for name in part.ports)
    ctx.logs.mkdir(parents=True, exist_ok=True)
    ctx.pids.mkdir(parents=True, exist_ok=True)
    _write_state(ctx, ready=False)
    _write_faults(ctx, initial)

    step = _Step(_Console(out), t0 + timeout)
    try:
        waiters = _start_parts(parts, ctx, step)
        _wait_for_parts(parts, waiters, ctx, step)
        _apply_faults(parts, initial, ctx, step)
        step.current = "env.yaml"
        env_path = _write_env_yaml(ctx, parts)
        _write_private(dir / "secrets.env", _secrets_env(ctx, env_path))
        _write_state(ctx, ready=True, pids=[p.name for p in pidfiles(dir)])
    except BaseException as exc:
        interrupted = isinstance(exc, KeyboardInterrupt)
        step.console.say("interrupted; stopping" if interrupted else f"{step.current} … FAILED",
                         last=True)
        current = step.current
        if isinstance(exc, _PartFailed):
            current, exc = exc.part, exc.error
        error = _as_stack_error(exc, current, dir)
        _teardown(dir, parts, out, remove=False)
        if interrupted:
            raise
        raise error from exc

    return StackSummary(
        dir=dir,
        env_path=env_path,
        urls=_advertised(ctx),
        seconds=time.monotonic() - t0,
        ready_s={n: w.seconds or 0.0 for n, w in waiters.items()},
        faults=initial,
    )


@dataclass
class _Step:
    """Where ``up`` is: the console, the one deadline, and the part a failure belongs to."""

    console: _Console
    deadline: float
    current: str = "?"


def _start_parts(parts: Sequence[Part], ctx: StackContext, step: _Step) -> dict[str, _Waiter]:
    """Start every part in order, each once the parts it needs answer; a waiter thread per
    part then waits for it in the background."""
    waiters: dict[str, _Waiter] = {}
    for part in parts:
        step.current = part.name
        needs = (*NEEDS_READY.get(part.name, ()), *getattr(part, "needs_ready", ()))
        for dep in needs:
            if dep in waiters:
                _join(waiters[dep], step.deadline)
        started = time.monotonic()
        part.start(ctx)
        _write_state(ctx, ready=False)
        took = time.monotonic() - started
        step.console.say(f"{part.name} … started" + (f" in {took:.1f}s" if took >= 0.2 else ""))
        waiters[part.name] = _Waiter(part, ctx, step.deadline, started, step.console)
        waiters[part.name].start()
    return waiters


def _wait_for_parts(parts: Sequence[Part], waiters: dict[str, _Waiter], ctx: StackContext,
                    step: _Step) -> None:
    """Every part answers, then every part's seeding is done."""
    for part in parts:
        step.current = part.name
        _join(waiters[part.name], step.deadline)
    _after_ready(parts, ctx, step.deadline, step.console)


def _apply_faults(parts: Sequence[Part], names: Sequence[str], ctx: StackContext,
                  step: _Step) -> None:
    """The faults ``up`` was asked to start with (already in faults.json), acted on by the
    parts that declare them."""
    for name in names:
        for part in _declaring(parts, name):
            step.current = part.name
            part.set_fault(ctx, name, True)
        step.console.say(f"fault {name} … on")


def _after_ready(parts: Sequence[Part], ctx: StackContext, deadline: float,
                 console: _Console) -> None:
    """Every part's ``after_ready`` at once: seeding the backup history and waiting for the
    first SLI samples are independent, and together they dominate the start-up time."""
    errors: dict[str, BaseException] = {}

    def run(part: Part) -> None:
        begun = time.monotonic()
        try:
            part.after_ready(ctx)
        except BaseException as exc:  # reported below with the part's log
            errors[part.name] = exc
            return
        took = time.monotonic() - begun
        if took >= 0.1:
            console.say(f"{part.name} … seeded in {took:.1f}s")

    threads = {p.name: threading.Thread(target=run, args=(p,), name=f"seed-{p.name}",
                                        daemon=True) for p in parts}
    for thread in threads.values():
        thread.start()
    for name, thread in threads.items():
        thread.join(max(0.0, deadline - time.monotonic()) + 5.0)
        if name in errors:
            raise _PartFailed(name, errors[name])
        if thread.is_alive():
            raise _PartFailed(name, RuntimeError(f"{name}: after_ready did not finish in time"))


class _PartFailed(Exception):
    def __init__(self, part: str, error: BaseException) -> None:
        super().__init__(f"{part}: {error}")
        self.part, self.error = part, error


def _join(waiter: _Waiter, deadline: float) -> None:
    # The parts' own wait_ready honours the deadline; the extra seconds only cover a part
    # that ignores it.
    waiter.join(max(0.0, deadline - time.monotonic()) + 5.0)
    if waiter.error is not None:
        raise waiter.error
    if waiter.is_alive():
        raise RuntimeError(f"{waiter.part.name} did not become ready in time")


def _as_stack_error(exc: BaseException, part: str, dir: Path) -> StackError:
    if isinstance(exc, StackError):
        exc.part = exc.part or part
        exc.log_tail = exc.log_tail or _log_tail(dir, exc.part)
        return exc
    message = f"{part}: {exc.__class__.__name__}: {exc}" if str(exc) else f"{part}: {exc!r}"
    return StackError(message, part=part, log_tail=_log_tail(dir, part))


def _write_env_yaml(ctx: StackContext, parts: Sequence[Part]) -> Path:
    from opsready._errors import ConfigError
    from opsready.config import INTRUSIVE_PROBES, load_environment

    config: dict[str, Any] = {
        "name": "local-stack",
        "gate": ["P0", "P1"],
        "allow_intrusive": list(INTRUSIVE_PROBES),
        "timeout_s": 10,
    }
    owners: dict[str, str] = {}
    for part in parts:
        _deep_merge(config, part.env_config(ctx), owners, part.name)
    for part in parts:
        rewrite = getattr(part, "rewrite_env", None)
        if rewrite is not None:
            config = rewrite(ctx, config)
    path = ctx.dir / "env.yaml"
    header = (
        "# The environment of the reference stack in this directory, written by\n"
        "# `opsready stack up`. It holds the stack's secrets: do not commit it.\n"
    )
    _write_private(path, header + yaml.safe_dump(config, sort_keys=False))
    try:
        load_environment(str(path), Path.cwd(), env={})
    except ConfigError as exc:
        section = exc.field.split(".")[0]
        raise StackError(
            f"env.yaml does not validate: {exc}", part=owners.get(section, "env.yaml")
        ) from None
    return path


# Values in env.yaml that differ from one stack to the next: its ports and its secrets.
# ``local_env_vars`` turns each into a variable named after its path in the config
# (``service.base_url`` -> OPSREADY_SERVICE_BASE_URL); config/environments/local.yaml reads them.


_SECRET_KEYS = frozenset(
    {"token", "secret", "api_key", "admin_key", "bearer_token", "access_key_id",
     "secret_access_key"}
)


def local_env_vars(config: dict[str, Any], ctx: StackContext) -> dict[str, str]:
    ports = {str(p) for p in ctx.ports.values()}
    secrets = {s for s in ctx.secrets.values() if s}
    found: dict[str, str] = {}

    def varies(key: str, value: str) -> bool:
        if key in _SECRET_KEYS or key.endswith("_dsn") or any(s in value for s in secrets):
            return True
        return any(p in ports for p in re.findall(r":(\d{2,5})\b", value))

    def walk(node: Any, path: list[str]) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, [*path, str(k)])
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, [*path, str(i)])
        elif isinstance(node, str) and varies(path[-1], node):
            name = "OPSREADY_" + re.sub(r"[^A-Za-z0-9]+", "_", "_".join(path)).upper()
            found[name] = node

    walk(config, [])
    return found


def _secrets_env(ctx: StackContext, env_path: Path) -> str:
    config = yaml.safe_load(env_path.read_text(encoding="utf-8"))
    here = _display(ctx.dir / "secrets.env")
    lines = [
        "# The values of this stack that config/environments/local.yaml reads (0600: secrets):",
        f"#   set -a; . {here}; set +a; opsready verify --env local",
    ]
    lines += [f"{k}={shlex.quote(v)}" for k, v in sorted(local_env_vars(config, ctx).items())]
    return "\n".join(lines) + "\n"


def print_summary(summary: StackSummary, out: TextIO | None = None) -> None:
    """The console summary of a started stack: where everything is and what to run next."""
    out = sys.stdout if out is None else out
    rel = _display(summary.dir)
    width = max((len(k) for k in summary.urls), default=0)
    print(f"[stack] ready in {summary.seconds:.1f}s", file=out)
    for key, url in summary.urls.items():
        print(f"  {key:<{width}}  {_hide_password(url)}", file=out)
    if summary.faults:
        print(f"  faults on: {', '.join(summary.faults)}", file=out)
    env = _display(summary.env_path)
    dir_opt = "" if summary.dir == resolve_dir(None) else f" --dir {rel}"
    print(f"  env:    {env}", file=out)
    print(f"  verify: opsready verify --env {env}", file=out)
    print(f"  faults: opsready stack fault on|off NAME{dir_opt}   (list: opsready stack faults)",
          file=out)
    print(f"  stop:   opsready stack down{dir_opt}", file=out)


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _hide_password(url: str) -> str:
    return re.sub(r"(://[^:/@\s]+:)[^@\s]+@", r"\1***@", url)


# --------------------------------------------------------------------------------------------
# down


def _stop_part(part: Part, ctx: StackContext, out: TextIO) -> None:
    """``part.stop`` with a time limit, so a stuck clean-up cannot block ``down``."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            part.stop(ctx)
        except BaseException as exc:  # reported below; down carries on with the next part
            errors.append(exc)

    thread = threading.Thread(target=run, name=f"stop-{part.name}", daemon=True)
    thread.start()
    thread.join(STOP_TIMEOUT_S)
    if thread.is_alive():
        print(f"[stack] {part.name}: stop did not finish in {STOP_TIMEOUT_S:.0f}s; killing",
              file=out)
    elif errors:
        print(f"[stack] {part.name}: stop failed ({errors[0]}); killing its processes", file=out)


def _teardown(dir: Path, parts: Sequence[Part] | None, out: TextIO, *, remove: bool) -> None:
    with uninterrupted():
        _teardown_now(dir, parts, out, remove=remove)


def _teardown_now(dir: Path, parts: Sequence[Part] | None, out: TextIO, *,
                  remove: bool) -> None:
    ctx = _load_ctx(dir)
    for part in reversed(parts or []):
        _stop_part(part, ctx, out)
    kill_all(dir)
    sweep(dir, out)
    if not remove:
        return
    marker = _read_json(dir / MARKER)
    if marker.get("created", False):
        shutil.rmtree(dir, onerror=_force_remove)
    else:
        for child in dir.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, onerror=_force_remove)
            else:
                child.unlink()


def _force_remove(func: Any, path: str, exc_info: Any) -> None:
    # A part may leave read-only files (PostgreSQL's data dir is 0700 and owned by its user).
    with contextlib.suppress(OSError):
        os.chmod(os.path.dirname(path), 0o700)
        os.chmod(path, 0o700)
    func(path)


def down(dir: Path | str | None = None, *, parts: Sequence[Part] | None = None,
         out: TextIO | None = None) -> bool:
    """Stop every process of the stack in ``dir`` and remove what ``up`` wrote. Works from
    the pid files alone (after a crash) and is idempotent. Returns False when there was no
    stack to stop."""
    out = sys.stderr if out is None else out
    dir = resolve_dir(dir)
    if not dir.exists():
        return False
    if not (dir / MARKER).exists():
        if not any(dir.iterdir()):
            return False
        raise UsageError(f"{dir} is not a stack directory (no {MARKER}); nothing was touched")
    if parts is None:
        try:
            parts = load_parts()
        except Exception as exc:  # the pid files alone still stop everything
            print(f"[stack] {exc}; stopping from the pid files alone", file=out)
            parts = []
    ports = list(_load_ctx(dir).ports.values())
    _teardown(dir, parts, out, remove=True)
    busy = open_ports(ports)
    if busy:
        print(f"[stack] warning: ports still answering after down: {busy}", file=out)
    return True


# --------------------------------------------------------------------------------------------
# status and faults


def status(dir: Path | str | None = None, *, parts: Sequence[Part] | None = None,
           timeout: float = 3.0) -> list[PartStatus]:
    """One line per part: its processes are alive and it answers (each part's own readiness
    check with a short deadline). Raises ``StackError`` when there is no stack in ``dir``."""
    dir = resolve_dir(dir)
    state = _read_json(dir / "state.json")
    if not state:
        raise StackError(f"no stack in {dir} (no state.json); start one with `opsready stack up`")
    parts = load_parts() if parts is None else list(parts)
    ctx = _load_ctx(dir)
    from opsready_stack.latency_proxy import LatencyPart

    proxy = LatencyPart.of(ctx)
    if proxy is not None:
        parts.append(proxy)
    urls = _advertised(ctx)
    rows: list[PartStatus] = []
    expected = state.get("pids") or [p.name for p in pidfiles(dir)]
    dead = [name for name in expected if not pidfile_alive(ctx.pids / name)]
    if not state.get("ready"):
        rows.append(PartStatus("stack", False, "up did not finish"))
    if dead:
        rows.append(PartStatus("processes", False, f"not running: {', '.join(dead)}"))
    deadline = time.monotonic() + timeout
    results: dict[str, str | None] = {}

    def check(part: Part) -> None:
        try:
            part.wait_ready(ctx, deadline)
            results[part.name] = None
        except Exception as exc:
            results[part.name] = str(exc) or exc.__class__.__name__

    threads = [threading.Thread(target=check, args=(p,), daemon=True) for p in parts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 2.0)
    for part in parts:
        problem = results.get(part.name, "no answer in time")
        if part is proxy:
            count = len(proxy.mapping)
            url = f"{proxy.latency_ms:g} ms round trip in front of {count} port{'s' if count != 1 else ''}"
        else:
            url = _hide_password(next((u for k, u in urls.items() if k.startswith(part.name)), ""))
        rows.append(PartStatus(part.name, problem is None, problem or url))
    return rows


def _advertised(ctx: StackContext) -> dict[str, str]:
    """The parts' addresses as env.yaml gives them: through the latency proxy when there is one."""
    from opsready_stack.latency_proxy import LatencyPart

    proxy = LatencyPart.of(ctx)
    return dict(ctx.urls) if proxy is None else proxy.advertised(dict(ctx.urls))


def active(dir: Path | str | None = None) -> list[str]:
    return sorted(_load_ctx(resolve_dir(dir)).faults())


def set_fault(dir: Path | str | None, name: str, on: bool, *,
              parts: Sequence[Part] | None = None) -> list[str]:
    """Turn fault ``name`` on or off in a running stack; returns the active faults."""
    dir = resolve_dir(dir)
    parts = load_parts() if parts is None else list(parts)
    _check_faults([name], all_faults(parts))
    if not (dir / "state.json").exists():
        raise StackError(f"no stack in {dir} (no state.json); start one with `opsready stack up`")
    ctx = _load_ctx(dir)
    current = ctx.faults()
    current = current | {name} if on else current - {name}
    _write_faults(ctx, current)
    for part in _declaring(parts, name):
        try:
            with marked(dir):
                part.set_fault(ctx, name, on)
        except Exception as exc:
            raise StackError(
                f"fault {name}: part {part.name} could not turn it {'on' if on else 'off'}: {exc}",
                part=part.name,
            ) from exc
    return sorted(current)


@contextlib.contextmanager
def fault(dir: Path | str | None, name: str) -> Iterator[None]:
    """Fault ``name`` on for the duration of the block."""
    set_fault(dir, name, True)
    try:
        yield
    finally:
        set_fault(dir, name, False)
