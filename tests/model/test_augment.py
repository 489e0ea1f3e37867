"""Paired augmentation: image and mask stay aligned, the mask stays binary, seeds reproduce."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from mammoseg.training.augment import AugmentConfig, affine_transform, augment_pair

SIZE = 64
GEOMETRY_ONLY = AugmentConfig(brightness=0.0, contrast=0.0)


def blobs() -> np.ndarray:
    """A 64×64 0/1 mask with two discs and a bar, asymmetric so flips and rotations show."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    mask = ((yy - 20) ** 2 + (xx - 22) ** 2 <= 64) | ((yy - 44) ** 2 + (xx - 40) ** 2 <= 36)
    mask |= (yy >= 10) & (yy < 14) & (xx >= 35) & (xx < 55)
    return mask.astype("float32")[..., None]


def run(mask: np.ndarray, image: np.ndarray, config: AugmentConfig, seed: int):
    img, msk = augment_pair(tf.constant(image), tf.constant(mask), config, tf.constant([seed, 7]))
    return img.numpy(), msk.numpy()


def brightest(image: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` brightest pixels. Brightness/contrast are one increasing map of the whole image,
    so with them on, "brighter than the mask's 0.5 level" is "among the k brightest"; without
    them this is the same as thresholding at 0.5."""
    flat = image[..., 0].ravel()
    out = np.zeros(flat.size, bool)
    out[np.argsort(-flat, kind="stable")[:k]] = True
    return out.reshape(image.shape[:2])


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.mark.parametrize("config", [GEOMETRY_ONLY, AugmentConfig(flip_axis="both", seed=3)])
def test_image_and_mask_stay_aligned_and_mask_binary(config: AugmentConfig) -> None:
    mask = blobs()
    image = mask * 0.8 + 0.1
    changed = 0
    for seed in range(8):
        img, msk = run(mask, image, config, seed)
        assert img.shape == msk.shape == (SIZE, SIZE, 1)
        assert img.dtype == msk.dtype == np.float32
        assert set(np.unique(msk)) <= {0.0, 1.0}
        assert 0.0 <= img.min() and img.max() <= 1.0
        assert iou(brightest(img, int(msk.sum())), msk[..., 0] > 0.5) >= 0.95
        changed += not np.array_equal(msk, mask)
    assert changed >= 6  # the augmentation really moves things


def test_geometry_only_alignment_by_plain_threshold() -> None:
    mask = blobs()
    for seed in range(4):
        img, msk = run(mask, mask * 0.8 + 0.1, GEOMETRY_ONLY, seed)
        assert iou(img[..., 0] > 0.5, msk[..., 0] > 0.5) >= 0.95


def test_same_seed_same_output_other_seed_other_output() -> None:
    mask = blobs()
    image = mask * 0.8 + 0.1
    a = run(mask, image, AugmentConfig(), 5)
    b = run(mask, image, AugmentConfig(), 5)
    c = run(mask, image, AugmentConfig(), 6)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_identity_when_every_range_is_zero() -> None:
    config = AugmentConfig(flip=False, rotate_deg=0, shift=0, zoom=0, brightness=0, contrast=0)
    np.testing.assert_allclose(
        affine_transform(config, SIZE, tf.constant([1, 2])).numpy(), [1, 0, 0, 0, 1, 0, 0, 0]
    )
    image = np.random.default_rng(0).random((SIZE, SIZE, 1)).astype("float32")
    img, msk = run(blobs(), image, config, 0)
    np.testing.assert_allclose(img, image, atol=1e-6)
    np.testing.assert_array_equal(msk, blobs())


@pytest.mark.parametrize(("axis", "flip"), [("vertical", np.flipud), ("horizontal", np.fliplr)])
def test_flip_only_is_an_exact_flip(axis: str, flip) -> None:
    config = AugmentConfig(flip_axis=axis, rotate_deg=0, shift=0, zoom=0, brightness=0, contrast=0)
    image = np.random.default_rng(1).random((SIZE, SIZE, 1)).astype("float32")
    seen = set()
    for seed in range(6):
        img, msk = run(blobs(), image, config, seed)
        if np.allclose(img, image, atol=1e-6):
            seen.add("same")
            np.testing.assert_array_equal(msk, blobs())
        else:
            seen.add("flipped")
            np.testing.assert_allclose(img, flip(image), atol=1e-6)
            np.testing.assert_array_equal(msk, flip(blobs()))
    assert seen == {"same", "flipped"}


def test_pure_shift_moves_content_by_the_drawn_offset() -> None:
    # shift only: the transform is x_in = x - tx, y_in = y - ty with |t| <= 0.25 * 64 = 16 px.
    config = AugmentConfig(flip=False, rotate_deg=0, shift=0.25, zoom=0, brightness=0, contrast=0)
    t = affine_transform(config, SIZE, tf.constant([4, 7])).numpy()  # the seed run() uses
    np.testing.assert_allclose(t[[0, 1, 3, 4]], [1, 0, 0, 1], atol=1e-6)
    assert abs(t[2]) <= 16 and abs(t[5]) <= 16
    dot = np.zeros((SIZE, SIZE, 1), "float32")
    dot[32, 32] = 1.0
    img, _ = run(dot, dot, config, 4)
    # the mass of the dot moves to (32 - t5, 32 - t2) in (row, col); bilinear keeps its centroid
    rows, cols = np.mgrid[:SIZE, :SIZE]
    w = img[..., 0]
    assert (w * rows).sum() / w.sum() == pytest.approx(32 - t[5], abs=1e-3)
    assert (w * cols).sum() / w.sum() == pytest.approx(32 - t[2], abs=1e-3)


def test_brightness_and_contrast_touch_the_image_only() -> None:
    config = AugmentConfig(flip=False, rotate_deg=0, shift=0, zoom=0, brightness=0.3, contrast=0.3)
    image = np.full((SIZE, SIZE, 1), 0.5, "float32")
    img, msk = run(blobs(), image, config, 2)
    np.testing.assert_array_equal(msk, blobs())
    assert np.ptp(img) == pytest.approx(0.0, abs=1e-6)  # uniform image stays uniform
    assert abs(float(img[0, 0, 0]) - 0.5) > 1e-4  # but its level moved


def test_config_validation_and_round_trip() -> None:
    cfg = AugmentConfig(flip_axis="both", rotate_deg=5, seed=9)
    assert AugmentConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="flip_axis"):
        AugmentConfig(flip_axis="diagonal")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="zoom"):
        AugmentConfig(zoom=1.5)
