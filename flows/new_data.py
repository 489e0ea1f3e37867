"""New data → retrain: the flow the `new-data` (event) and `retrain-weekly` (cron) deployments run.

It resolves everything a served run needs from the settings of the process that runs it
(``MAMMOSEG_RETRAIN_*``, ``MAMMOSEG_HELDOUT_*``, ``MAMMOSEG_STORE_URL``), takes the training
dataset root from the triggering event when there is one, and runs :func:`retrain_flow` with a
fresh run id. Only new objects cost anything: ingest lists the dataset root, and the preprocess
cache is content-addressed (``preprocessed/<params>/<content-hash>.npz``), so images that were
already preprocessed by an earlier run are read from the cache, not recomputed.

Privacy: the event trigger passes only the dataset *root* (never the uploaded object's key,
which in CBIS-DDSM carries the patient ID) into the run's parameters.
"""

from __future__ import annotations

from typing import Literal

from prefect import flow, get_run_logger
from prefect.concurrency.sync import concurrency

from flows.retrain import RetrainResult, retrain_flow
from mammoseg.layout import new_run_id
from mammoseg.params import DatasetSource, RetrainParams
from mammoseg.settings import get_settings


class NotConfigured(ValueError):
    """A served retrain lacks a dataset root (set it in the environment or pass it)."""


@flow(name="new-data", flow_run_name="new-data-{trigger}")
def new_data_flow(
    source_url: str | None = None,
    dataset: str | None = None,
    heldout_dataset: str | None = None,
    heldout_source_url: str | None = None,
    store_url: str | None = None,
    params: RetrainParams | None = None,
    trigger: Literal["event", "schedule", "manual"] = "manual",
) -> RetrainResult:
    """Ingest → validate → preprocess → train → evaluate → publish on ``source_url``.

    Every ``None`` argument comes from the settings: ``source_url`` from
    ``MAMMOSEG_RETRAIN_SOURCE_URL``, the held-out set from ``MAMMOSEG_HELDOUT_DATASET`` /
    ``MAMMOSEG_HELDOUT_SOURCE_URL``. Raises :class:`NotConfigured` when a root is missing.
    """
    s = get_settings()
    source = source_url or s.retrain_source_url
    heldout_source = heldout_source_url or s.heldout_source_url
    if not source:
        raise NotConfigured(
            "no training dataset root: the event carried none and MAMMOSEG_RETRAIN_SOURCE_URL is unset"
        )
    if not heldout_source:
        raise NotConfigured("no held-out dataset root: set MAMMOSEG_HELDOUT_SOURCE_URL")
    if source.rstrip("/") == heldout_source.rstrip("/"):
        raise NotConfigured(f"the training and held-out roots are the same ({source}); refusing to retrain")
    run_id = new_run_id()
    get_run_logger().info(
        "retrain %s (trigger: %s) on %s, held-out %s", run_id, trigger, source, heldout_source
    )
    # One retrain at a time across *all* deployments (weekly and event-triggered): a global
    # concurrency limit of 1 that ``mammoseg serve`` creates; a run waits for the slot.
    with concurrency(RETRAIN_LIMIT, occupy=1):
        return retrain_flow(
            [DatasetSource(dataset=dataset or s.retrain_dataset, source_url=source)],
            [DatasetSource(dataset=heldout_dataset or s.heldout_dataset, source_url=heldout_source)],
            store_url or s.store_url,
            run_id,
            params,
        )


#: Name of the global concurrency limit (limit 1) shared by every retrain deployment.
RETRAIN_LIMIT = "mammoseg-retrain"


def ensure_retrain_limit() -> None:
    """Create (or reset to 1) the global concurrency limit of retrains on the current server."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(RETRAIN_LIMIT, limit=1)
