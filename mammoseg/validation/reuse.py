"""Reuse of a passed Great Expectations validation when nothing it saw has changed.

A re-run with no new data feeds the gates byte-identical tables; running GX again (about 2 s
a suite, whatever the table's size) tells nothing new. :func:`validation_digest` names what a
validation's outcome depends on: the table's bytes, the suite's JSON, the suite parameters, the
gate's quarantine limit, and the GX and reuse-format versions. A suite that *passed* is
recorded in the store under that digest (``layout.validation_reuse_key``); a later run whose
digest matches takes the recorded report instead of running GX, and says so in its own report
(``reused``). Any changed byte of the table, the suite or a parameter gives another digest, so
GX runs again. Failed validations are never reused: their cases are quarantined by a fresh run.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mammoseg.layout import validation_reuse_key
from mammoseg.storage import ObjectNotFound, ObjectStore

#: Bump when what a recorded validation holds, or how it is judged, changes.
REUSE_FORMAT = 1

_log = logging.getLogger(__name__)


def validation_digest(
    suite: str, table_bytes: bytes, *, parameters: Mapping[str, float] | None = None, max_fraction: float | None = None
) -> str:
    """SHA-256 over everything a validation's outcome depends on (see the module docstring)."""
    from importlib.metadata import version

    from mammoseg.validation.suites import load_suite

    spec = load_suite(suite)
    head = json.dumps(
        {
            "format": REUSE_FORMAT,
            "suite": suite,
            "suite_json": spec.data,
            "parameters": dict(sorted((parameters or {}).items())),
            "max_fraction": max_fraction,
            "gx": version("great_expectations"),
        },
        sort_keys=True,
        default=str,
    ).encode()
    h = hashlib.sha256(head)
    h.update(b"\0")
    h.update(table_bytes)
    return h.hexdigest()


@dataclass(frozen=True)
class ReusedValidation:
    """A recorded passed validation: its report (``ValidationReport.to_dict()``), the summary
    lines logged then, where its Data Docs went and which run produced it."""

    suite: str
    digest: str
    run_id: str
    report: dict[str, Any]
    summary_text: str
    data_docs_uri: str | None

    def report_for(self, run_id: str) -> dict[str, Any]:
        """The report JSON of ``run_id``: the recorded one, marked as reused (from which run)."""
        return self.report | {"run_name": run_id, "reused": {"from_run": self.run_id, "digest": self.digest}}


def find_reusable(store: ObjectStore, suite: str, digest: str) -> ReusedValidation | None:
    """The recorded passed validation of ``digest``, or None (none recorded, or unreadable:
    then GX simply runs again). Store faults other than a missing object propagate (retried)."""
    try:
        raw = store.read_bytes(validation_reuse_key(suite, digest))
    except ObjectNotFound:
        return None
    try:
        data = json.loads(raw)
        entry = ReusedValidation(**{k: data[k] for k in ReusedValidation.__dataclass_fields__})
    except (ValueError, KeyError, TypeError) as exc:
        _log.warning("ignored an unreadable recorded validation of suite %s (%s): validating again", suite, type(exc).__name__)
        return None
    if entry.suite != suite or entry.digest != digest or not entry.report.get("success"):
        return None
    return entry


def record_validation(
    store: ObjectStore, suite: str, digest: str, *, run_id: str, report: Mapping[str, Any], summary_text: str,
    data_docs_uri: str | None,
) -> str | None:
    """Record a *passed* validation for reuse; returns its URI (None when the suite failed)."""
    if not report.get("success"):
        return None
    entry = {
        "suite": suite, "digest": digest, "run_id": run_id, "report": dict(report),
        "summary_text": summary_text, "data_docs_uri": data_docs_uri,
    }
    return store.write_bytes(
        validation_reuse_key(suite, digest), json.dumps(entry, indent=1).encode(), "application/json"
    ).uri
