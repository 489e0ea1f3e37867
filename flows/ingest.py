"""Ingest flow: a dataset in a store → the lesion table of this run."""

from __future__ import annotations

from prefect import flow

from tasks.ingest import IngestSummary, build_lesion_table, count_source_objects


@flow(name="ingest", flow_run_name="ingest-{dataset}-{run_id}", log_prints=False)
def ingest_flow(dataset: str, source_url: str, store_url: str, run_id: str) -> IngestSummary:
    objects = count_source_objects(source_url)
    return build_lesion_table(dataset, source_url, store_url, run_id, objects)
