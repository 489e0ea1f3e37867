"""Per-image overlap metrics, the pooled Dice, lesion-size bins and the validation threshold.

Conventions (also in ``docs/evaluation.md``):

* Masks are 2-D boolean arrays in the **original image geometry** (the prediction has been mapped
  back with ``Transform.to_original``); integer 0/1 or 0/255 masks are accepted (non-zero = lesion),
  float arrays are refused: threshold probabilities first (``prob >= threshold``).
* **Empty masks.** Per image, when *both* truth and prediction are empty the image scores
  ``empty_score`` (1.0 by default: a correct rejection of a normal image). Truth empty and
  prediction non-empty scores 0; truth non-empty and prediction empty scores 0. So the mean Dice
  over a test set mixes lesion images and normal images; report both views (per-subgroup table,
  ``size_bin == "none"`` holds the normal images).
* **Pooled Dice** = 2·ΣTP / (2·ΣTP + ΣFP + ΣFN) over every pixel of every image. It is dominated by
  the largest lesions (a 40 000-pixel mass outweighs a hundred 50-pixel calcification clusters);
  the headline number is the *mean per-image* Dice.
* **Threshold.** A pixel is predicted positive when ``prob >= threshold``. The threshold is chosen
  on the **validation** split by :func:`choose_threshold` — never on the test split.
* **Lesion size bin** of an image, from the truth area relative to the whole image array:
  ``none`` (no lesion pixel), ``small`` (< 0.5 %), ``medium`` (0.5 % to < 2 %), ``large`` (>= 2 %).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import pandas as pd

#: Size-bin limits, as a fraction of the image area (truth pixels / image pixels).
SMALL_MAX_FRACTION: Final = 0.005
MEDIUM_MAX_FRACTION: Final = 0.02
SIZE_BINS: Final = ("none", "small", "medium", "large")

#: Candidate thresholds searched on the validation split.
DEFAULT_THRESHOLD_CANDIDATES: Final = np.linspace(0.1, 0.9, 17)

#: Rounding slack accepted outside [0, 1] in probability maps (values are not clipped).
PROB_TOLERANCE: Final = 1e-6

#: Columns of :func:`per_image_scores`, before the subgroup columns.
SCORE_COLUMNS: Final = (
    "case_id",
    "patient_id",
    "dice",
    "iou",
    "truth_pixels",
    "pred_pixels",
    "tp",
    "fp",
    "fn",
    "image_pixels",
    "lesion_fraction",
    "size_bin",
)


class EvaluationInputError(ValueError):
    """An array or table handed to the evaluation is unusable; the message says why."""


# -- input checks ---------------------------------------------------------------------------
def as_mask(a: np.ndarray, name: str = "mask") -> np.ndarray:
    """A boolean view/copy of a 2-D mask (bool or integer dtype, non-zero = lesion).

    Never modifies ``a``. Raises :class:`EvaluationInputError` for float arrays (probabilities
    must be thresholded by the caller) and for anything that is not 2-D.
    """
    arr = np.asarray(a)
    if arr.ndim != 2:
        raise EvaluationInputError(f"{name} must be a 2-D array, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr
    if np.issubdtype(arr.dtype, np.integer):
        return arr != 0
    raise EvaluationInputError(
        f"{name} has dtype {arr.dtype}; pass a boolean mask (threshold probabilities first)"
    )


def as_prob(a: np.ndarray, name: str = "prob") -> np.ndarray:
    """Check a 2-D probability map: floating dtype, finite, within [0, 1] (± ``PROB_TOLERANCE``
    for float rounding after resampling). Returns it unchanged."""
    arr = np.asarray(a)
    if arr.ndim != 2:
        raise EvaluationInputError(f"{name} must be a 2-D array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise EvaluationInputError(f"{name} must be a float probability map, got {arr.dtype}")
    if arr.size == 0:
        raise EvaluationInputError(f"{name} is empty")
    if not np.isfinite(arr).all():
        raise EvaluationInputError(f"{name} contains NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -PROB_TOLERANCE or hi > 1.0 + PROB_TOLERANCE:
        raise EvaluationInputError(f"{name} must lie in [0, 1], found [{lo:g}, {hi:g}]")
    return arr


def binarize(prob: np.ndarray, threshold: float) -> np.ndarray:
    """``prob >= threshold`` as a new boolean array, compared in the map's own float dtype."""
    p = as_prob(prob)
    if not 0.0 <= float(threshold) <= 1.0:
        raise EvaluationInputError(f"threshold {threshold!r} is outside [0, 1]")
    return p >= np.asarray(threshold, dtype=p.dtype)


def _same_shape(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if a.shape != b.shape:
        raise EvaluationInputError(
            f"{what}: shapes differ {a.shape} vs {b.shape} "
            "(map the prediction back to the original geometry first)"
        )


# -- per-image metrics ----------------------------------------------------------------------
@dataclass(frozen=True)
class PixelCounts:
    """Confusion counts of one image (pixels)."""

    tp: int
    fp: int
    fn: int
    image_pixels: int

    @property
    def truth_pixels(self) -> int:
        return self.tp + self.fn

    @property
    def pred_pixels(self) -> int:
        return self.tp + self.fp


def pixel_counts(pred: np.ndarray, truth: np.ndarray) -> PixelCounts:
    """TP / FP / FN pixel counts of one image (both masks in the same geometry)."""
    p, t = as_mask(pred, "pred"), as_mask(truth, "truth")
    _same_shape(p, t, "pred vs truth")
    tp = int(np.count_nonzero(p & t))
    return PixelCounts(
        tp=tp,
        fp=int(np.count_nonzero(p)) - tp,
        fn=int(np.count_nonzero(t)) - tp,
        image_pixels=int(t.size),
    )


def dice_from_counts(tp: float, fp: float, fn: float, *, empty_score: float = 1.0) -> float:
    """2·TP / (2·TP + FP + FN); ``empty_score`` when truth and prediction are both empty."""
    den = 2 * tp + fp + fn
    return float(empty_score) if den == 0 else float(2 * tp / den)


def iou_from_counts(tp: float, fp: float, fn: float, *, empty_score: float = 1.0) -> float:
    """TP / (TP + FP + FN); ``empty_score`` when truth and prediction are both empty."""
    den = tp + fp + fn
    return float(empty_score) if den == 0 else float(tp / den)


def dice(pred: np.ndarray, truth: np.ndarray, *, empty_score: float = 1.0) -> float:
    """Dice of one image. Both empty → ``empty_score``; exactly one empty → 0."""
    c = pixel_counts(pred, truth)
    return dice_from_counts(c.tp, c.fp, c.fn, empty_score=empty_score)


def iou(pred: np.ndarray, truth: np.ndarray, *, empty_score: float = 1.0) -> float:
    """Intersection over union (Jaccard) of one image; same empty-mask rule as :func:`dice`."""
    c = pixel_counts(pred, truth)
    return iou_from_counts(c.tp, c.fp, c.fn, empty_score=empty_score)


def pooled_dice(
    preds: Iterable[np.ndarray], truths: Iterable[np.ndarray], *, empty_score: float = 1.0
) -> float:
    """2·ΣTP / (2·ΣTP + ΣFP + ΣFN) over all pixels of all images (streams the pairs).

    Dominated by large lesions. ``empty_score`` if every image is empty in truth and prediction.
    """
    tp = fp = fn = 0
    n = 0
    for n, (p, t) in enumerate(_strict_zip(preds, truths, "preds", "truths"), start=1):
        c = pixel_counts(p, t)
        tp, fp, fn = tp + c.tp, fp + c.fp, fn + c.fn
    if n == 0:
        raise EvaluationInputError("pooled_dice needs at least one image")
    return dice_from_counts(tp, fp, fn, empty_score=empty_score)


def _strict_zip(a: Iterable, b: Iterable, name_a: str, name_b: str) -> Iterable[tuple]:
    try:
        yield from zip(a, b, strict=True)
    except ValueError as exc:
        if "zip()" in str(exc):
            raise EvaluationInputError(f"{name_a} and {name_b} have different lengths") from None
        raise


# -- size bins ------------------------------------------------------------------------------
def lesion_size_bin(truth_pixels: int, image_pixels: int) -> str:
    """``none`` / ``small`` (< 0.5 % of the image) / ``medium`` (< 2 %) / ``large`` (>= 2 %).

    The fraction is over the whole image array (background included), original geometry.
    """
    if image_pixels <= 0:
        raise EvaluationInputError("image_pixels must be positive")
    if truth_pixels < 0:
        raise EvaluationInputError("truth_pixels must be >= 0")
    if truth_pixels == 0:
        return "none"
    frac = truth_pixels / image_pixels
    if frac < SMALL_MAX_FRACTION:
        return "small"
    if frac < MEDIUM_MAX_FRACTION:
        return "medium"
    return "large"


# -- per-image table ------------------------------------------------------------------------
@dataclass(frozen=True)
class MaskPair:
    """One image's binary prediction and truth (original geometry) with its ids and subgroups.

    ``subgroups`` are short categorical labels (dataset, pathology, density, view…) copied into
    the score table; never put header fields (names, dates) here.
    """

    case_id: str
    patient_id: str
    pred: np.ndarray
    truth: np.ndarray
    subgroups: Mapping[str, str] = field(default_factory=dict)


def score_row(
    case_id: str,
    patient_id: str,
    pred: np.ndarray,
    truth: np.ndarray,
    subgroups: Mapping[str, str] | None = None,
    *,
    empty_score: float = 1.0,
) -> dict[str, object]:
    """One row of :func:`per_image_scores` (a plain dict; subgroups appended as columns)."""
    c = pixel_counts(pred, truth)
    row: dict[str, object] = {
        "case_id": str(case_id),
        "patient_id": str(patient_id),
        "dice": dice_from_counts(c.tp, c.fp, c.fn, empty_score=empty_score),
        "iou": iou_from_counts(c.tp, c.fp, c.fn, empty_score=empty_score),
        "truth_pixels": c.truth_pixels,
        "pred_pixels": c.pred_pixels,
        "tp": c.tp,
        "fp": c.fp,
        "fn": c.fn,
        "image_pixels": c.image_pixels,
        "lesion_fraction": c.truth_pixels / c.image_pixels,
        "size_bin": lesion_size_bin(c.truth_pixels, c.image_pixels),
    }
    for key, value in (subgroups or {}).items():
        if key in row:
            raise EvaluationInputError(f"subgroup name {key!r} clashes with a score column")
        row[str(key)] = None if value is None else str(value)
    return row


def scores_frame(rows: Sequence[Mapping[str, object]]) -> pd.DataFrame:
    """Rows from :func:`score_row` → the typed per-image table (empty table if no rows)."""
    df = pd.DataFrame(list(rows))
    if df.empty:
        df = pd.DataFrame({c: pd.Series(dtype=object) for c in SCORE_COLUMNS})
    dupes = df["case_id"][df["case_id"].duplicated()].unique().tolist()
    if dupes:
        raise EvaluationInputError(f"duplicate case ids: {dupes[:5]}")
    for col in ("truth_pixels", "pred_pixels", "tp", "fp", "fn", "image_pixels"):
        df[col] = df[col].astype("int64")
    for col in ("dice", "iou", "lesion_fraction"):
        df[col] = df[col].astype("float64")
    return df


def per_image_scores(cases: Iterable[MaskPair], *, empty_score: float = 1.0) -> pd.DataFrame:
    """One row per image: ids, Dice, IoU, pixel counts, size bin, then the subgroup columns."""
    rows = [
        score_row(c.case_id, c.patient_id, c.pred, c.truth, c.subgroups, empty_score=empty_score)
        for c in cases
    ]
    return scores_frame(rows)


# -- threshold on validation ----------------------------------------------------------------
def _check_candidates(candidates: Sequence[float] | np.ndarray) -> np.ndarray:
    cand = np.asarray(candidates, dtype=np.float64).ravel()
    if cand.size == 0:
        raise EvaluationInputError("no candidate thresholds")
    if not np.isfinite(cand).all() or cand.min() < 0.0 or cand.max() > 1.0:
        raise EvaluationInputError("candidate thresholds must be finite and within [0, 1]")
    if np.unique(cand).size != cand.size:
        raise EvaluationInputError("candidate thresholds must be distinct")
    return np.sort(cand)


def threshold_counts(
    prob: np.ndarray, truth: np.ndarray, thresholds: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tp, fp, fn) arrays, one entry per threshold (sorted ascending), for ``prob >= t``.

    One pass over the image whatever the number of thresholds (histogram of the probabilities).
    """
    p = as_prob(prob)
    t = as_mask(truth, "truth")
    _same_shape(p, t, "prob vs truth")
    cand = _check_candidates(thresholds)
    k = cand.size

    typed = cand.astype(p.dtype)  # compare in the map's own dtype, exactly as binarize() does

    def n_at_or_above(values: np.ndarray) -> np.ndarray:
        # searchsorted(side="right") = number of thresholds <= value, i.e. value >= cand[:idx]
        idx = np.searchsorted(typed, values, side="right")
        hist = np.bincount(idx, minlength=k + 1)  # hist[j]: values passing exactly j thresholds
        return np.cumsum(hist[::-1])[::-1][1:]  # [i]: values passing threshold i

    tp = n_at_or_above(p[t])
    fp = n_at_or_above(p[~t])
    fn = int(np.count_nonzero(t)) - tp
    return tp.astype(np.int64), fp.astype(np.int64), fn.astype(np.int64)


def threshold_sweep(
    prob_maps: Iterable[np.ndarray],
    truths: Iterable[np.ndarray],
    candidates: Sequence[float] | np.ndarray = DEFAULT_THRESHOLD_CANDIDATES,
    *,
    empty_score: float = 1.0,
) -> pd.DataFrame:
    """Mean per-image Dice and pooled Dice for each candidate threshold (streams the maps)."""
    cand = _check_candidates(candidates)
    dice_sum = np.zeros(cand.size)
    tp_sum = np.zeros(cand.size)
    fp_sum = np.zeros(cand.size)
    fn_sum = np.zeros(cand.size)
    n = 0
    for prob, truth in _strict_zip(prob_maps, truths, "prob_maps", "truths"):
        tp, fp, fn = threshold_counts(prob, truth, cand)
        den = 2 * tp + fp + fn
        with np.errstate(invalid="ignore", divide="ignore"):
            d = np.where(den == 0, empty_score, 2 * tp / np.maximum(den, 1))
        dice_sum += d
        tp_sum += tp
        fp_sum += fp
        fn_sum += fn
        n += 1
    if n == 0:
        raise EvaluationInputError("no validation images to choose a threshold on")
    pooled_den = 2 * tp_sum + fp_sum + fn_sum
    pooled = np.where(pooled_den == 0, empty_score, 2 * tp_sum / np.maximum(pooled_den, 1))
    return pd.DataFrame(
        {"threshold": cand, "dice_mean": dice_sum / n, "dice_pooled": pooled, "n_images": n}
    )


def choose_threshold(
    prob_maps: Iterable[np.ndarray],
    truths: Iterable[np.ndarray],
    candidates: Sequence[float] | np.ndarray = DEFAULT_THRESHOLD_CANDIDATES,
    *,
    empty_score: float = 1.0,
) -> float:
    """The candidate maximising the mean per-image Dice — call it on the **validation** split only.

    Choosing it on the test split would make the test score optimistic. Ties go to the smallest
    threshold.
    """
    sweep = threshold_sweep(prob_maps, truths, candidates, empty_score=empty_score)
    return float(sweep["threshold"].iloc[int(np.argmax(sweep["dice_mean"].to_numpy()))])
