"""A PNG grid of preprocessed cases: grayscale image, lesion contour in colour, case id.

For eyeballing a run (alignment, crop, flip) in a report. Tiles are labelled with the
pseudonymous case id only (``cs-`` + hex, see :mod:`mammoseg.ids`); anything else is refused,
so that a source file name or patient id cannot end up burned into a report image.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import cv2
import numpy as np

#: Labels must look like :func:`mammoseg.ids.case_pseudonym` output.
LABEL_PATTERN = re.compile(r"cs-[0-9a-f]{4,64}")
#: Contour colour (BGR): yellow, visible on any grey level.
CONTOUR_BGR = (0, 255, 255)
LABEL_BGR = (255, 255, 255)


def _to_gray8(image: np.ndarray) -> np.ndarray:
    """uint16 → top 8 bits; uint8 as is; anything else is refused."""
    if image.dtype == np.uint16:
        return (image >> 8).astype(np.uint8)
    if image.dtype == np.uint8:
        return image
    raise ValueError(f"contact sheet images must be uint8 or uint16, got {image.dtype}")


def _tile(image: np.ndarray, mask: np.ndarray, label: str, tile: int) -> np.ndarray:
    gray = cv2.resize(_to_gray8(image), (tile, tile), interpolation=cv2.INTER_AREA)
    out = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    small = cv2.resize(
        (mask != 0).view(np.uint8), (tile, tile), interpolation=cv2.INTER_NEAREST_EXACT
    )
    contours, _ = cv2.findContours(small, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, CONTOUR_BGR, 1)
    scale = max(0.3, tile / 400)
    (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(out, (0, 0), (min(tile - 1, tw + 4), th + base + 4), (0, 0, 0), -1)
    cv2.putText(out, label, (2, th + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, LABEL_BGR, 1, cv2.LINE_AA)
    return out


def contact_sheet(
    cases: Sequence[tuple[np.ndarray, np.ndarray, str]], tile: int = 128, cols: int = 8
) -> bytes:
    """PNG bytes (8-bit BGR) of a grid of ``tile`` px tiles, ``cols`` per row, row-major.

    Each case is ``(image, mask, label)``: a square uint16 (or uint8) image, a mask of the
    same shape (nonzero = lesion; an empty mask draws no contour) and a pseudonymous case id
    matching :data:`LABEL_PATTERN`. Unused cells of the last row are black. Inputs are not
    modified. Raises ``ValueError`` for no cases, bad shapes or a label that is not a case id.
    """
    if not cases:
        raise ValueError("contact sheet needs at least one case")
    if tile < 16 or cols < 1:
        raise ValueError(f"tile must be >= 16 px and cols >= 1, got tile={tile}, cols={cols}")
    tiles = []
    for i, (image, mask, label) in enumerate(cases):
        img, msk = np.asarray(image), np.asarray(mask)
        if img.ndim != 2 or msk.shape != img.shape:
            raise ValueError(f"case {i}: image {img.shape} and mask {msk.shape} must be equal 2-D")
        if not isinstance(label, str) or not LABEL_PATTERN.fullmatch(label):
            raise ValueError(
                f"case {i}: label must be a pseudonymous case id like 'cs-1a2b3c4d5e6f' "
                "(the label given is not shown: it may identify a patient)"
            )
        tiles.append(_tile(img, msk, label, tile))
    n_cols = min(cols, len(tiles))
    n_rows = -(-len(tiles) // n_cols)
    sheet = np.zeros((n_rows * tile, n_cols * tile, 3), dtype=np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, n_cols)
        sheet[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile] = t
    ok, buf = cv2.imencode(".png", sheet)
    if not ok:
        raise ValueError("OpenCV could not encode the contact sheet PNG")
    return buf.tobytes()
