"""Overlay pictures for reports: the image in gray, truth contour green, prediction contour red.

Contours are traced on the full-resolution masks and then scaled, so a lesion a few pixels wide
still shows after the picture is reduced to at most ``max_side`` pixels on its long side. The
gray levels are stretched from the image's own minimum to maximum (display only). Titles are
drawn into the picture: pass pseudonymous case ids and scores only, never header fields.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

import cv2
import numpy as np
import pandas as pd

from mammoseg.evaluation.metrics import EvaluationInputError, as_mask

TRUTH_BGR: Final = (0, 200, 0)
PRED_BGR: Final = (0, 0, 255)
_BAND: Final = 20  # title band height, pixels


def _to_gray8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image.copy()
    lo, hi = int(image.min()), int(image.max())
    if hi == lo:
        return np.zeros(image.shape, dtype=np.uint8)
    scaled = (image.astype(np.float32) - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _contours(mask: np.ndarray, sx: float, sy: float) -> list[np.ndarray]:
    found, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    scale = np.array([sx, sy])  # contour points are (x, y); pixel centres: x' = (x+0.5)*s - 0.5
    return [np.rint((c.astype(np.float64) + 0.5) * scale - 0.5).astype(np.int32) for c in found]


def render_overlay(
    image: np.ndarray,
    truth: np.ndarray,
    pred: np.ndarray,
    *,
    title: str = "",
    max_side: int = 512,
) -> np.ndarray:
    """The overlay as a BGR ``uint8`` array: a title band of 20 px on top of the reduced image."""
    img = np.asarray(image)
    if img.ndim != 2 or img.dtype not in (np.uint8, np.uint16):
        raise EvaluationInputError(
            f"overlay image must be a 2-D uint8 or uint16 array, got {img.dtype} {img.shape}"
        )
    t, p = as_mask(truth, "truth"), as_mask(pred, "pred")
    if t.shape != img.shape or p.shape != img.shape:
        raise EvaluationInputError(
            f"image {img.shape}, truth {t.shape} and pred {p.shape} must have one shape"
        )
    if max_side < 16:
        raise EvaluationInputError("max_side must be >= 16")
    h, w = img.shape
    scale = min(1.0, max_side / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = cv2.resize(img, size, interpolation=cv2.INTER_AREA) if scale < 1.0 else img
    canvas = cv2.cvtColor(_to_gray8(small), cv2.COLOR_GRAY2BGR)
    sx, sy = size[0] / w, size[1] / h
    cv2.polylines(canvas, _contours(t, sx, sy), isClosed=True, color=TRUTH_BGR, thickness=1)
    cv2.polylines(canvas, _contours(p, sx, sy), isClosed=True, color=PRED_BGR, thickness=1)
    band = np.zeros((_BAND, canvas.shape[1], 3), dtype=np.uint8)
    text = title.encode("ascii", "replace").decode("ascii")
    cv2.putText(band, text, (3, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([band, canvas])


def _png(bgr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", bgr)
    if not ok:
        raise EvaluationInputError("PNG encoding failed")
    return buf.tobytes()


def overlay_png(
    image: np.ndarray,
    truth: np.ndarray,
    pred: np.ndarray,
    *,
    title: str = "",
    max_side: int = 512,
) -> bytes:
    """PNG bytes of :func:`render_overlay` (long side of the image part <= ``max_side``)."""
    return _png(render_overlay(image, truth, pred, title=title, max_side=max_side))


def best_median_worst(
    per_image_df: pd.DataFrame, *, score_col: str = "dice", lesion_only: bool = True
) -> tuple[str, str, str]:
    """Case ids of the best, median and worst image by ``score_col``.

    With ``lesion_only`` (default) images without truth pixels are left out when any image has
    a lesion (a correctly rejected normal image scores 1 and would always be "best"). The median
    is the lower middle case of the sorted scores; ties are broken by case id. With one or two
    images the same id can appear twice.
    """
    df = per_image_df
    if df.empty:
        raise EvaluationInputError("no images to choose from")
    if lesion_only and "truth_pixels" in df.columns and (df["truth_pixels"] > 0).any():
        df = df[df["truth_pixels"] > 0]
    ranked = df.sort_values([score_col, "case_id"], kind="stable")
    ids = ranked["case_id"].astype(str).tolist()
    return ids[-1], ids[(len(ids) - 1) // 2], ids[0]


def overlay_grid(
    items: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, str]],
    *,
    tile: int = 256,
    cols: int = 3,
) -> bytes:
    """PNG of several overlays ``(image, truth, pred, label)`` in a grid of ``tile``-px cells."""
    if not items:
        raise EvaluationInputError("no overlays to put in a grid")
    if cols < 1:
        raise EvaluationInputError("cols must be >= 1")
    cols = min(cols, len(items))
    rows = math.ceil(len(items) / cols)
    cell_h, cell_w = tile + _BAND, tile
    grid = np.zeros((rows * cell_h, cols * cell_w, 3), dtype=np.uint8)
    for i, (image, truth, pred, label) in enumerate(items):
        ov = render_overlay(image, truth, pred, title=label, max_side=tile)
        r, c = divmod(i, cols)
        grid[r * cell_h : r * cell_h + ov.shape[0], c * cell_w : c * cell_w + ov.shape[1]] = ov
    return _png(grid)
