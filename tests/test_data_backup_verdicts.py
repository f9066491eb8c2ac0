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
from opsready._errors import AccessRefused
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
