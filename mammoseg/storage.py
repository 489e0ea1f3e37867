"""One object-store interface, two implementations: a local folder and S3 (boto3, any endpoint).

The URL decides which: ``s3://bucket/prefix`` gives :class:`S3Store`, a path or ``file://`` URL
gives :class:`LocalStore`. Both speak in *keys* relative to the store's root, and both refuse keys
that could escape it (see :func:`validate_key`).

Every read is recorded (key, size, ETag) in :attr:`ObjectStore.read_log`, so a run can write a
manifest of exactly what it consumed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING
from urllib.parse import unquote, urlparse

if TYPE_CHECKING:
    from mammoseg.settings import Settings

CHUNK = 1024 * 1024
_log = logging.getLogger(__name__)


class StoreError(Exception):
    """Base class for object-store errors."""


class UnsafeKeyError(StoreError, ValueError):
    """A key from outside (CSV cell, listing, URI) would read or write outside the store root."""


class ObjectNotFound(StoreError, KeyError):
    """No object at that key."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else "object not found"


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
        raise UnsafeKeyError(f"refused object key {key!r}: " + "; ".join(problems))
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
    def uri(self, key: str) -> str:
        """Full URI of a key (``s3://…`` or ``file://…``)."""

    # -- shared behaviour ---------------------------------------------------------------
    def key_from_uri(self, uri: str) -> str:
        """Map a full URI of this store back to a key; refuse URIs outside it."""
        root = self.uri("")
        if not uri.startswith(root):
            raise UnsafeKeyError(f"{uri!r} is outside the store {root!r}")
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

    def child(self, prefix: str) -> ObjectStore:
        """A store rooted at ``prefix`` below this one (same backend)."""
        return open_store(self.uri(validate_key(prefix.strip("/"))))


def _md5_file(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


class LocalStore(ObjectStore):
    """Objects are files below ``root``; the ETag is the MD5 of the content (as S3 single-part).

    Writes go to a temporary file first and are renamed into place, so a reader never sees a
    half-written object and an interrupted run leaves no partial object behind.
    """

    def __init__(self, root: str | Path) -> None:
        super().__init__()
        self.root = Path(root).expanduser().resolve()
        self.url = self.root.as_uri()
        self._etags: dict[tuple[str, int, int], str] = {}

    def _path(self, key: str) -> Path:
        path = (self.root / validate_key(key)).resolve()
        if path != self.root and self.root not in path.parents:
            raise UnsafeKeyError(f"refused object key {key!r}: it resolves outside the store")
        return path

    def _info(self, key: str, path: Path) -> ObjectInfo:
        st = path.stat()
        cache_key = (key, st.st_size, st.st_mtime_ns)
        etag = self._etags.get(cache_key)
        if etag is None:
            etag = _md5_file(path)
            self._etags[cache_key] = etag
        return ObjectInfo(key=key, size=st.st_size, etag=etag, uri=path.as_uri())

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        if not self.root.exists():
            return
        keys = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".mammoseg-tmp")]
            for name in filenames:
                if name.startswith(".mammoseg-tmp"):
                    continue
                rel = Path(dirpath, name).relative_to(self.root).as_posix()
                if rel.startswith(prefix):
                    keys.append(rel)
        for key in sorted(keys):
            yield self._info(key, self.root / key)

    def head(self, key: str) -> ObjectInfo:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFound(f"no object {key!r} in {self.url}")
        return self._info(key, path)

    def _open(self, key: str) -> tuple[IO[bytes], ObjectInfo]:
        info = self.head(key)
        return open(self._path(key), "rb"), info

    def _read_prefix(self, key: str, nbytes: int) -> bytes:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFound(f"no object {key!r} in {self.url}")
        with open(path, "rb") as fh:
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

    def key_from_uri(self, uri: str) -> str:
        if not uri.startswith("file://"):
            raise UnsafeKeyError(f"{uri!r} is not a file:// URI of the store {self.url!r}")
        path = Path(unquote(urlparse(uri).path))
        if path != self.root and self.root not in path.parents:
            raise UnsafeKeyError(f"{uri!r} is outside the store {self.url!r}")
        return validate_key(path.relative_to(self.root).as_posix())

    def uri(self, key: str) -> str:
        if not key:
            return self.url + "/"
        return (self.root / validate_key(key)).as_uri()


class S3Store(ObjectStore):
    """Objects under ``s3://bucket/prefix``; any S3-compatible endpoint (AWS, MinIO, moto)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: object | None = None,
        settings: Settings | None = None,
    ) -> None:
        super().__init__()
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            validate_key(self.prefix)
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self._settings = settings
        self._client = client

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

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        full_prefix = join_key(self.prefix, prefix) if prefix else self.prefix
        if self.prefix and not prefix:
            full_prefix += "/"
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
            for obj in page.get("Contents", []):
                try:
                    key = self._rel(obj["Key"])
                except UnsafeKeyError:
                    # listed, but unusable: no operation of ours could read it safely. Say so
                    # (without the key, which may carry identifiers) and go on with the rest.
                    _log.warning("listing %s: skipped one object whose key is unsafe to use", self.url)
                    continue
                yield ObjectInfo(
                    key=key, size=obj["Size"], etag=obj["ETag"].strip('"'), uri=self.uri(key)
                )

    def head(self, key: str) -> ObjectInfo:
        from botocore.exceptions import ClientError

        try:
            resp = self.client.head_object(Bucket=self.bucket, Key=self._full(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise ObjectNotFound(f"no object {key!r} in {self.url}") from None
            raise
        return ObjectInfo(
            key=key,
            size=resp["ContentLength"],
            etag=resp["ETag"].strip('"'),
            uri=self.uri(key),
        )

    def _open(self, key: str) -> tuple[IO[bytes], ObjectInfo]:
        from botocore.exceptions import ClientError

        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self._full(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise ObjectNotFound(f"no object {key!r} in {self.url}") from None
            raise
        info = ObjectInfo(
            key=key,
            size=resp["ContentLength"],
            etag=resp["ETag"].strip('"'),
            uri=self.uri(key),
        )
        return resp["Body"], info

    def _read_prefix(self, key: str, nbytes: int) -> bytes:
        from botocore.exceptions import ClientError

        try:
            resp = self.client.get_object(
                Bucket=self.bucket, Key=self._full(key), Range=f"bytes=0-{max(nbytes, 1) - 1}"
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise ObjectNotFound(f"no object {key!r} in {self.url}") from None
            raise
        return resp["Body"].read()

    def _put_stream(self, key: str, stream: IO[bytes], content_type: str | None) -> ObjectInfo:
        from boto3.s3.transfer import TransferConfig

        mb = self._settings.s3_multipart_threshold_mb if self._settings else 8
        config = TransferConfig(multipart_threshold=mb * CHUNK, multipart_chunksize=mb * CHUNK)
        extra = {"ContentType": content_type} if content_type else None
        self.client.upload_fileobj(
            stream, self.bucket, self._full(key), ExtraArgs=extra, Config=config
        )
        return self.head(key)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._full(key))

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
    """``s3://bucket/prefix`` → :class:`S3Store`; a path or ``file://`` URL → :class:`LocalStore`."""
    text = str(url)
    if text.startswith("s3://"):
        parsed = urlparse(text)
        if not parsed.netloc:
            raise StoreError(f"no bucket in {text!r}")
        return S3Store(parsed.netloc, parsed.path.strip("/"), settings=settings)
    if text.startswith("file://"):
        return LocalStore(unquote(urlparse(text).path))
    if "://" in text:
        raise StoreError(f"unsupported store URL {text!r} (use s3://, file:// or a path)")
    return LocalStore(text)


def open_uri(uri: str, settings: Settings | None = None) -> tuple[ObjectStore, str]:
    """Split a full object URI into (store rooted at its folder, key of the object)."""
    if uri.startswith("file://"):
        path = Path(unquote(urlparse(uri).path))
        return LocalStore(path.parent), validate_key(path.name)
    parent, _, name = uri.rstrip("/").rpartition("/")
    return open_store(parent, settings), validate_key(name)
