""""No new data": recognising a data-pipeline run whose every input equals a completed run's.

A data-pipeline run is a function of: the source objects (keys, sizes, ETags: any changed,
added or removed image, mask or CSV changes the listing), the dataset adapter, the preprocess
parameters, the settings that shape outputs (quarantine limit, pixel budgets, ...), the
pseudonym key (pseudonymous ids depend on it; only a keyed hash of it enters), the GX suites and
the code itself (every ``.py`` of mammoseg/tasks/flows and every suite JSON is hashed, so an
upgraded or patched pipeline never reuses an older run). :func:`run_fingerprint` hashes all of
that; a completed run is recorded under its fingerprint (``layout.data_run_reuse_key``), and a
later run with the same fingerprint copies that run's small outputs (lesion tables, quarantine
records, validation reports, manifest, contact sheet) to its own run folder and writes its own
report instead of listing, validating and probing again. The content-addressed arrays are
shared, as a cache hit shares them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel

from mammoseg.storage import ObjectInfo

#: Bump when what a recorded run holds, or how it is reused, changes.
REUSE_FORMAT = 1
_ROOT = Path(__file__).resolve().parents[1]


class RecordedRun(BaseModel):
    """A completed data-pipeline run as recorded for reuse: its id and its result's fields."""

    fingerprint: str
    run_id: str
    result: dict


@lru_cache(maxsize=1)
def code_digest() -> str:
    """SHA-256 of the pipeline's code and suites (``mammoseg``, ``tasks``, ``flows`` ``.py`` files,
    ``expectations/*.json``); computed once per process (a few ms)."""
    h = hashlib.sha256()
    files: list[Path] = []
    for folder, pattern in (("mammoseg", "*.py"), ("tasks", "*.py"), ("flows", "*.py"), ("expectations", "*.json")):
        files += sorted((_ROOT / folder).rglob(pattern))
    for path in files:
        h.update(path.relative_to(_ROOT).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def key_tag(pseudonym_key: str) -> str:
    """A keyed hash standing for the pseudonym key in the fingerprint (the key never leaves)."""
    return hmac.new(pseudonym_key.encode(), b"mammoseg-run-fingerprint", hashlib.sha256).hexdigest()


def run_fingerprint(
    dataset: str, objects: Iterable[ObjectInfo], *, params_digest: str, settings_json: str, key_tag: str,
    code: str | None = None,
) -> str:
    """SHA-256 over everything a data-pipeline run reads (see the module docstring).

    ``objects``: the source listing; ``settings_json``: the settings' JSON dump (secrets appear
    masked there, hence ``key_tag``)."""
    h = hashlib.sha256(json.dumps({
        "format": REUSE_FORMAT, "dataset": dataset, "params": params_digest, "settings": settings_json,
        "key": key_tag, "code": code if code is not None else code_digest(),
    }, sort_keys=True).encode())
    for info in sorted(objects, key=lambda o: o.key):
        h.update(f"\0{info.key}\0{info.size}\0{info.etag}".encode())
    return h.hexdigest()


def rebase_uri(uri: str | None, old_run: str, new_run: str) -> str | None:
    """``uri`` of an object in run ``old_run``'s folder, moved to ``new_run``'s (others unchanged)."""
    if uri is None:
        return None
    old, new = f"/runs/{old_run}/", f"/runs/{new_run}/"
    return uri.replace(old, new, 1) if old in uri else uri
