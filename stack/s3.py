"""S3 for the reference stack: moto's S3 in server mode, over real HTTP, as its own process.

``python -m opsready_stack.s3 --port P --dir DIR`` serves moto's backend on 127.0.0.1. Objects
larger than moto's in-memory buffer spill to ``DIR/s3-spool``, so they go away with the stack.

The bucket ``relay-backups`` is configured the way the audit asks (versioning, a lifecycle
rule on ``backups/``, default SSE, a full public access block) and holds 35 days of nightly
backups made by the real backup job (``opsready_stack.backup_job``), plus the record of the
last restore drill.

Test-only backdoor: S3 sets ``LastModified`` at upload time and offers no way to change it,
yet the history must *look* 35 days old. The server process therefore answers one extra,
stack-only route, ``POST /_opsready/last-modified`` with
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
import json
import urllib.request
from pathlib import Path
from typing import IO, Any

from opsready_stack.part import Fault, StackContext, wait_until

__all__ = ["BUCKET", "PREFIX", "S3Part", "main"]

BUCKET = "relay-backups"
PREFIX = "backups/"
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
CHUNK = 1 << 20

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
PUBLIC_ACCESS_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat()


class S3Part:
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
        Fault("versioning-off", "bucket versioning is Suspended", frozenset({"P3-003"})),
        Fault("no-lifecycle", "the bucket has no lifecycle configuration",
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
        from opsready_stack.postgres import ADMIN_ROLE, seed_counts

        port = ctx.ports["postgres"]
        pw = ctx.secrets["pg_password"]
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
                "rpo_hours": 26,
                "min_size_bytes": 1024,
                "max_shrink_fraction": 0.5,
                "sidecar_suffix": SIDECAR,
                "drill_record_key": DRILL_RECORD_KEY,
                "drill_max_age_days": 31,
                "retention_days": 365,
                "daily_window_days": 30,
                "daily_min_days": 28,
            },
            "restore_drill": {
                # The maintenance database of the same server: the drill creates and drops
                # its own opsready_drill_<ts> database there.
                "scratch_dsn": f"postgresql://{ADMIN_ROLE}:{pw}@127.0.0.1:{port}/postgres",
                "source_dsn": ctx.urls["postgres_dsn"],
                "expected_tables": ["workspaces", "api_keys", "audit_logs", "sessions"],
                "min_rows": {t: n // 2 for t, n in seed_counts(ctx.rows).items()},
                "row_tolerance": 0.05,
                "rto_target_s": 600,
                "jobs": 2,
            },
        }

    def set_fault(self, ctx: StackContext, name: str, on: bool) -> None:
        client = self._client(ctx)
        if name == "versioning-off":
            client.put_bucket_versioning(
                Bucket=BUCKET,
                VersioningConfiguration={"Status": "Suspended" if on else "Enabled"},
            )
        elif name == "no-lifecycle":
            if on:
                client.delete_bucket_lifecycle(Bucket=BUCKET)
            else:
                client.put_bucket_lifecycle_configuration(
                    Bucket=BUCKET, LifecycleConfiguration=LIFECYCLE)
        elif name == "stale-backup":
            self._stale(ctx, client, on)
        elif name == "corrupt-backup":
            self._corrupt(ctx, client, on)
        elif name in ("no-drill-schedule", "drill-record-failed", "drill-record-absent"):
            self._drill_fault(ctx, client, name, on)

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
                                   CopySource={"Bucket": BUCKET, "Key": origin + suffix})
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
            client.upload_fileobj(body, BUCKET, key)
        stamps = {key: manifest["last_modified"][key]}
        if sidecar:
            client.put_object(Bucket=BUCKET, Key=key + SIDECAR,
                              Body=f"{source['sha256']}  {key.rsplit('/', 1)[-1]}\n".encode())
            stamps[key + SIDECAR] = manifest["last_modified"][key + SIDECAR]
        _set_last_modified(ctx, stamps)


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
    body = json.dumps({"bucket": BUCKET, "objects": stamps}).encode()
    req = urllib.request.Request(ctx.urls["s3"] + ADMIN_ROUTE, data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        if resp.status != 200:
            raise RuntimeError(f"s3 backdoor answered {resp.status}")


# ---- the server process ---------------------------------------------------------------------


def _with_backdoor(app: Any) -> Any:
    """Wrap moto's WSGI app with the stack-only ``last_modified`` route."""

    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") != ADMIN_ROUTE or environ.get("REQUEST_METHOD") != "POST":
            return app(environ, start_response)
        from moto.s3.models import FakeKey, s3_backends

        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            payload = json.loads(environ["wsgi.input"].read(length))
            bucket_name = payload["bucket"]
            partition, account = s3_backends.bucket_accounts[bucket_name]
            bucket = s3_backends[account][partition].get_bucket(bucket_name)
            updated = 0
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

    app = _with_backdoor(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", args.port, app, threaded=True,
                         request_handler=MotoRequestHandler)
    print(f"moto S3 listening on http://127.0.0.1:{args.port}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
