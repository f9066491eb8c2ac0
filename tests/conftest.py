"""Shared fixtures of the suite's own tests.

``stack``: one reference stack for the whole session (under xdist, one per worker), started
with ``opsready stack up`` into a temporary directory and stopped at the end. ``healthy_run``:
one verify of every ticket on it, shared by the tests that read the healthy evidence.
``run_verify``: run ``opsready verify`` against it and read the readiness model it wrote.
``Project``: a throw-away project of check modules for the plugin's own tests (through
``pytester``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
UP_TIMEOUT_S = 180.0
# `down` gives each part's clean-up up to 20 s before it kills the processes.
STOP_TIMEOUT_S = 300.0
VERIFY_TIMEOUT_S = 900.0

# Plugins installed for the suite's own tests that no check run uses: a plain `pytest checks`
# run here autoloads every other installed plugin (opsready's among them), as a user's does.
UNUSED_PLUGINS_OFF = ("-p", "no:hypothesispytest", "-p", "no:anyio")

# Variables of an outer pytest run that must not leak into the pytest that `opsready verify`
# runs (an xdist worker id would make the inner run believe it is a worker).
_INNER_ENV_DROP = ("PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST", "PYTEST_XDIST_WORKER",
                   "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID")


def opsready_command() -> list[str]:
    """The `opsready` console script of this interpreter's environment."""
    script = BIN / "opsready"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from opsready.cli import main; sys.exit(main())"]


def stack_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "opsready_stack.cli", *args]


def child_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in _INNER_ENV_DROP}


def stack_parent_dir() -> Path:
    """A fresh directory to hold one stack directory. Other users may pass through it, so
    PostgreSQL (run as its own user when we are root) can keep its cluster inside."""
    parent = Path(tempfile.mkdtemp(prefix="opsready-stack-"))
    parent.chmod(0o755)
    return parent


@dataclass
class StartedStack:
    """A stack started by `opsready stack up`, with the console output of the start."""

    dir: Path
    up_seconds: float
    output: str

    @property
    def env_path(self) -> Path:
        return self.dir / "env.yaml"

    @property
    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.dir / "state.json").read_text())
        return data

    @contextlib.contextmanager
    def fault(self, name: str) -> Iterator[None]:
        """Fault ``name`` on for the block, off afterwards (also when the block fails).

        The stack's apps re-read faults.json on every request, and parts whose faults need
        an action (reload Prometheus, change the bucket) finish it inside ``set_fault``, so
        the change is visible when the block starts."""
        from opsready_stack.orchestrator import set_fault

        set_fault(self.dir, name, True)
        try:
            yield
        finally:
            set_fault(self.dir, name, False)


def start_stack(dir: Path, *extra: str) -> StartedStack:
    """`opsready stack up --dir DIR`; on failure stop whatever started and fail the test."""
    begun = time.monotonic()
    try:
        proc = subprocess.run(
            stack_command("up", "--dir", str(dir), *extra),
            capture_output=True, text=True, timeout=UP_TIMEOUT_S, env=child_env(), cwd=ROOT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        # `up` was killed before it could stop what it started: its pid files still can.
        stop_stack(dir)
        output = "".join(x.decode(errors="replace") if isinstance(x, bytes) else x or ""
                         for x in (exc.stdout, exc.stderr))
        pytest.fail(f"opsready stack up did not finish in {UP_TIMEOUT_S:.0f}s:\n{output}",
                    pytrace=False)
    seconds = time.monotonic() - begun
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        stop_stack(dir)
        pytest.fail(f"opsready stack up failed (exit {proc.returncode}):\n{output}", pytrace=False)
    return StartedStack(dir=dir, up_seconds=seconds, output=output)


def stop_stack(dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        stack_command("down", "--dir", str(dir)),
        capture_output=True, text=True, timeout=STOP_TIMEOUT_S, env=child_env(), cwd=ROOT,
        check=False,
    )


@contextlib.contextmanager
def running_stack() -> Iterator[StartedStack]:
    """A stack started for the duration of the block, stopped and removed after it."""
    from opsready_stack.orchestrator import sigterm_interrupts

    parent = stack_parent_dir()
    try:
        # A CI job's time limit (SIGTERM) then tears the fixture down like Ctrl-C does.
        with sigterm_interrupts():
            yield start_stack(parent / "stack")
    finally:
        # Also when `up` failed, timed out or was interrupted: `down` works from the pid files.
        stop_stack(parent / "stack")
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="session")
def stack() -> Iterator[StartedStack]:
    """The reference stack, shared by every test of the session."""
    with running_stack() as started:
        yield started


@pytest.fixture(scope="session")
def healthy_run(stack: StartedStack, tmp_path_factory: pytest.TempPathFactory) -> VerifyResult:
    """One ``opsready verify`` of every ticket on the healthy stack, every intrusive probe
    allowed, the P0/P1 gate on: the run whose evidence each domain's tests read."""
    from opsready.config import INTRUSIVE_PROBES

    return run_verify(stack, tmp_path_factory.mktemp("healthy"), "--gate", "P0,P1", "-n", "0",
                      allow_intrusive=list(INTRUSIVE_PROBES))


@dataclass
class VerifyResult:
    exit_code: int
    readiness: dict[str, Any]
    output: str
    out_dir: Path
    command: list[str] = field(default_factory=list)

    def _tickets(self) -> list[dict[str, Any]]:
        if not self.readiness:
            tail = "\n".join(self.output.splitlines()[-40:])
            raise AssertionError(
                f"opsready verify wrote no {self.out_dir / 'readiness.json'} "
                f"(exit {self.exit_code}); its output ended with:\n{tail}"
            )
        tickets: list[dict[str, Any]] = self.readiness["tickets"]
        return tickets

    @property
    def status(self) -> dict[str, str]:
        """Ticket id -> status (done, open, unverified, waived)."""
        return {t["id"]: t["status"] for t in self._tickets()}

    def criteria(self, ticket_id: str) -> list[dict[str, Any]]:
        for ticket in self._tickets():
            if ticket["id"] == ticket_id:
                found: list[dict[str, Any]] = ticket["criteria"]
                return found
        raise AssertionError(f"ticket {ticket_id} is not in the readiness report")

    def explain(self, tickets: Iterable[str] | None = None) -> str:
        """Every criterion that did not pass, one per line, for assertion messages."""
        wanted = set(tickets) if tickets is not None else None
        lines = []
        for ticket in self._tickets():
            if wanted is not None and ticket["id"] not in wanted:
                continue
            for c in ticket["criteria"]:
                if c.get("outcome") != "pass":
                    message = " ".join(str(c.get("message") or "").split())[:300]
                    lines.append(f"{ticket['id']} [{c.get('outcome')}] {c.get('title')}: "
                                 f"{message}")
        return "\n".join(lines) or "(every criterion passed)"


def run_verify(
    stack: StartedStack,
    tmp_path: Path,
    *extra_args: str,
    tickets: Iterable[str] | None = None,
    allow_intrusive: Iterable[str] | None = None,
    environ: dict[str, str] | None = None,
) -> VerifyResult:
    """`opsready verify --env STACK/env.yaml --out TMP/verify-N --reports-root TMP --gate none [...]`.

    ``allow_intrusive`` replaces the environment's list (an empty list allows none);
    ``extra_args`` come last, so e.g. ``"--gate", "P0,P1"`` overrides the default here.
    ``environ`` adds variables, e.g. ``OPSREADY_TODAY`` to move the run's clock. Runs that
    share ``tmp_path`` share ``tmp_path/history.jsonl``, so later runs can carry passes
    forward from earlier ones."""
    n = 0
    while (tmp_path / f"verify-{n}").exists():
        n += 1
    out = tmp_path / f"verify-{n}"
    command = [*opsready_command(), "verify", "--env", str(stack.env_path), "--out", str(out),
               "--reports-root", str(tmp_path), "--gate", "none"]
    for ticket in tickets or ():
        command += ["--ticket", ticket]
    if allow_intrusive is not None:
        names = list(allow_intrusive) or ["none"]
        for name in names:
            command += ["--allow-intrusive", name]
    command += list(extra_args)
    proc = subprocess.run(command, capture_output=True, text=True, timeout=VERIFY_TIMEOUT_S,
                          env={**child_env(), **(environ or {})}, cwd=ROOT, check=False)
    readiness_file = out / "readiness.json"
    readiness: dict[str, Any] = (
        json.loads(readiness_file.read_text()) if readiness_file.is_file() else {}
    )
    return VerifyResult(exit_code=proc.returncode, readiness=readiness,
                        output=proc.stdout + proc.stderr, out_dir=out, command=command)


class Project:
    """A project of check modules run through ``pytester``: the real catalogue, an empty
    environment file, and one report directory per run under ``reports/``."""

    def __init__(self, pytester: pytest.Pytester) -> None:
        self.pytester = pytester
        self.root = pytester.path
        (self.root / "config").mkdir()
        # The real tickets without their actions: the actions name the criteria of the real
        # checks/, which these synthetic check modules do not define.
        import yaml

        catalogue = yaml.safe_load((ROOT / "config" / "tickets.yaml").read_text(encoding="utf-8"))
        for entry in catalogue["tickets"]:
            entry["actions"] = []
        (self.root / "config" / "tickets.yaml").write_text(yaml.safe_dump(catalogue, sort_keys=False))
        self.env = self.root / "env.yaml"
        self.env.write_text("")
        self.checks = self.root / "checks"
        self.checks.mkdir()
        self.runs = 0

    def check(self, name: str, body: str, plan: dict[str, Any] | None = None) -> None:
        """Write a check module and its plan (``opsready.plan``): by default one entry per test
        function saying it contacts nothing, with the intrusive probe it is marked with or
        asks for."""
        source = textwrap.dedent(body)
        (self.checks / name).write_text(source)
        if name.startswith("test_") and name.endswith(".py"):
            write_plan(self.checks / name, plan if plan is not None else default_plan(source))

    def waivers(self, entries: list[dict[str, Any]]) -> None:
        import yaml

        (self.root / "config" / "waivers.yaml").write_text(yaml.safe_dump({"waivers": entries}))

    def run(self, *args: str, out: str | None = None) -> tuple[pytest.RunResult, dict[str, Any]]:
        self.runs += 1
        out_dir = self.root / "reports" / (out or f"run{self.runs}")
        result = self.pytester.runpytest_subprocess(
            str(self.checks), "-p", "no:cacheprovider", *UNUSED_PLUGINS_OFF,
            "--opsready-env", str(self.env), "--opsready-root", str(self.root),
            "--opsready-out", str(out_dir), *args,
        )
        path = out_dir / "readiness.json"
        data = json.loads(path.read_text()) if path.is_file() else {}
        return result, data


def refusing_transport() -> Any:
    """An httpx transport whose every connection is refused, as an unreachable target's."""
    import httpx

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    return httpx.MockTransport(handler)


def load_check(name: str) -> ModuleType:
    """A check module of ``checks/`` loaded on its own, for calling its criteria directly with
    probes on mocked or fake servers."""
    spec = importlib.util.spec_from_file_location(f"_checks_{name}", ROOT / "checks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def evidence_value(criterion: dict[str, Any], name: str) -> Any:
    """What a criterion of readiness.json recorded under ``name``: a table's rows, any other
    item's value; fails naming what it did record."""
    for item in criterion["evidence"]:
        if item.get("name") == name:
            return item["rows"] if item.get("kind") == "table" else item.get("value")
    raise AssertionError(f"{criterion.get('id', criterion.get('title'))} recorded no {name!r}: "
                         f"{[i.get('name') for i in criterion['evidence']]}")


def env_variant(stack: StartedStack, tmp_path: Path, name: str,
                change: Callable[[dict[str, Any]], None]) -> StartedStack:
    """The stack's env.yaml changed by ``change``, in a directory of its own (mode 0600, as
    the stack writes it), as a stack to run verify against."""
    env = yaml.safe_load(stack.env_path.read_text())
    change(env)
    copy = tmp_path / name
    copy.mkdir()
    (copy / "env.yaml").write_text(yaml.safe_dump(env))
    (copy / "env.yaml").chmod(0o600)
    return StartedStack(dir=copy, up_seconds=0.0, output="")


def finish_process(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str]:
    """Wait for a child started with its output piped: its exit code and output, or fail the
    test (and kill it) when it has not ended within ``timeout`` seconds."""
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the run did not end within {timeout}s:\n{proc.communicate()[0]}")
    return proc.returncode, output


def cli_in_process(*argv: str) -> tuple[int, str, str]:
    """``opsready ARGV`` in this process: the exit code (argparse's too), stdout and stderr."""
    from opsready.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def default_plan(source: str) -> dict[str, Any]:
    """A plan entry per test function of ``source`` that contacts nothing; ``intrusive`` from
    its marker (or the module's) or from the probe it asks ``intrusive_allowed`` for."""
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}

    def marked(nodes: Iterable[ast.AST]) -> str | None:
        for node in nodes:
            for call in ast.walk(node):
                if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                        and call.func.attr in ("intrusive", "intrusive_allowed") and call.args
                        and isinstance(call.args[0], ast.Constant)):
                    return str(call.args[0].value)
                if (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
                        and call.func.id == "intrusive_allowed" and call.args
                        and isinstance(call.args[0], ast.Constant)):
                    return str(call.args[0].value)
        return None

    module_mark = marked(n for n in tree.body if isinstance(n, ast.Assign)
                         and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in n.targets))
    plan: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_"):
            entry: dict[str, Any] = {"contacts": []}
            probe = marked(node.decorator_list) or module_mark or marked([node])
            if probe:
                entry["intrusive"] = probe
            plan[node.name] = entry
    return plan


def write_plan(module: Path, plan: dict[str, Any]) -> None:
    import yaml

    module.with_name(module.stem + ".plan.yaml").write_text(yaml.safe_dump(plan))


def statuses(data: dict[str, Any]) -> dict[str, str]:
    return {t["id"]: t["status"] for t in data["tickets"]}


def ticket(data: dict[str, Any], ticket_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(t for t in data["tickets"] if t["id"] == ticket_id)
    return found


def criteria(data: dict[str, Any], ticket_id: str) -> dict[str, dict[str, Any]]:
    """Test name -> criterion, for one ticket."""
    return {c["id"].split("::", 1)[1]: c for c in ticket(data, ticket_id)["criteria"]}
