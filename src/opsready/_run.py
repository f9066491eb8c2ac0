"""The state of one verification run on the controller: the validated options, what each
criterion concluded, and the files written at the end."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import opsready
from opsready import _clock
from opsready._errors import OpsreadyError
from opsready._options import ExitCode, RunOptions
from opsready._progress import Heartbeat
from opsready.catalogue import module_ticket_id
from opsready.evidence import redactor
from opsready.report import files, html, junit
from opsready.report import history as history_file
from opsready.report.carry_forward import EarlierPasses
from opsready.report.charts import baseline_series
from opsready.report.evidence_files import bound_evidence
from opsready.report.model import (
    CriterionResult,
    Hashes,
    Readiness,
    Run,
    Scope,
    SkippedCriterion,
    build_readiness,
)
from opsready.report.signing import sign_manifest

__all__ = ["MODULE_ERROR_PREFIX", "Recorder", "RunState"]

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

    @property
    def out_dir(self) -> Path:
        return self.options.out_dir

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

    def finish(self, exitstatus: int) -> ExitCode:
        opts = self.options
        finished = _clock.now()
        history = self.out_dir.parent / "history.jsonl"
        previous, previous_id = files.previous_run(history, opts.env.name)
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
            carry=EarlierPasses(history, opts.env.name, opts.today, freshness, self.out_dir),
            attestations=opts.attestations,
        )
        # Everything a target sent back passed redaction already; this is the last net.
        self.readiness = Readiness.model_validate(redactor.value(readiness.model_dump(mode="json", by_alias=True)))
        # Each evidence item is bounded; the whole of a larger one becomes a file of the bundle.
        self.readiness = bound_evidence(self.readiness, self.out_dir, opts.env.evidence_item_max_bytes)
        files.write_json(self.out_dir, self.readiness)
        junit.write_junit(self.out_dir, self.readiness)
        self._write_metrics()
        if self.module_errors or exitstatus == ExitCode.USAGE:
            self.exit_code = ExitCode.USAGE
        elif exitstatus == ExitCode.INTERRUPTED:
            # Errors during collection (a check module that does not import) also land here.
            self.exit_code = ExitCode.INTERRUPTED
        elif not self.readiness.gate.passed or (opts.fail_on_regression and self.readiness.diff.regressed):
            self.exit_code = ExitCode.FAILED
        else:
            self.exit_code = ExitCode.OK
        return self.exit_code

    def _write_metrics(self) -> None:
        assert self.readiness is not None
        from opsready.report import metrics

        (self.out_dir / "readiness.prom").write_text(metrics.render_prom(self.readiness), encoding="utf-8")

    def console_lines(self) -> list[str]:
        assert self.readiness is not None
        lines = files.console_table(self.readiness)
        if self.options.fail_on_regression and self.readiness.diff.regressed:
            lines.append("--fail-on-regression: exit 1")
        lines.extend(f"collection rule broken: {e}" for e in self.module_errors)
        lines.append(f"report: {self.out_dir / 'index.html'}")
        return lines

    def publish(self) -> None:
        """After every other plugin wrote its files: the readiness section in index.html, the
        manifest, history, ``latest`` and the optional push. Runs once."""
        if self.readiness is None or self.published:
            return
        self.published = True
        index = self.out_dir / "index.html"
        reports_root = self.out_dir.parent
        if index.is_file():
            charts = baseline_series(history_file.entries(reports_root / "history.jsonl"), self.readiness,
                                     self.options.env)
            html.inject(index, html.render_section(self.readiness, charts))
        from opsready.report import manifest, metrics

        manifest.write_manifest(self.out_dir)
        if self.options.signing_key is not None:
            sign_manifest(self.out_dir, self.options.signing_key)
        files.append_history(reports_root / "history.jsonl", self.readiness, self.out_dir)
        files.update_latest(reports_root, self.out_dir)
        if self.options.pushgateway:
            try:
                metrics.push(self.options.pushgateway, metrics.render_prom(self.readiness),
                             instance=self.options.env.name)
            except OpsreadyError as exc:
                sys.stderr.write(f"opsready: pushing metrics failed: {exc}\n")


class Recorder:
    """Registered on the controller: receives every report, from workers too."""

    def __init__(self, state: RunState, heartbeat: Heartbeat | None = None) -> None:
        self.state = state
        self.heartbeat = heartbeat

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
        if report.failed and MODULE_ERROR_PREFIX in str(report.longrepr):
            line = next((ln for ln in str(report.longrepr).splitlines() if MODULE_ERROR_PREFIX in ln), "")
            self.state.module_errors.append(line.split(MODULE_ERROR_PREFIX, 1)[1].strip())

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        payload = getattr(report, "opsready", None)
        if isinstance(payload, dict):
            self.state.add(report.nodeid, report.when, payload, report.duration)
