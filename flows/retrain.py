"""Retrain: data pipeline (train + held-out sets) → split → train → evaluate → publish."""

from __future__ import annotations

from typing import Any

from prefect import flow
from pydantic import BaseModel

from flows.data_pipeline import data_pipeline_flow
from mammoseg.params import RetrainParams
from tasks.evaluate import evaluate_model
from tasks.publish import publish_model
from tasks.train import split_by_patient, train_unet


class RetrainResult(BaseModel):
    run_id: str
    model_uri: str
    version: str
    promoted: bool
    gate_reason: str
    metrics: dict[str, Any]
    internal_test: dict[str, Any] | None
    overlays_uri: str | None
    report_uri: str
    heldout_report_uri: str
    split: dict[str, int]
    epochs_run: int


@flow(name="retrain", flow_run_name="retrain-{dataset}-{run_id}")
def retrain_flow(
    dataset: str,
    source_url: str,
    heldout_dataset: str,
    heldout_source_url: str,
    store_url: str,
    run_id: str,
    params: RetrainParams | None = None,
) -> RetrainResult:
    p = params or RetrainParams()
    data = data_pipeline_flow(dataset, source_url, store_url, run_id, p.size)
    held = data_pipeline_flow(heldout_dataset, heldout_source_url, store_url, f"{run_id}-heldout", p.size)
    split = split_by_patient(data.manifest_uri, store_url, run_id, p)
    trained = train_unet(data.manifest_uri, split.split_uri, store_url, run_id, p)
    heldout = evaluate_model(
        f"heldout-{heldout_dataset}", trained.model_uri, held.manifest_uri,
        held.lesions_uri, heldout_source_url,
        store_url, run_id, trained.threshold, p.n_boot, data.manifest_uri, split.split_uri,
    )
    internal = None
    test_ids = split_ids(split.split_uri, "test")
    if test_ids:
        internal = evaluate_model(
            "internal-test", trained.model_uri, data.manifest_uri,
            data.lesions_uri, source_url,
            store_url, run_id, trained.threshold, p.n_boot, data.manifest_uri, split.split_uri, case_ids=test_ids,
        )
    published = publish_model(
        store_url=store_url, run_id=run_id, trained=trained, split=split,
        train_manifest_uri=data.manifest_uri, heldout_manifest_uri=held.manifest_uri,
        heldout=heldout, internal=internal,
        datasets={"train": dataset, "heldout": heldout_dataset}, promote_metric=p.promote_metric,
    )
    return RetrainResult(
        run_id=run_id,
        model_uri=published.model_uri,
        version=published.version,
        promoted=published.promoted,
        gate_reason=published.gate_reason,
        metrics=heldout.metrics,
        internal_test=internal.metrics if internal else None,
        overlays_uri=heldout.overlays_uri,
        report_uri=data.report_uri,
        heldout_report_uri=held.report_uri,
        split=split.counts,
        epochs_run=trained.epochs_run,
    )


def split_ids(split_uri: str, which: str) -> list[str]:
    from tasks.train import read_manifest

    table = read_manifest(split_uri)
    return table.loc[table["split"] == which, "case_id"].tolist()
