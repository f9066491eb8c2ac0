"""The state of one verification run on the controller: the validated options, what each
criterion concluded, and the files written at the end.

A criterion counts as judged only once its call (or a setup that did not pass) reported: one
that was collected but never finished (the run was interrupted, a worker died) is listed as
*not run*, a not-covered skip, so its ticket is never done. Every writer runs on its own: when
one fails the others still write, the bundle says which failed (``incomplete.txt``), and the
run exits 4 unless the gate failed anyway.
"""

from __future__ import annotations

import ast
import datetime as dt
import hashlib
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import opsready
from opsready import _clock
from opsready._errors import OpsreadyError
from opsready._interrupt import stop_signals
from opsready._options import ExitCode, RunOptions
from opsready._progress import Heartbeat
from opsready.catalogue import module_ticket_id
from opsready.evidence import redactor
from opsready.report import files
from opsready.report import history as history_file
from opsready.report.model import (
    NOT_RUN,
    CriterionResult,
    Hashes,
    Readiness,
    Run,
    Scope,
    SkippedCriterion,
    build_readiness,
)

__all__ = ["MODULE_ERROR_PREFIX", "NOT_RUN", "Recorder", "RunState"]

MODULE_ERROR_PREFIX = "opsready collection rule:"


def _sha256(path: Path | None) -> str | None:
    if path is None or not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _git_sha(root: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", sha) else None


@dataclass
class RunState:
    options: RunOptions
    results: dict[str, CriterionResult] = field(default_factory=dict)
    module_errors: list[str] = field(default_factory=list)
    readiness: Readiness | None = None
    exit_code: ExitCode = ExitCode.OK
    published: bool = False
    # Every selected criterion (nodeid -> ticket, title), and those that reported an end.
    collected: dict[str, tuple[str, str]] = field(default_factory=dict)
    completed: set[str] = field(default_factory=set)
    # "<file>: <why>" for each report file that could not be written.
    write_failures: list[str] = field(default_factory=list)
    # ``--plan``: the rendered plan, printed at the end instead of a report.
    plan_text: list[str] | None = None
    # Why the run ended early when no signal or deadline ended it (pytest's internal error,
    # a crashed xdist worker).
    stopped_by: str | None = None
    # Whether the readiness table reached the console (pytest skips its summary after an
    # internal error).
    summary_shown: bool = False

    @property
    def out_dir(self) -> Path:
        return self.options.out_dir

    @property
    def history(self) -> Path:
        return self.options.reports_root / "history.jsonl"

    def expect(self, nodeid: str, ticket: str, title: str) -> None:
        """A criterion selected to run (its title from its docstring)."""
        self.collected.setdefault(nodeid, (ticket, title))

    # -- collecting outcomes ------------------------------------------------------------

    def add(self, nodeid: str, when: str, payload: dict[str, Any], duration: float) -> None:
        ticket = str(payload["ticket"])
        name = nodeid.split("::", 1)[1] if "::" in nodeid else nodeid
        current = self.results.get(nodeid)
        if current is None:
            current = CriterionResult(id=f"{ticket}::{name}", ticket=ticket, title=str(payload["title"]),
                                      outcome="pass", nodeid=nodeid)
            self.results[nodeid] = current
        current.duration_s += float(duration)
        if payload["evidence"]:
            current.evidence = list(payload["evidence"])
        if payload.get("intrusive"):
            current.intrusive = str(payload["intrusive"])
        outcome, message = payload["outcome"], str(payload["message"])
        if when == "call" or (when == "setup" and outcome != "pass"):
            self.completed.add(nodeid)
        if when in ("setup", "call"):
            current.outcome, current.message = outcome, message
            current.skip_kind = payload.get("skip_kind")
            judgeable = payload.get("judgeable_from")
            current.judgeable_from = dt.date.fromisoformat(judgeable) if judgeable else None
            current.intrusive_denied = bool(payload.get("intrusive_denied"))
        elif when == "teardown" and outcome == "error" and current.outcome in ("pass", "skip"):
            current.outcome, current.message = "error", message

    # -- the end of the run ---------------------------------------------------------------

    def modules(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for p in self.options.check_paths:
            candidates = sorted(p.glob("test_*.py")) if p.is_dir() else [p]
            for f in candidates:
                tid = module_ticket_id(f.name)
                if tid:
                    found.setdefault(tid, []).append(f.name)
        return found

    def _not_run(self, interrupted: bool) -> None:
        """Criteria collected but never finished become not-covered skips saying so."""
        why = stop_signals().reason or self.stopped_by or (
            "the run was interrupted" if interrupted else "its worker stopped")
        message = f"{NOT_RUN}: {why} before this criterion finished"
        for nodeid, (ticket, title) in self.collected.items():
            if nodeid not in self.results:
                name = nodeid.split("::", 1)[1] if "::" in nodeid else nodeid
                self.results[nodeid] = CriterionResult(id=f"{ticket}::{name}", ticket=ticket, title=title,
                                                       outcome="skip", nodeid=nodeid)
        for nodeid, result in self.results.items():
            if nodeid not in self.completed:
                result.outcome, result.message = "skip", message
                result.skip_kind, result.judgeable_from = "not_covered", None
                result.intrusive_denied = False

    def finish(self, exitstatus: int) -> ExitCode:
        # The writers are imported here: an xdist worker never writes the report.
        from opsready.report import junit
        from opsready.report.carry_forward import EarlierPasses

        opts = self.options
        signals = stop_signals()
        signals.writing_report()
        if signals.stopped:
            exitstatus = ExitCode.INTERRUPTED
        elif exitstatus == pytest.ExitCode.INTERNAL_ERROR:
            # pytest or a plugin failed mid-run: what did not finish is not run, and the run
            # ends as an interrupted one, never as a passed gate.
            self.stopped_by = "an internal error (the INTERNALERROR lines above)"
            exitstatus = ExitCode.INTERRUPTED
        elif self.stopped_by is not None:
            exitstatus = ExitCode.INTERRUPTED  # a worker crashed
        finished = _clock.now()
        history = self.history
        previous, previous_id = files.previous_run(history, opts.env.name)
        self._not_run(exitstatus == ExitCode.INTERRUPTED)
        results = list(self.results.values())
        freshness = opts.env.freshness_days.model_dump()
        run = Run(
            id=self.out_dir.name,
            environment=opts.env.name,
            env_file=opts.env.source,
            started_at=opts.started_at,
            finished_at=finished,
            duration_s=round((finished - opts.started_at).total_seconds(), 3),
            today=opts.today,
            clock_moved_to=opts.clock_moved_to,
            suite_version=opsready.__version__,
            git_sha=_git_sha(opts.root),
            python=sys.version.split()[0],
            interrupted=exitstatus == ExitCode.INTERRUPTED and not self.module_errors,
            hashes=Hashes(config=_sha256(Path(opts.env.source)), catalogue=_sha256(opts.catalogue_path),
                          waivers=_sha256(opts.waivers_path), attestations=_sha256(opts.attestations_path)),
            signing_key=opts.signing_key.fingerprint if opts.signing_key is not None else None,
        )
        scope = Scope(
            configured=[n for n in type(opts.env).model_fields if isinstance(getattr(opts.env, n), BaseModel)
                        and n != "freshness_days"],
            allow_intrusive=list(opts.allow_intrusive),
            freshness_days=freshness,
            selected=list(opts.selected) if opts.selected is not None else None,
            checks=[str(p) for p in opts.check_paths],
            skipped=[SkippedCriterion(criterion=r.id, kind=r.skip_kind or "not_covered", reason=r.message)
                     for r in results if r.outcome == "skip"],
            module_errors=self.module_errors,
        )
        readiness = build_readiness(
            catalogue=opts.catalogue, results=results, waivers=opts.waivers, run=run,
            gate=list(opts.gate), previous=previous, previous_run=previous_id,
            selected=list(opts.selected) if opts.selected is not None else None, scope=scope,
            modules=self.modules(),
            carry=EarlierPasses(history, opts.env.name, opts.today, freshness, self.out_dir,
                                signed_by=opts.signing_key.public if opts.signing_key is not None else None),
            attestations=opts.attestations,
        )
        # Everything a target sent back passed redaction already; this is the last net.
        self.readiness = Readiness.model_validate(redactor.value(readiness.model_dump(mode="json", by_alias=True)))
        # Each evidence item is bounded; the whole of a larger one becomes a file of the bundle.
        self._write("evidence/", self._bound_evidence)
        self._write("readiness.json", lambda: files.write_json(self.out_dir, self.readiness_model))
        self._write("junit.xml", lambda: junit.write_junit(self.out_dir, self.readiness_model))
        self._write("readiness.prom", self._write_metrics)
        self.exit_code = self._exit_code(exitstatus)
        return self.exit_code

    def _bound_evidence(self) -> None:
        from opsready.report.evidence_files import bound_evidence

        self.readiness = bound_evidence(self.readiness_model, self.out_dir,
                                        self.options.env.evidence_item_max_bytes)

    @property
    def readiness_model(self) -> Readiness:
        assert self.readiness is not None
        return self.readiness

    def _write(self, name: str, writer: Callable[[], object]) -> None:
        """Run one writer; a failure is recorded and the others still write."""
        try:
            writer()
        except Exception as exc:  # any writer's failure, so that the others still run
            detail = redactor.excerpt(f"{type(exc).__name__}: {exc}", 300)
            self.write_failures.append(f"{name}: {detail}")

    def _exit_code(self, exitstatus: int) -> ExitCode:
        assert self.readiness is not None
        if self.module_errors or exitstatus == ExitCode.USAGE:
            return ExitCode.USAGE
        if exitstatus == ExitCode.INTERRUPTED:
            return ExitCode.INTERRUPTED
        if not self.readiness.gate.passed or (self.options.fail_on_regression and self.readiness.diff.regressed):
            return ExitCode.FAILED
        if self.write_failures:
            # The gate passed, but the bundle that proves it is incomplete.
            return ExitCode.USAGE
        return ExitCode.OK

    def _write_incomplete(self) -> None:
        lines = ["This report is incomplete: these files could not be written.", *self.write_failures]
        (self.out_dir / "incomplete.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")

    def _write_metrics(self) -> None:
        assert self.readiness is not None
        from opsready.report import metrics

        (self.out_dir / "readiness.prom").write_text(metrics.render_prom(self.readiness), encoding="utf-8")

    def console_lines(self) -> list[str]:
        assert self.readiness is not None
        lines = files.console_table(self.readiness)
        if self.options.fail_on_regression and self.readiness.diff.regressed:
            lines.append("--fail-on-regression: exit 1")
        lines.extend(f"check module not used: {e}" for e in self.module_errors)
        if self.readiness.run.interrupted:
            why = stop_signals().reason or self.stopped_by or "the run did not finish"
            lines.append(f"interrupted: {why}; criteria that "
                         f"did not finish are listed as not run")
        lines.extend(f"report file not written: {f}" for f in self.write_failures)
        lines.append(f"report: {_shown(self.out_dir / 'index.html')}")
        return lines

    def publish(self, session: pytest.Session | None = None) -> None:
        """After every other plugin wrote its files: the readiness section in index.html, the
        manifest, history, ``latest`` and the optional push. Runs once.

        A file that cannot be written is named on stderr and in ``incomplete.txt``, and a run
        whose gate passed then exits 4: a bundle with a missing part never reads as complete."""
        if self.readiness is None or self.published:
            return
        from opsready.report import html, manifest, metrics
        from opsready.report.charts import baseline_series
        from opsready.report.signing import sign_manifest

        self.published = True
        readiness = self.readiness
        before = len(self.write_failures)
        index = self.out_dir / "index.html"
        if index.is_file():
            history = self.history
            self._write("index.html", lambda: html.inject(index, html.render_section(
                readiness, baseline_series(history_file.entries(history), readiness, self.options.env))))
        if self.write_failures:
            self._write("incomplete.txt", self._write_incomplete)
        files.release_report_dir(self.out_dir)
        self._write(manifest.MANIFEST_NAME, lambda: manifest.write_manifest(self.out_dir))
        key = self.options.signing_key
        if key is not None:
            self._write(f"{manifest.MANIFEST_NAME}.sig", lambda: sign_manifest(self.out_dir, key))
        if self.options.writes_history:
            root = self.options.reports_root
            self._write("history.jsonl", lambda: files.append_history(self.history, readiness, self.out_dir))
            self._write("latest", lambda: files.update_latest(root, self.out_dir))
        for failure in self.write_failures[before:]:
            sys.stderr.write(f"opsready: report file not written: {failure}\n")
        if self.write_failures and session is not None and session.exitstatus == ExitCode.OK:
            session.exitstatus = ExitCode.USAGE
        if self.options.pushgateway:
            try:
                metrics.push(self.options.pushgateway, metrics.render_prom(self.readiness),
                             instance=self.options.env.name)
            except OpsreadyError as exc:
                sys.stderr.write(f"opsready: pushing metrics failed: {exc}\n")


class Recorder:
    """Registered on the controller: receives every report, from workers too."""

    def __init__(self, state: RunState, heartbeat: Heartbeat | None = None, rootpath: Path | None = None) -> None:
        self.state = state
        self.heartbeat = heartbeat
        self.rootpath = rootpath or Path.cwd()

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """xdist: the controller does not collect; what each worker will run is ``ids``."""
        for nodeid in ids:
            path = self.rootpath / nodeid.split("::", 1)[0]
            self.state.expect(nodeid, module_ticket_id(path.name) or "unknown", _title_from_source(path, nodeid))

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        """xdist: a worker that ended with an error crashed; it is not replaced (a criterion
        that crashed it, perhaps an intrusive probe, must not run again), so the run cannot
        finish."""
        if error:
            name = getattr(getattr(node, "gateway", None), "id", "?")
            self.state.stopped_by = f"worker {name} crashed ({redactor.excerpt(str(error), 120)})"

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """xdist: each worker rebuilds the controller's options, with the controller's clock."""
        node.workerinput["opsready"] = self.state.options.wire()

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        if self.heartbeat is not None:
            self.heartbeat.started(nodeid)

    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        if self.heartbeat is not None:
            self.heartbeat.finished(nodeid)

    def pytest_sessionstart(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.start()

    def pytest_sessionfinish(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if not report.failed:
            return
        text = str(report.longrepr)
        if MODULE_ERROR_PREFIX in text:
            line = next((ln for ln in text.splitlines() if MODULE_ERROR_PREFIX in ln), "")
            self.state.module_errors.append(line.split(MODULE_ERROR_PREFIX, 1)[1].strip())
            return
        # A check module that does not import (a syntax error, a missing name): the other
        # modules still run (--continue-on-collection-errors), its ticket is unverified.
        errors = [ln.strip()[1:].strip() for ln in text.splitlines() if ln.strip().startswith("E ")]
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        why = errors[-1] if errors else (lines[-1] if lines else "no detail")
        where = report.nodeid or str(report.fspath)
        self.state.module_errors.append(
            f"{where}: could not be collected ({redactor.excerpt(why, 200)}); none of its criteria ran")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        payload = getattr(report, "opsready", None)
        if isinstance(payload, dict):
            self.state.add(report.nodeid, report.when, payload, report.duration)


_TITLES: dict[Path, dict[str, str]] = {}


def _title_from_source(path: Path, nodeid: str) -> str:
    """The first docstring line of the test function named by ``nodeid``, read from the source
    (the controller of an xdist run never imports the check modules)."""
    if path not in _TITLES:
        titles: dict[str, str] = {}
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            tree = None
        for node in ast.walk(tree) if tree is not None else ():
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                doc = (ast.get_docstring(node) or "").strip()
                titles[node.name] = doc.splitlines()[0].strip() if doc else node.name
        _TITLES[path] = titles
    name = nodeid.rsplit("::", 1)[-1]
    base, bracket, params = name.partition("[")
    title = _TITLES[path].get(base, base)
    return f"{title} [{params.rstrip(']')}]" if bracket else title


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies under it, else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
