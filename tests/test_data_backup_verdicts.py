"""The backup criteria (P1-002 sidecar and validity, P3-003 storage) called directly against a
boto3-shaped S3 client that answers as AWS, MinIO or R2 would, fault by fault and variant by
variant: each criterion fails under its fault, passes under the legitimate variants, and is
unverified (a ``ProbeError``) or not covered where it cannot judge. No stack needed; the
same criteria run end to end against the reference stack in test_data_stack.py.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from botocore.response import StreamingBody

from conftest import load_check
from opsready._coverage import NotCovered
from opsready._errors import AccessRefused, MissingInput
from opsready.config import BackupsConfig
from opsready.evidence import Evidence
from opsready.probes.s3 import BackupObject, BackupStore, DumpInspection, LatestBackups

DUMPS = load_check("test_p1_002_restore_drill")
STORAGE = load_check("test_p3_003_backup_storage")

BUCKET = "relay-backups"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def client_error(code: str, status: int, operation: str) -> ClientError:
    message = f"{operation} not implemented" if status == 501 else code
    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, operation)


class FakeS3:
    """Answers by method name: a dict, a callable of the call's arguments, or an exception to
    raise. ``pages`` answers the listing paginators. Every call is counted in ``calls``."""

    def __init__(self, **answers: Any) -> None:
        self.answers = answers
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name not in self.answers:
            raise AttributeError(name)

        def call(**kwargs: Any) -> Any:
            self.calls.append((name, kwargs))
            answer = self.answers[name]
            if isinstance(answer, Exception):
                raise answer
            return answer(**kwargs) if callable(answer) else answer

        return call

    def get_paginator(self, method: str) -> Any:
        fake = self

        class Pages:
            def paginate(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
                fake.calls.append((method, kwargs))
                answer = fake.answers[method]
                if isinstance(answer, Exception):
                    raise answer
                yield from (answer(**kwargs) if callable(answer) else answer)

        return Pages()


def store(fake: FakeS3, **extra: Any) -> BackupStore:
    cfg = BackupsConfig.model_validate({
        "s3": {"bucket": BUCKET, "prefix": "db/"}, "key_pattern": "%Y-%m-%d/relay.*",
        "retention_days": 365, **extra})
    return BackupStore(cfg, timeout=5, client=fake)


def body(data: bytes) -> dict[str, Any]:
    return {"Body": StreamingBody(io.BytesIO(data), len(data)), "ContentLength": len(data)}


def backup(days_ago: int = 0, name: str = "relay.dump", size: int = 5_000_000) -> BackupObject:
    t = NOW - dt.timedelta(days=days_ago, hours=1)
    return BackupObject(key=f"db/{t.date().isoformat()}/{name}", size=size, last_modified=t)


# ---- P1-002: the sidecar ---------------------------------------------------------------------

DUMP = b"PGDMP" + b"\x00" * 1000
DIGEST = hashlib.sha256(DUMP).hexdigest()


def sidecar_verdict(sidecar: bytes | Exception) -> Evidence:
    newest = backup()
    fake = FakeS3(get_object=sidecar if isinstance(sidecar, Exception) else body(sidecar))
    latest = LatestBackups(newest=newest, previous=None, count=1, listed_since=None,
                           requests=1)
    inspection = DumpInspection(key=newest.key, format="custom", sha256=DIGEST)
    evidence = Evidence()
    DUMPS.test_latest_backup_matches_sidecar(latest, store(fake), inspection, evidence)
    return evidence


@pytest.mark.parametrize("text", [
    f"{DIGEST}  relay.dump\n",
    f"{DIGEST}  -\n",  # pg_dump | tee >(sha256sum > relay.dump.sha256) | aws s3 cp -
    f"{DIGEST} *-\n",
    f"SHA2-256(relay.dump)= {DIGEST}\n",  # openssl dgst -sha256 (OpenSSL 3)
    f"SHA256(/var/backups/relay.dump)= {DIGEST}\n",  # OpenSSL 1.1, a path
    f"SHA2-256(stdin)= {DIGEST}\n",  # openssl dgst reading a pipe
    f"SHA256 (relay.dump) = {DIGEST}\n",
])
def test_sidecar_forms_the_tools_write_pass(text: str) -> None:
    evidence = sidecar_verdict(text.encode())
    (checked,) = [i for i in evidence.items if i.name == "sha256"]
    assert checked.value == {"relay.dump": {"sidecar": DIGEST, "computed": DIGEST}}


@pytest.mark.parametrize(("text", "says"), [
    (f"{'0' * 64}  -\n", "the sidecar says 000"),
    (f"SHA2-256(relay.dump)= {'0' * 64}\n", "the sidecar says 000"),
    (f"SHA2-256(analytics.dump)= {DIGEST}\n", "names ['analytics.dump'], not relay.dump"),
    # Two digests of standard input: which one is the backup's cannot be told.
    (f"{DIGEST}  -\n{DIGEST}  -\n", "not relay.dump"),
    (f"SHA512(relay.dump)= {'ab' * 64}\n", "holds no sha256 digest"),
])
def test_sidecar_faults_open(text: str, says: str) -> None:
    with pytest.raises(AssertionError, match=re.escape(says)):
        sidecar_verdict(text.encode())


def test_a_refused_sidecar_read_is_unverified() -> None:
    with pytest.raises(AccessRefused, match=r"relay\.dump\.sha256"):
        sidecar_verdict(client_error("AccessDenied", 403, "GetObject"))


# ---- P3-003: a bucket as S3 (or an S3-compatible store) answers it ----------------------------


class Bucket:
    """Objects (key, size, age in days) and their tags; the listings answer as S3 does, in key
    order from ``StartAfter``."""

    def __init__(self, objects: list[tuple[str, int, float]],
                 tags: dict[str, dict[str, str]] | None = None) -> None:
        self.objects = sorted(
            ({"Key": k, "Size": size, "ETag": '"x"',
              "LastModified": NOW - dt.timedelta(days=age)} for k, size, age in objects),
            key=lambda o: str(o["Key"]))
        self.tags = tags or {}

    def list_objects_v2(self, Prefix: str = "", StartAfter: str = "",
                        **_: Any) -> list[dict[str, Any]]:
        found = [o for o in self.objects if o["Key"].startswith(Prefix) and o["Key"] > StartAfter]
        return [{"Contents": found, "KeyCount": len(found), "IsTruncated": False}]

    def list_object_versions(self, **_: Any) -> list[dict[str, Any]]:
        return [{"Versions": [{**o, "VersionId": "v", "IsLatest": True} for o in self.objects],
                 "IsTruncated": False}]

    def get_object_tagging(self, Key: str, **_: Any) -> dict[str, Any]:
        return {"TagSet": [{"Key": k, "Value": v} for k, v in self.tags.get(Key, {}).items()]}


def nightly(days: int, name: str = "relay.dump", size: int = 5_000_000) -> list[tuple[str, int,
                                                                                    float]]:
    """A backup every night for ``days`` nights, the newest an hour old."""
    out = []
    for d in range(days):
        age = d + 1 / 24
        day = (NOW - dt.timedelta(days=age)).date().isoformat()
        out.append((f"db/{day}/{name}", size, age))
    return out


def expiring(rule_id: str, days: int, flt: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"ID": rule_id, "Status": "Enabled", "Filter": flt if flt is not None else
            {"Prefix": "db/"}, "Expiration": {"Days": days}}


def s3_store(bucket: Bucket, rules: list[dict[str, Any]] | None,
             lock: dict[str, Any] | Exception | None = None,
             **answers: Any) -> tuple[BackupStore, FakeS3]:
    no_lock = client_error("ObjectLockConfigurationNotFoundError", 404,
                           "GetObjectLockConfiguration")
    no_rules = client_error("NoSuchLifecycleConfiguration", 404,
                            "GetBucketLifecycleConfiguration")
    fake = FakeS3(**{
        "head_bucket": {},
        "list_objects_v2": bucket.list_objects_v2,
        "list_object_versions": bucket.list_object_versions,
        "get_object_tagging": bucket.get_object_tagging,
        "get_bucket_lifecycle_configuration": no_rules if rules is None else {"Rules": rules},
        "get_object_lock_configuration": no_lock if lock is None else lock,
        **answers,
    })
    return store(fake), fake


R2_NO_LOCK = client_error("NotImplemented", 501, "GetObjectLockConfiguration")
KEEPS_400 = [expiring("backups-400d", 400)]
EXPIRES_30 = [expiring("backups-30d", 30)]


# ---- P3-003: retention on a store without S3 Object Lock ------------------------------------


@pytest.mark.parametrize("criterion", ["test_lifecycle_keeps_backups",
                                       "test_backups_kept_as_long_as_claimed"])
def test_no_object_lock_api_judges_the_rules_alone(criterion: str) -> None:
    # Cloudflare R2: no S3 Object Lock; the rules keep backups 400 days and 400 nights exist.
    backups, _ = s3_store(Bucket(nightly(400)), KEEPS_400, R2_NO_LOCK)
    evidence = Evidence()
    getattr(STORAGE, criterion)(backups, evidence)


def test_no_object_lock_api_and_a_short_rule_opens() -> None:
    backups, _ = s3_store(Bucket(nightly(40)), EXPIRES_30, R2_NO_LOCK)
    with pytest.raises(AssertionError, match=r"\['backups-30d'\].*expected at least 365"):
        STORAGE.test_lifecycle_keeps_backups(backups, Evidence())


def test_no_object_lock_api_and_backups_gone_early_opens() -> None:
    # The rules claim 400 days, the versions go back 100, the oldest backup is 20 days old.
    bucket = Bucket(nightly(20))
    history = Bucket(nightly(100))
    backups, _ = s3_store(bucket, KEEPS_400, R2_NO_LOCK,
                          list_object_versions=history.list_object_versions)
    with pytest.raises(AssertionError, match="deleted before their time"):
        STORAGE.test_backups_kept_as_long_as_claimed(backups, Evidence())


@pytest.mark.parametrize("criterion", ["test_lifecycle_keeps_backups",
                                       "test_backups_kept_as_long_as_claimed"])
def test_a_refused_object_lock_read_is_unverified(criterion: str) -> None:
    backups, _ = s3_store(Bucket(nightly(400)), KEEPS_400,
                          client_error("AccessDenied", 403, "GetObjectLockConfiguration"))
    with pytest.raises(AccessRefused, match="Object Lock"):
        getattr(STORAGE, criterion)(backups, Evidence())


# ---- P3-003: public access on stores with and without the API -------------------------------

ALL_ON = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
          "RestrictPublicBuckets": True}


def public_access_verdict(answer: dict[str, Any] | Exception) -> Evidence:
    backups = store(FakeS3(head_bucket={}, get_public_access_block=answer))
    evidence = Evidence()
    STORAGE.test_public_access_blocked(backups, evidence)
    return evidence


def test_all_four_flags_on_pass() -> None:
    evidence = public_access_verdict({"PublicAccessBlockConfiguration": ALL_ON})
    assert [i.value for i in evidence.items if i.name == "public_access_block"] == [ALL_ON]


@pytest.mark.parametrize(("answer", "says"), [
    ({"PublicAccessBlockConfiguration": {**ALL_ON, "RestrictPublicBuckets": False}},
     "RestrictPublicBuckets"),
    (client_error("NoSuchPublicAccessBlockConfiguration", 404, "GetPublicAccessBlock"),
     "no public access block"),
])
def test_a_flag_off_or_no_block_opens(answer: dict[str, Any] | Exception, says: str) -> None:
    with pytest.raises(AssertionError, match=says):
        public_access_verdict(answer)


@pytest.mark.parametrize("error", [
    client_error("NotImplemented", 501, "GetPublicAccessBlock"),  # MinIO, Cloudflare R2
    client_error("", 501, "GetPublicAccessBlock"),  # a bare 501
])
def test_a_store_without_the_api_is_not_covered_and_says_what_to_check(
        error: ClientError) -> None:
    with pytest.raises(NotCovered, match="does not implement GetPublicAccessBlock") as exc:
        public_access_verdict(error)
    assert "mc anonymous" in str(exc.value) and "r2.dev" in str(exc.value)


def test_a_refused_public_access_read_is_unverified() -> None:
    with pytest.raises(AccessRefused, match="public access block"):
        public_access_verdict(client_error("AccessDenied", 403, "GetPublicAccessBlock"))


# ---- P3-003: every object of the newest and previous backups is judged ----------------------

DAILY_35 = expiring("daily-35d", 35, {"Tag": {"Key": "tier", "Value": "daily"}})
MONTHLY_400 = expiring("monthly-400d", 400, {"Tag": {"Key": "tier", "Value": "monthly"}})
DAILY_400 = expiring("daily-400d", 400, {"Tag": {"Key": "tier", "Value": "daily"}})
MONTHLY_800 = expiring("monthly-800d", 800, {"Tag": {"Key": "tier", "Value": "monthly"}})
SMALL_JUNK_7 = expiring("small-junk-7d", 7, {"And": {"Prefix": "db/",
                                                     "ObjectSizeLessThan": 1 << 20}})
TINY_JUNK_7 = expiring("tiny-junk-7d", 7, {"And": {"Prefix": "db/", "ObjectSizeLessThan": 1024}})
TMP_1 = expiring("tmp-1d", 1, {"Tag": {"Key": "tmp", "Value": "true"}})


def gfs(newest_is_monthly: bool, days: int = 40) -> Bucket:
    """Tagged GFS backups: the first night's backup ``tier=monthly``, every other ``daily``."""
    objects = nightly(days)
    monthly = 0 if newest_is_monthly else 1
    tags = {key: {"tier": "monthly" if i == monthly else "daily"}
            for i, (key, _, _) in enumerate(objects)}
    return Bucket(objects, tags)


def directory_dumps(days: int = 40) -> Bucket:
    """Directory-format dumps, one object per file: a small toc.dat, a large table, a small
    one; and a sidecar (not a backup) next to each."""
    objects = []
    for key, _, age in nightly(days, "relay.dir"):
        objects += [(f"{key}/toc.dat", 40_000, age), (f"{key}/3001.dat.gz", 900_000_000, age),
                    (f"{key}/3002.dat.gz", 300_000, age), (f"{key}.sha256", 300, age)]
    return Bucket(objects, {k: {"kind": "nightly"} for k, _, _ in objects})


@pytest.mark.parametrize(("bucket", "rules", "says"), [
    # The newest is the monthly one: the daily backup before it is kept only 35 days.
    (gfs(newest_is_monthly=True), [DAILY_35, MONTHLY_400], "['daily-35d']"),
    (gfs(newest_is_monthly=False), [DAILY_35, MONTHLY_400], "['daily-35d']"),
    # The dumps' toc.dat and small tables go after 7 days: every dump older is destroyed.
    (directory_dumps(), [*KEEPS_400, SMALL_JUNK_7], "/toc.dat"),
])
def test_a_rule_that_expires_any_backup_object_early_opens(bucket: Bucket,
                                                           rules: list[dict[str, Any]],
                                                           says: str) -> None:
    backups, _ = s3_store(bucket, rules)
    with pytest.raises(AssertionError, match=re.escape(says)):
        STORAGE.test_lifecycle_keeps_backups(backups, Evidence())


@pytest.mark.parametrize(("bucket", "rules", "effective"), [
    (gfs(newest_is_monthly=True), [DAILY_400, MONTHLY_800], 400),
    (gfs(newest_is_monthly=False), [DAILY_400, MONTHLY_800], 400),
    (gfs(newest_is_monthly=False), [DAILY_400, MONTHLY_800, TMP_1], 400),
    # Only the sidecars (300 bytes) are that small: no object of a dump matches.
    (directory_dumps(), [*KEEPS_400, TINY_JUNK_7], 400),
    (directory_dumps(), None, None),
])
def test_rules_that_keep_every_backup_object_pass(bucket: Bucket,
                                                  rules: list[dict[str, Any]] | None,
                                                  effective: int | None) -> None:
    backups, fake = s3_store(bucket, rules)
    evidence = Evidence()
    STORAGE.test_lifecycle_keeps_backups(backups, evidence)
    (retention,) = [i.value for i in evidence.items if i.name == "retention"]
    assert retention["effective_retention_days"] == effective
    # Bounded: one listing from a recent day, one tag read per judged backup at most.
    listings = [kw for name, kw in fake.calls if name == "list_objects_v2"]
    assert listings and all("StartAfter" in kw for kw in listings)
    tag_reads = [kw["Key"] for name, kw in fake.calls if name == "get_object_tagging"]
    assert len(tag_reads) == (2 if rules and any("Tag" in r["Filter"] for r in rules) else 0)


def test_each_file_of_a_directory_dump_is_judged_by_its_own_size() -> None:
    backups, _ = s3_store(directory_dumps(), [*KEEPS_400, SMALL_JUNK_7])
    evidence = Evidence()
    with pytest.raises(AssertionError):
        STORAGE.test_lifecycle_keeps_backups(backups, evidence)
    (retention,) = [i.value for i in evidence.items if i.name == "retention"]
    matched = retention["matched_objects"]["small-junk-7d"]
    assert all(k.endswith(("/toc.dat", "/3002.dat.gz")) for k in matched)
    assert len(matched) == 4  # two files of each of the two judged dumps; never 3001.dat.gz


@pytest.mark.parametrize("criterion", ["test_lifecycle_keeps_backups",
                                       "test_backups_kept_as_long_as_claimed"])
def test_a_refused_tag_read_is_unverified(criterion: str) -> None:
    backups, _ = s3_store(gfs(newest_is_monthly=True), [DAILY_35, MONTHLY_400],
                          get_object_tagging=client_error("AccessDenied", 403,
                                                          "GetObjectTagging"))
    with pytest.raises(AccessRefused, match="tags"):
        getattr(STORAGE, criterion)(backups, Evidence())


# ---- P1-002: a dump compressed with zstd or lz4 is named, not judged -------------------------

SCRIPT = (b"--\n-- PostgreSQL database dump\n--\nSET client_encoding = 'UTF8';\n"
          b"COPY public.t (a) FROM stdin;\n1\n\\.\n--\n-- PostgreSQL database dump complete\n--\n")
# The frames' magic numbers and a little of what follows them (the rest cannot be read here).
ZSTD = b"\x28\xb5\x2f\xfd\x24\x58\x85\x02\x00" + bytes(range(256)) * 8
LZ4 = b"\x04\x22\x4d\x18\x64\x40\xa7\x00" + bytes(range(256)) * 8


def validity_verdict(data: bytes, name: str) -> tuple[Evidence, DumpInspection]:
    newest = backup(name=name, size=len(data))
    backups = store(FakeS3(get_object=lambda **_: body(data)))
    latest = LatestBackups(newest=newest, previous=None, count=1, listed_since=None,
                           requests=1)
    inspection = backups.inspect(newest)
    evidence = Evidence()
    DUMPS.test_latest_backup_is_valid_dump(latest, backups, inspection, evidence)
    return evidence, inspection


@pytest.mark.parametrize(("data", "packed"), [(ZSTD, "zstd"), (LZ4, "lz4")])
def test_a_zstd_or_lz4_dump_is_named_and_left_unverified(data: bytes, packed: str) -> None:
    with pytest.raises(MissingInput, match=f"cannot judge a {packed}-compressed dump"):
        validity_verdict(data, f"relay.sql.{packed}")
    newest = backup(name=f"relay.sql.{packed}", size=len(data))
    inspection = store(FakeS3(get_object=lambda **_: body(data))).inspect(newest)
    assert inspection.foreign_compression == packed and inspection.problems == []
    assert inspection.describe()["foreign_compression"] == packed
    # The sidecar criterion still has the digest of what was uploaded.
    assert inspection.sha256 == hashlib.sha256(data).hexdigest()


def test_a_gzip_script_is_still_judged_whole() -> None:
    import gzip

    evidence, inspection = validity_verdict(gzip.compress(SCRIPT), "relay.sql.gz")
    assert (inspection.format, inspection.compressed, inspection.foreign_compression) == (
        "plain", True, None)
    (dump,) = [i.value for i in evidence.items if i.name == "dump"]
    assert dump["problems"] == [] and dump["header"]["copy_blocks"] == 1


@pytest.mark.parametrize("data", [
    b"<html><body>503 Service Unavailable</body></html>" * 100,
    b"\x28\xb5\x2f" + SCRIPT,  # three bytes of the zstd magic are not a zstd frame
    LZ4[:2] + SCRIPT,
])
def test_what_is_no_dump_and_no_known_compression_still_opens(data: bytes) -> None:
    with pytest.raises(AssertionError, match="not a PostgreSQL dump"):
        validity_verdict(data, "relay.dump")


def test_a_refused_download_is_unverified() -> None:
    newest = backup()
    backups = store(FakeS3(get_object=client_error("AccessDenied", 403, "GetObject")))
    with pytest.raises(AccessRefused, match="downloading"):
        backups.inspect(newest)
