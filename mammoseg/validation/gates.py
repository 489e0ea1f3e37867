"""The two GX gates of a data run, without Prefect: the metadata gate in front of preprocessing
and the pairing gate behind it.

Both run a suite through :func:`validate_or_reuse`: GX runs on the table, or, when this exact
table passed this exact suite before (:mod:`mammoseg.validation.reuse`), the recorded clean pass
is reused. Either way the run gets its validation report (``validation/<suite>.json``) and a
:class:`~mammoseg.gate.GateDecision` (empty for a reused pass).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mammoseg.gate import GateDecision, decide
from mammoseg.runreport import QuarantineRecord
from mammoseg.storage import ObjectStore, join_key

if TYPE_CHECKING:
    import pandas as pd

    from mammoseg.catalog import RunCatalog


@dataclass(frozen=True)
class SuiteRun:
    """One suite over one table: run by GX, or a recorded clean pass reused (``reused_from``:
    the run that passed it)."""

    suite: str
    success: bool
    report_uri: str
    summary_text: str
    decision: GateDecision = field(default_factory=GateDecision)
    data_docs_index: str | None = None  # the local Data Docs index of a fresh run
    data_docs_uri: str | None = None  # the Data Docs in the store (a reused pass: those of its run)
    reused_from: str | None = None


def upload_folder(store: ObjectStore, folder: Path, prefix: str) -> str:
    """Copy a local folder (the GX Data Docs site) into the store; return the index URI."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        store.write_file(join_key(prefix, path.relative_to(folder).as_posix()), path)
    return store.uri(join_key(prefix, "index.html"))


def validate_or_reuse(
    run: RunCatalog, suite: str, table: pd.DataFrame, table_bytes: bytes, *, max_fraction: float,
    data_docs_dir: Path | None = None,
) -> SuiteRun:
    """Validate ``table`` (whose bytes are ``table_bytes``) with ``suite`` and judge it with
    :func:`~mammoseg.gate.decide`, or reuse a recorded clean pass of the same bytes, suite and
    ``max_fraction``. Writes the run's validation report; uploads the Data Docs built in
    ``data_docs_dir`` (if any); records a clean pass (success, no case failing, not stopped)."""
    from mammoseg.layout import data_docs_prefix
    from mammoseg.validation import validate_frame
    from mammoseg.validation.reuse import find_reusable, record_validation, validation_digest

    digest = validation_digest(suite, table_bytes, max_fraction=max_fraction)
    reused = find_reusable(run.store, suite, digest)
    if reused is not None:  # the same table passed the same suite before: GX would say the same
        return SuiteRun(
            suite=suite, success=True, report_uri=run.write_validation(suite, reused.report_for(run.run_id)),
            summary_text=reused.summary_text, data_docs_uri=reused.data_docs_uri, reused_from=reused.run_id,
        )
    report = validate_frame(table, suite, data_docs_dir=data_docs_dir, run_name=run.run_id)
    report_uri = run.write_validation(suite, report.to_dict())
    docs_uri = None
    if data_docs_dir is not None and data_docs_dir.is_dir():
        docs_uri = upload_folder(run.store, data_docs_dir, data_docs_prefix(run.run_id))
    decision = decide(report, max_fraction=max_fraction)
    if report.success and not decision.reasons and not decision.stopped:  # only a clean pass is reused
        record_validation(run.store, suite, digest, run_id=run.run_id, report=report.to_dict(),
                          summary_text=report.summary_text(), data_docs_uri=docs_uri)
    return SuiteRun(
        suite=suite, success=report.success, report_uri=report_uri, summary_text=report.summary_text(),
        decision=decision, data_docs_index=report.data_docs_index, data_docs_uri=docs_uri,
    )


def quarantine_records(stage: str, decision: GateDecision) -> list[QuarantineRecord]:
    """One record of ``stage`` per case the decision quarantines (case id order)."""
    return [QuarantineRecord(stage=stage, reason=r, case_id=c) for c, r in decision.reasons.items()]


@dataclass(frozen=True)
class MetadataGate:
    """The metadata gate's result: the suite run, the cases it quarantined, the validated
    lesion table (None when the gate closed) and the case counts."""

    checked: SuiteRun
    records: list[QuarantineRecord]
    validated_uri: str | None
    cases_in: int
    cases_passed: int


def metadata_gate(run: RunCatalog, lesions_uri: str, *, max_fraction: float, data_docs_dir: Path) -> MetadataGate:
    """The ``lesion_metadata`` suite over the lesion table at ``lesions_uri``: its report, the
    ``validate`` quarantine of the run, and (unless the gate closed) the run's validated table
    (``lesions-validated.csv``: the table less its quarantined cases)."""
    from mammoseg.catalog import read_lesions_and_bytes

    table, table_bytes = read_lesions_and_bytes(lesions_uri, run.settings)
    checked = validate_or_reuse(run, "lesion_metadata", table, table_bytes, max_fraction=max_fraction,
                                data_docs_dir=data_docs_dir)
    records = quarantine_records("validate", checked.decision)
    run.write_quarantine("validate", records)
    kept = table[~table["case_id"].isin(list(checked.decision.reasons))]
    validated_uri = None if checked.decision.stopped else run.write_lesions(kept, "validated")
    return MetadataGate(checked=checked, records=records, validated_uri=validated_uri,
                        cases_in=int(table["case_id"].nunique()), cases_passed=int(kept["case_id"].nunique()))
