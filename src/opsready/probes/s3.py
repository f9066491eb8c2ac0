"""The backup store: nightly database dumps in an S3 bucket.

Read-only. Every call has a connect and a read timeout, and retries are bounded.

Which objects are backups is decided by ``backups.key_pattern`` (``opsready.backup_keys``):
logs, manifests, sidecars and other databases' dumps under the same prefix are not backups.
Keys sort by date, so listing reads only the days a criterion needs (``StartAfter``), never
the whole history on every run. A directory-format dump is the set of objects under a
"directory" whose name matches the pattern and that holds a ``toc.dat``.

What is judged where:

- A configuration that S3 says is *absent* (no lifecycle rules, no default encryption, no
  public access block, no Object Lock) is data: the method returns ``None``.
- An API the store does not implement (HTTP 501 ``NotImplemented``: MinIO and Cloudflare R2
  for ``GetPublicAccessBlock``, R2 for ``GetObjectLockConfiguration``) is data too: no Object
  Lock is ``None``; no public access block API is ``PublicAccessBlock(implemented=False)``.
- A bucket that does not exist is data too: ``bucket_exists()`` is ``False``.
- What stops us from looking raises a ``ProbeError``: ``AccessRefused`` for denied or invalid
  credentials, ``TargetUnreachable`` / ``ProbeTimeout`` for the endpoint, ``MissingInput`` for
  a missing key or bucket found mid-way, ``UnexpectedResponse`` for anything else.

``inspect(backup)`` reads a backup once, end to end: its sha256 (for the sidecar) and its
validity as a dump, judged inside it (``probes.dumps``): the archive header and the whole
archive read by ``pg_restore`` (custom, tar, directory), or the plain script's header,
trailer and psql meta-commands, and the gzip stream's end marker.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from opsready._errors import (
    AccessRefused,
    MissingInput,
    ProbeError,
    ProbeTimeout,
    TargetUnreachable,
    UnexpectedResponse,
)
from opsready.backup_keys import KeyPattern
from opsready.config import BackupsConfig
from opsready.evidence import redactor
from opsready.probes._shared import shared_fact
from opsready.probes.dumps import (
    DumpFormat,
    DumpProblem,
    GzipStream,
    HostileDump,
    PlainScriptGuard,
    foreign_compression,
    is_gzip,
    major_version,
    parse_archive_header,
    sniff,
)

__all__ = [
    "COLD_STORAGE_CLASSES",
    "BackupObject",
    "BackupStore",
    "DailyCoverage",
    "DrillRecord",
    "DumpInspection",
    "EncryptionRule",
    "History",
    "LatestBackups",
    "LifecycleRule",
    "ObjectLock",
    "ObjectStream",
    "PublicAccessBlock",
    "Sidecar",
    "SidecarEntry",
]

CHUNK = 1 << 20
COLD_STORAGE_CLASSES = frozenset({"GLACIER", "GLACIER_IR", "DEEP_ARCHIVE"})
# How far back the newest backup is looked for first; each miss looks four times further.
_LOOKBACK_STEPS_DAYS = (8, 32, 128, 512)
# Pages of the version listing read to find the oldest trace of a backup.
_VERSION_PAGES = 5

# ``_call`` raises when the store does not implement an API, unless told what that means.
_RAISE = object()
_ACCESS_CODES = frozenset({
    "AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch",
    "ExpiredToken", "InvalidToken", "TokenRefreshRequired", "AccountProblem", "403",
})
# The digest line forms: the pattern (groups ``digest`` and ``name``) and the name the tool
# writes for a digest of standard input, which names no file.
_SIDECAR_FORMS: tuple[tuple[re.Pattern[str], str | None], ...] = (
    # sha256sum: ``<hex>  <name>``, ``<hex> *<name>``, a bare ``<hex>``; ``-`` is stdin.
    (re.compile(r"^\\?(?P<digest>[0-9a-fA-F]{64})(?: [ *](?P<name>.+))?$"), "-"),
    # BSD tag format (``sha256sum --tag``, ``shasum``).
    (re.compile(r"^SHA256 \((?P<name>.+)\) = (?P<digest>[0-9a-fA-F]{64})$"), None),
    # ``openssl dgst -sha256``: ``SHA2-256(name)= hex`` (OpenSSL 3), ``SHA256(name)= hex`` (1.1).
    (re.compile(r"^(?:SHA2-256|SHA256)\((?P<name>.+)\)= (?P<digest>[0-9a-fA-F]{64})$"),
     "stdin"),
)


@dataclass(frozen=True)
class BackupObject:
    key: str
    size: int
    last_modified: dt.datetime
    etag: str = ""
    # A directory-format dump: the names of its files under ``key + "/"``, and their sizes.
    files: tuple[str, ...] = ()
    file_sizes: tuple[int, ...] = ()

    @property
    def is_directory(self) -> bool:
        return bool(self.files)

    def objects(self) -> list[tuple[str, int]]:
        """The S3 objects this backup is made of, key and size: itself, or each file of a
        directory dump (S3 applies a lifecycle rule to each object on its own)."""
        if not self.files:
            return [(self.key, self.size)]
        return [(f"{self.key}/{name}", size)
                for name, size in zip(self.files, self.file_sizes, strict=True)]

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    def age_hours(self, now: dt.datetime | None = None) -> float:
        now = now or dt.datetime.now(dt.UTC)
        return (now - self.last_modified).total_seconds() / 3600

    def age_days(self, now: dt.datetime | None = None) -> float:
        return self.age_hours(now) / 24

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "size_bytes": self.size,
                               "last_modified": self.last_modified.isoformat(),
                               "age_hours": round(self.age_hours(), 2)}
        if self.files:
            out["directory_files"] = len(self.files)
        return out


@dataclass(frozen=True)
class LatestBackups:
    """The newest backup and the one before it (either may be missing), and how they
    were found."""

    newest: BackupObject | None
    previous: BackupObject | None
    count: int  # backups in the listed window
    listed_since: dt.date | None  # None: the whole prefix was listed
    requests: int


@dataclass(frozen=True)
class DailyCoverage:
    """How many of the last ``window_days`` nights had their backup, counted from the gaps
    between backups rather than from fixed 24-hour bins: a nightly job whose start drifts by
    an hour from night to night (schedulers are best effort) lands some nights on either side
    of any fixed boundary, and bins would then hold two backups or none. Between two backups
    ``g`` apart, ``round(g / 24h) - 1`` nights were missed; after the newest, one for each
    whole day since it."""

    window_days: int
    days_with_backup: int
    missing_days: list[str]  # the UTC date each missed night's backup was due, newest first


@dataclass(frozen=True)
class History:
    """How far back the backups go: the oldest current backup, and the oldest trace of an
    earlier one (a noncurrent version or a delete marker of a backup key)."""

    oldest: BackupObject | None
    oldest_trace: dt.datetime | None
    trace_key: str | None


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
class SidecarEntry:
    digest: str  # lower-case hex
    name: str | None  # the file name the line names, if any


@dataclass(frozen=True)
class Sidecar:
    """The checksum file next to a backup, in ``sha256sum`` format (``<hex>  <name>``,
    ``<hex> *<name>`` or a bare ``<hex>``), BSD tag format (``SHA256 (<name>) = <hex>``) or
    ``openssl dgst`` format (``SHA2-256(<name>)= <hex>``, ``SHA256(<name>)= <hex>``). A digest
    of standard input (sha256sum's ``-``, openssl's ``stdin``) names no file."""

    key: str
    found: bool
    entries: tuple[SidecarEntry, ...] = ()
    excerpt: str = ""

    def for_name(self, name: str) -> SidecarEntry | None:
        """The entry for ``name``: a line naming it, else a single line naming nothing."""
        for entry in self.entries:
            if entry.name is not None and entry.name.rsplit("/", 1)[-1] == name:
                return entry
        unnamed = [e for e in self.entries if e.name is None]
        if len(self.entries) == 1 and unnamed:
            return unnamed[0]
        return None

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries if e.name is not None]


@dataclass
class DumpInspection:
    """One full read of a backup: what it is and whether it is whole."""

    key: str
    format: DumpFormat = "unknown"
    compressed: bool = False  # gzip
    # A compression that is recognised but not unwrapped (zstd, lz4): the dump is not judged.
    foreign_compression: str | None = None
    bytes_read: int = 0
    sha256: str | None = None  # single-object dumps
    file_digests: dict[str, str] = field(default_factory=dict)  # directory dumps
    header: dict[str, Any] = field(default_factory=dict)
    toc_entries: int | None = None
    table_data_entries: int | None = None
    problems: list[str] = field(default_factory=list)
    hostile: str | None = None
    # The tools could not judge (missing, or older than the dump): the check reports error.
    tool_error: ProbeError | None = None

    def describe(self) -> dict[str, Any]:
        return {"key": self.key, "format": self.format, "gzip": self.compressed,
                "foreign_compression": self.foreign_compression,
                "bytes_read": self.bytes_read, "header": self.header,
                "toc_entries": self.toc_entries, "table_data_entries": self.table_data_entries,
                "problems": self.problems, "hostile": self.hostile,
                "tool_error": str(self.tool_error) if self.tool_error else None}


@dataclass(frozen=True)
class LifecycleRule:
    """One lifecycle rule, normalised from the filter shapes S3 accepts (the legacy top-level
    ``Prefix``, ``Filter.Prefix``, ``Filter.Tag``, ``Filter.ObjectSizeGreaterThan`` /
    ``LessThan`` and ``Filter.And``)."""

    id: str
    enabled: bool
    prefix: str  # "" covers the whole bucket
    tags: tuple[tuple[str, str], ...] = ()
    size_greater_than: int | None = None
    size_less_than: int | None = None
    expiration_days: int | None = None
    expiration_date: str | None = None
    noncurrent_days: int | None = None
    transitions: tuple[tuple[int | None, str], ...] = ()

    def covers_prefix(self, prefix: str) -> bool:
        """Whether the rule's prefix overlaps keys under ``prefix``."""
        return prefix.startswith(self.prefix) or self.prefix.startswith(prefix)

    def applies_to(self, key: str, size: int, tags: dict[str, str]) -> bool:
        """Whether this enabled rule acts on an object with this key, size and tags (every
        condition of an ``And`` must hold, as S3 evaluates them)."""
        if not self.enabled or not key.startswith(self.prefix):
            return False
        if any(tags.get(k) != v for k, v in self.tags):
            return False
        if self.size_greater_than is not None and not size > self.size_greater_than:
            return False
        return self.size_less_than is None or size < self.size_less_than

    @property
    def expires(self) -> bool:
        return self.expiration_days is not None or self.expiration_date is not None

    def cold_transition(self) -> tuple[int | None, str] | None:
        for days, storage in self.transitions:
            if storage in COLD_STORAGE_CLASSES:
                return days, storage
        return None

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "enabled": self.enabled, "prefix": self.prefix,
                "tags": dict(self.tags), "size_greater_than": self.size_greater_than,
                "size_less_than": self.size_less_than,
                "expiration_days": self.expiration_days,
                "expiration_date": self.expiration_date,
                "noncurrent_version_expiration_days": self.noncurrent_days,
                "transitions": [{"days": d, "storage_class": s} for d, s in self.transitions]}


@dataclass(frozen=True)
class ObjectLock:
    """The bucket's Object Lock default retention (S3 keeps every version that long)."""

    enabled: bool
    mode: str | None
    days: int | None  # Years count as 365 days


@dataclass(frozen=True)
class PublicAccessBlock:
    """The bucket's public access block: its four flags, or that the store has no such API
    (it answered ``NotImplemented``), so public access is controlled some other way."""

    flags: dict[str, bool] = field(default_factory=dict)
    implemented: bool = True


@dataclass(frozen=True)
class EncryptionRule:
    algorithm: str
    kms_key_id: str | None


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


class BackupSource:
    """One backup as the restore drill reads it (``probes.postgres.DumpSource``): the same
    version that was listed (its ETag must still match)."""

    def __init__(self, store: BackupStore, backup: BackupObject) -> None:
        self.store, self.backup = store, backup
        self.key, self.size = backup.key, backup.size

    def open(self) -> ObjectStream:
        return self.store.open(self.backup)

    def files(self) -> list[str]:
        return list(self.backup.files)

    def open_file(self, name: str) -> ObjectStream:
        return self.store.open_key(f"{self.backup.key}/{name}")


class BackupStore:
    """The configured bucket and prefix, through boto3."""

    def __init__(self, cfg: BackupsConfig, timeout: float, *, client: Any = None) -> None:
        self.cfg = cfg
        self.bucket = cfg.s3.bucket
        self.prefix = cfg.s3.prefix
        self.timeout = timeout
        self.where = f"s3://{self.bucket}/{self.prefix}"
        self.endpoint = cfg.s3.endpoint_url or f"AWS S3 ({cfg.s3.region})"
        self.pattern = KeyPattern.compile(cfg.key_pattern, self.prefix) \
            if cfg.key_pattern else None
        # Made on first use: building a boto3 client costs a noticeable fraction of a second
        # of CPU, which the read-ahead of shared facts then spends on its own thread.
        self._made: Any = client
        self._making = threading.Lock()
        self._since: dict[dt.date | None, list[BackupObject]] = {}
        # The requests each listing took (``latest`` reports its own, whatever other threads send).
        self._since_pages: dict[dt.date | None, int] = {}
        self.requests = 0
        self._exists: bool | None = None
        self._inspections: dict[str, DumpInspection] = {}

    @property
    def _client(self) -> Any:
        with self._making:
            if self._made is None:
                self._made = self._make_client()
            return self._made

    def _make_client(self) -> Any:
        import boto3
        from botocore.config import Config

        s3cfg = self.cfg.s3
        config = Config(
            connect_timeout=min(self.timeout, 5.0),
            read_timeout=self.timeout,
            # Two attempts in all (``max_attempts`` would count retries only, three calls).
            retries={"total_max_attempts": 2, "mode": "standard"},
            # Custom endpoints (MinIO, moto, Ceph) rarely serve virtual-hosted buckets.
            s3={"addressing_style": "path" if s3cfg.endpoint_url else "auto"},
        )
        kwargs: dict[str, Any] = {"region_name": s3cfg.region, "config": config}
        if s3cfg.endpoint_url:
            kwargs["endpoint_url"] = s3cfg.endpoint_url
        if s3cfg.access_key_id is not None and s3cfg.secret_access_key is not None:
            kwargs["aws_access_key_id"] = s3cfg.access_key_id.get_secret_value()
            kwargs["aws_secret_access_key"] = s3cfg.secret_access_key.get_secret_value()
        client = boto3.session.Session().client("s3", **kwargs)
        _fail_fast_once_down(client)
        return client

    def close(self) -> None:
        close = getattr(self._made, "close", None)
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
            if code in ("PreconditionFailed", "412"):
                return UnexpectedResponse(
                    f"{target}: the object changed while it was being judged; run again")
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

    def _call(self, what: str, method: str, absent: tuple[str, ...] = (),
              unimplemented: Any = _RAISE, **kwargs: Any) -> Any:
        """Call one client method. ``absent`` error codes mean "not configured": ``None``.
        ``unimplemented`` is the answer when the store has no such API (``NotImplemented``,
        HTTP 501); without it that is an ``UnexpectedResponse``."""
        from botocore.exceptions import ClientError

        self.requests += 1
        try:
            return getattr(self._client, method)(**kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in absent:
                return None
            if unimplemented is not _RAISE and (code == "NotImplemented" or status == 501):
                return unimplemented
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

    # ---- the bucket ---------------------------------------------------------------------

    @shared_fact
    def bucket_exists(self) -> bool:
        """Whether the bucket exists (``HeadBucket``); a refusal raises ``AccessRefused``."""
        if self._exists is None:
            self._exists = self._call("checking the bucket", "head_bucket",
                                      absent=("404", "NoSuchBucket", "NotFound"),
                                      Bucket=self.bucket) is not None
        return self._exists

    # ---- backups ------------------------------------------------------------------------

    def _require_pattern(self) -> KeyPattern:
        if self.pattern is None:
            raise MissingInput("backups.key_pattern is not set: which objects are backups is "
                               "unknown; set it, e.g. '%Y-%m-%d/relay.*'")
        return self.pattern

    def _pages(self, method: str, what: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        try:
            for page in self._client.get_paginator(method).paginate(Bucket=self.bucket,
                                                                     **kwargs):
                self.requests += 1
                yield page
        except ProbeError:
            raise
        except Exception as exc:  # mapped onto the ProbeError hierarchy
            raise self._map(exc, what) from None

    def backups_since(self, day: dt.date | None) -> list[BackupObject]:
        """Every backup whose key date is ``day`` or later (``None``: every backup), oldest
        first. One listing from ``StartAfter``; cached per day."""
        if day in self._since:
            return self._since[day]
        pattern = self._require_pattern()
        kwargs: dict[str, Any] = {"Prefix": pattern.list_prefix}
        if day is not None:
            kwargs["StartAfter"] = pattern.start_after(day)
        singles: list[BackupObject] = []
        dirs: dict[str, list[dict[str, Any]]] = {}
        suffix = self.cfg.sidecar_suffix
        pages = 0
        for page in self._pages("list_objects_v2", "listing backups", **kwargs):
            pages += 1
            # `Contents` is absent when nothing matches.
            for obj in page.get("Contents", []):
                key = str(obj["Key"])
                if key.endswith(suffix) or key.endswith("/"):
                    continue
                if pattern.matches(key):
                    singles.append(_object(obj))
                    continue
                parent = key.rsplit("/", 1)[0] if "/" in key else ""
                while parent and parent.startswith(pattern.list_prefix):
                    if pattern.matches(parent):
                        dirs.setdefault(parent, []).append(obj)
                        break
                    parent = parent.rsplit("/", 1)[0] if "/" in parent else ""
        found = singles + [_directory(k, objs) for k, objs in dirs.items()
                           if any(str(o["Key"]) == f"{k}/toc.dat" for o in objs)]
        found.sort(key=lambda b: (b.last_modified, b.key))
        self._since_pages[day] = pages
        self._since[day] = found
        return found

    @shared_fact
    def latest(self, now: dt.datetime | None = None) -> LatestBackups:
        """The newest backup and the one before it, listing only recent days first."""
        now = now or dt.datetime.now(dt.UTC)
        requests = 0
        first = max(2, int(self.cfg.rpo_hours // 24) + 2)
        for days in (first, *_LOOKBACK_STEPS_DAYS, None):
            since = None if days is None else (now - dt.timedelta(days=days)).date()
            listed = since in self._since
            backups = self.backups_since(since)
            requests += 0 if listed else self._since_pages.get(since, 0)
            if len(backups) >= 2 or days is None:
                break
        newest = backups[-1] if backups else None
        previous = backups[-2] if len(backups) > 1 else None
        return LatestBackups(newest=newest, previous=previous, count=len(backups),
                             listed_since=since, requests=requests)

    @shared_fact
    def history(self) -> History:
        """The oldest current backup (the first page of the listing: keys sort by date) and
        the oldest trace of an earlier one in the version listing, if the bucket keeps
        versions."""
        pattern = self._require_pattern()
        oldest: BackupObject | None = None
        for page in self._pages("list_objects_v2", "listing the oldest backups",
                                Prefix=pattern.list_prefix):
            keys = [o for o in page.get("Contents", [])
                    if not str(o["Key"]).endswith(self.cfg.sidecar_suffix)]
            backups = [_object(o) for o in keys if pattern.matches(str(o["Key"]))]
            if not backups:
                dirs = {str(o["Key"]).rsplit("/", 1)[0] for o in keys
                        if str(o["Key"]).endswith("/toc.dat")}
                backups = [b for d in sorted(dirs) if pattern.matches(d)
                           for b in self.backups_since(pattern.date_of(d).date())  # type: ignore[union-attr]
                           if b.key == d]
            if backups:
                oldest = min(backups, key=lambda b: b.last_modified)
                break
        trace: dt.datetime | None = None
        trace_key: str | None = None
        for n, page in enumerate(self._pages("list_object_versions", "listing object versions",
                                             Prefix=pattern.list_prefix)):
            for entry in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                key = str(entry["Key"])
                head = key if pattern.matches(key) else key.rsplit("/", 1)[0]
                day = pattern.date_of(head)
                if day is None or key.endswith(self.cfg.sidecar_suffix):
                    continue
                when = min(day, _utc(entry["LastModified"]))
                if trace is None or when < trace:
                    trace, trace_key = when, key
            if trace is not None or n + 1 >= _VERSION_PAGES:
                break
        return History(oldest=oldest, oldest_trace=trace, trace_key=trace_key)

    @shared_fact
    def sidecar(self, backup: BackupObject) -> Sidecar:
        """The checksum file next to ``backup`` (``<key><sidecar_suffix>``)."""
        key = backup.key + self.cfg.sidecar_suffix
        resp = self._call(f"reading {key}", "get_object", absent=("NoSuchKey", "404"),
                          Bucket=self.bucket, Key=key)
        if resp is None:
            return Sidecar(key=key, found=False)
        text = self._read(resp, 1 << 20, key).decode("utf-8", "replace")
        entries: list[SidecarEntry] = []
        for line in text.splitlines():
            entry = _sidecar_entry(line.strip())
            if entry is not None:
                entries.append(entry)
        return Sidecar(key=key, found=True, entries=tuple(entries),
                       excerpt=redactor.excerpt(text, 120))

    def open(self, backup: BackupObject) -> ObjectStream:
        """A streaming body for ``backup``, the version that was listed."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": backup.key}
        if backup.etag:
            kwargs["IfMatch"] = backup.etag
        resp = self._call(f"downloading {backup.key}", "get_object", **kwargs)
        size = int(resp.get("ContentLength", backup.size))
        return ObjectStream(resp["Body"], backup.key, size, self)

    def open_key(self, key: str) -> ObjectStream:
        resp = self._call(f"downloading {key}", "get_object", Bucket=self.bucket, Key=key)
        return ObjectStream(resp["Body"], key, int(resp.get("ContentLength", 0)), self)

    def source(self, backup: BackupObject) -> BackupSource:
        """``backup`` for the restore drill."""
        return BackupSource(self, backup)

    @shared_fact
    def object_tags(self, backup: BackupObject) -> dict[str, str]:
        """The tags of ``backup``; for a directory dump, those of its ``toc.dat``, which stand
        for its files (one read per backup, however many files it has)."""
        key = f"{backup.key}/toc.dat" if backup.is_directory else backup.key
        resp = self._call(f"reading the tags of {key}", "get_object_tagging",
                          Bucket=self.bucket, Key=key)
        return {str(t["Key"]): str(t["Value"]) for t in resp.get("TagSet", [])}

    def daily_coverage(self, window_days: int, now: dt.datetime | None = None) -> DailyCoverage:
        now = now or dt.datetime.now(dt.UTC)
        start = now - dt.timedelta(days=window_days)
        day = dt.timedelta(days=1)
        # The night before the window too, so the window's first gap is measured from it.
        times = sorted(b.last_modified for b in
                       self.backups_since((start - day).date()) if b.last_modified <= now)
        nights: list[dt.datetime] = []
        for t in times:
            if not nights or t - nights[-1] >= day / 2:  # a second backup the same night
                nights.append(t)
        before = [n for n in nights if n <= start]
        # Without a backup the night before, the window opens as if one had run half a day
        # earlier: a first backup within a day of the start misses nothing.
        previous = before[-1] if before else start - day / 2
        due: list[dt.datetime] = []
        for night in nights[len(before):]:
            gap = night - previous
            missed = max(0, round(gap / day) - 1)
            due += [previous + gap * i / (missed + 1) for i in range(1, missed + 1)]
            previous = night
        due += [previous + day * i for i in range(1, int((now - previous) / day) + 1)]
        due = [d for d in due if start <= d <= now]
        return DailyCoverage(
            window_days=window_days, days_with_backup=max(0, window_days - len(due)),
            missing_days=sorted({d.date().isoformat() for d in due}, reverse=True))

    @shared_fact
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
            # A JSON boolean keeps its JSON spelling (true, false), not Python's.
            outcome=(str(outcome).lower() if isinstance(outcome, bool)
                     else str(outcome) if isinstance(outcome, str | int) else None),
            rto_seconds=float(rto) if isinstance(rto, int | float) and not isinstance(rto, bool)
            else None)

    # ---- inside the dump ----------------------------------------------------------------

    @shared_fact
    def inspect(self, backup: BackupObject, pg_restore: str = "pg_restore") -> DumpInspection:
        """Read ``backup`` once, end to end (cached): its digest and its validity, judged
        with ``pg_restore`` for the archive formats."""
        if backup.key not in self._inspections:
            result = DumpInspection(key=backup.key)
            try:
                if backup.is_directory:
                    self._inspect_directory(backup, result, pg_restore)
                else:
                    with self.open(backup) as stream:
                        _inspect_stream(stream.chunks(), result, pg_restore)
            except ProbeError as exc:
                if not isinstance(exc, MissingInput) or "pg_restore" not in str(exc):
                    raise
                result.tool_error = exc
            self._inspections[backup.key] = result
        return self._inspections[backup.key]

    def _inspect_directory(self, backup: BackupObject, result: DumpInspection,
                           pg_restore: str) -> None:
        result.format = "directory"
        with tempfile.TemporaryDirectory(prefix="opsready-inspect-") as tmp:
            root = Path(tmp)
            for name in backup.files:
                digest = hashlib.sha256()
                with self.open_key(f"{backup.key}/{name}") as stream, \
                        open(root / Path(name).name, "wb") as fh:
                    for chunk in stream.chunks():
                        digest.update(chunk)
                        fh.write(chunk)
                        result.bytes_read += len(chunk)
                result.file_digests[name] = digest.hexdigest()
            toc = (root / "toc.dat").read_bytes()[:4096]
            if not _header(toc, result, pg_restore):
                return
            _toc(root, result, pg_restore, stdin=None)
            code, err = _run_tool([pg_restore, "-f", os.devnull, str(root)], None)
            if code != 0:
                result.problems.append(f"pg_restore could not read the whole directory "
                                       f"dump: {err}")

    # ---- bucket settings ----------------------------------------------------------------

    @shared_fact
    def versioning_status(self) -> str | None:
        """``Enabled``, ``Suspended``, or ``None`` when versioning was never set."""
        resp = self._call("reading versioning", "get_bucket_versioning", Bucket=self.bucket)
        status = resp.get("Status")
        return str(status) if status else None

    @shared_fact
    def lifecycle_rules(self) -> list[LifecycleRule] | None:
        """The lifecycle rules, or ``None`` when the bucket has no lifecycle configuration."""
        resp = self._call("reading the lifecycle configuration",
                          "get_bucket_lifecycle_configuration",
                          absent=("NoSuchLifecycleConfiguration",), Bucket=self.bucket)
        if resp is None:
            return None
        return [_rule(r, i) for i, r in enumerate(resp.get("Rules", []))]

    @shared_fact
    def object_lock(self) -> ObjectLock | None:
        """The Object Lock configuration, or ``None`` when the bucket has none, or the store
        has no S3 Object Lock at all (``NotImplemented``, as Cloudflare R2 answers)."""
        resp = self._call("reading the Object Lock configuration",
                          "get_object_lock_configuration",
                          absent=("ObjectLockConfigurationNotFoundError",),
                          unimplemented=None, Bucket=self.bucket)
        if resp is None:
            return None
        conf = resp.get("ObjectLockConfiguration", {})
        retention = conf.get("Rule", {}).get("DefaultRetention", {})
        days = int(retention.get("Days") or 0) or int(retention.get("Years") or 0) * 365
        return ObjectLock(enabled=conf.get("ObjectLockEnabled") == "Enabled",
                          mode=retention.get("Mode"), days=days or None)

    @shared_fact
    def default_encryption(self) -> list[EncryptionRule] | None:
        """The default encryption rules, or ``None`` when unset."""
        resp = self._call("reading default encryption", "get_bucket_encryption",
                          absent=("ServerSideEncryptionConfigurationNotFoundError",),
                          Bucket=self.bucket)
        if resp is None:
            return None
        rules = resp.get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
        found = []
        for r in rules:
            default = r.get("ApplyServerSideEncryptionByDefault", {})
            if default.get("SSEAlgorithm"):
                found.append(EncryptionRule(str(default["SSEAlgorithm"]),
                                            default.get("KMSMasterKeyID")))
        return found or None

    @shared_fact
    def public_access_block(self) -> PublicAccessBlock | None:
        """The four public-access-block flags, ``None`` when no block is configured, or
        ``implemented=False`` when the store has no such API (MinIO, Cloudflare R2)."""
        resp = self._call("reading the public access block", "get_public_access_block",
                          absent=("NoSuchPublicAccessBlockConfiguration",),
                          unimplemented=PublicAccessBlock(implemented=False),
                          Bucket=self.bucket)
        if resp is None or isinstance(resp, PublicAccessBlock):
            return resp
        flags = resp.get("PublicAccessBlockConfiguration", {})
        names = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy",
                 "RestrictPublicBuckets")
        return PublicAccessBlock({n: bool(flags.get(n, False)) for n in names})


def _sidecar_entry(line: str) -> SidecarEntry | None:
    """One digest line of a sidecar, in any of the forms the tools write."""
    for form, stdin_name in _SIDECAR_FORMS:
        m = form.match(line)
        if m is not None:
            name = m.group("name")
            return SidecarEntry(m.group("digest").lower(),
                                None if name is None or name == stdin_name else name)
    return None


# ---- reading a dump ---------------------------------------------------------------------------


def _inspect_stream(chunks: Iterator[bytes], result: DumpInspection, pg_restore: str) -> None:
    """Hash and judge a single-object dump in one pass."""
    digest = hashlib.sha256()
    gz: GzipStream | None = None
    guard: PlainScriptGuard | None = None
    tools: list[_Tool] = []
    head = b""
    held: list[bytes] | None = []  # the start, until the format is known

    def judge(piece: bytes) -> None:
        if guard is not None:
            _guard_feed(guard, piece, result)
        for tool in tools:
            tool.write(piece)

    try:
        for raw in chunks:
            digest.update(raw)
            if result.bytes_read == 0:
                _unwrap_or_not(raw, result)
                if result.compressed:
                    gz = GzipStream()
            result.bytes_read += len(raw)
            if result.foreign_compression:
                continue  # hashed for the sidecar, not judged
            for piece in _safe_gunzip(gz, raw, result) if gz is not None else [raw]:
                if held is None:
                    judge(piece)
                    continue
                held.append(piece)
                head = (head + piece)[:4096]
                if len(head) == 4096:
                    guard, tools = _start(head, result, pg_restore)
                    for early in held:
                        judge(early)
                    held = None
        if gz is not None and not result.problems:
            try:
                gz.finish()
            except DumpProblem as exc:
                result.problems.append(str(exc))
        if held:
            guard, tools = _start(head, result, pg_restore)
            for early in held:
                judge(early)
        if guard is not None:
            _guard_finish(guard, result)
        _finish_tools(tools, result)
    finally:
        for tool in tools:
            tool.kill()
    result.sha256 = digest.hexdigest()
    if result.format == "unknown" and not result.problems and not result.foreign_compression:
        result.problems.append(f"not a PostgreSQL dump: it starts with {head[:16]!r}")


def _unwrap_or_not(first: bytes, result: DumpInspection) -> None:
    """gzip is unwrapped; zstd and lz4 are named, and leave the dump unjudged (an error of the
    criterion, not a fail: the backup may be fine)."""
    result.compressed = is_gzip(first)
    packed = foreign_compression(first)
    if packed is not None:
        result.foreign_compression = packed
        result.tool_error = MissingInput(
            f"{result.key} is a {packed}-compressed dump (its first bytes are the {packed} "
            f"frame magic): cannot judge a {packed}-compressed dump here, only gzip is "
            f"unwrapped; its sha256 is still compared with the sidecar; check it by "
            f"decompressing it and running pg_restore -l (or reading the script's trailer)")


def _safe_gunzip(gz: GzipStream, raw: bytes, result: DumpInspection) -> list[bytes]:
    if result.problems:
        return []
    try:
        return list(gz.feed(raw))
    except DumpProblem as exc:
        result.problems.append(str(exc))
        return []


def _start(head: bytes, result: DumpInspection, pg_restore: str,
           ) -> tuple[PlainScriptGuard | None, list[_Tool]]:
    """Decide the format from the first bytes and start what judges the rest."""
    result.format = sniff(head)
    if result.format == "plain":
        return PlainScriptGuard(), []
    if result.format not in ("custom", "tar"):
        return None, []
    if not _header(head if result.format == "custom" else head[512:], result, pg_restore):
        return None, []
    # Two readers of the same bytes: -l lists the TOC (and exits early), -f reads it all.
    return None, [_Tool([pg_restore, "-l"]), _Tool([pg_restore, "-f", os.devnull])]


def _header(data: bytes, result: DumpInspection, pg_restore: str) -> bool:
    try:
        header = parse_archive_header(data)
    except DumpProblem as exc:
        result.problems.append(f"the archive header is malformed: {exc}")
        return False
    if header is None:
        result.problems.append("the archive header is cut short")
        return False
    result.header = header.describe()
    try:
        tool_major = _tool_major(pg_restore)
    except MissingInput as exc:
        # The digest is still worth having: keep reading, and report the tool.
        result.tool_error = exc
        return False
    dumped_by = major_version(header.pg_dump_version)
    if tool_major is not None and dumped_by is not None and dumped_by > tool_major:
        result.tool_error = MissingInput(
            f"{result.key} was written by pg_dump {dumped_by} (archive {header.version_text}), "
            f"newer than pg_restore {tool_major} here; install PostgreSQL {dumped_by} client "
            f"tools to judge this backup")
        return False
    return True


def _guard_feed(guard: PlainScriptGuard, piece: bytes, result: DumpInspection) -> None:
    if result.hostile or result.problems:
        return
    try:
        for _ in guard.feed(piece):
            pass
    except HostileDump as exc:
        result.hostile = str(exc)
    except DumpProblem as exc:
        result.problems.append(str(exc))


def _guard_finish(guard: PlainScriptGuard, result: DumpInspection) -> None:
    if not (result.hostile or result.problems):
        try:
            for _ in guard.finish():
                pass
        except HostileDump as exc:
            result.hostile = str(exc)
    result.header = {"dumped_from": guard.dumped_from, "dumped_by": guard.dumped_by,
                     "lines": guard.line, "copy_blocks": guard.copy_blocks}
    if result.hostile or result.problems:
        return
    if not guard.header_seen:
        result.problems.append("the script does not open with '-- PostgreSQL database dump'")
    if not guard.trailer_seen:
        result.problems.append(
            f"the script ends after {result.bytes_read} bytes without the '-- PostgreSQL "
            f"database dump complete' trailer: it is truncated")


class _Tool:
    """A pg_restore reading from our pipe, its output in temp files (a pipe could fill up
    while we are still writing its input)."""

    def __init__(self, argv: list[str]) -> None:
        self.out = tempfile.TemporaryFile()  # noqa: SIM115 - closed in finish()
        self.err = tempfile.TemporaryFile()  # noqa: SIM115 - closed in finish()
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=self.out,
                                         stderr=self.err, start_new_session=True)
        except OSError as exc:
            self.out.close()
            self.err.close()
            raise MissingInput(f"{argv[0]} could not be started ({exc}); install the "
                               f"PostgreSQL client tools (pg_restore)") from None

    def write(self, data: bytes) -> None:
        stdin = self.proc.stdin
        if stdin is None or stdin.closed:
            return
        try:
            stdin.write(data)
        except (BrokenPipeError, ValueError):
            with contextlib.suppress(OSError):
                stdin.close()

    def finish(self) -> tuple[int, str, str]:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            code = self.proc.wait(timeout=600)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.proc.wait()
        texts = []
        for fh in (self.out, self.err):
            fh.seek(0)
            texts.append(fh.read(4 << 20).decode("utf-8", "replace"))
            fh.close()
        return code, texts[0], texts[1]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _finish_tools(tools: list[_Tool], result: DumpInspection) -> None:
    if not tools:
        return
    (lcode, lout, lerr), (fcode, _fout, ferr) = (tool.finish() for tool in tools)
    for err in (lerr, ferr):
        if "unsupported version" in err:
            result.tool_error = MissingInput(
                f"pg_restore cannot read {result.key}: {_first_line(err)}; install newer "
                f"PostgreSQL client tools")
            return
    if lcode != 0:
        result.problems.append(f"pg_restore -l cannot read the table of contents: "
                               f"{_first_line(lerr)}")
        return
    entries = [ln for ln in lout.splitlines() if ln and not ln.startswith(";")]
    result.toc_entries = len(entries)
    result.table_data_entries = sum(1 for ln in entries if " TABLE DATA " in ln)
    if fcode != 0:
        result.problems.append(
            f"pg_restore could not read the archive to its end after {result.bytes_read} "
            f"bytes: {_first_line(ferr)}")


def _toc(root: Path, result: DumpInspection, pg_restore: str, stdin: IO[bytes] | None) -> None:
    code, out = _run_tool([pg_restore, "-l", str(root)], stdin, want_stdout=True)
    if code != 0:
        result.problems.append(f"pg_restore -l cannot read the table of contents: {out}")
        return
    entries = [ln for ln in out.splitlines() if ln and not ln.startswith(";")]
    result.toc_entries = len(entries)
    result.table_data_entries = sum(1 for ln in entries if " TABLE DATA " in ln)


def _run_tool(argv: list[str], stdin: IO[bytes] | None, *,
              want_stdout: bool = False) -> tuple[int, str]:
    try:
        proc = subprocess.run(argv, stdin=stdin, capture_output=True, timeout=600, check=False)
    except OSError as exc:
        raise MissingInput(f"{argv[0]} could not be started ({exc}); install the PostgreSQL "
                           f"client tools (pg_restore)") from None
    except subprocess.TimeoutExpired:
        return 1, f"{argv[0]} ran past 600 s"
    if want_stdout and proc.returncode == 0:
        return 0, proc.stdout.decode("utf-8", "replace")
    return proc.returncode, _first_line(proc.stderr.decode("utf-8", "replace"))


_TOOL_MAJORS: dict[str, int | None] = {}


def _tool_major(tool: str) -> int | None:
    if tool not in _TOOL_MAJORS:
        try:
            out = subprocess.run([tool, "--version"], capture_output=True, text=True,
                                 timeout=15, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            raise MissingInput(f"{tool} is not installed; install the PostgreSQL client "
                               f"tools (pg_restore) to judge custom, tar and directory "
                               f"dumps") from None
        m = re.search(r"\)\s*(\d+)", out)
        _TOOL_MAJORS[tool] = int(m.group(1)) if m else None
    return _TOOL_MAJORS[tool]


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return redactor.text(line.strip())[:300]
    return "no error output"


# ---- listings and rules -----------------------------------------------------------------------


def _object(obj: dict[str, Any]) -> BackupObject:
    return BackupObject(key=str(obj["Key"]), size=int(obj["Size"]),
                        last_modified=_utc(obj["LastModified"]),
                        etag=str(obj.get("ETag") or ""))


def _directory(key: str, objs: list[dict[str, Any]]) -> BackupObject:
    by_name = sorted((str(o["Key"])[len(key) + 1:], int(o["Size"])) for o in objs)
    return BackupObject(key=key, size=sum(size for _, size in by_name),
                        last_modified=max(_utc(o["LastModified"]) for o in objs),
                        files=tuple(n for n, _ in by_name),
                        file_sizes=tuple(size for _, size in by_name))


def _rule(raw: dict[str, Any], index: int) -> LifecycleRule:
    flt = raw.get("Filter")
    conditions: dict[str, Any] = {}
    if isinstance(flt, dict):
        conditions = dict(flt.get("And") or flt)
        if "Tag" in conditions:
            conditions["Tags"] = [conditions.pop("Tag")]
    elif raw.get("Prefix") is not None:
        conditions = {"Prefix": raw.get("Prefix")}  # the legacy top-level shape
    exp = raw.get("Expiration") or {}
    noncurrent = raw.get("NoncurrentVersionExpiration") or {}
    return LifecycleRule(
        id=str(raw.get("ID") or f"rule #{index + 1}"),
        enabled=raw.get("Status") == "Enabled",
        prefix=str(conditions.get("Prefix") or ""),
        tags=tuple((str(t["Key"]), str(t["Value"])) for t in conditions.get("Tags") or []),
        size_greater_than=_int(conditions.get("ObjectSizeGreaterThan")),
        size_less_than=_int(conditions.get("ObjectSizeLessThan")),
        expiration_days=_int(exp.get("Days")),
        expiration_date=str(exp["Date"]) if exp.get("Date") is not None else None,
        noncurrent_days=_int(noncurrent.get("NoncurrentDays")),
        transitions=tuple((_int(t.get("Days")), str(t.get("StorageClass", "")))
                          for t in raw.get("Transitions", []) or []),
    )


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


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


def _fail_fast_once_down(client: Any) -> None:
    """Once the endpoint timed out or could not be reached, every later call fails at once
    with the same error: a blackholed endpoint costs one call's timeout, not one per call."""
    from botocore import exceptions as bex

    down: list[Exception] = []

    def remember(exception: Exception | None = None, **_: Any) -> None:
        if isinstance(exception, bex.ConnectTimeoutError | bex.ReadTimeoutError
                      | bex.EndpointConnectionError) and not down:
            down.append(exception)

    def refuse(**_: Any) -> None:
        if down:
            raise down[0]

    client.meta.events.register("after-call-error.s3", remember)
    client.meta.events.register("before-call.s3", refuse)
