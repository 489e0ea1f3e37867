"""The OpenCV warp of the training augmentation samples the same affine map as TensorFlow's op."""

from __future__ import annotations

import numpy as np
import pytest

from mammoseg.training.augment import AugmentConfig, augment_pair


def _pair(size: int = 64):
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    image = (0.2 + 0.6 * (xx + yy) / (2 * size))[..., None]
    mask = (((yy - 30) ** 2 + (xx - 36) ** 2) <= 100).astype(np.float32)[..., None]
    return image, mask


def test_opencv_and_tf_warps_agree_but_for_interpolation_rounding() -> None:
    image, mask = _pair()
    cfg = AugmentConfig(rotate_deg=15, shift=0.1, zoom=0.1, brightness=0.1, contrast=0.1, seed=0)
    for s in range(6):
        seed = np.array([s, 7 * s + 1], np.int64)
        ti, tm = (t.numpy() for t in augment_pair(image, mask, cfg, seed, "tf"))
        oi, om = (t.numpy() for t in augment_pair(image, mask, cfg, seed, "opencv"))
        assert oi.shape == ti.shape and om.shape == tm.shape
        # inside the image the gradient is sampled at the same points (to 1/32 px)
        assert np.abs(oi - ti).mean() < 2e-3, s
        assert (om != tm).mean() < 0.01, s
        assert set(np.unique(om)) <= {0.0, 1.0}


def test_the_identity_map_copies_exactly() -> None:
    image, mask = _pair()
    still = AugmentConfig(flip=False, rotate_deg=0, shift=0, zoom=0, brightness=0, contrast=0)
    oi, om = (t.numpy() for t in augment_pair(image, mask, still, np.array([1, 2], np.int64), "opencv"))
    np.testing.assert_array_equal(oi, image)
    np.testing.assert_array_equal(om, mask)


def test_an_unknown_warp_is_refused() -> None:
    image, mask = _pair(16)
    with pytest.raises(ValueError, match="warp must be 'tf' or 'opencv'"):
        augment_pair(image, mask, AugmentConfig(), np.array([0, 0], np.int64), "scipy")  # type: ignore[arg-type]
