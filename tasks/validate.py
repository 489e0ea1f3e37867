"""Validate: the GX metadata suite as a gate in front of preprocessing."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import get_run_logger, task
from pydantic import BaseModel

from mammoseg.casetable import to_csv_bytes
from mammoseg.catalog import read_lesions
from mammoseg.gate import decide
from mammoseg.layout import data_docs_prefix, lesions_key, validation_key
from mammoseg.runreport import QuarantineRecord, write_quarantine
from mammoseg.settings import get_settings
from mammoseg.storage import ObjectStore, join_key, open_store
from tasks.retry import IO_RETRIES
from tasks.states import EXPECTATIONS_FAILED, completed_as


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


def upload_folder(store: ObjectStore, folder: Path, prefix: str) -> str:
    """Copy a local folder (the GX Data Docs site) into the store; return the index URI."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        store.write_file(join_key(prefix, path.relative_to(folder).as_posix()), path)
    return store.uri(join_key(prefix, "index.html"))


@task(name="gx-metadata-gate", **IO_RETRIES)
def metadata_gate(lesions_uri: str, store_url: str, run_id: str) -> GateOutcome:
    """Run the ``lesion_metadata`` suite; quarantine failing cases or stop the run."""
    from mammoseg.validation import validate_frame

    settings = get_settings()
    store = open_store(store_url, settings)
    table = read_lesions(lesions_uri, settings)  # through the run catalog's cache
    docs_dir = settings.work_dir / "runs" / run_id / "data_docs"
    report = validate_frame(table, "lesion_metadata", data_docs_dir=docs_dir, run_name=run_id)
    report_uri = store.write_bytes(
        validation_key(run_id, "lesion_metadata"), json.dumps(report.to_dict(), indent=2).encode(), "application/json"
    ).uri
    docs_uri = upload_folder(store, docs_dir, data_docs_prefix(run_id)) if docs_dir.is_dir() else None
    decision = decide(report, max_fraction=settings.quarantine_max_fraction)
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
