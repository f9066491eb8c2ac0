"""Unit tests of the data-safety probes: S3 error mapping, the backup listing, the drill's
guardrail, the dump sniffing and the drill schedule parsing. No stack needed."""

from __future__ import annotations

import datetime as dt
import os
import socket
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber

from opsready._errors import AccessRefused, MissingInput, ProbeTimeout, TargetUnreachable
from opsready.config import BackupsConfig, RestoreDrillConfig
from opsready.probes.postgres import (
    DrillRefused,
    ScratchServer,
    drill_database_name,
    endpoint_of,
    same_database,
)
from opsready.probes.s3 import BackupStore, LifecycleRule, sniff_format
from opsready.schedules import runs_at_least_monthly, workflow_crons

BUCKET = "relay-backups"


def backups_config(endpoint: str = "http://127.0.0.1:9") -> BackupsConfig:
    return BackupsConfig.model_validate({
        "s3": {"bucket": BUCKET, "endpoint_url": endpoint,
               "access_key_id": "test-key-id", "secret_access_key": "test-secret-key"},
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


def test_missing_bucket_is_missing_input(stubbed: Any) -> None:
    store, stubber = stubbed
    stubber.add_client_error("list_objects_v2", service_error_code="NoSuchBucket",
                             http_status_code=404)
    with pytest.raises(MissingInput, match=r"backups\.s3\.bucket"):
        store.list_backups()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_endpoint_is_target_unreachable() -> None:
    store = BackupStore(backups_config(f"http://127.0.0.1:{_closed_port()}"), timeout=2)
    with pytest.raises(TargetUnreachable, match="could not be reached"):
        store.versioning_status()
    with pytest.raises(TargetUnreachable):
        store.list_backups()


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


def test_latest_skips_sidecars_and_orders_by_time(stubbed: Any) -> None:
    store, stubber = stubbed
    now = dt.datetime.now(dt.UTC)
    stubber.add_response("list_objects_v2", _listing([
        ("backups/2025-01-02/relay.dump", 900, now - dt.timedelta(hours=1)),
        ("backups/2025-01-02/relay.dump.sha256", 80, now - dt.timedelta(minutes=59)),
        ("backups/2025-01-01/relay.dump", 1000, now - dt.timedelta(hours=25)),
    ]), {"Bucket": BUCKET, "Prefix": "backups/"})
    latest = store.latest()
    assert latest.newest is not None and latest.previous is not None
    assert latest.newest.key == "backups/2025-01-02/relay.dump"
    assert latest.previous.key == "backups/2025-01-01/relay.dump"
    assert latest.count == 2


def test_empty_prefix_has_no_contents_key(stubbed: Any) -> None:
    store, stubber = stubbed
    stubber.add_response("list_objects_v2", {"IsTruncated": False, "KeyCount": 0})
    latest = store.latest()
    assert latest.newest is None and latest.count == 0


def test_daily_coverage_counts_24h_windows(stubbed: Any) -> None:
    store, stubber = stubbed
    now = dt.datetime(2025, 3, 31, 0, 30, tzinfo=dt.UTC)
    # Nightly at 23:30: the newest is an hour old; days 0 and 1 are missing.
    days = [d for d in range(35) if d not in (0, 1)]
    stubber.add_response("list_objects_v2", _listing([
        (f"backups/{d}/relay.dump", 1000, now - dt.timedelta(hours=1) - dt.timedelta(days=d))
        for d in days
    ]))
    coverage = store.daily_coverage(30, now=now)
    assert coverage.days_with_backup == 28
    assert coverage.missing_days == ["2025-03-31", "2025-03-30"]
    assert coverage.oldest_age_days is not None and coverage.oldest_age_days > 34


def test_sidecar_in_sha256sum_format(stubbed: Any) -> None:
    import io

    from botocore.response import StreamingBody

    store, stubber = stubbed
    digest = "ab" * 32
    text = f"{digest.upper()}  relay.dump\n".encode()
    stubber.add_response("get_object", {"Body": StreamingBody(io.BytesIO(text), len(text))})
    backup = _backup("backups/x/relay.dump")
    assert store.sidecar_digest(backup) == digest


def test_missing_sidecar_is_none(stubbed: Any) -> None:
    store, stubber = stubbed
    stubber.add_client_error("get_object", service_error_code="NoSuchKey", http_status_code=404)
    assert store.sidecar_digest(_backup("backups/x/relay.dump")) is None


def _backup(key: str) -> Any:
    from opsready.probes.s3 import BackupObject

    return BackupObject(key=key, size=10, last_modified=dt.datetime.now(dt.UTC))


# ---- lifecycle rules -------------------------------------------------------------------------


def _rule(**kw: Any) -> LifecycleRule:
    base: dict[str, Any] = {"id": "r", "enabled": True, "prefix": "backups/",
                            "expiration_days": None, "expiration_date": None, "transitions": []}
    return LifecycleRule(**{**base, **kw})


@pytest.mark.parametrize(("rule", "keeps"), [
    (_rule(transitions=[(30, "GLACIER")]), True),
    (_rule(expiration_days=400), True),
    (_rule(expiration_days=365, transitions=[(30, "DEEP_ARCHIVE")]), True),
    (_rule(expiration_days=90, transitions=[(30, "GLACIER")]), False),
    (_rule(transitions=[(30, "STANDARD_IA")]), False),
    (_rule(), False),
    (_rule(expiration_date="2026-01-01T00:00:00Z"), False),
])
def test_lifecycle_rule_keeps(rule: LifecycleRule, keeps: bool) -> None:
    assert rule.keeps(365) is keeps


def test_lifecycle_rule_covers_prefix() -> None:
    assert _rule(prefix="").covers("backups/")
    assert _rule(prefix="backups/").covers("backups/")
    assert not _rule(prefix="logs/").covers("backups/")


# ---- dumps -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("header", "kind"), [
    (b"PGDMP\x01\x0e\x00", "custom"),
    (b"\x1f\x8b\x08\x00", "gzip"),
    (b"--\n-- PostgreSQL database dump\n", "plain"),
    (b"<html>", "unknown"),
    (b"", "unknown"),
])
def test_sniff_format(header: bytes, kind: str) -> None:
    assert sniff_format(header) == kind


# ---- the drill's guardrail -------------------------------------------------------------------


def test_localhost_and_loopback_are_the_same_server() -> None:
    a = endpoint_of("postgresql://u:pw@localhost:5544/relay")
    b = endpoint_of("host=127.0.0.1 port=5544 dbname=relay user=other")
    assert same_database(a, b)
    assert not same_database(a, endpoint_of("postgresql://u@127.0.0.1:5545/relay"))
    assert not same_database(a, endpoint_of("postgresql://u@127.0.0.1:5544/postgres"))


@pytest.mark.parametrize("scratch_host", ["localhost", "127.0.0.1"])
def test_guardrail_refuses_scratch_equal_to_source(scratch_host: str) -> None:
    port = _closed_port()
    cfg = RestoreDrillConfig.model_validate({
        "scratch_dsn": f"postgresql://admin:s3cret-pw@{scratch_host}:{port}/relay",
        "source_dsn": f"postgresql://reader:other-pw@127.0.0.1:{port}/relay",
    })
    server = ScratchServer(cfg, timeout=2)
    with pytest.raises(DrillRefused) as exc:
        server.refuse_if_source()
    assert "resolves to the source" in str(exc.value)
    assert "s3cret-pw" not in str(exc.value) and "other-pw" not in str(exc.value)
    # The drill itself refuses before connecting anywhere (the port is closed: reaching it
    # would raise TargetUnreachable instead).
    with pytest.raises(DrillRefused):
        server.restore_drill(lambda: pytest.fail("the stream must not be opened"), 0)


def test_guardrail_allows_another_database_of_the_same_server() -> None:
    cfg = RestoreDrillConfig.model_validate({
        "scratch_dsn": "postgresql://admin:pw@localhost:5544/postgres",
        "source_dsn": "postgresql://admin:pw@127.0.0.1:5544/relay",
    })
    ScratchServer(cfg, timeout=2).refuse_if_source(drill_database_name())


def test_drill_database_names_carry_their_time() -> None:
    name = drill_database_name(1_700_000_000)
    assert name.startswith("opsready_drill_1700000000_")
    assert name != drill_database_name(1_700_000_000)


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
