"""Unit tests of the data-safety probes: S3 error mapping, the cheap backup listing, sidecars,
lifecycle rules, the drill's refusals before it connects, and the drill schedule parsing.
No stack needed."""

from __future__ import annotations

import datetime as dt
import os
import socket
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber

from conftest import load_check
from opsready._errors import AccessRefused, MissingInput, ProbeTimeout, TargetUnreachable
from opsready.config import BackupsConfig, RestoreDrillConfig
from opsready.probes.postgres import DrillRefused, ScratchServer, drill_database_name
from opsready.probes.s3 import BackupObject, BackupStore, LifecycleRule, _rule
from opsready.schedules import runs_at_least_monthly, workflow_crons

BUCKET = "relay-backups"


def backups_config(endpoint: str = "http://127.0.0.1:9", **extra: Any) -> BackupsConfig:
    return BackupsConfig.model_validate({
        "s3": {"bucket": BUCKET, "endpoint_url": endpoint, "prefix": "backups/",
               "access_key_id": "test-key-id", "secret_access_key": "test-secret-key"},
        "key_pattern": "%Y-%m-%d/relay.*", **extra,
    })


@pytest.fixture
def stubbed() -> Any:
    client = boto3.client("s3", region_name="us-east-1", endpoint_url="http://127.0.0.1:9",
                          aws_access_key_id="k", aws_secret_access_key="s",
                          config=Config(s3={"addressing_style": "path"}))
    with Stubber(client) as stubber:
        yield BackupStore(backups_config(), timeout=5, client=client), stubber


# ---- S3: missing configuration is data, refusals and outages are errors --------------------


@pytest.mark.parametrize(("method", "operation", "code"), [
    ("lifecycle_rules", "get_bucket_lifecycle_configuration", "NoSuchLifecycleConfiguration"),
    ("default_encryption", "get_bucket_encryption",
     "ServerSideEncryptionConfigurationNotFoundError"),
    ("public_access_block", "get_public_access_block", "NoSuchPublicAccessBlockConfiguration"),
])
def test_missing_bucket_setting_is_data(stubbed: Any, method: str, operation: str,
                                        code: str) -> None:
    store, stubber = stubbed
    stubber.add_client_error(operation, service_error_code=code, http_status_code=404)
    assert getattr(store, method)() is None


def test_versioning_never_set_reads_as_none(stubbed: Any) -> None:
    store, stubber = stubbed
    stubber.add_response("get_bucket_versioning", {})
    assert store.versioning_status() is None


@pytest.mark.parametrize("code", ["AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"])
def test_refused_credentials_are_access_refused(stubbed: Any, code: str) -> None:
    store, stubber = stubbed
    stubber.add_client_error("get_bucket_lifecycle_configuration", service_error_code=code,
                             http_status_code=403)
    with pytest.raises(AccessRefused) as exc:
        store.lifecycle_rules()
    assert BUCKET in str(exc.value)


def test_a_bucket_that_vanishes_mid_run_is_missing_input(stubbed: Any) -> None:
    store, stubber = stubbed
    stubber.add_client_error("list_objects_v2", service_error_code="NoSuchBucket",
                             http_status_code=404)
    with pytest.raises(MissingInput, match=r"backups\.s3\.bucket"):
        store.backups_since(None)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_endpoint_is_target_unreachable() -> None:
    store = BackupStore(backups_config(f"http://127.0.0.1:{_closed_port()}"), timeout=2)
    with pytest.raises(TargetUnreachable, match="could not be reached"):
        store.versioning_status()
    with pytest.raises(TargetUnreachable):
        store.backups_since(None)


def test_silent_endpoint_is_probe_timeout() -> None:
    with socket.socket() as listener:
        # Accepts connections (the backlog) but never answers.
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        store = BackupStore(backups_config(f"http://127.0.0.1:{port}"), timeout=0.5)
        with pytest.raises(ProbeTimeout, match=r"no answer within 0\.5s"):
            store.versioning_status()


def test_secret_key_never_in_error_messages() -> None:
    store = BackupStore(backups_config(f"http://127.0.0.1:{_closed_port()}"), timeout=2)
    with pytest.raises(TargetUnreachable) as exc:
        store.versioning_status()
    assert "test-secret-key" not in str(exc.value)


# ---- S3: the listing -------------------------------------------------------------------------


def _listing(keys: list[tuple[str, int, dt.datetime]]) -> dict[str, Any]:
    return {"Contents": [{"Key": k, "Size": s, "LastModified": t, "ETag": '"x"'}
                         for k, s, t in keys], "IsTruncated": False, "KeyCount": len(keys)}


NOW = dt.datetime(2025, 3, 10, 3, 0, tzinfo=dt.UTC)


def _day(days_ago: int, name: str = "relay.dump", hours: float = 1.0) -> tuple[str, int,
                                                                              dt.datetime]:
    t = NOW - dt.timedelta(days=days_ago, hours=hours)
    return f"backups/{t.date().isoformat()}/{name}", 1000, t


def test_latest_lists_from_a_recent_day_and_skips_what_is_not_a_backup(stubbed: Any) -> None:
    store, stubber = stubbed
    stubber.add_response("list_objects_v2", _listing([
        _day(2), _day(2, "relay.dump.sha256"), _day(1), _day(1, "relay.dump.sha256"),
        # Newer than relay's newest, under the same prefix, and not relay's backups.
        _day(1, "analytics.dump", hours=0.5), _day(1, "backup.log", hours=0.4),
        _day(0, "relay.dump.sha256", hours=0.2),
    ]), {"Bucket": BUCKET, "Prefix": "backups/", "StartAfter": "backups/2025-03-07"})
    latest = store.latest(now=NOW)
    assert latest.newest is not None and latest.previous is not None
    assert latest.newest.key == "backups/2025-03-09/relay.dump"
    assert latest.previous.key == "backups/2025-03-08/relay.dump"
    assert latest.listed_since == dt.date(2025, 3, 7) and latest.requests == 1


def test_latest_looks_further_back_only_when_it_must(stubbed: Any) -> None:
    store, stubber = stubbed
    stubber.add_response("list_objects_v2", {"KeyCount": 0, "IsTruncated": False},
                         {"Bucket": BUCKET, "Prefix": "backups/",
                          "StartAfter": "backups/2025-03-07"})
    stubber.add_response("list_objects_v2", _listing([_day(6)]),
                         {"Bucket": BUCKET, "Prefix": "backups/",
                          "StartAfter": "backups/2025-03-02"})
    stubber.add_response("list_objects_v2", _listing([_day(20), _day(6)]),
                         {"Bucket": BUCKET, "Prefix": "backups/",
                          "StartAfter": "backups/2025-02-06"})
    latest = store.latest(now=NOW)
    assert latest.newest is not None and latest.newest.age_hours(NOW) > 6 * 24
    assert latest.count == 2 and latest.requests == 3


def test_a_directory_dump_is_one_backup(stubbed: Any) -> None:
    store, stubber = stubbed
    d = "backups/2025-03-09/relay.dir"
    t = NOW - dt.timedelta(hours=2)
    stubber.add_response("list_objects_v2", _listing([
        (f"{d}/3301.dat.gz", 500, t), (f"{d}/3302.dat.gz", 700, t),
        (f"{d}/toc.dat", 3000, t + dt.timedelta(seconds=1)), (f"{d}.sha256", 200, t),
        ("backups/2025-03-09/other.dir/toc.dat", 100, t),
    ]))
    (backup,) = store.backups_since(dt.date(2025, 3, 9))
    assert backup.key == d and backup.is_directory and backup.size == 4200
    assert backup.files == ("3301.dat.gz", "3302.dat.gz", "toc.dat")


def test_without_a_key_pattern_nothing_is_listed() -> None:
    cfg = backups_config().model_copy(update={"key_pattern": None})
    store = BackupStore(cfg, timeout=5, client=object())
    with pytest.raises(MissingInput, match="key_pattern"):
        store.latest()


def test_empty_prefix_has_no_contents_key(stubbed: Any) -> None:
    store, stubber = stubbed
    for _ in range(6):
        stubber.add_response("list_objects_v2", {"IsTruncated": False, "KeyCount": 0})
    latest = store.latest(now=NOW)
    assert latest.newest is None and latest.count == 0 and latest.listed_since is None


def test_daily_coverage_counts_missed_nights_since_the_newest(stubbed: Any) -> None:
    store, stubber = stubbed
    now = dt.datetime(2025, 3, 31, 0, 30, tzinfo=dt.UTC)
    # Nightly at 23:30: the newest is 49 hours old, so two nights' backups are missing.
    days = [d for d in range(35) if d not in (0, 1)]
    stubber.add_response("list_objects_v2", _listing([
        (f"backups/{(now - dt.timedelta(days=d, hours=1)).date()}/relay.dump", 1000,
         now - dt.timedelta(hours=1) - dt.timedelta(days=d))
        for d in days
    ]), {"Bucket": BUCKET, "Prefix": "backups/", "StartAfter": "backups/2025-02-28"})
    coverage = store.daily_coverage(30, now=now)
    assert coverage.days_with_backup == 28
    assert coverage.missing_days == ["2025-03-30", "2025-03-29"]


def _nightly(stubber: Any, now: dt.datetime, uploads: list[dt.datetime]) -> None:
    start_after = f"backups/{(now - dt.timedelta(days=31)).date()}"
    stubber.add_response("list_objects_v2", _listing([
        (f"backups/{t.date()}/relay.{i}.dump", 1000, t) for i, t in enumerate(sorted(uploads))]),
        {"Bucket": BUCKET, "Prefix": "backups/", "StartAfter": start_after})


@pytest.mark.parametrize("seed", range(8))
def test_a_nightly_job_that_drifts_around_the_audit_time_misses_no_night(
        stubbed: Any, seed: int) -> None:
    """A 02:00 cron whose uploads land between 02:05 and 03:00 (schedulers run late), audited
    at 02:30, inside that spread: every night had its backup, whichever side of 02:30 each
    upload fell. Fixed 24-hour bins counted two in some and none in others."""
    import random

    store, stubber = stubbed
    rng = random.Random(seed)
    now = dt.datetime(2025, 4, 1 + seed, 2, 30, tzinfo=dt.UTC)
    uploads = [dt.datetime.combine(now.date() - dt.timedelta(days=d), dt.time(2, 5), dt.UTC)
               + dt.timedelta(minutes=rng.uniform(0, 55)) for d in range(0, 33)]
    _nightly(stubber, now, [u for u in uploads if u <= now])
    coverage = store.daily_coverage(30, now=now)
    assert (coverage.days_with_backup, coverage.missing_days) == (30, [])


def test_a_missed_night_is_named_and_a_second_backup_the_same_night_counts_once(
        stubbed: Any) -> None:
    store, stubber = stubbed
    now = dt.datetime(2025, 5, 20, 12, 0, tzinfo=dt.UTC)
    uploads = [dt.datetime.combine(now.date() - dt.timedelta(days=d), dt.time(2, 10), dt.UTC)
               for d in range(0, 33) if d != 9]
    uploads.append(uploads[3] + dt.timedelta(hours=3))  # a manual backup the same night
    _nightly(stubber, now, uploads)
    coverage = store.daily_coverage(30, now=now)
    assert coverage.days_with_backup == 29
    assert coverage.missing_days == [(now.date() - dt.timedelta(days=9)).isoformat()]


def test_history_finds_the_oldest_trace_in_the_versions(stubbed: Any) -> None:
    store, stubber = stubbed
    stubber.add_response("list_objects_v2", _listing([_day(19), _day(18)]),
                         {"Bucket": BUCKET, "Prefix": "backups/"})
    old = NOW - dt.timedelta(days=34)
    stubber.add_response("list_object_versions", {
        "Versions": [{"Key": _day(19)[0], "LastModified": _day(19)[2], "VersionId": "a",
                      "IsLatest": True, "Size": 1, "ETag": '"x"'}],
        "DeleteMarkers": [{"Key": f"backups/{old.date()}/relay.dump", "VersionId": "m",
                           "IsLatest": True, "LastModified": NOW - dt.timedelta(days=1)}],
        "IsTruncated": False}, {"Bucket": BUCKET, "Prefix": "backups/"})
    history = store.history()
    assert history.oldest is not None and history.oldest.key == _day(19)[0]
    assert history.trace_key == f"backups/{old.date()}/relay.dump"
    assert history.oldest_trace is not None and history.oldest_trace.date() == old.date()


# ---- sidecars ----------------------------------------------------------------------------------


def _body(text: bytes) -> dict[str, Any]:
    import io

    from botocore.response import StreamingBody

    return {"Body": StreamingBody(io.BytesIO(text), len(text))}


@pytest.mark.parametrize(("text", "names", "found"), [
    (b"AB" * 32 + b"  relay.dump\n", ["relay.dump"], True),
    (b"ab" * 32 + b" *relay.dump\n", ["relay.dump"], True),
    (b"ab" * 32 + b"\n", [], True),
    (b"SHA256 (relay.dump) = " + b"ab" * 32 + b"\n", ["relay.dump"], True),
    (b"ab" * 32 + b"  other.dump\n" + b"cd" * 32 + b"  relay.dump\n",
     ["other.dump", "relay.dump"], True),
    (b"ab" * 32 + b"  analytics.dump\n", ["analytics.dump"], False),
])
def test_sidecar_formats(stubbed: Any, text: bytes, names: list[str], found: bool) -> None:
    store, stubber = stubbed
    stubber.add_response("get_object", _body(text))
    sidecar = store.sidecar(_backup("backups/x/relay.dump"))
    assert sidecar.found and sidecar.names == names
    entry = sidecar.for_name("relay.dump")
    assert (entry is not None) is found
    if entry is not None:
        assert entry.digest in ("ab" * 32, "cd" * 32)


def test_sidecar_without_a_digest_has_no_entries(stubbed: Any) -> None:
    store, stubber = stubbed
    stubber.add_response("get_object", _body(b"pending\n"))
    sidecar = store.sidecar(_backup("backups/x/relay.dump"))
    assert sidecar.found and sidecar.entries == () and "pending" in sidecar.excerpt


def test_missing_sidecar_is_not_found(stubbed: Any) -> None:
    store, stubber = stubbed
    stubber.add_client_error("get_object", service_error_code="NoSuchKey", http_status_code=404)
    assert not store.sidecar(_backup("backups/x/relay.dump")).found


def _backup(key: str) -> BackupObject:
    return BackupObject(key=key, size=10, last_modified=dt.datetime.now(dt.UTC))


# ---- the bucket --------------------------------------------------------------------------------


def test_a_missing_bucket_is_a_fact(stubbed: Any) -> None:
    store, stubber = stubbed
    stubber.add_client_error("head_bucket", service_error_code="404", http_status_code=404)
    assert store.bucket_exists() is False


def test_a_refused_bucket_check_is_access_refused(stubbed: Any) -> None:
    store, stubber = stubbed
    stubber.add_client_error("head_bucket", service_error_code="403", http_status_code=403)
    with pytest.raises(AccessRefused):
        store.bucket_exists()


def test_object_lock_years_count_as_days(stubbed: Any) -> None:
    store, stubber = stubbed
    stubber.add_response("get_object_lock_configuration", {"ObjectLockConfiguration": {
        "ObjectLockEnabled": "Enabled",
        "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Years": 2}}}})
    lock = store.object_lock()
    assert lock is not None and lock.enabled and lock.days == 730 and lock.mode == "COMPLIANCE"
    stubber.add_client_error("get_object_lock_configuration",
                             service_error_code="ObjectLockConfigurationNotFoundError",
                             http_status_code=404)
    assert store.object_lock() is None


# ---- lifecycle rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "applies"), [
    ({"Filter": {}}, True),
    ({"Filter": {"Prefix": ""}}, True),
    ({"Prefix": "backups/"}, True),  # the legacy top-level shape
    ({"Filter": {"Prefix": "backups/2025"}}, True),
    ({"Filter": {"Prefix": "logs/"}}, False),
    ({"Filter": {"Tag": {"Key": "kind", "Value": "nightly"}}}, True),
    ({"Filter": {"Tag": {"Key": "tmp", "Value": "true"}}}, False),
    ({"Filter": {"ObjectSizeLessThan": 1000}}, False),
    ({"Filter": {"ObjectSizeGreaterThan": 1000}}, True),
    ({"Filter": {"And": {"Prefix": "backups/",
                         "Tags": [{"Key": "kind", "Value": "nightly"}]}}}, True),
    ({"Filter": {"And": {"Prefix": "backups/", "Tags": [{"Key": "kind", "Value": "nightly"},
                                                          {"Key": "tmp", "Value": "1"}]}}},
     False),
    ({"Filter": {"And": {"Prefix": "backups/", "ObjectSizeGreaterThan": 10,
                         "ObjectSizeLessThan": 100}}}, False),
    ({"Filter": {}, "Status": "Disabled"}, False),
])
def test_lifecycle_rule_applies_as_s3_evaluates_it(raw: dict[str, Any], applies: bool) -> None:
    rule = _rule({"ID": "r", "Status": "Enabled", "Expiration": {"Days": 30}, **raw}, 0)
    assert rule.applies_to("backups/2025-03-01/relay.dump", 5000,
                           {"kind": "nightly"}) is applies


def test_lifecycle_rule_fields() -> None:
    rule = _rule({"ID": "r", "Status": "Enabled", "Filter": {"Prefix": "backups/"},
                  "Expiration": {"Days": 400}, "NoncurrentVersionExpiration":
                  {"NoncurrentDays": 90}, "Transitions": [{"Days": 30,
                                                           "StorageClass": "GLACIER"}]}, 0)
    assert rule.expires and rule.expiration_days == 400 and rule.noncurrent_days == 90
    assert rule.cold_transition() == (30, "GLACIER")
    assert not _rule({"Status": "Enabled", "Filter": {}}, 3).expires
    assert _rule({"Status": "Enabled", "Filter": {}}, 3).id == "rule #4"
    assert isinstance(rule, LifecycleRule)


# ---- the drill refuses before it writes --------------------------------------------------------


def test_drill_without_source_dsn_refuses_before_connecting() -> None:
    cfg = RestoreDrillConfig.model_validate({
        "scratch_dsn": f"postgresql://drill:s3cret-pw@127.0.0.1:{_closed_port()}/postgres",
    })
    server = ScratchServer(cfg, timeout=2)
    with pytest.raises(DrillRefused) as exc:
        server.check_target()
    assert "restore_drill.source_dsn" in str(exc.value)
    assert "s3cret-pw" not in str(exc.value)


def test_drill_refuses_when_the_source_cannot_be_asked() -> None:
    port = _closed_port()
    cfg = RestoreDrillConfig.model_validate({
        "scratch_dsn": f"postgresql://drill:s3cret-pw@127.0.0.1:{port}/postgres",
        "source_dsn": f"postgresql://reader:other-pw@127.0.0.1:{port}/relay",
    })
    # Even the scratch server is not reachable: the drill cannot run, and says where.
    with pytest.raises(TargetUnreachable) as exc:
        ScratchServer(cfg, timeout=2).check_target()
    assert "restore_drill.scratch_dsn" in str(exc.value)
    assert "s3cret-pw" not in str(exc.value) and "other-pw" not in str(exc.value)


def test_drill_database_names_carry_their_time() -> None:
    name = drill_database_name(1_700_000_000)
    assert name.startswith("opsready_drill_1700000000_")
    assert name != drill_database_name(1_700_000_000)


# ---- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(("extra", "says"), [
    ({"key_pattern": "*/%Y-%m-%d/relay.dump"}, "wildcard"),
    ({"daily_min_days": 40}, "daily_min_days"),
    ({"accepted_formats": []}, "at least one"),
    ({"accepted_formats": ["zip"]}, "custom"),
])
def test_backups_config_refuses(extra: dict[str, Any], says: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=says):
        backups_config(**extra)


def test_restore_drill_config_refuses_a_bad_regex() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="regular expression"):
        RestoreDrillConfig.model_validate({"scratch_dsn": "x", "tolerated_errors": ["("]})


# ---- the drill schedule ----------------------------------------------------------------------


def test_workflow_crons_reads_on_schedule() -> None:
    text = "name: drill\non:\n  schedule:\n    - cron: '0 3 1 * *'\n  workflow_dispatch:\n"
    assert workflow_crons(text) == ["0 3 1 * *"]
    assert workflow_crons("name: drill\non:\n  workflow_dispatch:\n") == []
    assert workflow_crons("on: [push]\n") == []
    assert workflow_crons(": not yaml: [") is None


@pytest.mark.parametrize(("cron", "monthly"), [
    ("0 3 1 * *", True),
    ("0 3 * * 1", True),
    ("*/30 * * * *", True),
    ("0 3 28 * *", True),
    ("0 3 31 * *", False),  # skips every short month
    ("0 3 1 */2 *", False),
    ("0 3 1 1,7 *", False),
    ("0 3 1 * 1-7", True),
    ("not a cron", False),
])
def test_runs_at_least_monthly(cron: str, monthly: bool) -> None:
    assert runs_at_least_monthly(cron) is monthly


# ---- the drill's watchdog --------------------------------------------------------------------


def test_watchdog_unblocks_a_write_to_a_stalled_tool() -> None:
    import subprocess
    import threading
    import time

    from opsready.probes.postgres import _Children

    tools = _Children()
    # A "restore tool" that never reads its stdin: the pipe fills and the write blocks.
    proc = tools.start(["sleep", "60"], dict(os.environ), stdin=subprocess.PIPE)
    assert proc.stdin is not None
    watchdog = threading.Timer(0.5, tools.kill_all)
    watchdog.start()
    started = time.monotonic()
    try:
        with pytest.raises(BrokenPipeError):
            for _ in range(64):
                proc.stdin.write(b"x" * (1 << 20))
    finally:
        watchdog.cancel()
        tools.kill()
    assert time.monotonic() - started < 10
    assert proc.returncode is not None and proc.returncode < 0


# ---- one read judges a dump ------------------------------------------------------------------


_SCRIPT = (b"--\n-- PostgreSQL database dump\n--\nSET client_encoding = 'UTF8';\n"
           b"COPY public.t (a) FROM stdin;\n1\n\\.\n--\n-- PostgreSQL database dump complete\n--\n")


def _inspect(data: bytes) -> Any:
    from opsready.probes.s3 import DumpInspection, _inspect_stream

    result = DumpInspection(key="backups/2025-03-01/relay.sql.gz")
    _inspect_stream(iter([data[i:i + 7] for i in range(0, len(data), 7)]), result,
                    "pg_restore")
    return result


def test_inspection_of_a_whole_gzip_script() -> None:
    import gzip
    import hashlib

    data = gzip.compress(_SCRIPT)
    result = _inspect(data)
    assert (result.format, result.compressed, result.problems) == ("plain", True, [])
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.bytes_read == len(data) and result.header["copy_blocks"] == 1


@pytest.mark.parametrize(("data", "says"), [
    (__import__("gzip").compress(_SCRIPT)[:-12], "before its end marker"),
    (__import__("gzip").compress(_SCRIPT[:-40]), "without the '-- PostgreSQL database dump "
                                                 "complete' trailer"),
    (_SCRIPT.replace(b"-- PostgreSQL database dump\n", b"-- hand-written\n", 1),
     "does not open with"),
    (b"<html><body>503 Service Unavailable</body></html>" * 100, "not a PostgreSQL dump"),
])
def test_inspection_finds_what_is_wrong_inside(data: bytes, says: str) -> None:
    result = _inspect(data)
    assert any(says in p for p in result.problems), result.problems
    assert result.sha256 is not None  # the digest is still there for the sidecar criterion


def test_inspection_of_a_hostile_script() -> None:
    result = _inspect(_SCRIPT.replace(b"SET client_encoding", b"\\! id\nSET client_encoding"))
    assert result.hostile is not None and "line 4" in result.hostile


# ---- the encryption requirement --------------------------------------------------------------


KEY = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


@pytest.mark.parametrize(("algorithm", "key_id", "required", "ok"), [
    ("AES256", None, "AES256", True),
    ("aws:kms", KEY, "AES256", True),
    ("AES256", None, "aws:kms", False),
    ("aws:kms", None, "aws:kms", True),
    ("aws:kms:dsse", KEY, "aws:kms", True),
    ("aws:kms", KEY, "aws:kms:dsse", False),
    ("aws:kms", KEY, KEY, True),
    ("aws:kms", KEY, "1234abcd-12ab-34cd-56ef-1234567890ab", True),
    ("aws:kms", "1234abcd-12ab-34cd-56ef-1234567890ab", KEY, True),
    ("aws:kms", KEY, "ffffffff-12ab-34cd-56ef-1234567890ab", False),
    ("aws:kms", None, KEY, False),
    ("AES256", None, KEY, False),
])
def test_required_encryption(algorithm: str, key_id: str | None, required: str,
                             ok: bool) -> None:
    satisfies = load_check("test_p3_003_backup_storage")._satisfies
    assert satisfies(algorithm, key_id, required) is ok


@pytest.mark.parametrize(("written", "read"), [(True, "true"), (False, "false"),
                                                ("passed", "passed"), (1, "1"), (None, None)])
def test_a_drill_records_outcome_keeps_its_json_spelling(stubbed: Any, written: Any,
                                                       read: str | None) -> None:
    """A JSON ``true`` outcome is ``true``, as the record says it, so a success value written
    the JSON way matches it."""
    import json

    cfg = backups_config(drill_record_key="drills/last.json", drill_record_outcome_field="ok")
    store, stubber = stubbed
    store = BackupStore(cfg, timeout=5, client=store._client)
    stubber.add_response("get_object", {**_body(json.dumps(
        {"ok": written, "finished_at": "2025-03-01T03:00:00Z"}).encode()),
        "LastModified": NOW})
    record = store.drill_record()
    assert record is not None and record.outcome == read


def test_pg_restore_errors_pair_with_their_command_past_hint_and_detail_lines() -> None:
    """libpq reports an error with its DETAIL, HINT and CONTEXT lines; the statement that
    failed comes after them, and tolerating it depends on pairing the two."""
    from opsready.probes.postgres import _pg_restore_errors

    stderr = [
        "pg_restore: error: could not execute query: ERROR:  permission denied to create "
        "extension \"pg_stat_statements\"",
        "HINT:  Must be superuser to create this extension.",
        "Command was: CREATE EXTENSION IF NOT EXISTS pg_stat_statements WITH SCHEMA public;",
        "pg_restore: error: could not execute query: ERROR:  relation \"x\" already exists",
        "DETAIL:  something",
        "CONTEXT:  somewhere",
        "Command was: CREATE TABLE public.x (",
        "    id integer",
        ");",
        "pg_restore: error: could not execute query: ERROR:  out of memory",
        "pg_restore: warning: errors ignored on restore: 3",
    ]
    assert [(e.split("ERROR:")[1].strip()[:20], c) for e, c in _pg_restore_errors(stderr)] == [
        ("permission denied to", "CREATE EXTENSION IF NOT EXISTS pg_stat_statements WITH SCHEMA public;"),
        ('relation "x" already', "CREATE TABLE public.x ( id integer );"),
        ("out of memory", None),
    ]
