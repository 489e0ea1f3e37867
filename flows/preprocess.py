"""Preprocess flow: fan out over cases (cached by content; on Dask or threads, see
mammoseg/fanout.py), then the pairing gate, then the run report."""

from __future__ import annotations

from prefect import flow

from mammoseg.fanout import fan_out
from mammoseg.preprocess.params import PreprocessParams
from mammoseg.settings import get_settings
from tasks.preprocess import (
    PreprocessSummary,
    finish_preprocess,
    plan_cases,
    preprocess_one,
    probe_cache,
)
from tasks.report import lesion_table_datasets, write_run_report
from tasks.states import QUARANTINED, completed_as, unwrap


class PreprocessResult(PreprocessSummary):
    """The preprocess summary and the URI of the flow's run report (``runs/<id>/report-preprocess.json``)."""

    report_uri: str


@flow(name="preprocess", flow_run_name="preprocess-{run_id}")
def preprocess_flow(
    lesions_uri: str, source_url: str, store_url: str, run_id: str, params: PreprocessParams | None = None
) -> PreprocessResult:
    """``params``: how to preprocess (a model's plan's, or the settings' when None)."""
    settings = get_settings()
    params = params or PreprocessParams.from_settings(settings)
    plan = plan_cases(lesions_uri, source_url)
    # cases already in the content-addressed cache are answered here; one task per other case,
    # on a Dask cluster or the flow's thread pool (mammoseg/fanout.py)
    hits = probe_cache(plan.specs, source_url, store_url, params)
    misses = [spec for spec, hit in zip(plan.specs, hits) if hit is None]
    computed = iter(fan_out(
        preprocess_one, {"spec": misses},
        {"source_url": source_url, "store_url": store_url, "params": params}, settings,
    ))
    outcomes = plan.refused + [hit if hit is not None else next(computed) for hit in hits]
    summary: PreprocessSummary = unwrap(finish_preprocess(outcomes, lesions_uri, store_url, run_id))
    outputs = {
        "lesions": lesions_uri,
        "manifest": summary.manifest_uri or "",
        "contact_sheet": summary.contact_sheet_uri or "",
        "pairing_report": summary.pairing_report_uri or "",
    }
    # its own key: as a subflow of the data pipeline, the pipeline's report.json stays its own
    report_uri = write_run_report(
        run_id=run_id,
        dataset=lesion_table_datasets(lesions_uri),
        source_url=source_url,
        store_url=store_url,
        counts={
            "cases_found": summary.cases_in,
            "cases_preprocessed": summary.cases_preprocessed,
            "preprocess_computed": summary.computed,
            "preprocess_cached": summary.cached,
        },
        gate={},
        outputs={k: v for k, v in outputs.items() if v},
        extra={"cases_quarantined": summary.quarantined, "params_digest": params.digest()},
        stage="preprocess",
    )
    result = PreprocessResult(**summary.model_dump(), report_uri=report_uri)
    bad = summary.quarantined
    return completed_as(result, QUARANTINED if bad else None, f"{bad} case(s) quarantined")
