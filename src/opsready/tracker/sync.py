"""``opsready sync``: make the tracker show the statuses of one verified run.

It reads a finished run's bundle (the newest run of the environment in
``reports/history.jsonl``, or ``--report DIR``), refuses a bundle that fails
``verify-bundle``, and never runs a probe. It writes only when the environment lists
``tracker_sync`` under ``allow_writes``; ``--dry-run`` reads the tracker and prints every
change it would make, and writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from pydantic import ValidationError

from opsready._errors import ConfigError
from opsready._options import ExitCode
from opsready.catalogue import Catalogue, load_catalogue
from opsready.config import Environment, load_environment, secret_values
from opsready.evidence import redactor
from opsready.report.manifest import MANIFEST_NAME, verify_bundle
from opsready.report.model import Readiness
from opsready.tracker.base import Tracker
from opsready.tracker.issue_text import RunFacts
from opsready.tracker.plan import ChangeResult, TicketPlan, apply_plans, plan_tickets

__all__ = ["Bundle", "BundleRefused", "load_bundle", "newest_report", "run_sync"]

WRITE_NAME = "tracker_sync"


class BundleRefused(Exception):
    """The report directory cannot be trusted or read; ``str()`` says why and what to do."""


@dataclass(frozen=True)
class Bundle:
    dir: Path
    readiness: Readiness
    files: int
    manifest_sha256: str


def newest_report(reports_root: Path, environment: str) -> Path | None:
    """The report directory of the newest run of ``environment`` in ``history.jsonl``."""
    history = reports_root / "history.jsonl"
    if not history.is_file():
        return None
    newest: Path | None = None
    with history.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                entry = json.loads(line)
                if not isinstance(entry, dict) or entry.get("environment") != environment:
                    continue
                report_dir, run_id = Path(str(entry["report_dir"])), str(entry["run_id"])
            except (ValueError, KeyError):
                continue  # a torn line of an interrupted run
            # A history moved with its reports keeps working: runs sit next to it by id.
            newest = report_dir if report_dir.is_dir() else reports_root / run_id
    return newest


def load_bundle(report_dir: Path, environment: str) -> Bundle:
    """The readiness model of an intact bundle of ``environment``; raises ``BundleRefused``."""
    shown = str(report_dir)
    if not report_dir.is_dir():
        raise BundleRefused(f"{shown} is not a report directory; pass --report DIR of a finished run")
    resolved = report_dir.resolve()
    check = verify_bundle(resolved)
    if not check.ok:
        raise BundleRefused(
            f"{shown} fails verify-bundle ({'; '.join(check.describe())}); sync reads only an intact "
            f"bundle, so this run's verdicts cannot be trusted: run `opsready verify` again")
    try:
        readiness = Readiness.model_validate_json((resolved / "readiness.json").read_bytes())
    except (OSError, ValidationError) as exc:
        raise BundleRefused(f"{shown}/readiness.json cannot be read as opsready.readiness/v1 "
                            f"({type(exc).__name__})") from None
    if readiness.run.environment != environment:
        raise BundleRefused(f"{shown} is a run of environment '{readiness.run.environment}', not "
                            f"'{environment}'; pass the matching --env")
    if readiness.run.interrupted:
        raise BundleRefused(f"{shown} is the report of an interrupted run; sync only a finished run")
    digest = hashlib.sha256((resolved / MANIFEST_NAME).read_bytes()).hexdigest()
    return Bundle(dir=resolved, readiness=readiness, files=check.files, manifest_sha256=digest)


def _tracker_for(kind: str, env: Environment, dry_run: bool) -> Tracker:
    source = env.source or env.name
    tracker_cfg = env.tracker.github if env.tracker is not None else None
    if tracker_cfg is None:
        raise ConfigError(source, f"tracker.{kind}", "is not configured",
                          f"add a `tracker: {kind}:` section with repo and token (see docs/tracker-sync.md)")
    token = tracker_cfg.token.get_secret_value() if tracker_cfg.token is not None else ""
    if not token and not dry_run:
        raise ConfigError(source, f"tracker.{kind}.token", "is empty",
                          "set it to a fine-grained token with the permission Issues: read and write "
                          "on the tracker repository")
    from opsready.tracker.github import GithubTracker

    return GithubTracker(tracker_cfg, timeout=env.timeout_s)


def run_sync(
    *,
    env_name: str,
    root: Path,
    tracker_kind: str,
    report: Path | None,
    dry_run: bool,
    out: TextIO | None = None,
    tracker_factory: Callable[[str, Environment, bool], Tracker] = _tracker_for,
) -> ExitCode:
    """The whole command. Config problems raise ``ConfigError`` (exit 4) before anything is
    read from the tracker."""
    stream = out if out is not None else sys.stdout

    def say(line: str = "") -> None:
        print(redactor.text(line), file=stream, flush=True)

    env = load_environment(env_name, root)
    redactor.add(secret_values(env))
    source = env.source or env.name
    allowed = WRITE_NAME in env.allow_writes
    if not allowed and not dry_run:
        raise ConfigError(source, "allow_writes", f"does not list {WRITE_NAME}",
                          f"add `allow_writes: [{WRITE_NAME}]` to let opsready sync write to the tracker, "
                          f"or pass --dry-run to see what it would change")
    catalogue = load_catalogue(root / "config" / "tickets.yaml")
    report_dir = report if report is not None else newest_report(root / "reports", env.name)
    if report_dir is None:
        raise ConfigError(str(root / "reports" / "history.jsonl"), "",
                          f"has no run of environment '{env.name}'",
                          f"run `opsready verify --env {env_name}` first, or pass --report DIR")
    # Built before the bundle is read, so a config error comes first; it connects on first use.
    tracker = tracker_factory(tracker_kind, env, dry_run)
    try:
        try:
            bundle = load_bundle(report_dir, env.name)
        except BundleRefused as exc:
            say(f"opsready sync: refused: {exc}")
            return ExitCode.FAILED
        return _sync(bundle, catalogue, tracker, env, dry_run, allowed, say)
    finally:
        tracker.close()


def _sync(bundle: Bundle, catalogue: Catalogue, tracker: Tracker, env: Environment, dry_run: bool,
          allowed: bool, say: Callable[[str], None]) -> ExitCode:
    run = bundle.readiness.run
    report_url = None
    if env.tracker is not None and env.tracker.report_url:
        report_url = env.tracker.report_url.format(run_id=run.id, environment=run.environment)
    facts = RunFacts(run=run, manifest_sha256=bundle.manifest_sha256, report_url=report_url)
    say(f"opsready sync: run {run.id} of environment {run.environment}")
    say(f"  bundle {_shown(bundle.dir)}: intact ({bundle.files} files), sha256 of {MANIFEST_NAME} "
        f"{bundle.manifest_sha256[:16]}…")
    say(f"  tracker: {tracker.name} {tracker.location}")
    if dry_run:
        say("  dry run: the tracker is read, nothing is written"
            + ("" if allowed else f" (a real sync would refuse: allow_writes does not list {WRITE_NAME})"))
    say("")

    plans = plan_tickets(bundle.readiness, catalogue, tracker, facts)
    # Not part of the interface: a tracker may have a word about its credentials (GitHub: a
    # classic token, whose scopes reach far beyond issues).
    note = getattr(tracker, "token_note", None)
    if isinstance(note, str):
        say(f"note: {note}")
    for plan in plans:
        for line in plan.notes:
            say(f"note: {plan.ticket}: {line}")
    width = max([len(p.key) for p in plans] + [3])

    def row(ticket: str, key: str, text: str) -> str:
        return f"{ticket:<7} {key:<{width}}  {text}"

    changes = sum(len(p.changes) for p in plans)
    blocking = [p for p in plans if p.left_alone and p.blocking]
    if dry_run:
        for plan in plans:
            _show_plan(plan, row, say)
        say("")
        touched = sum(1 for p in plans if p.changes)
        say(f"dry run: {_count(changes, 'change')} to {_count(touched, 'issue')} planned, none written"
            + ("; run without --dry-run to apply them" if changes else "; the tracker already shows this run"))
        return ExitCode.FAILED if blocking else ExitCode.OK

    def show_unchanged(plan: TicketPlan) -> None:
        if not plan.changes:
            _show_plan(plan, row, say)

    def show(result: ChangeResult) -> None:
        mark = {"applied": "applied", "failed": "FAILED", "not attempted": "not applied"}[result.state]
        say(row(result.change.ticket, result.issue, f"{mark}: {result.change.summary}"))

    results = apply_plans(plans, tracker, on_result=show, on_plan=show_unchanged)
    applied = [r for r in results if r.state == "applied"]
    missed = [r for r in results if r.state != "applied"]
    say("")
    if not missed and not blocking:
        if applied:
            say(f"synced: {_count(len(applied), 'change')} applied; the tracker shows run {run.id}")
        else:
            say(f"nothing to change: the tracker already shows run {run.id}")
        return ExitCode.OK
    say(f"not finished: {len(applied)} of {len(results)} changes applied, {len(missed)} not applied"
        + (f", {len(blocking)} tickets left alone" if blocking else ""))
    if applied:
        say("applied:")
        for r in applied:
            say(f"  {r.change.ticket} {r.issue}: {r.change.summary}")
    if missed or blocking:
        say("not applied:")
        for r in missed:
            say(f"  {r.change.ticket} {r.issue}: {r.change.summary} ({r.state}: {r.error})")
        for p in blocking:
            say(f"  {p.ticket}: {p.left_alone}")
    say("run the same command again to finish: it plans from what the tracker shows then, so it "
        "applies only what is still missing")
    return ExitCode.FAILED


def _show_plan(plan: TicketPlan, row: Callable[[str, str, str], str], say: Callable[[str], None]) -> None:
    if plan.left_alone:
        say(row(plan.ticket, plan.key if plan.issue else "-", f"left alone: {plan.left_alone}"))
    elif not plan.changes:
        say(row(plan.ticket, plan.key, "up to date"))
    for change in plan.changes:
        say(row(plan.ticket, plan.key, change.summary))


def _shown(path: Path) -> str:
    """A path relative to the current directory when it is below it."""
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
