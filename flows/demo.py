"""The main job on the embedded default: synthetic data through the whole retrain pipeline."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.retrain import retrain_flow
from mammoseg.layout import new_run_id
from mammoseg.params import DatasetSource, RetrainParams
from tasks.synth import synthesize_task


@flow(name="demo", flow_run_name="demo-{run_id}")
def demo_flow(
    store_url: str, run_id: str, patients: int = 24, bad: int = 3, seed: int = 0, params: RetrainParams | None = None
) -> dict[str, Any]:
    p = params or RetrainParams(seed=seed)
    data = synthesize_task(store_url=store_url, patients=patients, bad=bad, seed=seed, mias_images=16)
    result = retrain_flow(
        [DatasetSource(dataset="cbis-ddsm", source_url=data["cbis_source_url"])],
        [DatasetSource(dataset="mini-mias", source_url=data["mias_source_url"])],
        store_url, run_id, p,
    )
    keys = ("dice_mean", "iou_mean", "dice_pooled", "n_cases", "n_patients", "ci95", "threshold", "detection", "definitions")
    return {
        "run_id": run_id,
        "store_url": store_url,
        "model_uri": result.model_uri,
        "plan_uri": result.plan_uri,
        "model_version": result.version,
        "promoted": result.promoted,
        "gate": result.gate_reason,
        "primary": result.primary,
        "metrics": {k: result.metrics.get(k) for k in keys},
        "evaluations": [
            {"name": e.name, "kind": e.kind, "dataset": e.dataset, "metrics_uri": e.metrics_uri,
             "overlays_uri": e.overlays_uri, "metrics": {k: e.metrics.get(k) for k in keys}}
            for e in result.evaluations
        ],
        "data_reports": result.data_reports,
        "split": result.split,
        "epochs_run": result.epochs_run,
        "synthetic": data,
    }


def run_demo(store_url: str, *, patients: int, size: int, bad: int, seed: int, epochs: int | None = None) -> dict[str, Any]:
    params = RetrainParams(size=size, seed=seed, **({"epochs": epochs} if epochs else {}))
    return demo_flow(store_url=store_url, run_id=new_run_id(), patients=patients, bad=bad, seed=seed, params=params)
