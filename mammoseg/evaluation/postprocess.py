"""Mask post-processing: keep only the convincing, highest-scoring lesions, chosen on validation data.

A probability map becomes a mask in three steps, all recorded in the model's plan:

1. **threshold**: ``prob >= threshold`` (:func:`~mammoseg.evaluation.metrics.binarize`);
   this draws the outline of every candidate lesion;
2. **min_score**: ``None`` keeps every 8-connected component of that mask; a number drops the
   components whose score (the highest probability inside) is below it. A low threshold with a
   high score cut-off (hysteresis) outlines a confident lesion generously and still rejects a
   faint blob on a lesion-free image, which costs that image its whole Dice (it scores 1 only
   when nothing is marked);
3. **keep_components**: ``None`` keeps every remaining component; ``k`` keeps the ``k``
   with the highest score (equal scores keep raster order, top-most first) and drops the rest.
   A mass is most often alone in its image, and a false positive away from it costs the
   image's Dice as much as a missed piece of the mass.

nnU-Net decides its own post-processing (keep the largest component or not) on the
cross-validation predictions, and only keeps it where it helps. :func:`choose_postprocessing` does
the same here: it sweeps thresholds, score cut-offs and ``keep`` values together on validation (or
out-of-fold) maps and returns the triple with the highest mean per-image Dice, keeping every
component unless a filter gains at least :data:`MIN_FILTER_GAIN` (validation sets are small and a
filter chosen on noise costs more than it wins). Ties go to more components, then to the lower
score cut-off, then to the smaller threshold. A cut-off at or below the threshold filters
nothing and counts as none.

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
#: Component score cut-offs (``min_score``) searched on validation: none, then 0.5 to 0.98.
DEFAULT_MIN_SCORE_CANDIDATES: Final[tuple[float | None, ...]] = (None, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98)
#: Mean per-image Dice a filter must gain on validation over keeping every component. On the
#: real-data benchmark (26-32 validation images per fold), choices by any margin picked a filter
#: in two folds of three for validation gains of 0.003 and 0.001: noise, not evidence.
MIN_FILTER_GAIN: Final = 0.01


def _check_keep(keep: int | None) -> None:
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int | np.integer) or keep < 1):
        raise EvaluationInputError(f"keep_components must be None or an integer >= 1 (got {keep!r})")


def _check_min_score(min_score: float | None) -> None:
    if min_score is not None and (
        isinstance(min_score, bool) or not isinstance(min_score, int | float | np.floating) or not 0.0 < min_score <= 1.0
    ):
        raise EvaluationInputError(f"min_score must be None or a number in (0, 1] (got {min_score!r})")


def _ranked_components(pred: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(labels, order, scores)``: 8-connected labels of ``pred``, the labels (1..n) sorted by
    score, highest first (equal scores in raster, i.e. label, order), and their scores in that
    order."""
    n, labels = cv2.connectedComponents(pred.astype(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    if n <= 1:
        return labels, np.zeros(0, np.int64), np.zeros(0, prob.dtype)
    score = _max_per_label(labels, prob, n)[1:].astype(prob.dtype, copy=False)
    order = np.argsort(-score, kind="stable")
    return labels, order + 1, score[order]


def _n_kept(scores: np.ndarray, keep: int | None, min_score: float | None) -> int:
    """How many of the ranked components (``scores``, highest first) the filters keep; the
    cut-off is compared in the map's own float dtype, as the threshold is."""
    n = scores.size if min_score is None else int(np.count_nonzero(scores >= np.asarray(min_score, scores.dtype)))
    return n if keep is None else min(keep, n)


def keep_top_components(
    pred: np.ndarray, prob: np.ndarray, keep: int | None, min_score: float | None = None
) -> np.ndarray:
    """A new mask with only the components of ``pred`` whose score (the highest value of
    ``prob`` inside) is at least ``min_score`` (all when None), and of those the ``keep``
    highest-scoring (all when None)."""
    _check_keep(keep)
    _check_min_score(min_score)
    mask = as_mask(pred, "pred")
    if keep is None and min_score is None:
        return mask.copy()
    p = as_prob(prob)
    _same_shape(p, mask, "prob vs pred")
    labels, order, scores = _ranked_components(mask, p)
    m = _n_kept(scores, keep, min_score)
    if m == order.size:
        return mask.copy()
    return np.isin(labels, order[:m])


def segment(
    prob: np.ndarray, threshold: float, keep_components: int | None = None, min_score: float | None = None
) -> np.ndarray:
    """The mask of a probability map: ``prob >= threshold``, then
    :func:`keep_top_components` (see the module doc)."""
    return keep_top_components(binarize(prob, threshold), prob, keep_components, min_score)


def _dice_table(
    prob: np.ndarray, truth: np.ndarray, thresholds: np.ndarray, keeps: Sequence[int | None],
    min_scores: Sequence[float | None], empty_score: float,
) -> np.ndarray:
    """Per-image Dice ``[len(thresholds), len(keeps), len(min_scores)]``."""
    typed = thresholds.astype(prob.dtype)
    n_truth = int(np.count_nonzero(truth))
    out = np.empty((thresholds.size, len(keeps), len(min_scores)))
    for i, t in enumerate(typed):
        labels, order, scores = _ranked_components(prob >= t, prob)
        if order.size:
            n = int(labels.max()) + 1
            area = np.bincount(labels.ravel(), minlength=n)[order]
            hit = np.bincount(labels[truth], minlength=n)[order]
            c_area, c_hit = np.cumsum(area), np.cumsum(hit)
        for j, keep in enumerate(keeps):
            for k, min_score in enumerate(min_scores):
                m = _n_kept(scores, keep, min_score)
                tp, pred_px = (int(c_hit[m - 1]), int(c_area[m - 1])) if m else (0, 0)
                den = pred_px + n_truth
                out[i, j, k] = empty_score if den == 0 else 2.0 * tp / den
    return out


def postprocessing_sweep(
    prob_maps: Iterable[np.ndarray],
    truths: Iterable[np.ndarray],
    candidates: Sequence[float] | np.ndarray = DEFAULT_THRESHOLD_CANDIDATES,
    keeps: Sequence[int | None] = DEFAULT_KEEP_CANDIDATES,
    min_scores: Sequence[float | None] = DEFAULT_MIN_SCORE_CANDIDATES,
    *,
    empty_score: float = 1.0,
) -> pd.DataFrame:
    """Mean per-image Dice for every ``(threshold, keep_components, min_score)`` triple (streams
    the maps): columns ``threshold``, ``keep_components`` (0 = keep all), ``min_score`` (0 = no
    cut-off; a cut-off at or below the threshold is reported as 0), ``dice_mean``, ``n_images``."""
    cand = _check_candidates(candidates)
    keeps, min_scores = list(keeps), list(min_scores)
    if not keeps or not min_scores:
        raise EvaluationInputError("no keep_components or min_score candidates")
    for k in keeps:
        _check_keep(k)
    for s in min_scores:
        _check_min_score(s)
    total = np.zeros((cand.size, len(keeps), len(min_scores)))
    n = 0
    for prob, truth in _strict_zip(prob_maps, truths, "prob_maps", "truths"):
        p, t = as_prob(prob), as_mask(truth, "truth")
        _same_shape(p, t, "prob vs truth")
        total += _dice_table(p, t, cand, keeps, min_scores, empty_score)
        n += 1
    if n == 0:
        raise EvaluationInputError("no validation images to choose the post-processing on")
    t_col = np.repeat(cand, len(keeps) * len(min_scores))
    s_col = np.tile([0.0 if s is None else float(s) for s in min_scores], cand.size * len(keeps))
    frame = pd.DataFrame(
        {
            "threshold": t_col,
            "keep_components": np.tile(np.repeat([0 if k is None else int(k) for k in keeps], len(min_scores)), cand.size),
            "min_score": np.where(s_col > t_col, s_col, 0.0),
            "dice_mean": (total / n).ravel(),
            "n_images": n,
        }
    )
    return frame.drop_duplicates(["threshold", "keep_components", "min_score"]).reset_index(drop=True)


@dataclass(frozen=True)
class Postprocessing:
    """The chosen threshold, score cut-off (None: none) and ``keep_components`` (None: all),
    and their validation Dice."""

    threshold: float
    keep_components: int | None
    dice_mean: float
    min_score: float | None = None


def best_postprocessing(sweep: pd.DataFrame, min_gain: float = MIN_FILTER_GAIN) -> Postprocessing:
    """The best row of a :func:`postprocessing_sweep`: the highest mean per-image Dice with
    every component kept and no score cut-off, unless a filter (``keep_components``,
    ``min_score`` or both) beats it by at least ``min_gain``. Ties: more components, then the
    lower cut-off, then the smaller threshold."""
    rank = sweep["keep_components"].replace(0, np.iinfo(np.int32).max)
    ordered = sweep.assign(_rank=rank).sort_values(
        ["dice_mean", "_rank", "min_score", "threshold"], ascending=[False, False, True, True], kind="stable"
    )
    best = ordered.iloc[0]
    unfiltered = ordered[(ordered["keep_components"] == 0) & (ordered["min_score"] == 0)]
    if len(unfiltered) and float(best["dice_mean"]) < float(unfiltered["dice_mean"].iloc[0]) + min_gain:
        best = unfiltered.iloc[0]
    keep, cut = int(best["keep_components"]), float(best["min_score"])
    return Postprocessing(threshold=float(best["threshold"]), keep_components=keep or None,
                          dice_mean=float(best["dice_mean"]), min_score=cut or None)


def choose_postprocessing(
    prob_maps: Iterable[np.ndarray], truths: Iterable[np.ndarray],
    keeps: Sequence[int | None] = DEFAULT_KEEP_CANDIDATES,
    min_scores: Sequence[float | None] = DEFAULT_MIN_SCORE_CANDIDATES,
) -> Postprocessing:
    """The best ``(threshold, keep_components, min_score)`` on **validation** maps, over the
    default threshold candidates, ``keeps`` and ``min_scores`` (:func:`best_postprocessing`)."""
    return best_postprocessing(postprocessing_sweep(prob_maps, truths, keeps=keeps, min_scores=min_scores))
