"""The platform's nightly backup job: ``pg_dump -Fc`` of the source database, streamed to S3.

The dump goes to ``<prefix>YYYY-MM-DD/<name>.dump`` without touching the local disk
(unless ``keep_copy`` asks for one), hashed on the way, and a ``.sha256`` sidecar in
``sha256sum`` format (``<hex>  <file name>``) follows it. Every backup carries the tag
``kind=nightly``, as lifecycle rules may filter on it. The password travels in
``PGPASSWORD``, never in argv.

``dump_bytes`` and ``dump_directory`` make the other formats pg_dump writes (plain SQL, tar,
directory), for the stack's variants.

Run by hand as::

    RELAY_DATABASE_URL=postgresql://... python -m opsready_stack.backup_job \\
        --endpoint http://127.0.0.1:PORT --bucket relay-backups
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

__all__ = ["TAGS", "BackupResult", "backup_key", "dump_bytes", "dump_directory", "run_backup",
           "sha256sum_line", "split_password"]

CHUNK = 1 << 20
# The tags of every backup object (S3's URL-encoded Tagging form).
TAGS = "kind=nightly"


@dataclass(frozen=True)
class BackupResult:
    key: str
    sidecar_key: str
    size: int
    sha256: str


def backup_key(prefix: str, day: dt.date, name: str = "relay") -> str:
    return f"{prefix}{day.isoformat()}/{name}.dump"


def split_password(dsn: str) -> tuple[str, str | None]:
    """The DSN without its password (safe for argv), and the password."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(dsn)
    password = params.pop("password", None)
    return make_conninfo(**{k: str(v) for k, v in params.items()}), (
        str(password) if password is not None else None
    )


class _HashingReader:
    """A read-only stream over pg_dump's stdout that hashes (and optionally copies) what
    passes through, so the upload and the digest need one pass and no buffering."""

    def __init__(self, source: IO[bytes], copy: IO[bytes] | None) -> None:
        self.source = source
        self.copy = copy
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.source.read(CHUNK if n is None or n < 0 else n)
        if data:
            self.digest.update(data)
            self.size += len(data)
            if self.copy is not None:
                self.copy.write(data)
        return data


def run_backup(
    dsn: str,
    client: Any,
    bucket: str,
    key: str,
    *,
    sidecar_suffix: str = ".sha256",
    keep_copy: Path | None = None,
    pg_dump: str = "pg_dump",
    extra_args: tuple[str, ...] = (),
    timeout: float = 3600,
    tags: str = TAGS,
) -> BackupResult:
    """Dump ``dsn`` in custom format straight into ``s3://bucket/key`` and write the sidecar.

    ``client`` is a boto3 S3 client. On any failure the partial object is removed, so a
    failed night leaves no half-written backup behind.
    """
    from boto3.s3.transfer import TransferConfig

    conninfo, password = split_password(dsn)
    env = {**os.environ}
    if password is not None:
        env["PGPASSWORD"] = password
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            [pg_dump, "-Fc", "--no-password", *extra_args, "-d", conninfo],
            stdout=subprocess.PIPE, stderr=errors, env=env,
        )
        assert proc.stdout is not None
        copy = open(keep_copy, "wb") if keep_copy is not None else None  # noqa: SIM115
        try:
            reader = _HashingReader(proc.stdout, copy)
            client.upload_fileobj(
                reader, bucket, key, ExtraArgs={"Tagging": tags},
                Config=TransferConfig(multipart_threshold=8 * CHUNK, multipart_chunksize=8 * CHUNK,
                                      max_concurrency=2, use_threads=True),
            )
            code = proc.wait(timeout=timeout)
        except BaseException:
            proc.kill()
            proc.wait()
            client.delete_object(Bucket=bucket, Key=key)
            raise
        finally:
            proc.stdout.close()
            if copy is not None:
                copy.close()
        if code != 0:
            client.delete_object(Bucket=bucket, Key=key)
            errors.seek(0)
            detail = errors.read().decode("utf-8", "replace").strip()[-500:]
            raise RuntimeError(f"pg_dump exited with {code}: {detail}")
    hexdigest = reader.digest.hexdigest()
    sidecar = key + sidecar_suffix
    client.put_object(Bucket=bucket, Key=sidecar, Body=sha256sum_line(hexdigest, key).encode(),
                      ContentType="text/plain")
    return BackupResult(key=key, sidecar_key=sidecar, size=reader.size, sha256=hexdigest)


def sha256sum_line(hexdigest: str, key: str) -> str:
    """One line as ``sha256sum`` writes it: the digest, two spaces, the file name."""
    return f"{hexdigest}  {key.rsplit('/', 1)[-1]}\n"


def _pg_dump(dsn: str, args: list[str], pg_dump: str, timeout: float) -> bytes:
    conninfo, password = split_password(dsn)
    env = {**os.environ}
    if password is not None:
        env["PGPASSWORD"] = password
    proc = subprocess.run([pg_dump, "--no-password", *args, "-d", conninfo], env=env,
                          capture_output=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"pg_dump exited with {proc.returncode}: "
                           f"{proc.stderr.decode('utf-8', 'replace').strip()[-500:]}")
    return proc.stdout


def dump_bytes(dsn: str, fmt: str, *extra_args: str, pg_dump: str = "pg_dump",
               timeout: float = 600) -> bytes:
    """A whole dump in memory, ``fmt`` being ``custom``, ``plain`` or ``tar`` (for small
    databases: the stack's variants)."""
    return _pg_dump(dsn, [f"--format={fmt}", *extra_args], pg_dump, timeout)


def dump_directory(dsn: str, *extra_args: str, pg_dump: str = "pg_dump",
                   timeout: float = 600) -> dict[str, bytes]:
    """A directory-format dump: file name -> content."""
    with tempfile.TemporaryDirectory(prefix="opsready-dump-") as tmp:
        target = Path(tmp) / "dump"
        _pg_dump(dsn, ["--format=directory", "-f", str(target), *extra_args], pg_dump, timeout)
        return {p.name: p.read_bytes() for p in sorted(target.iterdir())}


def main(argv: list[str] | None = None) -> int:
    import boto3

    ap = argparse.ArgumentParser(prog="python -m opsready_stack.backup_job",
                                 description="Dump the source database to S3 with a sidecar.")
    ap.add_argument("--endpoint", default=None, help="S3 endpoint URL (default: AWS)")
    ap.add_argument("--bucket", required=True)
    ap.add_argument("--prefix", default="backups/")
    ap.add_argument("--name", default="relay")
    ap.add_argument("--dsn-env", default="RELAY_DATABASE_URL",
                    help="environment variable holding the source DSN")
    args = ap.parse_args(argv)
    dsn = os.environ.get(args.dsn_env)
    if not dsn:
        print(f"backup_job: ${args.dsn_env} is not set", file=sys.stderr)
        return 2
    client = boto3.client("s3", endpoint_url=args.endpoint)
    key = backup_key(args.prefix, dt.datetime.now(dt.UTC).date(), args.name)
    result = run_backup(dsn, client, args.bucket, key)
    print(f"s3://{args.bucket}/{result.key} {result.size} bytes sha256={result.sha256}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
