"""Ingest flow: a dataset in a store → the lesion table of this run, and its run report."""

from __future__ import annotations

from prefect import flow

from tasks.ingest import IngestSummary, build_lesion_table, count_source_objects
from tasks.report import write_run_report
from tasks.states import QUARANTINED, completed_as, unwrap


class IngestResult(IngestSummary):
    """The ingest summary and the URI of the flow's run report (``runs/<id>/report-ingest.json``)."""

    report_uri: str


@flow(name="ingest", flow_run_name="ingest-{dataset}-{run_id}", log_prints=False)
def ingest_flow(dataset: str, source_url: str, store_url: str, run_id: str) -> IngestResult:
    objects = count_source_objects(source_url)
    summary: IngestSummary = unwrap(build_lesion_table(dataset, source_url, store_url, run_id, objects))
    # its own key: as a subflow of the data pipeline, the pipeline's report.json stays its own
    report_uri = write_run_report(
        run_id=run_id,
        dataset=dataset,
        source_url=source_url,
        store_url=store_url,
        counts={
            "objects_found": summary.objects_found,
            "cases_found": summary.cases + summary.rejected,
            "cases_ingested": summary.cases,
        },
        gate={},
        outputs={"lesions": summary.lesions_uri, "quarantine": summary.quarantine_uri},
        extra={
            "lesions": summary.lesions,
            "cases_rejected": summary.rejected,
            "cases_skipped": summary.skipped,
        },
        stage="ingest",
    )
    result = IngestResult(**summary.model_dump(), report_uri=report_uri)
    bad = summary.rejected
    return completed_as(result, QUARANTINED if bad else None, f"{bad} case(s) quarantined at ingest")
