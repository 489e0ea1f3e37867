"""Where a watcher keeps its position: an object in the pipeline store, or a local file.

One reader and one writer for both watchers (the bucket watcher's seen set, the PACS watcher's
change sequence number); what the bytes mean is each watcher's own business."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from mammoseg.storage import ObjectNotFound, ObjectStore


def read_state(store: ObjectStore | None, key: str, file: Path | None) -> tuple[bytes | None, str]:
    """The saved bytes (None before the first save) and where they live, for error messages."""
    if store is not None:
        try:
            return store.read_bytes(key), store.uri(key)
        except ObjectNotFound:
            return None, store.uri(key)
    assert file is not None, "a watcher keeps its state in a store or a file"
    return (file.read_bytes() if file.is_file() else None), str(file)


def write_state(store: ObjectStore | None, key: str, file: Path | None, data: bytes) -> None:
    """Save ``data``: one object write, or a temporary file renamed over the file (atomic)."""
    if store is not None:
        store.write_bytes(key, data, "application/json")
        return
    assert file is not None, "a watcher keeps its state in a store or a file"
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".watch-", dir=file.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
