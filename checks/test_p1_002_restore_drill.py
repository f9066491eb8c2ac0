"""P1-002: the latest backup is fresh, whole and a real dump; a restore drill brings it back
within the RTO. (That drills happen monthly is judged in test_p1_002_drill_schedule.py.)

The drill is intrusive (``restore_drill``): it writes only to a scratch database of its own,
which it drops afterwards, even on Ctrl-C.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import pytest

import opsready

if TYPE_CHECKING:
    from opsready.evidence import Evidence
    from opsready.probes.postgres import DrillResult, ScratchServer
    from opsready.probes.s3 import BackupObject, BackupStore, LatestBackups

pytestmark = [pytest.mark.ticket("P1-002")]


class Drill(NamedTuple):
    result: DrillResult
    backup: BackupObject
    rpo_hours: float


@pytest.fixture(scope="module")
def latest(backups: BackupStore) -> LatestBackups:
    return backups.latest()


@pytest.fixture(scope="module")
def drill(backups: BackupStore, scratch_server: ScratchServer,
          latest: LatestBackups) -> Drill | None:
    """One drill for the module's drill criteria: restore the newest backup, then drop it."""
    newest = latest.newest
    if newest is None:
        return None
    rpo = newest.age_hours()
    result = scratch_server.restore_drill(lambda: backups.open(newest), newest.size,
                                          key=newest.key)
    return Drill(result, newest, rpo)


def _newest(latest: LatestBackups, backups: BackupStore) -> BackupObject:
    __tracebackhide__ = True
    assert latest.newest is not None, (
        f"{backups.where} at {backups.endpoint}: no backup found; expected nightly dumps "
        f"under the prefix; check that the backup job runs and writes to backups.s3.prefix"
    )
    return latest.newest


def _drilled(drill: Drill | None, backups: BackupStore) -> Drill:
    __tracebackhide__ = True
    assert drill is not None, (
        f"restore drill: {backups.where} at {backups.endpoint} holds no backup to restore; "
        f"expected nightly dumps under the prefix; check that the backup job runs"
    )
    return drill


def test_latest_backup_within_rpo(latest: LatestBackups, backups: BackupStore,
                                  evidence: Evidence) -> None:
    """The latest backup is younger than the RPO"""
    newest = _newest(latest, backups)
    age = newest.age_hours()
    evidence.record("latest_backup", newest.describe())
    evidence.record("rpo_hours", round(age, 3))
    assert age <= backups.cfg.rpo_hours, (
        f"s3://{backups.bucket}/{newest.key}: the newest backup is {age:.1f} h old, expected "
        f"under the RPO of {backups.cfg.rpo_hours:g} h; check the nightly backup job's last runs"
    )


def test_latest_backup_not_empty(latest: LatestBackups, backups: BackupStore,
                                 evidence: Evidence) -> None:
    """The latest backup is larger than the minimum size"""
    newest = _newest(latest, backups)
    evidence.record("size_bytes", newest.size)
    assert newest.size > backups.cfg.min_size_bytes, (
        f"s3://{backups.bucket}/{newest.key}: {newest.size} bytes, expected more than "
        f"{backups.cfg.min_size_bytes} (backups.min_size_bytes); check the backup job's log"
    )


def test_latest_backup_not_shrunk(latest: LatestBackups, backups: BackupStore,
                                  evidence: Evidence) -> None:
    """The latest backup has not shrunk suspiciously against the one before it"""
    newest = _newest(latest, backups)
    previous = latest.previous
    if previous is None:
        opsready.not_covered(f"{backups.where}: only one backup, nothing to compare it with")
    floor = previous.size * (1 - backups.cfg.max_shrink_fraction)
    evidence.record("sizes", {"newest": newest.describe(), "previous": previous.describe()})
    assert newest.size >= floor, (
        f"s3://{backups.bucket}/{newest.key}: {newest.size} bytes, down from {previous.size} "
        f"in {previous.key}; expected at most a {backups.cfg.max_shrink_fraction:.0%} drop "
        f"(backups.max_shrink_fraction); check whether tables went missing from the dump"
    )


def test_latest_backup_matches_sidecar(latest: LatestBackups, backups: BackupStore,
                                       evidence: Evidence) -> None:
    """The latest backup matches its sha256 sidecar"""
    newest = _newest(latest, backups)
    sidecar = newest.key + backups.cfg.sidecar_suffix
    expected = backups.sidecar_digest(newest)
    assert expected is not None, (
        f"s3://{backups.bucket}/{sidecar}: no sidecar next to the newest backup; expected the "
        f"backup job to write its sha256 there"
    )
    actual = backups.sha256(newest)
    evidence.record("sha256", {"key": newest.key, "sidecar": expected, "computed": actual})
    assert actual == expected, (
        f"s3://{backups.bucket}/{newest.key}: content sha256 is {actual}, the sidecar says "
        f"{expected}; the backup is corrupt or was overwritten: take a fresh backup"
    )


def test_latest_backup_is_valid_dump(latest: LatestBackups, backups: BackupStore,
                                     evidence: Evidence) -> None:
    """The latest backup is a valid dump (PGDMP custom format, or gzip'd SQL)"""
    newest = _newest(latest, backups)
    kind = backups.dump_format(newest)
    evidence.record("dump_format", kind)
    assert kind in ("custom", "gzip"), (
        f"s3://{backups.bucket}/{newest.key}: the header reads as {kind!r}, expected a "
        f"custom-format dump (PGDMP) or gzip'd SQL; run pg_dump -Fc or pg_dump | gzip"
    )


@pytest.mark.intrusive("restore_drill")
def test_restore_drill_restores(drill: Drill | None, scratch_server: ScratchServer,
                                backups: BackupStore, evidence: Evidence) -> None:
    """A drill restores the latest backup into a scratch database with the expected tables and rows"""
    drill = _drilled(drill, backups)
    result = drill.result
    cfg = scratch_server.cfg
    evidence.record("drill", result.summary())
    evidence.record("rows", result.tables)
    evidence.attach("drill-report.md", result.report_markdown(
        rto_target_s=cfg.rto_target_s, rpo_hours=drill.rpo_hours,
        scratch=scratch_server.scratch.shown), "text/markdown")
    assert result.dropped, (
        f"scratch database {result.database} on {scratch_server.scratch.shown} was not dropped; "
        f"drop it by hand"
    )
    assert result.verified, (
        f"restore of {drill.backup.key} into {result.database} on "
        f"{scratch_server.scratch.shown}: {'; '.join(result.problems)}; expected a clean restore "
        f"with restore_drill.expected_tables and their rows; see drill-report.md"
    )


@pytest.mark.intrusive("restore_drill")
def test_restore_drill_within_rto(drill: Drill | None, scratch_server: ScratchServer,
                                  backups: BackupStore, evidence: Evidence) -> None:
    """The measured RTO (download to verified restore) is within the target"""
    drill = _drilled(drill, backups)
    result, target = drill.result, scratch_server.cfg.rto_target_s
    evidence.record("rpo_hours", round(drill.rpo_hours, 3))
    evidence.record("phases_s", {k: round(v, 3) for k, v in result.phases.items()})
    if result.rto_seconds is not None:
        evidence.measure("rto_seconds", round(result.rto_seconds, 3), "s")
    assert result.rto_seconds is not None, (
        f"restore of {drill.backup.key}: no verified restore to time "
        f"({'; '.join(result.problems) or 'the restore did not finish'})"
    )
    assert result.verified, (
        f"restore of {drill.backup.key} took {result.rto_seconds:.1f} s but did not verify "
        f"({'; '.join(result.problems)}), so it does not count as a recovery"
    )
    assert result.rto_seconds <= target, (
        f"restore of {drill.backup.key} ({result.size_bytes} bytes) took "
        f"{result.rto_seconds:.1f} s from download to verified restore, expected at most "
        f"{target:g} s (restore_drill.rto_target_s); see the phases to find the slow step"
    )
