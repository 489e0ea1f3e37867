"""MinIO bucket-notification webhook → ``mammoseg.object.created`` Prefect events.

``POST /minio/events`` takes MinIO's webhook body (``{"EventName", "Key", "Records": [...]}``,
one S3-style record per request in practice) and emits one event per *content* record
(``s3:ObjectCreated:Put|Post|Copy|CompleteMultipartUpload``). Tagging, retention and
legal-hold ``ObjectCreated`` records, removals and accesses are ignored.

Answers: 401 without ``Authorization: Bearer <token>`` (MinIO sends its ``auth_token`` that way),
422 for a malformed body or an unsafe key (nothing from that request is emitted), 413 for a body
over 1 MiB, 503 when Prefect did not take an event (MinIO retries when it has a ``queue_dir``),
200 ``{"emitted": n, "ignored": m}`` otherwise. ``GET /healthz`` → 200.

Object keys can carry dataset patient ids, so they are never logged; only counts are.

Run: ``MAMMOSEG_BRIDGE_TOKEN=... python -m mammoseg.events.bridge``.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import unquote_plus

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mammoseg.events.model import (
    Emitter,
    EventEmitError,
    dataset_root_for,
    emit_object_created,
    emit_to_prefect,
    object_created_event,
)
from mammoseg.storage import UnsafeKeyError, validate_key

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8088

# ObjectCreated sub-types that mean "new bytes at this key". MinIO also files tagging,
# retention and legal-hold changes under ObjectCreated; those do not change the data.
CONTENT_EVENTS = frozenset({"Put", "Post", "Copy", "CompleteMultipartUpload"})


class PayloadError(ValueError):
    """The webhook body is not a MinIO/S3 notification we can read (→ 422)."""


# --- the documented MinIO / S3 notification format (only the fields we use) -------------------
class _Bucket(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1)


class _Object(BaseModel):
    model_config = ConfigDict(extra="ignore")
    key: str = Field(min_length=1, description="URL-encoded (form encoding: '+' is a space)")
    size: int = Field(ge=0)
    eTag: str = Field(min_length=1)


class _S3(BaseModel):
    model_config = ConfigDict(extra="ignore")
    bucket: _Bucket
    object: _Object


class _ContentRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")
    eventName: str
    eventTime: datetime | None = None
    s3: _S3

    @field_validator("eventTime")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            return v.replace(tzinfo=UTC)
        return v


class _AnyRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")
    eventName: str = Field(min_length=1)


class _Notification(BaseModel):
    model_config = ConfigDict(extra="ignore")
    Records: list[dict] = Field(min_length=1)


@dataclass(frozen=True)
class ObjectRecord:
    """One content record of a notification, key decoded and checked."""

    bucket: str
    key: str  # key in the bucket, decoded
    size: int
    etag: str
    event_time: datetime

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def _errors(exc: ValidationError, where: str) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{where}{'.' + loc if loc else ''}: {err['msg']}")
    return "; ".join(parts)


def content_event_type(event_name: str) -> str | None:
    """``s3:ObjectCreated:Put`` (MinIO) or ``ObjectCreated:Put`` (AWS) → ``Put``; else None."""
    name = event_name.removeprefix("s3:")
    family, _, kind = name.partition(":")
    if family == "ObjectCreated" and kind in CONTENT_EVENTS:
        return kind
    return None


def parse_notification(
    body: object, *, now: datetime | None = None
) -> tuple[list[ObjectRecord], int]:
    """``(content records, number of ignored records)`` from a decoded webhook body.

    Keys are URL-decoded (``unquote_plus``, as MinIO encodes them) and must pass
    :func:`validate_key`. Raises :class:`PayloadError` (malformed) or :class:`UnsafeKeyError`.
    A record without ``eventTime`` gets ``now`` (UTC).
    """
    if not isinstance(body, dict):
        raise PayloadError("body must be a JSON object with a 'Records' list")
    try:
        note = _Notification.model_validate(body)
    except ValidationError as exc:
        raise PayloadError(_errors(exc, "body")) from None
    stamp = now or datetime.now(UTC)
    records: list[ObjectRecord] = []
    ignored = 0
    for i, raw in enumerate(note.Records):
        where = f"Records[{i}]"
        try:
            kind = content_event_type(_AnyRecord.model_validate(raw).eventName)
        except ValidationError as exc:
            raise PayloadError(_errors(exc, where)) from None
        if kind is None:
            ignored += 1
            continue
        try:
            rec = _ContentRecord.model_validate(raw)
        except ValidationError as exc:
            raise PayloadError(_errors(exc, where)) from None
        try:
            key = validate_key(unquote_plus(rec.s3.object.key, errors="strict"))
        except UnicodeDecodeError:
            raise PayloadError(f"{where}.s3.object.key is not URL-encoded UTF-8") from None
        except UnsafeKeyError as exc:
            raise UnsafeKeyError(f"{where}.s3.object.key: {exc}") from None
        records.append(
            ObjectRecord(
                bucket=rec.s3.bucket.name,
                key=key,
                size=rec.s3.object.size,
                etag=rec.s3.object.eTag,
                event_time=rec.eventTime or stamp,
            )
        )
    return records, ignored


def _bearer_ok(header: str | None, token: str) -> bool:
    """Constant-time check of ``Authorization: Bearer <token>`` (scheme case-insensitive)."""
    if not header:
        return False
    scheme, _, credential = header.strip().partition(" ")
    ok_scheme = scheme.lower() == "bearer"
    ok_token = hmac.compare_digest(credential.strip().encode("utf-8"), token.encode("utf-8"))
    return ok_scheme and ok_token


def create_app(
    *,
    token: str,
    dataset_roots: Sequence[str] = (),
    emit: Emitter = emit_to_prefect,
) -> Starlette:
    """The bridge as an ASGI app.

    ``dataset_roots``: store URLs (``s3://bucket/prefix``) of the watched datasets. An object's
    ``mammoseg.dataset_root`` is the longest root containing it; objects outside every root are
    ignored. With no roots, the dataset root is the bucket (``s3://<bucket>``).
    """
    if not token or not token.strip() or len(token.split()) != 1:
        raise ValueError(
            "the bridge needs a non-empty token without spaces (MAMMOSEG_BRIDGE_TOKEN)"
        )
    roots = tuple(r.rstrip("/") for r in dataset_roots)
    for r in roots:
        if not r.startswith("s3://") or len(r) <= len("s3://"):
            raise ValueError(f"dataset root {r!r} is not an s3:// URL")

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def minio_events(request: Request) -> JSONResponse:
        if not _bearer_ok(request.headers.get("authorization"), token):
            return JSONResponse(
                {"error": "missing or wrong bearer token"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "body is not valid JSON"}, status_code=422)
        try:
            records, ignored = parse_notification(body)
            planned = []
            for rec in records:
                root = dataset_root_for(rec.uri, roots) if roots else f"s3://{rec.bucket}"
                if root is None:
                    ignored += 1
                    continue
                # Validate every record (key below its root) before emitting any.
                object_created_event(
                    rec.uri,
                    dataset_root=root,
                    etag=rec.etag,
                    size=rec.size,
                    event_time=rec.event_time,
                )
                planned.append((rec, root))
        except (PayloadError, UnsafeKeyError, ValueError) as exc:
            log.warning("refused a notification: %s", type(exc).__name__)
            return JSONResponse({"error": str(exc)}, status_code=422)

        def _emit_all() -> int:
            n = 0
            for rec, root in planned:
                emit_object_created(
                    emit,
                    rec.uri,
                    dataset_root=root,
                    etag=rec.etag,
                    size=rec.size,
                    event_time=rec.event_time,
                )
                n += 1
            return n

        try:
            emitted = await run_in_threadpool(_emit_all)
        except EventEmitError as exc:
            log.error("could not emit events: %s", exc)
            return JSONResponse({"error": str(exc)}, status_code=503)
        log.info("notification: %d event(s) emitted, %d record(s) ignored", emitted, ignored)
        return JSONResponse({"emitted": emitted, "ignored": ignored})

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/minio/events", minio_events, methods=["POST"]),
        ],
        max_body_size=MAX_BODY_BYTES,
    )


def main() -> None:
    """Serve on ``MAMMOSEG_BRIDGE_HOST``:``MAMMOSEG_BRIDGE_PORT`` (default 127.0.0.1:8088).

    ``MAMMOSEG_BRIDGE_TOKEN`` (required) is the MinIO webhook ``auth_token``;
    ``MAMMOSEG_BRIDGE_DATASET_ROOTS`` optionally lists dataset roots, comma-separated.
    Events go to the Prefect API of the environment (``PREFECT_API_URL``).
    """
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    token = os.environ.get("MAMMOSEG_BRIDGE_TOKEN", "")
    if not token:
        raise SystemExit("MAMMOSEG_BRIDGE_TOKEN is not set; refusing to serve without a token")
    roots = [r.strip() for r in os.environ.get("MAMMOSEG_BRIDGE_DATASET_ROOTS", "").split(",")]
    host = os.environ.get("MAMMOSEG_BRIDGE_HOST", DEFAULT_HOST)
    port = int(os.environ.get("MAMMOSEG_BRIDGE_PORT", str(DEFAULT_PORT)))
    app = create_app(token=token, dataset_roots=[r for r in roots if r])
    # access_log off: uvicorn's access log holds only method/path, but keep the log to counts.
    uvicorn.run(app, host=host, port=port, access_log=False)


if __name__ == "__main__":
    main()
