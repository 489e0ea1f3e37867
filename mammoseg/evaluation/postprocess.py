"""Mask post-processing: keep only the highest-scoring lesions, chosen on validation data.

A probability map becomes a mask in two steps, both recorded in the model's plan:

1. **threshold**: ``prob >= threshold`` (:func:`~mammoseg.evaluation.metrics.binarize`);
2. **keep_components**: ``None`` keeps every 8-connected component; ``k`` keeps the ``k``
   components with the highest score (the highest probability inside; equal scores keep raster
   order, top-most first) and drops the rest. A mass is most often alone in its image, and a
   false positive away from it costs the image's Dice as much as a missed piece of the mass.

nnU-Net decides its own post-processing (keep the largest component or not) on the
cross-validation predictions, and only keeps it where it helps. :func:`choose_postprocessing` does
the same here: it sweeps thresholds and ``keep`` values together on validation (or out-of-fold)
maps and returns the pair with the highest mean per-image Dice, keeping every component unless a
filter gains at least :data:`MIN_FILTER_GAIN` (validation sets are small and a filter chosen
on noise costs more than it wins). Ties go to more components, then to the smaller threshold.

The components are those of the lesion list (:func:`~mammoseg.evaluation.lesion_list`): with
``keep_components = k <= top_k`` and no minimum size, the mask is exactly the union of the listed
lesions. numpy and OpenCV only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np
import pandas as pd

from mammoseg.evaluation.detection import _max_per_label
from mammoseg.evaluation.metrics import (
    DEFAULT_THRESHOLD_CANDIDATES,
    EvaluationInputError,
    _check_candidates,
    _same_shape,
    _strict_zip,
    as_mask,
    as_prob,
    binarize,
)

#: ``keep_components`` values searched on validation: all components, then the best 3, 2, 1.
DEFAULT_KEEP_CANDIDATES: Final[tuple[int | None, ...]] = (None, 3, 2, 1)
#: Mean per-image Dice a filter must gain on validation over keeping every component. On the
#: real-data benchmark (26-32 validation images per fold), choices by any margin picked a filter
#: in two folds of three for validation gains of 0.003 and 0.001: noise, not evidence.
MIN_FILTER_GAIN: Final = 0.01


def _check_keep(keep: int | None) -> None:
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int | np.integer) or keep < 1):
        raise EvaluationInputError(f"keep_components must be None or an integer >= 1 (got {keep!r})")


def _ranked_components(pred: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, order)``: 8-connected labels of ``pred`` and the labels (1..n) sorted by
    score, highest first; equal scores in raster (label) order."""
    n, labels = cv2.connectedComponents(pred.astype(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    if n <= 1:
        return labels, np.zeros(0, np.int64)
    order = np.argsort(-_max_per_label(labels, prob, n)[1:], kind="stable") + 1
    return labels, order


def keep_top_components(pred: np.ndarray, prob: np.ndarray, keep: int | None) -> np.ndarray:
    """A new mask with only the ``keep`` highest-scoring components of ``pred`` (all when
    ``keep`` is None); a component's score is the highest value of ``prob`` inside it."""
    _check_keep(keep)
    mask = as_mask(pred, "pred")
    if keep is None:
        return mask.copy()
    p = as_prob(prob)
    _same_shape(p, mask, "prob vs pred")
    labels, order = _ranked_components(mask, p)
    if order.size <= keep:
        return mask.copy()
    return np.isin(labels, order[:keep])


def segment(prob: np.ndarray, threshold: float, keep_components: int | None = None) -> np.ndarray:
    """The mask of a probability map: ``prob >= threshold``, then
    :func:`keep_top_components` (see the module doc)."""
    return keep_top_components(binarize(prob, threshold), prob, keep_components)


def _dice_table(
    prob: np.ndarray, truth: np.ndarray, thresholds: np.ndarray, keeps: Sequence[int | None], empty_score: float
) -> np.ndarray:
    """Per-image Dice ``[len(thresholds), len(keeps)]``."""
    typed = thresholds.astype(prob.dtype)
    n_truth = int(np.count_nonzero(truth))
    out = np.empty((thresholds.size, len(keeps)))
    for i, t in enumerate(typed):
        labels, order = _ranked_components(prob >= t, prob)
        if order.size:
            n = int(labels.max()) + 1
            area = np.bincount(labels.ravel(), minlength=n)[order]
            hit = np.bincount(labels[truth], minlength=n)[order]
            c_area, c_hit = np.cumsum(area), np.cumsum(hit)
        for j, keep in enumerate(keeps):
            m = order.size if keep is None else min(keep, order.size)
            tp, pred_px = (int(c_hit[m - 1]), int(c_area[m - 1])) if m else (0, 0)
            den = pred_px + n_truth
            out[i, j] = empty_score if den == 0 else 2.0 * tp / den
    return out


def postprocessing_sweep(
    prob_maps: Iterable[np.ndarray],
    truths: Iterable[np.ndarray],
    candidates: Sequence[float] | np.ndarray = DEFAULT_THRESHOLD_CANDIDATES,
    keeps: Sequence[int | None] = DEFAULT_KEEP_CANDIDATES,
    *,
    empty_score: float = 1.0,
) -> pd.DataFrame:
    """Mean per-image Dice for every ``(threshold, keep_components)`` pair (streams the maps):
    columns ``threshold``, ``keep_components`` (0 = keep all), ``dice_mean``, ``n_images``."""
    cand = _check_candidates(candidates)
    keeps = list(keeps)
    if not keeps:
        raise EvaluationInputError("no keep_components candidates")
    for k in keeps:
        _check_keep(k)
    total = np.zeros((cand.size, len(keeps)))
    n = 0
    for prob, truth in _strict_zip(prob_maps, truths, "prob_maps", "truths"):
        p, t = as_prob(prob), as_mask(truth, "truth")
        _same_shape(p, t, "prob vs truth")
        total += _dice_table(p, t, cand, keeps, empty_score)
        n += 1
    if n == 0:
        raise EvaluationInputError("no validation images to choose the post-processing on")
    return pd.DataFrame(
        {
            "threshold": np.repeat(cand, len(keeps)),
            "keep_components": np.tile([0 if k is None else int(k) for k in keeps], cand.size),
            "dice_mean": (total / n).ravel(),
            "n_images": n,
        }
    )


@dataclass(frozen=True)
class Postprocessing:
    """The chosen threshold and ``keep_components`` (None: all), and their validation Dice."""

    threshold: float
    keep_components: int | None
    dice_mean: float


def best_postprocessing(sweep: pd.DataFrame, min_gain: float = MIN_FILTER_GAIN) -> Postprocessing:
    """The best row of a :func:`postprocessing_sweep`: the highest mean per-image Dice with
    every component kept, unless a ``keep_components`` filter beats it by at least ``min_gain``.
    Ties: more components, then the smaller threshold."""
    rank = sweep["keep_components"].replace(0, np.iinfo(np.int32).max)
    ordered = sweep.assign(_rank=rank).sort_values(
        ["dice_mean", "_rank", "threshold"], ascending=[False, False, True], kind="stable"
    )
    best = ordered.iloc[0]
    unfiltered = ordered[ordered["keep_components"] == 0]
    if len(unfiltered) and float(best["dice_mean"]) < float(unfiltered["dice_mean"].iloc[0]) + min_gain:
        best = unfiltered.iloc[0]
    keep = int(best["keep_components"])
    return Postprocessing(threshold=float(best["threshold"]), keep_components=keep or None,
                          dice_mean=float(best["dice_mean"]))


def choose_postprocessing(
    prob_maps: Iterable[np.ndarray], truths: Iterable[np.ndarray], keeps: Sequence[int | None] = DEFAULT_KEEP_CANDIDATES
) -> Postprocessing:
    """The best ``(threshold, keep_components)`` on **validation** maps, over the default
    threshold candidates and ``keeps`` (:func:`best_postprocessing`)."""
    return best_postprocessing(postprocessing_sweep(prob_maps, truths, keeps=keeps))
