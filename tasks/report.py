"""The run report: counts, quarantine reasons and outputs, as JSON in the store and as a
Prefect artifact (pseudonymous case ids only)."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact

from mammoseg.runreport import RunReport, read_quarantine
from mammoseg.settings import get_settings
from mammoseg.storage import open_store
from tasks.retry import IO_RETRIES


@task(name="write-run-report", **IO_RETRIES)
def write_run_report(
    *,
    run_id: str,
    dataset: str,
    source_url: str,
    store_url: str,
    counts: dict[str, int],
    gate: dict[str, Any],
    outputs: dict[str, str],
    extra: dict[str, Any] | None = None,
) -> str:
    store = open_store(store_url, get_settings())
    report = RunReport(
        run_id=run_id,
        dataset=dataset,
        source_url=source_url,
        store_url=store_url,
        quarantined=read_quarantine(store, run_id),
        gate=gate,
        outputs=outputs,
        extra=extra or {},
        **counts,
    )
    uri = report.save(store)
    create_markdown_artifact(
        key="run-report", markdown=report.markdown(), description=f"mammoseg run {run_id}"
    )
    return uri
