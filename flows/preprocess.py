"""Preprocess flow: fan out over cases (cached by content), then the pairing gate."""

from __future__ import annotations

from prefect import flow, unmapped

from mammoseg.preprocess.params import PreprocessParams
from mammoseg.settings import get_settings
from tasks.preprocess import PreprocessSummary, finish_preprocess, plan_cases, preprocess_one


@flow(name="preprocess", flow_run_name="preprocess-{run_id}")
def preprocess_flow(
    lesions_uri: str, source_url: str, store_url: str, run_id: str, params: PreprocessParams | None = None
) -> PreprocessSummary:
    """``params``: how to preprocess (a model's plan's, or the settings' when None)."""
    params = params or PreprocessParams.from_settings(get_settings())
    plan = plan_cases(lesions_uri, source_url)
    futures = preprocess_one.map(plan.specs, unmapped(source_url), unmapped(store_url), unmapped(params))
    outcomes = plan.refused + [f.result() for f in futures]
    return finish_preprocess(outcomes, lesions_uri, store_url, run_id)
