"""What every dataset adapter returns, and the few store helpers they share.

An adapter turns a dataset's metadata (CSV / TXT / XML files and the store listing) into the
lesion table (:data:`mammoseg.casetable.LESION_COLUMNS`). A bad row or image becomes a
:class:`Reject` (the flows turn it into a quarantine record); it never aborts the dataset. Only a
dataset-level problem (the metadata file itself missing or unreadable) raises
:class:`AdapterError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from mammoseg.storage import ObjectNotFound, ObjectStore, join_key

#: Reason (prefix) of a reject for a metadata entry whose image is not in the store — the
#: expected case for the held-back part of a dataset, not a data error. Flows can tell these
#: apart with ``reject.reason.startswith(IMAGE_ABSENT)``.
IMAGE_ABSENT = "image absent (held-back part)"

#: Reason prefix for images left out on purpose by a dataset selection (e.g. masses only):
#: skipped like absent images, not quarantined as bad input.
OUT_OF_SCOPE = "out of scope"


class AdapterError(ValueError):
    """The dataset as a whole cannot be read (metadata file missing, undecodable, wrong columns)."""


@dataclass(frozen=True)
class Reject:
    """One metadata row, image or annotation left out of the lesion table, and why."""

    source: str  # object key, or '<key>:line 17' / '<key>:row 3 (…)' for a metadata line
    reason: str  # human-readable
    case_id: str | None = None  # pseudonymous case id when the reject concerns a known image


@dataclass
class AdapterResult:
    lesions: pd.DataFrame  # conform()ed LESION_COLUMNS, one row per lesion
    rejects: list[Reject] = field(default_factory=list)


def list_keys(store: ObjectStore, prefix: str, *folder: str) -> list[str]:
    """Keys of all objects strictly below the folder ``prefix/folder…`` (any depth), sorted.

    Filters on the folder boundary, so prefix ``mias`` never lists ``mias-old/…``.
    """
    base = join_key(prefix, *folder)
    start = base + "/" if base else ""
    return sorted(info.key for info in store.list(start) if info.key.startswith(start))


def read_text(store: ObjectStore, key: str) -> str:
    """A metadata file as text (UTF-8, BOM ok, else Latin-1); :class:`AdapterError` if absent."""
    try:
        data = store.read_bytes(key)
    except ObjectNotFound:
        raise AdapterError(f"metadata file {key!r} is not in the store {store.url}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")
