"""Patch sampling: alignment, category shares, fallbacks, hard negatives, the tf.data pipeline."""

from __future__ import annotations

import numpy as np
import pytest

from mammoseg.training.patches import (
    PatchCandidates,
    PatchConfig,
    cut_patch,
    draw_patch,
    hard_negative_map,
    make_patch_dataset,
    sample_patch_boxes,
)


def coordinate_image(h: int, w: int) -> np.ndarray:
    """uint16 image whose pixel value is its flat index ``y·w + x`` (so a patch says where it
    was cut from)."""
    assert h * w <= 65536
    return np.arange(h * w, dtype=np.uint16).reshape(h, w)


def disc(shape: tuple[int, int], cy: int, cx: int, r: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def box_of(patch: np.ndarray, w: int) -> tuple[int, int]:
    """Top-left corner of a patch of :func:`coordinate_image` (values are flat indices)."""
    return divmod(int(patch[0, 0]), w)


# --- config ----------------------------------------------------------------------------------


def test_config_round_trips_and_validates() -> None:
    config = PatchConfig(patch_size=64, lesion_share=0.6, hard_negative_share=0.3, jitter=0.2)
    assert PatchConfig.from_dict(config.to_dict()) == config
    assert config.random_share == pytest.approx(0.1)
    with pytest.raises(ValueError, match="unknown PatchConfig"):
        PatchConfig.from_dict({"patch_sise": 64})
    for bad in (
        {"patch_size": 0},
        {"patch_size": 64.0},
        {"lesion_share": 1.2},
        {"hard_negative_share": -0.1},
        {"lesion_share": 0.7, "hard_negative_share": 0.4},
        {"jitter": 1.5},
        {"patches_per_image": 0},
    ):
        with pytest.raises(ValueError, match="invalid PatchConfig"):
            PatchConfig(**bad)


# --- cutting and alignment -------------------------------------------------------------------


def test_cut_patch_copies_the_box_and_rejects_boxes_outside() -> None:
    image = coordinate_image(40, 50)
    patch = cut_patch(image, 3, 7, 16)
    assert patch.shape == (16, 16) and box_of(patch, 50) == (3, 7)
    np.testing.assert_array_equal(patch, image[3:19, 7:23])
    patch[:] = 0
    assert image[3, 7] == 3 * 50 + 7  # a copy, not a view
    assert cut_patch(np.zeros((40, 50, 2)), 0, 0, 8).shape == (8, 8, 2)
    for y0, x0 in ((-1, 0), (0, -1), (25, 0), (0, 35)):
        with pytest.raises(ValueError, match="not inside"):
            cut_patch(image, y0, x0, 16)


def test_sampled_boxes_are_inside_and_image_and_mask_patches_align() -> None:
    h, w, size = 120, 150, 32
    image = coordinate_image(h, w)
    mask = disc((h, w), 5, 140, 4).astype(np.uint8)  # a lesion near a corner: boxes get clamped
    breast = np.ones((h, w), bool)
    hard = disc((h, w), 110, 3, 3)
    before = (image.copy(), mask.copy(), breast.copy(), hard.copy())
    config = PatchConfig(patch_size=size, jitter=1.0)
    boxes = sample_patch_boxes(mask, breast, hard, config, np.random.default_rng(0), 500)
    assert len(boxes) == 500
    for y0, x0 in boxes:
        assert 0 <= y0 <= h - size and 0 <= x0 <= w - size
        image_patch, mask_patch = cut_patch(image, y0, x0, size), cut_patch(mask, y0, x0, size)
        assert box_of(image_patch, w) == (y0, x0)
        np.testing.assert_array_equal(image_patch, image[y0 : y0 + size, x0 : x0 + size])
        np.testing.assert_array_equal(mask_patch, mask[y0 : y0 + size, x0 : x0 + size])
    for a, b in zip(before, (image, mask, breast, hard)):
        np.testing.assert_array_equal(a, b)  # nothing modified


# --- shares and fallbacks --------------------------------------------------------------------


def kind_of_box(box: tuple[int, int], size: int, lesion: np.ndarray, hard: np.ndarray) -> str:
    """With jitter 0 and no clamping, the patch centre is the sampled pixel."""
    cy, cx = box[0] + size // 2, box[1] + size // 2
    return "lesion" if lesion[cy, cx] else "hard_negative" if hard[cy, cx] else "random"


@pytest.mark.parametrize(("lesion_share", "hard_share"), [(0.5, 0.2), (0.3, 0.5), (0.0, 0.0)])
def test_kind_shares_match_the_config(lesion_share, hard_share) -> None:
    shape, size, n = (200, 200), 16, 4000
    lesion = disc(shape, 100, 60, 3)  # small targets: a random centre hits one w.p. < 0.1 %
    hard = disc(shape, 50, 150, 3)
    breast = np.ones(shape, bool)
    config = PatchConfig(
        patch_size=size, lesion_share=lesion_share, hard_negative_share=hard_share, jitter=0.0
    )
    boxes = sample_patch_boxes(lesion, breast, hard, config, np.random.default_rng(1), n)
    kinds = [kind_of_box(b, size, lesion, hard) for b in boxes]
    shares = {k: kinds.count(k) / n for k in ("lesion", "hard_negative", "random")}
    # binomial standard error at n = 4000 is <= 0.008; allow ~4 of them
    assert shares["lesion"] == pytest.approx(lesion_share, abs=0.03)
    assert shares["hard_negative"] == pytest.approx(hard_share, abs=0.03)
    assert shares["random"] == pytest.approx(1 - lesion_share - hard_share, abs=0.03)


def test_jitter_moves_the_lesion_off_centre_but_keeps_it_in_the_patch() -> None:
    shape, size = (200, 200), 32
    lesion = np.zeros(shape, bool)
    lesion[100, 100] = True
    config = PatchConfig(patch_size=size, lesion_share=1.0, hard_negative_share=0.0, jitter=0.5)
    boxes = sample_patch_boxes(
        lesion, np.ones(shape, bool), lesion * 0, config, np.random.default_rng(2), 300
    )
    offsets = np.array([(100 - y0 - size // 2, 100 - x0 - size // 2) for y0, x0 in boxes])
    assert np.abs(offsets).max() <= size // 4  # jitter 0.5 → at most a quarter patch
    assert len({tuple(o) for o in offsets}) > 50  # not always in the centre
    assert all(cut_patch(lesion, y0, x0, size).sum() == 1 for y0, x0 in boxes)


def test_kinds_without_pixels_fall_back_to_random_in_the_breast_then_anywhere() -> None:
    shape, size = (100, 120), 16
    empty = np.zeros(shape, bool)
    breast = np.zeros(shape, bool)
    breast[40:60, 50:70] = True  # centres inside it never need clamping
    config = PatchConfig(patch_size=size, lesion_share=0.5, hard_negative_share=0.5)
    boxes = sample_patch_boxes(empty, breast, empty, config, np.random.default_rng(3), 300)
    assert all(breast[y0 + size // 2, x0 + size // 2] for y0, x0 in boxes)
    candidates = PatchCandidates.from_masks(empty, breast, empty)
    kinds = {draw_patch(candidates, config, np.random.default_rng(s))[2] for s in range(50)}
    assert kinds == {"random"}
    # no breast either: anywhere in the image, still fully inside
    boxes = sample_patch_boxes(empty, empty, empty, config, np.random.default_rng(4), 300)
    assert all(0 <= y0 <= 100 - size and 0 <= x0 <= 120 - size for y0, x0 in boxes)
    assert len(set(boxes)) > 100


def test_sparse_breast_still_samples_inside_it() -> None:
    # A breast too sparse in its bounding box for rejection sampling: the exact fallback draws.
    shape = (300, 300)
    breast = np.zeros(shape, bool)
    breast[0, 0] = breast[299, 299] = True
    config = PatchConfig(patch_size=1, lesion_share=0.0, hard_negative_share=0.0)
    boxes = sample_patch_boxes(breast * 0, breast, breast * 0, config, np.random.default_rng(5), 40)
    assert set(boxes) == {(0, 0), (299, 299)}


def test_sampling_rejects_mismatched_shapes_and_small_images() -> None:
    config = PatchConfig(patch_size=32)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="one shape"):
        sample_patch_boxes(
            np.zeros((40, 40)), np.ones((40, 41)), np.zeros((40, 40)), config, rng, 1
        )
    with pytest.raises(ValueError, match="smaller than patch_size"):
        sample_patch_boxes(
            np.zeros((20, 40)), np.ones((20, 40)), np.zeros((20, 40)), config, rng, 1
        )


# --- hard negatives --------------------------------------------------------------------------


def synthetic_mlo(size: int = 96, seed: int = 0):
    """A canonical MLO view: chest wall on the left, a bright pectoral triangle in the top-left
    corner, mid-grey noisy tissue, a brighter round lesion, dark background on the right."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    breast = xx < int(size * 0.85)
    image = np.where(breast, 20000 + rng.normal(0, 1500, (size, size)), 500)
    pectoral = (yy + xx < size * 0.3) & breast
    image[pectoral] = 45000
    lesion = disc((size, size), int(size * 0.65), int(size * 0.45), size * 0.06)
    image[lesion] = 60000
    return np.clip(image, 0, 65535).astype(np.uint16), breast, lesion, pectoral


def test_hard_negative_map_marks_the_pectoral_triangle_and_not_the_lesion() -> None:
    image, breast, lesion, pectoral = synthetic_mlo()
    before = image.copy()
    hard = hard_negative_map(image, breast, lesion)
    assert hard.dtype == bool and hard.shape == image.shape
    assert hard[pectoral].mean() > 0.9, hard[pectoral].mean()
    assert not hard[lesion].any()
    near = disc(image.shape, int(96 * 0.65), int(96 * 0.45), 96 * 0.06 + 1.5)
    assert not hard[near].any()  # the lesion's dilated neighbourhood is left out too
    assert not hard[~breast].any()
    assert hard.mean() < 0.2  # hard negatives are a minority of the breast
    np.testing.assert_array_equal(image, before)


def test_hard_negative_map_follows_the_chest_wall_side_and_handles_no_breast() -> None:
    image, breast, lesion, pectoral = synthetic_mlo()
    flip = (image[:, ::-1], breast[:, ::-1], lesion[:, ::-1])
    # dense_percentile=100 turns the dense-tissue rule off: only the pectoral zone rule is left
    right = hard_negative_map(*flip, chest_wall="R", dense_percentile=100.0)
    assert right[pectoral[:, ::-1]].mean() > 0.9
    assert not right[:, : 96 // 2].any()  # nothing outside the top-right corner zone
    assert not right[96 // 2 :].any()
    wrong = hard_negative_map(*flip, chest_wall="L", dense_percentile=100.0)
    assert not wrong[pectoral[:, ::-1]].any()  # the triangle is outside the top-left zone
    assert not wrong[:, 96 // 3 :].any() and not wrong[96 // 3 :].any()
    empty = np.zeros(image.shape, bool)
    assert not hard_negative_map(image, empty, lesion).any()
    with pytest.raises(ValueError, match="one shape"):
        hard_negative_map(image, breast[:, :10], lesion)


# --- tf.data ---------------------------------------------------------------------------------


def test_patch_dataset_yields_aligned_float_patches_with_the_lesion() -> None:
    pytest.importorskip("tensorflow")
    h, w, size = 96, 128, 32
    image = coordinate_image(h, w)
    mask = disc((h, w), 40, 70, 4).astype(np.uint8)
    breast = np.ones((h, w), bool)
    lesion_pixels = int(mask.sum())
    config = PatchConfig(
        patch_size=size,
        lesion_share=1.0,
        hard_negative_share=0.0,
        jitter=0.25,
        patches_per_image=5,
    )
    ds = make_patch_dataset(
        [image, image.copy()], [mask, mask.copy()], [breast, breast], config, batch_size=4, seed=3
    )
    assert int(ds.cardinality()) == 3  # 2 images × 5 patches = 10 → batches of 4, 4, 2
    epochs = []
    for _ in range(2):
        corners = []
        n = 0
        for images, masks in ds:
            assert images.dtype.name == "float32" and masks.dtype.name == "float32"
            assert images.shape[1:] == (size, size, 1) and masks.shape[1:] == (size, size, 1)
            for img, msk in zip(images.numpy()[..., 0], masks.numpy()[..., 0]):
                flat = np.rint(img * 65535).astype(np.int64)  # back to coordinates
                y0, x0 = divmod(int(flat[0, 0]), w)
                np.testing.assert_array_equal(flat, image[y0 : y0 + size, x0 : x0 + size])
                np.testing.assert_array_equal(msk, mask[y0 : y0 + size, x0 : x0 + size])
                assert msk.sum() == lesion_pixels  # a lesion patch holds the whole lesion
                corners.append((y0, x0))
                n += 1
        assert n == 10
        epochs.append(corners)
    assert epochs[0] != epochs[1]  # fresh patches every epoch


def test_patch_dataset_with_augmentation_keeps_shapes_and_a_binary_mask() -> None:
    pytest.importorskip("tensorflow")
    from mammoseg.training.augment import AugmentConfig

    image, breast, lesion, _ = synthetic_mlo(64)
    config = PatchConfig(patch_size=32, patches_per_image=6)
    ds = make_patch_dataset(
        [image],
        [lesion.astype(np.uint8)],
        [breast],
        config,
        batch_size=6,
        augment=AugmentConfig(seed=1),
    )
    images, masks = next(iter(ds))
    assert images.shape == masks.shape == (6, 32, 32, 1)
    assert set(np.unique(masks.numpy())) <= {0.0, 1.0}
    assert 0.0 <= float(images.numpy().min()) and float(images.numpy().max()) <= 1.0


def test_patch_dataset_rejects_bad_inputs() -> None:
    config = PatchConfig(patch_size=32)
    img, ones = np.zeros((40, 40), np.uint16), np.ones((40, 40), bool)
    with pytest.raises(ValueError, match="no images"):
        make_patch_dataset([], [], [], config, batch_size=2)
    with pytest.raises(ValueError, match="one of each"):
        make_patch_dataset([img], [], [ones], config, batch_size=2)
    with pytest.raises(ValueError, match="uint8/uint16"):
        make_patch_dataset([img.astype(np.float32)], [ones], [ones], config, batch_size=2)
    with pytest.raises(ValueError, match="only 0 and 1"):
        make_patch_dataset([img], [ones * 2], [ones], config, batch_size=2)
    with pytest.raises(ValueError, match="smaller than patch_size"):
        make_patch_dataset([img[:20]], [ones[:20]], [ones[:20]], config, batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        make_patch_dataset([img], [ones], [ones], config, batch_size=0)
