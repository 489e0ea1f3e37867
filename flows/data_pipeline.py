"""Data pipeline: ingest → validate (GX gate) → preprocess → run report."""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel

from flows.ingest import IngestResult, ingest_flow
from flows.lineage import untracked
from flows.preprocess import PreprocessResult, preprocess_flow
from flows.validate import validate_flow
from mammoseg.preprocess.params import PreprocessParams
from mammoseg.rerun import RecordedRun, rebase_uri
from tasks.report import write_run_report
from tasks.rerun import copy_previous_run, find_previous_run, fingerprint_inputs, record_run
from tasks.states import QUARANTINED, completed_as
from tasks.validate import GateOutcome


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
    # no new data: every input (source objects, parameters, settings, key, code) equals a
    # completed run's, so its outputs are this run's (mammoseg/rerun.py)
    fingerprint = fingerprint_inputs(dataset, source_url, params)
    previous = find_previous_run(store_url, fingerprint)
    if previous is not None and copy_previous_run(store_url, previous, run_id):
        return _reuse(previous, dataset, source_url, store_url, run_id)
    # untracked: later tasks take these results' fields as plain values (see flows/lineage.py)
    ingest = untracked(ingest_flow(dataset, source_url, store_url, run_id))
    gate = untracked(validate_flow(ingest.lesions_uri, store_url, run_id))
    prep = None
    if gate.stop_reason is None and gate.validated_uri:
        prep = untracked(preprocess_flow(gate.validated_uri, source_url, store_url, run_id, params))
    counts, outputs = _counts(ingest, gate, prep), _outputs(ingest, gate, prep)
    gate_fields = {"suite": gate.suite, "success": gate.success, "stop_reason": gate.stop_reason}
    report_uri = write_run_report(
        run_id=run_id,
        dataset=dataset,
        source_url=source_url,
        store_url=store_url,
        counts=counts,
        gate=gate_fields | ({"reused_from": gate.reused_from} if gate.reused_from else {}),
        outputs=outputs,
    )
    if gate.stop_reason:
        raise GateClosed(f"{gate.stop_reason}. Report: {report_uri}")
    result = _result(dataset, store_url, run_id, report_uri, counts, ingest, gate, prep)
    record_run(store_url, fingerprint, run_id, result.model_dump() | {"gate": gate_fields, "outputs": outputs})
    return _finish(result)


def _counts(ingest: IngestResult, gate: GateOutcome, prep: PreprocessResult | None) -> dict[str, int]:
    """The run report's counts, stage by stage (``found = kept + quarantined`` at each)."""
    return {
        "objects_found": ingest.objects_found,
        "cases_found": ingest.cases + ingest.rejected,
        "cases_ingested": ingest.cases,
        "cases_validated": gate.cases_passed,
        "cases_preprocessed": prep.cases_preprocessed if prep else 0,
        "preprocess_computed": prep.computed if prep else 0,
        "preprocess_cached": prep.cached if prep else 0,
    }


def _outputs(ingest: IngestResult, gate: GateOutcome, prep: PreprocessResult | None) -> dict[str, str]:
    """The run's outputs by name (those it wrote only)."""
    outputs = {
        "lesions": ingest.lesions_uri,
        "validated_lesions": gate.validated_uri or "",
        "gx_report": gate.report_uri,
        "gx_data_docs": gate.data_docs_uri or "",
        "manifest": prep.manifest_uri or "" if prep else "",
        "contact_sheet": prep.contact_sheet_uri or "" if prep else "",
    }
    return {k: v for k, v in outputs.items() if v}


def _result(
    dataset: str, store_url: str, run_id: str, report_uri: str, counts: dict[str, int], ingest: IngestResult,
    gate: GateOutcome, prep: PreprocessResult | None,
) -> DataRunResult:
    return DataRunResult(
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


def _finish(result: DataRunResult) -> DataRunResult:
    bad = result.counts["quarantined"]
    # a run that quarantined cases reads "Quarantined" in the run list (still a Completed state)
    return completed_as(result, QUARANTINED if bad else None, f"{bad} case(s) quarantined, see the run report")


def _reuse(previous: RecordedRun, dataset: str, source_url: str, store_url: str, run_id: str) -> DataRunResult:
    """This run's result and report from a completed run with the same inputs, whose outputs
    were copied to this run's folder: the same counts (every case a cache hit), its quarantine
    records (copied), and ``reused_from`` in the gate and the report."""
    old = DataRunResult.model_validate({k: v for k, v in previous.result.items() if k in DataRunResult.model_fields})
    prev_id = previous.run_id
    counts = {k: v for k, v in old.counts.items() if k != "quarantined"}
    counts |= {"preprocess_computed": 0, "preprocess_cached": counts["cases_preprocessed"]}
    moved = {k: rebase_uri(getattr(old, k), prev_id, run_id) for k in ("lesions_uri", "manifest_uri", "contact_sheet_uri")}
    # every output but the Data Docs (not copied: the previous run's site is named) moves along
    outputs = {
        k: v if k == "gx_data_docs" else rebase_uri(v, prev_id, run_id)
        for k, v in (previous.result.get("outputs") or {}).items()
    }
    gate = dict(previous.result.get("gate") or {}) | {"reused_from": prev_id}
    report_uri = write_run_report(
        run_id=run_id, dataset=dataset, source_url=source_url, store_url=store_url, counts=counts, gate=gate,
        outputs=outputs,
        extra={"reused_from": prev_id, "why": "no input changed (source objects, parameters, settings, code)"},
    )
    result = old.model_copy(update={
        "run_id": run_id, "store_url": store_url, "report_uri": report_uri, **moved,
        "data_docs_index": None, "counts": counts | {"quarantined": old.counts.get("quarantined", 0)},
    })
    return _finish(result)
