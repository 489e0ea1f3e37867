"""Render lesion geometries (the lesion table's ``mask_geometry`` JSON) to boolean masks.

Coordinate convention (shared with :mod:`mammoseg.casetable`): ``x`` is the column, ``y`` the
row, origin at the top-left, and **integer coordinates are pixel centres** (pixel ``[r, c]`` is the
unit square centred on ``(x=c, y=r)``), as in OpenCV and in INbreast's ``Point_px``.

* circle ``{"type": "circle", "cx", "cy", "r"}``: the pixels whose centre lies within ``r`` of
  ``(cx, cy)`` (distance ``<= r``). ``r = 0`` marks the centre pixel only if the centre is exactly
  on a pixel centre.
* polygon ``{"type": "polygon", "points": [[x, y], ...]}`` (≥ 3 points, closed implicitly):
  :func:`cv2.fillPoly` with vertices in 1/256-pixel fixed point (no truncation to whole pixels),
  which fills the interior **and** the rasterised outline: a pixel the outline passes through
  is in the mask, so the mask is up to half a pixel wider than the exact polygon.

Geometries partly or wholly outside the image are clipped; wholly outside gives an all-False mask
(not an error). Masks are fresh ``bool`` arrays of the requested ``(height, width)``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

#: Fixed-point fraction bits for polygon vertices (1/256 px).
_SHIFT = 8
#: Coordinates beyond this (in pixels) are refused: they overflow the fixed-point vertices and
#: cannot come from any real image.
_MAX_COORD = 1_000_000.0


class GeometryError(ValueError):
    """A ``mask_geometry`` value that cannot be rendered (bad JSON, unknown type, bad numbers)."""


def _shape(shape: tuple[int, int]) -> tuple[int, int]:
    if len(shape) != 2 or any(int(s) != s or s <= 0 for s in shape):
        raise ValueError(f"mask shape must be two positive integers (height, width), got {shape!r}")
    return int(shape[0]), int(shape[1])


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise GeometryError(f"{what} is not a number: {value!r}")
    out = float(value)
    if not math.isfinite(out) or abs(out) > _MAX_COORD:
        raise GeometryError(f"{what} is not a finite coordinate within ±{_MAX_COORD:g}: {value!r}")
    return out


def parse_geometry(geometry_json: str) -> dict[str, Any]:
    """Check one geometry; return it as a dict of floats or raise :class:`GeometryError`."""
    try:
        geom = json.loads(geometry_json)
    except (TypeError, json.JSONDecodeError) as exc:
        raise GeometryError(f"mask geometry is not valid JSON: {exc}") from None
    if not isinstance(geom, dict):
        raise GeometryError(f"mask geometry must be a JSON object, got {type(geom).__name__}")
    kind = geom.get("type")
    if kind == "circle":
        cx = _number(geom.get("cx"), "circle cx")
        cy = _number(geom.get("cy"), "circle cy")
        r = _number(geom.get("r"), "circle r")
        if r < 0:
            raise GeometryError(f"circle radius is negative: {r}")
        return {"type": "circle", "cx": cx, "cy": cy, "r": r}
    if kind == "polygon":
        points = geom.get("points")
        if not isinstance(points, list) or len(points) < 3:
            n = len(points) if isinstance(points, list) else "no"
            raise GeometryError(f"polygon needs at least 3 points, got {n}")
        clean = []
        for i, p in enumerate(points):
            if not isinstance(p, list | tuple) or len(p) != 2:
                raise GeometryError(f"polygon point {i} is not an [x, y] pair: {p!r}")
            clean.append(
                [_number(p[0], f"polygon point {i} x"), _number(p[1], f"polygon point {i} y")]
            )
        return {"type": "polygon", "points": clean}
    raise GeometryError(f"unknown mask geometry type {kind!r} (expected 'circle' or 'polygon')")


def render_geometry(geometry_json: str, shape: tuple[int, int]) -> np.ndarray:
    """Rasterise one geometry (JSON, see module doc) to a ``bool`` mask of ``shape`` (H, W)."""
    h, w = _shape(shape)
    geom = parse_geometry(geometry_json)
    mask = np.zeros((h, w), dtype=bool)
    if geom["type"] == "circle":
        cx, cy, r = geom["cx"], geom["cy"], geom["r"]
        x0, x1 = max(0, math.ceil(cx - r)), min(w - 1, math.floor(cx + r))
        y0, y1 = max(0, math.ceil(cy - r)), min(h - 1, math.floor(cy + r))
        if x0 > x1 or y0 > y1:
            return mask
        xx = np.arange(x0, x1 + 1, dtype=np.float64)[None, :]
        yy = np.arange(y0, y1 + 1, dtype=np.float64)[:, None]
        mask[y0 : y1 + 1, x0 : x1 + 1] = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        return mask
    pts = np.asarray(geom["points"], dtype=np.float64)
    fixed = np.round(pts * (1 << _SHIFT)).astype(np.int32).reshape(-1, 1, 2)
    canvas = np.zeros((h, w), dtype=np.uint8)
    cv2.fillPoly(canvas, [fixed], 1, lineType=cv2.LINE_8, shift=_SHIFT)
    return canvas.astype(bool)


def union_mask(masks: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Pixel-wise OR of same-shape masks (nonzero = lesion); an empty sequence gives all False.

    The inputs are not modified; the result is a new ``bool`` array of ``shape``.
    """
    h, w = _shape(shape)
    out = np.zeros((h, w), dtype=bool)
    for i, m in enumerate(masks):
        arr = np.asarray(m)
        if arr.shape != (h, w):
            raise ValueError(f"mask {i} has shape {arr.shape}, expected {(h, w)}")
        out |= arr.astype(bool, copy=False)
    return out


def render_geometries(geometries: Sequence[str], shape: tuple[int, int]) -> np.ndarray:
    """Union of several geometries (e.g. an image's ``mask_geometries``); none → all False."""
    return union_mask([render_geometry(g, shape) for g in geometries], shape)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two same-shape masks (nonzero = in); both empty → 1.0."""
    a = np.asarray(a).astype(bool, copy=False)
    b = np.asarray(b).astype(bool, copy=False)
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: {a.shape} vs {b.shape}")
    union = int(np.count_nonzero(a | b))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(a & b)) / union
