"""Ingest: the dataset in the source store → lesion table + quarantine records in the run."""

from __future__ import annotations

from prefect import get_run_logger, task
from pydantic import BaseModel

from mammoseg.adapters.common import IMAGE_ABSENT, OUT_OF_SCOPE
from mammoseg.adapters.registry import load_dataset
from mammoseg.catalog import RunCatalog
from mammoseg.runreport import QuarantineRecord
from mammoseg.settings import get_settings, require_pseudonym_key
from mammoseg.storage import open_store
from tasks.retry import IO_RETRIES
from tasks.states import QUARANTINED, completed_as


class IngestSummary(BaseModel):
    run_id: str
    lesions_uri: str
    quarantine_uri: str
    objects_found: int
    cases: int
    lesions: int
    rejected: int
    skipped: int


@task(name="count-source-objects", **IO_RETRIES)
def count_source_objects(source_url: str) -> int:
    """Paginated listing of the source prefix (what a new-data trigger would diff against)."""
    return sum(1 for _ in open_store(source_url, get_settings()).list())


@task(name="build-lesion-table", **IO_RETRIES)
def build_lesion_table(dataset: str, source_url: str, store_url: str, run_id: str, objects_found: int) -> IngestSummary:
    """Run the dataset adapter; write the lesion table and the rejects of this stage."""
    settings = get_settings()
    key = require_pseudonym_key(settings)  # before any read: no run on real data with a public key
    source = open_store(source_url, settings)
    run = RunCatalog.open(store_url, run_id, settings)
    result = load_dataset(dataset, source, pseudonym_key=key)
    skip = (IMAGE_ABSENT, OUT_OF_SCOPE)
    absent = [
        QuarantineRecord(stage="skipped", reason=r.reason, case_id=r.case_id, source=r.source)
        for r in result.rejects
        if r.reason.startswith(skip)
    ]
    records = [
        QuarantineRecord(stage="ingest", reason=r.reason, case_id=r.case_id, source=r.source)
        for r in result.rejects
        if not r.reason.startswith(skip)
    ]
    lesions_uri = run.write_lesions(result.lesions, "ingest")
    quarantine_uri = run.write_quarantine("ingest", records)
    run.write_quarantine("skipped", absent)
    logger = get_run_logger()
    cases = int(result.lesions["case_id"].nunique())
    logger.info(
        "%s: %d cases, %d lesions, %d rejected at ingest, %d skipped (image not in the store, or outside the dataset selection)",
        dataset, cases, len(result.lesions), len(records), len(absent),
    )
    for r in records:
        logger.warning("quarantined at ingest: case=%s reason=%s", r.case_id or "-", r.reason)
    summary = IngestSummary(
        run_id=run_id,
        lesions_uri=lesions_uri,
        quarantine_uri=quarantine_uri,
        objects_found=objects_found,
        cases=cases,
        lesions=len(result.lesions),
        rejected=len(records),
        skipped=len(absent),
    )
    return completed_as(summary, QUARANTINED if records else None, f"{len(records)} case(s) quarantined at ingest")
