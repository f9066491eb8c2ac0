"""P3-003: the backup bucket keeps backups safely for the long term, and they accumulate daily."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from opsready.evidence import Evidence
    from opsready.probes.s3 import BackupStore

pytestmark = [pytest.mark.ticket("P3-003")]


def test_versioning_enabled(backups: BackupStore, evidence: Evidence) -> None:
    """Versioning is Enabled on the backup bucket"""
    status = backups.versioning_status()
    evidence.record("versioning", status)
    assert status == "Enabled", (
        f"s3://{backups.bucket}: versioning is {status or 'not set'}, expected Enabled so an "
        f"overwritten or deleted backup can be recovered; run put-bucket-versioning Enabled"
    )


def test_lifecycle_keeps_backups(backups: BackupStore, evidence: Evidence) -> None:
    """An enabled lifecycle rule on the backup prefix keeps backups for the retention or moves them to cold storage"""
    rules = backups.lifecycle_rules()
    retention, prefix = backups.cfg.retention_days, backups.prefix
    evidence.record("lifecycle_rules", None if rules is None else [r.describe() for r in rules])
    assert rules is not None, (
        f"s3://{backups.bucket}: no lifecycle configuration, expected a rule on {prefix!r} that "
        f"keeps backups {retention} days or moves them to cold storage; add one"
    )
    covering = [r for r in rules if r.enabled and r.covers(prefix)]
    assert covering, (
        f"s3://{backups.bucket}: none of the rules {[r.id for r in rules]} is enabled and covers "
        f"{prefix!r}; add (or enable) a rule whose filter prefix covers the backups"
    )
    early = [r.id for r in covering if r.expires_before(retention)]
    assert not early, (
        f"s3://{backups.bucket}: rule(s) {early} delete backups under {prefix!r} before "
        f"{retention} days (backups.retention_days); raise their expiration"
    )
    assert any(r.keeps(retention) for r in covering), (
        f"s3://{backups.bucket}: rule(s) {[r.id for r in covering]} on {prefix!r} neither "
        f"expire after {retention}+ days nor move backups to cold storage; add a GLACIER or "
        f"DEEP_ARCHIVE transition, or an expiration of at least {retention} days"
    )


def test_default_encryption(backups: BackupStore, evidence: Evidence) -> None:
    """Default encryption is set on the backup bucket"""
    algorithms = backups.default_encryption()
    evidence.record("default_encryption", algorithms)
    assert algorithms, (
        f"s3://{backups.bucket}: no default server-side encryption, expected AES256 or aws:kms; "
        f"run put-bucket-encryption"
    )


def test_public_access_blocked(backups: BackupStore, evidence: Evidence) -> None:
    """All four public-access-block flags are on"""
    flags = backups.public_access_block()
    evidence.record("public_access_block", flags)
    assert flags is not None, (
        f"s3://{backups.bucket}: no public access block, expected all four flags true; "
        f"run put-public-access-block"
    )
    off = [name for name, on in flags.items() if not on]
    assert not off, (
        f"s3://{backups.bucket}: public access block has {off} off, expected all four true; "
        f"turn them on"
    )


def test_daily_backups_accumulate(backups: BackupStore, evidence: Evidence) -> None:
    """Daily backups accumulate: nearly every day of the window has one"""
    window, needed = backups.cfg.daily_window_days, backups.cfg.daily_min_days
    coverage = backups.daily_coverage(window)
    evidence.record("daily_coverage", {
        "window_days": window, "required_days": needed,
        "days_with_backup": coverage.days_with_backup, "missing_days": coverage.missing_days,
        "oldest_backup_age_days": None if coverage.oldest_age_days is None
        else round(coverage.oldest_age_days, 2),
    })
    assert coverage.oldest_age_days is not None, (
        f"{backups.where}: no backups at all; expected one per day; check the backup job"
    )
    if coverage.oldest_age_days < window:
        evidence.record("note", (
            f"the oldest backup is {coverage.oldest_age_days:.1f} days old, younger than the "
            f"{window}-day window: coverage is judged once the history is {window} days old"
        ))
        return
    assert coverage.days_with_backup >= needed, (
        f"{backups.where}: {coverage.days_with_backup} of the last {window} days have a backup, "
        f"expected at least {needed} (backups.daily_min_days); missing: "
        f"{', '.join(coverage.missing_days)}; check the backup job's failed runs"
    )
