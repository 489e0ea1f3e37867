"""The end of a run's preprocessing, without Prefect: the pairing gate over every preprocessed
case, the run's quarantine of the preprocess and pairing stages, its manifest and contact sheet.

Input: the cases' outcomes (:class:`PreprocessedCase` for each case done, a
:class:`~mammoseg.runreport.QuarantineRecord` for each case refused); output:
:class:`PreprocessFinish`. The pairing suite runs through
:func:`mammoseg.validation.gates.validate_or_reuse` (a table that passed before is not validated
again).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from mammoseg.runreport import QuarantineRecord

if TYPE_CHECKING:
    from mammoseg.catalog import RunCatalog
    from mammoseg.storage import ObjectStore

#: The pairing gate quarantines cases, it never stops the run.
PAIRING_MAX_FRACTION = 1.0
#: Tiles of a run's contact sheet (its manifest's first rows).
CONTACT_SHEET_LIMIT = 32


@dataclass(frozen=True)
class PreprocessedCase:
    """One case preprocessed: its record (``CaseResult.to_record()``) and its pairing rows (one
    per lesion, for the GX pairing suite)."""

    case_id: str
    record: Mapping[str, Any]
    pairing: Sequence[Mapping[str, Any]] = ()

    @property
    def cached(self) -> bool:
        return bool(self.record.get("cached"))


@dataclass(frozen=True)
class PairingGate:
    """The pairing gate: its report (None when no case had a pairing row), the cases it
    quarantined, and the run whose clean pass of the same table was reused (if any)."""

    report_uri: str | None = None
    records: list[QuarantineRecord] = field(default_factory=list)
    reused_from: str | None = None


@dataclass(frozen=True)
class PreprocessFinish:
    """What the end of preprocessing wrote and counted (``computed + cached == preprocessed``)."""

    pairing: PairingGate
    manifest_uri: str | None
    contact_sheet_uri: str | None
    preprocessed: int
    computed: int

    @property
    def cached(self) -> int:
        return self.preprocessed - self.computed


def pairing_table(done: Sequence[PreprocessedCase]) -> pd.DataFrame:
    """The pairing suite's table: every case's pairing rows, with its ``case_id`` first."""
    return pd.DataFrame([{"case_id": c.case_id, **row} for c in done for row in c.pairing])


def pairing_gate(run: RunCatalog, done: Sequence[PreprocessedCase]) -> PairingGate:
    """The ``pairing`` suite over ``done`` (when it has rows); the ``pairing`` quarantine."""
    from mammoseg.validation.gates import quarantine_records, validate_or_reuse

    table = pairing_table(done)
    gate = PairingGate()
    if len(table):
        checked = validate_or_reuse(run, "pairing", table, table.to_csv(index=False).encode(),
                                    max_fraction=PAIRING_MAX_FRACTION)
        gate = PairingGate(report_uri=checked.report_uri, records=quarantine_records("pairing", checked.decision),
                           reused_from=checked.reused_from)
    run.write_quarantine("pairing", gate.records)
    return gate


def finish_preprocess(
    run: RunCatalog, lesions_uri: str, done: Sequence[PreprocessedCase], failed: Sequence[QuarantineRecord]
) -> PreprocessFinish:
    """Write the ``preprocess`` quarantine (``failed``), run the pairing gate over ``done``, then
    write the manifest of the cases that passed it (their image-table rows from the lesion table
    at ``lesions_uri``, joined with their records) and the run's contact sheet."""
    from mammoseg import catalog
    from mammoseg.casetable import image_table

    run.write_quarantine("preprocess", failed)
    gate = pairing_gate(run, done)
    refused = {r.case_id for r in gate.records}
    passed = [c for c in done if c.case_id not in refused]
    images = image_table(catalog.read_lesions(lesions_uri, run.settings))
    records = pd.DataFrame([{"case_id": c.case_id, **c.record} for c in passed])
    manifest_uri = contact_uri = None
    if len(records):
        manifest = catalog.build_manifest(images, records)
        manifest_uri = run.write_manifest(manifest)
        contact_uri = run_contact_sheet(run.store, run.run_id, manifest)
    return PreprocessFinish(
        pairing=gate, manifest_uri=manifest_uri, contact_sheet_uri=contact_uri,
        preprocessed=len({c.case_id for c in passed}), computed=sum(1 for c in passed if not c.cached),
    )


def run_contact_sheet(store: ObjectStore, run_id: str, manifest: pd.DataFrame, limit: int = CONTACT_SHEET_LIMIT) -> str:
    """The run's contact sheet of the first ``limit`` manifest rows. The sheet is a function of
    those rows' content keys (the NPZ key holds the digest of the inputs and parameters) and
    pseudonymous case ids, so a sheet already drawn for the same rows is copied, not redrawn."""
    from mammoseg.contact_sheet import contact_sheet
    from mammoseg.layout import contact_sheet_cache_key, contact_sheet_key
    from mammoseg.preprocess import read_preprocessed
    from mammoseg.storage import ObjectNotFound

    shown = manifest.head(limit)
    digest = hashlib.sha256(
        json.dumps([[str(c), str(k)] for c, k in zip(shown["case_id"], shown["npz_key"])]).encode()
    ).hexdigest()
    try:
        png = store.read_bytes(contact_sheet_cache_key(digest))
    except ObjectNotFound:
        tiles = []
        for row in shown.itertuples(index=False):
            arrays = read_preprocessed(store, row.npz_key)
            tiles.append((arrays.image, arrays.mask, row.case_id))
        png = contact_sheet(tiles)
        store.write_bytes(contact_sheet_cache_key(digest), png, "image/png")
    return store.write_bytes(contact_sheet_key(run_id), png, "image/png").uri
