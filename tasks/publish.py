"""Publish: a versioned model in the store, promoted only if it beats the champion."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from pydantic import BaseModel

from mammoseg import catalog
from mammoseg.publish import EvaluatedSet, PublishedVersion, TrainingRecord
from mammoseg.runsummary import (
    ArtifactSpec,
    DatasetRun,
    PublishedLine,
    ScoredLine,
    retrain_artifacts,
)
from mammoseg.settings import Settings, get_settings
from tasks.evaluate import ScoredSet
from tasks.retry import IO_RETRIES
from tasks.train import SplitOutcome, TrainOutcome


class PublishOutcome(BaseModel):
    version: str
    model_uri: str
    plan_uri: str | None
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
    heldout_manifest_uris: dict[str, str],
    scored: list[ScoredSet],
    primary: str,
    promote_metric: str,
    sources: dict[str, str] | None = None,
) -> PublishOutcome:
    """Publish the run's model with its plan, metrics per evaluated set and model card; promote
    it if it beats the champion on the ``primary`` set (``primary_set`` in ``metrics.json``).

    ``train_manifest_uri``: the combined training manifest (``dataset`` column);
    ``heldout_manifest_uris``: held-out dataset → its manifest (for the model card's counts);
    ``sources``: dataset → source root (the card warns when one is the project's synthetic data;
    the roots themselves are not printed).
    """
    from mammoseg.publish import RunOutputs, publish_and_promote

    settings = get_settings()
    run = catalog.RunCatalog.open(store_url, run_id, settings)
    outputs = RunOutputs(model_uri=trained.model_uri, plan_uri=trained.plan_uri, split_uri=split.split_uri,
                         train_manifest_uri=train_manifest_uri, heldout_manifest_uris=heldout_manifest_uris)
    done = publish_and_promote(
        run.store, run_id=run_id, outputs=outputs, evaluations=_evaluated_sets(scored), primary=primary,
        training=_training_record(trained), promote_metric=promote_metric, sources=sources, settings=settings,
    )
    published = done.published
    get_run_logger().info("published model version %s (gate on %s): %s", published.version, primary, done.gate_reason)
    _publication_artifacts(published, done.card, settings)
    return PublishOutcome(
        version=published.version, model_uri=published.model_uri, plan_uri=published.plan_uri,
        metrics_uri=published.metrics_uri, model_card_uri=published.model_card_uri, promoted=done.promoted,
        gate_reason=done.gate_reason, current_version=done.current_version,
    )


def _evaluated_sets(scored: list[ScoredSet]) -> list[EvaluatedSet]:
    return [EvaluatedSet(name=s.name, dataset=s.dataset, kind=s.kind, metrics=s.outcome.metrics,
                         leakage_findings=s.outcome.leakage_findings) for s in scored]


def _training_record(trained: TrainOutcome) -> TrainingRecord:
    return TrainingRecord(model=trained.model_config_, training=trained.train_config, threshold=trained.threshold,
                          history=trained.history, best_val_dice=trained.best_val_dice, best_epoch=trained.best_epoch)


def _publication_artifacts(published: PublishedVersion, card: str, settings: Settings) -> None:
    """The published model's link (when a browser can open it) and its model card."""
    from mammoseg.links import browser_url

    model_url = browser_url(published.model_uri, settings)
    if model_url:  # a link artifact only when a browser can open it (a file:// link opens nothing)
        create_link_artifact(key="published-model", link=model_url, link_text=f"model {published.version} (.keras)",
                             description="the .keras file of this run's model version")
    create_markdown_artifact(key="model-card", markdown=card, description=f"model card {published.version}")


@task(name="summarize-run", **IO_RETRIES)
def summarize_run(
    *, run_id: str, datasets: list[DatasetRun], scored: list[ScoredSet], published: PublishOutcome, primary: str
) -> list[ArtifactSpec]:
    """What the top-level run shows about itself (:func:`create_artifacts` makes them in the
    flow): :func:`mammoseg.runsummary.retrain_artifacts` over the datasets' run reports."""
    settings = get_settings()
    return retrain_artifacts(
        run_id=run_id, primary=primary, settings=settings,
        datasets=[(d, catalog.read_report(d.report_uri, settings)) for d in datasets],
        scored=[ScoredLine(name=s.name, metrics=s.outcome.metrics, overlays_uri=s.outcome.overlays_uri) for s in scored],
        published=PublishedLine(version=published.version, promoted=published.promoted, gate_reason=published.gate_reason,
                                model_card_uri=published.model_card_uri, model_uri=published.model_uri,
                                metrics_uri=published.metrics_uri),
    )


def create_artifacts(specs: list[ArtifactSpec]) -> None:
    """Create ``specs`` in the current run (called in a flow body: flow-run artifacts)."""
    from prefect.artifacts import create_image_artifact

    for a in specs:
        if a.kind == "image":
            create_image_artifact(image_url=a.body, key=a.key, description=a.description)
        else:
            create_markdown_artifact(key=a.key, markdown=a.body, description=a.description)
