"""New-data events: one ``mammoseg.object.created`` Prefect event per new or changed object.

Two sources send the same event (:mod:`mammoseg.events.model`): the MinIO webhook bridge
(:mod:`mammoseg.events.bridge`, an ASGI app) and the polling :class:`Watcher`
(:mod:`mammoseg.events.watcher`). Importing this package imports neither Prefect nor Starlette (the bridge module does).
"""

from mammoseg.events.model import (
    EVENT_NAME,
    EventEmitError,
    dataset_root_for,
    emit_object_created,
    emit_to_prefect,
    object_created_event,
    object_event_id,
)
from mammoseg.events.watcher import Watcher, WatcherStateError

__all__ = [
    "EVENT_NAME",
    "EventEmitError",
    "Watcher",
    "WatcherStateError",
    "dataset_root_for",
    "emit_object_created",
    "emit_to_prefect",
    "object_created_event",
    "object_event_id",
]
