"""The one "new data" event both the MinIO bridge and the polling watcher send to Prefect.

Convention (a deployment trigger matches on these):

* event name ``mammoseg.object.created``;
* resource ``{"prefect.resource.id": <object URI>, "prefect.resource.name": <key>,
  "mammoseg.dataset_root": <store URL of the dataset root>, "mammoseg.etag": <etag>,
  "mammoseg.size": <size in bytes, as text>}`` (Prefect resource labels are strings);
* payload ``{"bucket": <bucket or None for file://>, "key": <key>, "etag": <etag>,
  "size": <int bytes>, "event_time": <ISO-8601 UTC>}``.

``key`` is always the object's key *relative to the dataset root*, so
``dataset_root + "/" + key`` is the object URI (for ``file://`` URIs, before percent-encoding)
and the key is what the dataset's adapter sees below ``source_url``. It must pass
:func:`mammoseg.storage.validate_key`.

The event id is derived from (URI, ETag), so the same object version announced twice (a MinIO
retry, or bridge and watcher both running) carries one id and Prefect drops the repeat.

Prefect is imported only inside :func:`emit_to_prefect`, never at import time.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import unquote

from mammoseg.storage import UnsafeKeyError, validate_key

EVENT_NAME = "mammoseg.object.created"

# uuid5 namespace of our event ids (a fixed random UUID; never change it, ids would change).
_EVENT_NAMESPACE = uuid.UUID("6f0e4a52-3c1d-4e8b-9a57-2d8f1b6c0e93")


class EventEmitError(RuntimeError):
    """The event could not be handed to Prefect (no API configured, or the client failed)."""


class Emitter(Protocol):
    """Anything called like :func:`prefect.events.emit_event` with these keyword arguments."""

    def __call__(
        self,
        event: str,
        resource: dict[str, str],
        *,
        payload: dict[str, Any],
        occurred: datetime,
        id: uuid.UUID,
    ) -> object: ...


def normalise_etag(etag: str) -> str:
    """ETag without surrounding quotes (S3 listings quote it, MinIO events do not)."""
    return etag.strip().strip('"')


def _as_utc(moment: datetime) -> datetime:
    """Aware UTC datetime; a naive one is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def relative_key(uri: str, dataset_root: str) -> str:
    """The key of ``uri`` below ``dataset_root``; :class:`UnsafeKeyError` if outside or unsafe.

    ``file://`` URIs are percent-decoded first (``Path.as_uri`` encodes spaces); ``s3://`` URIs
    carry keys verbatim.
    """
    root = dataset_root.rstrip("/")
    if not root or "://" not in root:
        raise UnsafeKeyError(f"dataset root {dataset_root!r} is not a store URL")
    if not uri.startswith(root + "/"):
        raise UnsafeKeyError(f"object URI is outside the dataset root {root!r}")
    rel = uri[len(root) + 1 :]
    if root.startswith("file://"):
        rel = unquote(rel)
    return validate_key(rel)


def object_event_id(uri: str, etag: str) -> uuid.UUID:
    """Deterministic event id of one object version (same URI and ETag → same id)."""
    return uuid.uuid5(_EVENT_NAMESPACE, f"{uri}\x1f{normalise_etag(etag)}")


def object_created_event(
    uri: str,
    *,
    dataset_root: str,
    etag: str,
    size: int,
    event_time: datetime,
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """``(event name, resource, payload)`` announcing a new or changed object.

    Pure: nothing is emitted. Raises :class:`UnsafeKeyError` when the key below
    ``dataset_root`` is unsafe or the URI lies outside it, and :class:`ValueError` for a
    negative size or an empty ETag.
    """
    key = relative_key(uri, dataset_root)
    tag = normalise_etag(etag)
    if not tag:
        raise ValueError("object has an empty ETag")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"object size must be a non-negative integer, got {size!r}")
    root = dataset_root.rstrip("/")
    bucket = uri[len("s3://") :].split("/", 1)[0] if uri.startswith("s3://") else None
    resource = {
        "prefect.resource.id": uri,
        "prefect.resource.name": key,
        "mammoseg.dataset_root": root,
        "mammoseg.etag": tag,
        "mammoseg.size": str(size),
    }
    payload: dict[str, Any] = {
        "bucket": bucket,
        "key": key,
        "etag": tag,
        "size": size,
        "event_time": _as_utc(event_time).isoformat(),
    }
    return EVENT_NAME, resource, payload


def dataset_root_for(uri: str, roots: Iterable[str]) -> str | None:
    """The longest of ``roots`` that contains ``uri`` (folder semantics), or None.

    ``s3://b/raw/cbis`` contains ``s3://b/raw/cbis/x.dcm`` but not ``s3://b/raw/cbis-ddsm/x``.
    """
    best: str | None = None
    for root in roots:
        r = root.rstrip("/")
        if uri.startswith(r + "/") and (best is None or len(r) > len(best)):
            best = r
    return best


def emit_object_created(
    emit: Emitter,
    uri: str,
    *,
    dataset_root: str,
    etag: str,
    size: int,
    event_time: datetime,
) -> uuid.UUID:
    """Build the event (validating the key) and hand it to ``emit``; returns the event id."""
    name, resource, payload = object_created_event(
        uri, dataset_root=dataset_root, etag=etag, size=size, event_time=event_time
    )
    event_id = object_event_id(uri, etag)
    emit(name, resource, payload=payload, occurred=_as_utc(event_time), id=event_id)
    return event_id


def emit_to_prefect(
    event: str,
    resource: dict[str, str],
    *,
    payload: dict[str, Any],
    occurred: datetime,
    id: uuid.UUID,
) -> object:
    """Send through :func:`prefect.events.emit_event`; :class:`EventEmitError` if it did not.

    ``emit_event`` swallows its own errors and returns None when events are off or no Prefect
    API is configured; we turn that into an exception so callers can retry (the bridge answers
    503, the watcher keeps the object unseen).
    """
    from prefect.events import emit_event

    sent = emit_event(event=event, resource=resource, payload=payload, occurred=occurred, id=id)
    if sent is None:
        raise EventEmitError(
            "Prefect did not accept the event (is PREFECT_API_URL set and the server reachable?)"
        )
    return sent
