"""P1-002: the latest backup is fresh, whole and a real dump; a restore drill brings it back
within the RTO. (That drills happen monthly is judged in test_p1_002_drill_schedule.py.)

What each criterion can tell, and what it cannot:

- Which objects are backups is ``backups.key_pattern``: logs, manifests, sidecars and other
  databases' dumps under the same prefix never count. Without a pattern the backup criteria
  are not covered. A bucket that does not exist is a fail; a refused read is unverified.
- The sidecar and the validity criteria share one full read of the newest backup. The sidecar
  must hold a sha256 (``sha256sum``, BSD tag or ``openssl dgst`` format) and, where it names
  a file, name this one; a digest of standard input (``-``, ``stdin``) names no file and counts
  when it is the only line. The digest comparison is the test; the name only tells a sidecar
  of another file apart. Validity is judged inside the dump: the archive header and a full read by
  ``pg_restore`` (custom, tar, directory), or the plain script's header, its
  ``dump complete`` trailer, no psql meta-command, and a gzip stream that reaches its end.
  pg_dump's own ``\\restrict`` pair and the one reconnect of a ``--create`` script to the
  database it creates are pg_dump's, not meta-commands of the backup's; the drill leaves that
  prologue out and restores into its scratch database.
  It cannot tell whether the data is the right data: the drill does that. A dump compressed
  with zstd or lz4 (pg_dump -Z on PostgreSQL 16+, or a pipe through the tool) is named by its
  frame magic and left unverified, for both validity and the drill: only gzip is unwrapped
  here. Its sidecar is still compared.
- The drill (intrusive: ``restore_drill``) first proves, by asking both servers for their
  ``system_identifier``, that the scratch target is not the source (nor, unless
  ``restore_drill.allow_source_cluster``, on the source's own cluster), and refuses a role that
  could run programs on the scratch host. It restores into its own database (pg_restore, or
  psql with ``ON_ERROR_STOP`` and only ``restore_drill.tolerated_errors`` tolerated), then
  checks the expected tables (a quoted mixed-case name as SQL reads it): ``min_rows``
  exactly, no empty table unless allowed, and neither more nor fewer rows than the live source
  by more than it may have moved since the backup (``restore_drill.row_growth_per_day``, both
  ways: sources lose rows too). A source count that row-level security filters for the
  counting role is not compared, and the evidence names the table. Without
  ``source_dsn`` or ``expected_tables`` it is not covered. Missing or too old client tools make
  it unverified, not open: the backup is not to blame.
- In one process the drill starts with the run, in the background, while the read-only
  criteria run alongside it (it writes only to its own database); its evidence says so
  (``measured_alongside_other_criteria``), since the RTO was then measured on a shared
  machine and network. The rollback drill and the rate-limit burst may run meanwhile: they
  touch neither the backups nor the scratch server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import pytest

import opsready

if TYPE_CHECKING:
    from opsready.config import Environment
    from opsready.evidence import Evidence
    from opsready.probes.postgres import DrillResult, ScratchServer
    from opsready.probes.s3 import BackupObject, BackupStore, DumpInspection, LatestBackups

pytestmark = [pytest.mark.ticket("P1-002")]


class Drill(NamedTuple):
    result: DrillResult
    backup: BackupObject
    rpo_hours: float


@pytest.fixture(scope="module")
def latest(backups: BackupStore) -> LatestBackups | None:
    """The newest backups, or ``None`` when the bucket does not exist."""
    if backups.pattern is None:
        opsready.not_covered("not configured: backups.key_pattern (which objects under the "
                             "prefix are backups)")
    if not backups.bucket_exists():
        return None
    return backups.latest()


@pytest.fixture(scope="module")
def inspection(backups: BackupStore, latest: LatestBackups | None,
               opsready_env: Environment) -> DumpInspection | None:
    """One full read of the newest backup, shared by the sidecar and validity criteria."""
    if latest is None or latest.newest is None:
        return None
    drill = opsready_env.restore_drill
    return backups.inspect(latest.newest, drill.pg_restore if drill else "pg_restore")


@pytest.fixture(scope="module")
def drill(backups: BackupStore, scratch_server: ScratchServer,
          latest: LatestBackups | None) -> Drill | None:
    """One drill for the module's drill criteria: restore the newest backup, then drop it."""
    cfg = scratch_server.cfg
    if cfg.source_dsn is None:
        opsready.not_covered("not configured: restore_drill.source_dsn (the drill must ask the "
                             "source who it is before it writes anything)")
    if not cfg.expected_tables:
        opsready.not_covered("not configured: restore_drill.expected_tables")
    if latest is None or latest.newest is None:
        return None
    newest = latest.newest
    rpo = newest.age_hours()
    result = scratch_server.restore_drill(backups.source(newest), backup_age_hours=rpo)
    return Drill(result, newest, rpo)


def _newest(latest: LatestBackups | None, backups: BackupStore) -> BackupObject:
    __tracebackhide__ = True
    assert latest is not None, (
        f"s3://{backups.bucket} at {backups.endpoint}: the bucket does not exist; expected the "
        f"backup bucket; check backups.s3.bucket and that the backup job can write to it"
    )
    assert latest.newest is not None, (
        f"{backups.where} at {backups.endpoint}: no backup matching backups.key_pattern "
        f"{backups.cfg.key_pattern!r}; expected nightly dumps; check that the backup job runs "
        f"and writes to that prefix and pattern"
    )
    return latest.newest


def _drilled(drill: Drill | None, latest: LatestBackups | None, backups: BackupStore) -> Drill:
    __tracebackhide__ = True
    _newest(latest, backups)
    assert drill is not None
    return drill


def test_latest_backup_within_rpo(latest: LatestBackups | None, backups: BackupStore,
                                  evidence: Evidence) -> None:
    """The latest backup is younger than the RPO"""
    newest = _newest(latest, backups)
    assert latest is not None
    age = newest.age_hours()
    evidence.record("latest_backup", newest.describe())
    evidence.record("listing", {"pattern": backups.cfg.key_pattern,
                                "listed_since": None if latest.listed_since is None
                                else latest.listed_since.isoformat(),
                                "requests": latest.requests})
    evidence.record("rpo_hours", round(age, 3))
    evidence.measure("backup_age_hours", round(age, 3), "h")
    assert age <= backups.cfg.rpo_hours, (
        f"s3://{backups.bucket}/{newest.key}: the newest backup is {age:.1f} h old, expected "
        f"under the RPO of {backups.cfg.rpo_hours:g} h; check the nightly backup job's last runs"
    )


def test_latest_backup_not_empty(latest: LatestBackups | None, backups: BackupStore,
                                 evidence: Evidence) -> None:
    """The latest backup is larger than the minimum size"""
    newest = _newest(latest, backups)
    evidence.record("size_bytes", newest.size)
    assert newest.size > backups.cfg.min_size_bytes, (
        f"s3://{backups.bucket}/{newest.key}: {newest.size} bytes, expected more than "
        f"{backups.cfg.min_size_bytes} (backups.min_size_bytes); check the backup job's log"
    )


def test_latest_backup_not_shrunk(latest: LatestBackups | None, backups: BackupStore,
                                  evidence: Evidence) -> None:
    """The latest backup has not shrunk suspiciously against the one before it"""
    newest = _newest(latest, backups)
    assert latest is not None
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


def test_latest_backup_matches_sidecar(latest: LatestBackups | None, backups: BackupStore,
                                       inspection: DumpInspection | None,
                                       evidence: Evidence) -> None:
    """The latest backup matches its sha256 sidecar"""
    newest = _newest(latest, backups)
    assert inspection is not None
    sidecar = backups.sidecar(newest)
    where = f"s3://{backups.bucket}/{sidecar.key}"
    evidence.record("sidecar", {"key": sidecar.key, "found": sidecar.found,
                                "names": sidecar.names, "excerpt": sidecar.excerpt})
    assert sidecar.found, (
        f"{where}: no sidecar next to the newest backup; expected the backup job to write its "
        f"sha256 there (sha256sum format)"
    )
    assert sidecar.entries, (
        f"{where}: the sidecar holds no sha256 digest (it reads {sidecar.excerpt!r}); expected "
        f"`<64 hex>  <file name>` as sha256sum writes it (or openssl dgst -sha256)"
    )
    files = inspection.file_digests or {newest.name: inspection.sha256 or ""}
    checked = {}
    for name, actual in files.items():
        entry = sidecar.for_name(name)
        assert entry is not None, (
            f"{where}: the sidecar names {sidecar.names or 'no file'}, not {name}; expected a "
            f"line for {name}: the sidecar may belong to another file"
        )
        checked[name] = {"sidecar": entry.digest, "computed": actual}
        assert actual == entry.digest, (
            f"s3://{backups.bucket}/{newest.key}: {name} has sha256 {actual}, the sidecar says "
            f"{entry.digest}; the backup is corrupt or was overwritten: take a fresh backup"
        )
    evidence.record("sha256", checked)


def test_latest_backup_is_valid_dump(latest: LatestBackups | None, backups: BackupStore,
                                     inspection: DumpInspection | None,
                                     evidence: Evidence) -> None:
    """The latest backup is a whole, valid dump in an accepted format, judged inside it"""
    newest = _newest(latest, backups)
    assert inspection is not None
    evidence.record("dump", inspection.describe())
    if inspection.tool_error is not None:
        raise inspection.tool_error
    where = f"s3://{backups.bucket}/{newest.key}"
    accepted = backups.cfg.accepted_formats
    assert inspection.hostile is None, (
        f"{where}: {inspection.hostile}; a backup must be plain SQL for psql, nothing more: "
        f"treat the backup's origin as compromised and take a fresh backup"
    )
    assert inspection.format != "unknown" or inspection.problems, f"{where}: unknown format"
    assert not inspection.problems, (
        f"{where} ({inspection.format}{' gzip' if inspection.compressed else ''}): "
        f"{'; '.join(inspection.problems)}; expected a whole dump as pg_dump writes it; check "
        f"the backup job's log and take a fresh backup"
    )
    assert inspection.format in accepted, (
        f"{where}: a {inspection.format}-format dump, expected one of {accepted} "
        f"(backups.accepted_formats); change the backup job's pg_dump --format or the setting"
    )


@pytest.mark.intrusive("restore_drill")
def test_restore_drill_restores(drill: Drill | None, latest: LatestBackups | None,
                                scratch_server: ScratchServer, backups: BackupStore,
                                evidence: Evidence) -> None:
    """A drill restores the latest backup into a scratch database with the expected tables and rows"""
    drill = _drilled(drill, latest, backups)
    result = drill.result
    cfg = scratch_server.cfg
    evidence.record("drill", result.summary())
    evidence.record("rows", result.tables)
    evidence.attach("drill-report.md", result.report_markdown(
        rto_target_s=cfg.rto_target_s, rpo_hours=drill.rpo_hours,
        scratch=scratch_server.scratch), "text/markdown")
    assert result.dropped or result.refused, (
        f"scratch database {result.database} on {scratch_server.scratch} was not dropped; "
        f"drop it by hand"
    )
    assert result.refused is None, (
        f"{result.refused}; a backup must hold only SQL: treat its origin as compromised"
    )
    assert result.verified, (
        f"restore of {drill.backup.key} into {result.database} on "
        f"{scratch_server.scratch}: {'; '.join(result.problems)}; expected a clean restore "
        f"with restore_drill.expected_tables and their rows; see drill-report.md"
    )


@pytest.mark.intrusive("restore_drill")
def test_restore_drill_within_rto(drill: Drill | None, latest: LatestBackups | None,
                                  scratch_server: ScratchServer, backups: BackupStore,
                                  evidence: Evidence) -> None:
    """The measured RTO (download to verified restore) is within the target"""
    drill = _drilled(drill, latest, backups)
    result, target = drill.result, scratch_server.cfg.rto_target_s
    evidence.record("rpo_hours", round(drill.rpo_hours, 3))
    evidence.record("phases_s", {k: round(v, 3) for k, v in result.phases.items()})
    evidence.record("measured_alongside_other_criteria", result.alongside)
    if result.rto_seconds is not None:
        evidence.measure("rto_seconds", round(result.rto_seconds, 3), "s")
    assert result.rto_seconds is not None, (
        f"restore of {drill.backup.key}: no verified restore to time "
        f"({result.refused or '; '.join(result.problems) or 'the restore did not finish'})"
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
