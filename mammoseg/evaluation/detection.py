"""Lesion-level (detection) view: connected components, lesion hits, FROC.

Coordinates: pixel ``(row, column)`` = ``(y, x)`` of the original image, top-left origin, pixel
centres at integer coordinates (the convention of ``mask_geometry`` in the lesion table). A
MIAS circle is given in that convention too: flip MIAS's bottom-left ``y`` first
(``cy = height - y``).

Rules (also in ``docs/evaluation.md``):

* A *component* is an 8-connected region of the binary prediction with at least ``min_area``
  pixels (default 1: nothing is filtered away unless asked). Its *score* is the highest
  probability inside it.
* A lesion is **hit** when the centroid of some component lies inside it (inside the mask, the
  centroid rounded to the nearest pixel; or within the circle, ``(x-cx)² + (y-cy)² <= r²``).
  A lesion hit by several components counts once; a component whose centroid lies inside two
  overlapping lesions hits both. A component whose centroid lies inside no lesion is a **false
  positive**. A component that covers two lesions with its centroid between them hits neither
  and counts as one false positive — merged blobs are penalised.
* **FROC**: for every threshold ``t`` the components of ``prob >= t`` are recomputed (components
  split and shrink as ``t`` rises, so thresholding component scores from one base map would be
  wrong when blobs split). Sensitivity = hit lesions / all lesions; FP per image = false-positive
  components / all images (normal images included).
* **Operating points** (:func:`froc_operating_points`, what the evaluation reports): at every
  swept threshold, the marks (components, at most ``top_k`` per image) are also cut by their
  score, from the highest down, as a reader of the lesion list would: the FROC of CAD studies.
  A threshold sweep alone jumps from no mark to every mark when the probabilities cluster.
* :func:`sensitivity_at_fp` returns the best sensitivity among the given points whose FP/image is
  at most the rate — an achievable operating point, not an interpolation. When no point is that
  strict it returns 0.0 (the curve's implicit start: a threshold above every score detects
  nothing), a lower bound.
* :func:`lesion_list` is the detection *output* of one image (what ``mammoseg predict`` writes):
  the components of ``prob >= threshold`` with their scores, highest score first, at most
  ``top_k``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple, TypeAlias

import cv2
import numpy as np
import pandas as pd

from mammoseg.evaluation.metrics import EvaluationInputError, as_mask, as_prob, binarize

#: Thresholds swept for the FROC curve.
DEFAULT_FROC_THRESHOLDS: Final = np.round(np.append(np.arange(0.05, 0.951, 0.05), 0.99), 2)


# -- components -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Component:
    """One connected region of a binary prediction.

    ``centroid`` is ``(y, x)`` in pixels; ``bbox`` is ``(y0, x0, y1, x1)`` with exclusive ends;
    ``score`` is the maximum probability inside (NaN when no probability map was given).
    """

    centroid: tuple[float, float]
    area: int
    bbox: tuple[int, int, int, int]
    score: float = float("nan")


def _label(mask: np.ndarray) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    return cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8, ltype=cv2.CV_32S)


def _max_per_label(labels: np.ndarray, prob: np.ndarray, n: int) -> np.ndarray:
    fg = labels > 0
    scores = np.full(n, -np.inf)
    np.maximum.at(scores, labels[fg], prob[fg].astype(np.float64))
    return scores


def components(
    pred: np.ndarray, min_area: int = 1, *, prob: np.ndarray | None = None
) -> list[Component]:
    """8-connected components of ``pred`` with ``area >= min_area``, in label (raster) order.

    With ``prob`` (same shape), each component's ``score`` is the maximum probability inside it.
    An empty prediction gives an empty list.
    """
    mask = as_mask(pred, "pred")
    if min_area < 1:
        raise EvaluationInputError("min_area must be >= 1")
    if prob is not None:
        prob = as_prob(prob)
        if prob.shape != mask.shape:
            raise EvaluationInputError(f"prob shape {prob.shape} != pred shape {mask.shape}")
    n, labels, stats, cents = _label(mask)
    scores = _max_per_label(labels, prob, n) if prob is not None else None
    out = []
    for i in range(1, n):
        area = int(stats[i, cv2.CC_STAT_AREA])
        if area < min_area:
            continue
        x0, y0 = int(stats[i, cv2.CC_STAT_LEFT]), int(stats[i, cv2.CC_STAT_TOP])
        w, h = int(stats[i, cv2.CC_STAT_WIDTH]), int(stats[i, cv2.CC_STAT_HEIGHT])
        out.append(
            Component(
                centroid=(float(cents[i, 1]), float(cents[i, 0])),
                area=area,
                bbox=(y0, x0, y0 + h, x0 + w),
                score=float(scores[i]) if scores is not None else float("nan"),
            )
        )
    return out


@dataclass(frozen=True)
class DetectedLesion:
    """One lesion of the detection output: a component of ``prob >= threshold``.

    ``score`` is the highest probability inside; ``bbox`` is ``(y0, x0, y1, x1)`` with exclusive
    ends; ``area`` in pixels; ``centroid`` is ``(y, x)``. Pixel coordinates of the map it was
    computed on, top-left origin.
    """

    score: float
    bbox: tuple[int, int, int, int]
    area: int
    centroid: tuple[float, float]

    def to_dict(self) -> dict[str, object]:
        """Plain JSON types only: ``{"score", "bbox": [y0, x0, y1, x1], "area", "centroid": [y, x]}``."""
        return {
            "score": float(self.score),
            "bbox": [int(v) for v in self.bbox],
            "area": int(self.area),
            "centroid": [float(v) for v in self.centroid],
        }


def lesion_list(
    prob: np.ndarray, threshold: float, *, min_area: int = 1, top_k: int = 5
) -> list[DetectedLesion]:
    """The detected lesions of one probability map, highest score first, at most ``top_k``.

    The 8-connected components of ``prob >= threshold`` (compared in the map's dtype, as
    :func:`~mammoseg.evaluation.metrics.binarize` does) with at least ``min_area`` pixels. Equal
    scores keep raster order (top-most first).
    """
    if top_k < 1:
        raise EvaluationInputError("top_k must be >= 1")
    comps = components(binarize(prob, threshold), min_area, prob=prob)
    ranked = sorted(comps, key=lambda c: -c.score)  # stable: ties stay in raster order
    return [
        DetectedLesion(score=c.score, bbox=c.bbox, area=c.area, centroid=c.centroid)
        for c in ranked[:top_k]
    ]


# -- lesions --------------------------------------------------------------------------------
@dataclass(frozen=True)
class CircleLesion:
    """A circular lesion (MIAS): centre ``(cx, cy)`` and radius ``r`` in pixels, top-left origin."""

    cx: float
    cy: float
    r: float

    def contains(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        ys, xs = np.asarray(ys, dtype=float), np.asarray(xs, dtype=float)
        return (xs - self.cx) ** 2 + (ys - self.cy) ** 2 <= self.r**2


@dataclass(frozen=True, eq=False)
class MaskLesion:
    """A lesion mask kept as its bounding-box crop (``crop`` bool) placed at ``(y0, x0)``.

    Memory stays proportional to the lesion, not to the image.
    """

    crop: np.ndarray
    y0: int
    x0: int
    image_shape: tuple[int, int]

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> MaskLesion:
        """Crop a full-size lesion mask; raises if it has no pixel."""
        m = as_mask(mask, "lesion mask")
        ys, xs = np.nonzero(m)
        if ys.size == 0:
            raise EvaluationInputError("a lesion mask has no pixel")
        y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
        return cls(crop=m[y0:y1, x0:x1].copy(), y0=y0, x0=x0, image_shape=m.shape)

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.crop))

    def contains(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Whether points (pixel centres; floats are rounded to the nearest pixel) are inside."""
        yi = np.floor(np.asarray(ys, dtype=float) + 0.5).astype(np.int64) - self.y0
        xi = np.floor(np.asarray(xs, dtype=float) + 0.5).astype(np.int64) - self.x0
        h, w = self.crop.shape
        ok = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
        out = np.zeros(yi.shape, dtype=bool)
        out[ok] = self.crop[yi[ok], xi[ok]]
        return out


#: What callers may pass as a lesion: a full-size bool mask, a circle, or ``(cx, cy, r)``.
Lesion: TypeAlias = np.ndarray | CircleLesion | MaskLesion | tuple[float, float, float]


def as_lesion(lesion: Lesion, shape: tuple[int, int] | None = None) -> CircleLesion | MaskLesion:
    """Normalise one lesion; checks it against the image ``shape`` when given."""
    if isinstance(lesion, MaskLesion):
        out: CircleLesion | MaskLesion = lesion
        if shape is not None and tuple(lesion.image_shape) != tuple(shape):
            raise EvaluationInputError(
                f"lesion mask shape {lesion.image_shape} != image shape {tuple(shape)}"
            )
        return out
    if isinstance(lesion, np.ndarray):
        if shape is not None and lesion.shape != tuple(shape):
            raise EvaluationInputError(
                f"lesion mask shape {lesion.shape} != image shape {tuple(shape)}"
            )
        return MaskLesion.from_mask(lesion)
    if isinstance(lesion, CircleLesion):
        circle = lesion
    elif isinstance(lesion, tuple | list) and len(lesion) == 3:
        circle = CircleLesion(*(float(v) for v in lesion))
    else:
        raise EvaluationInputError(
            f"a lesion must be a bool mask, a CircleLesion or (cx, cy, r); got {type(lesion)}"
        )
    if not all(np.isfinite([circle.cx, circle.cy, circle.r])) or circle.r <= 0:
        raise EvaluationInputError(f"invalid circle lesion {circle}: radius must be > 0")
    if shape is not None:
        h, w = shape
        # nearest image point to the centre must be within r: the circle touches the image
        ny = min(max(circle.cy, 0.0), h - 1.0)
        nx = min(max(circle.cx, 0.0), w - 1.0)
        if (nx - circle.cx) ** 2 + (ny - circle.cy) ** 2 > circle.r**2:
            raise EvaluationInputError(f"circle lesion {circle} lies outside the {h}x{w} image")
    return circle


def lesions_from_truth(truth: np.ndarray) -> list[MaskLesion]:
    """One lesion per 8-connected component of a truth mask (when no per-lesion masks exist)."""
    mask = as_mask(truth, "truth")
    n, labels, stats, _ = _label(mask)
    out = []
    for i in range(1, n):
        x0, y0 = int(stats[i, cv2.CC_STAT_LEFT]), int(stats[i, cv2.CC_STAT_TOP])
        w, h = int(stats[i, cv2.CC_STAT_WIDTH]), int(stats[i, cv2.CC_STAT_HEIGHT])
        crop = labels[y0 : y0 + h, x0 : x0 + w] == i
        out.append(MaskLesion(crop=crop, y0=y0, x0=x0, image_shape=mask.shape))
    return out


def lesion_from_geometry(
    geometry: str | Mapping[str, object], shape: tuple[int, int]
) -> CircleLesion | MaskLesion:
    """A lesion from the lesion table's ``mask_geometry`` JSON (circle or polygon)."""
    geo = json.loads(geometry) if isinstance(geometry, str) else dict(geometry)
    kind = geo.get("type")
    if kind == "circle":
        return as_lesion(CircleLesion(float(geo["cx"]), float(geo["cy"]), float(geo["r"])), shape)
    if kind == "polygon":
        pts = np.asarray(geo.get("points", []), dtype=np.float64)
        if pts.ndim != 2 or pts.shape[0] < 3 or pts.shape[1] != 2:
            raise EvaluationInputError("a polygon geometry needs at least 3 [x, y] points")
        mask = np.zeros(shape, dtype=np.uint8)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32).reshape(-1, 1, 2)], 1)
        return MaskLesion.from_mask(mask.astype(bool))
    raise EvaluationInputError(f"unknown mask geometry type {kind!r}")


# -- matching -------------------------------------------------------------------------------
class LesionMatch(NamedTuple):
    """``hits[i]``: lesion ``i`` was hit; ``false_positives``: components inside no lesion."""

    hits: list[bool]
    false_positives: list[Component]


def _inside(centroids: np.ndarray, lesions: Sequence[CircleLesion | MaskLesion]) -> np.ndarray:
    """(n_components, n_lesions) bool: centroid of component i inside lesion j."""
    out = np.zeros((centroids.shape[0], len(lesions)), dtype=bool)
    if centroids.shape[0]:
        for j, les in enumerate(lesions):
            out[:, j] = les.contains(centroids[:, 0], centroids[:, 1])
    return out


def match_lesions(
    components: Sequence[Component],
    lesions: Sequence[Lesion],
    *,
    shape: tuple[int, int] | None = None,
) -> LesionMatch:
    """Which lesions are hit by a component centroid, and which components are false positives.

    ``shape`` (image height, width), when given, is checked against mask lesions and circles.
    """
    norm = [as_lesion(les, shape) for les in lesions]
    cents = np.array([c.centroid for c in components], dtype=float).reshape(-1, 2)
    inside = _inside(cents, norm)
    hits = inside.any(axis=0).tolist() if norm else []
    fps = [c for c, hit in zip(components, inside.any(axis=1), strict=True) if not hit]
    return LesionMatch(hits=[bool(h) for h in hits], false_positives=fps)


# -- FROC -----------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class DetectionCounts:
    """Per-threshold detection counts of one image: what the streaming evaluation keeps."""

    thresholds: np.ndarray  # float64, ascending
    hits: np.ndarray  # int64, hit lesions at each threshold
    false_positives: np.ndarray  # int64, FP components at each threshold
    n_lesions: int
    max_score: float  # highest probability in the image (component scores are below it)
    #: per threshold, the counted marks (after ``top_k``): their scores ``[m]`` and which lesions
    #: each one hits ``[m, n_lesions]`` (bool), for the score sweep of :func:`froc_operating_points`
    mark_scores: tuple[np.ndarray, ...] = ()
    mark_hits: tuple[np.ndarray, ...] = ()


def _check_thresholds(thresholds: Sequence[float] | np.ndarray) -> np.ndarray:
    t = np.asarray(thresholds, dtype=np.float64).ravel()
    if t.size == 0 or not np.isfinite(t).all() or t.min() <= 0.0 or t.max() > 1.0:
        raise EvaluationInputError("FROC thresholds must be finite and within (0, 1]")
    if np.unique(t).size != t.size:
        raise EvaluationInputError("FROC thresholds must be distinct")
    return np.sort(t)


def detection_counts(
    prob: np.ndarray,
    lesions: Sequence[Lesion],
    thresholds: Sequence[float] | np.ndarray = DEFAULT_FROC_THRESHOLDS,
    *,
    min_area: int = 1,
    top_k: int | None = None,
) -> DetectionCounts:
    """Hits and false positives of one image at every threshold (exact: components recomputed).

    ``top_k``: at each threshold only the ``top_k`` components with the highest score (highest
    probability inside; ties: raster order) count, as in the lesion list that ``predict`` writes
    (:func:`lesion_list`); ``None`` counts every component.

    Cost: one labelling of the full image at the lowest threshold, then work inside each
    candidate region only (components at a higher threshold lie inside those at a lower one).
    """
    p = as_prob(prob)
    if min_area < 1:
        raise EvaluationInputError("min_area must be >= 1")
    if top_k is not None and top_k < 1:
        raise EvaluationInputError("top_k must be >= 1 (or None)")
    thr = _check_thresholds(thresholds)
    norm = [as_lesion(les, p.shape) for les in lesions]
    k = thr.size
    # per threshold: the components' scores and which lesions each one hits
    found: list[list[tuple[float, np.ndarray]]] = [[] for _ in range(k)]

    typed = thr.astype(p.dtype)  # compare in the map's dtype, exactly as binarize() does
    n, labels, stats, _ = _label(p >= typed[0])
    scores = _max_per_label(labels, p, n)
    for i in range(1, n):
        if stats[i, cv2.CC_STAT_AREA] < min_area:
            continue  # every component inside it at a higher threshold is smaller still
        x0, y0 = int(stats[i, cv2.CC_STAT_LEFT]), int(stats[i, cv2.CC_STAT_TOP])
        w, h = int(stats[i, cv2.CC_STAT_WIDTH]), int(stats[i, cv2.CC_STAT_HEIGHT])
        region = labels[y0 : y0 + h, x0 : x0 + w] == i
        sub = p[y0 : y0 + h, x0 : x0 + w]
        for j in range(k):
            if scores[i] < typed[j]:
                break  # nothing of this region survives this or any higher threshold
            if j == 0:
                cents = np.array([[_centroid(region)]], dtype=float).reshape(1, 2)
                comp_scores = np.array([scores[i]], dtype=float)
            else:
                m, lab, st, ce = _label(region & (sub >= typed[j]))
                keep = st[1:m, cv2.CC_STAT_AREA] >= min_area
                cents = ce[1:m][keep][:, ::-1].astype(float)  # (x, y) -> (y, x)
                comp_scores = _max_per_label(lab, sub, m)[1:m][keep].astype(float)
            if cents.shape[0] == 0:
                continue
            cents = cents + np.array([y0, x0], dtype=float)
            inside = _inside(cents, norm)
            found[j].extend(zip(comp_scores.tolist(), list(inside), strict=True))
    hits = np.zeros(k, dtype=np.int64)
    fps = np.zeros(k, dtype=np.int64)
    mark_scores, mark_hits = [], []
    for j, comps in enumerate(found):
        if top_k is not None and len(comps) > top_k:
            order = sorted(range(len(comps)), key=lambda c: -comps[c][0])  # stable: raster order on ties
            comps = [comps[c] for c in order[:top_k]]
        hit_any = np.zeros(len(norm), dtype=bool)
        for _, row in comps:
            hit_any |= row
            fps[j] += int(not row.any())
        hits[j] = int(hit_any.sum())
        mark_scores.append(np.array([c[0] for c in comps], dtype=np.float64))
        mark_hits.append(np.array([c[1] for c in comps], dtype=bool).reshape(len(comps), len(norm)))
    return DetectionCounts(
        thresholds=thr,
        hits=hits,
        false_positives=fps,
        n_lesions=len(norm),
        max_score=float(p.max()),
        mark_scores=tuple(mark_scores),
        mark_hits=tuple(mark_hits),
    )


def _centroid(region: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(region)
    return float(ys.mean()), float(xs.mean())


def froc_from_counts(counts: Iterable[DetectionCounts]) -> pd.DataFrame:
    """Sum per-image counts into FROC points (columns in :func:`froc_points`)."""
    items = list(counts)
    if not items:
        raise EvaluationInputError("no images for the FROC")
    thr = items[0].thresholds
    for c in items[1:]:
        if c.thresholds.shape != thr.shape or not np.array_equal(c.thresholds, thr):
            raise EvaluationInputError("all images must be swept over the same thresholds")
    hits = np.sum([c.hits for c in items], axis=0)
    fps = np.sum([c.false_positives for c in items], axis=0)
    n_lesions = int(sum(c.n_lesions for c in items))
    n_images = len(items)
    sens = hits / n_lesions if n_lesions else np.full(thr.size, np.nan)
    return pd.DataFrame(
        {
            "threshold": thr,
            "sensitivity": sens.astype(float),
            "fp_per_image": fps / n_images,
            "hits": hits.astype(np.int64),
            "n_lesions": n_lesions,
            "false_positives": fps.astype(np.int64),
            "n_images": n_images,
        }
    )


def froc_operating_points(counts: Iterable[DetectionCounts]) -> pd.DataFrame:
    """Every achievable operating point of the detector: a probability threshold ``t`` (the
    swept thresholds) *and* a cut-off ``min_score`` on the marks' scores (the score of every mark
    of the lesion list at ``t``, from the highest down; a reader keeps the marks scoring at least
    that). Columns: threshold, min_score, sensitivity, fp_per_image, hits, false_positives,
    n_lesions, n_images.

    This is the FROC of CAD studies: the marks of a fixed detector ranked by their scores.
    Sweeping ``t`` alone would jump from no mark to every mark of ``prob >= t`` when the
    probabilities cluster (a model trained with a focal loss is rarely above 0.6 anywhere), so
    "sensitivity at 1 FP/image" could read 0 where cutting the weakest marks gives a real
    operating point. The rows with ``min_score = 0`` are :func:`froc_from_counts`'s points.
    """
    items = list(counts)
    if not items:
        raise EvaluationInputError("no images for the FROC")
    if any(len(c.mark_scores) != c.thresholds.size for c in items):
        raise EvaluationInputError("the detection counts carry no marks (made by an older version)")
    thr = items[0].thresholds
    n_images = len(items)
    n_lesions = int(sum(c.n_lesions for c in items))
    offsets = np.cumsum([0] + [c.n_lesions for c in items])
    rows: list[dict[str, float | int]] = []
    for j, t in enumerate(thr):
        scores = np.concatenate([c.mark_scores[j] for c in items])
        # global lesion index hit by each mark (-1: a false positive); a mark may hit several
        fp = np.concatenate([~c.mark_hits[j].any(axis=1) for c in items])
        order = np.argsort(-scores, kind="stable")
        scores, fp = scores[order], fp[order]
        position = np.empty(order.size, dtype=np.int64)
        position[order] = np.arange(order.size)
        first_hit = np.full(n_lesions, np.iinfo(np.int64).max)
        start = 0
        for i, c in enumerate(items):
            m = c.mark_scores[j].size
            marks, lesions = np.nonzero(c.mark_hits[j])
            np.minimum.at(first_hit, offsets[i] + lesions, position[start + marks])
            start += m
        first_hit = np.sort(first_hit)
        cum_fp = np.cumsum(fp)
        # one point per distinct score: the last mark of each run of equal scores
        last = np.flatnonzero(np.append(scores[1:] != scores[:-1], True)) if scores.size else []
        for k in last:
            hits = int(np.searchsorted(first_hit, k, side="right"))
            rows.append({"threshold": float(t), "min_score": float(scores[k]),
                         "sensitivity": hits / n_lesions if n_lesions else float("nan"),
                         "fp_per_image": float(cum_fp[k]) / n_images, "hits": hits,
                         "false_positives": int(cum_fp[k])})
    # the curve's start: a cut-off above every score keeps no mark
    rows.append({"threshold": float(thr[-1]), "min_score": float("inf"), "sensitivity": 0.0 if n_lesions else
                 float("nan"), "fp_per_image": 0.0, "hits": 0, "false_positives": 0})
    frame = pd.DataFrame(rows, columns=["threshold", "min_score", "sensitivity", "fp_per_image", "hits",
                                        "false_positives"])
    frame["n_lesions"] = n_lesions
    frame["n_images"] = n_images
    return frame


def froc_points(
    per_image_probs: Iterable[np.ndarray],
    lesions_per_image: Iterable[Sequence[Lesion]],
    thresholds: Sequence[float] | np.ndarray = DEFAULT_FROC_THRESHOLDS,
    *,
    min_area: int = 1,
) -> pd.DataFrame:
    """FROC over images (streamed): threshold, sensitivity, fp_per_image, and the raw counts.

    Sensitivity is NaN when there is no lesion at all.
    """
    counts = []
    try:
        for prob, lesions in zip(per_image_probs, lesions_per_image, strict=True):
            counts.append(detection_counts(prob, lesions, thresholds, min_area=min_area))
    except ValueError as exc:
        if "zip()" in str(exc):
            raise EvaluationInputError(
                "probability maps and lesion lists differ in number"
            ) from None
        raise
    return froc_from_counts(counts)


def sensitivity_at_fp(froc: pd.DataFrame, fp_rate: float = 2.0) -> float:
    """Best sensitivity over thresholds with ``fp_per_image <= fp_rate`` (0.0 if none; NaN if
    there are no lesions). No interpolation: the value is an achievable operating point."""
    if fp_rate < 0:
        raise EvaluationInputError("fp_rate must be >= 0")
    if froc.empty or froc["sensitivity"].isna().all():
        return float("nan")
    ok = froc[froc["fp_per_image"] <= fp_rate]
    return float(ok["sensitivity"].max()) if len(ok) else 0.0
