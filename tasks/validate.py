"""Validate: the GX metadata suite as a gate in front of preprocessing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from prefect import get_run_logger, task
from pydantic import BaseModel

from mammoseg.casetable import from_csv_bytes, to_csv_bytes
from mammoseg.gate import decide
from mammoseg.layout import data_docs_prefix, lesions_key, validation_key
from mammoseg.runreport import QuarantineRecord, write_quarantine
from mammoseg.settings import get_settings
from mammoseg.storage import ObjectStore, join_key, open_store, open_uri
from tasks.retry import IO_RETRIES
from tasks.states import EXPECTATIONS_FAILED, completed_as

if TYPE_CHECKING:
    from mammoseg.validation.reuse import ReusedValidation


class GateOutcome(BaseModel):
    run_id: str
    suite: str
    success: bool
    validated_uri: str | None
    report_uri: str
    data_docs_index: str | None
    data_docs_uri: str | None
    cases_in: int
    cases_passed: int
    cases_quarantined: int
    stop_reason: str | None = None
    reused_from: str | None = None  # the run whose passed validation of the same table was reused


def upload_folder(store: ObjectStore, folder: Path, prefix: str) -> str:
    """Copy a local folder (the GX Data Docs site) into the store; return the index URI."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        store.write_file(join_key(prefix, path.relative_to(folder).as_posix()), path)
    return store.uri(join_key(prefix, "index.html"))


@task(name="gx-metadata-gate", **IO_RETRIES)
def metadata_gate(lesions_uri: str, store_url: str, run_id: str) -> GateOutcome:
    """Run the ``lesion_metadata`` suite; quarantine failing cases or stop the run."""
    from mammoseg.validation import validate_frame
    from mammoseg.validation.reuse import find_reusable, record_validation, validation_digest

    settings = get_settings()
    store = open_store(store_url, settings)
    src, key = open_uri(lesions_uri, settings)
    table_bytes = src.read_bytes(key)
    table = from_csv_bytes(table_bytes)
    digest = validation_digest("lesion_metadata", table_bytes, max_fraction=settings.quarantine_max_fraction)
    reused = find_reusable(store, "lesion_metadata", digest)
    if reused is not None:  # the same table passed the same suite before: GX would say the same
        return _reused_gate(store, reused, table, run_id)
    docs_dir = settings.work_dir / "runs" / run_id / "data_docs"
    report = validate_frame(table, "lesion_metadata", data_docs_dir=docs_dir, run_name=run_id)
    report_uri = store.write_bytes(
        validation_key(run_id, "lesion_metadata"), json.dumps(report.to_dict(), indent=2).encode(), "application/json"
    ).uri
    docs_uri = upload_folder(store, docs_dir, data_docs_prefix(run_id)) if docs_dir.is_dir() else None
    decision = decide(report, max_fraction=settings.quarantine_max_fraction)
    if report.success and not decision.reasons and not decision.stopped:  # only a clean pass is reused
        record_validation(
            store, "lesion_metadata", digest, run_id=run_id, report=report.to_dict(),
            summary_text=report.summary_text(), data_docs_uri=docs_uri,
        )
    records = [QuarantineRecord(stage="validate", reason=r, case_id=c) for c, r in decision.reasons.items()]
    write_quarantine(store, run_id, "validate", records)
    logger = get_run_logger()
    # a failed suite is a warning (its cases are quarantined, the run goes on), not news
    log = logger.info if report.success else logger.warning
    log("GX lesion_metadata: %s", "passed" if report.success else "FAILED")
    for line in report.summary_text().splitlines():
        log(line)
    for r in records:
        logger.warning("quarantined at validation: case=%s %s", r.case_id, r.reason)
    kept = table[~table["case_id"].isin(list(decision.reasons))]
    validated_uri = None
    if not decision.stopped:
        validated_uri = store.write_bytes(lesions_key(run_id, "validated"), to_csv_bytes(kept), "text/csv").uri
    else:
        logger.error("gate closed: %s", decision.stop_reason)
    outcome = GateOutcome(
        run_id=run_id,
        suite="lesion_metadata",
        success=report.success,
        validated_uri=validated_uri,
        report_uri=report_uri,
        data_docs_index=report.data_docs_index,
        data_docs_uri=docs_uri,
        cases_in=int(table["case_id"].nunique()),
        cases_passed=int(kept["case_id"].nunique()),
        cases_quarantined=len(records),
        stop_reason=decision.stop_reason,
    )
    if report.success:
        return outcome
    return completed_as(outcome, EXPECTATIONS_FAILED, f"{len(records)} case(s) quarantined")


def _reused_gate(store: ObjectStore, reused: ReusedValidation, table: pd.DataFrame, run_id: str) -> GateOutcome:
    """The gate's outcome from a recorded passed validation of the same table (no GX run):
    the run still gets its validation report (marked ``reused``), its validated table and an
    empty quarantine of this stage."""
    report_uri = store.write_bytes(
        validation_key(run_id, "lesion_metadata"), json.dumps(reused.report_for(run_id), indent=2).encode(),
        "application/json",
    ).uri
    write_quarantine(store, run_id, "validate", [])
    logger = get_run_logger()
    logger.info("GX lesion_metadata: passed (this exact table passed in run %s; result reused, suite not re-run)", reused.run_id)
    for line in reused.summary_text.splitlines():
        logger.info(line)
    validated_uri = store.write_bytes(lesions_key(run_id, "validated"), to_csv_bytes(table), "text/csv").uri
    cases = int(table["case_id"].nunique())
    return GateOutcome(
        run_id=run_id, suite="lesion_metadata", success=True, validated_uri=validated_uri, report_uri=report_uri,
        data_docs_index=None, data_docs_uri=reused.data_docs_uri, cases_in=cases, cases_passed=cases,
        cases_quarantined=0, reused_from=reused.run_id,
    )
