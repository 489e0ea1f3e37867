"""Evaluate: score a published model (default: the champion) on a dataset, without retraining.

resolve the model and its plan → data pipeline at the plan's size → what the model was trained
on (leakage audit) → the held-out evaluation (original geometry, CIs, subgroups, detection,
overlays) under ``runs/<run-id>/evaluation/``.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from pydantic import BaseModel

from flows.data_pipeline import data_pipeline_flow
from flows.lineage import untracked
from tasks.evaluate import EvalSpec, evaluate_model
from tasks.model_ref import locate_training_data, record_evaluation, resolve_model


class NothingToEvaluate(RuntimeError):
    """The dataset produced no preprocessed case to score."""


class EvaluateResult(BaseModel):
    run_id: str
    dataset: str
    model_uri: str
    model_version: str | None
    champion: bool
    threshold: float
    metrics: dict[str, Any]
    metrics_uri: str
    overlays_uri: str | None
    record_uri: str
    report_uri: str
    leakage_findings: list[str] | None  # None: no audit (training data not recorded)
    leakage_audit_basis: str
    counts: dict[str, int]


@flow(name="evaluate", flow_run_name="evaluate-{dataset}-{run_id}")
def evaluate_flow(
    dataset: str,
    source_url: str,
    store_url: str,
    run_id: str,
    model_uri: str | None = None,
    n_boot: int = 1000,
) -> EvaluateResult:
    model = resolve_model(store_url, model_uri)
    data = untracked(data_pipeline_flow(dataset, source_url, store_url, run_id, model.plan.preprocess))
    if not data.manifest_uri or not data.lesions_uri:
        raise NothingToEvaluate(f"no case of {dataset} could be preprocessed. Report: {data.report_uri}")
    training = locate_training_data(model.model_uri, store_url, run_id)
    scored = evaluate_model(EvalSpec(
        name=dataset, model_uri=model.model_uri, manifest_uri=data.manifest_uri, lesions_uri=data.lesions_uri,
        source_url=source_url, store_url=store_url, run_id=run_id, threshold=model.plan.threshold, n_boot=n_boot,
        train_manifest_uri=training.train_manifest_uri, split_uri=training.split_uri,
    ))
    record_uri = record_evaluation(store_url, run_id, dataset, model, training, scored.metrics_uri)
    return EvaluateResult(
        run_id=run_id,
        dataset=dataset,
        model_uri=model.model_uri,
        model_version=model.version,
        champion=model.champion,
        threshold=model.plan.threshold,
        metrics=scored.metrics,
        metrics_uri=scored.metrics_uri,
        overlays_uri=scored.overlays_uri,
        record_uri=record_uri,
        report_uri=data.report_uri,
        leakage_findings=scored.leakage_findings,
        leakage_audit_basis=training.note,
        counts=data.counts,
    )
