"""Array-level steps: find the breast and crop, decide the chest-wall side, window, CLAHE, pad.

Conventions used throughout :mod:`mammoseg.preprocess`:

* arrays are ``(rows, cols)``; a point is ``(y, x)`` = (row, column); integer coordinates are
  pixel centres (as in :mod:`mammoseg.masks` and OpenCV);
* boxes are half-open ``(y0, y1, x0, x1)``: rows ``y0 .. y1-1`` and columns ``x0 .. x1-1``;
* images are in display orientation (higher = brighter breast; MONOCHROME1 already inverted);
* no function modifies its inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from typing import Literal

import cv2
import numpy as np

from mammoseg.preprocess.errors import InvalidImageError, NoBreastError
from mammoseg.preprocess.params import PreprocessParams

Side = Literal["L", "R"]
Box = tuple[int, int, int, int]

#: A working copy (see :mod:`mammoseg.preprocess.fast`) is at least this many times the
#: output resolution.
WORKING_OVERSAMPLE = 2
#: Smallest image side accepted (pixels).
MIN_SIDE = 16
#: A component touching an image edge, thinner than this fraction of the image across that edge
#: and at least 3x longer than thick, is a scanner strip, never the breast.
STRIP_MAX_FRACTION = 0.1
#: The breast must cover at least this fraction of the (downsampled) image.
MIN_BREAST_FRACTION = 0.005
#: Left/right breast-mass contrast below which the mass cue is considered undecided.
SIDE_MIN_CONTRAST = 0.05
#: Outer share of the columns, on each side, where the breast's attachment is measured.
SIDE_EDGE_BAND = 0.1
#: Difference in attached rows (a share of the height) below which that cue is undecided.
SIDE_MIN_ATTACHMENT = 0.2


def validate_image(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as an ndarray if it is a 2-D uint8/uint16 image, else raise."""
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise InvalidImageError(
            f"expected a 2-D grayscale image, got an array of shape {arr.shape}"
        )
    if arr.dtype not in (np.uint8, np.uint16):
        raise InvalidImageError(f"expected a uint8 or uint16 image, got dtype {arr.dtype}")
    if min(arr.shape) < MIN_SIDE:
        raise InvalidImageError(f"image of shape {arr.shape} is too small (min side {MIN_SIDE} px)")
    return arr


def otsu_threshold(values: np.ndarray, bins: int = 1024) -> float:
    """Otsu's threshold ``t`` of ``values`` (foreground = ``values >= t``), on ``bins`` bins.

    Among equally good splits the lowest is taken. Raises :class:`NoBreastError` on a constant
    array (no threshold exists).
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(v.min()), float(v.max())
    if not hi > lo:
        raise NoBreastError(f"the image is constant (all pixels = {lo:g}); no breast to find")
    hist, edges = np.histogram(v, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2.0
    w0 = np.cumsum(hist)[:-1].astype(np.float64)  # split after bin k: class 0 = bins 0..k
    w1 = float(hist.sum()) - w0
    s0 = np.cumsum(hist * centres)[:-1]
    s1 = float((hist * centres).sum()) - s0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = w0 * w1 * (s0 / w0 - s1 / w1) ** 2
    between = np.where((w0 > 0) & (w1 > 0), between, -1.0)
    k = int(np.argmax(between))
    return float(edges[k + 1])


def breast_threshold(values: np.ndarray, fraction: float) -> float:
    """Threshold between background and *all* breast tissue, faint periphery included.

    Otsu's threshold ``t`` separates the background from the bright (dense) tissue but cuts
    off the fatty periphery and the axillary tail; the threshold used is ``fraction`` of the
    way from the background level ``bg`` (median of the values below ``t``) up to ``t``:
    ``bg + fraction * (t - bg)``.
    """
    v = np.asarray(values)
    t = otsu_threshold(v)
    below = v[v < t]
    bg = float(np.median(below)) if below.size else float(v.min())
    return bg + fraction * (t - bg)


@dataclass(frozen=True, eq=False)
class BorderCrop:
    """Result of :func:`border_crop`: the box, and the breast found on the detection copy.

    ``small`` is the breast on the detection copy (a few hundred pixels a side), which covers
    the top-left ``region`` (rows, columns) of an image of ``shape``; the rows and columns
    beyond ``region`` (fewer than the integer reduction factor, see :func:`detection_copy`)
    repeat the last ones. :attr:`breast_mask` is the full-size mask, computed on first use
    (bilinear, 0.5 threshold); :meth:`sample` and :meth:`fraction_inside` answer the same
    questions without building it.
    """

    box: Box  #: (y0, y1, x0, x1), half-open, original pixel coordinates, margin included
    small: np.ndarray  #: bool, the breast on the detection copy
    shape: tuple[int, int]  #: the original image's (height, width)
    region: tuple[int, int]  #: original rows x columns the detection copy covers
    #: a large image reduced by ``base_k`` (:func:`area_reduce`), kept for the working copy of
    #: :mod:`mammoseg.preprocess.fast` (None for images below ``4 x size``)
    base: np.ndarray | None = None
    base_k: int = 1

    def breast_on_base(self) -> np.ndarray:
        """The breast at the pixel centres of :attr:`base` (bool, ``base``'s shape): the same
        bilinear map as :meth:`sample`, by one small resize."""
        if self.base is None:
            raise ValueError("this BorderCrop has no reduced base image")
        k = self.base_k
        rh, rw = self.region[0] // k, self.region[1] // k
        up = cv2.resize(
            self.small.view(np.uint8) * np.uint8(255), (rw, rh), interpolation=cv2.INTER_LINEAR
        )
        bh, bw = self.base.shape
        if (rh, rw) != (bh, bw):
            up = cv2.copyMakeBorder(up, 0, bh - rh, 0, bw - rw, cv2.BORDER_REPLICATE)
        return up >= 128

    @cached_property
    def breast_mask(self) -> np.ndarray:
        """bool, original shape: the breast (largest bright component)."""
        return _upsample(self.small, self.region, self.shape)

    def sample(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """The breast mask at original coordinates ``ys`` (rows) x ``xs`` (columns): a bool
        ``len(ys) x len(xs)`` grid (bilinear on the detection copy, 0.5 threshold; positions
        may be fractional; those beyond the covered region repeat its edge)."""
        ys = np.asarray(ys, dtype=np.float64)
        xs = np.asarray(xs, dtype=np.float64)
        if "breast_mask" in self.__dict__ or self.small.shape == self.shape:
            full = self.breast_mask
            yi = np.clip(np.rint(ys), 0, self.shape[0] - 1).astype(np.intp)
            xi = np.clip(np.rint(xs), 0, self.shape[1] - 1).astype(np.intp)
            return full[np.ix_(yi, xi)]
        sh, sw = self.small.shape
        rh, rw = self.region
        # OpenCV's resize convention: src = (dst + 0.5) * src_size / dst_size - 0.5
        sy = ((np.minimum(ys, rh - 1) + 0.5) * (sh / rh) - 0.5).astype(np.float32)
        sx = ((np.minimum(xs, rw - 1) + 0.5) * (sw / rw) - 0.5).astype(np.float32)
        map_x = np.broadcast_to(sx[None, :], (sy.size, sx.size))
        map_y = np.broadcast_to(sy[:, None], (sy.size, sx.size))
        src = self.small.view(np.uint8) * np.uint8(255)
        up = cv2.remap(
            src,
            np.ascontiguousarray(map_x),
            np.ascontiguousarray(map_y),
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        return up >= 128

    def fraction_inside(self, mask: np.ndarray, box: Box | None = None) -> float | None:
        """Fraction of a full-size mask's pixels inside the breast; None for an empty mask
        (:func:`~.checks.in_breast_fraction` against :attr:`breast_mask`, evaluated on the
        mask's bounding box only; ``box`` may pass that box, :func:`mask_bbox` of ``mask``)."""
        arr = np.asarray(mask)
        if arr.shape != self.shape:
            raise ValueError(f"mask {arr.shape} and breast mask {self.shape} differ in shape")
        if box is None:
            box = mask_bbox(arr)
        if box is None:
            return None
        y0, y1, x0, x1 = box
        m = arr[y0:y1, x0:x1] != 0
        breast = self.sample(np.arange(y0, y1), np.arange(x0, x1))
        return int(np.count_nonzero(m & breast)) / int(np.count_nonzero(m))


def _upsample(small: np.ndarray, region: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    if small.shape == shape:
        return small
    rh, rw = region
    up = cv2.resize(small.astype(np.uint8) * 255, (rw, rh), interpolation=cv2.INTER_LINEAR)
    if (rh, rw) != shape:
        up = cv2.copyMakeBorder(up, 0, shape[0] - rh, 0, shape[1] - rw, cv2.BORDER_REPLICATE)
    return up >= 128


def area_reduce(image: np.ndarray, k: int) -> np.ndarray:
    """Mean of every ``k x k`` block of ``image`` (the top-left ``(h // k) * k`` rows and
    ``(w // k) * k`` columns): OpenCV's ``INTER_AREA`` at an integer factor, which runs in one
    pass at memory speed, where a non-integer factor costs several times more."""
    img = np.asarray(image)
    if k <= 1:
        return img
    h, w = img.shape[0] // k, img.shape[1] // k
    return cv2.resize(img[: h * k, : w * k], (w, h), interpolation=cv2.INTER_AREA)


def detection_copy(img: np.ndarray, longest: int) -> tuple[np.ndarray, tuple[int, int]]:
    """``(small, region)``: the image reduced (INTER_AREA) to about ``longest`` px on its
    longer side, and the original rows x columns it covers.

    Up to twice ``longest`` the whole image is resized directly (``region`` = its shape). A
    larger image is first reduced by the integer factor ``k = longer side // longest`` (its
    last ``< k`` rows/columns left out: :class:`BorderCrop` repeats the edge there), then
    resized: the same average to within a detection pixel, for a fraction of the cost.
    """
    height, width = img.shape
    factor = min(1.0, longest / max(height, width))
    if factor >= 1.0:
        return img, (height, width)
    k = max(height, width) // longest
    pre = area_reduce(img, k) if k >= 2 else img
    region = (pre.shape[0] * k, pre.shape[1] * k) if k >= 2 else (height, width)
    factor = longest / max(region)
    size = (max(1, round(region[1] * factor)), max(1, round(region[0] * factor)))
    if (size[1], size[0]) == pre.shape:
        return pre, region
    return cv2.resize(pre, size, interpolation=cv2.INTER_AREA), region


def _odd(n: int) -> int:
    return n if n % 2 else n + 1


def _is_edge_strip(x: int, y: int, w: int, h: int, shape: tuple[int, int]) -> bool:
    height, width = shape
    vertical = (x == 0 or x + w == width) and w <= STRIP_MAX_FRACTION * width and h >= 3 * w
    horizontal = (y == 0 or y + h == height) and h <= STRIP_MAX_FRACTION * height and w >= 3 * h
    return bool(vertical or horizontal)


def _strip_run(band_widths: list[int], in_band: list[bool], max_width: int) -> int:
    """Length of the strip-like run at the start of a sequence of rows (or columns), else 0.

    The candidate run is the leading non-empty rows that lie entirely within ``max_width`` of
    the edge (``in_band``). Its typical width ``w`` is their median width; the strip is the leading
    rows at most ``w + 1`` wide, and counts only if it is at least ``3 w`` rows long (a band of
    nearly constant width, not a breast tapering into the corner).
    """
    run = 0
    for width, inside in zip(band_widths, in_band, strict=True):
        if not inside or not 0 < width <= max_width:
            break
        run += 1
    if run == 0:
        return 0
    ref = float(np.median(band_widths[:run]))
    n = 0
    for width in band_widths[:run]:
        if width > ref + 1:
            break
        n += 1
    return n if n >= 3 * ref else 0


def trim_edge_strips(mask: np.ndarray) -> np.ndarray:
    """A copy of a bool mask without the constant-width strips it has along an image edge.

    Film scanners leave a bright strip along an edge; where the breast touches that edge the
    strip joins the breast component and would stretch its bounding box to the image corner.
    From each corner, along each edge, the run of rows (columns) in which the mask is only a
    band of nearly constant width hugging the edge (see :func:`_strip_run`; at most
    ``STRIP_MAX_FRACTION`` of the image wide) is removed. A breast tapering towards a corner
    (axillary tail) widens row by row and is kept.
    """
    out = np.asarray(mask, dtype=bool).copy()
    for arr in (out, out.T):  # rows against left/right edges, then columns against top/bottom
        height, width = arr.shape
        max_w = max(1, int(STRIP_MAX_FRACTION * width))
        counts = arr.sum(axis=1)
        for inner in (arr[:, max_w:], arr[:, : width - max_w]):  # left edge, right edge
            in_band = (~inner.any(axis=1)).tolist()
            widths = counts.tolist()
            for order in (range(height), range(height - 1, -1, -1)):
                rows = list(order)
                n = _strip_run([widths[r] for r in rows], [in_band[r] for r in rows], max_w)
                if n:
                    arr[rows[:n], :] = False
        # arr is a view of out: edits land in out
    return out


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """A copy of a bool mask with every background region not touching the border filled."""
    inv = (~np.asarray(mask, dtype=bool)).astype(np.uint8)
    n, labels = cv2.connectedComponents(inv, connectivity=4)
    border = np.unique(np.concatenate([labels[0, :], labels[-1, :], labels[:, 0], labels[:, -1]]))
    holes = np.ones(n, dtype=bool)
    holes[0] = False  # label 0 is the mask itself
    holes[border] = False
    return np.asarray(mask, dtype=bool) | holes[labels]


def breast_region(image: np.ndarray, params: PreprocessParams) -> np.ndarray:
    """The breast as a bool mask of ``image``'s shape (:func:`border_crop`'s ``breast_mask``).

    On a copy downsampled (INTER_AREA, :func:`detection_copy`) to ``params.otsu_downsample``
    px on the longer side: threshold (:func:`breast_threshold`, Otsu-based); opening with an
    elliptic kernel of ``params.opening_fraction`` of that side (cuts thin strips and wires
    off); the largest 8-connected component that is not a strip along an image edge (labels
    and markers are separate, smaller components); scanner strips joined to it removed
    (:func:`trim_edge_strips`); holes filled. Upsampled (bilinear, 0.5 threshold) to the
    original shape.
    """
    return _find_breast(validate_image(image), params).breast_mask


def _find_breast(img: np.ndarray, params: PreprocessParams) -> BorderCrop:
    """The breast on the detection copy, in a :class:`BorderCrop` whose box is not set yet.

    An image at least ``WORKING_OVERSAMPLE x 2 x params.size`` on its longer side is first
    reduced once by ``k = longer side // (WORKING_OVERSAMPLE x size)``; that copy is kept
    (the fast path's working copy) and the detection copy is made from it.
    """
    height, width = img.shape
    k = max(height, width) // (WORKING_OVERSAMPLE * params.size)
    if k >= 2:
        base = area_reduce(img, k)
        small, region = detection_copy(base, params.otsu_downsample)
        comp = _breast_component(small, params)
        return BorderCrop(
            box=(0, height, 0, width),
            small=comp,
            shape=(height, width),
            region=(region[0] * k, region[1] * k),
            base=base,
            base_k=k,
        )
    small, region = detection_copy(img, params.otsu_downsample)
    comp = _breast_component(small, params)
    return BorderCrop(box=(0, height, 0, width), small=comp, shape=(height, width), region=region)


def _breast_component(small: np.ndarray, params: PreprocessParams) -> np.ndarray:
    """The breast on the detection copy (see :func:`breast_region`), a bool mask of its shape."""
    t = breast_threshold(small, params.threshold_fraction)
    fg = (small >= t).astype(np.uint8)
    k = _odd(max(1, round(params.opening_fraction * max(small.shape))))
    if k > 1:
        # Zero border: OpenCV's default erosion border counts the outside as foreground, which
        # would keep a strip along the image edge (and what it touches) through the opening.
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        fg = cv2.morphologyEx(
            fg, cv2.MORPH_OPEN, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0
        )
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    best, best_area = 0, 0
    for lab in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[lab])
        if _is_edge_strip(x, y, w, h, small.shape) or area <= best_area:
            continue
        best, best_area = lab, area
    if best == 0 or best_area < MIN_BREAST_FRACTION * small.size:
        raise NoBreastError(
            "no breast-like region found: the largest bright component that is not an edge strip "
            f"covers {100.0 * best_area / small.size:.2f}% of the image "
            f"(need {100 * MIN_BREAST_FRACTION:.1f}%)"
        )
    return fill_holes(trim_edge_strips(labels == best))


def mask_bbox(mask: np.ndarray) -> Box | None:
    """Half-open bounding box ``(y0, y1, x0, x1)`` of a mask's nonzero pixels; None if empty."""
    m = np.asarray(mask)
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(m.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def border_crop(image: np.ndarray, params: PreprocessParams | None = None) -> BorderCrop:
    """Crop box around the breast, without scanner borders, label strips and markers.

    The box is the breast mask's bounding box (see :func:`breast_region`) grown by
    ``params.crop_margin`` times the image's longer side on every side, clipped to the image.
    Works on uint16 (DICOM, 16-bit PNG) and uint8 (PNG/JPEG) images in display orientation.
    """
    params = params or PreprocessParams()
    img = validate_image(image)
    found = _find_breast(img, params)
    if found.small.shape == found.shape:
        bbox = mask_bbox(found.breast_mask)
    else:
        bbox = _bbox_on_original(found)
    assert bbox is not None  # the breast component is never empty
    height, width = img.shape
    m = round(params.crop_margin * max(height, width))
    y0, y1, x0, x1 = bbox
    box = (max(0, y0 - m), min(height, y1 + m), max(0, x0 - m), min(width, x1 + m))
    return replace(found, box=box)


def _bbox_on_original(found: BorderCrop) -> Box | None:
    """Bounding box of :attr:`BorderCrop.breast_mask` without building it: the detection
    copy's box in original pixels (each detection pixel spans ``region / small`` original
    ones), refined on the original rows and columns around each of its four edges."""
    box = mask_bbox(found.small)
    if box is None:
        return None
    sh, sw = found.small.shape
    rh, rw = found.region
    height, width = found.shape
    fy, fx = rh / sh, rw / sw
    y0, y1, x0, x1 = box
    # the upsampled mask's edges lie within one detection pixel of the scaled box
    ya, yb = max(0, int((y0 - 1) * fy)), min(height, int(np.ceil((y1 + 1) * fy)))
    xa, xb = max(0, int((x0 - 1) * fx)), min(width, int(np.ceil((x1 + 1) * fx)))
    if y1 == sh:
        yb = height
    if x1 == sw:
        xb = width
    rows = np.arange(ya, yb)
    cols = np.arange(xa, xb)
    band_y = int(np.ceil(2 * fy)) + 1
    band_x = int(np.ceil(2 * fx)) + 1
    top = found.sample(rows[: 2 * band_y], cols).any(axis=1)
    bottom = found.sample(rows[-2 * band_y :], cols).any(axis=1)
    left = found.sample(rows, cols[: 2 * band_x]).any(axis=0)
    right = found.sample(rows, cols[-2 * band_x :]).any(axis=0)
    if not (top.any() and bottom.any() and left.any() and right.any()):
        return mask_bbox(found.breast_mask)  # a thin breast: refine on the full mask
    by0 = int(rows[: 2 * band_y][np.argmax(top)])
    by1 = int(rows[-2 * band_y :][len(bottom) - 1 - np.argmax(bottom[::-1])]) + 1
    bx0 = int(cols[: 2 * band_x][np.argmax(left)])
    bx1 = int(cols[-2 * band_x :][len(right) - 1 - np.argmax(right[::-1])]) + 1
    return by0, by1, bx0, bx1


def union_box(a: Box, b: Box) -> Box:
    """Smallest half-open box containing both boxes."""
    return (min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3]))


def side_cues(image: np.ndarray, breast_mask: np.ndarray) -> tuple[tuple[Side, float], tuple[Side, float]]:
    """The two pixel cues of the chest-wall side, each ``(side, strength)``:

    * **attachment**: the share of rows with breast pixels in the outer :data:`SIDE_EDGE_BAND`
      of the columns, left against right. The breast is attached to the chest wall along most
      of the image height and leaves the other edge only around the nipple; strength: the
      difference of the two shares (0..1).
    * **mass**: the summed pixel values inside the breast, left half against right half (a
      breast is widest at the chest wall); strength: the relative difference (0..1). Dense
      tissue near the nipple can outweigh a fatty chest-wall half, so this cue alone misled on
      12 % of the shared CDD-CESM images (63 of 524, tags and attachment agreeing against it).

    Large images are subsampled (strided view) for speed.
    """
    img = np.asarray(image)
    mask = np.asarray(breast_mask, dtype=bool)
    if img.shape != mask.shape:
        raise ValueError(f"image {img.shape} and breast mask {mask.shape} differ in shape")
    step = max(1, max(img.shape) // 512)
    sub = mask[::step, ::step]
    weights = img[::step, ::step].astype(np.float64) * sub
    cols = weights.sum(axis=0)
    half = cols.size // 2
    left, right = float(cols[:half].sum()), float(cols[cols.size - half :].sum())
    total = left + right
    mass: tuple[Side, float] = ("L" if left >= right else "R", abs(left - right) / total if total > 0 else 0.0)
    band = max(1, round(sub.shape[1] * SIDE_EDGE_BAND))
    on_left, on_right = float(sub[:, :band].any(axis=1).mean()), float(sub[:, -band:].any(axis=1).mean())
    attachment: tuple[Side, float] = ("L" if on_left >= on_right else "R", abs(on_left - on_right))
    return attachment, mass


def chest_wall_side(
    image: np.ndarray,
    breast_mask: np.ndarray,
    laterality: str | None = None,
    *,
    min_contrast: float = SIDE_MIN_CONTRAST,
    min_attachment: float = SIDE_MIN_ATTACHMENT,
) -> tuple[Side, Literal["pixels", "laterality"]]:
    """Which image edge the chest wall is on, and what decided it.

    From the two pixel cues of :func:`side_cues` (the breast's attachment to an image edge and
    its mass): when both are decided (strength at least ``min_attachment`` / ``min_contrast``)
    and agree, the pixels decide, even against the laterality tag (a mirrored image). Otherwise
    the laterality tag decides, with the usual hanging convention (``"R"`` → chest wall on the
    right edge, ``"L"`` → left). Without a tag: the attachment if decided, else the mass.
    """
    (attached, a_strength), (heavier, m_strength) = side_cues(image, breast_mask)
    decided_a, decided_m = a_strength >= min_attachment, m_strength >= min_contrast
    if decided_a and decided_m and attached == heavier:
        return attached, "pixels"
    if laterality in ("L", "R"):
        return laterality, "laterality"  # type: ignore[return-value]
    return (attached if decided_a else heavier), "pixels"


def intensity_window(image: np.ndarray, breast_mask: np.ndarray) -> tuple[int, int]:
    """``(lo, hi)``: the image minimum and the brightest breast pixel (labels outside ignored)."""
    img = np.asarray(image)
    lo = int(img.min())
    inside = img[np.asarray(breast_mask, dtype=bool)]
    hi = int(inside.max()) if inside.size else int(img.max())
    return lo, max(hi, lo + 1)


def grey_levels(image: np.ndarray, lo: int | None = None, hi: int | None = None) -> int:
    """Number of distinct grey levels of a uint8/uint16 image (within ``[lo, hi]`` if given)."""
    img = np.ascontiguousarray(image)
    n = int(np.iinfo(img.dtype).max) + 1
    hist = cv2.calcHist([img], [0], None, [n], [0, n]).ravel()
    lo = 0 if lo is None else lo
    hi = n - 1 if hi is None else hi
    return int(np.count_nonzero(hist[lo : hi + 1]))


def stretch_to_uint16(image: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """New uint16 array: ``[lo, hi]`` mapped linearly onto ``[0, 65535]`` (saturated outside).

    Rounded to nearest; since the scale ``65535 / (hi - lo)`` is >= 1 the map is injective on
    ``[lo, hi]``, so no grey level inside the window is lost. uint8 input with
    ``(lo, hi) = (0, 255)`` is multiplied by exactly 257.
    """
    img = np.ascontiguousarray(image)
    if img.dtype not in (np.uint8, np.uint16):
        raise InvalidImageError(f"expected uint8/uint16, got {img.dtype}")
    if not 0 <= lo < hi <= np.iinfo(img.dtype).max:
        raise ValueError(f"bad intensity window ({lo}, {hi}) for {img.dtype}")
    scale = 65535.0 / (hi - lo)
    return cv2.addWeighted(img, scale, img, 0.0, -lo * scale, dtype=cv2.CV_16U)


def clahe(
    image: np.ndarray, clip_limit: float, tile_grid: int, *, levels: int | None = None
) -> np.ndarray:
    """CLAHE on a uint16 image (OpenCV, CV_16U, no 8-bit step); returns a new uint16 array.

    OpenCV clips each tile's 65536-bin histogram at ``clip_limit * tile_pixels / 65536``. When
    the image holds only ``levels`` distinct grey levels (e.g. 4096 for 12-bit data, however
    they are spread over the 16-bit range), that would clip almost everything;
    passing ``levels`` scales the limit by ``65536 / levels`` so ``clip_limit`` means what it
    means on an 8-bit image with the same number of levels. ``levels=None`` = plain OpenCV.
    """
    img = np.asarray(image)
    if img.dtype != np.uint16 or img.ndim != 2:
        raise InvalidImageError(f"CLAHE expects a 2-D uint16 image, got {img.dtype} {img.shape}")
    effective = float(clip_limit)
    if levels is not None:
        effective *= 65536.0 / max(2, min(int(levels), 65536))
    op = cv2.createCLAHE(clipLimit=effective, tileGridSize=(int(tile_grid), int(tile_grid)))
    return op.apply(np.ascontiguousarray(img))


def square_padding(height: int, width: int, chest_wall: Side) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` padding that makes ``height x width`` square.

    A tall image is padded on the side away from the chest wall (right when the chest wall is
    on the left); a wide one equally above and below (the extra row, if odd, at the bottom).
    """
    if height > width:
        d = height - width
        return (0, 0, 0, d) if chest_wall == "L" else (0, 0, d, 0)
    d = width - height
    return (d // 2, d - d // 2, 0, 0)
