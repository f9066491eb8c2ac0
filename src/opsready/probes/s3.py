"""The backup store: nightly database dumps in an S3 bucket.

Read-only. Every call has a connect and a read timeout, and retries are bounded.

What is judged where:

- A configuration that S3 says is *absent* (no lifecycle rules, no default encryption, no
  public access block) is data: the method returns ``None`` and the check fails.
- What stops us from looking raises a ``ProbeError``: ``AccessRefused`` for denied or invalid
  credentials, ``TargetUnreachable`` / ``ProbeTimeout`` for the endpoint, ``MissingInput`` for
  a bucket that does not exist, ``UnexpectedResponse`` for anything else.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from opsready._errors import (
    AccessRefused,
    MissingInput,
    ProbeError,
    ProbeTimeout,
    TargetUnreachable,
    UnexpectedResponse,
)
from opsready.config import BackupsConfig
from opsready.evidence import redactor

__all__ = [
    "COLD_STORAGE_CLASSES",
    "BackupObject",
    "BackupStore",
    "DailyCoverage",
    "DrillRecord",
    "DumpFormat",
    "LatestBackups",
    "LifecycleRule",
    "ObjectStream",
    "sniff_format",
]

CHUNK = 1 << 20
DumpFormat = Literal["custom", "gzip", "plain", "unknown"]
COLD_STORAGE_CLASSES = frozenset({"GLACIER", "GLACIER_IR", "DEEP_ARCHIVE"})

_ACCESS_CODES = frozenset({
    "AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch",
    "ExpiredToken", "InvalidToken", "TokenRefreshRequired", "AccountProblem", "403",
})
_SHA256 = re.compile(r"\b([0-9a-fA-F]{64})\b")


@dataclass(frozen=True)
class BackupObject:
    key: str
    size: int
    last_modified: dt.datetime

    def age_hours(self, now: dt.datetime | None = None) -> float:
        now = now or dt.datetime.now(dt.UTC)
        return (now - self.last_modified).total_seconds() / 3600

    def describe(self) -> dict[str, Any]:
        return {"key": self.key, "size_bytes": self.size,
                "last_modified": self.last_modified.isoformat(),
                "age_hours": round(self.age_hours(), 2)}


@dataclass(frozen=True)
class LatestBackups:
    """The newest backup and the one before it (either may be missing)."""

    newest: BackupObject | None
    previous: BackupObject | None
    count: int


@dataclass(frozen=True)
class DailyCoverage:
    """Which of the last ``window_days`` 24-hour windows (counted back from now) hold a
    backup. Windows rather than calendar dates, so a nightly job that runs at 02:00 is
    never one day short just because today's run has not happened yet."""

    window_days: int
    days_with_backup: int
    missing_days: list[str]  # the UTC date on which each empty window ends
    oldest_age_days: float | None  # age of the oldest backup: how old the history is


@dataclass(frozen=True)
class DrillRecord:
    """The last restore drill as its record tells it: when it finished, how it ended (the
    record's own word, e.g. ``passed``) and its measured RTO in seconds."""

    key: str
    finished_at: dt.datetime
    data: dict[str, Any]
    outcome: str | None = None
    rto_seconds: float | None = None

    def age_days(self, now: dt.datetime | None = None) -> float:
        now = now or dt.datetime.now(dt.UTC)
        return (now - self.finished_at).total_seconds() / 86400


@dataclass(frozen=True)
class LifecycleRule:
    """One lifecycle rule, normalised from the three filter shapes S3 accepts."""

    id: str
    enabled: bool
    prefix: str  # "" covers the whole bucket
    expiration_days: int | None
    expiration_date: str | None
    transitions: list[tuple[int | None, str]] = field(default_factory=list)

    def covers(self, prefix: str) -> bool:
        return prefix.startswith(self.prefix)

    def cold_transition(self) -> tuple[int | None, str] | None:
        for days, storage in self.transitions:
            if storage in COLD_STORAGE_CLASSES:
                return days, storage
        return None

    def expires_before(self, retention_days: int) -> bool:
        """True when this rule deletes objects before ``retention_days``."""
        if self.expiration_date is not None:
            return True
        return self.expiration_days is not None and self.expiration_days < retention_days

    def keeps(self, retention_days: int) -> bool:
        """Keeps objects at least ``retention_days`` (expiring no earlier), or moves them to
        cold storage before any expiration."""
        if self.expires_before(retention_days):
            return False
        return self.expiration_days is not None or self.cold_transition() is not None

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "enabled": self.enabled, "prefix": self.prefix,
                "expiration_days": self.expiration_days,
                "expiration_date": self.expiration_date,
                "transitions": [{"days": d, "storage_class": s} for d, s in self.transitions]}


class ObjectStream:
    """The body of one object, read in chunks; close it (or use ``with``) when done."""

    def __init__(self, body: Any, key: str, size: int, store: BackupStore) -> None:
        self._body = body
        self.key = key
        self.size = size
        self._store = store

    def read(self, n: int = CHUNK) -> bytes:
        try:
            data: bytes = self._body.read(n)
        except Exception as exc:  # botocore/urllib3 read errors
            raise self._store._map(exc, f"reading {self.key}") from None
        return data

    def chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        while True:
            data = self.read(size)
            if not data:
                return
            yield data

    def close(self) -> None:
        self._body.close()

    def __enter__(self) -> ObjectStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sniff_format(header: bytes) -> DumpFormat:
    """What kind of dump a file is, from its first bytes."""
    if header.startswith(b"PGDMP"):
        return "custom"
    if header.startswith(b"\x1f\x8b"):
        return "gzip"
    text = header.lstrip()
    if text.startswith((b"--", b"SET ", b"CREATE ", b"\\connect")):
        return "plain"
    return "unknown"


class BackupStore:
    """The configured bucket and prefix, through boto3."""

    def __init__(self, cfg: BackupsConfig, timeout: float, *, client: Any = None) -> None:
        self.cfg = cfg
        self.bucket = cfg.s3.bucket
        self.prefix = cfg.s3.prefix
        self.timeout = timeout
        self.where = f"s3://{self.bucket}/{self.prefix}"
        self.endpoint = cfg.s3.endpoint_url or f"AWS S3 ({cfg.s3.region})"
        self._client = client if client is not None else self._make_client()
        self._listing: list[BackupObject] | None = None

    def _make_client(self) -> Any:
        import boto3
        from botocore.config import Config

        s3cfg = self.cfg.s3
        config = Config(
            connect_timeout=min(self.timeout, 5.0),
            read_timeout=self.timeout,
            retries={"max_attempts": 2, "mode": "standard"},
            # Custom endpoints (MinIO, moto, Ceph) rarely serve virtual-hosted buckets.
            s3={"addressing_style": "path" if s3cfg.endpoint_url else "auto"},
        )
        kwargs: dict[str, Any] = {"region_name": s3cfg.region, "config": config}
        if s3cfg.endpoint_url:
            kwargs["endpoint_url"] = s3cfg.endpoint_url
        if s3cfg.access_key_id is not None and s3cfg.secret_access_key is not None:
            kwargs["aws_access_key_id"] = s3cfg.access_key_id.get_secret_value()
            kwargs["aws_secret_access_key"] = s3cfg.secret_access_key.get_secret_value()
        return boto3.session.Session().client("s3", **kwargs)

    def close(self) -> None:
        close = getattr(self._client, "close", None)
        if close is not None:
            close()

    # ---- errors -------------------------------------------------------------------------

    def _map(self, exc: Exception, what: str) -> ProbeError:
        """A ``ProbeError`` for a boto3/botocore failure while doing ``what``."""
        from botocore import exceptions as bex

        target = f"s3: {what} in {self.where} at {self.endpoint}"
        if isinstance(exc, ProbeError):
            return exc
        if isinstance(exc, bex.ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _ACCESS_CODES or status == 403:
                return AccessRefused(
                    f"{target}: refused with {code or status}; check the credentials and that "
                    f"their policy allows this read"
                )
            if code == "NoSuchBucket":
                return MissingInput(
                    f"{target}: the bucket does not exist; check backups.s3.bucket "
                    f"and backups.s3.endpoint_url"
                )
            message = redactor.text(str(err.get("Message", "")))
            return UnexpectedResponse(f"{target}: S3 answered {code or status}: {message}")
        if isinstance(exc, bex.NoCredentialsError | bex.PartialCredentialsError):
            return MissingInput(
                f"{target}: no AWS credentials found; set backups.s3.access_key_id and "
                f"secret_access_key, or provide credentials to the runner"
            )
        if isinstance(exc, bex.ConnectTimeoutError | bex.ReadTimeoutError):
            return ProbeTimeout(
                f"{target}: no answer within {self.timeout:g}s; check that the endpoint is up, "
                f"or raise timeout_s"
            )
        if isinstance(exc, bex.EndpointConnectionError | bex.ConnectionError
                      | bex.HTTPClientError):
            return TargetUnreachable(
                f"{target}: the endpoint could not be reached ({type(exc).__name__}); check "
                f"backups.s3.endpoint_url and the network path"
            )
        if isinstance(exc, bex.BotoCoreError | OSError):
            return TargetUnreachable(f"{target}: {type(exc).__name__}: "
                                     f"{redactor.text(str(exc))}")
        return UnexpectedResponse(f"{target}: {type(exc).__name__}: {redactor.text(str(exc))}")

    def _call(self, what: str, method: str, absent: tuple[str, ...] = (), **kwargs: Any) -> Any:
        """Call one client method. ``absent`` error codes mean "not configured": ``None``."""
        from botocore.exceptions import ClientError

        try:
            return getattr(self._client, method)(**kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in absent:
                return None
            raise self._map(exc, what) from None
        except Exception as exc:  # mapped onto the ProbeError hierarchy
            raise self._map(exc, what) from None

    def _read(self, resp: Any, limit: int, key: str) -> bytes:
        """At most ``limit`` bytes of a ``get_object`` body, which is closed afterwards."""
        try:
            data: bytes = resp["Body"].read(limit)
        except Exception as exc:  # botocore/urllib3 read errors
            raise self._map(exc, f"reading {key}") from None
        finally:
            resp["Body"].close()
        return data

    # ---- backups ------------------------------------------------------------------------

    def list_backups(self) -> list[BackupObject]:
        """Every backup under the prefix (sidecars left out), oldest first. Cached."""
        if self._listing is not None:
            return self._listing
        found: list[BackupObject] = []
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix)
            for page in pages:
                # `Contents` is absent when nothing matches.
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    if key.endswith(self.cfg.sidecar_suffix) or key.endswith("/"):
                        continue
                    found.append(BackupObject(key=key, size=int(obj["Size"]),
                                              last_modified=_utc(obj["LastModified"])))
        except Exception as exc:  # mapped onto the ProbeError hierarchy
            raise self._map(exc, "listing backups") from None
        found.sort(key=lambda b: (b.last_modified, b.key))
        self._listing = found
        return found

    def latest(self) -> LatestBackups:
        backups = self.list_backups()
        newest = backups[-1] if backups else None
        previous = backups[-2] if len(backups) > 1 else None
        return LatestBackups(newest=newest, previous=previous, count=len(backups))

    def sidecar_digest(self, backup: BackupObject) -> str | None:
        """The sha256 written next to ``backup`` (``sha256sum`` format or a bare digest), or
        ``None`` when there is no sidecar. A sidecar without a digest raises."""
        key = backup.key + self.cfg.sidecar_suffix
        resp = self._call(f"reading {key}", "get_object", absent=("NoSuchKey", "404"),
                          Bucket=self.bucket, Key=key)
        if resp is None:
            return None
        text = self._read(resp, 4096, key).decode("utf-8", "replace")
        m = _SHA256.search(text)
        if m is None:
            raise UnexpectedResponse(
                f"s3: sidecar {key} holds no sha256 digest (found {text[:80]!r}); "
                f"expected `<64 hex>  <file name>` as written by sha256sum"
            )
        return m.group(1).lower()

    def sha256(self, backup: BackupObject) -> str:
        """The sha256 of the object's content, streamed in 1 MiB chunks."""
        digest = hashlib.sha256()
        with self.open(backup) as stream:
            for chunk in stream.chunks():
                digest.update(chunk)
        return digest.hexdigest()

    def header(self, backup: BackupObject, length: int = 16) -> bytes:
        """The first ``length`` bytes, with a ranged GET."""
        resp = self._call(f"reading the header of {backup.key}", "get_object",
                          Bucket=self.bucket, Key=backup.key, Range=f"bytes=0-{length - 1}")
        return self._read(resp, length, backup.key)

    def dump_format(self, backup: BackupObject) -> DumpFormat:
        return sniff_format(self.header(backup))

    def open(self, backup: BackupObject) -> ObjectStream:
        """A streaming body for ``backup``: nothing is buffered beyond one chunk."""
        resp = self._call(f"downloading {backup.key}", "get_object",
                          Bucket=self.bucket, Key=backup.key)
        size = int(resp.get("ContentLength", backup.size))
        return ObjectStream(resp["Body"], backup.key, size, self)

    def daily_coverage(self, window_days: int, now: dt.datetime | None = None) -> DailyCoverage:
        now = now or dt.datetime.now(dt.UTC)
        backups = self.list_backups()
        seen: set[int] = set()
        for b in backups:
            age = (now - b.last_modified).total_seconds()
            if age >= 0:
                seen.add(int(age // 86400))
        missing = [
            (now - dt.timedelta(days=i)).date().isoformat()
            for i in range(window_days) if i not in seen
        ]
        oldest = (now - backups[0].last_modified).total_seconds() / 86400 if backups else None
        return DailyCoverage(window_days=window_days,
                             days_with_backup=sum(1 for i in range(window_days) if i in seen),
                             missing_days=missing, oldest_age_days=oldest)

    def drill_record(self) -> DrillRecord | None:
        """The last drill's record (JSON with ``finished_at``, the configured outcome and RTO
        fields), or ``None`` when there is none or no key is configured. Without
        ``finished_at`` the object's LastModified counts."""
        key = self.cfg.drill_record_key
        if not key:
            return None
        resp = self._call(f"reading {key}", "get_object", absent=("NoSuchKey", "404"),
                          Bucket=self.bucket, Key=key)
        if resp is None:
            return None
        raw = self._read(resp, 1 << 20, key)
        try:
            data = json.loads(raw)
        except ValueError:
            raise UnexpectedResponse(
                f"s3: drill record s3://{self.bucket}/{key} is not JSON; expected an object "
                f"with finished_at"
            ) from None
        if not isinstance(data, dict):
            raise UnexpectedResponse(f"s3: drill record s3://{self.bucket}/{key} is not an object")
        finished = _parse_time(data.get("finished_at")) or _utc(resp["LastModified"])
        outcome = data.get(self.cfg.drill_record_outcome_field)
        rto = data.get(self.cfg.drill_record_rto_field)
        return DrillRecord(
            key=key, finished_at=finished, data=data,
            outcome=str(outcome) if isinstance(outcome, str | bool | int) else None,
            rto_seconds=float(rto) if isinstance(rto, int | float) and not isinstance(rto, bool)
            else None)

    # ---- bucket settings ----------------------------------------------------------------

    def versioning_status(self) -> str | None:
        """``Enabled``, ``Suspended``, or ``None`` when versioning was never set."""
        resp = self._call("reading versioning", "get_bucket_versioning", Bucket=self.bucket)
        status = resp.get("Status")
        return str(status) if status else None

    def lifecycle_rules(self) -> list[LifecycleRule] | None:
        """The lifecycle rules, or ``None`` when the bucket has no lifecycle configuration."""
        resp = self._call("reading the lifecycle configuration",
                          "get_bucket_lifecycle_configuration",
                          absent=("NoSuchLifecycleConfiguration",), Bucket=self.bucket)
        if resp is None:
            return None
        return [_rule(r, i) for i, r in enumerate(resp.get("Rules", []))]

    def default_encryption(self) -> list[str] | None:
        """The default SSE algorithms (``AES256``, ``aws:kms``), or ``None`` when unset."""
        resp = self._call("reading default encryption", "get_bucket_encryption",
                          absent=("ServerSideEncryptionConfigurationNotFoundError",),
                          Bucket=self.bucket)
        if resp is None:
            return None
        rules = resp.get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
        algos = [str(r.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm", ""))
                 for r in rules]
        return [a for a in algos if a] or None

    def public_access_block(self) -> dict[str, bool] | None:
        """The four public-access-block flags, or ``None`` when no block is configured."""
        resp = self._call("reading the public access block", "get_public_access_block",
                          absent=("NoSuchPublicAccessBlockConfiguration",), Bucket=self.bucket)
        if resp is None:
            return None
        flags = resp.get("PublicAccessBlockConfiguration", {})
        names = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy",
                 "RestrictPublicBuckets")
        return {n: bool(flags.get(n, False)) for n in names}


def _rule(raw: dict[str, Any], index: int) -> LifecycleRule:
    flt = raw.get("Filter")
    if isinstance(flt, dict):
        prefix = flt.get("Prefix")
        if prefix is None and isinstance(flt.get("And"), dict):
            prefix = flt["And"].get("Prefix")
    else:
        prefix = raw.get("Prefix")  # the legacy top-level shape
    exp = raw.get("Expiration") or {}
    days = exp.get("Days")
    date = exp.get("Date")
    transitions = [
        (t.get("Days"), str(t.get("StorageClass", "")))
        for t in raw.get("Transitions", []) or []
    ]
    return LifecycleRule(
        id=str(raw.get("ID") or f"rule #{index + 1}"),
        enabled=raw.get("Status") == "Enabled",
        prefix=str(prefix or ""),
        expiration_days=int(days) if days is not None else None,
        expiration_date=str(date) if date is not None else None,
        transitions=transitions,
    )


def _utc(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    parsed = _parse_time(value)
    if parsed is None:
        raise UnexpectedResponse(f"s3: unreadable timestamp {value!r}")
    return parsed


def _parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)
