"""S3 for the reference stack: moto's S3 in server mode, over real HTTP, as its own process.

``python -m opsready_stack.s3 --port P --dir DIR`` serves moto's backend on 127.0.0.1. Objects
larger than moto's in-memory buffer spill to ``DIR/s3-spool``, so they go away with the stack.

The bucket ``relay-backups`` is configured the way the audit asks (versioning, a lifecycle
rule on ``backups/``, default SSE, a full public access block) and holds 35 days of nightly
backups made by the real backup job (``opsready_stack.backup_job``), plus the record of the
last restore drill.

Faults and variants of the backups replace the newest nightly backup (keeping its time) with
another one: another pg_dump format, a truncated or hostile dump, a wrong sidecar. Turning
them off uploads the job's own dump again from the stack directory.

Test-only backdoors: S3 sets ``LastModified`` at upload time and offers no way to change it,
yet the history must *look* 35 days old; and moto (unlike S3 since 2023) enables Object Lock
only on an empty bucket. The server process therefore answers two extra, stack-only routes:
``POST /_opsready/object-lock`` with ``{"bucket": B, "enabled": bool, "mode": M, "days": N}``
sets the bucket's Object Lock default retention, and
``POST /_opsready/last-modified`` with
``{"bucket": B, "objects": {KEY: ISO-8601}}``, which sets the current version's
``last_modified`` in moto's backend. It exists only in this reference stack, is used only
by ``S3Part`` while seeding and flipping faults, and is never used by the suite's probes.

Size of the history: each day holds a server-side copy of the real dump. When the dump is
large (benchmarks), only the newest three days hold the full dump; older days hold a real
but thin dump (without the data of the two big tables), so disk use stays bounded.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import hashlib
import json
import urllib.request
from pathlib import Path
from typing import IO, Any

from opsready_stack.backup_job import TAGS, dump_bytes, dump_directory, sha256sum_line
from opsready_stack.part import BasePart, Fault, StackContext, wait_until

__all__ = ["BUCKET", "PREFIX", "S3Part", "main"]

BUCKET = "relay-backups"
PREFIX = "backups/"
# Which objects under the prefix are relay's backups (opsready.backup_keys).
KEY_PATTERN = "%Y-%m-%d/relay.*"
REGION = "us-east-1"
DRILL_RECORD_KEY = "drills/last-drill.json"
SIDECAR = ".sha256"
HISTORY_DAYS = 35
# Days whose objects always hold the full dump (the newest, and what `stale-backup` exposes).
FULL_DAYS = 3
FULL_HISTORY_LIMIT = 64 << 20
DRILL_AGE_DAYS = 10
STALE_DRILL_AGE_DAYS = 45
FAILED_DRILL_AGE_DAYS = 3
NEWEST_AGE = dt.timedelta(hours=1)
ADMIN_ROUTE = "/_opsready/last-modified"
LOCK_ROUTE = "/_opsready/object-lock"
CHUNK = 1 << 20

HOSTILE_MARKER = "hostile-backup-ran"
DELETED_AFTER_DAYS = 20

LIFECYCLE = {
    "Rules": [
        {
            "ID": "backups-archive-then-expire",
            "Filter": {"Prefix": PREFIX},
            "Status": "Enabled",
            "Transitions": [{"Days": 30, "StorageClass": "GLACIER"}],
            "Expiration": {"Days": 400},
            "NoncurrentVersionExpiration": {"NoncurrentDays": 90},
        }
    ]
}
ENCRYPTION = {
    "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
}
KMS_ENCRYPTION = {
    "Rules": [{"ApplyServerSideEncryptionByDefault": {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": "arn:aws:kms:us-east-1:123456789012:key/6f1c1e4e-0000-4000-8000-00000000b0c1",
    }, "BucketKeyEnabled": True}]
}
_TAGGED_BACKUPS = {"And": {"Prefix": PREFIX, "Tags": [{"Key": "kind", "Value": "nightly"}]}}
# The lifecycle configurations of the faults and variants; None deletes it.
_LIFECYCLES: dict[str, dict[str, Any] | None] = {
    "keep-forever": None,
    "short-retention": {"Rules": [{"ID": "backups-30-days", "Filter": _TAGGED_BACKUPS,
                                   "Status": "Enabled", "Expiration": {"Days": 30}}]},
    "tag-filtered-expiry": {"Rules": [
        *LIFECYCLE["Rules"],
        {"ID": "tmp-objects", "Filter": {"Tag": {"Key": "tmp", "Value": "true"}},
         "Status": "Enabled", "Expiration": {"Days": 1}},
    ]},
    "object-lock-retention": {"Rules": [
        {"ID": "current-versions-30-days", "Filter": {"Prefix": PREFIX}, "Status": "Enabled",
         "Expiration": {"Days": 30}, "NoncurrentVersionExpiration": {"NoncurrentDays": 400}},
    ]},
}
PUBLIC_ACCESS_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat()


class S3Part(BasePart):
    name = "s3"
    ports: tuple[str, ...] = ("s3",)
    faults: tuple[Fault, ...] = (
        Fault("stale-backup", "the two newest nightly backups are missing",
              frozenset({"P1-002"})),
        Fault("corrupt-backup", "the newest dump no longer matches its sha256 sidecar",
              frozenset({"P1-002"})),
        Fault("no-drill-schedule",
              "the last restore drill is 45 days old (and the drill workflow has no schedule)",
              frozenset({"P1-002"})),
        Fault("drill-record-failed",
              "the drill record of 3 days ago says the restore drill failed",
              frozenset({"P1-002"})),
        Fault("drill-record-absent",
              "no drill record is kept: the monthly drill workflow's runs are the evidence",
              frozenset(), variant=True),
        Fault("only-other-backups-fresh",
              "relay's two newest backups are missing; another database's dump, a log and a "
              "manifest written today are the newest objects under the prefix",
              frozenset({"P1-002"})),
        Fault("backup-extras",
              "another database's dump, a log and a manifest, newer than relay's newest backup, "
              "share its prefix", frozenset(), variant=True),
        Fault("sidecar-wrong-name",
              "the newest backup's sidecar names another file (analytics.dump)",
              frozenset({"P1-002"})),
        Fault("sidecar-no-digest", "the newest backup's sidecar holds no digest",
              frozenset({"P1-002"})),
        Fault("sidecar-bsd-tag",
              "the newest backup's sidecar is in BSD tag format: SHA256 (relay.dump) = <hex>",
              frozenset(), variant=True),
        Fault("truncated-backup",
              "the newest dump is cut short (its sidecar is of the cut file, as a job that "
              "hashes what it uploads would write)", frozenset({"P1-002"})),
        Fault("hostile-backup",
              "the newest backup is a gzip'd plain-SQL dump with a psql `\\!` shell command",
              frozenset({"P1-002"})),
        Fault("duplicate-key-backup",
              "the newest backup (gzip'd plain SQL) holds a duplicated workspaces key, so "
              "ADD PRIMARY KEY fails on restore while every table still gets its rows",
              frozenset({"P1-002"})),
        Fault("schema-only-backup", "the newest backup is schema only (pg_dump -s)",
              frozenset({"P1-002"})),
        Fault("backup-from-staging",
              "the newest backup holds half as many audit_logs rows again as the live source",
              frozenset({"P1-002"})),
        Fault("plain-sql-backup",
              "the newest backup is gzip'd plain SQL with OWNER TO statements (pg_dump | gzip)",
              frozenset(), variant=True),
        Fault("tar-backup", "the newest backup is a tar-format dump (pg_dump -Ft)", frozenset(),
              variant=True),
        Fault("directory-backup",
              "the newest backup is a directory-format dump (pg_dump -Fd) with one sidecar "
              "line per file", frozenset(), variant=True),
        Fault("versioning-off", "bucket versioning is Suspended", frozenset({"P3-003"})),
        Fault("keep-forever", "the bucket has no lifecycle configuration: backups are kept "
              "until deleted", frozenset(), variant=True),
        Fault("short-retention",
              "a lifecycle rule filtered on the backups' prefix and tag (And) expires them "
              "after 30 days", frozenset({"P3-003"})),
        Fault("tag-filtered-expiry",
              "an extra lifecycle rule expires objects tagged tmp=true after a day; backups "
              "carry no such tag", frozenset(), variant=True),
        Fault("object-lock-retention",
              "Object Lock keeps every version 400 days (GOVERNANCE) while a rule expires "
              "current versions after 30 days", frozenset(), variant=True),
        Fault("no-default-encryption", "the bucket has no default encryption",
              frozenset({"P3-003"})),
        Fault("kms-encryption", "default encryption is aws:kms with a customer managed key",
              frozenset(), variant=True),
        Fault("backups-deleted-early",
              "backups older than 20 days were deleted (their delete markers remain)",
              frozenset({"P3-003"})),
    )

    # ---- Part protocol ------------------------------------------------------------------

    def start(self, ctx: StackContext) -> None:
        port = ctx.ports["s3"]
        ctx.spawn(self.name, [ctx.python(), "-m", "opsready_stack.s3", "--port", str(port),
                              "--dir", str(ctx.dir)])
        ctx.urls["s3"] = f"http://127.0.0.1:{port}"

    def wait_ready(self, ctx: StackContext, deadline: float) -> None:
        def up() -> bool:
            with urllib.request.urlopen(ctx.urls["s3"] + "/", timeout=2) as resp:
                return bool(resp.status == 200)

        try:
            wait_until(up, deadline, "s3", interval=0.05)
        except RuntimeError:
            raise RuntimeError(
                f"s3 (moto) did not answer in time; see {ctx.logs / 's3.log'}"
            ) from None

    def after_ready(self, ctx: StackContext) -> None:
        client = self._client(ctx)
        created = self._configure_bucket(client)
        # moto keeps objects in memory: a new bucket needs its history even when an earlier
        # run of this directory left a manifest behind.
        if created or not (ctx.dir / "s3-history.json").is_file():
            self._seed_history(ctx, client)

    def env_config(self, ctx: StackContext) -> dict[str, Any]:
        return {
            "backups": {
                "s3": {
                    "bucket": BUCKET,
                    "prefix": PREFIX,
                    "endpoint_url": ctx.urls["s3"],
                    "region": REGION,
                    "access_key_id": ctx.secrets["s3_access_key"],
                    "secret_access_key": ctx.secrets["s3_secret_key"],
                },
                "key_pattern": KEY_PATTERN,
                "rpo_hours": 26,
                "min_size_bytes": 1024,
                "max_shrink_fraction": 0.5,
                "sidecar_suffix": SIDECAR,
                "drill_record_key": DRILL_RECORD_KEY,
                "drill_max_age_days": 32,
                "retention_days": 365,
                "required_encryption": "AES256",
                "daily_window_days": 30,
                "daily_min_days": 28,
            },
        }

    def set_fault(self, ctx: StackContext, name: str, on: bool) -> None:
        client = self._client(ctx)
        if name == "versioning-off":
            client.put_bucket_versioning(
                Bucket=BUCKET,
                VersioningConfiguration={"Status": "Suspended" if on else "Enabled"},
            )
        elif name == "stale-backup":
            self._stale(ctx, client, on)
        elif name == "corrupt-backup":
            self._corrupt(ctx, client, on)
        elif name in ("no-drill-schedule", "drill-record-failed", "drill-record-absent"):
            self._drill_fault(ctx, client, name, on)
        elif name == "object-lock-retention":
            self._object_lock(ctx, client, on)
        elif name in _LIFECYCLES:
            self._lifecycle(client, name if on else None)
        elif name in ("no-default-encryption", "kms-encryption"):
            self._encryption(client, name if on else None)
        elif name == "backups-deleted-early":
            self._delete_old(ctx, client, on)
        elif name in ("only-other-backups-fresh", "backup-extras"):
            self._extras(ctx, client, on, drop_newest=name == "only-other-backups-fresh")
        elif name in ("sidecar-wrong-name", "sidecar-no-digest", "sidecar-bsd-tag"):
            self._sidecar(ctx, client, name if on else None)
        elif on:
            self._swap_newest(ctx, client, self._replacement(ctx, name))
        else:
            self._unswap(ctx, client)

    def stop(self, ctx: StackContext) -> None:
        return None

    # ---- seeding ------------------------------------------------------------------------

    def _client(self, ctx: StackContext) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=ctx.urls["s3"], region_name=REGION,
            aws_access_key_id=ctx.secrets["s3_access_key"],
            aws_secret_access_key=ctx.secrets["s3_secret_key"],
            config=Config(s3={"addressing_style": "path"}, connect_timeout=5, read_timeout=120,
                          retries={"max_attempts": 2}),
        )

    def _configure_bucket(self, client: Any) -> bool:
        """Create and configure the bucket; True when it did not exist yet."""
        from botocore.exceptions import ClientError

        created = True
        try:
            client.create_bucket(Bucket=BUCKET)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                raise
            created = False
        client.put_bucket_versioning(Bucket=BUCKET,
                                     VersioningConfiguration={"Status": "Enabled"})
        client.put_bucket_lifecycle_configuration(Bucket=BUCKET, LifecycleConfiguration=LIFECYCLE)
        client.put_bucket_encryption(Bucket=BUCKET,
                                     ServerSideEncryptionConfiguration=ENCRYPTION)

        client.put_public_access_block(Bucket=BUCKET,
                                       PublicAccessBlockConfiguration=PUBLIC_ACCESS_BLOCK)
        return created

    def _seed_history(self, ctx: StackContext, client: Any) -> None:
        from opsready_stack.backup_job import backup_key, run_backup

        local = ctx.dir / "backups"
        local.mkdir(parents=True, exist_ok=True)
        dsn = ctx.urls["postgres_dsn"]
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        # Nightly runs: day i finished i days before the newest, which is about an hour old.
        times = [now - NEWEST_AGE - dt.timedelta(days=i) for i in range(HISTORY_DAYS)]
        keys = [backup_key(PREFIX, t.date()) for t in times]

        full = run_backup(dsn, client, BUCKET, keys[0], sidecar_suffix=SIDECAR,
                          keep_copy=local / "full.dump")
        sources = {"full": {"sha256": full.sha256, "size": full.size,
                            "file": str(local / "full.dump")}}
        source_of: dict[str, str] = {keys[0]: "full"}
        thin_from: int | None = None
        if full.size > FULL_HISTORY_LIMIT:
            thin_from = FULL_DAYS
            thin = run_backup(dsn, client, BUCKET, keys[thin_from], sidecar_suffix=SIDECAR,
                              keep_copy=local / "thin.dump",
                              extra_args=("--exclude-table-data=audit_logs",
                                          "--exclude-table-data=sessions"))
            sources["thin"] = {"sha256": thin.sha256, "size": thin.size,
                               "file": str(local / "thin.dump")}
            source_of[keys[thin_from]] = "thin"
        for i, key in enumerate(keys):
            if key in source_of:
                continue
            origin = keys[thin_from] if thin_from is not None and i >= thin_from else keys[0]
            for suffix in ("", SIDECAR):
                client.copy_object(Bucket=BUCKET, Key=key + suffix,
                                   CopySource={"Bucket": BUCKET, "Key": origin + suffix},
                                   TaggingDirective="REPLACE",
                                   Tagging=TAGS if not suffix else "")
            source_of[key] = source_of[origin]

        stamps: dict[str, str] = {}
        for t, key in zip(times, keys, strict=True):
            stamps[key] = _iso(t)
            # The sidecar is written right after its dump.
            stamps[key + SIDECAR] = _iso(t + dt.timedelta(seconds=2))
        _set_last_modified(ctx, stamps)

        record = _drill_record(now - dt.timedelta(days=DRILL_AGE_DAYS),
                               backup_key=keys[DRILL_AGE_DAYS])
        manifest = {
            "bucket": BUCKET,
            "seeded_at": _iso(now),
            "keys": keys,
            "last_modified": stamps,
            "source_of": source_of,
            "sources": sources,
            "drill_record": record,
            "corrupted": None,
        }
        self._write_manifest(ctx, manifest)
        self._put_drill_record(ctx, client, record)

    def _drill_fault(self, ctx: StackContext, client: Any, name: str, on: bool) -> None:
        if not on:
            self._put_drill_record(ctx, client, self._manifest(ctx)["drill_record"])
        elif name == "drill-record-absent":
            client.delete_object(Bucket=BUCKET, Key=DRILL_RECORD_KEY)
        elif name == "drill-record-failed":
            finished = dt.datetime.now(dt.UTC) - dt.timedelta(days=FAILED_DRILL_AGE_DAYS)
            self._put_drill_record(ctx, client, _drill_record(finished, result="failed",
                                                              rto_seconds=None))
        else:
            finished = dt.datetime.now(dt.UTC) - dt.timedelta(days=STALE_DRILL_AGE_DAYS)
            self._put_drill_record(ctx, client, _drill_record(finished))

    def _put_drill_record(self, ctx: StackContext, client: Any, record: dict[str, Any]) -> None:
        client.put_object(Bucket=BUCKET, Key=DRILL_RECORD_KEY,
                          Body=json.dumps(record, indent=2).encode(),
                          ContentType="application/json")
        _set_last_modified(ctx, {DRILL_RECORD_KEY: record["finished_at"]})

    # ---- faults -------------------------------------------------------------------------

    def _manifest(self, ctx: StackContext) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((ctx.dir / "s3-history.json").read_text())
        return data

    def _write_manifest(self, ctx: StackContext, manifest: dict[str, Any]) -> None:
        path = ctx.dir / "s3-history.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest, indent=1))
        tmp.replace(path)

    def _stale(self, ctx: StackContext, client: Any, on: bool) -> None:
        manifest = self._manifest(ctx)
        newest_two = manifest["keys"][:2]
        if on:
            for key in newest_two:
                for suffix in ("", SIDECAR):
                    client.delete_object(Bucket=BUCKET, Key=key + suffix)
            return
        for key in newest_two:
            self._restore_dump(ctx, client, manifest, key)

    def _corrupt(self, ctx: StackContext, client: Any, on: bool) -> None:
        manifest = self._manifest(ctx)
        if on:
            target = _newest_dump(client)
            if target is None:
                return
            self._restore_dump(ctx, client, manifest, target, corrupt=True, sidecar=False)
            manifest["corrupted"] = target
        else:
            target = manifest.get("corrupted")
            manifest["corrupted"] = None
            if target:
                self._restore_dump(ctx, client, manifest, target, sidecar=False)
        self._write_manifest(ctx, manifest)

    def _restore_dump(self, ctx: StackContext, client: Any, manifest: dict[str, Any], key: str,
                      *, corrupt: bool = False, sidecar: bool = True) -> None:
        """Upload ``key`` again from the job's local copy, keeping its original timestamps.
        ``corrupt`` flips bytes in the middle: same size, same header, different digest."""
        source = manifest["sources"][manifest["source_of"][key]]
        corrupt = corrupt or manifest.get("corrupted") == key
        with open(source["file"], "rb") as fh:
            body: IO[bytes] | _FlippedReader = _FlippedReader(fh, source["size"]) if corrupt else fh
            client.upload_fileobj(body, BUCKET, key, ExtraArgs={"Tagging": TAGS})
        stamps = {key: manifest["last_modified"][key]}
        if sidecar:
            client.put_object(Bucket=BUCKET, Key=key + SIDECAR,
                              Body=f"{source['sha256']}  {key.rsplit('/', 1)[-1]}\n".encode())
            stamps[key + SIDECAR] = manifest["last_modified"][key + SIDECAR]
        _set_last_modified(ctx, stamps)


    # ---- variants of the newest backup -------------------------------------------------

    def _replacement(self, ctx: StackContext, name: str) -> dict[str, bytes]:
        """What stands in for the newest backup under ``name``: file name (relative to the
        day's directory; ``relay.dir/...`` for a directory dump) -> content."""
        dsn = ctx.urls["postgres_dsn"]
        manifest = self._manifest(ctx)
        if name == "truncated-backup":
            data = Path(manifest["sources"]["full"]["file"]).read_bytes()
            return {"relay.dump": data[:len(data) * 6 // 10]}
        if name == "schema-only-backup":
            return {"relay.dump": dump_bytes(dsn, "custom", "--schema-only")}
        if name == "tar-backup":
            return {"relay.tar": dump_bytes(dsn, "tar")}
        if name == "directory-backup":
            return {f"relay.dir/{n}": b for n, b in dump_directory(dsn).items()}
        script = dump_bytes(dsn, "plain").decode()
        if name == "hostile-backup":
            marker = ctx.dir / HOSTILE_MARKER
            script = script.replace("SET statement_timeout = 0;\n",
                                    f"SET statement_timeout = 0;\n\\! touch {marker}\n", 1)
        elif name == "duplicate-key-backup":
            script = _copy_block(script, "public.workspaces", lambda rows: [rows[0], *rows])
        elif name == "backup-from-staging":
            script = _copy_block(script, "public.audit_logs", _more_rows)
        return {"relay.sql.gz": gzip.compress(script.encode(), mtime=0)}

    def _swap_newest(self, ctx: StackContext, client: Any, objects: dict[str, bytes]) -> None:
        """Replace the newest backup and its sidecar with ``objects``, keeping their times."""
        manifest = self._manifest(ctx)
        newest = manifest["keys"][0]
        stamp = dt.datetime.fromisoformat(manifest["last_modified"][newest])
        day = newest.rsplit("/", 1)[0]
        for suffix in ("", SIDECAR):
            client.delete_object(Bucket=BUCKET, Key=newest + suffix)
        stamps: dict[str, str] = {}
        lines: dict[str, list[str]] = {}
        for name, body in objects.items():
            key = f"{day}/{name}"
            client.put_object(Bucket=BUCKET, Key=key, Body=body, Tagging=TAGS)
            stamps[key] = _iso(stamp)
            # A directory dump gets one sidecar for the directory, a line per file.
            backup = key.rsplit("/", 1)[0] if "/" in name else key
            lines.setdefault(backup, []).append(
                sha256sum_line(hashlib.sha256(body).hexdigest(), key))
        for backup, text in lines.items():
            client.put_object(Bucket=BUCKET, Key=backup + SIDECAR, Body="".join(text).encode())
            stamps[backup + SIDECAR] = _iso(stamp + dt.timedelta(seconds=2))
        _set_last_modified(ctx, stamps)
        manifest["swapped"] = sorted(stamps)
        self._write_manifest(ctx, manifest)

    def _unswap(self, ctx: StackContext, client: Any) -> None:
        manifest = self._manifest(ctx)
        for key in manifest.get("swapped", []):
            client.delete_object(Bucket=BUCKET, Key=key)
        manifest["swapped"] = []
        self._write_manifest(ctx, manifest)
        self._restore_dump(ctx, client, manifest, manifest["keys"][0])

    def _extras(self, ctx: StackContext, client: Any, on: bool, *, drop_newest: bool) -> None:
        """Objects that share the backups' prefix but are not relay's backups."""
        manifest = self._manifest(ctx)
        newest = manifest["keys"][0]
        day = newest.rsplit("/", 1)[0]
        stamp = dt.datetime.fromisoformat(manifest["last_modified"][newest])
        other = Path(manifest["sources"]["full"]["file"]).read_bytes()
        extras = {
            f"{day}/analytics.dump": other,
            f"{day}/analytics.dump{SIDECAR}":
                sha256sum_line(hashlib.sha256(other).hexdigest(), "analytics.dump").encode(),
            f"{day}/backup.log": b"pg_dump: dumping contents of table public.audit_logs\n",
            f"{PREFIX}manifest.json": json.dumps({"latest": newest}).encode(),
        }
        if on:
            for key, body in extras.items():
                client.put_object(Bucket=BUCKET, Key=key, Body=body)
            # Written after relay's newest backup: the newest objects under the prefix.
            _set_last_modified(ctx, {k: _iso(stamp + dt.timedelta(minutes=30)) for k in extras})
        else:
            for key in extras:
                client.delete_object(Bucket=BUCKET, Key=key)
        if drop_newest:
            self._stale(ctx, client, on)

    def _sidecar(self, ctx: StackContext, client: Any, name: str | None) -> None:
        manifest = self._manifest(ctx)
        newest = manifest["keys"][0]
        sha = manifest["sources"][manifest["source_of"][newest]]["sha256"]
        base = newest.rsplit("/", 1)[-1]
        text = {
            None: sha256sum_line(sha, newest),
            "sidecar-wrong-name": sha256sum_line(sha, "analytics.dump"),
            "sidecar-no-digest": "pending: the checksum step did not run\n",
            "sidecar-bsd-tag": f"SHA256 ({base}) = {sha}\n",
        }[name]
        client.put_object(Bucket=BUCKET, Key=newest + SIDECAR, Body=text.encode())
        _set_last_modified(ctx, {newest + SIDECAR: manifest["last_modified"][newest + SIDECAR]})

    # ---- bucket settings ----------------------------------------------------------------

    def _lifecycle(self, client: Any, name: str | None) -> None:
        config = LIFECYCLE if name is None else _LIFECYCLES[name]
        if config is None:
            client.delete_bucket_lifecycle(Bucket=BUCKET)
        else:
            client.put_bucket_lifecycle_configuration(Bucket=BUCKET,
                                                      LifecycleConfiguration=config)

    def _object_lock(self, ctx: StackContext, client: Any, on: bool) -> None:
        _post(ctx, LOCK_ROUTE, {"bucket": BUCKET, "enabled": on, "mode": "GOVERNANCE",
                                "days": 400})
        self._lifecycle(client, "object-lock-retention" if on else None)

    def _encryption(self, client: Any, name: str | None) -> None:
        if name == "no-default-encryption":
            client.delete_bucket_encryption(Bucket=BUCKET)
            return
        config = ENCRYPTION if name is None else KMS_ENCRYPTION
        client.put_bucket_encryption(Bucket=BUCKET, ServerSideEncryptionConfiguration=config)

    def _delete_old(self, ctx: StackContext, client: Any, on: bool) -> None:
        """Delete (on) the backups older than 20 days, or remove their delete markers (off)."""
        old = self._manifest(ctx)["keys"][DELETED_AFTER_DAYS:]
        for key in (k + suffix for k in old for suffix in ("", SIDECAR)):
            if on:
                client.delete_object(Bucket=BUCKET, Key=key)
                continue
            listing = client.list_object_versions(Bucket=BUCKET, Prefix=key)
            for marker in listing.get("DeleteMarkers", []):
                if marker["Key"] == key:
                    client.delete_object(Bucket=BUCKET, Key=key, VersionId=marker["VersionId"])


def _copy_block(script: str, table: str, change: Any) -> str:
    """``script`` with the data rows of ``table``'s COPY block passed through ``change``."""
    lines = script.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(f"COPY {table} ("))
    end = lines.index("\\.", start)
    lines[start + 1:end] = change(lines[start + 1:end])
    return "\n".join(lines)


def _more_rows(rows: list[str]) -> list[str]:
    """Half as many rows again, copies of the first ones under new ids (the first column):
    more than a source could have lost since the backup."""
    top = max(int(r.split("\t", 1)[0]) for r in rows)
    extra = [f"{top + i + 1}\t{r.split(chr(9), 1)[1]}"
             for i, r in enumerate(rows[:max(1, len(rows) // 2)])]
    return rows + extra


class _FlippedReader:
    """A file reader that inverts 64 bytes in the middle of the file (a corrupted copy)."""

    def __init__(self, source: IO[bytes], size: int) -> None:
        self.source = source
        self.start = size // 2
        self.end = self.start + 64
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        data = self.source.read(CHUNK if n is None or n < 0 else n)
        lo, hi = max(self.start - self.pos, 0), min(self.end - self.pos, len(data))
        if lo < hi:
            data = data[:lo] + bytes(b ^ 0xFF for b in data[lo:hi]) + data[hi:]
        self.pos += len(data)
        return data


def _newest_dump(client: Any) -> str | None:
    newest: tuple[dt.datetime, str] | None = None
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith(SIDECAR):
                continue
            if newest is None or obj["LastModified"] > newest[0]:
                newest = (obj["LastModified"], obj["Key"])
    return newest[1] if newest else None


def _drill_record(finished: dt.datetime, backup_key: str | None = None, result: str = "passed",
                  rto_seconds: float | None = 47.9) -> dict[str, Any]:
    started = finished - dt.timedelta(seconds=52)
    return {
        "started_at": _iso(started),
        "finished_at": _iso(finished),
        "result": result,
        "backup_key": backup_key,
        "rto_seconds": rto_seconds,
        "rpo_hours": 7.2,
        "tables": ["workspaces", "api_keys", "audit_logs", "sessions"],
        "runner": "github-actions: restore-drill.yml",
    }


def _set_last_modified(ctx: StackContext, stamps: dict[str, str]) -> None:
    """The stack-only backdoor (see the module docstring)."""
    _post(ctx, ADMIN_ROUTE, {"bucket": BUCKET, "objects": stamps})


def _post(ctx: StackContext, route: str, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    req = urllib.request.Request(ctx.urls["s3"] + route, data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        if resp.status != 200:
            raise RuntimeError(f"s3 backdoor answered {resp.status}")


# ---- the server process ---------------------------------------------------------------------


def _with_backdoor(app: Any) -> Any:
    """Wrap moto's WSGI app with the stack-only routes (see the module docstring)."""

    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        route = environ.get("PATH_INFO")
        if route not in (ADMIN_ROUTE, LOCK_ROUTE) or environ.get("REQUEST_METHOD") != "POST":
            return app(environ, start_response)
        from moto.s3.models import FakeKey, s3_backends

        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            payload = json.loads(environ["wsgi.input"].read(length))
            bucket_name = payload["bucket"]
            partition, account = s3_backends.bucket_accounts[bucket_name]
            bucket = s3_backends[account][partition].get_bucket(bucket_name)
            updated = 0
            if route == LOCK_ROUTE:
                on = bool(payload["enabled"])
                bucket.object_lock_enabled = on
                bucket.default_lock_mode = payload["mode"] if on else ""
                bucket.default_lock_days = int(payload["days"]) if on else 0
                bucket.default_lock_years = 0
                payload["objects"] = {}
            for key, stamp in payload["objects"].items():
                versions = bucket.keys.getlist(key, [])
                current = versions[-1] if versions else None
                if isinstance(current, FakeKey):
                    # moto keeps naive UTC datetimes.
                    when = dt.datetime.fromisoformat(stamp).astimezone(dt.UTC)
                    current.last_modified = when.replace(tzinfo=None)
                    updated += 1
            status, out = "200 OK", {"updated": updated}
        except (KeyError, ValueError, TypeError) as exc:
            status, out = "400 Bad Request", {"error": f"{type(exc).__name__}: {exc}"}
        data = json.dumps(out).encode()
        start_response(status, [("Content-Type", "application/json"),
                                ("Content-Length", str(len(data)))])
        return [data]

    return wsgi


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m opsready_stack.s3",
                                 description="moto's S3 in server mode for the reference stack")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--dir", type=Path, required=True)
    args = ap.parse_args(argv)

    import tempfile

    # Large objects spill from memory to temp files: keep them inside the stack directory.
    spool = args.dir / "s3-spool"
    spool.mkdir(parents=True, exist_ok=True)
    tempfile.tempdir = str(spool)

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    from opsready_stack import s3_index

    # Listing pages from a sorted index of key names, as S3 does (see s3_index).
    indexed = s3_index.install()
    app = _with_backdoor(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", args.port, app, threaded=True,
                         request_handler=MotoRequestHandler)
    print(f"moto S3 listening on http://127.0.0.1:{args.port}; key-name index for listings: "
          f"{'on' if indexed else 'off (unexpected moto version)'}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
