"""P3-003: the backup bucket keeps backups safely for the long term, and they accumulate daily.

What each criterion can tell, and what it cannot:

- Retention follows S3's lifecycle rules as S3 applies them, to each object on its own: every
  Enabled rule whose filter (prefix, tags, object size, or an ``And`` of them) matches any
  object of the newest or the previous backup counts (each file of a directory dump with its
  own size), and the shortest expiration among them is the effective retention. So a rule
  for the daily tier of tagged GFS backups counts on the day the newest is a monthly one,
  and a "small objects" rule that would delete a directory dump's ``toc.dat`` counts. A rule
  filtered on a tag or size no object of these two backups carries does not count. It
  cannot tell: tiers that neither of the two newest backups carries (a yearly tag, say), and
  a directory dump's files tagged unlike its ``toc.dat`` (whose tags stand for the files).
  No expiring rule at all keeps backups until someone deletes them, which is a legitimate
  way to keep them; so is an Object Lock default retention of at least ``retention_days``.
  Noncurrent-version expiration is recorded.
- S3 Object Lock that the store does not implement (Cloudflare R2 answers ``NotImplemented``)
  counts as no lock: the lifecycle rules alone are judged.
- Public access needs all four bucket-level public-access-block flags. A store without the
  API (MinIO, R2 answer ``NotImplemented``) leaves the criterion not covered, naming the
  store's own control to check. Account-level Block Public Access (``s3control``) is not
  read: a bucket protected only at the account level is reported open; set the bucket-level
  block too (S3 applies the most restrictive of the two, so this costs nothing).
- Encryption is judged against ``backups.required_encryption`` (AES256 accepts any
  server-side encryption, aws:kms requires KMS, a key id requires that key). S3 encrypts new
  objects by default, so without a requirement the algorithm is recorded and the criterion is
  not covered.
- Accumulation counts the nights of the window whose backup is missing from the gaps between
  backups (a gap of about ``n`` days misses ``n - 1`` nights; after the newest, every whole
  day since misses one), so a nightly job whose start drifts by an hour or so is never a day
  short, and a second backup the same night does not stand in for another night. It needs a
  history as long as its window: younger, it is not covered until the day it can be judged.
  The retention criterion compares the oldest backup's age with the retention the rules
  claim, as far as the history reaches: the history starts at ``backups.history_start``, or
  at the oldest trace of a backup in the version listing (noncurrent versions, delete
  markers), or at the oldest backup itself, whichever is earlier.
  Backups deleted without a trace before ``history_start`` is set cannot be seen.
- A bucket that does not exist is a fail; a refused read is unverified.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import pytest

import opsready

if TYPE_CHECKING:
    from opsready.evidence import Evidence
    from opsready.probes.s3 import (
        BackupObject,
        BackupStore,
        LatestBackups,
        LifecycleRule,
        ObjectLock,
    )

pytestmark = [pytest.mark.ticket("P3-003")]


def _bucket(backups: BackupStore) -> None:
    __tracebackhide__ = True
    assert backups.bucket_exists(), (
        f"s3://{backups.bucket} at {backups.endpoint}: the bucket does not exist; expected the "
        f"backup bucket; check backups.s3.bucket"
    )


def _newest(backups: BackupStore) -> BackupObject:
    __tracebackhide__ = True
    _bucket(backups)
    if backups.pattern is None:
        opsready.not_covered("not configured: backups.key_pattern (which objects under the "
                             "prefix are backups)")
    newest = backups.latest().newest
    assert newest is not None, (
        f"{backups.where}: no backup matching {backups.cfg.key_pattern!r}; expected nightly "
        f"dumps; check the backup job"
    )
    return newest


class _Retention:
    """What the rules and Object Lock say about how long the backups are kept: every rule
    is judged against each object of the newest and the previous backup, with its own size
    and tags, as S3 applies a rule to each object on its own."""

    def __init__(self, backups: BackupStore, latest: LatestBackups) -> None:
        self.rules: list[LifecycleRule] | None = backups.lifecycle_rules()
        judged = [b for b in (latest.newest, latest.previous) if b is not None]
        by_tag = any(r.tags for r in self.rules or [])
        self.tags = {b.key: backups.object_tags(b) if by_tag else {} for b in judged}
        # Rule id -> the backup objects it acts on.
        self.matched: dict[str, list[str]] = {}
        for rule in self.rules or []:
            keys = [key for b in judged for key, size in b.objects()
                    if rule.applies_to(key, size, self.tags[b.key])]
            if keys:
                self.matched[rule.id] = keys
        self.applying = [r for r in self.rules or [] if r.id in self.matched]
        self.expiring = [r for r in self.applying if r.expires]
        self.by_date = [r for r in self.expiring if r.expiration_date is not None]
        days = [r.expiration_days for r in self.expiring if r.expiration_days is not None]
        self.days: int | None = min(days) if days else None
        self.lock: ObjectLock | None = backups.object_lock()

    @property
    def lock_days(self) -> int | None:
        return self.lock.days if self.lock is not None and self.lock.enabled else None

    def claimed(self, required: int) -> int | None:
        """The days the bucket claims to keep backups; ``None`` for forever."""
        if self.lock_days is not None and self.lock_days >= required:
            return self.lock_days if self.days is None else max(self.days, self.lock_days)
        return self.days

    def describe(self) -> dict[str, object]:
        return {
            "rules": None if self.rules is None else [
                {**r.describe(), "applies_to_backups": r in self.applying} for r in self.rules],
            "judged_backups": {key: {"tags": tags} for key, tags in self.tags.items()},
            "matched_objects": {rule: keys[:5] + ([f"... {len(keys) - 5} more"]
                                                  if len(keys) > 5 else [])
                                for rule, keys in self.matched.items()},
            "effective_retention_days": self.days,
            "expires_on_date": [r.expiration_date for r in self.by_date],
            "noncurrent_version_expiration_days": {
                r.id: r.noncurrent_days for r in self.applying if r.noncurrent_days is not None},
            "object_lock": None if self.lock is None else {
                "enabled": self.lock.enabled, "mode": self.lock.mode, "days": self.lock.days},
        }


def test_versioning_enabled(backups: BackupStore, evidence: Evidence) -> None:
    """Versioning is Enabled on the backup bucket"""
    _bucket(backups)
    status = backups.versioning_status()
    evidence.record("versioning", status)
    assert status == "Enabled", (
        f"s3://{backups.bucket}: versioning is {status or 'not set'}, expected Enabled so an "
        f"overwritten or deleted backup can be recovered; run put-bucket-versioning Enabled"
    )


def test_lifecycle_keeps_backups(backups: BackupStore, evidence: Evidence) -> None:
    """Backups are kept at least the retention: no lifecycle rule that applies expires them sooner"""
    _newest(backups)
    required = backups.cfg.retention_days
    retention = _Retention(backups, backups.latest())
    evidence.record("retention", retention.describe())
    lock = retention.lock_days
    if lock is not None and lock >= required:
        return  # every version is locked at least that long, whatever the rules expire
    early = [r.id for r in retention.by_date] + [
        r.id for r in retention.expiring
        if r.expiration_days is not None and r.expiration_days < required]
    held = f"; Object Lock holds versions only {lock} days" if lock else ""
    hit = sorted({key for rule in early for key in retention.matched[rule][:2]})
    assert not early, (
        f"s3://{backups.bucket}: lifecycle rule(s) {early} apply to backup objects {hit} "
        f"(prefix, tags and each object's size match) and expire them after "
        f"{retention.days} days or on a fixed date, expected at least {required} days "
        f"(backups.retention_days){held}; raise the expiration, or narrow the rule's filter "
        f"so it matches no object of any backup"
    )


def test_default_encryption(backups: BackupStore, evidence: Evidence) -> None:
    """Default encryption on the backup bucket is at least the required algorithm"""
    _bucket(backups)
    rules = backups.default_encryption()
    required = backups.cfg.required_encryption
    evidence.record("default_encryption", None if rules is None else [
        {"algorithm": r.algorithm, "kms_key_id": r.kms_key_id} for r in rules])
    evidence.record("required", required)
    if required is None:
        opsready.not_covered("not configured: backups.required_encryption (S3 encrypts new "
                             "objects by default, so the algorithm is recorded, not judged)")
    assert rules, (
        f"s3://{backups.bucket}: no default server-side encryption, expected {required} "
        f"(backups.required_encryption); run put-bucket-encryption"
    )
    found = [f"{r.algorithm}" + (f" ({r.kms_key_id})" if r.kms_key_id else "") for r in rules]
    assert any(_satisfies(r.algorithm, r.kms_key_id, required) for r in rules), (
        f"s3://{backups.bucket}: default encryption is {found}, expected {required} "
        f"(backups.required_encryption); run put-bucket-encryption with it"
    )


def _satisfies(algorithm: str, key_id: str | None, required: str) -> bool:
    if required == "AES256":
        return True  # any server-side encryption is at least SSE-S3
    if required in ("aws:kms", "aws:kms:dsse"):
        return algorithm.startswith(required)
    if not algorithm.startswith("aws:kms") or not key_id:
        return False
    # A key id, alias or ARN: the same key may be named either way.
    return key_id == required or key_id.endswith(("/" + required, ":" + required)) \
        or required.endswith(("/" + key_id, ":" + key_id))


def test_public_access_blocked(backups: BackupStore, evidence: Evidence) -> None:
    """All four public-access-block flags are on"""
    _bucket(backups)
    block = backups.public_access_block()
    evidence.record("public_access_block", None if block is None else
                    block.flags if block.implemented else "not implemented by the store")
    if block is not None and not block.implemented:
        opsready.not_covered(
            f"s3://{backups.bucket} at {backups.endpoint}: the store does not implement "
            f"GetPublicAccessBlock (it answered NotImplemented, as MinIO and Cloudflare R2 do), "
            f"so there are no flags to judge; check the store's own control instead: no "
            f"anonymous bucket policy (MinIO: mc anonymous get) and no public bucket URL "
            f"(R2: r2.dev access and custom domains off)")
    assert block is not None, (
        f"s3://{backups.bucket}: no public access block, expected all four flags true; "
        f"run put-public-access-block"
    )
    off = [name for name, on in block.flags.items() if not on]
    assert not off, (
        f"s3://{backups.bucket}: public access block has {off} off, expected all four true; "
        f"turn them on"
    )


def test_daily_backups_accumulate(backups: BackupStore, evidence: Evidence) -> None:
    """Daily backups accumulate: nearly every day of the window has one"""
    _newest(backups)
    window, needed = backups.cfg.daily_window_days, backups.cfg.daily_min_days
    now = dt.datetime.now(dt.UTC)
    history = backups.history()
    start = _history_start(backups, history.oldest, history.oldest_trace)
    coverage = backups.daily_coverage(window, now=now)
    evidence.record("daily_coverage", {
        "window_days": window, "required_days": needed,
        "days_with_backup": coverage.days_with_backup, "missing_days": coverage.missing_days,
        "history_starts": None if start is None else start.isoformat(),
    })
    if start is None or (now - start).total_seconds() < window * 86400:
        judgeable = (start or now).date() + dt.timedelta(days=window)
        opsready.not_covered(
            f"{backups.where}: the backup history starts {start.date() if start else 'today'}, "
            f"younger than the {window}-day window", judgeable_from=judgeable)
    assert coverage.days_with_backup >= needed, (
        f"{backups.where}: {coverage.days_with_backup} of the last {window} days have a backup, "
        f"expected at least {needed} (backups.daily_min_days); missing: "
        f"{', '.join(coverage.missing_days)}; check the backup job's failed runs"
    )


def test_backups_kept_as_long_as_claimed(backups: BackupStore, evidence: Evidence) -> None:
    """The oldest backup is as old as the claimed retention, as far back as the history goes"""
    _newest(backups)
    required = backups.cfg.retention_days
    retention = _Retention(backups, backups.latest())
    claimed = retention.claimed(required)
    history = backups.history()
    oldest = history.oldest
    assert oldest is not None, f"{backups.where}: no backups at all; check the backup job"
    start = _history_start(backups, oldest, history.oldest_trace)
    assert start is not None
    now = dt.datetime.now(dt.UTC)
    span = (now - start).total_seconds() / 86400
    # Forever keeps every backup; a claim keeps them that long. A day of slack for the
    # lifecycle's daily run.
    expected = span if claimed is None else min(float(claimed), span)
    age = oldest.age_days(now)
    evidence.record("history", {
        "oldest_backup": oldest.describe(), "history_starts": start.isoformat(),
        "evidence_of_start": "backups.history_start" if backups.cfg.history_start
        and start.date() == backups.cfg.history_start else
        (history.trace_key or "the oldest backup itself"),
        "claimed_retention_days": claimed, "expected_oldest_age_days": round(expected, 2),
    })
    assert age + 1 >= expected, (
        f"{backups.where}: the oldest backup {oldest.key} is {age:.1f} days old, but backups "
        f"go back to {start.date()} ({history.trace_key or 'backups.history_start'}) and the "
        f"bucket claims to keep them "
        f"{'forever' if claimed is None else f'{claimed} days'}; expected one "
        f"{expected:.0f} days old: backups are deleted before their time; find what deletes "
        f"them (a rule, a script, a person)"
    )


def _history_start(backups: BackupStore, oldest: BackupObject | None,
                   trace: dt.datetime | None) -> dt.datetime | None:
    starts = [t for t in (oldest.last_modified if oldest else None, trace) if t is not None]
    if backups.cfg.history_start is not None:
        starts.append(dt.datetime.combine(backups.cfg.history_start, dt.time(), dt.UTC))
    return min(starts) if starts else None
