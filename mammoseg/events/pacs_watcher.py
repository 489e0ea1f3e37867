"""Poll a PACS (Orthanc's changes feed) and announce each newly stable study as a Prefect event.

Orthanc calls a study *stable* once no instance has arrived for ``StableAge`` seconds (its own
per-study debounce: a study that arrives over several minutes is announced once, after its last
instance). :meth:`PacsWatcher.poll_once` reads the changes feed after the last sequence number
it saw (paged), and emits one ``mammoseg.study.arrived`` event per ``StableStudy`` change of a study that holds images
(a study of only SEG/SR/PR/KO objects — e.g. our own pseudonymous SEGs, which Orthanc files
under their own patient — is not announced) — the
same kind of event, through the same :data:`~mammoseg.events.model.Emitter`, as the bucket
watcher's ``mammoseg.object.created``:

* resource ``{"prefect.resource.id": "<pacs url>/studies/<orthanc id>",
  "prefect.resource.name": <study pseudonym>, "mammoseg.pacs_url": <pacs url>,
  "mammoseg.orthanc_study": <orthanc id>}``;
* payload ``{"orthanc_study": <orthanc id>, "change_seq": <seq>, "event_time": <ISO UTC>}``.

Orthanc's study id is a hash, not a DICOM UID, and the display name is a keyed pseudonym, so no
UID reaches Prefect. The event id is derived from (PACS, study, change sequence number): the same
change announced twice (a restart before the state was saved) carries one id, and Prefect drops
the repeat. The state — ``{"version": 1, "pacs_url": ..., "last_seq": N}`` — is kept like the
bucket watcher's (pipeline store ``watch/<name>.json`` or a local file) and advanced only past
changes that were handed to Prefect. The first poll with no state is a *baseline* (the end of the
feed; nothing emitted) unless ``emit_existing=True``.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from mammoseg.events.model import Emitter, emit_to_prefect
from mammoseg.events.state import read_state, write_state
from mammoseg.events.watcher import WatcherStateError, state_key
from mammoseg.ids import pseudonym
from mammoseg.storage import open_store

if TYPE_CHECKING:
    from mammoseg.pacs import Pacs
    from mammoseg.settings import Settings

log = logging.getLogger(__name__)

STUDY_ARRIVED: Final = "mammoseg.study.arrived"
PACS_URL_LABEL: Final = "mammoseg.pacs_url"
ORTHANC_STUDY_LABEL: Final = "mammoseg.orthanc_study"
_NAMESPACE: Final = uuid.UUID("0b6e0f55-8d3a-4c7e-b1f2-5e9a7c3d2f11")  # never change
_STATE_VERSION: Final = 1


@dataclass(frozen=True)
class StudyArrived:
    orthanc_study: str
    seq: int


def study_event(pacs_url: str, orthanc_study: str, seq: int, *, key: str, event_time: datetime) -> tuple[str, dict[str, str], dict[str, Any], uuid.UUID]:
    """``(event name, resource, payload, event id)`` of one stable study. Pure."""
    moment = event_time if event_time.tzinfo else event_time.replace(tzinfo=UTC)
    resource = {
        "prefect.resource.id": f"{pacs_url}/studies/{orthanc_study}",
        "prefect.resource.name": pseudonym(key, "pacs", "orthanc-study", orthanc_study, prefix="st-"),
        PACS_URL_LABEL: pacs_url,
        ORTHANC_STUDY_LABEL: orthanc_study,
    }
    payload = {"orthanc_study": orthanc_study, "change_seq": seq, "event_time": moment.astimezone(UTC).isoformat()}
    return STUDY_ARRIVED, resource, payload, uuid.uuid5(_NAMESPACE, f"{pacs_url}\x1f{orthanc_study}\x1f{seq}")


class PacsWatcher:
    """Poll one PACS's changes feed; emit ``mammoseg.study.arrived`` per stable study."""

    def __init__(
        self,
        pacs: Pacs,
        *,
        name: str,
        pseudonym_key: str,
        state_store_url: str | None = None,
        state_file: str | Path | None = None,
        emit_existing: bool = False,
        emit: Emitter = emit_to_prefect,
        settings: Settings | None = None,
    ) -> None:
        if (state_store_url is None) == (state_file is None):
            raise ValueError("give exactly one of state_store_url and state_file")
        self.pacs = pacs
        self.name = name
        self._key = state_key(name)
        self._store = open_store(state_store_url, settings) if state_store_url is not None else None
        self._file = Path(state_file).expanduser() if state_file is not None else None
        self._pseudonym_key = pseudonym_key
        self.emit_existing = emit_existing
        self._emit = emit

    # -- state ------------------------------------------------------------------------------
    def load_state(self) -> int | None:
        """The last change sequence number handled, or None before the first poll."""
        data, where = read_state(self._store, self._key, self._file)
        if data is None:
            return None
        try:
            doc = json.loads(data)
        except ValueError:
            raise WatcherStateError(f"PACS watcher state {where} is not JSON") from None
        if not isinstance(doc, dict) or doc.get("version") != _STATE_VERSION or not isinstance(doc.get("last_seq"), int):
            raise WatcherStateError(f"PACS watcher state {where} is malformed")
        if doc.get("pacs_url") != self.pacs.address.url:
            raise WatcherStateError(f"PACS watcher state {where} belongs to another PACS; use another watcher name")
        return int(doc["last_seq"])

    def _save_state(self, last_seq: int) -> None:
        data = json.dumps({"version": _STATE_VERSION, "pacs_url": self.pacs.address.url, "last_seq": last_seq}).encode()
        write_state(self._store, self._key, self._file, data)

    # -- polling ----------------------------------------------------------------------------
    def poll_once(self, *, now: datetime | None = None) -> list[StudyArrived]:
        """Read the feed after the saved position; emit one event per StableStudy change."""
        since = self.load_state()
        if since is None and not self.emit_existing:
            last = self.pacs.last_change()
            self._save_state(last)
            log.info("PACS watcher %s: baseline at change %d, nothing emitted", self.name, last)
            return []
        position = since or 0
        announced: list[StudyArrived] = []
        try:
            while True:
                page = self.pacs.changes(position)
                for change in page.changes:
                    if (change.change_type == "StableStudy" and change.resource_type == "Study"
                            and self.pacs.study_has_images(change.resource_id)):
                        name, resource, payload, event_id = study_event(
                            self.pacs.address.url, change.resource_id, change.seq,
                            key=self._pseudonym_key, event_time=now or datetime.now(UTC),
                        )
                        self._emit(name, resource, payload=payload, occurred=now or datetime.now(UTC), id=event_id)
                        announced.append(StudyArrived(change.resource_id, change.seq))
                    position = max(position, change.seq)
                position = max(position, page.last) if page.done or not page.changes else position
                if page.done or not page.changes:
                    break
        finally:
            self._save_state(position)
            log.info("PACS watcher %s: %d stable stud(ies) announced, at change %d", self.name, len(announced), position)
        return announced

    def run(self, interval_s: float, stop_event: threading.Event | None = None) -> None:
        """Poll every ``interval_s`` s until ``stop_event``; a failed poll is retried next time."""
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        stop_event = stop_event or threading.Event()
        while not stop_event.is_set():
            try:
                self.poll_once()
            except WatcherStateError:
                raise
            except Exception as exc:  # noqa: BLE001 - network/Prefect errors vary; keep polling
                log.warning("PACS watcher %s: poll failed (%s), retrying", self.name, type(exc).__name__)
            stop_event.wait(interval_s)
