"""The main job on the embedded default: synthetic data through the whole pipeline."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.data_pipeline import data_pipeline_flow
from mammoseg.layout import new_run_id
from tasks.synth import synthesize_task


@flow(name="demo", flow_run_name="demo-{run_id}")
def demo_flow(store_url: str, run_id: str, patients: int = 24, size: int = 128, bad: int = 3, seed: int = 0) -> dict[str, Any]:
    data = synthesize_task(store_url=store_url, patients=patients, bad=bad, seed=seed)
    result = data_pipeline_flow("cbis-ddsm", data["cbis_source_url"], store_url, run_id, size)
    return {
        "run_id": run_id,
        "store_url": store_url,
        "report_uri": result.report_uri,
        "manifest_uri": result.manifest_uri,
        "contact_sheet_uri": result.contact_sheet_uri,
        "data_docs_index": result.data_docs_index,
        "counts": result.counts,
        "synthetic": data,
    }


def run_demo(store_url: str, **kwargs: Any) -> dict[str, Any]:
    return demo_flow(store_url=store_url, run_id=new_run_id(), **kwargs)
