"""The run report: counts, quarantine reasons and outputs, as JSON in the store and as a
Prefect artifact (pseudonymous case ids only)."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact

from mammoseg.catalog import RunCatalog
from mammoseg.links import artifact_key, browser_url
from mammoseg.runreport import REPORT_STAGES, STAGES, RunReport
from mammoseg.settings import get_settings
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
    stage: str | None = None,
) -> str:
    """Write the run report and return its URI. ``stage`` None: the data pipeline's
    ``report.json`` (every quarantine stage of the run); ``ingest`` / ``preprocess``: that stage
    flow's own ``report-<stage>.json`` (its quarantine stages only)."""
    if stage is not None and stage not in REPORT_STAGES:
        raise ValueError(f"no run report for stage {stage!r}; one of {sorted(REPORT_STAGES)}")
    run = RunCatalog.open(store_url, run_id, get_settings())
    report = RunReport(
        run_id=run_id,
        dataset=dataset,
        source_url=source_url,
        store_url=store_url,
        quarantined=[r for s in (REPORT_STAGES[stage] if stage else STAGES) for r in run.read_quarantine(s)],
        gate=gate,
        outputs=outputs,
        extra=extra or {},
        stage=stage,
        **counts,
    )
    uri = run.write_report(report)
    settings = get_settings()
    create_markdown_artifact(
        # one key per dataset: the reports of a retrain's datasets do not version each other
        key=artifact_key(f"run-report-{dataset}" if stage is None else f"run-report-{stage}-{dataset}"),
        markdown=report.markdown(link=lambda u: browser_url(u, settings)),
        description=f"mammoseg run {run_id}" + (f" ({stage})" if stage else ""),
    )
    return uri


@task(name="lesion-table-datasets", **IO_RETRIES)
def lesion_table_datasets(lesions_uri: str) -> str:
    """The dataset(s) a lesion table comes from (``source_dataset``), for a stage report's title."""
    from mammoseg.catalog import read_lesions

    table = read_lesions(lesions_uri, get_settings())
    return ", ".join(sorted(str(d) for d in table["source_dataset"].dropna().unique())) or "unknown"
