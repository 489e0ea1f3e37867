"""Data pipeline: ingest → validate (GX gate) → preprocess → run report."""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel

from flows.ingest import ingest_flow
from flows.lineage import untracked
from flows.preprocess import preprocess_flow
from flows.validate import validate_flow
from mammoseg.preprocess.params import PreprocessParams
from tasks.report import write_run_report
from tasks.states import QUARANTINED, completed_as


class GateClosed(RuntimeError):
    """The validation gate stopped the run (too many failing cases, or a broken table)."""


class DataRunResult(BaseModel):
    run_id: str
    dataset: str
    store_url: str
    report_uri: str
    lesions_uri: str | None  # the validated lesion table: the source index of this run
    manifest_uri: str | None
    contact_sheet_uri: str | None
    data_docs_index: str | None
    data_docs_uri: str | None
    counts: dict[str, int]


@flow(name="data-pipeline", flow_run_name="data-{dataset}-{run_id}")
def data_pipeline_flow(
    dataset: str, source_url: str, store_url: str, run_id: str, params: PreprocessParams | None = None
) -> DataRunResult:
    # untracked: later tasks take these results' fields as plain values (see flows/lineage.py)
    ingest = untracked(ingest_flow(dataset, source_url, store_url, run_id))
    gate = untracked(validate_flow(ingest.lesions_uri, store_url, run_id))
    prep = None
    if gate.stop_reason is None and gate.validated_uri:
        prep = untracked(preprocess_flow(gate.validated_uri, source_url, store_url, run_id, params))
    counts = {
        "objects_found": ingest.objects_found,
        "cases_found": ingest.cases + ingest.rejected,
        "cases_ingested": ingest.cases,
        "cases_validated": gate.cases_passed,
        "cases_preprocessed": prep.cases_preprocessed if prep else 0,
        "preprocess_computed": prep.computed if prep else 0,
        "preprocess_cached": prep.cached if prep else 0,
    }
    outputs = {
        "lesions": ingest.lesions_uri,
        "validated_lesions": gate.validated_uri or "",
        "gx_report": gate.report_uri,
        "gx_data_docs": gate.data_docs_uri or "",
        "manifest": prep.manifest_uri or "" if prep else "",
        "contact_sheet": prep.contact_sheet_uri or "" if prep else "",
    }
    report_uri = write_run_report(
        run_id=run_id,
        dataset=dataset,
        source_url=source_url,
        store_url=store_url,
        counts=counts,
        gate={"suite": gate.suite, "success": gate.success, "stop_reason": gate.stop_reason}
        | ({"reused_from": gate.reused_from} if gate.reused_from else {}),
        outputs={k: v for k, v in outputs.items() if v},
    )
    if gate.stop_reason:
        raise GateClosed(f"{gate.stop_reason}. Report: {report_uri}")
    result = DataRunResult(
        run_id=run_id,
        dataset=dataset,
        store_url=store_url,
        report_uri=report_uri,
        lesions_uri=gate.validated_uri,
        manifest_uri=prep.manifest_uri if prep else None,
        contact_sheet_uri=prep.contact_sheet_uri if prep else None,
        data_docs_index=gate.data_docs_index,
        data_docs_uri=gate.data_docs_uri,
        counts=counts | {"quarantined": ingest.rejected + gate.cases_quarantined + (prep.quarantined if prep else 0)},
    )
    bad = result.counts["quarantined"]
    # a run that quarantined cases reads "Quarantined" in the run list (still a Completed state)
    return completed_as(result, QUARANTINED if bad else None, f"{bad} case(s) quarantined, see the run report")
