"""Train: patient-level split (checked by GX), then the U-Net with visible progress."""

from __future__ import annotations

import io
import json
from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from pydantic import BaseModel

from mammoseg.params import RetrainParams
from mammoseg.settings import get_settings
from mammoseg.storage import join_key, open_store, open_uri
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
    from dataclasses import fields

    from mammoseg.evaluation import choose_threshold
    from mammoseg.inference import Predictor, load_model
    from mammoseg.model.unet import UNetConfig
    from mammoseg.plan import PLAN_FILE, ModelPlan
    from mammoseg.preprocess import PreprocessParams
    from mammoseg.training.augment import AugmentConfig
    from mammoseg.training.dataset import load_samples, make_dataset
    from mammoseg.training.train import TrainConfig, train

    settings = get_settings()
    logger = get_run_logger()
    store = open_store(store_url, settings)
    manifest = read_manifest(manifest_uri).merge(read_manifest(split_uri)[["case_id", "split"]], on="case_id")
    train_rows, val_rows = manifest[manifest["split"] == "train"], manifest[manifest["split"] == "val"]
    plan = ModelPlan(
        preprocess=PreprocessParams.from_settings(settings, size=params.size),
        patch_size=params.patch_size, tta_mirror=params.tta_mirror,
    )
    digests = set(manifest["params_digest"])
    if digests != {plan.preprocess.digest()}:
        raise ValueError(
            f"the training arrays were preprocessed with parameters {sorted(digests)}, not the plan's "
            f"({plan.preprocess.digest()}): preprocess them with this run's settings"
        )
    if params.patch_size is not None and params.patch_size != params.size:
        raise NotImplementedError("patch training is not wired into train-unet yet: leave patch_size unset")
    optional = {"input_norm": params.input_norm} if "input_norm" in {f.name for f in fields(UNetConfig)} else {}
    if params.input_norm != "none" and not optional:
        raise ValueError(f"input_norm={params.input_norm!r} needs a UNetConfig with an input_norm field")
    model_config = UNetConfig(
        input_size=plan.network_size, base_filters=params.base_filters, depth=params.depth,
        dropout=params.dropout, batch_norm=params.batch_norm, **optional,
    )
    train_config = TrainConfig(
        epochs=params.epochs, batch_size=params.batch_size, learning_rate=params.learning_rate,
        loss=params.loss, focal_alpha=params.focal_alpha, lesion_oversample=params.lesion_oversample, seed=params.seed,
        early_stopping_patience=params.early_stopping_patience, lr_patience=params.lr_patience,
        augment=AugmentConfig(
            rotate_deg=params.aug_rotate_deg, shift=params.aug_shift, zoom=params.aug_zoom,
            brightness=params.aug_intensity, contrast=params.aug_intensity, seed=params.seed,
        ) if params.augment else None,
    )
    train_ds = make_dataset(
        store, train_rows, batch_size=params.batch_size, training=True, augment=train_config.augment,
        shuffle_seed=params.seed, lesion_oversample=params.lesion_oversample,
    )
    val_ds = make_dataset(store, val_rows, batch_size=params.batch_size, training=False)

    progress = create_progress_artifact(0.0, key="training-progress", description=f"epochs of run {run_id}")

    def on_epoch_end(epoch: int, logs: dict) -> None:
        _progress_bar(epoch, params.epochs, logs.get("val_dice", float("nan")))
        logger.info(
            "epoch %d/%d loss=%.4f dice=%.3f val_loss=%.4f val_dice=%.3f lr=%.2g",
            epoch, params.epochs, logs.get("loss", float("nan")), logs.get("dice", float("nan")),
            logs.get("val_loss", float("nan")), logs.get("val_dice", float("nan")),
            logs.get("learning_rate", float("nan")),
        )
        update_progress_artifact(progress, 100.0 * epoch / params.epochs)

    workdir = settings.work_dir / "runs" / run_id / "train"
    result = train(model_config, train_config, train_ds, val_ds, workdir, on_epoch_end=on_epoch_end)
    update_progress_artifact(progress, 100.0)
    _progress_bar(params.epochs, params.epochs, result.best_val_dice)

    model = load_model(result.best_model_path)
    val_images, val_masks = load_samples(store, val_rows)
    probs = Predictor(model, plan).predict_preprocessed(val_images)
    threshold = float(choose_threshold(list(probs), list(val_masks.astype(bool))))
    plan = plan.replace(threshold=threshold)
    logger.info("best epoch %d (val Dice %.3f); threshold chosen on validation: %.2f", result.best_epoch, result.best_val_dice, threshold)
    model_uri = store.write_file(join_key("runs", run_id, "model", "model.keras"), result.best_model_path).uri
    plan_uri = store.write_bytes(join_key("runs", run_id, "model", PLAN_FILE), plan.to_json(), "application/json").uri
    return TrainOutcome(
        run_id=run_id,
        model_uri=model_uri,
        plan_uri=plan_uri,
        history=result.history,
        epochs_run=result.epochs_run,
        best_epoch=result.best_epoch,
        best_val_dice=float(result.best_val_dice),
        resumed_from_epoch=result.resumed_from_epoch,
        threshold=threshold,
        model_config_=json.loads(json.dumps(model_config.to_dict())),
        train_config=json.loads(json.dumps(train_config.to_dict())),
    )
