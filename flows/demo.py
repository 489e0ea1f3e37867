"""The main job on the embedded default: synthetic data through the whole retrain pipeline."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.retrain import retrain_flow
from mammoseg.layout import new_run_id
from mammoseg.params import RetrainParams
from tasks.synth import synthesize_task


@flow(name="demo", flow_run_name="demo-{run_id}")
def demo_flow(
    store_url: str, run_id: str, patients: int = 24, bad: int = 3, seed: int = 0, params: RetrainParams | None = None
) -> dict[str, Any]:
    p = params or RetrainParams(seed=seed)
    data = synthesize_task(store_url=store_url, patients=patients, bad=bad, seed=seed, mias_images=16)
    result = retrain_flow(
        "cbis-ddsm", data["cbis_source_url"], "mini-mias", data["mias_source_url"], store_url, run_id, p
    )
    keys = ("dice_mean", "iou_mean", "dice_pooled", "n_cases", "n_patients", "ci95", "threshold", "detection", "definitions")
    return {
        "run_id": run_id,
        "store_url": store_url,
        "model_uri": result.model_uri,
        "model_version": result.version,
        "promoted": result.promoted,
        "gate": result.gate_reason,
        "metrics": {k: result.metrics.get(k) for k in keys},
        "internal_test": {k: (result.internal_test or {}).get(k) for k in ("dice_mean", "iou_mean", "dice_pooled", "n_cases", "ci95")},
        "report_uri": result.report_uri,
        "heldout_report_uri": result.heldout_report_uri,
        "overlays_uri": result.overlays_uri,
        "split": result.split,
        "epochs_run": result.epochs_run,
        "synthetic": data,
    }


def run_demo(store_url: str, *, patients: int, size: int, bad: int, seed: int, epochs: int | None = None) -> dict[str, Any]:
    params = RetrainParams(size=size, seed=seed, **({"epochs": epochs} if epochs else {}))
    return demo_flow(store_url=store_url, run_id=new_run_id(), patients=patients, bad=bad, seed=seed, params=params)
