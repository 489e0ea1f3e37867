"""Intensity augmentation: image only, breast only, seeded, and off by default."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from mammoseg.training.augment import AugmentConfig, _uniforms, augment_pair, breast_blur

SIZE = 48
STILL = {"flip": False, "rotate_deg": 0.0, "shift": 0.0, "zoom": 0.0}
NO_LEGACY = {"brightness": 0.0, "contrast": 0.0}
NEW_OPS = {"gamma": 0.5, "blur_sigma": 1.5, "noise_std": 0.05}


def breast_image() -> tuple[np.ndarray, np.ndarray]:
    """A textured half-disc "breast" (values in 0.05..0.95) on a 0 background, and a lesion."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    breast = (yy - SIZE / 2) ** 2 + xx**2 <= (0.8 * SIZE) ** 2
    rng = np.random.default_rng(0)
    image = np.where(breast, rng.uniform(0.05, 0.95, (SIZE, SIZE)), 0.0).astype("float32")
    mask = ((yy - 24) ** 2 + (xx - 12) ** 2 <= 25).astype("float32")
    return image[..., None], mask[..., None]


def run(config: AugmentConfig, seed: int, image=None, mask=None):
    default_image, default_mask = breast_image()
    image = default_image if image is None else image
    mask = default_mask if mask is None else mask
    img, msk = augment_pair(tf.constant(image), tf.constant(mask), config, tf.constant([seed, 3]))
    return img.numpy(), msk.numpy()


@pytest.mark.parametrize("still", [True, False])
def test_the_mask_is_never_touched_by_intensity_ops(still: bool) -> None:
    geometry = STILL if still else {}
    base = AugmentConfig(**geometry)
    full = AugmentConfig(**geometry, **NEW_OPS, keep_background=True)
    _, mask = breast_image()
    for seed in range(4):
        _, m_base = run(base, seed)
        _, m_full = run(full, seed)
        np.testing.assert_array_equal(m_full, m_base)  # same warp, intensity is image-only
        if still:
            np.testing.assert_array_equal(m_full, mask)


def test_background_stays_exactly_zero_with_every_op_on() -> None:
    full = AugmentConfig(**NEW_OPS, brightness=0.3, contrast=0.3, keep_background=True)
    warp_only = AugmentConfig(**NO_LEGACY)
    for seed in range(6):
        warped, _ = run(warp_only, seed)
        img, _ = run(full, seed)
        background = warped == 0
        assert background.any()
        assert np.all(img[background] == 0.0)
        assert 0.0 <= img.min() and img.max() <= 1.0


def test_new_ops_keep_the_background_even_without_keep_background() -> None:
    config = AugmentConfig(**NO_LEGACY, **NEW_OPS)  # keep_background False: legacy ops are off
    for seed in range(4):
        warped, _ = run(AugmentConfig(**NO_LEGACY), seed)
        img, _ = run(config, seed)
        assert np.all(img[warped == 0] == 0.0)


def test_deterministic_for_a_seed_and_seed_dependent() -> None:
    config = AugmentConfig(**NEW_OPS, keep_background=True)
    a, b, c = run(config, 5), run(config, 5), run(config, 6)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("op", ["gamma", "blur_sigma", "noise_std"])
def test_each_op_changes_the_breast_and_only_the_breast(op: str) -> None:
    image, _ = breast_image()
    config = AugmentConfig(**STILL, **NO_LEGACY, **{op: NEW_OPS[op]})
    changed = 0
    for seed in range(4):
        img, _ = run(config, seed)
        assert np.all(img[image == 0] == 0.0)
        changed += not np.allclose(img, image, atol=1e-4)
    assert changed >= 3


def test_gamma_is_a_power_within_the_configured_range() -> None:
    image = np.zeros((SIZE, SIZE, 1), "float32")
    image[8:40, :30] = 0.25
    _, mask = breast_image()
    g = 1.0  # exponents in [1/2, 2]: 0.25 -> [0.0625, 0.5]
    config = AugmentConfig(**STILL, **NO_LEGACY, gamma=g)
    seen = set()
    for seed in range(8):
        img, _ = run(config, seed, image, mask)
        level = img[image > 0]
        assert np.ptp(level) == 0.0  # one exponent per image
        assert 0.25**2 - 1e-6 <= level[0] <= 0.25**0.5 + 1e-6
        assert np.all(img[image == 0] == 0.0)
        seen.add("darker" if level[0] < 0.25 else "brighter")
    assert seen == {"darker", "brighter"}


def test_blur_is_normalised_inside_the_breast() -> None:
    """A uniform breast stays uniform up to its edge: no dark rim from the black background."""
    image = np.zeros((SIZE, SIZE, 1), "float32")
    image[8:40, :30] = 0.6
    breast = tf.constant(image > 0)
    out = breast_blur(tf.constant(image), breast, tf.constant(2.0), 2.0).numpy()
    np.testing.assert_allclose(out[image > 0], 0.6, rtol=1e-5)
    checker = np.where(image > 0, (np.indices((SIZE, SIZE)).sum(0) % 2)[..., None] * 0.5 + 0.2, 0)
    checker = checker.astype("float32")
    smooth = breast_blur(tf.constant(checker), breast, tf.constant(1.5), 2.0).numpy()
    assert smooth[image > 0].std() < 0.2 * checker[image > 0].std()


def test_noise_stays_within_its_drawn_spread() -> None:
    image, _ = breast_image()
    config = AugmentConfig(**STILL, **NO_LEGACY, noise_std=0.02)
    for seed in range(4):
        img, _ = run(config, seed)
        diff = (img - image)[image > 0]
        assert diff.std() <= 0.02 * 1.1
        assert abs(diff.mean()) < 0.005


def test_probability_zero_means_never() -> None:
    config = AugmentConfig(**NEW_OPS, gamma_prob=0.0, blur_prob=0.0, noise_prob=0.0, **NO_LEGACY)
    for seed in range(3):
        np.testing.assert_array_equal(
            run(config, seed)[0], run(AugmentConfig(**NO_LEGACY), seed)[0]
        )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_new_fields_off_is_bit_identical_to_the_legacy_formula(seed: int) -> None:
    """gamma / blur / noise at 0 (and keep_background False) reproduce the earlier pipeline:
    warp, then ``(x - mean)·f + mean + b`` over the whole image, then clip."""
    legacy = AugmentConfig(seed=4)
    assert (legacy.gamma, legacy.blur_sigma, legacy.noise_std) == (0.0, 0.0, 0.0)
    assert not legacy.keep_background
    with_probs = dataclasses.replace(legacy, gamma_prob=0.3, blur_prob=0.2, noise_prob=0.1)
    img, msk = run(legacy, seed)
    img2, _ = run(with_probs, seed)
    np.testing.assert_array_equal(img, img2)

    warped, warped_mask = run(dataclasses.replace(legacy, **NO_LEGACY), seed)
    u = _uniforms(tf.constant([seed, 3]))
    x = tf.constant(warped)
    factor = 1.0 + (2.0 * u[7] - 1.0) * legacy.contrast
    mean = tf.reduce_mean(x)
    x = (x - mean) * factor + mean
    x = x + (2.0 * u[6] - 1.0) * legacy.brightness
    expected = tf.clip_by_value(x, 0.0, 1.0).numpy()
    np.testing.assert_array_equal(img, expected)
    np.testing.assert_array_equal(msk, warped_mask)


def test_config_validation_and_old_dicts() -> None:
    old = {
        "flip": True,
        "flip_axis": "vertical",
        "rotate_deg": 15.0,
        "shift": 0.1,
        "zoom": 0.1,
        "brightness": 0.1,
        "contrast": 0.1,
        "seed": 0,
    }
    assert AugmentConfig.from_dict(old) == AugmentConfig()
    cfg = AugmentConfig(gamma=0.3, blur_sigma=1.0, blur_prob=0.3, noise_std=0.02)
    assert AugmentConfig.from_dict(cfg.to_dict()) == cfg
    for bad, match in [
        ({"gamma": -0.1}, "gamma"),
        ({"blur_sigma": 100.0}, "blur_sigma"),
        ({"noise_std": 2.0}, "noise_std"),
        ({"blur_prob": 1.5}, "blur_prob"),
    ]:
        with pytest.raises(ValueError, match=match):
            AugmentConfig(**bad)
