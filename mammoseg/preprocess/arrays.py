"""Array level: one decoded image and its lesion masks → the model-ready square arrays."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from mammoseg.preprocess.checks import MaskStats, check_alignment, mask_stats
from mammoseg.preprocess.errors import AlignmentError, MaskShapeError
from mammoseg.preprocess.params import PreprocessParams
from mammoseg.preprocess.steps import (
    BorderCrop,
    Box,
    Side,
    border_crop,
    chest_wall_side,
    clahe,
    grey_levels,
    intensity_window,
    mask_bbox,
    square_padding,
    stretch_to_uint16,
    union_box,
    validate_image,
)
from mammoseg.preprocess.transform import Crop, Flip, Pad, Resize, Transform


@dataclass(frozen=True, eq=False)
class PreprocessedCase:
    """The model-ready arrays of one image, and how they were made.

    * ``image`` — uint16 ``S x S``: crop, flip to the canonical side, intensity window stretched
      to 16 bits, CLAHE, zero padding, INTER_AREA resize, 0 away from the breast (if
      ``params.blank_outside_breast``);
    * ``mask`` — uint8 ``S x S`` 0/1: union of the lesions (all zeros when there is none);
    * ``lesion_masks`` — uint8 ``N x S x S`` 0/1, one per input mask, in input order (N may be 0);
    * ``breast_mask`` — uint8 ``S x S`` 0/1: the detected breast;
    * ``chest_wall_side`` / ``side_source`` — where the chest wall was in the input, and whether
      the pixels or the laterality tag decided it;
    * ``intensity_window`` — (lo, hi) input grey levels mapped to 0 and 65535 before CLAHE;
    * ``lesion_in_breast`` — per lesion, fraction of its pixels inside the breast (original
      geometry; None for an empty mask); ``mask_in_breast_fraction`` the same for the union;
    * ``crop_extended`` — the crop box had to grow to contain a lesion mask;
    * ``lost_lesions`` — lesions with pixels in the original but none at ``S x S`` (smaller than
      about one output pixel, e.g. single calcifications): the case keeps its label but its
      mask is empty there.
    """

    image: np.ndarray
    mask: np.ndarray
    lesion_masks: np.ndarray
    breast_mask: np.ndarray
    transform: Transform
    chest_wall_side: Side
    side_source: Literal["pixels", "laterality"]
    intensity_window: tuple[int, int]
    lesion_in_breast: tuple[float | None, ...]
    mask_in_breast_fraction: float | None
    crop_extended: bool
    lost_lesions: int = 0

    @property
    def lesion_fraction(self) -> float:
        """Fraction of output pixels inside the union lesion mask."""
        return float(np.count_nonzero(self.mask)) / self.mask.size

    @property
    def breast_fraction(self) -> float:
        """Fraction of output pixels inside the breast."""
        return float(np.count_nonzero(self.breast_mask)) / self.breast_mask.size


def blank_outside(image: np.ndarray, breast_mask: np.ndarray, radius: int) -> np.ndarray:
    """A copy of ``image`` with 0 wherever no breast pixel lies within ``radius`` pixels."""
    k = 2 * int(radius) + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    keep = cv2.dilate((np.asarray(breast_mask) != 0).view(np.uint8), kernel)
    return np.where(keep != 0, image, np.zeros((), dtype=image.dtype))


def _as_masks(masks: Sequence[np.ndarray], shape: tuple[int, int]) -> list[np.ndarray]:
    out = []
    for i, m in enumerate(masks, start=1):
        arr = np.asarray(m)
        if arr.shape != shape:
            got = f"{arr.shape[0]}x{arr.shape[1]}" if arr.ndim == 2 else f"of shape {arr.shape}"
            raise MaskShapeError(
                f"lesion mask {i} is {got} but the image is {shape[0]}x{shape[1]} (height x width)"
            )
        # bool masks are used as they are (never written to); others become new bool arrays
        out.append(arr if arr.dtype == np.bool_ else arr != 0)
    return out


def _union_fraction(
    found: BorderCrop, lesions: Sequence[np.ndarray], lesion_boxes: Sequence[Box | None]
) -> float | None:
    """``found.fraction_inside`` of the union of the lesions, built on their common box only."""
    boxes = [b for b in lesion_boxes if b is not None]
    if not boxes:
        return None
    y0, y1 = min(b[0] for b in boxes), max(b[1] for b in boxes)
    x0, x1 = min(b[2] for b in boxes), max(b[3] for b in boxes)
    sub = np.logical_or.reduce([m[y0:y1, x0:x1] for m in lesions])
    breast = found.sample(np.arange(y0, y1), np.arange(x0, x1))
    return int(np.count_nonzero(sub & breast)) / int(np.count_nonzero(sub))


def preprocess_arrays(
    image: np.ndarray,
    masks: Sequence[np.ndarray] = (),
    params: PreprocessParams | None = None,
    *,
    laterality: str | None = None,
    crop: BorderCrop | None = None,
    reduced: bool = True,
) -> PreprocessedCase:
    """Crop → flip → window + CLAHE → pad → resize one image and its per-lesion masks.

    ``image``: 2-D uint8/uint16, display orientation. ``masks``: one 2-D array per lesion,
    the image's shape, nonzero = lesion (none for a normal image). ``laterality`` (``"L"`` /
    ``"R"``) only breaks a tie when the pixels cannot tell the chest-wall side. ``crop`` may
    pass a precomputed ``border_crop(image, params)`` so that it is not computed twice.

    A large image (padded crop at least ``4 x params.size`` px a side) is processed on a reduced
    working copy (:mod:`mammoseg.preprocess.fast`: one reduction, one resize, CLAHE at the
    output resolution); ``reduced=False`` forces the step-by-step full-resolution path (the
    reference the fast path is tested against).

    Alignment checks run after every geometric step for every lesion (shape, area, centroid)
    and on the original and the output (lesion inside the breast); any failure raises
    :class:`AlignmentError` listing all problems. Inputs are never modified.
    """
    params = params or PreprocessParams()
    img = validate_image(image)
    shape = (int(img.shape[0]), int(img.shape[1]))
    lesions = _as_masks(masks, shape)
    tol = params.alignment

    # 1. border crop: breast box; grown if needed so that no lesion is ever cut.
    found = crop if crop is not None else border_crop(img, params)
    if tuple(found.shape) != shape:
        raise ValueError(f"precomputed breast mask {tuple(found.shape)} is not {shape}")
    box = found.box
    boxes = [mask_bbox(m) for m in lesions]  # one pass over each full-size mask
    for bbox in boxes:
        if bbox is not None:
            box = union_box(box, bbox)
    crop_extended = box != found.box

    problems: list[str] = []
    in_breast = tuple(found.fraction_inside(m, b) for m, b in zip(lesions, boxes, strict=True))
    for i, frac in enumerate(in_breast, start=1):
        if frac is not None and frac < tol.min_in_breast:
            problems.append(
                f"lesion {i} in the original image: only {100 * frac:.0f}% of its pixels lie "
                f"inside the detected breast (need ≥ {100 * tol.min_in_breast:.0f}%)"
            )
    if problems:
        raise AlignmentError("; ".join(problems))
    union_in_breast = _union_fraction(found, lesions, boxes)

    # Large images: the same steps on a reduced working copy (see mammoseg.preprocess.fast).
    from mammoseg.preprocess.fast import plan_working_copy, preprocess_reduced

    if reduced:
        plan = plan_working_copy(box, shape, params, found, boxes)
        if plan is not None:
            return preprocess_reduced(
                img,
                lesions,
                params,
                lesion_boxes=boxes,
                found=found,
                plan=plan,
                laterality=laterality,
                in_breast=in_breast,
                union_in_breast=union_in_breast,
                crop_extended=crop_extended,
            )

    cropper = Crop(box)
    img_c = cropper.apply(img)
    breast_c = cropper.apply(found.breast_mask)

    # 2. chest wall to the canonical side.
    side, side_source = chest_wall_side(img_c, breast_c, laterality)
    flip = Flip(side != params.canonical_side, img_c.shape[1])
    img_f = flip.apply(img_c)
    breast_f = flip.apply(breast_c)

    # 3. intensity window (labels outside the breast ignored) → 16 bits → CLAHE.
    lo, hi = intensity_window(img_f, breast_f)
    img_e = clahe(
        stretch_to_uint16(img_f, lo, hi),
        params.clahe_clip_limit,
        params.clahe_tile_grid,
        levels=grey_levels(img_c, lo, hi),
    )

    if img_e.shape != img_f.shape or img_e.dtype != np.uint16:
        raise AlignmentError(
            f"CLAHE changed the image from {img_f.shape} to {img_e.shape} {img_e.dtype}"
        )

    # 4. pad to a square away from the chest wall, resize.
    pad = Pad(square_padding(img_e.shape[0], img_e.shape[1], params.canonical_side))
    img_p = pad.apply(img_e)
    resize = Resize(img_p.shape[0], params.size)
    img_o = resize.apply(img_p, "area")

    transform = Transform(
        original_shape=shape,
        crop_box=box,
        flipped=flip.enabled,
        pad=pad.pad,
        output_size=params.size,
    )
    image_shapes = {
        "crop": img_c.shape,
        "flip": img_f.shape,
        "pad": img_p.shape,
        "resize": img_o.shape,
    }

    breast_o = found.breast_mask.view(np.uint8)
    out_masks: list[np.ndarray] = []
    for step in transform.steps():
        breast_o = step.apply(breast_o, "nearest")
    lost = 0
    for i, m in enumerate(lesions, start=1):
        current = m.view(np.uint8)
        stats: MaskStats = mask_stats(current)
        had_pixels = stats.area > 0
        for step in transform.steps():
            nxt = step.apply(current, "nearest")
            nxt_stats = mask_stats(nxt)
            problems += check_alignment(
                current,
                nxt,
                image_shapes[step.name],
                step,
                tol,
                breast_after=breast_o if step.name == "resize" else None,
                name=f"lesion {i}",
                before=stats,
                after=nxt_stats,
            )
            current, stats = nxt, nxt_stats
        lost += had_pixels and stats.area == 0
        out_masks.append(current)
    if problems:
        raise AlignmentError("; ".join(problems))

    breast_o = np.ascontiguousarray(breast_o, dtype=np.uint8)
    if params.blank_outside_breast:
        img_o = blank_outside(img_o, breast_o, max(1, round(params.blank_margin * params.size)))

    size = params.size
    lesion_stack = (
        np.stack(out_masks).astype(np.uint8, copy=False)
        if out_masks
        else np.zeros((0, size, size), dtype=np.uint8)
    )
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
