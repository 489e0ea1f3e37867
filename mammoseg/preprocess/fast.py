"""Preprocessing of large images on a reduced working copy: the steps cost what they must.

:func:`~mammoseg.preprocess.arrays.preprocess_arrays` sends an image here when its padded crop
is at least ``4 x params.size`` on a side (a full-field mammogram: ~5000 x 3000 px for a 512
output); smaller images take the step-by-step path unchanged. Same steps, same outputs
(:class:`~.arrays.PreprocessedCase`, the same :class:`~.transform.Transform` semantics), in an
order that touches the 15 megapixels once:

1. **one integer reduction** of the crop (OpenCV ``INTER_AREA`` at an integer factor ``k``, a
   single pass at memory speed) to the *working copy*, at least twice the output resolution.
   The crop box is grown by fewer than ``k`` pixels so that ``k`` divides it (and the padding);
2. chest-wall side, intensity window and the 16-bit stretch on the working copy;
3. padding and **one resize** (``INTER_AREA``) from the working copy to the output grid;
4. **CLAHE at the output resolution** (:func:`clahe_fine`): the same clip limit, expressed as
   a density so it means the same on 0.2 megapixels as on 15 (see there), with continuous
   (interpolated) 16-bit output, so no grey level is lost to a histogram step;
5. lesion and breast masks go straight to the output grid by the exact nearest-neighbour
   indices of :meth:`Transform.forward_mask` (OpenCV's ``INTER_NEAREST_EXACT``): identical
   masks, computed on their bounding boxes; the alignment checks run after every step on the
   mask's box (the same rules, :func:`~.checks.check_moved`).

What differs from the step-by-step path: CLAHE sees the image after, not before, averaging
(the model input is smoother by the noise CLAHE would otherwise have amplified), the window is
taken on the working copy, and the crop box may be up to ``k - 1`` px larger per side.
``tests/unit/test_preprocess_fast.py`` bounds the difference on a synthetic 16-bit image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from mammoseg.preprocess.arrays import PreprocessedCase, blank_outside
from mammoseg.preprocess.checks import MaskStats, _max_radius, check_moved, mask_stats
from mammoseg.preprocess.errors import AlignmentError
from mammoseg.preprocess.params import PreprocessParams
from mammoseg.preprocess.steps import (
    WORKING_OVERSAMPLE,
    BorderCrop,
    Box,
    area_reduce,
    chest_wall_side,
    intensity_window,
    square_padding,
)
from mammoseg.preprocess.transform import Transform

#: Histogram bins per CLAHE tile at the output resolution (a tile there has a few thousand
#: pixels: 256 bins keep about ten per bin, the regime 8-bit CLAHE was designed for).
CLAHE_BINS = 256


def working_factor(box: Box, params: PreprocessParams) -> int:
    """Integer reduction ``k`` from the original to the working copy (< 2: no working copy)."""
    side = max(box[1] - box[0], box[3] - box[2])
    return side // (WORKING_OVERSAMPLE * params.size)


def _align_axis(
    b0: int, b1: int, dim: int, k: int, keep: tuple[int, int] | None
) -> tuple[int, int] | None:
    n = b1 - b0
    grown = -(-n // k) * k
    if grown <= dim:
        extra = grown - n
        end = min(extra, dim - b1)
        return b0 - (extra - end), b1 + end
    cut = n - (n // k) * k  # the image itself is not a multiple of k: trim < k px at an edge
    if keep is None or keep[1] <= b1 - cut:
        return b0, b1 - cut
    if keep[0] >= b0 + cut:
        return b0 + cut, b1
    return None


def align_box(
    box: Box, shape: tuple[int, int], k: int, lesion_boxes: Sequence[Box | None] = ()
) -> Box | None:
    """``box`` grown (by fewer than ``k`` px a side, within the image) so ``k`` divides its
    height and width; None when that would cut a lesion (``lesion_boxes``: their
    :func:`~.steps.mask_bbox`)."""
    boxes = [b for b in lesion_boxes if b is not None]
    keep_y = (min(b[0] for b in boxes), max(b[1] for b in boxes)) if boxes else None
    keep_x = (min(b[2] for b in boxes), max(b[3] for b in boxes)) if boxes else None
    ys = _align_axis(box[0], box[1], shape[0], k, keep_y)
    xs = _align_axis(box[2], box[3], shape[1], k, keep_x)
    if ys is None or xs is None:
        return None
    return ys[0], ys[1], xs[0], xs[1]


@dataclass(frozen=True)
class WorkingPlan:
    """How the working copy is made: reduction ``k``, the crop ``box`` (aligned to ``k``), and
    whether it is cut from the border crop's reduced base image (no pass over the original)."""

    k: int
    box: Box
    from_base: bool


def _align_absolute(box: Box, shape: tuple[int, int], k: int, keep: Sequence[Box]) -> Box | None:
    """``box`` with every edge on the ``k`` grid of the base image (grown outwards; an edge in
    the last ``< k`` rows/columns, which the base does not cover, moves inwards): None if that
    cuts a lesion."""
    out = []
    for axis in (0, 1):
        b0, b1, dim = box[2 * axis], box[2 * axis + 1], shape[axis]
        a0 = b0 // k * k
        a1 = min(-(-b1 // k) * k, dim // k * k)
        if a1 <= a0 or any(kb[2 * axis + 1] > a1 for kb in keep):
            return None
        out += [a0, a1]
    return out[0], out[1], out[2], out[3]


def plan_working_copy(
    box: Box,
    shape: tuple[int, int],
    params: PreprocessParams,
    found: BorderCrop,
    lesion_boxes: Sequence[Box | None],
) -> WorkingPlan | None:
    """The working copy for a crop ``box`` of an image of ``shape``, or None when the image is
    too small for one (padded crop below ``4 x size``) or no aligned box keeps every lesion."""
    keep = [b for b in lesion_boxes if b is not None]
    side = max(box[1] - box[0], box[3] - box[2])
    if found.base is not None and side >= 1.5 * params.size * found.base_k:
        aligned = _align_absolute(box, shape, found.base_k, keep)
        if aligned is not None:
            return WorkingPlan(found.base_k, aligned, True)
    k = working_factor(box, params)
    if k < 2:
        return None
    aligned = align_box(box, shape, k, keep)
    return None if aligned is None else WorkingPlan(k, aligned, False)


def _padding(height: int, width: int, side: str, k: int) -> tuple[int, int, int, int]:
    """:func:`~.steps.square_padding`, with the top padding of a wide crop a multiple of ``k``."""
    top, bottom, left, right = square_padding(height, width, side)  # type: ignore[arg-type]
    if top or bottom:
        d = top + bottom
        top = (d // k) // 2 * k
        bottom = d - top
    return top, bottom, left, right


def nearest_indices(source: int, size: int) -> np.ndarray:
    """Source index of each of ``size`` outputs under OpenCV's ``INTER_NEAREST_EXACT`` resize
    of ``source`` samples (what :class:`~.transform.Resize` does to masks), from OpenCV itself."""
    ramp = np.arange(source, dtype=np.float32).reshape(1, source)
    out = cv2.resize(ramp, (size, 1), interpolation=cv2.INTER_NEAREST_EXACT)
    return out.ravel().astype(np.intp)


class _Grid:
    """Where each output row / column comes from in the original image (-1: padding)."""

    def __init__(self, t: Transform) -> None:
        side = t.padded_side
        idx = nearest_indices(side, t.output_size)
        top, _, left, _ = t.pad
        y0, _, x0, _ = t.crop_box
        ch, cw = t.cropped_shape
        ry = idx - top
        rx = idx - left
        self.rows = np.where((ry >= 0) & (ry < ch), y0 + ry, -1)
        cx = np.where(t.flipped, cw - 1 - rx, rx)
        self.cols = np.where((rx >= 0) & (rx < cw), x0 + cx, -1)

    def gather(self, sample, box: Box | None = None) -> np.ndarray:
        """uint8 ``S x S``: ``sample(rows, cols)`` (a bool grid) at the output pixels whose
        source lies in ``box`` (all of the crop when None), 0 elsewhere."""
        size = self.rows.size
        out = np.zeros((size, size), dtype=np.uint8)
        ok_r = self.rows >= 0
        ok_c = self.cols >= 0
        if box is not None:
            ok_r &= (self.rows >= box[0]) & (self.rows < box[1])
            ok_c &= (self.cols >= box[2]) & (self.cols < box[3])
        ri, ci = np.flatnonzero(ok_r), np.flatnonzero(ok_c)
        if ri.size and ci.size:
            out[np.ix_(ri, ci)] = sample(self.rows[ri], self.cols[ci])
        return out


def clahe_fine(
    image: np.ndarray, clip_limit: float, tile_grid: int, *, bins: int = CLAHE_BINS
) -> np.ndarray:
    """CLAHE of a float image with values in ``[0, 65535]``; returns a float32 array.

    OpenCV's algorithm (tiles, clip and uniform redistribution, bilinear blend of the four
    nearest tiles' maps) with two changes that make it mean the same at any resolution:

    * **the clip limit is a density**: each tile's histogram over ``[0, 65536)`` in ``bins``
      bins is clipped at ``clip_limit`` times its mean count per bin. This is the limit
      :func:`~.steps.clahe` applies at full resolution (``clip_limit x tile pixels / levels``
      per used level, the used levels spread over the 16-bit range by the window stretch),
      measured per unit of grey value instead of per level, which is what a tile of a few
      thousand pixels can estimate;
    * **continuous maps**: a value's map is interpolated inside its bin, so the output keeps
      the input's grey levels instead of one per bin.
    """
    img = np.asarray(image, dtype=np.float32)
    h, w = img.shape
    g = int(tile_grid)
    eh, ew = -(-h // g) * g, -(-w // g) * g
    ext = img
    if (eh, ew) != (h, w):
        ext = cv2.copyMakeBorder(img, 0, eh - h, 0, ew - w, cv2.BORDER_REFLECT_101)
    th, tw = eh // g, ew // g
    area = th * tw
    pos = np.clip(ext, 0.0, 65535.0) * np.float32(bins / 65536.0)
    b = np.minimum(pos.astype(np.int32), bins - 1)
    tile = (np.arange(eh) // th)[:, None] * g + (np.arange(ew) // tw)[None, :]
    hist = np.bincount((tile * bins + b).ravel(), minlength=g * g * bins).reshape(g * g, bins)
    hist = hist.astype(np.float64)
    limit = max(float(clip_limit) * area / bins, 1.0)
    excess = np.maximum(hist - limit, 0.0).sum(axis=1, keepdims=True)
    hist = np.minimum(hist, limit) + excess / bins
    cdf = np.zeros((g * g, bins + 1), dtype=np.float64)
    np.cumsum(hist, axis=1, out=cdf[:, 1:])
    cdf *= 65535.0 / area
    flat = cdf.astype(np.float32).ravel()

    # bilinear blend of the four nearest tiles (OpenCV's tile centres and clamping)
    yf = np.arange(h, dtype=np.float64) / th - 0.5
    xf = np.arange(w, dtype=np.float64) / tw - 0.5
    y1 = np.floor(yf).astype(np.intp)
    x1 = np.floor(xf).astype(np.intp)
    ya = (yf - y1).astype(np.float32)[:, None]
    xa = (xf - x1).astype(np.float32)[None, :]
    y2, x2 = np.minimum(y1 + 1, g - 1), np.minimum(x1 + 1, g - 1)
    y1, x1 = np.maximum(y1, 0), np.maximum(x1, 0)
    bb = b[:h, :w].astype(np.intp)
    frac = pos[:h, :w] - bb.astype(np.float32)

    def mapped(ty: np.ndarray, tx: np.ndarray) -> np.ndarray:
        i = ((ty[:, None] * g + tx[None, :]) * (bins + 1)) + bb
        lo = flat[i]
        return lo + frac * (flat[i + 1] - lo)

    top = mapped(y1, x1) * (1 - xa) + mapped(y1, x2) * xa
    bottom = mapped(y2, x1) * (1 - xa) + mapped(y2, x2) * xa
    return top * (1 - ya) + bottom * ya


def _local_stats(sub: np.ndarray, oy: int, ox: int) -> tuple[MaskStats, float]:
    """Stats of a mask given as its box ``sub`` placed at ``(oy, ox)``, and its radius."""
    st = mask_stats(sub)
    if st.centroid is None:
        return st, 0.0
    cy, cx = st.centroid
    radius = _max_radius(sub, (cy, cx))
    return MaskStats(st.area, (cy + oy, cx + ox)), radius


def _lesion(
    mask: np.ndarray,
    box: Box | None,
    t: Transform,
    grid: _Grid,
    breast_o: np.ndarray,
    params: PreprocessParams,
    name: str,
) -> tuple[np.ndarray, list[str], bool]:
    """(output mask, problems, had pixels) of one lesion (``box``: its bounding box), checked
    after every step. Crop, flip and pad move the box: the mask's stats are measured on the
    box's pixels at their new place (the flip on the mirrored pixels), not derived."""
    tol = params.alignment
    size = t.output_size
    if box is None:
        return np.zeros((size, size), dtype=np.uint8), [], False
    by0, by1, bx0, bx1 = box
    sub = mask[by0:by1, bx0:bx1]
    y0, _, x0, _ = t.crop_box
    _, cw = t.cropped_shape
    top, _, left, _ = t.pad
    steps = t.steps()
    here = mask_stats(sub)  # in box coordinates
    radius = _max_radius(sub, here.centroid) if here.centroid is not None else 0.0

    def placed(st: MaskStats, oy: int, ox: int) -> MaskStats:
        c = st.centroid
        return MaskStats(st.area, None if c is None else (c[0] + oy, c[1] + ox))

    problems: list[str] = []
    before = placed(here, by0, bx0)
    # crop: the box moves by the crop origin
    oy, ox = by0 - y0, bx0 - x0
    after = placed(here, oy, ox)
    problems += check_moved(before, after, radius, steps[0], tol, name=name)
    before = after
    # flip: the box's pixels mirrored inside the crop (mirroring keeps the radius)
    if t.flipped:
        here = mask_stats(sub[:, ::-1])
        ox = cw - (ox + sub.shape[1])
    after = placed(here, oy, ox)
    problems += check_moved(before, after, radius, steps[1], tol, name=name)
    before = after
    # pad: the box moves by the padding
    oy, ox = oy + top, ox + left
    after = placed(here, oy, ox)
    problems += check_moved(before, after, radius, steps[2], tol, name=name)
    before = after
    # resize: the real output mask, by the resize's own nearest-neighbour indices
    out = grid.gather(lambda r, c: mask[np.ix_(r, c)], box)
    after = mask_stats(out)
    radius = _max_radius(out, after.centroid) if after.centroid is not None else 0.0
    frac = None
    if after.area > 0:
        frac = int(np.count_nonzero(out & breast_o)) / after.area
    problems += check_moved(before, after, radius, steps[3], tol, in_breast=frac, name=name)
    return out, problems, True


def preprocess_reduced(
    img: np.ndarray,
    lesions: Sequence[np.ndarray],
    params: PreprocessParams,
    *,
    lesion_boxes: Sequence[Box | None],
    found: BorderCrop,
    plan: WorkingPlan,
    laterality: str | None,
    in_breast: tuple[float | None, ...],
    union_in_breast: float | None,
    crop_extended: bool,
) -> PreprocessedCase:
    """The working-copy path (module docstring). ``box`` is aligned to ``k``
    (:func:`align_box`); ``lesions`` are bool masks of the original's shape; ``in_breast``
    and the rest come from :func:`~.arrays.preprocess_arrays`, which has checked them."""
    shape = (int(img.shape[0]), int(img.shape[1]))
    k, box = plan.k, plan.box
    y0, y1, x0, x1 = box
    ch, cw = y1 - y0, x1 - x0
    wh, ww = ch // k, cw // k

    # 1. the working copy: cut from the reduced base, or one integer reduction of the crop;
    #    the breast on the same grid (pixel centres)
    if plan.from_base and found.base is not None:
        sl = (slice(y0 // k, y1 // k), slice(x0 // k, x1 // k))
        work = found.base[sl]
        breast_w = found.breast_on_base()[sl]
    else:
        work = area_reduce(img[y0:y1, x0:x1], k)
        centre = (k - 1) / 2
        breast_w = found.sample(y0 + np.arange(wh) * k + centre, x0 + np.arange(ww) * k + centre)

    # 2. side, window, stretch (float32, saturated above the brightest breast pixel)
    side, side_source = chest_wall_side(work, breast_w, laterality)
    flipped = side != params.canonical_side
    if flipped:
        work, breast_w = work[:, ::-1], breast_w[:, ::-1]
    lo, hi = intensity_window(work, breast_w)
    scale = 65535.0 / (hi - lo)
    work = np.ascontiguousarray(work)
    stretched = cv2.addWeighted(work, scale, work, 0.0, -lo * scale, dtype=cv2.CV_32F)
    cv2.threshold(stretched, 65535.0, 65535.0, cv2.THRESH_TRUNC, dst=stretched)

    # 3. pad + one resize to the output grid
    pad = _padding(ch, cw, params.canonical_side, k)
    transform = Transform(
        original_shape=shape, crop_box=box, flipped=flipped, pad=pad, output_size=params.size
    )
    working = Transform(
        original_shape=(wh, ww),
        crop_box=(0, wh, 0, ww),
        flipped=False,
        pad=tuple(p // k for p in pad),  # type: ignore[arg-type]
        output_size=params.size,
    )
    resized = working.forward_image(stretched)

    # 4. CLAHE at the output resolution, on the output pixels the crop reaches
    s = params.size / transform.padded_side
    r0, r1 = int(np.floor(pad[0] * s)), int(np.ceil((pad[0] + ch) * s))
    c0, c1 = int(np.floor(pad[2] * s)), int(np.ceil((pad[2] + cw) * s))
    enhanced = clahe_fine(resized[r0:r1, c0:c1], params.clahe_clip_limit, params.clahe_tile_grid)
    img_o = np.zeros((params.size, params.size), dtype=np.uint16)
    img_o[r0:r1, c0:c1] = np.rint(np.clip(enhanced, 0.0, 65535.0)).astype(np.uint16)

    # 5. masks by the resize's nearest-neighbour indices; checks after every step
    grid = _Grid(transform)
    breast_o = grid.gather(found.sample)
    out_masks: list[np.ndarray] = []
    problems: list[str] = []
    lost = 0
    for i, (m, b) in enumerate(zip(lesions, lesion_boxes, strict=True), start=1):
        out, found_problems, had = _lesion(m, b, transform, grid, breast_o, params, f"lesion {i}")
        problems += found_problems
        lost += had and not out.any()
        out_masks.append(out)
    if problems:
        raise AlignmentError("; ".join(problems))

    if params.blank_outside_breast:
        img_o = blank_outside(img_o, breast_o, max(1, round(params.blank_margin * params.size)))
    size = params.size
    lesion_stack = np.stack(out_masks) if out_masks else np.zeros((0, size, size), dtype=np.uint8)
    union = lesion_stack.max(axis=0) if out_masks else np.zeros((size, size), dtype=np.uint8)
    return PreprocessedCase(
        image=img_o,
        mask=union,
        lesion_masks=lesion_stack,
        breast_mask=breast_o,
        transform=transform,
        chest_wall_side=side,
        side_source=side_source,
        intensity_window=(lo, hi),
        lesion_in_breast=in_breast,
        mask_in_breast_fraction=union_in_breast,
        crop_extended=crop_extended,
        lost_lesions=lost,
    )
