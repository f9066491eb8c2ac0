"""A sorted index of key names for the reference stack's S3, so a listing page costs a page.

S3 answers ``ListObjectsV2`` and ``ListObjectVersions`` from an index of key names: a page that
starts at a prefix, a ``StartAfter`` or a continuation token costs about the page, however many
objects the bucket holds. moto's backend answers every listing by walking the whole bucket: it
copies the dict of keys, sorts every name that matches the prefix and only then cuts the page,
and a version listing deep-copies every version of every key first. Measured against moto, a
client that reads one page of a large bucket would look slow for a reason real S3 does not have.

``install()`` keeps, for every bucket created after it, the names of its keys in a sorted list
maintained on each write (``IndexedKeyStore``, a subclass of moto's own key store). A listing
without a delimiter then finds where its page starts by bisection, collects the few names the
page can need, and hands moto's *own* listing code a view of the bucket holding just those
names (mapped to the same version lists, nothing copied). Contents, order, truncation, next
markers and continuation tokens are therefore moto's, computed on a smaller input that leads
to the same page.

What it does not change: a listing with a delimiter, with a continuation token moto does not
know, without a page size, on a bucket created before ``install()`` or on a table-storage
bucket is answered by moto's full walk, as before. ``ListObjects`` (v1) is not narrowed. Nothing
about writes, reads or the XML on the wire changes. With another moto, whose listing methods or
key store differ from what this module expects, ``install()`` installs nothing and returns
False: listings stay right, only slower.
"""

from __future__ import annotations

import bisect
import functools
import inspect
import threading
from collections.abc import Callable, Iterable
from typing import Any

try:
    from moto.s3 import models as _models
    from moto.s3.utils import _VersionedKeyStore as _MotoKeyStore
except ImportError:  # another moto: install() declines
    _models = None
    _MotoKeyStore = None

__all__ = ["IndexedKeyStore", "install"]

# The parameters of the moto methods wrapped here; any other signature means another moto.
_LIST_OBJECTS_V2_PARAMS = ("self", "bucket", "prefix", "delimiter", "continuation_token",
                           "start_after", "max_keys")
_LIST_OBJECT_VERSIONS_PARAMS = ("self", "bucket_name", "delimiter", "key_marker", "max_keys",
                                "prefix", "version_id_marker")
# Set on the wrappers, so a second install() sees the first.
_INDEXED = "_opsready_indexed_listing"

_KeyStoreBase: type = _MotoKeyStore if _MotoKeyStore is not None else dict
_DeleteMarker: type | None = getattr(_models, "FakeDeleteMarker", None)
_TABLE_BUCKETS: tuple[type, ...] = tuple(
    t for t in (getattr(_models, "FakeTableStorageBucket", None),) if isinstance(t, type))

Entries = list[tuple[str, list[Any]]]


class IndexedKeyStore(_KeyStoreBase):  # type: ignore[misc,valid-type]
    """moto's key store (name -> list of versions, oldest first) that also keeps its names in a
    sorted list, updated under a lock by every method that adds or removes a name (moto's
    server answers requests from several threads)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self._names: list[str] = sorted(dict.keys(self))

    # ---- writers: each keeps the names equal to the dict's keys ---------------------------------

    def __setitem__(self, key: str, value: Any) -> None:
        with self._lock:
            new = not dict.__contains__(self, key)
            super().__setitem__(key, value)
            if new:
                bisect.insort(self._names, key)

    def setlist(self, key: str, list_: Any) -> None:
        with self._lock:
            new = not dict.__contains__(self, key)
            super().setlist(key, list_)
            if new:
                bisect.insort(self._names, key)

    def setdefault(self, key: str, default: Any = None) -> Any:
        with self._lock:
            new = not dict.__contains__(self, key)
            value = super().setdefault(key, default)
            if new:
                bisect.insort(self._names, key)
            return value

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        # The same merge dict.update does (raw values, no version lists built), done once so an
        # iterator argument is read only once.
        incoming = dict(other, **kwargs)
        with self._lock:
            for key in incoming:
                if not dict.__contains__(self, key):
                    bisect.insort(self._names, key)
            dict.update(self, incoming)

    def __ior__(self, other: Any) -> IndexedKeyStore:
        self.update(other)
        return self

    def pop(self, key: str) -> Any:  # moto's pop: no default, disposes of the versions
        with self._lock:
            value = super().pop(key)
            self._forget(key)
            return value

    def __delitem__(self, key: str) -> None:
        with self._lock:
            super().__delitem__(key)
            self._forget(key)

    def popitem(self) -> tuple[str, Any]:
        with self._lock:
            item: tuple[str, Any] = super().popitem()
            self._forget(item[0])
            return item

    def clear(self) -> None:
        with self._lock:
            super().clear()
            self._names.clear()

    def __reduce__(self) -> tuple[Any, ...]:
        # A lock cannot be copied or pickled: rebuild from the version lists instead.
        return (type(self), (dict(self),))

    def _forget(self, key: str) -> None:
        at = bisect.bisect_left(self._names, key)
        if at < len(self._names) and self._names[at] == key:
            del self._names[at]

    # ---- readers: the names one listing page can need --------------------------------------------

    def names(self) -> list[str]:
        """A copy of the sorted names."""
        with self._lock:
            return list(self._names)

    def object_page(self, prefix: str, after: str | None, objects: int) -> Entries:
        """The names (with their version lists) that start with ``prefix`` and sort after
        ``after``, in order, up to and including the ``objects``-th whose latest version is an
        object rather than a delete marker (moto drops those from an object listing)."""
        with self._lock:
            names = self._names
            at = bisect.bisect_left(names, prefix)
            if after is not None:
                at = max(at, bisect.bisect_right(names, after))
            return self._run(names, at, prefix, objects, lambda versions: int(
                bool(versions) and not isinstance(versions[-1], _DeleteMarker)))

    def version_page(self, prefix: str, key_marker: str | None, versions: int) -> Entries:
        """The names (with their version lists) a version listing page can need.

        With a key marker, moto skips up to and including the first version of the first name
        at or after it (with a version-id marker: up to that exact version, which can only be a
        version of the marker's own name), before it looks at the prefix. So that first name is
        always included whole; names between it and the prefix range are left out, since moto
        would pass over them. Then come the prefix range's names, whole, until they hold
        ``versions`` versions: the page's versions and the one that tells moto to stop."""
        with self._lock:
            names = self._names
            at = bisect.bisect_left(names, prefix)
            entries: Entries = []
            if key_marker is not None:
                first = bisect.bisect_left(names, key_marker)
                if first < len(names):
                    entries.append((names[first], dict.__getitem__(self, names[first])))
                at = max(at, first + 1)
            return entries + self._run(names, at, prefix, versions, len)

    def _run(self, names: list[str], at: int, prefix: str, limit: int,
             weight: Callable[[Any], int]) -> Entries:
        """From ``names[at]`` on, the names starting with ``prefix`` (with their version
        lists), until their ``weight`` adds up to ``limit``. The caller holds the lock."""
        entries: Entries = []
        found = 0
        while at < len(names) and found < limit:
            name = names[at]
            if not name.startswith(prefix):
                break
            listed = dict.__getitem__(self, name)
            entries.append((name, listed))
            found += weight(listed)
            at += 1
        return entries


class _BucketView:
    """What moto's listing code reads of a bucket, with ``keys`` narrowed to one page's names:
    a plain moto key store holding the bucket's own version lists (filled with
    ``dict.__setitem__``, so nothing is copied, appended or disposed of). Anything else is read
    from the bucket itself."""

    def __init__(self, bucket: Any, entries: Iterable[tuple[str, list[Any]]]) -> None:
        self._bucket = bucket
        self.keys = _KeyStoreBase()
        for name, versions in entries:
            dict.__setitem__(self.keys, name, versions)

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._bucket, attribute)


class _BackendWithView:
    """The S3 backend as moto's version listing sees it: ``get_bucket`` of the listed bucket
    returns the view; everything else is the backend itself."""

    def __init__(self, backend: Any, bucket_name: str, view: _BucketView) -> None:
        self._backend = backend
        self._bucket_name = bucket_name
        self._view = view

    def get_bucket(self, bucket_name: str) -> Any:
        if bucket_name == self._bucket_name:
            return self._view
        return self._backend.get_bucket(bucket_name)

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._backend, attribute)


def _page_size(max_keys: Any) -> int | None:
    """``max_keys`` when it is a plain non-negative int; otherwise None (moto's full walk)."""
    if isinstance(max_keys, int) and not isinstance(max_keys, bool) and max_keys >= 0:
        return max_keys
    return None


def _object_page(backend: Any, bucket: Any, prefix: Any, delimiter: Any, continuation_token: Any,
                 start_after: Any, max_keys: Any) -> Entries | None:
    """The entries a ``list_objects_v2`` page needs, or None when moto must walk the bucket."""
    store = getattr(bucket, "keys", None)
    size = _page_size(max_keys)
    if (delimiter or size is None or not isinstance(store, IndexedKeyStore)
            or isinstance(bucket, _TABLE_BUCKETS) or not isinstance(prefix, str | None)):
        return None
    # moto's order of precedence: a continuation token wins over StartAfter.
    if continuation_token:
        tokens = getattr(backend, "_pagination_tokens", None)
        after = tokens.get(continuation_token) if isinstance(tokens, dict) else None
        if not isinstance(after, str):
            return None
    elif start_after:
        if not isinstance(start_after, str):
            return None
        after = start_after
    else:
        after = None
    # max_keys objects, and one more that tells moto the page is truncated.
    return store.object_page(prefix or "", after, size + 1)


def _version_page(bucket: Any, delimiter: Any, key_marker: Any, max_keys: Any,
                  prefix: Any) -> Entries | None:
    """The entries a ``list_object_versions`` page needs, or None when moto must walk it."""
    store = getattr(bucket, "keys", None)
    size = _page_size(max_keys)
    if (delimiter or size is None or not isinstance(store, IndexedKeyStore)
            or not isinstance(prefix, str) or not isinstance(key_marker, str | None)):
        return None
    return store.version_page(prefix, key_marker, size + 1)


def _indexed_list_objects_v2(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def list_objects_v2(self: Any, bucket: Any, prefix: Any, delimiter: Any,
                        continuation_token: Any, start_after: Any, max_keys: Any) -> Any:
        entries = _object_page(self, bucket, prefix, delimiter, continuation_token, start_after,
                               max_keys)
        listed = bucket if entries is None else _BucketView(bucket, entries)
        return original(self, listed, prefix, delimiter, continuation_token, start_after, max_keys)

    setattr(list_objects_v2, _INDEXED, True)
    return list_objects_v2


def _indexed_list_object_versions(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def list_object_versions(self: Any, bucket_name: str, delimiter: str | None = None,
                             key_marker: str | None = None, max_keys: int | None = 1000,
                             prefix: str = "", version_id_marker: str | None = None) -> Any:
        entries = None
        try:
            bucket = self.get_bucket(bucket_name)
        except Exception:  # moto's own call below raises it again, as moto would
            bucket = None
        if bucket is not None:
            entries = _version_page(bucket, delimiter, key_marker, max_keys, prefix)
        backend = self if entries is None else _BackendWithView(self, bucket_name,
                                                                _BucketView(bucket, entries))
        return original(backend, bucket_name, delimiter=delimiter, key_marker=key_marker,
                        max_keys=max_keys, prefix=prefix, version_id_marker=version_id_marker)

    setattr(list_object_versions, _INDEXED, True)
    return list_object_versions


def _has_params(method: Any, expected: tuple[str, ...]) -> bool:
    try:
        params = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return False
    return tuple(p.name for p in params) == expected and all(
        p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params)


def install() -> bool:
    """Index the key names of every S3 bucket created from now on, and answer listings from
    the index. True when the index is on (also when it already was); False, with nothing
    changed, when this moto's listing methods or key store are not the ones expected."""
    if _models is None or _MotoKeyStore is None or _DeleteMarker is None:
        return False
    backend = getattr(_models, "S3Backend", None)
    store = getattr(_models, "_VersionedKeyStore", None)
    if (backend is None or not isinstance(store, type) or not issubclass(store, _MotoKeyStore)
            or not _has_params(getattr(backend, "list_objects_v2", None), _LIST_OBJECTS_V2_PARAMS)
            or not _has_params(getattr(backend, "list_object_versions", None),
                               _LIST_OBJECT_VERSIONS_PARAMS)):
        return False
    if not getattr(backend.list_objects_v2, _INDEXED, False):
        backend.list_objects_v2 = _indexed_list_objects_v2(backend.list_objects_v2)
    if not getattr(backend.list_object_versions, _INDEXED, False):
        backend.list_object_versions = _indexed_list_object_versions(backend.list_object_versions)
    # FakeBucket.__init__ builds its key store from this name in moto.s3.models.
    _models._VersionedKeyStore = IndexedKeyStore
    return True
