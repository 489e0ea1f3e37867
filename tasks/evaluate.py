"""Evaluate: predictions mapped back onto the original images, scored against the original masks."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel

from mammoseg.params import SetKind
from mammoseg.settings import Settings, get_settings
from mammoseg.storage import open_store
from tasks.retry import IO_RETRIES


class EvalOutcome(BaseModel):
    name: str
    metrics: dict[str, Any]  # EvaluationResult.to_dict() + eval_set, leakage_audit, suspicious, baseline
    metrics_uri: str
    overlays_uri: str | None
    leakage_findings: list[str] | None  # None: no audit (no training data given)


class ScoredSet(BaseModel):
    """One evaluated set of a retrain run: which dataset, in-domain or cross-dataset."""

    kind: SetKind
    dataset: str
    outcome: EvalOutcome

    @property
    def name(self) -> str:
        return self.outcome.name


class EvalSpec(BaseModel):
    """What to score: set ``name`` (e.g. ``heldout-mini-mias``, ``internal-test-cbis-ddsm``) of
    ``manifest_uri`` (only ``case_ids`` when given) with the model at ``model_uri``; truth from
    ``lesions_uri`` in ``source_url``; results under ``runs/<run_id>/evaluation/`` of
    ``store_url``. ``threshold`` None: the plan's (chosen on validation).
    ``train_manifest_uri`` + ``split_uri`` (the run's train/val cases): the leakage audit
    against them; None: no audit, and the metrics say so."""

    name: str
    model_uri: str
    manifest_uri: str
    lesions_uri: str
    source_url: str
    store_url: str
    run_id: str
    threshold: float | None = None
    n_boot: int = 1000
    train_manifest_uri: str | None = None
    split_uri: str | None = None
    case_ids: list[str] | None = None


@task(name="evaluate-model", task_run_name="evaluate-{spec.name}", **IO_RETRIES)
def evaluate_model(spec: EvalSpec) -> EvalOutcome:
    """Score a set in original geometry (:func:`mammoseg.evaluation.scoring.score_set`), with the
    model applied exactly as ``predict`` applies it (its ``plan.json``); write its metrics and
    overlays through the run's catalog."""
    from mammoseg import catalog
    from mammoseg.casetable import image_table
    from mammoseg.evaluation.scoring import score_set, trained_on_rows
    from mammoseg.inference import load_predictor

    settings, logger = get_settings(), get_run_logger()
    run = catalog.RunCatalog.open(spec.store_url, spec.run_id, settings)
    manifest = catalog.read_manifest(spec.manifest_uri, settings)
    if spec.case_ids is not None:
        manifest = manifest[manifest["case_id"].isin(spec.case_ids)]
    trained_on = None
    if spec.train_manifest_uri is not None and spec.split_uri is not None:
        trained_on = trained_on_rows(catalog.read_training_table(spec.train_manifest_uri, settings),
                                     catalog.read_split(spec.split_uri, settings))
    scored = score_set(
        spec.name, manifest=manifest, images=image_table(catalog.read_lesions(spec.lesions_uri, settings)).set_index("case_id"),
        store=run.store, source=open_store(spec.source_url, settings), predictor=load_predictor(spec.model_uri, settings),
        threshold=spec.threshold, n_boot=spec.n_boot, trained_on=trained_on,
    )
    result, metrics = scored.result, scored.metrics
    if metrics["suspicious"]:
        logger.warning("%s: mean Dice %.3f is suspiciously high; leakage audit: %s", spec.name, result.dice_mean,
                       scored.leakage_findings)
    metrics_uri = run.write_metrics(spec.name, metrics)
    overlays_uri = run.write_overlays(spec.name, scored.overlays_png) if scored.overlays_png else None
    _publish_artifacts(spec.name, spec.run_id, result.markdown_table(spec.name), overlays_uri, settings)
    logger.info(
        "%s: per-image mean Dice %.3f [%.3f, %.3f], IoU %.3f, pooled Dice %.3f over %d images of %d patients",
        spec.name, result.dice_mean, *(metrics["ci95"].get("dice_mean") or [float("nan")] * 2), result.iou_mean,
        result.dice_pooled, result.n_cases, result.n_patients,
    )
    return EvalOutcome(name=spec.name, metrics=metrics, metrics_uri=metrics_uri, overlays_uri=overlays_uri,
                       leakage_findings=scored.leakage_findings)


def _publish_artifacts(name: str, run_id: str, table_md: str, overlays_uri: str | None, settings: Settings) -> None:
    """The set's metrics (``metrics-<name>``) and, when a browser can open it, its overlay grid as
    an image artifact (``overlays-<name>``)."""
    from prefect.artifacts import create_image_artifact

    from mammoseg.links import artifact_key, browser_url, md_link

    slug = artifact_key(name)
    url = browser_url(overlays_uri, settings)
    overlay_note = ""
    if overlays_uri:
        what = "Overlays of the best, median and worst image (green: truth, red: prediction)"
        overlay_note = f"\n\n{md_link(what, overlays_uri, settings)}\n"
        if url:
            overlay_note += f"\n![overlays of {name}]({url})\n"
            create_image_artifact(image_url=url, key=f"overlays-{slug}", description=f"{what}: {name}, run {run_id}")
    create_markdown_artifact(
        key=f"metrics-{slug}",
        markdown=table_md + overlay_note,  # the table's first line names the set
        description=f"evaluation of run {run_id} on {name}",
    )

