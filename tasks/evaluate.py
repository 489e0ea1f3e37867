"""Evaluate: predictions mapped back onto the original images, scored against the original masks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel

from mammoseg.casetable import from_csv_bytes, image_table
from mammoseg.params import SetKind
from mammoseg.settings import Settings, get_settings
from mammoseg.storage import ObjectStore, join_key, open_store, open_uri
from tasks.retry import IO_RETRIES
from tasks.train import read_manifest


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


def _truth(row: pd.Series, shape: tuple[int, int], source: ObjectStore) -> tuple[np.ndarray, list]:
    """Union mask and per-lesion objects (masks or circles) in original geometry."""
    from mammoseg.evaluation.truth import read_truth

    return read_truth(source, row["mask_uris"], row["mask_geometries"], shape)


def _subgroups(row: pd.Series) -> dict[str, str]:
    types = row["abnormality_types"]
    return {
        "dataset": str(row["source_dataset"]),
        "pathology": str(row["pathology"]),
        "lesion_type": "+".join(types) if types else "normal",
        "density": "n/a" if pd.isna(row["density"]) else str(int(row["density"])),
    }


@task(name="evaluate-model", task_run_name="evaluate-{name}", **IO_RETRIES)
def evaluate_model(
    name: str,
    model_uri: str,
    manifest_uri: str,
    lesions_uri: str,
    source_url: str,
    store_url: str,
    run_id: str,
    threshold: float | None,
    n_boot: int,
    train_manifest_uri: str | None = None,
    split_uri: str | None = None,
    case_ids: list[str] | None = None,
) -> EvalOutcome:
    """Score ``name`` (e.g. ``heldout-mini-mias``, ``internal-test-cbis-ddsm``) in original geometry.

    The model is applied exactly as ``predict`` applies it: with the ``plan.json`` beside
    ``model_uri`` (sliding window, mirroring; :func:`mammoseg.inference.load_predictor`), on
    arrays that must have been preprocessed with the plan's parameters. ``threshold`` None: the
    plan's (chosen on validation). ``train_manifest_uri`` + ``split_uri`` (the run's train/val
    cases): the leakage audit against them; None: no audit, and the metrics say so.
    ``metrics["eval_set"]`` fingerprints the scored cases (the champion gate compares only
    scores on the same set).
    """
    from mammoseg.evaluation import (
        EvalCase,
        best_median_worst,
        dice,
        evaluate,
        is_suspicious,
        leakage_audit,
        overlay_grid,
    )
    from mammoseg.imageio import load_image
    from mammoseg.inference import load_predictor
    from mammoseg.preprocess import read_preprocessed
    from mammoseg.publish import eval_set_fingerprint

    settings = get_settings()
    logger = get_run_logger()
    store = open_store(store_url, settings)
    source = open_store(source_url, settings)
    src, key = open_uri(lesions_uri, settings)
    images = image_table(from_csv_bytes(src.read_bytes(key))).set_index("case_id")
    manifest = read_manifest(manifest_uri)
    if case_ids is not None:
        manifest = manifest[manifest["case_id"].isin(case_ids)]
    predictor = load_predictor(model_uri, settings)
    plan_digest = predictor.plan.preprocess.digest()
    other = sorted(set(manifest["params_digest"]) - {plan_digest})
    if other:
        raise ValueError(
            f"{name}: arrays preprocessed with parameters {other}, but the model's plan preprocesses "
            f"with {plan_digest}: preprocess the set with the plan's parameters"
        )
    if threshold is None:
        threshold = predictor.plan.threshold

    def predict(image: np.ndarray, breast_mask: np.ndarray) -> np.ndarray:
        return predictor.predict_preprocessed(image, breast_masks=breast_mask)

    predictions: dict[str, np.ndarray] = {}
    baseline: list[tuple[float, int, int, int]] = []  # (dice, tp, fp, fn) of "whole breast = lesion"

    def cases() -> Iterator[EvalCase]:
        for row in manifest.itertuples(index=False):
            arrays = read_preprocessed(store, row.npz_key)
            prob = predict(arrays.image, arrays.breast_mask)
            prob_orig = arrays.transform.to_original(prob, order="linear")
            meta = images.loc[row.case_id]
            truth, lesions = _truth(meta, arrays.transform.original_shape, source)
            predictions[row.case_id] = prob_orig >= threshold
            breast = arrays.transform.to_original(arrays.breast_mask.astype(bool))
            tp, fp, fn = int((breast & truth).sum()), int((breast & ~truth).sum()), int((~breast & truth).sum())
            baseline.append((dice(breast, truth), tp, fp, fn))
            yield EvalCase(
                case_id=row.case_id, patient_id=row.patient_id, prob=np.clip(prob_orig, 0, 1),
                truth=truth, lesions=lesions, subgroups=_subgroups(meta),
            )
            # keep only the three overlays' worth of full-size masks in memory
            if len(predictions) > 64:
                predictions.pop(next(iter(predictions)))

    # the FROC counts what the lesion list of `predict` would show: the plan's top-k per image
    result = evaluate(cases(), threshold=threshold, n_boot=n_boot, seed=0, top_k=predictor.plan.top_k)
    findings: list[str] | None = None
    if train_manifest_uri is not None and split_uri is not None:
        split = read_manifest(split_uri)
        trained_on = set(split.loc[split["split"].isin(["train", "val"]), "case_id"])
        train_manifest = read_manifest(train_manifest_uri)
        findings = leakage_audit(train_manifest[train_manifest["case_id"].isin(trained_on)], manifest)
    metrics = result.to_dict()
    metrics["eval_set"] = eval_set_fingerprint(manifest.to_dict("records"))
    metrics["plan"] = predictor.plan.to_dict()  # how the model was applied (threshold included)
    if findings is None:
        metrics["leakage_audit"] = ["not run: no training manifest and split given"]
    else:
        metrics["leakage_audit"] = findings or ["no overlap of patients or image content with the training data"]
    metrics["suspicious"] = bool(is_suspicious(result))
    if baseline:
        b = np.array(baseline, dtype=float)
        metrics["baseline_whole_breast"] = {
            "what": "the trivial predictor 'every breast pixel is lesion': the chance level to beat",
            "dice_mean": float(b[:, 0].mean()),
            "dice_pooled": float(2 * b[:, 1].sum() / max(2 * b[:, 1].sum() + b[:, 2].sum() + b[:, 3].sum(), 1)),
        }
    if metrics["suspicious"]:
        logger.warning("%s: mean Dice %.3f is suspiciously high; leakage audit: %s", name, result.dice_mean, findings)
    metrics_uri = store.write_bytes(
        join_key("runs", run_id, "evaluation", f"{name}.json"), json.dumps(metrics, indent=2).encode(), "application/json"
    ).uri

    overlays_uri = None
    picks = best_median_worst(result.per_image) if len(result.per_image) >= 1 else ()
    items = []
    for label, case_id in zip(("best", "median", "worst"), picks):
        meta = images.loc[case_id]
        image_key = source.key_from_uri(meta["image_uri"])
        image = load_image(source.read_bytes(image_key), image_key)
        truth, _ = _truth(meta, image.shape, source)
        pred = predictions.get(case_id)
        if pred is None:  # evicted: predict again
            row = manifest[manifest["case_id"] == case_id].iloc[0]
            arrays = read_preprocessed(store, row["npz_key"])
            pred = arrays.transform.to_original(predict(arrays.image, arrays.breast_mask), order="linear") >= threshold
        case_dice = float(result.per_image.set_index("case_id").loc[case_id, "dice"])
        items.append((image, truth, pred, f"{label}: {case_id} Dice {case_dice:.2f}"))
    if items:
        overlays_uri = store.write_bytes(
            join_key("runs", run_id, "evaluation", f"{name}-overlays.png"), overlay_grid(items), "image/png"
        ).uri
    _publish_artifacts(name, run_id, result.markdown_table(name), overlays_uri, settings)
    logger.info(
        "%s: per-image mean Dice %.3f [%.3f, %.3f], IoU %.3f, pooled Dice %.3f over %d images of %d patients",
        name, result.dice_mean, *(metrics["ci95"].get("dice_mean") or [float("nan")] * 2), result.iou_mean, result.dice_pooled,
        result.n_cases, result.n_patients,
    )
    return EvalOutcome(name=name, metrics=metrics, metrics_uri=metrics_uri, overlays_uri=overlays_uri, leakage_findings=findings)


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

