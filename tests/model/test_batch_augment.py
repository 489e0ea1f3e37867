"""The batch-level augmentation (one op per batch) is the per-sample augmentation, batched."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

tf = pytest.importorskip("tensorflow")

from mammoseg.storage import LocalStore
from mammoseg.training.augment import AugmentConfig, augment_batch, augment_pair
from mammoseg.training.dataset import make_dataset

SIZE = 32
RECIPE = AugmentConfig(seed=5, keep_background=True, gamma=0.4, blur_sigma=1.5, noise_std=0.03, brightness=0.15)


def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    masks = (rng.random((n, SIZE, SIZE, 1)) > 0.8).astype(np.float32)
    images = (0.2 + 0.6 * rng.random((n, SIZE, SIZE, 1))).astype(np.float32)
    images[:, :, :6] = 0.0  # a background band, as preprocessing leaves
    return images, masks


@pytest.mark.parametrize("warp", ["opencv", "tf"])
@pytest.mark.parametrize("config", [AugmentConfig(seed=1), RECIPE], ids=["affine+bc", "recipe"])
def test_each_sample_of_a_batch_gets_exactly_its_per_sample_augmentation(warp: str, config: AugmentConfig) -> None:
    images, masks = _pairs(5)
    seeds = np.array([[i, 11 * i + 3] for i in range(5)], np.int64)
    bi, bm = (t.numpy() for t in augment_batch(tf.constant(images), tf.constant(masks), config, tf.constant(seeds), warp))
    assert bi.shape == bm.shape == (5, SIZE, SIZE, 1)
    for i in range(5):
        si, sm = (t.numpy() for t in augment_pair(tf.constant(images[i]), tf.constant(masks[i]), config, tf.constant(seeds[i]), warp))
        np.testing.assert_array_equal(bm[i], sm)  # the same warp of the mask, bit for bit
        np.testing.assert_allclose(bi[i], si, atol=1e-6)  # a per-image mean reduced along other axes
    assert set(np.unique(bm)) <= {0.0, 1.0}
    assert not np.array_equal(bm[0], bm[1])  # each sample its own map


def test_the_image_and_its_mask_share_one_warp() -> None:
    # an image that *is* its mask, no intensity op: after the warp it must still be its mask
    _, masks = _pairs(6)
    config = AugmentConfig(seed=2, brightness=0.0, contrast=0.0, rotate_deg=30.0)
    seeds = tf.constant([[i, 2] for i in range(6)], tf.int64)
    bi, bm = (t.numpy() for t in augment_batch(tf.constant(masks), tf.constant(masks), config, seeds))
    np.testing.assert_array_equal((bi >= 0.5).astype(np.float32), bm)


def test_an_unknown_warp_is_refused_in_a_batch() -> None:
    images, masks = _pairs(2)
    with pytest.raises(ValueError, match="warp must be 'tf' or 'opencv'"):
        augment_batch(tf.constant(images), tf.constant(masks), AugmentConfig(), tf.constant([[1, 2], [3, 4]]), "scipy")


@pytest.mark.parametrize("cache", [True, False], ids=["in-memory", "streamed"])
def test_make_dataset_per_batch_gives_the_per_sample_pipeline_output(tmp_path, cache: bool) -> None:
    store = LocalStore(tmp_path)
    images, masks = _pairs(11)
    rows = []
    for i in range(11):
        buf = io.BytesIO()
        np.savez(buf, image=(images[i, ..., 0] * 65535).astype(np.uint16), mask=masks[i, ..., 0].astype(np.uint8))
        store.write_bytes(f"pre/{i}.npz", buf.getvalue())
        rows.append({"case_id": f"c{i}", "npz_key": f"pre/{i}.npz"})
    manifest = pd.DataFrame(rows)
    for augment in (RECIPE, None):
        kw = {"batch_size": 4, "training": True, "augment": augment, "cache": cache}
        fast = [(x.numpy(), y.numpy()) for x, y in make_dataset(store, manifest, **kw)]
        slow = [(x.numpy(), y.numpy()) for x, y in make_dataset(store, manifest, per_batch=False, **kw)]
        assert [x.shape[0] for x, _ in fast] == [4, 4, 3]  # the last batch partial, as before
        for (fi, fm), (si, sm) in zip(fast, slow, strict=True):
            np.testing.assert_array_equal(fm, sm)
            np.testing.assert_allclose(fi, si, atol=1e-6)
    # validation order: manifest order, no augmentation
    (first, _), *_ = make_dataset(store, manifest, batch_size=4, training=False, cache=cache)
    np.testing.assert_allclose(first.numpy(), np.floor(images[:4] * 65535) / 65535, atol=1e-6)
