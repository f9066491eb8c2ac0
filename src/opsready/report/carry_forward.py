"""Carry-forward: an earlier pass standing in for a criterion this run did not look at.

Intrusive probes (a restore drill, a rollback drill, a rate-limit burst) run in a maintenance
window, weekly or monthly; the nightly run is read-only. When a criterion is not covered
because its intrusive probe is not allowed in this run, its newest pass in an earlier run of
the same environment stands in for it, as long as that pass is younger than the probe's
freshness window (``freshness_days`` in the environment). The earlier runs come from
``reports/history.jsonl``; the pass itself comes from that run's ``readiness.json``, and only
from a bundle that ``verify-bundle`` finds intact. Only a pass judged in that run counts: a
pass that was itself carried forward is never carried again, so the age is always the age
of a real observation.

Hashes prove only that a bundle is whole: anyone who can write the reports directory can
write a bundle with a pass and hash it. Where runs are signed (``OPSREADY_SIGNING_KEY``), a
pass is carried only from a bundle whose manifest this run's own key signed.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from opsready.report import history as history_file
from opsready.report.manifest import verify_bundle
from opsready.report.model import CarriedForward, CriterionResult, Readiness
from opsready.report.signing import check_signature, fingerprint

__all__ = ["EarlierPasses"]


@dataclass
class _EarlierRun:
    run_id: str
    report_dir: Path
    started_at: dt.datetime
    loaded: bool = False
    readiness: Readiness | None = None
    problem: str | None = None


class EarlierPasses:
    """Finds the pass that may stand in for a not-covered criterion (``CarryLookup``)."""

    def __init__(self, history: Path, environment: str, today: dt.date,
                 freshness_days: Mapping[str, float], out_dir: Path,
                 signed_by: Ed25519PublicKey | None = None) -> None:
        self.environment = environment
        self.signed_by = signed_by
        self.today = today
        self.freshness_days = dict(freshness_days)
        self.out_dir = out_dir
        self.runs = _runs(history, environment, today)

    def __call__(self, result: CriterionResult) -> CarriedForward | str | None:
        probe = result.intrusive or ""
        window = self.freshness_days.get(probe, 0.0)
        if window <= 0:
            return f"carry-forward is off for {probe} (freshness_days.{probe} is 0)"
        refused: list[str] = []
        for run in self.runs:
            age = (self.today - run.started_at.date()).days
            if age > window:
                break
            readiness = self._load(run)
            if readiness is None:
                refused.append(f"run {run.run_id} is not used: {run.problem}")
                continue
            passed = next((c for t in readiness.tickets for c in t.criteria
                           if c.id == result.id and c.outcome == "pass" and c.carried_forward is None), None)
            if passed is None:
                continue
            return CarriedForward(
                run_id=run.run_id, passed_at=run.started_at, age_days=age, window_days=window,
                probe=probe, report=_link(run.report_dir, self.out_dir), not_run_because=result.message,
            )
        none_found = f"no intact earlier pass within the {window:g}-day window (freshness_days.{probe})"
        return "; ".join([none_found, *refused])

    def _load(self, run: _EarlierRun) -> Readiness | None:
        if run.loaded:
            return run.readiness
        run.loaded = True
        if not run.report_dir.is_dir():
            run.problem = f"its report directory {run.report_dir} is gone"
            return None
        check = verify_bundle(run.report_dir)
        if not check.ok:
            run.problem = f"its bundle fails verify-bundle ({'; '.join(check.describe())})"
            return None
        if self.signed_by is not None:
            signature = check_signature(run.report_dir, self.signed_by)
            if not signature.ok:
                run.problem = (f"this run signs with key {fingerprint(self.signed_by)} and that bundle's "
                               f"signature does not hold ({signature.problem})")
                return None
        try:
            readiness = Readiness.model_validate_json((run.report_dir / "readiness.json").read_bytes())
        except (OSError, ValidationError) as exc:
            run.problem = f"its readiness.json cannot be read as opsready.readiness/v1 ({type(exc).__name__})"
            return None
        if readiness.run.environment != self.environment:
            run.problem = f"its readiness.json is of environment '{readiness.run.environment}'"
            return None
        run.readiness = readiness
        return readiness


def _runs(history: Path, environment: str, today: dt.date) -> list[_EarlierRun]:
    """The earlier runs of ``environment``, newest first; runs dated after ``today`` are left
    out (they cannot be younger than the day that judges them)."""
    runs: list[_EarlierRun] = []
    # Across rotated segments of the history too.
    for entry in history_file.entries(history, environment):
        try:
            started = dt.datetime.fromisoformat(str(entry["started_at"]))
            run_id, report_dir = str(entry["run_id"]), Path(str(entry["report_dir"]))
        except (ValueError, KeyError, TypeError):
            continue  # a torn or foreign line must not stop the run
        if not report_dir.is_dir():
            report_dir = history.parent / run_id
        if started.date() <= today:
            runs.append(_EarlierRun(run_id, report_dir, started))
    # Newest first: the file's later lines first among runs of the same day.
    runs.reverse()
    runs.sort(key=lambda r: r.started_at.date(), reverse=True)
    return runs


def _link(report_dir: Path, out_dir: Path) -> str:
    target = report_dir / "index.html"
    try:
        return Path(os.path.relpath(target, out_dir)).as_posix()
    except ValueError:  # another drive on Windows
        return target.as_posix()
