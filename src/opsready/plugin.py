"""pytest hooks only: options, markers, collection rules, roll-up, exit code.

The plugin is inert unless ``--opsready-env`` is given, so it never disturbs other test suites.
Under pytest-xdist the workers run checks and ship each criterion's outcome and evidence on the
test report; only the controller builds the readiness model and writes files.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest

from opsready import _run
from opsready._coverage import not_covered, skip_kind
from opsready._errors import ConfigError, ProbeError
from opsready._progress import Heartbeat
from opsready.catalogue import module_ticket_id
from opsready.config import INTRUSIVE_PROBES
from opsready.evidence import redactor
from opsready.fixtures import EVIDENCE_KEY

STATE = pytest.StashKey[_run.RunState]()

HELP_ENV = "environment: NAME (config/environments/NAME.yaml) or a YAML path; activates opsready"
HELP_ROOT = "project root holding config/tickets.yaml (default: found by walking up from the current directory)"
HELP_OUT = "report directory (default: reports/<UTC timestamp>-<env> under the root)"
HELP_GATE = "priorities that must be done or waived, e.g. P0,P1, or 'none' (default: the environment's gate)"
HELP_TICKET = "run only this ticket's checks (repeatable)"
HELP_INTRUSIVE = "allow this intrusive probe, replacing the environment's list (repeatable; 'none' for none)"
HELP_WAIVERS = "waiver file (default: config/waivers.yaml under the root)"
HELP_CATALOGUE = "ticket catalogue (default: config/tickets.yaml under the root)"
HELP_REGRESSION = "exit 1 when a ticket done in the previous run of this environment is no longer done"
HELP_PUSHGATEWAY = "push readiness metrics to this Prometheus Pushgateway URL"
HELP_HEARTBEAT = "with workers, name every criterion still running after this many seconds (default 15)"

MODULE_ERROR_PREFIX = _run.MODULE_ERROR_PREFIX


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("opsready", "ops-readiness verification")
    group.addoption("--opsready-env", dest="opsready_env", default=None, help=HELP_ENV)
    group.addoption("--opsready-root", dest="opsready_root", default=None, help=HELP_ROOT)
    group.addoption("--opsready-out", dest="opsready_out", default=None, help=HELP_OUT)
    group.addoption("--opsready-gate", dest="opsready_gate", default=None, help=HELP_GATE)
    group.addoption("--opsready-ticket", dest="opsready_tickets", action="append", default=[], help=HELP_TICKET)
    group.addoption("--opsready-allow-intrusive", dest="opsready_intrusive", action="append", default=None,
                    help=HELP_INTRUSIVE)
    group.addoption("--opsready-waivers", dest="opsready_waivers", default=None, help=HELP_WAIVERS)
    group.addoption("--opsready-catalogue", dest="opsready_catalogue", default=None, help=HELP_CATALOGUE)
    group.addoption("--opsready-fail-on-regression", dest="opsready_fail_on_regression", action="store_true",
                    default=False, help=HELP_REGRESSION)
    group.addoption("--opsready-pushgateway", dest="opsready_pushgateway", default=None, help=HELP_PUSHGATEWAY)
    group.addoption("--opsready-heartbeat", dest="opsready_heartbeat", type=float, default=15.0, help=HELP_HEARTBEAT)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ticket(id): the audit ticket this check module verifies, e.g. ticket('P2-002')")
    config.addinivalue_line("markers", "intrusive(name): the criterion writes or loads; runs only where allowed")
    if not config.getoption("opsready_env", None):
        return
    from opsready import fixtures

    if not config.pluginmanager.is_registered(fixtures):
        config.pluginmanager.register(fixtures, "opsready.fixtures")
    try:
        state = _run.RunState.from_options(config)
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[STATE] = state
    config.stash[fixtures.ENV_KEY] = state.env
    config.stash[fixtures.INTRUSIVE_KEY] = tuple(state.allow_intrusive)
    if not hasattr(config, "workerinput"):
        config.pluginmanager.register(_run.Recorder(state, _heartbeat(config)), "opsready-recorder")
        # Reports are written by the controller only; pytest-html and junitxml read these
        # options in their own pytest_configure, which runs after this one.
        state.out_dir.mkdir(parents=True, exist_ok=True)
        if not config.getoption("htmlpath", None):
            config.option.htmlpath = str(state.out_dir / "index.html")
            config.option.self_contained_html = True
        if not config.getoption("xmlpath", None):
            config.option.xmlpath = str(state.out_dir / "junit.xml")


def _heartbeat(config: pytest.Config) -> Heartbeat | None:
    """With workers, the controller reports criteria that run long (see ``_progress``)."""
    if not config.getoption("numprocesses", None):
        return None

    def write(line: str) -> None:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(line)

    return Heartbeat(write, interval=float(config.getoption("opsready_heartbeat")))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item) -> None:
    """In one process there is no controller to watch: announce each intrusive criterion
    before it starts (output is not captured between tests)."""
    state = item.config.stash.get(STATE, None)
    if state is None or hasattr(item.config, "workerinput") or item.config.getoption("numprocesses", None):
        return
    reporter = item.config.pluginmanager.get_plugin("terminalreporter")
    for mark in item.iter_markers("intrusive"):
        name = str(mark.args[0]) if mark.args else ""
        if reporter is not None and name in state.allow_intrusive:
            reporter.write_line(f"[opsready] {_ticket_of(item)}: running the intrusive probe '{name}' "
                                f"({_title(item)})")


class _TicketModule(pytest.Module):
    """A check module that must carry a ``ticket`` marker matching its file name."""

    def collect(self) -> Any:
        state = self.config.stash[STATE]
        problem = _module_problem(self, state)
        if problem:
            raise self.CollectError(f"{MODULE_ERROR_PREFIX} {problem}")
        return super().collect()


def _module_problem(module: pytest.Module, state: _run.RunState) -> str | None:
    name = module.path.name
    from_name = module_ticket_id(name)
    marks = [m for m in getattr(module.obj, "pytestmark", []) if getattr(m, "name", "") == "ticket"]
    if not isinstance(getattr(module.obj, "pytestmark", []), list):
        one = module.obj.pytestmark
        marks = [one] if getattr(one, "name", "") == "ticket" else []
    from_mark = str(marks[0].args[0]) if marks and marks[0].args else None
    known = state.catalogue.ids
    if from_name is None:
        return (f"{module.path}: the file name carries no ticket id; rename it "
                f"test_<id>_<topic>.py, e.g. test_p2_002_cors_preflight.py")
    if from_mark is None:
        return (f"{module.path}: no ticket marker; add `pytestmark = [pytest.mark.ticket(\"{from_name}\")]`")
    if from_mark not in known:
        return f"{module.path}: ticket {from_mark!r} is not in the catalogue ({', '.join(known)}); fix the marker"
    if from_mark != from_name:
        return (f"{module.path}: the marker says {from_mark} but the file name says {from_name}; "
                f"make them agree (rename the file or fix the marker)")
    return None


def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    if STATE not in parent.config.stash:
        return None
    return _TicketModule.from_parent(parent, path=module_path)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    state = config.stash.get(STATE, None)
    if state is None or not state.selected:
        return
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        (keep if _ticket_of(item) in state.selected else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_runtest_setup(item: pytest.Item) -> None:
    state = item.config.stash.get(STATE, None)
    if state is None:
        return
    for mark in item.iter_markers("intrusive"):
        name = str(mark.args[0]) if mark.args else ""
        if name not in INTRUSIVE_PROBES:
            raise pytest.UsageError(
                f"{item.nodeid}: intrusive({name!r}) is not a known intrusive probe; "
                f"use one of {', '.join(sorted(INTRUSIVE_PROBES))}"
            )
        if name not in state.allow_intrusive:
            not_covered(
                f"intrusive probe '{name}' ({INTRUSIVE_PROBES[name]}) is not allowed in environment "
                f"'{state.env.name}'; list it under allow_intrusive or pass --allow-intrusive {name}"
            )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if STATE not in item.config.stash:
        return report
    outcome, message = _outcome(report, call)
    ev = item.stash.get(EVIDENCE_KEY, None)
    kind, judgeable_from = skip_kind(call.excinfo.value if call.excinfo is not None else None)
    report.opsready = {
        "ticket": _ticket_of(item),
        "title": _title(item),
        "outcome": outcome,
        "message": redactor.text(message),
        "evidence": [i.to_dict() for i in ev.items] if ev is not None else [],
        "skip_kind": kind if outcome == "skip" else None,
        "judgeable_from": judgeable_from.isoformat() if outcome == "skip" and judgeable_from else None,
    }
    _redact(report, message if outcome in ("fail", "error") else "")
    return report


def _outcome(report: pytest.TestReport, call: pytest.CallInfo[None]) -> tuple[str, str]:
    if report.skipped:
        msg = getattr(call.excinfo.value, "msg", None) if call.excinfo is not None else None
        if isinstance(msg, str):
            return "skip", msg
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        return "skip", str(reason).removeprefix("Skipped: ")
    if report.passed:
        return "pass", ""
    exc = call.excinfo.value if call.excinfo is not None else None
    if report.when == "call" and isinstance(exc, AssertionError):
        text = str(exc)
        # Keep the check's own message; drop pytest's rewritten "assert ..." explanation.
        head = re.split(r"\n(?:assert |where |\+ )", text, maxsplit=1)[0].strip()
        return "fail", head or "the assertion failed (the check gave no message)"
    phase = "" if report.when == "call" else f" during {report.when}"
    if isinstance(exc, ProbeError):
        return "error", f"could not judge{phase}: {exc}"
    if exc is not None:
        return "error", (f"could not judge{phase}: {type(exc).__name__}: {exc} "
                         f"(an unexpected exception: a bug in the check or its probe)")
    return "error", f"could not judge{phase}"


def _redact(report: pytest.TestReport, headline: str) -> None:
    """Redact what pytest shows and stores. The traceback becomes text; its first line is the
    criterion's message, so the short summary names what was found."""
    if report.longrepr is not None:
        if isinstance(report.longrepr, tuple):
            path, line, reason = report.longrepr
            report.longrepr = (path, line, redactor.text(str(reason)))
        else:
            text = str(report.longrepr)
            report.longrepr = redactor.text(f"{headline}\n\n{text}" if headline else text)
    report.sections = [(k, redactor.text(v)) for k, v in report.sections]


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = session.config.stash.get(STATE, None)
    if state is None or hasattr(session.config, "workerinput"):
        return
    session.exitstatus = state.finish(int(exitstatus))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is None or hasattr(config, "workerinput") or state.readiness is None:
        return
    terminalreporter.write_sep("=", "opsready readiness")
    for line in state.console_lines():
        terminalreporter.write_line(line)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is None or hasattr(config, "workerinput"):
        return
    state.publish()


def _ticket_of(item: pytest.Item) -> str:
    mark = item.get_closest_marker("ticket")
    if mark is not None and mark.args:
        return str(mark.args[0])
    return module_ticket_id(item.path.name) or "unknown"


def _title(item: pytest.Item) -> str:
    doc = getattr(getattr(item, "function", None), "__doc__", None) or ""
    first = doc.strip().splitlines()[0].strip() if doc.strip() else item.name
    params = getattr(item, "callspec", None)
    return f"{first} [{params.id}]" if params is not None else first


def today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()
