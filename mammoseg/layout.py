"""Where the pipeline keeps things in its store. One place, so nobody invents a key."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from mammoseg.storage import join_key


def new_run_id(now: datetime | None = None) -> str:
    """Sortable and unique: ``20261126T172800Z-3fa1``."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(2)}"


def run_prefix(run_id: str) -> str:
    return join_key("runs", run_id)


def lesions_key(run_id: str, stage: str = "ingest") -> str:
    """The lesion table as ingested (``ingest``) or as it passed the gate (``validated``)."""
    return join_key(run_prefix(run_id), f"lesions-{stage}.csv")


def quarantine_key(run_id: str, stage: str) -> str:
    return join_key(run_prefix(run_id), "quarantine", f"{stage}.jsonl")


def report_key(run_id: str, stage: str | None = None) -> str:
    """The run report: ``report.json`` of the whole data pipeline; ``report-<stage>.json`` of a
    stage flow (``ingest``, ``preprocess``) run on its own or as a subflow, so the two never
    overwrite each other."""
    return join_key(run_prefix(run_id), "report.json" if stage is None else f"report-{stage}.json")


def manifest_key(run_id: str) -> str:
    return join_key(run_prefix(run_id), "preprocessed.csv")


def contact_sheet_key(run_id: str) -> str:
    return join_key(run_prefix(run_id), "contact_sheet.png")


def data_docs_prefix(run_id: str) -> str:
    return join_key(run_prefix(run_id), "data_docs")


def validation_key(run_id: str, suite: str) -> str:
    return join_key(run_prefix(run_id), "validation", f"{suite}.json")


SYNTH_CBIS_PREFIX = "raw/synthetic-cbis-ddsm"
SYNTH_MIAS_PREFIX = "raw/synthetic-mini-mias"


def inference_key(run_id: str, case_id: str, name: str) -> str:
    """An inference output of one (pseudonymous) case: ``runs/<id>/inference/<case>/<name>``."""
    return join_key(run_prefix(run_id), "inference", case_id, name)


def validation_reuse_key(suite: str, digest: str) -> str:
    """A passed validation of one exact table by one exact suite (``mammoseg.validation.reuse``)."""
    return join_key("cache", "validation", suite, f"{digest}.json")


def contact_sheet_cache_key(digest: str) -> str:
    """A contact sheet by the digest of the manifest rows it shows (their content keys)."""
    return join_key("cache", "contact-sheets", f"{digest}.png")


def data_run_reuse_key(fingerprint: str) -> str:
    """A completed data-pipeline run, by the fingerprint of everything it read (``mammoseg.rerun``)."""
    return join_key("cache", "data-runs", f"{fingerprint}.json")


def split_key(run_id: str) -> str:
    return join_key(run_prefix(run_id), "split.csv")


def model_key(run_id: str, name: str = "model.keras") -> str:
    """The run's trained model (``model.keras``) and what lies beside it (``plan.json``,
    ``training_curves.png``)."""
    return join_key(run_prefix(run_id), "model", name)


def evaluation_key(run_id: str, name: str) -> str:
    """``evaluation/<set>.json`` (metrics), ``<set>-overlays.png``, ``<set>-model.json``,
    ``trained-on.csv``."""
    return join_key(run_prefix(run_id), "evaluation", name)
