"""Validate flow: the Great Expectations metadata suite as a gate."""

from __future__ import annotations

from prefect import flow

from tasks.validate import GateOutcome, metadata_gate


@flow(name="validate", flow_run_name="validate-{run_id}")
def validate_flow(lesions_uri: str, store_url: str, run_id: str) -> GateOutcome:
    return metadata_gate(lesions_uri, store_url, run_id)
