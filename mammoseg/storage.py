"""One object-store interface, two implementations: a local folder and S3 (boto3, any endpoint).

The URL decides which: ``s3://bucket/prefix`` gives :class:`S3Store`, a path or ``file://`` URL
gives :class:`LocalStore`. Both speak in *keys* relative to the store's root, and both refuse keys
that could escape it (see :func:`validate_key`).

Every read is recorded (key, size, ETag) in :attr:`ObjectStore.read_log`, so a run can write a
manifest of exactly what it consumed.

:meth:`ObjectStore.compare_and_swap` writes an object only if it still has the ETag the caller
read (or is still absent), else raises :class:`PreconditionFailed`: the primitive behind safe
read-compare-write updates such as the champion pointer. LocalStore guards it with a lock file;
S3Store uses S3 conditional writes (``If-Match`` / ``If-None-Match: *``) where the endpoint
honours them and a lease object with an expiry where it does not.

Error messages never quote an object key, a key-bearing URI or a store prefix: keys can carry
patient identifiers and messages end up in task logs and the Prefect database. They name the
key by :func:`describe_key` instead (top-level folder + a short hash of the key).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import random
import re
import shutil
import tempfile
import threading
import time
import unicodedata
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Self
from urllib.parse import unquote, urlparse

try:  # POSIX; elsewhere LocalStore falls back to an O_CREAT|O_EXCL lock file
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from mammoseg.settings import Settings

CHUNK = 1024 * 1024
_ETAG_CACHE_MIN_SIZE = 64 * 1024
#: ETags of local files, shared by every LocalStore of the process (each task opens its own
#: store, so a per-instance memo re-hashed every full-size DICOM in every task: seconds per
#: listing at 5000x3000). Keyed by path, size, mtime, ctime and inode: any rewrite (in place or
#: by rename) changes one of them. Bounded: cleared when it reaches the limit.
_LOCAL_ETAGS: dict[tuple[str, int, int, int, int], str] = {}
_LOCAL_ETAGS_LIMIT = 500_000
_log = logging.getLogger(__name__)


class StoreError(Exception):
    """Base class for object-store errors."""


class UnsafeKeyError(StoreError, ValueError):
    """A key from outside (CSV cell, listing, URI) would read or write outside the store root."""


class ObjectNotFound(StoreError, KeyError):
    """No object at that key."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else "object not found"


class PreconditionFailed(StoreError):
    """A conditional write lost: the object changed, appeared or vanished since it was read.

    Re-read the object, decide again and retry (see :meth:`ObjectStore.compare_and_swap`)."""


class LockTimeout(StoreError, TimeoutError):
    """The lock (local lock file or S3 lease) guarding a conditional write was not free in time."""


class StoreConnectionError(StoreError, ConnectionError):
    """A transient network failure talking to the store; retrying may help."""


class S3RequestError(StoreError):
    """S3 answered with an error; ``code`` (``AccessDenied``…), ``status`` and ``operation`` say
    which. The message names the object by :func:`describe_key`, never by its key."""

    code: str = ""
    status: int | None = None
    operation: str = ""


class S3TransientError(S3RequestError, StoreConnectionError):
    """An S3 answer that means "try again" (5xx, throttling), after botocore's own retries.

    A :class:`ConnectionError`, so the tasks' retry condition (``tasks.retry``) retries it."""


#: S3 error codes / HTTP statuses raised as :class:`S3TransientError`.
TRANSIENT_S3_CODES: frozenset[str] = frozenset(
    {"500", "502", "503", "504", "InternalError", "ServiceUnavailable", "SlowDown",
     "RequestTimeout", "Throttling", "ThrottlingException", "RequestLimitExceeded"}
)  # fmt: skip


#: Top-level folders shown in error messages: plain lowercase words (``models``, ``runs``, ``raw``,
#: ``cbis-ddsm``), never source folder names such as ``Mass-Test_P_00016_LEFT_CC_1``.
_SHOWN_SEGMENT = re.compile(r"^[a-z][a-z_-]{0,31}$")


def describe_key(key: object) -> str:
    """How error messages name a key without quoting it: ``models/…#1a2b3c4d``.

    The top-level folder is shown only when it is a plain lowercase word (``models``, ``runs``,
    ``raw``); the hash is the first 8 hex digits of the SHA-256 of the whole key (UTF-8), so an
    operator can find the object by hashing the keys of a listing. The key itself, which can
    carry patient identifiers, is never shown.
    """
    text = key if isinstance(key, str) else repr(key)
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    top, sep, _ = text.partition("/")
    shown = f"{top}/…" if sep and _SHOWN_SEGMENT.match(top) else "…"
    return f"{shown}#{digest}"


def _describe_url(url: object) -> str:
    """A store URL or object URI for messages: scheme and bucket kept, the path described."""
    text = str(url)
    scheme, sep, rest = text.partition("://")
    if not sep:
        return f"path {describe_key(text)}"
    if scheme == "file":
        return f"file://{describe_key(rest.lstrip('/'))}" if rest.strip("/") else "file:///"
    bucket, _, path = rest.partition("/")
    return (
        f"{scheme}://{bucket}/{describe_key(path)}" if path.strip("/") else f"{scheme}://{bucket}"
    )


def _norm_etag(etag: str | None) -> str | None:
    return None if etag is None else str(etag).strip().strip('"')


@dataclass(frozen=True)
class ObjectInfo:
    """What we know about one stored object."""

    key: str
    size: int
    etag: str
    uri: str


_DRIVE = re.compile(r"^[A-Za-z]:")
_PCT = re.compile(r"%[0-9A-Fa-f]{2}")


def validate_key(key: str) -> str:
    """Return ``key`` unchanged if it is a safe relative key, else raise :class:`UnsafeKeyError`.

    Refused: empty keys, absolute paths, Windows drives, backslashes, ``.``/``..``/empty segments,
    percent-encoded bytes, control characters and text that is not NFC-normalised Unicode (so
    two spellings of one name cannot map to two objects).
    """
    if not isinstance(key, str) or not key:
        raise UnsafeKeyError("empty object key")
    problems: list[str] = []
    if key.startswith("/"):
        problems.append("it is an absolute path")
    if _DRIVE.match(key):
        problems.append("it starts with a drive letter")
    if "\\" in key:
        problems.append("it contains a backslash")
    if _PCT.search(key):
        problems.append("it contains percent-encoding")
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        problems.append("it contains control characters")
    if unicodedata.normalize("NFC", key) != key:
        problems.append("it is not NFC-normalised Unicode")
    parts = key.split("/")
    if any(p in ("..", ".") for p in parts):
        problems.append("it has a '.' or '..' segment")
    if any(p == "" for p in parts[:-1]):
        problems.append("it has an empty segment ('//')")
    if problems:
        raise UnsafeKeyError(f"refused object key {describe_key(key)}: " + "; ".join(problems))
    return key


def join_key(*parts: str) -> str:
    """Join key parts with '/', dropping empty parts and stray slashes at the joins."""
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


class ObjectStore(ABC):
    """A flat namespace of keys under one root."""

    url: str

    def __init__(self) -> None:
        self.read_log: dict[str, ObjectInfo] = {}

    # -- to implement -------------------------------------------------------------------
    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """All objects whose key starts with ``prefix``, in key order."""

    @abstractmethod
    def head(self, key: str) -> ObjectInfo:
        """Size and ETag of one object; :class:`ObjectNotFound` if absent."""

    @abstractmethod
    def _open(self, key: str) -> tuple[IO[bytes], ObjectInfo]:
        """A readable stream and the info of the object being read."""

    @abstractmethod
    def _put_stream(self, key: str, stream: IO[bytes], content_type: str | None) -> ObjectInfo:
        """Store a stream (multipart for large objects where the backend has it)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object (no error if absent)."""

    @abstractmethod
    def _compare_and_swap(
        self, key: str, expected_etag: str | None, data: bytes, content_type: str | None
    ) -> ObjectInfo:
        """Atomically: write ``data`` only if the object's ETag is ``expected_etag`` (None: only
        if absent); else raise :class:`PreconditionFailed`."""

    @abstractmethod
    def uri(self, key: str) -> str:
        """Full URI of a key (``s3://…`` or ``file://…``)."""

    # -- shared behaviour ---------------------------------------------------------------
    def key_from_uri(self, uri: str) -> str:
        """Map a full URI of this store back to a key; refuse URIs outside it."""
        root = self.uri("")
        if not uri.startswith(root):
            raise UnsafeKeyError(
                f"the URI {_describe_url(uri)} is outside the store {_describe_url(root)}"
            )
        return validate_key(uri[len(root) :].lstrip("/"))

    def exists(self, key: str) -> bool:
        try:
            self.head(key)
        except ObjectNotFound:
            return False
        return True

    def open(self, key: str) -> IO[bytes]:
        """Stream an object; its size and ETag go to :attr:`read_log`."""
        stream, info = self._open(validate_key(key))
        self.read_log[info.key] = info
        return stream

    def read_bytes(self, key: str) -> bytes:
        data, _ = self.read_with_info(key)
        return data

    def read_prefix(self, key: str, nbytes: int) -> bytes:
        """The first ``nbytes`` of an object (a ranged GET on S3): enough for a DICOM header."""
        return self._read_prefix(validate_key(key), nbytes)

    @abstractmethod
    def _read_prefix(self, key: str, nbytes: int) -> bytes: ...

    def read_with_info(self, key: str) -> tuple[bytes, ObjectInfo]:
        stream, info = self._open(validate_key(key))
        try:
            data = stream.read()
        finally:
            stream.close()
        self.read_log[info.key] = info
        return data, info

    def write_bytes(self, key: str, data: bytes, content_type: str | None = None) -> ObjectInfo:
        import io

        return self._put_stream(validate_key(key), io.BytesIO(data), content_type)

    def write_stream(
        self, key: str, stream: IO[bytes], content_type: str | None = None
    ) -> ObjectInfo:
        return self._put_stream(validate_key(key), stream, content_type)

    def write_file(self, key: str, path: Path, content_type: str | None = None) -> ObjectInfo:
        with open(path, "rb") as fh:
            return self._put_stream(validate_key(key), fh, content_type)

    def compare_and_swap(
        self,
        key: str,
        expected_etag: str | None,
        data: bytes,
        content_type: str | None = None,
    ) -> ObjectInfo:
        """Write ``data`` at ``key`` only if the object still has ``expected_etag`` (the ETag
        of the version the caller read), or, with ``expected_etag=None``, only if there is no
        object yet. Raises :class:`PreconditionFailed` otherwise, and writes nothing: re-read,
        decide again and retry. Atomic against concurrent callers of this method, in this
        process or others (plain writes to the same key are not coordinated).
        """
        return self._compare_and_swap(
            validate_key(key), _norm_etag(expected_etag), bytes(data), content_type
        )

    def child(self, prefix: str) -> ObjectStore:
        """A store rooted at ``prefix`` below this one (same backend)."""
        return open_store(self.uri(validate_key(prefix.strip("/"))))


def _md5_stream(fh: IO[bytes]) -> str:
    h = hashlib.md5(usedforsecurity=False)
    for chunk in iter(lambda: fh.read(CHUNK), b""):
        h.update(chunk)
    return h.hexdigest()


def _md5_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return _md5_stream(fh)


class LocalStore(ObjectStore):
    """Objects are files below ``root``; the ETag is the MD5 of the content (as S3 single-part).

    Writes go to a temporary file first and are renamed into place, so a reader never sees a
    half-written object and an interrupted run leaves no partial object behind.

    :meth:`compare_and_swap` holds an exclusive lock on a hidden file beside the object
    (``.mammoseg-lock-<name>``, ``fcntl.flock``: released by the kernel if the holder dies) while
    it compares the ETag and renames the new content into place. Without ``fcntl`` the lock is
    an ``O_CREAT|O_EXCL`` file, broken once older than :attr:`lock_stale_s`.
    """

    #: Seconds to wait for the lock of a conditional write before :class:`LockTimeout`.
    lock_timeout_s: float = 60.0
    #: Age after which an ``O_EXCL`` lock file is taken for a crashed holder's (no ``fcntl``).
    lock_stale_s: float = 30.0

    def __init__(self, root: str | Path) -> None:
        super().__init__()
        self.root = Path(root).expanduser().resolve()
        self.url = self.root.as_uri()
        self._use_flock = fcntl is not None

    def _path(self, key: str) -> Path:
        path = (self.root / validate_key(key)).resolve()
        if path != self.root and self.root not in path.parents:
            raise UnsafeKeyError(
                f"refused object key {describe_key(key)}: it resolves outside the store"
            )
        return path

    def _not_found(self, key: str) -> ObjectNotFound:
        return ObjectNotFound(f"no object {describe_key(key)} in the local store")

    def _info(self, key: str, path: Path) -> ObjectInfo:
        with open(path, "rb") as fh:
            return self._info_of(key, path, fh)

    def _info_of(self, key: str, path: Path, fh: IO[bytes]) -> ObjectInfo:
        """Info of the file open as ``fh`` (so size, ETag and content are of one version)."""
        st = os.fstat(fh.fileno())
        # Only larger files are cached (hashing small ones costs next to nothing): a small
        # object rewritten within one mtime tick (a pointer updated by a concurrent writer)
        # must never be given a stale ETag.
        cacheable = st.st_size >= _ETAG_CACHE_MIN_SIZE
        cache_key = (str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        etag = _LOCAL_ETAGS.get(cache_key) if cacheable else None
        if etag is None:
            etag = _md5_stream(fh)
            fh.seek(0)
            if cacheable:
                if len(_LOCAL_ETAGS) >= _LOCAL_ETAGS_LIMIT:
                    _LOCAL_ETAGS.clear()
                _LOCAL_ETAGS[cache_key] = etag
        return ObjectInfo(key=key, size=st.st_size, etag=etag, uri=path.as_uri())

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        if not self.root.exists():
            return
        keys = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".mammoseg-tmp")]
            for name in filenames:
                if name.startswith((".mammoseg-tmp", ".mammoseg-lock")):
                    continue
                rel = Path(dirpath, name).relative_to(self.root).as_posix()
                if rel.startswith(prefix):
                    keys.append(rel)
        for key in sorted(keys):
            try:
                yield self._info(key, self.root / key)
            except FileNotFoundError:  # deleted since the walk
                continue

    def _open_file(self, key: str) -> tuple[Path, IO[bytes]]:
        path = self._path(key)
        if not path.is_file():
            raise self._not_found(key)
        try:
            return path, open(path, "rb")
        except FileNotFoundError:
            raise self._not_found(key) from None

    def head(self, key: str) -> ObjectInfo:
        path, fh = self._open_file(key)
        with fh:
            return self._info_of(key, path, fh)

    def _open(self, key: str) -> tuple[IO[bytes], ObjectInfo]:
        path, fh = self._open_file(key)
        try:
            return fh, self._info_of(key, path, fh)
        except BaseException:
            fh.close()
            raise

    def _read_prefix(self, key: str, nbytes: int) -> bytes:
        _, fh = self._open_file(key)
        with fh:
            return fh.read(nbytes)

    def _put_stream(self, key: str, stream: IO[bytes], content_type: str | None) -> ObjectInfo:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".mammoseg-tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(stream, out, CHUNK)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self._info(key, path)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def _compare_and_swap(
        self, key: str, expected_etag: str | None, data: bytes, content_type: str | None
    ) -> ObjectInfo:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked(path):
            try:
                current: str | None = _md5_file(path)
            except FileNotFoundError:
                current = None
            if current != expected_etag:
                if expected_etag is None:
                    why = "it exists already"
                elif current is None:
                    why = "it no longer exists"
                else:
                    why = "it changed since it was read"
                raise PreconditionFailed(f"conditional write of {describe_key(key)} refused: {why}")
            return self._put_stream(key, io.BytesIO(data), content_type)

    def _lock_timeout(self, path: Path) -> LockTimeout:
        return LockTimeout(f"the lock of {describe_key(path.name)} stayed taken for {self.lock_timeout_s:g} s")

    @contextlib.contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        """Exclusive lock for read-compare-write of ``path`` (threads and processes)."""
        deadline = time.monotonic() + self.lock_timeout_s
        if self._use_flock:
            lock = path.parent / f".mammoseg-lock-{path.name}"
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            raise self._lock_timeout(path) from None
                        time.sleep(random.uniform(0.002, 0.02))
                try:
                    yield
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
            return
        lock = path.parent / f".mammoseg-lockx-{path.name}"
        while True:
            try:
                fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                try:
                    age = time.time() - lock.stat().st_mtime
                except FileNotFoundError:
                    continue
                if age > self.lock_stale_s:  # its holder died: take it over
                    _log.warning("breaking a stale store lock (%.0f s old)", age)
                    lock.unlink(missing_ok=True)
                    continue
                if time.monotonic() > deadline:
                    raise self._lock_timeout(path) from None
                time.sleep(random.uniform(0.002, 0.02))
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{os.getpid()} {time.time():.3f}\n")
            break
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)

    def key_from_uri(self, uri: str) -> str:
        if not uri.startswith("file://"):
            raise UnsafeKeyError(f"{_describe_url(uri)} is not a file:// URI of this store")
        path = Path(unquote(urlparse(uri).path))
        if path != self.root and self.root not in path.parents:
            raise UnsafeKeyError(f"the URI {_describe_url(uri)} is outside the store")
        return validate_key(path.relative_to(self.root).as_posix())

    def uri(self, key: str) -> str:
        if not key:
            return self.url + "/"
        return (self.root / validate_key(key)).as_uri()


_NOT_FOUND_CODES: frozenset[str] = frozenset({"404", "NoSuchKey", "NotFound"})
_CONFLICT_CODES: frozenset[str] = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})
_UNSUPPORTED_CODES: frozenset[str] = frozenset({"NotImplemented", "501"})

#: (endpoint, bucket) → whether it honours conditional writes; probed once per process.
_CONDITIONAL_SUPPORT: dict[tuple[str, str], bool] = {}
_CONDITIONAL_SUPPORT_LOCK = threading.Lock()


class _ConditionalWritesUnsupported(Exception):
    """The endpoint refused a conditional header as not implemented."""


def _client_error_parts(exc: Any) -> tuple[str, int | None, str]:
    """(code, HTTP status, message) of a botocore ClientError."""
    response = getattr(exc, "response", None) or {}
    err = response.get("Error") or {}
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return str(err.get("Code") or ""), status, str(err.get("Message") or "")


class _GuardedBody:
    """A streaming S3 body whose read errors are translated (no key in their messages)."""

    def __init__(self, body: Any, store: S3Store, key: str) -> None:
        self._body = body
        self._store = store
        self._key = key

    def read(self, amt: int | None = None) -> bytes:
        with self._store._errors("read", self._key):
            return self._body.read() if amt is None or amt < 0 else self._body.read(amt)

    def __iter__(self) -> Iterator[bytes]:
        with self._store._errors("read", self._key):
            yield from self._body

    def iter_chunks(self, chunk_size: int = CHUNK) -> Iterator[bytes]:
        with self._store._errors("read", self._key):
            yield from self._body.iter_chunks(chunk_size)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._body.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._body, name)


class S3Store(ObjectStore):
    """Objects under ``s3://bucket/prefix``; any S3-compatible endpoint (AWS, MinIO, moto).

    :meth:`compare_and_swap` uses conditional writes (``PutObject`` with ``If-Match: <etag>``,
    or ``If-None-Match: *`` to create) when the endpoint honours them: AWS S3 since 2024, MinIO,
    moto. ``conditional_writes=None`` (default) probes the endpoint once per process and bucket;
    an endpoint that ignores the headers or answers ``NotImplemented`` gets a *lease*: a small
    object ``.mammoseg-lease-<name>`` beside the key, holding a token and an expiry
    (:attr:`lease_ttl_s`), written, left to settle (:attr:`lease_settle_s`) and read back before
    the compare-and-write. A lease is best effort (it relies on every writer's claim landing
    within the settle time); prefer an endpoint with conditional writes.
    """

    #: Lease fallback: how long a lease lives (a crashed holder's lease is free after that),
    #: how long a claim settles before it is read back, and how long to wait for a lease.
    lease_ttl_s: float = 60.0
    lease_settle_s: float = 1.0
    lease_timeout_s: float = 180.0

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: object | None = None,
        settings: Settings | None = None,
        conditional_writes: bool | None = None,
    ) -> None:
        super().__init__()
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            validate_key(self.prefix)
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self._settings = settings
        self._client = client
        self.conditional_writes = conditional_writes

    @property
    def client(self):
        if self._client is None:
            self._client = make_s3_client(self._settings)
        return self._client

    def _full(self, key: str) -> str:
        return join_key(self.prefix, validate_key(key))

    def _rel(self, full_key: str) -> str:
        rel = full_key[len(self.prefix) + 1 :] if self.prefix else full_key
        return validate_key(rel)

    # -- errors ---------------------------------------------------------------------------
    def _where(self, key: str) -> str:
        """The object, for messages: bucket and a description of its full key, never the key."""
        full = join_key(self.prefix, key) if key else self.prefix
        return f"{describe_key(full)} in s3://{self.bucket}"

    def _safe_detail(self, message: str, key: str) -> str:
        """``message`` when it names neither the key, its file name, the prefix nor a URL."""
        if not message:
            return ""
        full = join_key(self.prefix, key) if key else self.prefix
        names = [n for n in (full, key.rsplit("/", 1)[-1] if key else "", self.prefix) if n]
        if "://" in message or any(n in message for n in names):
            return ""
        return f": {message}"

    def _translate(self, exc: BaseException, op: str, key: str) -> StoreError:
        """A StoreError for a boto3/botocore failure whose message names no key.

        Boto's own messages can carry the key or the request URL (``S3UploadFailedError``,
        ``EndpointConnectionError``); they are dropped, the error code and status are kept.
        """
        from botocore.exceptions import ClientError, HTTPClientError
        from botocore.exceptions import ConnectionError as BotoConnectionError

        cause = exc
        if not isinstance(exc, ClientError) and isinstance(exc.__context__, ClientError):
            cause = exc.__context__  # boto3's S3UploadFailedError wraps the ClientError
        if isinstance(cause, ClientError):
            code, status, message = _client_error_parts(cause)
            if code in _NOT_FOUND_CODES:
                return ObjectNotFound(f"no object {self._where(key)}")
            text = f"S3 {op} of {self._where(key)} failed: {code or 'error'} (HTTP {status})"
            transient = code in TRANSIENT_S3_CODES or str(status) in TRANSIENT_S3_CODES
            err = (S3TransientError if transient else S3RequestError)(
                text + self._safe_detail(message, key)
            )
            err.code, err.status, err.operation = code, status, op
            return err
        if isinstance(exc, BotoConnectionError | HTTPClientError):
            return StoreConnectionError(
                f"S3 {op} of {self._where(key)} failed: {type(exc).__name__} (network; retry)"
            )
        detail = self._safe_detail(str(exc), key)
        return StoreError(f"S3 {op} of {self._where(key)} failed: {type(exc).__name__}{detail}")

    @contextlib.contextmanager
    def _errors(self, op: str, key: str) -> Iterator[None]:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (ClientError, BotoCoreError, Boto3Error) as exc:
            raise self._translate(exc, op, key) from None

    # -- reading and writing -------------------------------------------------------------
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        full_prefix = join_key(self.prefix, prefix) if prefix else self.prefix
        if self.prefix and not prefix:
            full_prefix += "/"
        paginator = self.client.get_paginator("list_objects_v2")
        with self._errors("listing", prefix):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
                for obj in page.get("Contents", []):
                    try:
                        key = self._rel(obj["Key"])
                    except UnsafeKeyError:
                        # listed, but unusable: no operation of ours could read it safely. Say
                        # so (without the key, which may carry identifiers) and go on.
                        _log.warning(
                            "listing %s: skipped one object whose key is unsafe to use",
                            f"s3://{self.bucket}",
                        )
                        continue
                    if key.rsplit("/", 1)[-1].startswith((".mammoseg-lease-", ".mammoseg-probe-")):
                        continue  # our own coordination objects
                    yield ObjectInfo(
                        key=key, size=obj["Size"], etag=obj["ETag"].strip('"'), uri=self.uri(key)
                    )

    def head(self, key: str) -> ObjectInfo:
        with self._errors("head", key):
            resp = self.client.head_object(Bucket=self.bucket, Key=self._full(key))
        return ObjectInfo(
            key=key,
            size=resp["ContentLength"],
            etag=resp["ETag"].strip('"'),
            uri=self.uri(key),
        )

    def _open(self, key: str) -> tuple[IO[bytes], ObjectInfo]:
        with self._errors("read", key):
            resp = self.client.get_object(Bucket=self.bucket, Key=self._full(key))
        info = ObjectInfo(
            key=key,
            size=resp["ContentLength"],
            etag=resp["ETag"].strip('"'),
            uri=self.uri(key),
        )
        return _GuardedBody(resp["Body"], self, key), info  # type: ignore[return-value]

    def _read_prefix(self, key: str, nbytes: int) -> bytes:
        with self._errors("ranged read", key):
            resp = self.client.get_object(
                Bucket=self.bucket, Key=self._full(key), Range=f"bytes=0-{max(nbytes, 1) - 1}"
            )
            return resp["Body"].read()

    def _put_stream(self, key: str, stream: IO[bytes], content_type: str | None) -> ObjectInfo:
        from boto3.s3.transfer import TransferConfig

        mb = self._settings.s3_multipart_threshold_mb if self._settings else 8
        config = TransferConfig(multipart_threshold=mb * CHUNK, multipart_chunksize=mb * CHUNK)
        extra = {"ContentType": content_type} if content_type else None
        with self._errors("upload", key):
            self.client.upload_fileobj(
                stream, self.bucket, self._full(key), ExtraArgs=extra, Config=config
            )
        return self.head(key)

    def delete(self, key: str) -> None:
        with self._errors("delete", key):
            self.client.delete_object(Bucket=self.bucket, Key=self._full(key))

    # -- compare and swap ----------------------------------------------------------------
    def _compare_and_swap(
        self, key: str, expected_etag: str | None, data: bytes, content_type: str | None
    ) -> ObjectInfo:
        if self._conditional_writes_supported():
            try:
                return self._conditional_put(key, expected_etag, data, content_type)
            except _ConditionalWritesUnsupported:
                self._remember_support(False)
        return self._leased_put(key, expected_etag, data, content_type)

    def _support_key(self) -> tuple[str, str]:
        return (str(getattr(getattr(self.client, "meta", None), "endpoint_url", "")), self.bucket)

    def _remember_support(self, supported: bool) -> None:
        self.conditional_writes = supported
        with _CONDITIONAL_SUPPORT_LOCK:
            _CONDITIONAL_SUPPORT[self._support_key()] = supported
        if not supported:
            _log.warning(
                "s3://%s: the endpoint does not honour conditional writes; guarding "
                "compare-and-swap with a lease object instead",
                self.bucket,
            )

    def _conditional_writes_supported(self) -> bool:
        if self.conditional_writes is not None:
            return self.conditional_writes
        with _CONDITIONAL_SUPPORT_LOCK:
            known = _CONDITIONAL_SUPPORT.get(self._support_key())
        if known is not None:
            self.conditional_writes = known
            return known
        supported = self._probe_conditional_writes()
        self._remember_support(supported)
        return supported

    def _probe_conditional_writes(self) -> bool:
        """Does the endpoint enforce ``If-None-Match: *`` and ``If-Match``? (A throw-away object.)"""
        from botocore.exceptions import ClientError

        probe = join_key(self.prefix, f".mammoseg-probe-{uuid.uuid4().hex}")

        def refused(**cond: str) -> bool | None:
            """True: refused as a failed precondition; False: accepted; None: not implemented."""
            try:
                self.client.put_object(Bucket=self.bucket, Key=probe, Body=b"", **cond)
            except ClientError as exc:
                code, status, _ = _client_error_parts(exc)
                if code in _CONFLICT_CODES or status in (409, 412):
                    return True
                if (
                    code in _UNSUPPORTED_CODES
                    or status == 501
                    or code in ("InvalidArgument", "InvalidRequest", "NotSupported")
                ):
                    return None
                raise
            return False

        try:
            with self._errors("conditional-write probe", ".mammoseg-probe"):
                if refused(IfNoneMatch="*") is not False:  # creating a fresh key must work
                    return False
                if not refused(IfNoneMatch="*"):  # the same again must be refused
                    return False
                return bool(refused(IfMatch='"00000000000000000000000000000000"'))
        finally:
            with contextlib.suppress(Exception):
                self.client.delete_object(Bucket=self.bucket, Key=probe)

    def _conditional_put(
        self, key: str, expected_etag: str | None, data: bytes, content_type: str | None
    ) -> ObjectInfo:
        from botocore.exceptions import ClientError

        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self._full(key), "Body": data}
        if content_type:
            kwargs["ContentType"] = content_type
        if expected_etag is None:
            kwargs["IfNoneMatch"] = "*"
        else:
            kwargs["IfMatch"] = f'"{expected_etag}"'
        with self._errors("conditional write", key):
            try:
                resp = self.client.put_object(**kwargs)
            except ClientError as exc:
                code, status, _ = _client_error_parts(exc)
                if code in _CONFLICT_CODES or status in (409, 412):
                    why = "it exists already" if expected_etag is None else "it changed"
                elif expected_etag is not None and code in _NOT_FOUND_CODES:
                    why = "it no longer exists"
                elif code in _UNSUPPORTED_CODES or status == 501:
                    raise _ConditionalWritesUnsupported from None
                else:
                    raise  # translated by _errors
                raise PreconditionFailed(
                    f"conditional write of {self._where(key)} refused: {why}"
                ) from None
        return ObjectInfo(
            key=key, size=len(data), etag=str(resp["ETag"]).strip('"'), uri=self.uri(key)
        )

    def _leased_put(
        self, key: str, expected_etag: str | None, data: bytes, content_type: str | None
    ) -> ObjectInfo:
        with self._lease(key) as still_held:
            try:
                current: str | None = self.head(key).etag
            except ObjectNotFound:
                current = None
            if current != expected_etag:
                why = (
                    "it exists already"
                    if expected_etag is None
                    else "it no longer exists"
                    if current is None
                    else "it changed"
                )
                raise PreconditionFailed(f"conditional write of {self._where(key)} refused: {why}")
            if not still_held():
                raise LockTimeout(f"the lease of {self._where(key)} expired before the write")
            return self._put_stream(key, io.BytesIO(data), content_type)

    def _read_lease(self, lease_key: str) -> dict[str, Any] | None:
        try:
            raw = self.read_bytes(lease_key)
        except ObjectNotFound:
            return None
        try:
            lease = json.loads(raw)
        except ValueError:
            return {}  # unreadable: treat as expired
        return lease if isinstance(lease, dict) else {}

    @contextlib.contextmanager
    def _lease(self, key: str) -> Iterator[Any]:
        """Hold the lease of ``key``; yields a callable telling whether it is still unexpired."""
        parent, _, name = key.rpartition("/")
        lease_key = join_key(parent, f".mammoseg-lease-{name}")
        token = uuid.uuid4().hex
        deadline = time.monotonic() + self.lease_timeout_s
        while True:
            held = self._read_lease(lease_key)
            if held is None or float(held.get("expires_at", 0) or 0) <= time.time():
                acquired = time.monotonic()
                claim = {"token": token, "expires_at": time.time() + self.lease_ttl_s}
                self.write_bytes(lease_key, json.dumps(claim).encode(), "application/json")
                time.sleep(self.lease_settle_s)
                held = self._read_lease(lease_key)
                if held is not None and held.get("token") == token:
                    break
            if time.monotonic() > deadline:
                raise LockTimeout(
                    f"the lease of {self._where(key)} stayed taken for {self.lease_timeout_s:g} s"
                )
            time.sleep(random.uniform(0.05, 0.25))
        margin = min(5.0, self.lease_ttl_s / 4)
        try:
            yield lambda: time.monotonic() < acquired + self.lease_ttl_s - margin
        finally:
            with contextlib.suppress(StoreError):
                held = self._read_lease(lease_key)
                if held is not None and held.get("token") == token:
                    self.delete(lease_key)

    def uri(self, key: str) -> str:
        if not key:
            return self.url + "/"
        return f"{self.url}/{validate_key(key)}"

    def child(self, prefix: str) -> ObjectStore:
        return S3Store(
            self.bucket,
            join_key(self.prefix, validate_key(prefix.strip("/"))),
            client=self._client,
            settings=self._settings,
            conditional_writes=self.conditional_writes,
        )


def make_s3_client(settings: Settings | None = None):
    """A boto3 S3 client for the configured endpoint (path-style addressing for MinIO)."""
    import boto3
    from botocore.config import Config

    from mammoseg.settings import get_settings

    s = settings or get_settings()
    kwargs: dict[str, object] = {
        "endpoint_url": s.s3_endpoint_url,
        "region_name": s.s3_region,
        "config": Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 5, "mode": "standard"},
            signature_version="s3v4",
        ),
    }
    if s.s3_access_key_id and s.s3_secret_access_key:
        kwargs["aws_access_key_id"] = s.s3_access_key_id.get_secret_value()
        kwargs["aws_secret_access_key"] = s.s3_secret_access_key.get_secret_value()
    return boto3.client("s3", **kwargs)


def open_store(url: str | Path, settings: Settings | None = None) -> ObjectStore:
    """``s3://bucket/prefix`` → :class:`S3Store`; a path or ``file://`` URL → :class:`LocalStore`;
    ``dicomweb://host:port/dicom-web`` → a read-only PACS (:class:`mammoseg.pacs.DicomWebStore`)."""
    text = str(url)
    if text.startswith("s3://"):
        parsed = urlparse(text)
        if not parsed.netloc:
            raise StoreError(f"no bucket in the store URL {_describe_url(text)}")
        return S3Store(parsed.netloc, parsed.path.strip("/"), settings=settings)
    if text.startswith("file://"):
        return LocalStore(unquote(urlparse(text).path))
    if text.startswith(("dicomweb://", "dicomwebs://")):  # a PACS, read-only (mammoseg/pacs.py)
        from mammoseg.pacs import DicomWebStore

        return DicomWebStore(text, settings)
    if "://" in text:
        raise StoreError(
            f"unsupported store URL {_describe_url(text)} (use s3://, file:// or a path)"
        )
    return LocalStore(text)


def open_uri(uri: str, settings: Settings | None = None) -> tuple[ObjectStore, str]:
    """Split a full object URI into (store rooted at its folder, key of the object)."""
    if uri.startswith("file://"):
        path = Path(unquote(urlparse(uri).path))
        return LocalStore(path.parent), validate_key(path.name)
    parent, _, name = uri.rstrip("/").rpartition("/")
    return open_store(parent, settings), validate_key(name)
