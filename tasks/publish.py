"""Publish: a versioned model in the store, promoted only if it beats the champion."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from pydantic import BaseModel

from mammoseg.settings import get_settings
from mammoseg.storage import open_store, open_uri
from tasks.evaluate import EvalOutcome
from tasks.retry import IO_RETRIES
from tasks.train import SplitOutcome, TrainOutcome, read_manifest


class PublishOutcome(BaseModel):
    version: str
    model_uri: str
    metrics_uri: str
    model_card_uri: str
    promoted: bool
    gate_reason: str
    current_version: str | None


@task(name="publish-model", **IO_RETRIES)
def publish_model(
    *,
    store_url: str,
    run_id: str,
    trained: TrainOutcome,
    split: SplitOutcome,
    train_manifest_uri: str,
    heldout_manifest_uri: str,
    heldout: EvalOutcome,
    internal: EvalOutcome | None,
    datasets: dict[str, str],
    promote_metric: str,
) -> PublishOutcome:
    from mammoseg.publish import (
        DataSplitSummary,
        eval_set_fingerprint,
        make_version_id,
        model_card,
        promote_if_better,
        publish_version,
        read_pointer,
    )

    settings = get_settings()
    store = open_store(store_url, settings)
    train_manifest = read_manifest(train_manifest_uri)
    heldout_manifest = read_manifest(heldout_manifest_uri)
    split_table = read_manifest(split.split_uri)
    metrics: dict[str, Any] = dict(heldout.metrics)
    metrics["eval_set"] = eval_set_fingerprint(heldout_manifest.to_dict("records"))
    metrics["heldout_dataset"] = datasets["heldout"]
    metrics["run_id"] = run_id
    metrics["validation"] = {"best_val_dice": trained.best_val_dice, "best_epoch": trained.best_epoch}
    if internal is not None:
        metrics["internal_test"] = {
            k: internal.metrics.get(k) for k in ("dice_mean", "iou_mean", "dice_pooled", "n_cases", "n_patients", "ci95")
        }
    merged = train_manifest.merge(split_table[["case_id", "split"]], on="case_id")
    data = [
        DataSplitSummary(datasets["train"], s, int((merged["split"] == s).sum()),
                         int(merged.loc[merged["split"] == s, "patient_id"].nunique()),
                         int(merged.loc[merged["split"] == s, "n_lesions"].sum()))
        for s in ("train", "val", "test")
    ] + [DataSplitSummary(datasets["heldout"], "held-out test", len(heldout_manifest),
                          int(heldout_manifest["patient_id"].nunique()), int(heldout_manifest["n_lesions"].sum()))]
    data_manifest = [
        {"key": r.npz_key, "etag": r.npz_etag, "case_id": r.case_id, "split": r.split}
        for r in merged.itertuples(index=False)
        if r.split in ("train", "val")
    ]
    training_config = {"model": trained.model_config_, "training": trained.train_config, "threshold": trained.threshold,
                       "history": trained.history, "run_id": run_id, "datasets": datasets}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        mstore, mkey = open_uri(trained.model_uri, settings)
        path.write_bytes(mstore.read_bytes(mkey))
        version = make_version_id(path)
        card = model_card(version=version, data=data, metrics=metrics, training_config=training_config,
                          leakage_findings=heldout.leakage_findings)
        published = publish_version(store, model_file=path, training_config=training_config,
                                    data_manifest=data_manifest, metrics=metrics, model_card_md=card, version=version)
    decision = promote_if_better(store, published.version, metric=promote_metric)
    pointer = read_pointer(store)
    logger = get_run_logger()
    logger.info("published model version %s: %s", published.version, decision.reason)
    create_link_artifact(key="published-model", link=published.model_uri, link_text=f"model {published.version}",
                         description="the .keras file of this run's model version")
    create_markdown_artifact(key="model-card", markdown=card, description=f"model card {published.version}")
    return PublishOutcome(
        version=published.version,
        model_uri=published.model_uri,
        metrics_uri=published.metrics_uri,
        model_card_uri=published.model_card_uri,
        promoted=decision.promoted,
        gate_reason=decision.reason,
        current_version=pointer.version if pointer else None,
    )
