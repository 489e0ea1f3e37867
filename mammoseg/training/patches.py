"""Patch sampling for training on high-resolution preprocessed images (nnU-Net style).

A whole mammogram at full resolution does not fit a network's input, and lesions cover well
under 1 % of it: training on random crops would show the network almost only background. So
each patch is centred on one of three kinds of location, drawn independently per patch:

* ``"lesion"`` (share ``lesion_share``): a random lesion pixel, the patch centre then shifted
  by up to ``jitter × patch_size / 2`` per axis so the lesion is not always in the middle;
* ``"hard_negative"`` (share ``hard_negative_share``): a random pixel of
  :func:`hard_negative_map`: places that look like lesions but are not (the pectoral muscle,
  the densest tissue), jittered the same way;
* ``"random"`` (the rest): a random breast pixel.

A kind with no pixel in an image falls back to ``"random"``; an image with no breast pixel
falls back to anywhere. A patch shifted past the image edge is moved back inside, so every box
lies fully inside the image (which must be at least ``patch_size`` on each side).

Image and mask patches are always cut with the same box by :func:`cut_patch`.
Pure numpy + OpenCV at import; TensorFlow only inside :func:`make_patch_dataset`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Literal

import cv2
import numpy as np

from mammoseg.training.augment import AugmentConfig, augment_pair

if TYPE_CHECKING:
    import tensorflow as tf

PatchKind = Literal["lesion", "hard_negative", "random"]
PATCH_KINDS: tuple[PatchKind, ...] = ("lesion", "hard_negative", "random")

#: The pectoral zone: the top ``PECTORAL_ZONE`` of the rows × the ``PECTORAL_ZONE`` of the
#: columns next to the chest wall (after preprocessing the chest wall is the left edge).
PECTORAL_ZONE = 1.0 / 3.0
#: Dense tissue: breast pixels above this percentile of the blurred breast intensities.
DENSE_PERCENTILE = 90.0

# Rejection-sampling tries for a random breast pixel before falling back to an exact draw.
_BREAST_TRIES = 64


@dataclass(frozen=True)
class PatchConfig:
    """How training patches are drawn (see the module docstring for the three kinds).

    * ``patch_size``: side of the square patch in pixels (the network's input size).
    * ``lesion_share`` / ``hard_negative_share``: probabilities of a lesion-centred /
      hard-negative-centred patch; the remaining ``1 - both`` are random in the breast.
    * ``jitter``: in ``[0, 1]``; the centre is shifted by a uniform integer in
      ``[-jitter·patch_size/2, +jitter·patch_size/2]`` per axis (1 = the chosen pixel may land
      anywhere in the patch, 0 = always at its centre).
    * ``patches_per_image``: patches drawn from each image per epoch.
    """

    patch_size: int = 256
    lesion_share: float = 0.5
    hard_negative_share: float = 0.2
    jitter: float = 0.5
    patches_per_image: int = 4

    def __post_init__(self) -> None:
        problems = []
        if isinstance(self.patch_size, bool) or not isinstance(self.patch_size, int):
            problems.append(f"patch_size must be an integer (got {self.patch_size!r})")
        elif self.patch_size < 1:
            problems.append(f"patch_size must be >= 1 (got {self.patch_size})")
        if not 0.0 <= self.lesion_share <= 1.0:
            problems.append(f"lesion_share must be in [0, 1] (got {self.lesion_share})")
        if not 0.0 <= self.hard_negative_share <= 1.0:
            problems.append(
                f"hard_negative_share must be in [0, 1] (got {self.hard_negative_share})"
            )
        elif self.lesion_share + self.hard_negative_share > 1.0 + 1e-9:
            problems.append(
                f"lesion_share + hard_negative_share must be <= 1 "
                f"(got {self.lesion_share} + {self.hard_negative_share})"
            )
        if not 0.0 <= self.jitter <= 1.0:
            problems.append(f"jitter must be in [0, 1] (got {self.jitter})")
        if isinstance(self.patches_per_image, bool) or not isinstance(self.patches_per_image, int):
            problems.append(
                f"patches_per_image must be an integer (got {self.patches_per_image!r})"
            )
        elif self.patches_per_image < 1:
            problems.append(f"patches_per_image must be >= 1 (got {self.patches_per_image})")
        if problems:
            raise ValueError("invalid PatchConfig: " + "; ".join(problems))

    @property
    def random_share(self) -> float:
        return max(0.0, 1.0 - self.lesion_share - self.hard_negative_share)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PatchConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a typo must not pass silently)."""
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown PatchConfig field(s): {', '.join(unknown)}")
        return cls(**data)


# --- hard negatives --------------------------------------------------------------------------


def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def hard_negative_map(
    image: np.ndarray,
    breast_mask: np.ndarray,
    lesion_mask: np.ndarray,
    *,
    chest_wall: Literal["L", "R"] = "L",
    zone: float = PECTORAL_ZONE,
    dense_percentile: float = DENSE_PERCENTILE,
    blur_sigma: float | None = None,
    lesion_margin: int | None = None,
) -> np.ndarray:
    """Where a patch centre shows something lesion-like that is not a lesion: bool, image shape.

    On the image blurred with a Gaussian of ``blur_sigma`` px (default ``max(1, min(H, W)/256)``,
    so single noisy pixels do not count), a breast pixel is a hard negative when it is

    * (a) **pectoral muscle**: in the chest-wall corner zone (the top ``zone`` of the rows and
      the ``zone`` of the columns next to the chest wall: the left edge for ``chest_wall="L"``,
      the canonical side after preprocessing) and brighter than the median breast pixel; or
    * (b) **dense tissue**: brighter than the ``dense_percentile``-th percentile of the breast;

    and it is not within ``lesion_margin`` px (default ``max(2, 2 % of min(H, W))``) of a
    lesion pixel. All-False when the breast is empty. Inputs are not modified.
    """
    img = np.asarray(image)
    breast = np.asarray(breast_mask, dtype=bool)
    lesion = np.asarray(lesion_mask, dtype=bool)
    if img.ndim != 2 or img.size == 0:
        raise ValueError(f"image must be a non-empty 2-D array (got shape {img.shape})")
    if breast.shape != img.shape or lesion.shape != img.shape:
        raise ValueError(
            f"image {img.shape}, breast mask {breast.shape} and lesion mask {lesion.shape} "
            "must have one shape"
        )
    if chest_wall not in ("L", "R"):
        raise ValueError(f"chest_wall must be 'L' or 'R' (got {chest_wall!r})")
    if not 0.0 < zone <= 1.0:
        raise ValueError(f"zone must be in (0, 1] (got {zone})")
    if not 0.0 <= dense_percentile <= 100.0:
        raise ValueError(f"dense_percentile must be in [0, 100] (got {dense_percentile})")
    h, w = img.shape
    sigma = max(1.0, min(h, w) / 256.0) if blur_sigma is None else float(blur_sigma)
    margin = max(2, round(0.02 * min(h, w))) if lesion_margin is None else int(lesion_margin)
    if sigma < 0 or margin < 0:
        raise ValueError(f"blur_sigma and lesion_margin must be >= 0 (got {sigma}, {margin})")
    if not breast.any():
        return np.zeros(img.shape, dtype=bool)

    smooth = img.astype(np.float32)
    if sigma > 0:
        smooth = cv2.GaussianBlur(smooth, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)
    inside = smooth[breast]
    median, dense_level = np.percentile(inside, [50.0, dense_percentile])

    rows, cols = max(1, round(h * zone)), max(1, round(w * zone))
    corner = np.zeros(img.shape, dtype=bool)
    if chest_wall == "L":
        corner[:rows, :cols] = True
    else:
        corner[:rows, w - cols :] = True
    pectoral = corner & (smooth > median)
    dense = smooth > dense_level

    near_lesion = lesion
    if margin > 0 and lesion.any():
        near_lesion = cv2.dilate(lesion.astype(np.uint8), _disc(margin)).astype(bool)
    return (pectoral | dense) & breast & ~near_lesion


# --- sampling --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PatchCandidates:
    """Where patch centres of each kind may be drawn in one image (computed once per image).

    ``lesion`` / ``hard`` are flat pixel indices (int64); ``breast`` is the bool mask itself
    (not copied, only read) and ``breast_box`` its bounding box ``(y0, y1, x0, x1)`` (None when
    empty), for rejection sampling without an index of every breast pixel.
    """

    shape: tuple[int, int]
    lesion: np.ndarray
    hard: np.ndarray
    breast: np.ndarray
    breast_box: tuple[int, int, int, int] | None

    @classmethod
    def from_masks(
        cls, mask: np.ndarray, breast_mask: np.ndarray, hard_map: np.ndarray
    ) -> PatchCandidates:
        lesion = np.asarray(mask)
        breast = np.asarray(breast_mask, dtype=bool)
        hard = np.asarray(hard_map, dtype=bool)
        if lesion.ndim != 2:
            raise ValueError(f"mask must be 2-D (got shape {lesion.shape})")
        if breast.shape != lesion.shape or hard.shape != lesion.shape:
            raise ValueError(
                f"mask {lesion.shape}, breast mask {breast.shape} and hard-negative map "
                f"{hard.shape} must have one shape"
            )
        box = None
        if breast.any():
            ys = np.flatnonzero(breast.any(axis=1))
            xs = np.flatnonzero(breast.any(axis=0))
            box = (int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1)
        return cls(
            shape=(int(lesion.shape[0]), int(lesion.shape[1])),
            lesion=np.flatnonzero(lesion),
            hard=np.flatnonzero(hard),
            breast=breast,
            breast_box=box,
        )


def _random_breast_pixel(c: PatchCandidates, rng: np.random.Generator) -> tuple[int, int]:
    """A uniformly random breast pixel (anywhere in the image when there is no breast)."""
    if c.breast_box is None:
        return int(rng.integers(c.shape[0])), int(rng.integers(c.shape[1]))
    y0, y1, x0, x1 = c.breast_box
    for _ in range(_BREAST_TRIES):
        y, x = int(rng.integers(y0, y1)), int(rng.integers(x0, x1))
        if c.breast[y, x]:
            return y, x
    flat = np.flatnonzero(c.breast[y0:y1, x0:x1])
    y, x = np.unravel_index(int(rng.choice(flat)), (y1 - y0, x1 - x0))
    return int(y) + y0, int(x) + x0


def _centre_box(
    cy: int, cx: int, shape: tuple[int, int], size: int, jitter: int, rng: np.random.Generator
) -> tuple[int, int]:
    """Top-left corner of the ``size`` box centred on ``(cy, cx)`` ± ``jitter``, moved inside."""
    if jitter > 0:
        cy += int(rng.integers(-jitter, jitter + 1))
        cx += int(rng.integers(-jitter, jitter + 1))
    y0 = min(max(cy - size // 2, 0), shape[0] - size)
    x0 = min(max(cx - size // 2, 0), shape[1] - size)
    return y0, x0


def draw_patch(
    candidates: PatchCandidates, config: PatchConfig, rng: np.random.Generator
) -> tuple[int, int, PatchKind]:
    """One patch: ``(y0, x0, kind)``, ``kind`` the one drawn from the config's shares (a kind
    with no pixel has already fallen back to ``"random"`` here, so ``kind`` is what the patch is
    centred on)."""
    h, w = candidates.shape
    size = config.patch_size
    if h < size or w < size:
        raise ValueError(f"image {h}×{w} is smaller than patch_size {size}")
    u = rng.random()
    kind: PatchKind
    if u < config.lesion_share:
        kind, pool = "lesion", candidates.lesion
    elif u < config.lesion_share + config.hard_negative_share:
        kind, pool = "hard_negative", candidates.hard
    else:
        kind, pool = "random", None
    if pool is not None and pool.size:
        cy, cx = np.unravel_index(int(pool[rng.integers(pool.size)]), (h, w))
        jitter = int(config.jitter * size / 2)
        y0, x0 = _centre_box(int(cy), int(cx), (h, w), size, jitter, rng)
        return y0, x0, kind
    cy, cx = _random_breast_pixel(candidates, rng)
    y0, x0 = _centre_box(cy, cx, (h, w), size, 0, rng)
    return y0, x0, "random"


def sample_patch_boxes(
    mask: np.ndarray,
    breast_mask: np.ndarray,
    hard_map: np.ndarray,
    config: PatchConfig,
    rng: np.random.Generator,
    n: int,
) -> list[tuple[int, int]]:
    """``n`` patch top-left corners ``(y0, x0)`` for one image, each fully inside it.

    Kinds are drawn independently per patch with the config's shares (see the module
    docstring). ``mask`` is the lesion mask (nonzero = lesion), ``hard_map`` typically
    :func:`hard_negative_map`'s. Raises ``ValueError`` when the shapes differ or the image is
    smaller than ``config.patch_size``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0 (got {n})")
    candidates = PatchCandidates.from_masks(mask, breast_mask, hard_map)
    return [draw_patch(candidates, config, rng)[:2] for _ in range(n)]


def cut_patch(array: np.ndarray, y0: int, x0: int, size: int) -> np.ndarray:
    """A copy of ``array[y0:y0+size, x0:x0+size]`` (extra trailing axes kept); the box must lie
    fully inside the array, else ``ValueError``."""
    arr = np.asarray(array)
    if arr.ndim < 2:
        raise ValueError(f"array must have at least 2 dimensions (got shape {arr.shape})")
    if size < 1 or y0 < 0 or x0 < 0 or y0 + size > arr.shape[0] or x0 + size > arr.shape[1]:
        raise ValueError(
            f"patch ({y0}, {x0}) of size {size} is not inside an array of shape {arr.shape[:2]}"
        )
    return arr[y0 : y0 + size, x0 : x0 + size].copy()


# --- tf.data ---------------------------------------------------------------------------------


def _check_inputs(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    breast_masks: Sequence[np.ndarray],
    size: int,
) -> None:
    if not len(images):
        raise ValueError("no images: nothing to cut patches from")
    if not len(images) == len(masks) == len(breast_masks):
        raise ValueError(
            f"{len(images)} images, {len(masks)} masks and {len(breast_masks)} breast masks: "
            "need one of each per image"
        )
    for i, (image, mask, breast) in enumerate(zip(images, masks, breast_masks)):
        image, mask, breast = np.asarray(image), np.asarray(mask), np.asarray(breast)
        if image.ndim != 2 or image.dtype not in (np.uint8, np.uint16):
            raise ValueError(
                f"image {i}: must be a 2-D uint8/uint16 array (got {image.dtype} {image.shape})"
            )
        if mask.shape != image.shape or breast.shape != image.shape:
            raise ValueError(
                f"image {i}: image {image.shape}, mask {mask.shape} and breast mask "
                f"{breast.shape} must have one shape"
            )
        if not np.isin(mask, (0, 1)).all():
            raise ValueError(f"image {i}: mask must hold only 0 and 1")
        if min(image.shape) < size:
            raise ValueError(f"image {i}: {image.shape} is smaller than patch_size {size}")


def make_patch_dataset(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    breast_masks: Sequence[np.ndarray],
    config: PatchConfig,
    *,
    batch_size: int,
    augment: AugmentConfig | None = None,
    seed: int = 0,
) -> tf.data.Dataset:
    """Batches of ``(image, mask)`` patches, float32 ``[b, P, P, 1]``, drawn fresh every epoch.

    ``images``: 2-D uint8/uint16 arrays (sizes may differ, each at least ``P`` per side), scaled
    by their dtype's maximum (65535 for uint16) to 0..1 as in :mod:`.dataset`; ``masks``: 0/1
    (or bool), ``breast_masks``: bool, each of its image's shape. The hard-negative map of every
    image is computed once, here. An epoch holds ``len(images) × patches_per_image`` patches:
    every image ``patches_per_image`` times, in an order reshuffled each epoch, each patch's box
    drawn (:func:`draw_patch`) from a per-patch seed of a stream that is re-randomised each
    epoch; everything is reproducible from ``seed``. With ``augment``,
    :func:`~mammoseg.training.augment.augment_pair` is applied to each patch pair (per-patch
    seeds from ``augment.seed``). The arrays are kept by reference and never modified.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer (got {batch_size!r})")
    size = config.patch_size
    _check_inputs(images, masks, breast_masks, size)
    images = [np.asarray(a) for a in images]
    masks = [np.asarray(m) for m in masks]
    candidates = [
        PatchCandidates.from_masks(m, b, hard_negative_map(a, b, m))
        for a, m, b in zip(images, masks, breast_masks)
    ]
    n = len(images)
    total = n * config.patches_per_image

    import tensorflow as tf

    def cut(index: np.int64, patch_seed: np.int64) -> tuple[np.ndarray, np.ndarray]:
        i = int(index)
        rng = np.random.default_rng(int(patch_seed) & 0xFFFF_FFFF_FFFF_FFFF)
        y0, x0, _ = draw_patch(candidates[i], config, rng)
        scale = float(np.iinfo(images[i].dtype).max)
        image = cut_patch(images[i], y0, x0, size).astype(np.float32) / np.float32(scale)
        mask = cut_patch(masks[i], y0, x0, size).astype(np.float32)
        return image, mask

    def load(index: tf.Tensor, patch_seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image, mask = tf.numpy_function(
            cut, [index, patch_seed], (tf.float32, tf.float32), stateful=False
        )
        return tf.reshape(image, (size, size, 1)), tf.reshape(mask, (size, size, 1))

    order = (
        tf.data.Dataset.range(total)
        .shuffle(total, seed=seed, reshuffle_each_iteration=True)
        .map(lambda k: k % n)
    )
    patch_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    ds = tf.data.Dataset.zip(order, patch_seeds).map(load, num_parallel_calls=tf.data.AUTOTUNE)
    if augment is not None:
        seeds = tf.data.Dataset.random(seed=augment.seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(ds, seeds).map(
            lambda pair, s: augment_pair(pair[0], pair[1], augment, s),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
