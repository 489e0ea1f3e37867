"""Score one set of preprocessed cases in original geometry: the dataset-level half of evaluation.

:func:`score_set` applies a predictor to every case of a manifest, maps the predictions back onto
the original images, scores them against the original masks (CIs, subgroups, detection), the
trivial "whole breast" baseline beside them, the leakage audit against the training data, and
renders the best / median / worst overlays. :func:`set_metrics` is the one place the per-set
``metrics.json`` is built. No Prefect here; the store I/O is the predictor's arrays and the
source's masks and images.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mammoseg.storage import ObjectStore

#: The trivial predictor's description in ``metrics.json``.
BASELINE_WHAT = "the trivial predictor 'every breast pixel is lesion': the chance level to beat"
NO_AUDIT = "not run: no training manifest and split given"
NO_FINDINGS = "no overlap of patients or image content with the training data"


@dataclass(frozen=True)
class SetScore:
    """What scoring one set produced: ``metrics`` (the ``metrics.json`` of the set), the full
    result, the leakage findings (None: no audit), the overlay grid (PNG; None: no case)."""

    metrics: dict[str, Any]
    result: Any  # mammoseg.evaluation.EvaluationResult
    leakage_findings: list[str] | None
    overlays_png: bytes | None


def subgroups(row: Mapping[str, Any]) -> dict[str, str]:
    """The subgroups a case is reported under (dataset, pathology, lesion type, density)."""
    types = row["abnormality_types"]
    density = row["density"]
    return {
        "dataset": str(row["source_dataset"]),
        "pathology": str(row["pathology"]),
        "lesion_type": "+".join(types) if types else "normal",
        "density": "n/a" if pd.isna(density) else str(int(density)),
    }


def whole_breast_baseline(counts: list[tuple[float, int, int, int]]) -> dict[str, Any] | None:
    """Mean and pooled Dice of "every breast pixel is lesion" from per-case (dice, tp, fp, fn)."""
    if not counts:
        return None
    b = np.array(counts, dtype=float)
    tp, fp, fn = b[:, 1].sum(), b[:, 2].sum(), b[:, 3].sum()
    return {
        "what": BASELINE_WHAT,
        "dice_mean": float(b[:, 0].mean()),
        "dice_pooled": float(2 * tp / max(2 * tp + fp + fn, 1)),
    }


def set_metrics(
    result: Any, *, manifest: pd.DataFrame, plan: dict[str, Any], findings: list[str] | None,
    suspicious: bool, baseline: dict[str, Any] | None,
) -> dict[str, Any]:
    """The ``metrics.json`` of one evaluated set, built in one place: the result's figures, the
    fingerprint of the scored cases (``eval_set``: the champion gate compares only scores on the
    same set), the plan the model was applied with, the leakage audit, the suspicion flag and the
    baseline."""
    from mammoseg.publish import eval_set_fingerprint

    metrics = {
        **result.to_dict(),
        "eval_set": eval_set_fingerprint(manifest.to_dict("records")),
        "plan": plan,
        "leakage_audit": [NO_AUDIT] if findings is None else (findings or [NO_FINDINGS]),
        "suspicious": bool(suspicious),
    }
    if baseline is not None:
        metrics["baseline_whole_breast"] = baseline
    return metrics


def check_plan_digest(name: str, manifest: pd.DataFrame, plan_digest: str) -> None:
    """Refuse arrays preprocessed with other parameters than the model's plan."""
    other = sorted(set(manifest["params_digest"]) - {plan_digest})
    if other:
        raise ValueError(
            f"{name}: arrays preprocessed with parameters {other}, but the model's plan preprocesses "
            f"with {plan_digest}: preprocess the set with the plan's parameters"
        )


def trained_on_rows(training: pd.DataFrame, split: pd.DataFrame) -> pd.DataFrame:
    """The rows of a training table whose cases were in the train or validation split."""
    ids = set(split.loc[split["split"].isin(["train", "val"]), "case_id"])
    return training[training["case_id"].isin(ids)]


def score_set(
    name: str,
    *,
    manifest: pd.DataFrame,
    images: pd.DataFrame,
    store: ObjectStore,
    source: ObjectStore,
    predictor: Any,
    threshold: float | None = None,
    n_boot: int = 1000,
    trained_on: pd.DataFrame | None = None,
    keep: int = 64,
) -> SetScore:
    """Score ``manifest``'s cases (arrays in ``store``) against their truth in ``source``.

    ``images``: the image table of the run's lesion table (:func:`mammoseg.casetable.image_table`)
    indexed by ``case_id``; ``predictor``: a :class:`mammoseg.inference.Predictor` whose plan
    preprocessed the arrays; ``threshold`` None: the plan's; ``trained_on``: the train and
    validation rows of the training data (None: no leakage audit, and the metrics say so);
    ``keep``: full-size predictions kept in memory for the overlays (the rest predicted again).
    """
    from mammoseg.evaluation import (
        EvalCase,
        best_median_worst,
        dice,
        evaluate,
        is_suspicious,
        leakage_audit,
        segment,
    )
    from mammoseg.evaluation.truth import read_truth
    from mammoseg.preprocess import read_preprocessed

    plan = predictor.plan
    check_plan_digest(name, manifest, plan.preprocess.digest())
    threshold = plan.threshold if threshold is None else threshold

    def predict_original(npz_key: str) -> tuple[Any, np.ndarray]:
        arrays = read_preprocessed(store, npz_key)
        prob = predictor.predict_preprocessed(arrays.image, breast_masks=arrays.breast_mask)
        return arrays, arrays.transform.to_original(prob, order="linear")

    def truth_of(meta: pd.Series, shape: tuple[int, int]) -> tuple[np.ndarray, list]:
        return read_truth(source, meta["mask_uris"], meta["mask_geometries"], shape)

    predictions: dict[str, np.ndarray] = {}
    baseline: list[tuple[float, int, int, int]] = []

    def cases() -> Iterator[EvalCase]:
        for row in manifest.itertuples(index=False):
            arrays, prob_orig = predict_original(row.npz_key)
            prob = np.clip(prob_orig, 0, 1)
            meta = images.loc[row.case_id]
            truth, lesions = truth_of(meta, arrays.transform.original_shape)
            pred = predictions[row.case_id] = segment(prob, threshold, plan.keep_components, plan.min_score)
            breast = arrays.transform.to_original(arrays.breast_mask.astype(bool))
            tp, fp, fn = int((breast & truth).sum()), int((breast & ~truth).sum()), int((~breast & truth).sum())
            baseline.append((dice(breast, truth), tp, fp, fn))
            yield EvalCase(case_id=row.case_id, patient_id=row.patient_id, prob=prob, truth=truth,
                           lesions=lesions, subgroups=subgroups(meta), pred=pred)
            if len(predictions) > keep:  # keep only the overlays' worth of full-size masks
                predictions.pop(next(iter(predictions)))

    # the FROC counts what the lesion list of `predict` would show: the plan's top-k per image;
    # each case brings its mask, keep_components and min_score only word the definitions
    result = evaluate(cases(), threshold=threshold, n_boot=n_boot, seed=0, top_k=plan.top_k,
                      keep_components=plan.keep_components, min_score=plan.min_score)
    findings = None if trained_on is None else leakage_audit(trained_on, manifest)
    metrics = set_metrics(result, manifest=manifest, plan=plan.to_dict(), findings=findings,
                          suspicious=is_suspicious(result), baseline=whole_breast_baseline(baseline))

    def prediction_of(case_id: str) -> np.ndarray:
        if case_id in predictions:
            return predictions[case_id]
        row = manifest[manifest["case_id"] == case_id].iloc[0]
        return segment(np.clip(predict_original(row["npz_key"])[1], 0, 1), threshold, plan.keep_components, plan.min_score)

    picks = best_median_worst(result.per_image) if len(result.per_image) >= 1 else ()
    overlays = overlay_png(picks, result.per_image, images, source, truth_of, prediction_of)
    return SetScore(metrics=metrics, result=result, leakage_findings=findings, overlays_png=overlays)


def overlay_png(
    picks: tuple[str, ...] | list[str],
    per_image: pd.DataFrame,
    images: pd.DataFrame,
    source: ObjectStore,
    truth_of: Callable[[pd.Series, tuple[int, int]], tuple[np.ndarray, list]],
    prediction_of: Callable[[str], np.ndarray],
) -> bytes | None:
    """The overlay grid of the picked cases (best, median, worst) on their original images."""
    from mammoseg.evaluation import overlay_grid
    from mammoseg.imageio import load_image

    dice_of = per_image.set_index("case_id")["dice"]
    items = []
    for label, case_id in zip(("best", "median", "worst"), picks, strict=False):
        meta = images.loc[case_id]
        image_key = source.key_from_uri(meta["image_uri"])
        image = load_image(source.read_bytes(image_key), image_key)
        truth, _ = truth_of(meta, image.shape)
        items.append((image, truth, prediction_of(case_id), f"{label}: {case_id} Dice {float(dice_of.loc[case_id]):.2f}"))
    return overlay_grid(items) if items else None
