"""Train: patient-level split (checked by GX), then the U-Net with visible progress."""

from __future__ import annotations

import json
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from pydantic import BaseModel

from mammoseg import catalog
from mammoseg.params import RetrainParams
from mammoseg.settings import Settings, get_settings
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

    def publish_curves(self, run: catalog.RunCatalog, settings: Settings) -> str | None:
        """Write ``runs/<id>/model/training_curves.png``; an image artifact when a browser can
        open it. Returns its URI (None: no epoch ran)."""
        from prefect.artifacts import create_image_artifact

        from mammoseg.links import browser_url
        from mammoseg.training.curves import curves_png

        if not self.rows:
            return None
        uri = run.write_curves(curves_png(self.rows))
        url = browser_url(uri, settings)
        if url:
            create_image_artifact(image_url=url, key="training-curves",
                                  description=f"loss and Dice by epoch (blue: training, orange: validation), run {self.run_id}")
        return uri


@task(name="combine-manifests", **IO_RETRIES)
def combine_manifests(manifests: dict[str, str], store_url: str, run_id: str) -> str:
    """The training sets' manifests (dataset name → manifest URI) as one table with a
    ``dataset`` column, written as the run's ``preprocessed.csv``; its URI."""
    from mammoseg.training.split import combine_manifests as combine

    settings = get_settings()
    tables = {dataset: catalog.read_manifest(uri, settings) for dataset, uri in manifests.items()}
    return catalog.RunCatalog.open(store_url, run_id, settings).write_manifest(combine(tables))


@task(name="split-by-patient", **IO_RETRIES)
def split_by_patient(manifest_uri: str, store_url: str, run_id: str, params: RetrainParams) -> SplitOutcome:
    """train/val/test by patient, stratified (each dataset of a combined manifest split on its
    own, so every dataset is in every split); the GX splits suite must pass before training."""
    from mammoseg.training.split import split_counts, split_table
    from mammoseg.validation import validate_frame

    table = split_table(catalog.read_manifest(manifest_uri), val_fraction=params.val_fraction,
                        test_fraction=params.test_fraction, seed=params.seed)
    report = validate_frame(table[["patient_id", "split"]], "splits", run_name=run_id)
    if not report.success:
        raise RuntimeError("patient split failed the GX splits suite:\n" + report.summary_text())
    uri = catalog.RunCatalog.open(store_url, run_id).write_split(table)
    counts, patients = split_counts(table)
    return SplitOutcome(split_uri=uri, counts=counts, patients=patients)


@task(name="train-unet")
def train_unet(manifest_uri: str, split_uri: str, store_url: str, run_id: str, params: RetrainParams) -> TrainOutcome:
    """Fit the U-Net on the train split (:func:`mammoseg.training.recipe.train_model`: checkpoint
    on validation Dice, resume if interrupted, threshold chosen on validation) and write it with
    its plan. Progress: a Prefect progress artifact, an epoch table and one log line per epoch."""
    from mammoseg.training.recipe import train_model

    settings, logger = get_settings(), get_run_logger()
    run = catalog.RunCatalog.open(store_url, run_id, settings)
    manifest = catalog.read_manifest(manifest_uri).merge(catalog.read_split(split_uri)[["case_id", "split"]], on="case_id")
    progress = EpochProgress(run_id, params, logger)
    trained = train_model(run.store, manifest, params, settings.work_dir / "runs" / run_id / "train", progress.on_epoch_end,
                          settings)
    progress.finish(trained.best_val_dice)
    logger.info(
        "best epoch %s (val Dice %.3f); chosen on %s: threshold %.2f, mask keeps %s%s",
        "/".join(str(r.best_epoch) for r in trained.results), trained.best_val_dice,
        f"out-of-fold predictions of {params.folds} folds" if params.folds > 1 else "validation", trained.threshold,
        "every component" if trained.plan.keep_components is None else f"the {trained.plan.keep_components} best component(s)",
        "" if trained.plan.min_score is None else f" scoring >= {trained.plan.min_score:g}",
    )
    progress.table.publish_curves(run, settings)
    model_uri, plan_uri = run.write_model(trained.model_path, trained.plan)
    first = trained.results[0]
    return TrainOutcome(
        run_id=run_id, model_uri=model_uri, plan_uri=plan_uri, history=trained.history,
        epochs_run=sum(r.epochs_run for r in trained.results), best_epoch=first.best_epoch,
        best_val_dice=trained.best_val_dice, resumed_from_epoch=first.resumed_from_epoch, threshold=trained.threshold,
        model_config_=json.loads(json.dumps(trained.model_config.to_dict())),
        train_config=json.loads(json.dumps(trained.train_config.to_dict())),
    )


class EpochProgress:
    """Training progress as the Prefect UI and the terminal show it: the ``training-progress``
    artifact, the ``training-epochs`` table, a progress bar and one log line per epoch."""

    def __init__(self, run_id: str, params: RetrainParams, logger: Any) -> None:
        self.params, self.logger, self.total = params, logger, params.epochs * params.folds
        self.progress = create_progress_artifact(0.0, key="training-progress", description=f"training of run {run_id}: starting")
        self.table = EpochTable(run_id, self.total)

    def on_epoch_end(self, fold: int, epoch: int, logs: dict) -> None:
        p, nan = self.params, float("nan")
        done = fold * p.epochs + epoch
        self.table.add(fold if p.folds > 1 else None, epoch, logs)
        _progress_bar(done, self.total, logs.get("val_dice", nan))
        self.logger.info(
            "%sepoch %d/%d loss=%.4f dice=%.3f val_loss=%.4f val_dice=%.3f lr=%.2g",
            f"fold {fold + 1}/{p.folds} " if p.folds > 1 else "", epoch, p.epochs, logs.get("loss", nan),
            logs.get("dice", nan), logs.get("val_loss", nan), logs.get("val_dice", nan), logs.get("learning_rate", nan),
        )
        update_progress_artifact(self.progress, 100.0 * done / self.total, description=(
            f"epoch {done}/{self.total}: loss {logs.get('loss', nan):.4f}, validation Dice {logs.get('val_dice', nan):.3f}"))

    def finish(self, best_val_dice: float) -> None:
        update_progress_artifact(self.progress, 100.0, description=f"done: {self.table.epochs} epochs, best validation Dice "
                                 f"{best_val_dice:.3f}")
        _progress_bar(self.total, self.total, best_val_dice)
