"""The reference stack's S3 key-name index (``opsready_stack.s3_index``).

Listings answered from the index must equal moto's own listing, page by page: the same keys,
versions, latest flags, truncation and next markers or tokens. The index must follow every
write, and a page must touch only the names it needs, not the bucket.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import inspect
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from moto.s3 import models
from moto.s3.models import FakeDeleteMarker, S3Backend
from moto.s3.utils import _VersionedKeyStore

from opsready_stack import s3_index

ACCOUNT = "123456789012"
REGION = "us-east-1"
# Names over a small alphabet, so prefixes, StartAfter and key markers fall on and between them.
NAME_ALPHABET = "ab/"
MAX_PAGES = 80


@contextlib.contextmanager
def _indexed_moto() -> Iterator[tuple[Callable[..., Any], Callable[..., Any]]]:
    """The index installed for the block, moto as it was afterwards; yields moto's own
    ``list_objects_v2`` and ``list_object_versions``."""
    with pytest.MonkeyPatch.context() as mp:
        # Recorded as they are now, so leaving the block restores them.
        mp.setattr(models, "_VersionedKeyStore", models._VersionedKeyStore)
        mp.setattr(S3Backend, "list_objects_v2", S3Backend.list_objects_v2)
        mp.setattr(S3Backend, "list_object_versions", S3Backend.list_object_versions)
        assert s3_index.install()
        yield inspect.unwrap(S3Backend.list_objects_v2), inspect.unwrap(S3Backend.list_object_versions)


@pytest.fixture(scope="module")
def moto_listings() -> Iterator[tuple[Callable[..., Any], Callable[..., Any]]]:
    with _indexed_moto() as originals:
        yield originals


@contextlib.contextmanager
def fresh_bucket(versioned: bool, backend: S3Backend | None = None) -> Iterator[tuple[S3Backend, Any]]:
    backend = backend or S3Backend(REGION, ACCOUNT)
    name = f"index-{uuid.uuid4().hex[:12]}"
    bucket = backend.create_bucket(name, REGION)
    if versioned:
        backend.put_bucket_versioning(name, "Enabled")
    try:
        yield backend, bucket
    finally:
        backend.buckets.pop(name, None)
        models.s3_backends.bucket_accounts.pop(name, None)


def assert_index_matches(bucket: Any) -> None:
    __tracebackhide__ = True
    store = bucket.keys
    assert isinstance(store, s3_index.IndexedKeyStore), f"bucket keys are a {type(store).__name__}"
    assert store.names() == sorted(dict.keys(store)), (
        f"index {store.names()} differs from the store's names {sorted(dict.keys(store))}")


def apply_writes(backend: S3Backend, bucket: Any, writes: list[tuple[str, str, int]],
                 ticking: bool = True) -> None:
    """Apply puts, deletes and deletes of one version. ``ticking``: each new version is a second
    newer than the one before, as over a real network; otherwise they share moto's clock, often
    to the millisecond, and moto orders the versions of a key as they were written."""
    start = dt.datetime(2024, 1, 1)
    for n, (op, name, pick) in enumerate(writes):
        if op == "put":
            backend.put_object(bucket.name, name, b"x")
        elif op == "delete":
            backend.delete_object(bucket.name, name)
        else:
            versions = bucket.keys.getlist(name, [])
            if versions:
                backend.delete_object(bucket.name, name, version_id=versions[pick % len(versions)].version_id)
            continue
        newest = bucket.keys.getlist(name, [None])[-1]
        if ticking and newest is not None:
            newest.last_modified = start + dt.timedelta(seconds=n)


def object_page(result: tuple[Any, ...]) -> tuple[Any, ...]:
    keys, truncated, token = result
    listed = [(k.name, k.version_id) if hasattr(k, "version_id") else ("prefix", k) for k in keys]
    return listed, truncated, token


def version_page(result: tuple[Any, ...]) -> tuple[Any, ...]:
    versions, prefixes, markers, next_key, next_version = result
    return ([(v.name, v.version_id, v.is_latest) for v in versions],
            [(m.name, m.version_id, m.is_latest) for m in markers],
            list(prefixes), next_key, next_version)


def outcome(shape: Callable[[tuple[Any, ...]], tuple[Any, ...]], listing: Callable[..., tuple[Any, ...]],
            *args: Any, **kwargs: Any) -> Any:
    """A listing's page, or the exception moto raised instead."""
    try:
        return shape(listing(*args, **kwargs))
    except Exception as exc:
        return ("raised", type(exc).__name__)


def object_pages_equal(original: Callable[..., Any], backend: S3Backend, bucket: Any, prefix: str | None,
                       delimiter: str | None, start_after: str | None, max_keys: int,
                       token: str | None = None) -> int:
    """Page through both listings side by side; returns the number of pages."""
    __tracebackhide__ = True
    for page in range(MAX_PAGES):
        args = (bucket, prefix, delimiter, token, start_after, max_keys)
        indexed = outcome(object_page, backend.list_objects_v2, *args)
        walked = outcome(object_page, original, backend, *args)
        assert indexed == walked, (f"page {page} (prefix={prefix!r}, delimiter={delimiter!r}, "
                                   f"start_after={start_after!r}, max_keys={max_keys}): {indexed} != {walked}")
        if walked[0] == "raised" or not walked[1]:
            return page + 1
        token = walked[2]
    return MAX_PAGES


def version_pages_equal(original: Callable[..., Any], backend: S3Backend, bucket: Any, prefix: str,
                        delimiter: str | None, key_marker: str | None, version_id_marker: str | None,
                        max_keys: int) -> int:
    __tracebackhide__ = True
    for page in range(MAX_PAGES):
        args = {"delimiter": delimiter, "key_marker": key_marker, "max_keys": max_keys, "prefix": prefix,
                "version_id_marker": version_id_marker}
        indexed = outcome(version_page, backend.list_object_versions, bucket.name, **args)
        walked = outcome(version_page, original, backend, bucket.name, **args)
        assert indexed == walked, f"page {page} {args}: {indexed} != {walked}"
        # max_keys 0 answers the same marker again and again: one page says it all.
        if walked[0] == "raised" or walked[3] is None or max_keys == 0:
            return page + 1
        key_marker, version_id_marker = walked[3], walked[4]
    return MAX_PAGES


# Mostly a few common names, so keys get several versions and pages end between them.
names = st.one_of(st.sampled_from(["a", "a/", "a/a", "a/b", "ab", "b", "b/a", "/"]),
                  st.text(alphabet=NAME_ALPHABET, min_size=1, max_size=4))
bounds = st.one_of(st.none(), st.text(alphabet=NAME_ALPHABET, max_size=4))
# Mostly none: a delimiter only sends the listing to moto's walk.
delimiters = st.sampled_from([None, None, None, "/"])
page_sizes = st.integers(min_value=0, max_value=5)
prefixes = st.one_of(st.sampled_from(["", "", "a", "a/"]), st.text(alphabet=NAME_ALPHABET, max_size=3))
writes = st.lists(st.tuples(st.sampled_from(["put", "put", "delete", "delete-version"]), names,
                            st.integers(min_value=0, max_value=5)), max_size=30)


@settings(max_examples=1000, deadline=None)
@given(versioned=st.booleans(), history=writes, ticking=st.booleans(), prefix=st.one_of(st.none(), prefixes),
       start_after=bounds, delimiter=delimiters, max_keys=page_sizes)
def test_object_listing_equals_motos_own_page_by_page(
        moto_listings: tuple[Callable[..., Any], Callable[..., Any]], versioned: bool,
        history: list[tuple[str, str, int]], ticking: bool, prefix: str | None, start_after: str | None,
        delimiter: str | None, max_keys: int) -> None:
    original, _ = moto_listings
    with fresh_bucket(versioned) as (backend, bucket):
        apply_writes(backend, bucket, history, ticking)
        assert_index_matches(bucket)
        object_pages_equal(original, backend, bucket, prefix, delimiter, start_after, max_keys)


@settings(max_examples=1000, deadline=None)
@given(versioned=st.booleans(), history=writes, ticking=st.booleans(), prefix=prefixes,
       markers=st.sampled_from(["none", "key", "key-of-version", "version", "key-and-other-version",
                                "key-and-no-version"]),
       key_marker=st.text(alphabet=NAME_ALPHABET, max_size=4), version_pick=st.integers(min_value=0, max_value=40),
       delimiter=delimiters, max_keys=page_sizes)
def test_version_listing_equals_motos_own_page_by_page(
        moto_listings: tuple[Callable[..., Any], Callable[..., Any]], versioned: bool,
        history: list[tuple[str, str, int]], ticking: bool, prefix: str, markers: str, key_marker: str,
        version_pick: int, delimiter: str | None, max_keys: int) -> None:
    _, original = moto_listings
    with fresh_bucket(versioned) as (backend, bucket):
        apply_writes(backend, bucket, history, ticking)
        assert_index_matches(bucket)
        # The first page's markers: none, a key marker anywhere, or one of a real version (its key
        # alone, its key and version id, or a version id that is not of that key or of any).
        every_version = [v for vs in dict.values(bucket.keys) for v in vs]
        picked = every_version[version_pick % len(every_version)] if every_version else None
        first_key: str | None = None if markers == "none" else key_marker
        version_id_marker: str | None = None
        if markers == "key-and-no-version":
            version_id_marker = "no-such-version"
        elif picked is not None and markers == "key-of-version":
            first_key = picked.name
        elif picked is not None and markers == "version":
            first_key, version_id_marker = picked.name, picked.version_id
        elif picked is not None and markers == "key-and-other-version":
            version_id_marker = picked.version_id
        version_pages_equal(original, backend, bucket, prefix, delimiter, first_key, version_id_marker,
                            max_keys)


def test_a_version_page_that_starts_inside_a_keys_versions(
        moto_listings: tuple[Callable[..., Any], Callable[..., Any]]) -> None:
    """With a key marker and a version-id marker, moto skips that key's versions up to the
    marker's version before it counts the page: the view must hold the page after them."""
    _, original = moto_listings
    with fresh_bucket(versioned=True) as (backend, bucket):
        apply_writes(backend, bucket, [("put", "a", 0)] * 3 + [("put", "b", 0), ("put", "c", 0), ("put", "d", 0)])
        newest_first = sorted(bucket.keys.getlist("a"), key=lambda v: v.last_modified, reverse=True)
        for marker in newest_first:
            for max_keys in (1, 2, 3):
                pages = version_pages_equal(original, backend, bucket, "", None, "a", marker.version_id, max_keys)
                assert pages >= 2 if max_keys < 3 else pages >= 1


def test_the_index_follows_overwrite_delete_and_re_create(
        moto_listings: tuple[Callable[..., Any], Callable[..., Any]]) -> None:
    list_v2, list_versions = moto_listings
    with fresh_bucket(versioned=True) as (backend, bucket):
        for name in ("b/2", "a/1", "c/3", "a/1"):  # the second a/1 is a new version
            backend.put_object(bucket.name, name, b"x")
        assert bucket.keys.names() == ["a/1", "b/2", "c/3"]
        assert len(bucket.keys.getlist("a/1")) == 2

        # A delete in a versioned bucket leaves a delete marker: the name stays, the object goes.
        backend.delete_object(bucket.name, "b/2")
        assert bucket.keys.names() == ["a/1", "b/2", "c/3"]
        assert isinstance(bucket.keys.getlist("b/2")[-1], FakeDeleteMarker)
        page = object_page(backend.list_objects_v2(bucket, "", None, None, None, 1000))
        assert [name for name, _ in page[0]] == ["a/1", "c/3"]
        assert object_pages_equal(list_v2, backend, bucket, None, None, None, 1) == 2

        # Deleting one version keeps the name; deleting the last one removes it.
        first, second = bucket.keys.getlist("a/1")
        backend.delete_object(bucket.name, "a/1", version_id=first.version_id)
        assert bucket.keys.names() == ["a/1", "b/2", "c/3"]
        backend.delete_object(bucket.name, "a/1", version_id=second.version_id)
        assert bucket.keys.names() == ["b/2", "c/3"]
        assert_index_matches(bucket)

        # Removing the delete marker brings the object back, with its name.
        marker = bucket.keys.getlist("b/2")[-1]
        backend.delete_object(bucket.name, "b/2", version_id=marker.version_id)
        page = object_page(backend.list_objects_v2(bucket, "", None, None, None, 1000))
        assert [name for name, _ in page[0]] == ["b/2", "c/3"]

        backend.put_object(bucket.name, "a/1", b"again")
        assert bucket.keys.names() == ["a/1", "b/2", "c/3"]
        assert version_pages_equal(list_versions, backend, bucket, "", None, None, None, 1) >= 3

    with fresh_bucket(versioned=False) as (backend, bucket):
        backend.put_object(bucket.name, "k", b"1")
        backend.put_object(bucket.name, "k", b"2")  # an overwrite replaces the only version
        assert bucket.keys.names() == ["k"] and len(bucket.keys.getlist("k")) == 1
        backend.delete_object(bucket.name, "k")  # a real delete: the name goes
        assert bucket.keys.names() == []
        assert object_page(backend.list_objects_v2(bucket, "", None, None, None, 1000)) == ([], False, None)
        backend.put_object(bucket.name, "k", b"3")
        assert bucket.keys.names() == ["k"]


class _Version:
    """A stand-in version: the store only needs ``dispose``."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.disposed = False

    def dispose(self) -> None:
        self.disposed = True


def test_every_dict_mutator_keeps_the_index_right() -> None:
    store = s3_index.IndexedKeyStore()

    def names_match() -> None:
        __tracebackhide__ = True
        assert store.names() == sorted(dict.keys(store)), (store.names(), sorted(dict.keys(store)))

    store["m"] = _Version("m1")
    store["m"] = _Version("m2")
    store["c"] = _Version("c1")
    names_match()
    assert [v.label for v in store.getlist("m")] == ["m1", "m2"]
    store.setlist("a", [_Version("a1")])
    store.setlist("a", _Version("a2"))
    names_match()
    popped = store.getlist("a")[0]
    store.pop("a")
    assert popped.disposed
    names_match()
    with pytest.raises(KeyError):
        store.pop("nope")
    del store["c"]
    names_match()
    with pytest.raises(KeyError):
        del store["nope"]
    store.setdefault("z", [_Version("z1")])
    store.setdefault("z", [_Version("ignored")])
    assert [v.label for v in store.getlist("z")] == ["z1"]
    names_match()
    store.update({"q": [_Version("q1")]}, r=[_Version("r1")])
    store.update(iter([("e", [_Version("e1")])]))
    names_match()
    store |= {"f": [_Version("f1")]}
    names_match()
    name, _ = store.popitem()
    assert name not in store.names()
    names_match()
    copied = copy.deepcopy(store)
    assert copied.names() == store.names() and copied is not store
    store.clear()
    assert store.names() == [] and copied.names() != []
    rebuilt = s3_index.IndexedKeyStore({"y": [_Version("y1")], "x": [_Version("x1")]})
    assert rebuilt.names() == ["x", "y"]


def test_concurrent_writers_leave_the_index_equal_to_the_store() -> None:
    store = s3_index.IndexedKeyStore()

    def writer(offset: int) -> None:
        for i in range(2_000):
            name = f"k{(i * 7 + offset) % 500:04d}"
            if i % 3 == 2:
                with contextlib.suppress(KeyError):
                    store.pop(name)
            else:
                store[name] = _Version(name)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.names() == sorted(dict.keys(store))


@pytest.fixture
def view_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many names each narrowed view handed to moto holds."""
    sizes: list[int] = []

    class CountedView(s3_index._BucketView):
        def __init__(self, bucket: Any, entries: Any) -> None:
            super().__init__(bucket, entries)
            sizes.append(len(dict.keys(self.keys)))

    monkeypatch.setattr(s3_index, "_BucketView", CountedView)
    return sizes


def test_a_page_touches_the_names_it_needs_not_the_bucket(
        moto_listings: tuple[Callable[..., Any], Callable[..., Any]], view_sizes: list[int]) -> None:
    list_v2, _ = moto_listings
    with fresh_bucket(versioned=True) as (backend, bucket):
        for i in range(20_000):
            backend.put_object(bucket.name, f"backups/{i:05d}/relay.dump", b"x")
        assert len(bucket.keys.names()) == 20_000

        # StartAfter near the end, a page of up to 1000 keys: the ten names left.
        keys, truncated, _ = backend.list_objects_v2(bucket, "backups/", None, None, "backups/19989/relay.dump", 1000)
        assert [k.name for k in keys] == [f"backups/{i:05d}/relay.dump" for i in range(19_990, 20_000)]
        assert not truncated
        assert view_sizes == [10]

        # A full page from the start of the prefix: the page and the one name that truncates it.
        keys, truncated, token = backend.list_objects_v2(bucket, "backups/", None, None, None, 5)
        assert len(keys) == 5 and truncated
        assert view_sizes[-1] == 6
        keys, _, _ = backend.list_objects_v2(bucket, "backups/", None, token, None, 5)
        assert keys[0].name == "backups/00005/relay.dump"
        assert view_sizes[-1] == 6

        # One version page under a narrow prefix.
        versions, _, _, next_key, _ = backend.list_object_versions(bucket.name, prefix="backups/1999", max_keys=3)
        assert [v.name for v in versions] == [f"backups/{i:05d}/relay.dump" for i in range(19_990, 19_993)]
        assert next_key == "backups/19992/relay.dump"
        assert view_sizes[-1] == 4

        # The narrowed pages are moto's pages (a version walk of this bucket takes seconds: the
        # version listings are compared on small buckets above).
        assert object_pages_equal(list_v2, backend, bucket, "backups/", None, "backups/19979/relay.dump", 4) == 5


def test_what_the_index_does_not_answer_goes_to_motos_walk(
        moto_listings: tuple[Callable[..., Any], Callable[..., Any]], view_sizes: list[int]) -> None:
    list_v2, list_versions = moto_listings
    with fresh_bucket(versioned=True) as (backend, bucket):
        for name in ("a/1", "a/2", "b/1"):
            backend.put_object(bucket.name, name, b"x")
        object_pages_equal(list_v2, backend, bucket, "", "/", None, 1)
        object_pages_equal(list_v2, backend, bucket, "a/", None, None, 1, token="not-a-token-moto-gave")
        version_pages_equal(list_versions, backend, bucket, "", "/", None, None, 1)
        version_pages_equal(list_versions, backend, bucket, "", None, None, None, None)  # type: ignore[arg-type]
        assert view_sizes == []

    # A bucket made before install() keeps moto's own store, and its listings.
    plain = S3Backend(REGION, ACCOUNT)
    name = f"index-{uuid.uuid4().hex[:12]}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(models, "_VersionedKeyStore", _VersionedKeyStore)
        bucket = plain.create_bucket(name, REGION)
    try:
        plain.put_object(name, "a", b"x")
        assert type(bucket.keys) is _VersionedKeyStore
        object_pages_equal(list_v2, plain, bucket, "", None, None, 1)
        assert view_sizes == []
    finally:
        models.s3_backends.bucket_accounts.pop(name, None)


def test_install_declines_another_moto_and_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    moto_v2 = inspect.unwrap(S3Backend.list_objects_v2)
    moto_versions = inspect.unwrap(S3Backend.list_object_versions)
    monkeypatch.setattr(models, "_VersionedKeyStore", _VersionedKeyStore)
    monkeypatch.setattr(S3Backend, "list_object_versions", moto_versions)

    def list_objects_v2(self: Any, bucket: Any, prefix: Any, delimiter: Any, continuation_token: Any,
                        start_after: Any, max_keys: Any, fetch_owner: Any = None) -> Any:
        return moto_v2(self, bucket, prefix, delimiter, continuation_token, start_after, max_keys)

    monkeypatch.setattr(S3Backend, "list_objects_v2", list_objects_v2)
    assert s3_index.install() is False
    assert models._VersionedKeyStore is _VersionedKeyStore
    assert S3Backend.list_objects_v2 is list_objects_v2
    assert S3Backend.list_object_versions is moto_versions

    # A moto without the key store moto.s3.models builds buckets from: nothing either.
    monkeypatch.setattr(S3Backend, "list_objects_v2", moto_v2)
    monkeypatch.delattr(models, "_VersionedKeyStore")
    assert s3_index.install() is False
    assert S3Backend.list_objects_v2 is moto_v2
    assert S3Backend.list_object_versions is moto_versions


def test_install_is_idempotent() -> None:
    with _indexed_moto():
        wrapped = (S3Backend.list_objects_v2, S3Backend.list_object_versions)
        assert s3_index.install()
        assert (S3Backend.list_objects_v2, S3Backend.list_object_versions) == wrapped
        assert models._VersionedKeyStore is s3_index.IndexedKeyStore
        # Wrapped once, not twice.
        assert not hasattr(S3Backend.list_objects_v2.__wrapped__, s3_index._INDEXED)
        assert not hasattr(S3Backend.list_object_versions.__wrapped__, s3_index._INDEXED)


# ---- through HTTP, as the stack serves it ------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_server(moto_listings: tuple[Callable[..., Any], Callable[..., Any]]) -> Iterator[str]:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    werkzeug_log = logging.getLogger("werkzeug")
    level = werkzeug_log.level
    werkzeug_log.setLevel(logging.ERROR)
    server = make_server("127.0.0.1", 0, DomainDispatcherApplication(create_backend_app), threaded=True,
                         request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        werkzeug_log.setLevel(level)


def _pages(client: Any, method: str, **kwargs: Any) -> list[dict[str, Any]]:
    drop = {"ResponseMetadata"}
    return [{k: v for k, v in page.items() if k not in drop}
            for page in client.get_paginator(method).paginate(**kwargs)]


def test_boto3_pages_over_http_equal_motos_own(
        s3_server: str, moto_listings: tuple[Callable[..., Any], Callable[..., Any]]) -> None:
    import boto3

    list_v2, list_versions = moto_listings
    client = boto3.client("s3", endpoint_url=s3_server, region_name=REGION, aws_access_key_id="index",
                          aws_secret_access_key="index")
    bucket = f"index-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    backend = models.s3_backends[ACCOUNT]["global"]
    try:
        assert isinstance(backend.get_bucket(bucket).keys, s3_index.IndexedKeyStore)
        for day in range(150):
            for name in (f"backups/2024-{day:03d}/relay.dump", f"backups/2024-{day:03d}/relay.dump.sha256"):
                backend.put_object(bucket, name, b"x")
            if day % 10 == 0:
                backend.put_object(bucket, f"backups/2024-{day:03d}/relay.dump", b"second")
            if day % 25 == 0:
                backend.delete_object(bucket, f"backups/2024-{day:03d}/relay.dump.sha256")
        backend.put_object(bucket, "drills/last-drill.json", b"{}")
        backend.put_object(bucket, "aaa-before-the-prefix", b"x")

        requests = [
            ("list_objects_v2", {"Bucket": bucket, "Prefix": "backups/", "StartAfter": "backups/2024-100/",
                                 "PaginationConfig": {"PageSize": 17}}),
            ("list_objects_v2", {"Bucket": bucket, "Prefix": "backups/", "PaginationConfig": {"PageSize": 100}}),
            ("list_objects_v2", {"Bucket": bucket}),
            ("list_object_versions", {"Bucket": bucket, "Prefix": "backups/", "PaginationConfig": {"PageSize": 23}}),
            ("list_object_versions", {"Bucket": bucket, "Prefix": "backups/2024-1"}),
        ]
        indexed = [_pages(client, method, **kwargs) for method, kwargs in requests]
        assert len(indexed[0]) == 6 and len(indexed[3]) > 10
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(S3Backend, "list_objects_v2", list_v2)
            mp.setattr(S3Backend, "list_object_versions", list_versions)
            walked = [_pages(client, method, **kwargs) for method, kwargs in requests]
        for (method, kwargs), ours, motos in zip(requests, indexed, walked, strict=True):
            assert ours == motos, f"{method} {kwargs}: the indexed pages differ from moto's own"
    finally:
        backend.buckets.pop(bucket, None)
        models.s3_backends.bucket_accounts.pop(bucket, None)
