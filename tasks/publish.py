"""Publish: a versioned model in the store, promoted only if it beats the champion."""

from __future__ import annotations

from typing import Literal

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from pydantic import BaseModel

from mammoseg import catalog
from mammoseg.settings import get_settings
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
    from mammoseg.links import browser_url
    from mammoseg.publish import (
        EvaluatedSet,
        combined_metrics,
        make_version_id,
        model_card,
        promote_version,
        publish_version,
        training_data,
    )

    settings = get_settings()
    run = catalog.RunCatalog.open(store_url, run_id, settings)
    evaluations = [
        EvaluatedSet(name=s.name, dataset=s.dataset, kind=s.kind, metrics=s.outcome.metrics,
                     leakage_findings=s.outcome.leakage_findings)
        for s in scored
    ]
    metrics = combined_metrics(evaluations, primary, run_id=run_id,
                               validation={"best_val_dice": trained.best_val_dice, "best_epoch": trained.best_epoch})
    data = training_data(
        catalog.read_manifest(train_manifest_uri, settings), catalog.read_split(split.split_uri, settings),
        {dataset: catalog.read_manifest(uri, settings) for dataset, uri in heldout_manifest_uris.items()},
    )
    training_config = {"model": trained.model_config_, "training": trained.train_config, "threshold": trained.threshold,
                       "history": trained.history, "run_id": run_id, "datasets": data.datasets, "primary_set": primary}
    plan = catalog.catalog_of(trained.plan_uri, settings)[0].read_plan()
    _, _, path = catalog.model_file(trained.model_uri, settings)
    # from the run id, not the clock: a retry of this task names (and, once complete, returns)
    # the same version instead of publishing a second one
    version = make_version_id(path, run_id=run_id)
    card = model_card(version=version, data=data.counts, metrics=metrics, training_config=training_config,
                      evaluations=evaluations, primary=primary, sources=sources)
    published = publish_version(run.store, model_file=path, training_config=training_config, plan=plan,
                                data_manifest=data.data_manifest, metrics=metrics, model_card_md=card, version=version)
    promoted, gate_reason, current = promote_version(run.store, published.version, metric=promote_metric)
    get_run_logger().info("published model version %s (gate on %s): %s", published.version, primary, gate_reason)

    model_url = browser_url(published.model_uri, settings)
    if model_url:  # a link artifact only when a browser can open it (a file:// link opens nothing)
        create_link_artifact(key="published-model", link=model_url, link_text=f"model {published.version} (.keras)",
                             description="the .keras file of this run's model version")
    create_markdown_artifact(key="model-card", markdown=card, description=f"model card {published.version}")
    return PublishOutcome(
        version=published.version,
        model_uri=published.model_uri,
        plan_uri=published.plan_uri,
        metrics_uri=published.metrics_uri,
        model_card_uri=published.model_card_uri,
        promoted=promoted,
        gate_reason=gate_reason,
        current_version=current,
    )


class DatasetRun(BaseModel):
    """One data-pipeline run of a retrain, for the retrain's own summary artifacts."""

    role: Literal["train", "heldout"]
    dataset: str
    report_uri: str
    contact_sheet_uri: str | None = None
    data_docs_uri: str | None = None


class ArtifactSpec(BaseModel):
    """One artifact the flow itself creates (so the UI lists it under the flow run)."""

    kind: Literal["markdown", "image"]
    key: str
    body: str  # Markdown, or the image's URL
    description: str


@task(name="summarize-run", **IO_RETRIES)
def summarize_run(
    *, run_id: str, datasets: list[DatasetRun], scored: list[ScoredSet], published: PublishOutcome, primary: str
) -> list[ArtifactSpec]:
    """What the top-level run shows about itself (:func:`create_artifacts` makes them in the
    flow): ``retrain-summary`` (the published version, every evaluated set, every dataset, with
    links a browser opens), each dataset's run report (``retrain-report-<role>-<dataset>``) and
    contact sheet (``contact-sheet-<role>-<dataset>``)."""
    from mammoseg.links import artifact_key, browser_url, md_link
    from mammoseg.publish import _ci, _fmt

    settings = get_settings()

    def link(text: str, uri: str | None) -> str:
        url = browser_url(uri, settings)
        return f"[{text}]({url})" if url else (f"`{uri}`" if uri else "—")

    verdict = "promoted to champion" if published.promoted else "not promoted"
    lines = [
        f"# Retrain `{run_id}`",
        "",
        f"**Model version `{published.version}`**: {verdict} ({published.gate_reason}).",
        "",
        f"- {md_link('Model card', published.model_card_uri, settings)}",
        f"- {md_link('Model file (.keras)', published.model_uri, settings)}",
        f"- {md_link('Metrics (JSON)', published.metrics_uri, settings)}",
        "",
        "## Evaluated sets",
        "",
        "| set | images (patients) | Dice, mean per image [95% CI] | Dice, pooled | overlays |",
        "|---|---:|---|---:|---|",
    ]
    for s in scored:
        m = s.outcome.metrics
        mark = " (primary)" if s.name == primary else ""
        lines.append(
            f"| {s.name}{mark} | {_fmt(m.get('n_cases'))} ({_fmt(m.get('n_patients'))}) | "
            f"{_fmt(m.get('dice_mean'))} [{_ci(m, 'dice_mean')}] | {_fmt(m.get('dice_pooled'))} | "
            f"{link('image', s.outcome.overlays_uri)} |"
        )
    lines += [
        "",
        ("*internal-test-*: the training dataset's own test patients (in-domain); *heldout-*: a dataset "
         "never trained on (cross-dataset)."),
        "",
        "## Data",
        "",
        "| dataset | role | cases found | preprocessed | quarantined | run report | Data Docs | contact sheet |",
        "|---|---|---:|---:|---:|---|---|---|",
    ]
    specs: list[ArtifactSpec] = []
    for d in datasets:
        report = catalog.read_report(d.report_uri, settings)
        bad = sum(1 for r in report.quarantined if r.stage != "skipped")
        role = "training" if d.role == "train" else "held-out"
        lines.append(
            f"| {d.dataset} | {role} | {report.cases_found} | {report.cases_preprocessed} | {bad} | "
            f"{link('JSON', d.report_uri)} | {link('open', d.data_docs_uri)} | {link('image', d.contact_sheet_uri)} |"
        )
        slug = artifact_key(f"{d.role}-{d.dataset}")
        specs.append(ArtifactSpec(kind="markdown", key=f"retrain-report-{slug}",
                                  body=report.markdown(link=lambda u: browser_url(u, settings)),
                                  description=f"run report of {d.dataset} ({role}), retrain {run_id}"))
        sheet = browser_url(d.contact_sheet_uri, settings)
        if sheet:
            specs.append(ArtifactSpec(kind="image", key=f"contact-sheet-{slug}", body=sheet,
                                      description=f"preprocessed images of {d.dataset} with their masks, retrain {run_id}"))
    summary = ArtifactSpec(kind="markdown", key="retrain-summary", body="\n".join(lines) + "\n",
                           description=f"retrain {run_id}: what it produced")
    return [summary, *specs]


def create_artifacts(specs: list[ArtifactSpec]) -> None:
    """Create ``specs`` in the current run (called in a flow body: flow-run artifacts)."""
    from prefect.artifacts import create_image_artifact

    for a in specs:
        if a.kind == "image":
            create_image_artifact(image_url=a.body, key=a.key, description=a.description)
        else:
            create_markdown_artifact(key=a.key, markdown=a.body, description=a.description)
