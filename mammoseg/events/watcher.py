"""Polling alternative to the MinIO webhook: list a dataset root, emit events for what changed.

Each :meth:`Watcher.poll_once` lists the dataset root (paginated by the store), compares it
with the *seen set* (key → ETag) from the previous poll, and emits one
``mammoseg.object.created`` event per new or changed object (see :mod:`mammoseg.events.model`).
Deleted objects leave the seen set, so a later upload at that key is new again.

The seen set is a small JSON document, kept either in the pipeline store at
``watch/<name>.json`` (``state_store_url``) or in a local file (``state_file``)::

    {"version": 1, "dataset_root": "s3://raw/cbis-ddsm", "objects": {"<key>": "<etag>", ...}}

An object is marked seen only after its event was handed to Prefect, so a failed emit is retried
on the next poll. The first poll of a root with no state is a *baseline* (nothing emitted) unless
``emit_existing=True``. Keys are never logged, only counts.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from mammoseg.events.model import (
    Emitter,
    emit_object_created,
    emit_to_prefect,
    normalise_etag,
    relative_key,
)
from mammoseg.events.state import read_state, write_state
from mammoseg.storage import (
    ObjectInfo,
    ObjectStore,
    UnsafeKeyError,
    join_key,
    open_store,
)

if TYPE_CHECKING:
    from mammoseg.settings import Settings

log = logging.getLogger(__name__)

STATE_VERSION = 1
STATE_PREFIX = "watch"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class WatcherStateError(RuntimeError):
    """The persisted seen set is unreadable or belongs to another dataset root."""


def state_key(name: str) -> str:
    """Key of a watcher's state in the pipeline store: ``watch/<name>.json``."""
    if not _NAME.match(name):
        raise ValueError(
            f"watcher name {name!r} must be 1-64 chars of a-z, 0-9, '-', '_' (starting alphanumeric)"
        )
    return join_key(STATE_PREFIX, f"{name}.json")


def diff_listing(
    seen: Mapping[str, str], listing: Iterable[ObjectInfo]
) -> tuple[list[ObjectInfo], dict[str, str]]:
    """``(new or changed objects, current key → ETag)`` of a listing against a seen set.

    Pure. ETags are compared without quotes; keys absent from the listing drop out of the
    returned map. The input mapping is not modified.
    """
    changed: list[ObjectInfo] = []
    current: dict[str, str] = {}
    for info in listing:
        tag = normalise_etag(info.etag)
        current[info.key] = tag
        old = seen.get(info.key)
        if old is None or normalise_etag(old) != tag:
            changed.append(info)
    return changed, current


@dataclass
class _State:
    dataset_root: str
    objects: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> bytes:
        doc = {"version": STATE_VERSION, "dataset_root": self.dataset_root, "objects": self.objects}
        return json.dumps(doc, indent=1, sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes, where: str) -> _State:
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise WatcherStateError(f"watcher state {where} is not JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("version") != STATE_VERSION:
            raise WatcherStateError(f"watcher state {where} has no version {STATE_VERSION} header")
        objects = doc.get("objects")
        root = doc.get("dataset_root")
        if (
            not isinstance(root, str)
            or not isinstance(objects, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in objects.items())
        ):
            raise WatcherStateError(f"watcher state {where} is malformed")
        return cls(dataset_root=root, objects=dict(objects))


class Watcher:
    """Poll one dataset root and announce new/changed objects as Prefect events.

    ``store_url`` + ``dataset_root_prefix`` name the dataset root (folder semantics:
    prefix ``raw/cbis`` does not cover ``raw/cbis-ddsm``). Exactly one of ``state_store_url``
    (pipeline store, key ``watch/<name>.json``) and ``state_file`` (local JSON) keeps the seen
    set. ``emit`` defaults to :func:`emit_to_prefect`; ``settings`` (S3 endpoint, credentials)
    default to the environment.
    """

    def __init__(
        self,
        store_url: str,
        dataset_root_prefix: str = "",
        *,
        name: str,
        state_store_url: str | None = None,
        state_file: str | Path | None = None,
        emit_existing: bool = False,
        emit: Emitter = emit_to_prefect,
        settings: Settings | None = None,
    ) -> None:
        if (state_store_url is None) == (state_file is None):
            raise ValueError("give exactly one of state_store_url and state_file")
        self.name = name
        self._state_key = state_key(name)
        base = open_store(store_url, settings)
        prefix = dataset_root_prefix.strip("/")
        self.store: ObjectStore = base.child(prefix) if prefix else base
        self.dataset_root = self.store.url.rstrip("/")
        self._state_store = (
            open_store(state_store_url, settings) if state_store_url is not None else None
        )
        self._state_file = Path(state_file).expanduser() if state_file is not None else None
        self.emit_existing = emit_existing
        self._emit = emit
        # If the state lives inside the watched root, do not announce our own writes.
        self._own_uri = (
            self._state_store.uri(self._state_key)
            if self._state_store is not None
            else self._state_file.resolve().as_uri()  # type: ignore[union-attr]
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, *, name: str = "retrain", emit: Emitter = emit_to_prefect
    ) -> Watcher:
        """Watch the served training root (``MAMMOSEG_RETRAIN_SOURCE_URL``); state in the
        pipeline store (``MAMMOSEG_STORE_URL``) at ``watch/<name>.json``; baseline first."""
        root = getattr(settings, "retrain_source_url", None)
        if not root:
            raise ValueError("no dataset root to watch: set MAMMOSEG_RETRAIN_SOURCE_URL")
        return cls(
            root, name=name, state_store_url=settings.store_url, emit=emit, settings=settings
        )

    # -- state ------------------------------------------------------------------------------
    def load_state(self) -> dict[str, str] | None:
        """The persisted seen set (key → ETag), or None before the first poll."""
        data, where = read_state(self._state_store, self._state_key, self._state_file)
        if data is None:
            return None
        state = _State.from_json(data, where)
        if state.dataset_root != self.dataset_root:
            raise WatcherStateError(
                f"watcher state {where} belongs to {state.dataset_root!r}, not "
                f"{self.dataset_root!r}; use another watcher name or state file"
            )
        return state.objects

    def _save_state(self, objects: Mapping[str, str]) -> None:
        data = _State(self.dataset_root, dict(sorted(objects.items()))).to_json()
        write_state(self._state_store, self._state_key, self._state_file, data)

    # -- polling ----------------------------------------------------------------------------
    def _listing(self) -> list[ObjectInfo]:
        return [info for info in self.store.list("") if info.uri != self._own_uri]

    def poll_once(self, *, now: datetime | None = None) -> list[ObjectInfo]:
        """List, diff, emit one event per new/changed object; return the objects announced.

        Objects with unsafe keys are skipped (counted in the log, never emitted). If an emit
        fails, the progress so far is saved and :class:`EventEmitError` is raised; the rest is
        retried on the next poll.
        """
        previous = self.load_state()
        listing = self._listing()
        changed, current = diff_listing(previous or {}, listing)
        if previous is None and not self.emit_existing:
            self._save_state(current)
            log.info(
                "watcher %s: baseline of %d object(s), nothing emitted", self.name, len(current)
            )
            return []

        stamp = now or datetime.now(UTC)
        # Start from what is still listed and was seen before; add objects as they are emitted.
        seen = {k: v for k, v in (previous or {}).items() if k in current}
        emitted: list[ObjectInfo] = []
        unsafe = 0
        try:
            for info in changed:
                try:
                    relative_key(info.uri, self.dataset_root)
                except UnsafeKeyError:
                    unsafe += 1
                    continue
                emit_object_created(
                    self._emit,
                    info.uri,
                    dataset_root=self.dataset_root,
                    etag=info.etag,
                    size=info.size,
                    event_time=stamp,
                )
                seen[info.key] = normalise_etag(info.etag)
                emitted.append(info)
        finally:
            self._save_state(seen)
            log.info(
                "watcher %s: %d listed, %d new/changed, %d emitted, %d unsafe key(s) skipped",
                self.name,
                len(current),
                len(changed),
                len(emitted),
                unsafe,
            )
        return emitted

    def run(self, interval_s: float = 30.0, stop_event: threading.Event | None = None) -> None:
        """Poll every ``interval_s`` seconds until ``stop_event`` is set.

        A failed poll (store unreachable, Prefect down) is logged and retried next interval;
        a corrupt or foreign state file stops the loop (:class:`WatcherStateError`).
        """
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        if stop_event is None:
            stop_event = threading.Event()  # runs until the process ends
        while not stop_event.is_set():
            try:
                self.poll_once()
            except WatcherStateError:
                raise
            except Exception as exc:  # noqa: BLE001 - boto/network errors vary; keep polling
                log.warning("watcher %s: poll failed (%s), retrying", self.name, type(exc).__name__)
            stop_event.wait(interval_s)
