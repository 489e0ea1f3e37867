"""The pectoral muscle of MLO views: a bright triangle in the chest-wall corner at the top.

After preprocessing (:func:`~mammoseg.preprocess.preprocess_arrays`) the chest wall is on the
left edge, so on an MLO view the pectoral muscle is a bright, roughly triangular region in the
top-left corner of the breast, bounded by a roughly straight edge that runs from the top edge
down to the chest-wall edge. :func:`pectoral_mask` finds that triangle (all False when there is
none, e.g. on CC views) so that predictions inside it can be suppressed; :func:`fit_pectoral`
returns the fitted line and the evidence for it.

The rule (parameters in :class:`PectoralParams`, pixel sizes at the working resolution):

1. **Working copy.** Image and breast mask are resized (INTER_AREA) so that the longer side is
   ``work_size`` px; the image is blurred (Gaussian ``blur_sigma`` px) and its intensities are
   normalised by the breast's own spread: ``(v - p5) / (p95 - p5)`` over breast pixels, so
   contrasts below are fractions of that spread (the input may be CLAHE'd, 8- or 16-bit).
2. **Candidate lines.** The corner is the top-left corner of the breast's bounding box
   (``x0``, ``y0``); a line ``X cos t + Y sin t = rho`` (``X``, ``Y`` measured from that corner,
   normal angle ``t`` in ``angles_deg``) cuts off the triangle ``X cos t + Y sin t < rho``
   with legs ``a = rho / cos t`` along the top and ``b = rho / sin t`` down the chest wall.
   Every angle and every offset (step ``rho_step`` px) is scored at once from cumulative
   histograms of the signed distance to the line.
3. **Plausible geometry.** The breast covers at least ``min_coverage`` of the triangle and at
   least ``min_top_coverage`` of its top leg (the columns ``0..a`` of the breast's first
   ``top_rows`` rows): the line meets the top edge and the chest-wall edge inside the breast,
   as on an MLO view, where the muscle runs out of the image at the top (on a CC view the top
   of the breast is a curved skin line, which the top leg would leave); the triangle holds
   ``min_area``–``max_area`` of the breast; ``a`` is at most ``max_top`` of the breast's
   width and ``b`` at most ``max_side`` of its height; ``b / a`` lies in ``aspect`` (a
   muscle edge is steeper than a horizontal fold and not a thin band down the whole chest wall).
4. **Evidence.** ``edge`` = mean of the band ``gap_px``..``gap_px + band_px`` inside the line
   minus the same band outside (breast pixels only); ``region`` = mean of the whole triangle
   minus the outside band. The ``top_k`` plausible lines with the largest
   ``edge * sqrt(line length in the breast)`` are checked in that order, and the first that
   passes both checks is kept (else the strongest is reported, not found):

   * *along its length*: the bands are cut into ``segments`` pieces from the top edge to the
     chest wall; at least ``min_segments`` pieces must have an inside-minus-outside contrast
     of ``segment_contrast`` or more (a muscle edge runs all the way, a chance alignment of
     tissue does not);
   * *uniformly brighter*: at least ``min_brighter`` of the triangle's pixels are brighter
     than the median of the outside band (a muscle is a bright region, not bright blobs).
5. **Decision.** The muscle is found when that line also has ``edge >= min_edge`` and
   ``region >= min_region``; the mask is the corner side of the line intersected with the
   breast, evaluated at the input resolution (a smooth, straight cut, not the working grid).

Measured on real CDD-CESM low-energy views preprocessed at 256 px (see
``tests/unit/test_pectoral.py``): it fires on 77% of MLO views (most misses are views whose chest
wall ended up on the right, or faint muscles) and 2% of CC views; 1.8% of the lesion pixels of
MLO views fall inside the detected muscle (lesions of the axillary tail, at the muscle edge).

Pure numpy + OpenCV; inputs are never modified.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import cv2
import numpy as np


@dataclass(frozen=True)
class PectoralParams:
    """Parameters of :func:`fit_pectoral` (see the module docstring for the rule).

    Sizes are in pixels of the working copy (longer side ``work_size``); contrasts are
    fractions of the breast's 5th–95th percentile intensity spread; areas and legs are
    fractions of the breast's area / bounding box.
    """

    work_size: int = 128
    blur_sigma: float = 1.0
    angles_deg: tuple[float, float, float] = (4.0, 86.0, 2.0)  # start, stop (inclusive), step
    rho_step: float = 0.5
    band_px: float = 5.0
    gap_px: float = 1.0
    min_coverage: float = 0.85
    top_rows: int = 2
    min_top_coverage: float = 0.9
    min_area: float = 0.01
    max_area: float = 0.35
    max_top: float = 0.8
    max_side: float = 0.95
    aspect: tuple[float, float] = (0.5, 20.0)
    min_band_px: int = 20
    top_k: int = 25
    segments: int = 4
    segment_contrast: float = 0.05
    min_segments: int = 3
    min_brighter: float = 0.85
    min_edge: float = 0.2
    min_region: float = 0.1

    def __post_init__(self) -> None:
        problems = []
        if self.work_size < 32:
            problems.append(f"work_size must be >= 32 (got {self.work_size})")
        lo, hi, step = self.angles_deg
        if not (0.0 < lo <= hi < 90.0 and step > 0):
            problems.append(
                f"angles_deg must be 0 < start <= stop < 90, step > 0 ({self.angles_deg})"
            )
        if not 0.0 <= self.min_area < self.max_area <= 1.0:
            problems.append(
                f"need 0 <= min_area < max_area <= 1 ({self.min_area}, {self.max_area})"
            )
        if self.band_px <= 0 or self.gap_px < 0 or self.rho_step <= 0 or self.blur_sigma < 0:
            problems.append("band_px and rho_step must be > 0, gap_px and blur_sigma >= 0")
        if not 1 <= self.min_segments <= self.segments:
            problems.append(
                f"need 1 <= min_segments <= segments ({self.min_segments}, {self.segments})"
            )
        if not 0.0 < self.aspect[0] < self.aspect[1]:
            problems.append(f"aspect must be 0 < low < high ({self.aspect})")
        if problems:
            raise ValueError("; ".join(problems))


class PectoralFit(NamedTuple):
    """The best plausible line of :func:`fit_pectoral`, in *input* pixel coordinates.

    The line joins ``top`` (a point ``(row, col)`` on the breast's top edge) and ``side`` (on its
    chest-wall edge); ``found`` says whether the evidence passed the thresholds. ``edge``,
    ``region``, ``segments_ok`` and ``brighter`` are the evidence (see the module docstring);
    ``area`` the fraction of the breast on the corner side of the line; ``texture`` (reported,
    not used) the intensity spread of that side over the spread of the rest of the breast.
    """

    found: bool
    top: tuple[float, float]
    side: tuple[float, float]
    edge: float
    region: float
    segments_ok: int
    brighter: float
    area: float
    texture: float


_COLUMNS = ("theta", "rho", "a", "b", "coverage", "top", "area", "edge", "region", "length")


def _working_copy(
    image: np.ndarray, breast: np.ndarray, p: PectoralParams
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Blurred float32 image and bool breast at the working size, and the (row, col) scales
    from input to working pixels. New arrays: the inputs are only read."""
    h, w = image.shape
    scale = min(1.0, p.work_size / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    img = image.astype(np.float32)  # a copy, contiguous even for a mirrored view
    if scale < 1.0:
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        bm = cv2.resize(breast.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0.5
    else:
        bm = breast.copy()
    if p.blur_sigma > 0:
        img = cv2.GaussianBlur(img, (0, 0), p.blur_sigma, borderType=cv2.BORDER_REFLECT)
    return img, bm, size[1] / h, size[0] / w


class _Cumulative(NamedTuple):
    """Cumulative pixel counts and intensity sums over distance bins of width ``step``."""

    count: np.ndarray
    total: np.ndarray
    step: float

    def between(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(pixel count, intensity sum) of the pixels at distance ``lo``..``hi`` (rounded to
        bins), per element."""
        n = self.count.size - 1
        i = np.clip(np.round(lo / self.step).astype(np.int64), 0, n)
        j = np.clip(np.round(hi / self.step).astype(np.int64), 0, n)
        return self.count[j] - self.count[i], self.total[j] - self.total[i]


def _candidates(
    X: np.ndarray,
    Y: np.ndarray,
    V: np.ndarray,
    width: float,
    height: float,
    top_cum: np.ndarray,
    p: PectoralParams,
) -> np.ndarray:
    """One row per (angle, offset): the columns of ``_COLUMNS``, all lines, no filtering.

    ``top_cum[i]``: how many of the first ``i`` columns (from the corner) have breast in the
    top ``top_rows`` rows of the breast.
    """
    lo, hi, step = p.angles_deg
    thetas = np.deg2rad(np.arange(lo, hi + 1e-9, step))
    n_pix = float(V.size)
    rows = []
    for th in thetas:
        c, s = float(np.cos(th)), float(np.sin(th))
        d = X * c + Y * s
        nb = int(d.max() / p.rho_step) + 2
        k = np.minimum((d / p.rho_step).astype(np.int64), nb - 1)
        cum = _Cumulative(
            np.concatenate([[0.0], np.cumsum(np.bincount(k, minlength=nb))]),
            np.concatenate([[0.0], np.cumsum(np.bincount(k, V, minlength=nb))]),
            p.rho_step,
        )
        rho = np.arange(1, nb) * p.rho_step
        n_tri, s_tri = cum.between(np.zeros_like(rho), rho)
        n_in, s_in = cum.between(rho - p.gap_px - p.band_px, rho - p.gap_px)
        n_out, s_out = cum.between(rho + p.gap_px, rho + p.gap_px + p.band_px)
        n_len, _ = cum.between(rho - 0.5, rho + 0.5)
        with np.errstate(divide="ignore", invalid="ignore"):
            out_mean = np.where(n_out >= p.min_band_px, s_out / n_out, np.nan)
            in_mean = np.where(n_in >= p.min_band_px, s_in / n_in, np.nan)
            tri_mean = np.where(n_tri > 0, s_tri / n_tri, np.nan)
        triangle = rho * rho / (2.0 * s * c)
        leg = np.maximum(np.ceil(rho / c), 1.0)  # top leg, in whole columns
        top_covered = top_cum[np.minimum(leg, top_cum.size - 1).astype(np.int64)]
        rows.append(
            np.stack(
                [
                    np.full_like(rho, th),
                    rho,
                    rho / c / width,
                    rho / s / height,
                    n_tri / np.maximum(triangle, 1.0),
                    top_covered / leg,
                    n_tri / n_pix,
                    in_mean - out_mean,
                    tri_mean - out_mean,
                    n_len,
                ],
                axis=1,
            )
        )
    return np.concatenate(rows) if rows else np.zeros((0, len(_COLUMNS)))


def _plausible(cand: np.ndarray, width: float, height: float, p: PectoralParams) -> np.ndarray:
    col = {name: cand[:, i] for i, name in enumerate(_COLUMNS)}
    aspect = (col["b"] * height) / np.maximum(col["a"] * width, 1e-9)
    ok = (
        np.isfinite(col["edge"])
        & np.isfinite(col["region"])
        & (col["coverage"] >= p.min_coverage)
        & (col["top"] >= p.min_top_coverage)
        & (col["area"] >= p.min_area)
        & (col["area"] <= p.max_area)
        & (col["a"] <= p.max_top)
        & (col["b"] <= p.max_side)
        & (aspect >= p.aspect[0])
        & (aspect <= p.aspect[1])
    )
    return cand[ok]


class _Check(NamedTuple):
    segments_ok: int
    brighter: float
    texture: float


def _check(
    X: np.ndarray, Y: np.ndarray, V: np.ndarray, theta: float, rho: float, p: PectoralParams
) -> _Check:
    """Evidence along one line: agreeing segments, the triangle's brighter fraction, texture."""
    c, s = np.cos(theta), np.sin(theta)
    d = X * c + Y * s
    corner = d < rho
    inside = (d >= rho - p.gap_px - p.band_px) & (d < rho - p.gap_px)
    outside = (d > rho + p.gap_px) & (d <= rho + p.gap_px + p.band_px)
    # position along the line, projected onto it: 0 at its top end (a, 0), 1 at (0, b)
    a, b = rho / c, rho / s
    u = ((a - X) * a + Y * b) / (a * a + b * b)
    seg = np.clip((u * p.segments).astype(np.int64), 0, p.segments - 1)
    good = 0
    min_n = max(3, p.min_band_px // (2 * p.segments))
    for i in range(p.segments):
        vi, vo = V[inside & (seg == i)], V[outside & (seg == i)]
        if vi.size >= min_n and vo.size >= min_n and vi.mean() - vo.mean() >= p.segment_contrast:
            good += 1
    tri, rest = V[corner], V[~corner]
    brighter = float(np.mean(tri > np.median(V[outside]))) if tri.size and outside.any() else 0.0
    texture = float(np.std(tri) / max(float(np.std(rest)), 1e-9)) if tri.size and rest.size else 0.0
    return _Check(good, brighter, texture)


def fit_pectoral(
    image: np.ndarray,
    breast_mask: np.ndarray,
    *,
    chest_wall: Literal["L", "R"] = "L",
    params: PectoralParams | None = None,
) -> PectoralFit | None:
    """The best plausible pectoral line of a preprocessed image, or None when no line is
    geometrically plausible (see the module docstring). ``fit.found`` says whether it passed
    the evidence thresholds. Coordinates are of the input (not mirrored for ``"R"``)."""
    p = params or PectoralParams()
    img = np.asarray(image)
    breast = np.asarray(breast_mask) != 0
    if img.ndim != 2 or img.size == 0:
        raise ValueError(f"image must be a non-empty 2-D array (got shape {img.shape})")
    if breast.shape != img.shape:
        raise ValueError(f"image {img.shape} and breast mask {breast.shape} differ in shape")
    if chest_wall not in ("L", "R"):
        raise ValueError(f"chest_wall must be 'L' or 'R' (got {chest_wall!r})")
    if chest_wall == "R":  # mirrored views (never in-place: fliplr returns views, read only)
        img, breast = img[:, ::-1], breast[:, ::-1]

    work, bm, sy, sx = _working_copy(img, breast, p)
    ys, xs = np.nonzero(bm)
    if ys.size < 4 * p.min_band_px:
        return None
    y0, x0 = int(ys.min()), int(xs.min())
    height, width = float(ys.max() + 1 - y0), float(xs.max() + 1 - x0)
    values = work[ys, xs]
    lo, hi = np.percentile(values, [5.0, 95.0])
    if not hi > lo:
        return None
    V = ((values - lo) / (hi - lo)).astype(np.float64)
    X = xs - x0 + 0.5
    Y = ys - y0 + 0.5

    top_band = bm[y0 : y0 + p.top_rows, x0:].any(axis=0)
    top_cum = np.concatenate([[0.0], np.cumsum(top_band)])
    cand = _plausible(_candidates(X, Y, V, width, height, top_cum, p), width, height, p)
    if cand.size == 0:
        return None
    ci = {name: i for i, name in enumerate(_COLUMNS)}
    score = cand[:, ci["edge"]] * np.sqrt(np.maximum(cand[:, ci["length"]], 0.0))
    order = np.argsort(-score, kind="stable")[: p.top_k]
    best: np.ndarray | None = None
    best_check = _Check(-1, 0.0, 0.0)
    for i in order:
        row = cand[i]
        if row[ci["edge"]] <= 0:
            break
        check = _check(X, Y, V, float(row[ci["theta"]]), float(row[ci["rho"]]), p)
        if check.segments_ok >= p.min_segments and check.brighter >= p.min_brighter:
            best, best_check = row, check
            break
        if best is None:  # reported when none qualifies: the strongest line
            best, best_check = row, check
    if best is None:
        best = cand[order[0]]
        best_check = _check(X, Y, V, float(best[ci["theta"]]), float(best[ci["rho"]]), p)

    theta, rho = float(best[ci["theta"]]), float(best[ci["rho"]])
    a, b = rho / np.cos(theta), rho / np.sin(theta)
    found = bool(
        best_check.segments_ok >= p.min_segments
        and best_check.brighter >= p.min_brighter
        and best[ci["edge"]] >= p.min_edge
        and best[ci["region"]] >= p.min_region
    )
    # The working corner (x0, y0) is a pixel *edge*; in input pixel-centre coordinates it is
    # (x0 / sx - 0.5, y0 / sy - 0.5), and the line's ends are a and b working pixels from it.
    cx, cy = x0 / sx - 0.5, y0 / sy - 0.5
    top_col, side_col, side_row = cx + a / sx, cx, cy + b / sy
    if chest_wall == "R":  # back to the input's columns
        last = img.shape[1] - 1
        top_col, side_col = last - top_col, last - side_col
    top, side = (cy, top_col), (side_row, side_col)
    return PectoralFit(
        found=found,
        top=(float(top[0]), float(top[1])),
        side=(float(side[0]), float(side[1])),
        edge=float(best[ci["edge"]]),
        region=float(best[ci["region"]]),
        segments_ok=best_check.segments_ok,
        brighter=best_check.brighter,
        area=float(best[ci["area"]]),
        texture=best_check.texture,
    )


def fit_to_mask(fit: PectoralFit, breast_mask: np.ndarray) -> np.ndarray:
    """The corner side of ``fit``'s line intersected with the breast: new bool array, the
    mask's shape (whether or not ``fit.found``)."""
    breast = np.asarray(breast_mask) != 0
    (ty, tx), (sy, sx) = fit.top, fit.side
    rows = np.arange(breast.shape[0], dtype=np.float64)[:, None]
    cols = np.arange(breast.shape[1], dtype=np.float64)[None, :]
    # cross product: its sign tells the side of the line through (ty, tx) and (sy, sx);
    # the corner (top row, chest-wall column) = (ty, sx) is on the muscle's side.
    side = (tx - sx) * (rows - sy) - (ty - sy) * (cols - sx)
    corner = (tx - sx) * (ty - sy)
    return (side * corner > 0) & breast


def pectoral_mask(
    image: np.ndarray,
    breast_mask: np.ndarray,
    *,
    chest_wall: Literal["L", "R"] = "L",
    params: PectoralParams | None = None,
) -> np.ndarray:
    """The pectoral muscle of a preprocessed MLO view: bool, the image's shape.

    All False when no muscle is found (CC views, or no plausible bright corner triangle);
    otherwise the corner side of the fitted line intersected with ``breast_mask``. The chest
    wall is on the left edge after preprocessing (``chest_wall="L"``); ``"R"`` mirrors the
    rule. See the module docstring for the method and :class:`PectoralParams` for its
    parameters. Inputs are never modified.
    """
    fit = fit_pectoral(image, breast_mask, chest_wall=chest_wall, params=params)
    breast = np.asarray(breast_mask) != 0
    if fit is None or not fit.found:
        return np.zeros(breast.shape, dtype=bool)
    return fit_to_mask(fit, breast)
