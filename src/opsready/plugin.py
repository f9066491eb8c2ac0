"""pytest hooks only: options, markers, collection rules, roll-up, exit code.

The plugin is inert unless ``--opsready-env`` is given, so it never disturbs other test suites.
Under pytest-xdist the workers run checks and ship each criterion's outcome and evidence on the
test report; only the controller builds the readiness model and writes files.
"""

from __future__ import annotations

import gc
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from opsready import _run
from opsready._coverage import not_covered, skip_kind
from opsready._errors import ConfigError, ProbeError
from opsready._interrupt import stop_signals
from opsready._options import ExitCode, RunOptions, RunRequest
from opsready._progress import Heartbeat
from opsready.catalogue import module_ticket_id
from opsready.config import INTRUSIVE_PROBES
from opsready.evidence import redactor
from opsready.fixtures import (
    BACKGROUND_DRILL_KEY,
    DENIED_INTRUSIVE_KEY,
    EVIDENCE_KEY,
    PREFETCH_KEY,
    PREFETCH_PAUSED_KEY,
)

STATE = pytest.StashKey[_run.RunState]()
SESSION = pytest.StashKey[pytest.Session]()
# The plan entry of a criterion (``opsready.plan``), kept on the item by the collection rule.
PLAN_KEY = pytest.StashKey[Any]()

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
HELP_REPORTS_ROOT = ("where history.jsonl and latest live (default: reports/ under the root); a report "
                     "directory elsewhere writes neither")
HELP_DEADLINE = "end the run as interrupted, with its report, after this many seconds (default: deadline_s)"
HELP_PLAN = "print what each selected criterion would contact and read, and send nothing"

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
    group.addoption("--opsready-reports-root", dest="opsready_reports_root", default=None, help=HELP_REPORTS_ROOT)
    group.addoption("--opsready-deadline", dest="opsready_deadline", type=float, default=None, help=HELP_DEADLINE)
    group.addoption("--opsready-plan", dest="opsready_plan", action="store_true", default=False, help=HELP_PLAN)


class ValidatedRun:
    """Handed to ``pytest.main`` by ``opsready verify``: the options it validated already, so
    the plugin does not validate them a second time."""

    def __init__(self, options: RunOptions) -> None:
        self.options = options


def _run_options(config: pytest.Config) -> RunOptions | None:
    """The run's options: from the controller (on an xdist worker), from ``opsready verify``,
    or validated here when pytest was started directly with ``--opsready-env``."""
    wired = getattr(config, "workerinput", {}).get("opsready")
    if wired is not None:
        return RunOptions.from_wire(wired)
    handed = next((p for p in config.pluginmanager.get_plugins() if isinstance(p, ValidatedRun)), None)
    if handed is not None:
        return handed.options
    if not config.getoption("opsready_env", None):
        return None
    opt = config.getoption
    intrusive = opt("opsready_intrusive")
    return RunRequest(
        env=str(opt("opsready_env")), root=opt("opsready_root"), out=opt("opsready_out"),
        gate=opt("opsready_gate"), tickets=tuple(opt("opsready_tickets")),
        allow_intrusive=tuple(intrusive) if intrusive is not None else None,
        waivers=opt("opsready_waivers"), catalogue=opt("opsready_catalogue"),
        checks=tuple(a.split("::")[0] for a in config.args),
        fail_on_regression=bool(opt("opsready_fail_on_regression")),
        pushgateway=opt("opsready_pushgateway"), heartbeat_s=float(opt("opsready_heartbeat")),
        reports_root=opt("opsready_reports_root"), deadline_s=opt("opsready_deadline"),
        plan=bool(opt("opsready_plan")),
    ).resolve()


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ticket(id): the audit ticket this check module verifies, e.g. ticket('P2-002')")
    config.addinivalue_line("markers", "intrusive(name): the criterion writes or loads; runs only where allowed")
    try:
        options = _run_options(config)
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    if options is None:
        return
    from opsready import fixtures

    if not config.pluginmanager.is_registered(fixtures):
        config.pluginmanager.register(fixtures, "opsready.fixtures")
    from opsready.probes import _http

    _http.set_body_limit(options.env.body_limit_bytes)
    state = _run.RunState(options)
    config.stash[STATE] = state
    config.stash[fixtures.ENV_KEY] = options.env
    config.stash[fixtures.INTRUSIVE_KEY] = options.allow_intrusive
    signals = stop_signals()
    if options.plan:
        # Collect only: nothing is claimed, written or sent.
        config.pluginmanager.register(_run.Recorder(state, None, config.rootpath), "opsready-recorder")
        return
    # Ctrl-C, SIGTERM and the deadline end the run alike, with its report (see _interrupt).
    signals.install()
    if not hasattr(config, "workerinput"):
        from opsready.report import files

        try:
            files.claim_report_dir(state.out_dir, options.run_id)
        except ConfigError as exc:
            raise pytest.UsageError(str(exc)) from None
        config.pluginmanager.register(_run.Recorder(state, _heartbeat(config, options), config.rootpath),
                                      "opsready-recorder")
        signals.forward_to_children = bool(config.getoption("numprocesses", None))
        signals.start_deadline(options.deadline_s)
        # Reports are written by the controller only; pytest-html reads this option in its
        # own pytest_configure, which runs after this one. junit.xml is written from the
        # readiness model (report/junit.py), not by pytest's junitxml.
        if not config.getoption("htmlpath", None):
            config.option.htmlpath = str(state.out_dir / "index.html")
            config.option.self_contained_html = True


def _heartbeat(config: pytest.Config, options: RunOptions) -> Heartbeat | None:
    """With workers, the controller reports criteria that run long (see ``_progress``)."""
    if not config.getoption("numprocesses", None):
        return None

    def write(line: str) -> None:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(line)

    return Heartbeat(write, interval=options.heartbeat_s)


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
        if reporter is not None and name in state.options.allow_intrusive:
            doing = ("taking the result of the intrusive probe 'restore_drill', started in the background"
                     if name == "restore_drill" and item.config.stash.get(BACKGROUND_DRILL_KEY, False)
                     else f"running the intrusive probe '{name}'")
            reporter.write_line(f"[opsready] {ticket_of(item)}: {doing} ({_title(item)})")


class _TicketModule(pytest.Module):
    """A check module that must carry a ``ticket`` marker matching its file name, and a plan
    entry for every criterion (``opsready.plan``)."""

    def collect(self) -> Any:
        state = self.config.stash[STATE]
        problem = _module_problem(self, state)
        if problem:
            raise self.CollectError(f"{MODULE_ERROR_PREFIX} {problem}")
        collected = list(super().collect())
        problem = _plan_problem(self, collected)
        if problem:
            raise self.CollectError(f"{MODULE_ERROR_PREFIX} {problem}")
        return collected


def _plan_problem(module: pytest.Module, collected: list[Any]) -> str | None:
    """Every criterion has its plan entry, and every entry a criterion (see ``opsready.plan``)."""
    from opsready.plan import load_plan, plan_path

    try:
        plans = load_plan(module.path)
    except ConfigError as exc:
        return str(exc)
    shown = plan_path(module.path).name
    names: set[str] = set()
    for item in collected:
        if not isinstance(item, pytest.Function):
            continue
        name = item.originalname
        names.add(name)
        entry = plans.get(name)
        if entry is None:
            return (f"{module.path}: {name} has no entry in {shown}; add `{name}: {{contacts: [...], "
                    f"reads: [...]}}` saying what it contacts and reads")
        mark = item.get_closest_marker("intrusive")
        marked = str(mark.args[0]) if mark is not None and mark.args else None
        if marked is not None and entry.intrusive != marked:
            return f"{shown}: {name}.intrusive must be {marked!r}, as its intrusive marker says"
        if marked is None and "intrusive_allowed" in item.fixturenames and entry.intrusive is None:
            return (f"{shown}: {name} asks intrusive_allowed, so its entry must name the probe "
                    f"(`intrusive: NAME`)")
        item.stash[PLAN_KEY] = entry
    extra = sorted(set(plans) - names)
    if extra:
        return f"{shown}: {extra[0]} is not a criterion of {module.path.name}; remove the entry or fix its name"
    return None


def _ticket_marks(module: pytest.Module) -> list[pytest.Mark]:
    """The module's ``ticket`` marks; ``pytestmark`` may be one mark or a list, as pytest allows."""
    raw = getattr(module.obj, "pytestmark", [])
    marks = raw if isinstance(raw, list | tuple) else [raw]
    found = [getattr(m, "mark", m) for m in marks]
    return [m for m in found if isinstance(m, pytest.Mark) and m.name == "ticket"]


def _module_problem(module: pytest.Module, state: _run.RunState) -> str | None:
    name = module.path.name
    from_name = module_ticket_id(name)
    marks = _ticket_marks(module)
    from_mark = str(marks[0].args[0]) if marks and marks[0].args else None
    known = state.options.catalogue.ids
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


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """With ``--ticket``, a check module of another ticket is not even imported (its file name
    carries its ticket, a collection rule): it costs nothing, and if it is broken it cannot
    stop the tickets asked for."""
    state = config.stash.get(STATE, None)
    if state is None or not state.options.selected or collection_path.suffix != ".py":
        return None
    ticket = module_ticket_id(collection_path.name)
    if ticket is not None and ticket not in state.options.selected:
        return True
    return None


def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    if STATE not in parent.config.stash:
        return None
    return _TicketModule.from_parent(parent, path=module_path)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    state = config.stash.get(STATE, None)
    if state is None:
        return
    if state.options.selected:
        keep: list[pytest.Item] = []
        drop: list[pytest.Item] = []
        for item in items:
            (keep if ticket_of(item) in state.options.selected else drop).append(item)
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep
    _drill_criteria_last(config, state, items)
    if not hasattr(config, "workerinput"):
        # In one process the controller collects: what never reports an end is "not run".
        for item in items:
            state.expect(item.nodeid, ticket_of(item), _title(item))
    if state.options.plan:
        _print_plan(config, state, items)


def _drill_criteria_last(config: pytest.Config, state: _run.RunState, items: list[pytest.Item]) -> None:
    """In one process the restore drill runs in the background from the session's start
    (``fixtures.opsready_background_drill``); its criteria come last, so the other criteria
    run while it restores instead of waiting for it."""
    if (state.options.plan or hasattr(config, "workerinput") or config.getoption("numprocesses", None)
            or "restore_drill" not in state.options.allow_intrusive):
        return
    drills = [i for i in items if getattr(i.stash.get(PLAN_KEY, None), "intrusive", None) == "restore_drill"]
    if drills:
        items[:] = [i for i in items if i not in drills] + drills


def _print_plan(config: pytest.Config, state: _run.RunState, items: list[pytest.Item]) -> None:
    from opsready.plan import plan_line, render_plan

    opts = state.options
    lines = []
    for item in items:
        entry = item.stash.get(PLAN_KEY, None)
        if entry is None:
            continue
        mark = item.get_closest_marker("intrusive")
        marked = str(mark.args[0]) if mark is not None and mark.args else None
        lines.append(plan_line(ticket_of(item), item.nodeid, _title(item), entry, opts.env,
                               opts.allow_intrusive, marked))
    state.plan_text = render_plan(lines, opts.env, body_limit=opts.env.body_limit_bytes,
                                  deadline_s=opts.deadline_s)


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
        if name not in state.options.allow_intrusive:
            not_covered(
                f"intrusive probe '{name}' ({INTRUSIVE_PROBES[name]}) is not allowed in environment "
                f"'{state.options.env.name}'; list it under allow_intrusive or pass --allow-intrusive {name}"
            )
    _pause_prefetch(item, state.options.allow_intrusive)


def _pause_prefetch(item: pytest.Item, allowed: tuple[str, ...]) -> None:
    """Nothing overlaps an intrusive criterion but the restore drill: the read-ahead of shared
    facts (``opsready.prefetch``) pauses before it and resumes after its teardown."""
    from opsready.prefetch import OVERLAPPABLE_INTRUSIVE

    entry = item.stash.get(PLAN_KEY, None)
    name = getattr(entry, "intrusive", None)
    if name is None or name not in allowed or name in OVERLAPPABLE_INTRUSIVE:
        return
    item.config.stash[PREFETCH_PAUSED_KEY] = True
    prefetch = item.config.stash.get(PREFETCH_KEY, None)
    if prefetch is not None:
        prefetch.pause()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Any:
    try:
        return (yield)
    finally:
        if item.config.stash.get(PREFETCH_PAUSED_KEY, False):
            item.config.stash[PREFETCH_PAUSED_KEY] = False
            prefetch = item.config.stash.get(PREFETCH_KEY, None)
            if prefetch is not None:
                prefetch.resume()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if STATE not in item.config.stash:
        return report
    outcome, message = _outcome(report, call)
    ev = item.stash.get(EVIDENCE_KEY, None)
    kind, judgeable_from = skip_kind(call.excinfo.value if call.excinfo is not None else None)
    intrusive, denied = _intrusive(item, item.config.stash[STATE].options.allow_intrusive)
    report.opsready = {
        "ticket": ticket_of(item),
        "title": _title(item),
        "outcome": outcome,
        "message": redactor.text(message),
        "evidence": ev.dump() if ev is not None else [],
        "skip_kind": kind if outcome == "skip" else None,
        "judgeable_from": judgeable_from.isoformat() if outcome == "skip" and judgeable_from else None,
        "intrusive": intrusive,
        "intrusive_denied": denied,
    }
    _redact(report, message if outcome in ("fail", "error") else "")
    return report


def _intrusive(item: pytest.Item, allowed: tuple[str, ...]) -> tuple[str | None, bool]:
    """The intrusive probe a criterion needs (its marker, or the one it asked for through
    ``intrusive_allowed``), and whether this run refused it."""
    mark = item.get_closest_marker("intrusive")
    if mark is not None and mark.args:
        name = str(mark.args[0])
        return name, name not in allowed
    refused = item.stash.get(DENIED_INTRUSIVE_KEY, [])
    return (refused[0], True) if refused else (None, False)


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
    if report.when == "call" and isinstance(exc, pytest.fail.Exception):
        # pytest.fail(...) in a check is a finding, like an assert with a message.
        return "fail", str(exc.msg or "").strip() or "the check failed (pytest.fail gave no message)"
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
    if state.options.plan:
        session.exitstatus = int(ExitCode.USAGE if state.module_errors else ExitCode.OK)
        return
    session.config.stash[SESSION] = session
    session.exitstatus = int(state.finish(int(exitstatus)))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is None or hasattr(config, "workerinput") or state.readiness is None:
        return
    terminalreporter.write_sep("=", "opsready readiness")
    for line in state.console_lines():
        terminalreporter.write_line(line)
    state.summary_shown = True


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is None:
        return
    try:
        if state.options.plan and not hasattr(config, "workerinput"):
            # Printed here, after pytest's own output (``opsready verify --plan`` has none).
            lines = list(state.plan_text or [])
            lines += [f"check module not used: {e}" for e in state.module_errors]
            sys.stdout.write("\n".join(lines) + "\n")
            sys.stdout.flush()
        elif not hasattr(config, "workerinput"):
            state.publish(config.stash.get(SESSION, None))
            if state.readiness is not None and not state.summary_shown:
                # pytest shows no summary after an internal error; the table still says where
                # the report is and what did not run.
                sys.stdout.write("\n".join(["opsready readiness", *state.console_lines()]) + "\n")
                sys.stdout.flush()
    finally:
        stop_signals().uninstall()
        if hasattr(config, "workerinput"):
            # An xdist worker's process ends after this, and the controller waits for it: its
            # last garbage collections would walk every object of the run for nothing.
            gc.freeze()


def ticket_of(item: pytest.Item) -> str:
    """The ticket a criterion belongs to: its ``ticket`` marker, else its module's name."""
    mark = item.get_closest_marker("ticket")
    if mark is not None and mark.args:
        return str(mark.args[0])
    return module_ticket_id(item.path.name) or "unknown"


def _title(item: pytest.Item) -> str:
    doc = getattr(getattr(item, "function", None), "__doc__", None) or ""
    first = doc.strip().splitlines()[0].strip() if doc.strip() else item.name
    params = getattr(item, "callspec", None)
    return f"{first} [{params.id}]" if params is not None else first
