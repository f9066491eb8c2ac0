"""The state of one verification run on the controller: what was configured, what each
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
from opsready._errors import ConfigError, OpsreadyError
from opsready._progress import Heartbeat
from opsready.catalogue import Catalogue, load_catalogue, module_ticket_id
from opsready.config import INTRUSIVE_PROBES, Environment, load_environment, secret_values
from opsready.evidence import redactor
from opsready.report import files, html
from opsready.report.model import CriterionResult, build_readiness
from opsready.waivers import WaiverSet, load_waivers

__all__ = ["MODULE_ERROR_PREFIX", "Recorder", "RunState", "find_root"]

MODULE_ERROR_PREFIX = "opsready collection rule:"

EXIT_GATE_PASSED = 0
EXIT_GATE_FAILED = 1
EXIT_INTERRUPTED = 2
EXIT_USAGE = 4


def find_root(start: Path) -> Path:
    """The nearest directory at or above ``start`` holding ``config/tickets.yaml``; else the
    project this package was installed from (an editable install), else ``start``."""
    for candidate in (start.resolve(), *start.resolve().parents):
        if (candidate / "config" / "tickets.yaml").is_file():
            return candidate
    source_root = Path(__file__).resolve().parents[2]
    if (source_root / "config" / "tickets.yaml").is_file():
        return source_root
    return start.resolve()


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


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


def parse_gate(value: str, source: str) -> list[str]:
    if value.strip().lower() in ("none", ""):
        return []
    items = [p.strip().upper() for p in value.split(",") if p.strip()]
    bad = [p for p in items if p not in ("P0", "P1", "P2", "P3")]
    if bad:
        raise ConfigError(source, "gate", f"value {value!r} is invalid",
                          "use priorities such as P0,P1, or 'none'")
    return items


@dataclass
class RunState:
    env: Environment
    root: Path
    catalogue: Catalogue
    catalogue_path: Path
    waivers: WaiverSet
    waivers_path: Path | None
    out_dir: Path
    gate: list[str]
    selected: list[str] | None
    allow_intrusive: list[str]
    check_paths: list[Path]
    fail_on_regression: bool = False
    pushgateway: str | None = None
    started_at: dt.datetime = field(default_factory=utc_now)
    results: dict[str, CriterionResult] = field(default_factory=dict)
    module_errors: list[str] = field(default_factory=list)
    readiness: dict[str, Any] | None = None
    exit_code: int = 0
    published: bool = False

    @classmethod
    def from_options(cls, config: pytest.Config) -> RunState:
        opt = config.getoption
        root = Path(opt("opsready_root")) if opt("opsready_root") else find_root(Path.cwd())
        env = load_environment(str(opt("opsready_env")), root)
        redactor.add(secret_values(env))
        cat_path = Path(opt("opsready_catalogue")) if opt("opsready_catalogue") else root / "config" / "tickets.yaml"
        catalogue = load_catalogue(cat_path)
        w_path = Path(opt("opsready_waivers")) if opt("opsready_waivers") else root / "config" / "waivers.yaml"
        waivers = load_waivers(w_path, catalogue.ids, utc_now().date())
        gate: list[str] = parse_gate(opt("opsready_gate"), "--gate") if opt("opsready_gate") else list(env.gate)
        selected = [t.upper() for t in opt("opsready_tickets")] or None
        for t in selected or []:
            if t not in catalogue.ids:
                raise ConfigError("--ticket", t, "is not a catalogued ticket",
                                  f"use one of {', '.join(catalogue.ids)}")
        intrusive = opt("opsready_intrusive")
        if intrusive is None:
            allowed = list(env.allow_intrusive)
        else:
            allowed = [n for n in intrusive if n.lower() != "none"]
            for name in allowed:
                if name not in INTRUSIVE_PROBES:
                    raise ConfigError("--allow-intrusive", name, "is not an intrusive probe",
                                      f"use one of {', '.join(sorted(INTRUSIVE_PROBES))}, or none")
        started = utc_now()
        if opt("opsready_out"):
            out = Path(opt("opsready_out"))
        else:
            safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", env.name) or "env"
            out = root / "reports" / f"{started.strftime('%Y%m%dT%H%M%SZ')}-{safe}"
        paths = [Path(a.split("::")[0]) for a in config.args] or [root / "checks"]
        return cls(
            env=env, root=root, catalogue=catalogue, catalogue_path=cat_path, waivers=waivers,
            waivers_path=w_path if w_path.is_file() else None, out_dir=out.resolve(), gate=gate,
            selected=selected, allow_intrusive=allowed, check_paths=paths,
            fail_on_regression=bool(opt("opsready_fail_on_regression")),
            pushgateway=opt("opsready_pushgateway"), started_at=started,
        )

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
        outcome, message = str(payload["outcome"]), str(payload["message"])
        if when == "setup" or when == "call":
            current.outcome, current.message = outcome, message
            current.skip_kind = payload.get("skip_kind")
            current.judgeable_from = payload.get("judgeable_from")
        elif when == "teardown" and outcome == "error" and current.outcome in ("pass", "skip"):
            current.outcome, current.message = "error", message

    # -- the end of the run ---------------------------------------------------------------

    def modules(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for p in self.check_paths:
            candidates = sorted(p.glob("test_*.py")) if p.is_dir() else [p]
            for f in candidates:
                tid = module_ticket_id(f.name)
                if tid:
                    found.setdefault(tid, []).append(f.name)
        return found

    def finish(self, exitstatus: int) -> int:
        finished = utc_now()
        history = self.out_dir.parent / "history.jsonl"
        previous, previous_id = files.previous_run(history, self.env.name)
        results = list(self.results.values())
        skipped = [{"criterion": r.id, "kind": r.skip_kind, "reason": r.message}
                   for r in results if r.outcome == "skip"]
        configured = [n for n in type(self.env).model_fields if isinstance(getattr(self.env, n), BaseModel)]
        run = {
            "id": self.out_dir.name,
            "environment": self.env.name,
            "env_file": self.env.source,
            "started_at": self.started_at.isoformat(timespec="seconds"),
            "finished_at": finished.isoformat(timespec="seconds"),
            "duration_s": round((finished - self.started_at).total_seconds(), 3),
            "suite_version": opsready.__version__,
            "git_sha": _git_sha(self.root),
            "python": sys.version.split()[0],
            "interrupted": exitstatus == EXIT_INTERRUPTED and not self.module_errors,
            "hashes": {
                "config": _sha256(Path(self.env.source)),
                "catalogue": _sha256(self.catalogue_path),
                "waivers": _sha256(self.waivers_path),
            },
        }
        self.readiness = build_readiness(
            catalogue=self.catalogue, results=results, waivers=self.waivers, run=run,
            gate=self.gate, previous=previous, previous_run=previous_id, selected=self.selected,
            scope={
                "configured": configured,
                "allow_intrusive": self.allow_intrusive,
                "selected": self.selected,
                "checks": [str(p) for p in self.check_paths],
                "skipped": skipped,
                "module_errors": self.module_errors,
            },
            today=finished.date(), modules=self.modules(),
        )
        self.readiness = redactor.value(self.readiness)
        assert self.readiness is not None
        files.write_json(self.out_dir, self.readiness)
        self._write_metrics()
        if self.module_errors or exitstatus == EXIT_USAGE:
            self.exit_code = EXIT_USAGE
        elif exitstatus == EXIT_INTERRUPTED:
            # Errors during collection (a check module that does not import) also land here.
            self.exit_code = EXIT_INTERRUPTED
        elif not self.readiness["gate"]["passed"] or (self.fail_on_regression and self.readiness["diff"]["regressed"]):
            self.exit_code = EXIT_GATE_FAILED
        else:
            self.exit_code = EXIT_GATE_PASSED
        return self.exit_code

    def _write_metrics(self) -> None:
        assert self.readiness is not None
        from opsready.report import metrics

        (self.out_dir / "readiness.prom").write_text(metrics.render_prom(self.readiness), encoding="utf-8")

    def console_lines(self) -> list[str]:
        assert self.readiness is not None
        lines = files.console_table(self.readiness)
        if self.fail_on_regression and self.readiness["diff"]["regressed"]:
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
        if index.is_file():
            html.inject(index, html.render_section(self.readiness))
        from opsready.report import manifest, metrics

        manifest.write_manifest(self.out_dir)
        reports_root = self.out_dir.parent
        files.append_history(reports_root / "history.jsonl", self.readiness, self.out_dir.name, self.out_dir)
        files.update_latest(reports_root, self.out_dir)
        if self.pushgateway:
            try:
                metrics.push(self.pushgateway, metrics.render_prom(self.readiness), instance=self.env.name)
            except OpsreadyError as exc:
                sys.stderr.write(f"opsready: pushing metrics failed: {exc}\n")


class Recorder:
    """Registered on the controller: receives every report, from workers too."""

    def __init__(self, state: RunState, heartbeat: Heartbeat | None = None) -> None:
        self.state = state
        self.heartbeat = heartbeat

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

