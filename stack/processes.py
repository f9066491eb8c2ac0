"""Every process the stack starts, and how they are stopped: spawning into a session of its
own with a pid file, whether a process group is still alive (zombies do not count), SIGTERM
then SIGKILL, and the sweep for anything left outside the pid files.

Every stack process carries ``OPSREADY_STACK_DIR=<dir>`` in its environment (set while ``up``,
``fault`` and the parts run), so ``processes_using`` finds what a part left behind.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TextIO

__all__ = [
    "STACK_ENV",
    "free_port",
    "group_alive",
    "kill_all",
    "kill_pidfile",
    "marked",
    "open_ports",
    "pidfile_alive",
    "pidfiles",
    "processes_using",
    "read_pidfile",
    "signal_pidfile",
    "sigterm_interrupts",
    "spawn",
    "sweep",
    "uninterrupted",
    "wait_until",
]

# Set in the environment of every process the stack starts, so `down` finds them all.
STACK_ENV = "OPSREADY_STACK_DIR"


def spawn(name: str, argv: list[str], *, logs: Path, pids: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None, user: str | None = None) -> int:
    """Start a background process in its own session; log to ``logs/NAME.log`` and write
    ``pids/NAME.pid``. ``user`` runs it as that user, with that user's own group (used for
    PostgreSQL as root)."""
    logs.mkdir(parents=True, exist_ok=True)
    pids.mkdir(parents=True, exist_ok=True)
    log = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
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
    (pids / f"{name}.pid").write_text(str(proc.pid))
    return proc.pid


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


def pidfiles(dir: Path) -> list[Path]:
    """The pid files of the stack in ``dir``."""
    return sorted((dir / "pids").glob("*.pid"))


def pidfile_alive(pidfile: Path) -> bool:
    pid = read_pidfile(pidfile)
    return pid is not None and group_alive(pid)


def kill_all(dir: Path, grace: float = 5.0) -> None:
    """SIGTERM every process group at once, give them ``grace`` seconds together, then
    SIGKILL what is left (``kill_pidfile``)."""
    found = pidfiles(dir)
    for pidfile in found:
        signal_pidfile(pidfile, signal.SIGTERM)
    end = time.monotonic() + grace
    while time.monotonic() < end and any(pidfile_alive(p) for p in found):
        time.sleep(0.05)
    for pidfile in found:
        kill_pidfile(pidfile, grace=2.0)


def _ancestors() -> set[int]:
    found, pid = set(), os.getpid()
    while pid > 1:
        found.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return found


def processes_using(dir: Path) -> list[tuple[int, str]]:
    """Processes descended from this stack's ``up`` (or ``fault``): they carry
    ``OPSREADY_STACK_DIR=<dir>`` in their environment. A part that left something running
    outside its pid files shows up here; a user's ``opsready verify --env DIR/env.yaml``
    does not. This process and its ancestors never count."""
    mark = f"{STACK_ENV}={dir.resolve()}".encode()
    skip = _ancestors()
    found: list[tuple[int, str]] = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in skip:
            continue
        try:
            if mark not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv if a]
        if words:  # a zombie has no command line left
            found.append((int(proc.name), " ".join(words)[:200]))
    return found


@contextlib.contextmanager
def marked(dir: Path) -> Iterator[None]:
    """Mark every process started meanwhile as this stack's (see ``processes_using``)."""
    previous = os.environ.get(STACK_ENV)
    os.environ[STACK_ENV] = str(dir.resolve())
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(STACK_ENV, None)
        else:
            os.environ[STACK_ENV] = previous


def sweep(dir: Path, out: TextIO) -> None:
    for pid, cmd in processes_using(dir):
        print(f"[stack] killing {pid}, left running outside the pid files: {cmd}", file=out)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def open_ports(ports: Iterable[int]) -> list[int]:
    still = []
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                still.append(port)
    return still


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (a job's time limit, ``timeout``) raises KeyboardInterrupt meanwhile, so a
    terminated ``up`` or demo stops what it started, as it does on Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Ignore Ctrl-C and SIGTERM while stopping: a second one must not leave processes
    behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
