"""Alignment sanity checks: does a lesion mask still sit on the same anatomy after a step?

Cheap enough to run after every step of every case (moments of uint8 masks). Problems are
returned as readable strings; :func:`~.arrays.preprocess_arrays` raises
:class:`~.errors.AlignmentError` with them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from mammoseg.masks import mask_iou as iou  # one IoU of two masks (both empty → 1.0)
from mammoseg.preprocess.params import AlignmentTolerances
from mammoseg.preprocess.steps import mask_bbox
from mammoseg.preprocess.transform import GeometricStep, Transform


@dataclass(frozen=True)
class MaskStats:
    """Area (pixels) and centroid ``(y, x)`` (pixel-centre coordinates; None when empty)."""

    area: int
    centroid: tuple[float, float] | None


def mask_stats(mask: np.ndarray) -> MaskStats:
    """Area and centroid of a 2-D mask (nonzero = in)."""
    arr = np.asarray(mask)
    box = mask_bbox(arr)
    if box is None:
        return MaskStats(0, None)
    y0, y1, x0, x1 = box
    sub = np.ascontiguousarray(arr[y0:y1, x0:x1] != 0).view(np.uint8)
    m = cv2.moments(sub, binaryImage=True)
    area = round(m["m00"])
    return MaskStats(area, (y0 + m["m01"] / m["m00"], x0 + m["m10"] / m["m00"]))


def _max_radius(mask: np.ndarray, centre: tuple[float, float]) -> float:
    """Largest distance from ``centre`` to a nonzero pixel of ``mask`` (0 when empty).

    Only the mask's bounding box is searched: the same answer as over the whole array, without
    a pass of ``np.nonzero`` over a full-size (15-megapixel) mask.
    """
    box = mask_bbox(mask)
    if box is None:
        return 0.0
    y0, y1, x0, x1 = box
    ys, xs = np.nonzero(np.asarray(mask)[y0:y1, x0:x1])
    d2 = (ys + (y0 - centre[0])) ** 2 + (xs + (x0 - centre[1])) ** 2
    return float(np.sqrt(d2.max()))


def in_breast_fraction(mask: np.ndarray, breast_mask: np.ndarray) -> float | None:
    """Fraction of the mask's pixels inside the breast mask; None for an empty mask."""
    arr, breast = np.asarray(mask), np.asarray(breast_mask)
    if arr.shape != breast.shape:
        raise ValueError(f"mask {arr.shape} and breast mask {breast.shape} differ in shape")
    box = mask_bbox(arr)
    if box is None:
        return None
    y0, y1, x0, x1 = box
    m = arr[y0:y1, x0:x1] != 0
    inside = m & (breast[y0:y1, x0:x1] != 0)
    return int(np.count_nonzero(inside)) / int(np.count_nonzero(m))


def area_tolerance(expected: float, tol: AlignmentTolerances) -> float:
    """Allowed deviation (pixels) from an expected mask area (see :class:`AlignmentTolerances`)."""
    return tol.area_rel * expected + tol.area_sqrt * math.sqrt(expected) + tol.area_abs_px


def check_alignment(
    mask_before: np.ndarray,
    mask_after: np.ndarray,
    image_shape_after: tuple[int, ...],
    step: GeometricStep,
    tolerances: AlignmentTolerances | None = None,
    *,
    breast_after: np.ndarray | None = None,
    name: str = "mask",
    before: MaskStats | None = None,
    after: MaskStats | None = None,
) -> list[str]:
    """Problems (empty = fine) of a mask after ``step``, compared with the mask before it.

    * the mask has the image's shape after the step;
    * area: ``area_after ≈ area_before · step.scale²`` within :func:`area_tolerance`;
    * centroid: the centroid before, mapped by ``step.map_point``, is within
      ``tolerances.centroid_px`` of the centroid after;
    * with ``breast_after``: at least ``tolerances.min_in_breast`` of the mask is in the breast.

    An empty mask before must stay empty. ``before`` / ``after`` may pass precomputed
    :func:`mask_stats` of the two masks (saves a pass over large masks).
    """
    tol = tolerances or AlignmentTolerances()
    after_arr = np.asarray(mask_after)
    where = f"{name} after {step.name}"
    if after_arr.shape != tuple(image_shape_after[:2]):
        return [
            f"{where}: mask shape {after_arr.shape} differs from image shape {image_shape_after}"
        ]
    b = before or mask_stats(mask_before)
    a = after or mask_stats(after_arr)
    radius = _max_radius(after_arr, a.centroid) if a.centroid is not None else 0.0
    frac = None
    if breast_after is not None and a.area > 0:
        frac = in_breast_fraction(after_arr, breast_after)
    return check_moved(b, a, radius, step, tol, in_breast=frac, name=name)


def check_moved(
    before: MaskStats,
    after: MaskStats,
    after_radius: float,
    step: GeometricStep,
    tolerances: AlignmentTolerances,
    *,
    in_breast: float | None = None,
    name: str = "mask",
) -> list[str]:
    """The area, centroid and in-breast rules of :func:`check_alignment`, on precomputed
    figures: ``after_radius`` is the largest distance from the after-centroid to a mask pixel,
    ``in_breast`` the fraction of the mask after the step that lies in the breast (None: not
    checked). Lets a caller that moves only a mask's bounding box check every step."""
    tol = tolerances
    b, a = before, after
    where = f"{name} after {step.name}"
    problems: list[str] = []
    expected = b.area * step.scale**2
    allowed = area_tolerance(expected, tol)
    if abs(a.area - expected) > allowed:
        problems.append(
            f"{where}: area {a.area} px, expected {expected:.1f} ± {allowed:.1f} px "
            f"({b.area} px × scale² {step.scale**2:.4g})"
        )
    if b.centroid is not None and a.centroid is not None:
        ey, ex = step.map_point(*b.centroid)
        dist = math.hypot(a.centroid[0] - ey, a.centroid[1] - ex)
        # The boundary error the area check allows can move the centroid by up to
        # (allowed / area) × the lesion's largest radius: lesions of several small parts
        # (real CDD-CESM masks) shift by ~2 px under nearest resampling without any misalignment.
        limit = max(tol.centroid_px, allowed / max(expected, 1.0) * after_radius)
        if dist > limit:
            problems.append(
                f"{where}: centroid at (y={a.centroid[0]:.1f}, x={a.centroid[1]:.1f}), expected "
                f"(y={ey:.1f}, x={ex:.1f}): {dist:.1f} px off (tolerance {limit:.1f} px)"
            )
    if in_breast is not None and a.area > 0 and in_breast < tol.min_in_breast:
        problems.append(
            f"{where}: only {100 * in_breast:.0f}% of its {a.area} px lie inside the breast "
            f"(need ≥ {100 * tol.min_in_breast:.0f}%)"
        )
    return problems


def roundtrip_iou(
    mask: np.ndarray, transform: Transform, *, order: Literal["linear", "nearest"] = "linear"
) -> float:
    """IoU of an original-geometry mask with itself sent forward (nearest) and back (``order``).

    Close to 1 for lesions many output pixels wide; tiny lesions (a few output pixels) lose to
    the quantisation of the output grid.
    """
    forward = transform.forward_mask(mask)
    back = transform.to_original(forward.astype(bool), order=order)
    return iou(mask, back)
