"""Train: patient-level split (checked by GX), then the U-Net with visible progress."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from pydantic import BaseModel

from mammoseg.params import RetrainParams
from mammoseg.settings import Settings, get_settings
from mammoseg.storage import ObjectStore, join_key, open_store, open_uri
from tasks.retry import IO_RETRIES


class SplitOutcome(BaseModel):
    split_uri: str
    counts: dict[str, int]  # images per split
    patients: dict[str, int]


class TrainOutcome(BaseModel):
    run_id: str
    model_uri: str
    plan_uri: str  # plan.json beside model.keras: preprocessing, inference options, threshold
    history: list[dict[str, float]]
    epochs_run: int
    best_epoch: int
    best_val_dice: float
    resumed_from_epoch: int
    threshold: float
    model_config_: dict[str, Any]
    train_config: dict[str, Any]


def _progress_bar(epoch: int, epochs: int, val_dice: float, width: int = 30) -> None:
    """An epoch progress bar on the terminal (stderr, so ``--json`` output stays clean)."""
    import sys

    if not sys.stderr.isatty():
        return
    done = int(width * epoch / epochs)
    end = "\n" if epoch >= epochs else ""
    sys.stderr.write(f"\r  training [{'#' * done}{'.' * (width - done)}] epoch {epoch}/{epochs}  val Dice {val_dice:.3f}{end}")
    sys.stderr.flush()


#: Columns read as text whatever they look like (a hex digest can be all digits).
_TEXT_COLUMNS = {c: str for c in ("case_id", "patient_id", "dataset", "params_digest", "npz_etag", "input_hash")}


def read_manifest(uri: str) -> pd.DataFrame:
    store, key = open_uri(uri, get_settings())
    return pd.read_csv(io.BytesIO(store.read_bytes(key)), dtype=_TEXT_COLUMNS)


class EpochTable:
    """The ``training-epochs`` artifact: a per-epoch table, updated in place after every epoch
    (one artifact, not one version per epoch), and at the end the ``training-curves`` image."""

    def __init__(self, run_id: str, total_epochs: int) -> None:
        from mammoseg.training.curves import progress_markdown

        self.run_id, self.total, self.rows = run_id, total_epochs, []
        self.artifact_id = create_markdown_artifact(
            key="training-epochs", markdown=progress_markdown([], total_epochs),
            description=f"loss and validation Dice per epoch, run {run_id}",
        )

    @property
    def epochs(self) -> int:
        return len(self.rows)

    def add(self, fold: int | None, epoch: int, logs: dict) -> None:
        from prefect import get_client
        from prefect.client.schemas.actions import ArtifactUpdate

        from mammoseg.training.curves import progress_markdown

        row = {k: float(v) for k, v in logs.items() if isinstance(v, int | float)} | {"epoch": float(epoch)}
        self.rows.append(row if fold is None else row | {"fold": float(fold)})
        with get_client(sync_client=True) as client:
            client.update_artifact(self.artifact_id, ArtifactUpdate(data=progress_markdown(self.rows, self.total)))

    def publish_curves(self, store: ObjectStore, settings: Settings) -> str | None:
        """Write ``runs/<id>/model/training_curves.png``; an image artifact when a browser can
        open it. Returns its URI (None: no epoch ran)."""
        from prefect.artifacts import create_image_artifact

        from mammoseg.links import browser_url
        from mammoseg.training.curves import curves_png

        if not self.rows:
            return None
        uri = store.write_bytes(join_key("runs", self.run_id, "model", "training_curves.png"),
                                curves_png(self.rows), "image/png").uri
        url = browser_url(uri, settings)
        if url:
            create_image_artifact(image_url=url, key="training-curves",
                                  description=f"loss and Dice by epoch (blue: training, orange: validation), run {self.run_id}")
        return uri


@task(name="combine-manifests", **IO_RETRIES)
def combine_manifests(manifests: dict[str, str], store_url: str, run_id: str) -> str:
    """The training sets' manifests (dataset name → manifest URI) as one table with a
    ``dataset`` column, written as the run's ``preprocessed.csv``; its URI."""
    from mammoseg.layout import manifest_key

    parts = []
    for dataset, uri in manifests.items():
        part = read_manifest(uri)
        part.insert(0, "dataset", dataset)
        parts.append(part)
    table = pd.concat(parts, ignore_index=True)
    twice = table["case_id"][table["case_id"].duplicated()]
    if len(twice):
        raise ValueError(f"{twice.nunique()} case id(s) occur in more than one training set: {sorted(twice)[:3]}")
    store = open_store(store_url, get_settings())
    return store.write_bytes(manifest_key(run_id), table.to_csv(index=False).encode(), "text/csv").uri


@task(name="split-by-patient", **IO_RETRIES)
def split_by_patient(manifest_uri: str, store_url: str, run_id: str, params: RetrainParams) -> SplitOutcome:
    """train/val/test by patient, stratified (each dataset of a combined manifest split on its
    own, so every dataset is in every split); the GX splits suite must pass before training."""
    from mammoseg.training.split import patient_split
    from mammoseg.validation import validate_frame

    manifest = read_manifest(manifest_uri)
    if "dataset" not in manifest.columns:  # a single data-pipeline manifest
        manifest.insert(0, "dataset", manifest["source_dataset"])
    split = patient_split(
        manifest, val_fraction=params.val_fraction, test_fraction=params.test_fraction, seed=params.seed,
        group_col="dataset",
    )
    table = pd.DataFrame({
        "case_id": manifest["case_id"], "patient_id": manifest["patient_id"], "dataset": manifest["dataset"], "split": split,
    })
    report = validate_frame(table[["patient_id", "split"]], "splits", run_name=run_id)
    if not report.success:
        raise RuntimeError("patient split failed the GX splits suite:\n" + report.summary_text())
    store = open_store(store_url, get_settings())
    uri = store.write_bytes(join_key("runs", run_id, "split.csv"), table.to_csv(index=False).encode(), "text/csv").uri
    return SplitOutcome(
        split_uri=uri,
        counts={k: int(v) for k, v in table["split"].value_counts().items()},
        patients={k: int(v) for k, v in table.groupby("split")["patient_id"].nunique().items()},
    )


@task(name="train-unet")
def train_unet(manifest_uri: str, split_uri: str, store_url: str, run_id: str, params: RetrainParams) -> TrainOutcome:
    """Fit the U-Net on the train split, checkpoint on validation Dice, resume if interrupted.

    Progress: a Prefect progress artifact and one log line per epoch. The model's inference plan
    (``plan.json`` beside ``model.keras``: the preprocessing parameters of the training arrays,
    sliding window, mirroring) is written with it; its decision threshold is chosen on the
    validation split (never on a test set), on predictions made with that plan.
    """
    from mammoseg.evaluation import choose_threshold
    from mammoseg.inference import Predictor
    from mammoseg.plan import PLAN_FILE, ModelPlan
    from mammoseg.preprocess import PreprocessParams
    from mammoseg.training.dataset import load_samples
    from mammoseg.training.recipe import breast_masks, configs, fit_folds, fit_one

    settings = get_settings()
    logger = get_run_logger()
    store = open_store(store_url, settings)
    manifest = read_manifest(manifest_uri).merge(read_manifest(split_uri)[["case_id", "split"]], on="case_id")
    train_rows, val_rows = manifest[manifest["split"] == "train"], manifest[manifest["split"] == "val"]
    plan = ModelPlan(
        preprocess=PreprocessParams.from_settings(settings, size=params.size),
        patch_size=params.patch_size, tta_mirror=params.tta_mirror, suppress_pectoral=params.suppress_pectoral,
    )
    digests = set(manifest["params_digest"])
    if digests != {plan.preprocess.digest()}:
        raise ValueError(
            f"the training arrays were preprocessed with parameters {sorted(digests)}, not the plan's "
            f"({plan.preprocess.digest()}): preprocess them with this run's settings"
        )
    model_config, train_config = configs(params, plan.network_size, settings)
    total_epochs = params.epochs * params.folds
    progress = create_progress_artifact(0.0, key="training-progress", description=f"training of run {run_id}: starting")
    epochs_md = EpochTable(run_id, total_epochs)

    def on_epoch_end(fold: int, epoch: int, logs: dict) -> None:
        done = fold * params.epochs + epoch
        epochs_md.add(fold if params.folds > 1 else None, epoch, logs)
        _progress_bar(done, total_epochs, logs.get("val_dice", float("nan")))
        logger.info(
            "%sepoch %d/%d loss=%.4f dice=%.3f val_loss=%.4f val_dice=%.3f lr=%.2g",
            f"fold {fold + 1}/{params.folds} " if params.folds > 1 else "",
            epoch, params.epochs, logs.get("loss", float("nan")), logs.get("dice", float("nan")),
            logs.get("val_loss", float("nan")), logs.get("val_dice", float("nan")),
            logs.get("learning_rate", float("nan")),
        )
        update_progress_artifact(progress, 100.0 * done / total_epochs, description=(
            f"epoch {done}/{total_epochs}: loss {logs.get('loss', float('nan')):.4f}, "
            f"validation Dice {logs.get('val_dice', float('nan')):.3f}"))

    workdir = settings.work_dir / "runs" / run_id / "train"
    if params.folds > 1:
        # nnU-Net style: k fold models over train + val, each validated on its own fold; the
        # threshold is chosen on every pooled image's out-of-fold prediction.
        pool = manifest[manifest["split"].isin(["train", "val"])]
        fitted = fit_folds(store, pool, params, plan, workdir, on_epoch_end, settings)
        model, results = fitted.model, fitted.results
        _, masks = load_samples(store, pool)
        probs = np.stack([fitted.oof[c] for c in pool["case_id"]])
        model_path = workdir / "ensemble.keras"
        model.save(model_path)
        history = [{**h, "fold": float(k)} for k, r in enumerate(results) for h in r.history]
    else:
        model, result = fit_one(store, train_rows, val_rows, params, plan, workdir,
                                lambda e, logs: on_epoch_end(0, e, logs), settings)
        results, model_path, history = [result], result.best_model_path, result.history
        images, masks = load_samples(store, val_rows)
        probs = Predictor(model, plan, settings.inference_batch_size).predict_preprocessed(
            images, breast_masks=breast_masks(store, val_rows))
    update_progress_artifact(progress, 100.0, description=f"done: {epochs_md.epochs} epochs, best validation Dice "
                             f"{np.mean([r.best_val_dice for r in results]):.3f}")
    best_val_dice = float(np.mean([r.best_val_dice for r in results]))
    _progress_bar(total_epochs, total_epochs, best_val_dice)
    threshold = float(choose_threshold(list(probs), list(masks.astype(bool))))
    plan = plan.replace(threshold=threshold)
    logger.info(
        "best epoch %s (val Dice %.3f); threshold chosen on %s: %.2f",
        "/".join(str(r.best_epoch) for r in results), best_val_dice,
        f"out-of-fold predictions of {params.folds} folds" if params.folds > 1 else "validation", threshold,
    )
    epochs_md.publish_curves(store, settings)
    model_uri = store.write_file(join_key("runs", run_id, "model", "model.keras"), model_path).uri
    plan_uri = store.write_bytes(join_key("runs", run_id, "model", PLAN_FILE), plan.to_json(), "application/json").uri
    return TrainOutcome(
        run_id=run_id,
        model_uri=model_uri,
        plan_uri=plan_uri,
        history=history,
        epochs_run=sum(r.epochs_run for r in results),
        best_epoch=results[0].best_epoch,
        best_val_dice=best_val_dice,
        resumed_from_epoch=results[0].resumed_from_epoch,
        threshold=threshold,
        model_config_=json.loads(json.dumps(model_config.to_dict())),
        train_config=json.loads(json.dumps(train_config.to_dict())),
    )
