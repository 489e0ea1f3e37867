"""Which model to score, with which plan, and what it was trained on (for the leakage audit)."""

from __future__ import annotations

import json

from prefect import get_run_logger, task
from pydantic import BaseModel

from mammoseg.catalog import RunCatalog
from mammoseg.plan import ModelPlan
from mammoseg.publish import trained_on_table
from mammoseg.settings import get_settings
from mammoseg.storage import ObjectNotFound, ObjectStore, StoreError, open_store, open_uri
from tasks.retry import IO_RETRIES


class NoChampion(LookupError):
    """No model was given and the store has no champion (``models/CURRENT``)."""


class ModelRef(BaseModel):
    """A model ready to be scored: where it is, its published version (if any), its plan."""

    model_uri: str
    version: str | None
    plan: ModelPlan
    champion: bool  # chosen through models/CURRENT


class TrainingData(BaseModel):
    """What the leakage audit compares the test set with.

    ``train_manifest_uri`` (case_id, patient_id, npz_key, npz_etag) and ``split_uri`` (case_id,
    split) are None when the model's training data is not recorded anywhere we can read.
    """

    train_manifest_uri: str | None
    split_uri: str | None
    note: str


@task(name="resolve-model", **IO_RETRIES)
def resolve_model(store_url: str, model_uri: str | None = None) -> ModelRef:
    """The given model, or the champion of ``store_url``; loaded once here with its plan, so a
    missing or corrupt model or an unusable plan fails before any data is read.

    The data pipeline then preprocesses with the plan's parameters, never the environment's.
    Raises :class:`NoChampion`, :class:`~mammoseg.publish.PublishError` (a champion pointer to a
    bad version), :class:`~mammoseg.plan.PlanError` (a plan this pipeline cannot honour), or the
    store's errors.
    """
    from mammoseg.inference import load_predictor
    from mammoseg.prediction import model_version
    from mammoseg.publish import current_model

    settings = get_settings()
    champion = model_uri is None
    if model_uri is None:
        published = current_model(open_store(store_url, settings))
        if published is None:
            raise NoChampion(f"the store {store_url} has no champion model (models/CURRENT); pass a model URI")
        model_uri = published.model_uri
    plan = load_predictor(model_uri, settings).plan
    return ModelRef(model_uri=model_uri, version=model_version(model_uri), plan=plan, champion=champion)


def _json(store: ObjectStore, key: str) -> object | None:
    try:
        return json.loads(store.read_bytes(key))
    except (ObjectNotFound, ValueError):
        return None


def _key_in(store: ObjectStore, uri: str) -> str | None:
    try:
        return store.key_from_uri(uri)
    except StoreError:
        return None


@task(name="locate-training-data", **IO_RETRIES)
def locate_training_data(model_uri: str, store_url: str, run_id: str) -> TrainingData:
    """The training data of a model, as far as it is recorded, for the leakage audit.

    * a run's model (``runs/<r>/model/model.keras`` in this store): that run's manifest and split;
    * a published version: its ``data_manifest.json`` (train and validation images: case ids,
      NPZ keys and ETags), with patient ids from the training run's ``preprocessed.csv`` when
      the version lies in this store and that run is still there. The table is written to
      ``runs/<run_id>/evaluation/trained-on.csv`` and serves as manifest and split;
    * anything else: nothing to compare with (both URIs None).
    """
    settings = get_settings()
    store = open_store(store_url, settings)
    key = _key_in(store, model_uri)
    trained_in = RunCatalog.of_model_key(store, key, settings) if key else None
    if trained_in is not None and trained_in.exists(trained_in.manifest_key()) and trained_in.exists(trained_in.split_key()):
        return TrainingData(
            train_manifest_uri=trained_in.uri(trained_in.manifest_key()), split_uri=trained_in.uri(trained_in.split_key()),
            note=f"compared with the train and validation images of run {trained_in.run_id}",
        )
    folder, _ = open_uri(model_uri, settings)
    rows = _json(folder, "data_manifest.json")
    if not isinstance(rows, list) or not rows:
        note = "no leakage audit: the model's training data is not recorded (no data_manifest.json beside it)"
        get_run_logger().warning(note)
        return TrainingData(train_manifest_uri=None, split_uri=None, note=note)
    config = _json(folder, "training_config.json")
    run = config.get("run_id") if isinstance(config, dict) else None
    patients = None
    if key and run:
        try:
            patients = RunCatalog(store, str(run), settings).read_patients()
        except (ObjectNotFound, ValueError):  # CatalogError is a ValueError
            patients = None
    table = trained_on_table(rows, patients)
    uri = RunCatalog(store, run_id, settings).write_trained_on(table)
    who = "with patient ids" if patients is not None else "without patient ids (case and content checks only)"
    return TrainingData(
        train_manifest_uri=uri, split_uri=uri,
        note=f"compared with the {len(table)} train and validation images of the model's data_manifest.json, {who}",
    )


@task(name="record-evaluation", **IO_RETRIES)
def record_evaluation(
    store_url: str, run_id: str, name: str, model: ModelRef, training: TrainingData, metrics_uri: str
) -> str:
    """``runs/<run_id>/evaluation/<name>-model.json``: which model and plan were scored, and
    what the leakage audit compared with (the metrics file itself does not say)."""
    record = {
        "evaluation": name,
        "metrics_uri": metrics_uri,
        "model_uri": model.model_uri,
        "model_version": model.version,
        "champion": model.champion,
        "plan": model.plan.to_dict(),
        "leakage_audit_basis": training.note,
    }
    return RunCatalog.open(store_url, run_id).write_evaluation_record(name, record)
