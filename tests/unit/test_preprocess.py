"""Preprocessing: border crop, side, CLAHE, Transform, alignment checks, case level, contact sheet.

All images are small hand-made numpy phantoms with known geometry (no synthetic-data module).
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import replace

import cv2
import numpy as np
import pytest

from mammoseg.contact_sheet import contact_sheet
from mammoseg.preprocess import (
    AlignmentError,
    ImageDecodeError,
    InvalidImageError,
    MaskDecodeError,
    MaskNotFoundError,
    MaskRef,
    MaskShapeError,
    NoBreastError,
    PreprocessParams,
    Transform,
    border_crop,
    check_alignment,
    chest_wall_side,
    clahe,
    load_preprocessed,
    mask_stats,
    otsu_threshold,
    preprocess_arrays,
    preprocess_case,
    read_preprocessed,
    roundtrip_iou,
    square_padding,
    stretch_to_uint16,
)
from mammoseg.preprocess.steps import side_cues
from mammoseg.preprocess.transform import Resize
from mammoseg.storage import LocalStore, open_store

# ---------------------------------------------------------------------------------------------
# phantoms
# ---------------------------------------------------------------------------------------------
H, W = 200, 120
CY, RY, RX = 100, 60, 50  # half-ellipse breast: centre on the chest-wall edge


def ellipse_mask(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def phantom(
    side: str = "R", *, label: bool = True, dtype: type = np.uint16, seed: int = 0
) -> np.ndarray:
    """A breast (half ellipse on the ``side`` edge, brighter towards the chest wall, textured)
    plus, optionally, a saturated label rectangle touching the opposite border."""
    rng = np.random.default_rng(seed)
    top = 65535 if dtype == np.uint16 else 255
    cx = W - 1 if side == "R" else 0
    breast = ellipse_mask(H, W, CY, cx, RY, RX)
    xx = np.mgrid[0:H, 0:W][1]
    depth = 1.0 - np.abs(xx - cx) / RX  # 1 at the chest wall, 0 at the nipple
    tissue = (0.35 + 0.3 * depth + 0.05 * rng.standard_normal((H, W))) * top
    img = np.where(breast, np.clip(tissue, 0.1 * top, 0.8 * top), 0.0)
    if label:
        lx0, lx1 = (0, 30) if side == "R" else (W - 30, W)
        img[5:20, lx0:lx1] = top
    return img.astype(dtype)


def lesion_at(cy: int, cx: int, r: int, shape: tuple[int, int] = (H, W)) -> np.ndarray:
    return ellipse_mask(shape[0], shape[1], cy, cx, r, r)


NO_MARGIN = PreprocessParams(size=64, crop_margin=0.0, opening_fraction=0.0)


# ---------------------------------------------------------------------------------------------
# border crop
# ---------------------------------------------------------------------------------------------
def test_otsu_threshold_splits_two_levels_between_them() -> None:
    values = np.array([0, 0, 0, 10, 10], dtype=np.uint16)
    t = otsu_threshold(values, bins=10)
    assert 0 < t <= 10  # first bin edge above 0: 1.0
    assert t == pytest.approx(1.0)
    with pytest.raises(NoBreastError, match="constant"):
        otsu_threshold(np.full(10, 7))


def test_border_crop_covers_the_ellipse_not_the_label_exactly_without_opening() -> None:
    img = phantom("R")
    crop = border_crop(img, NO_MARGIN)
    # Ellipse centred at (y=100, x=119), ry=60, rx=50: rows 40..160, columns 69..119.
    assert crop.box == (40, 161, 69, 120)
    assert not crop.breast_mask[5:20, 0:30].any()  # the label is not breast
    assert crop.breast_mask[CY, W - 1]


def test_border_crop_with_default_opening_and_margin() -> None:
    img = phantom("R")
    params = PreprocessParams(size=64)  # margin 0.02 * 200 = 4 px; opening 5 px
    y0, y1, x0, x1 = border_crop(img, params).box
    # The opening may shave the one-pixel tips of the ellipse: ±1 px around the hand values.
    assert abs(y0 - (40 - 4)) <= 1 and abs(y1 - (161 + 4)) <= 1
    assert abs(x0 - (69 - 4)) <= 1 and x1 == W
    assert y0 > 20  # the label rows 5..19 are out


def test_border_crop_works_on_8bit_too() -> None:
    assert border_crop(phantom("R", dtype=np.uint8), NO_MARGIN).box == (40, 161, 69, 120)


def test_a_bright_edge_strip_larger_than_the_breast_is_not_chosen() -> None:
    img = np.zeros((H, W), dtype=np.uint16)
    img[ellipse_mask(H, W, 100, W - 1, 30, 20)] = 30000  # small breast: ~940 px
    img[:, 0:11] = 65535  # scanner strip, full height: 2200 px
    crop = border_crop(img, NO_MARGIN)
    assert crop.box == (70, 131, 99, 120)
    assert not crop.breast_mask[:, :11].any()


def test_a_strip_joined_to_the_breast_along_its_edge_is_trimmed() -> None:
    img = phantom("R", label=False)
    img[:, W - 6 :] = 65535  # strip along the chest-wall edge, joined to the breast
    y0, y1, x0, x1 = border_crop(img, NO_MARGIN).box
    assert (x0, x1) == (69, 120)
    # Without trimming the box would run from row 0 to 200. Trimmed: the rows where the mask is
    # at most strip width + 1 = 7 px wide, i.e. the strip alone plus the breast's tip rows 40
    # and 160 (breast half-width 50 * sqrt(1 - (59/60)^2) = 9 px already at rows 41 and 159).
    assert (y0, y1) == (41, 160)


def test_blank_image_raises_no_breast() -> None:
    with pytest.raises(NoBreastError):
        border_crop(np.zeros((64, 64), dtype=np.uint16))
    speck = np.zeros((200, 200), dtype=np.uint16)
    speck[100:102, 100:102] = 1000  # 4 px: far below the 0.5 % a breast must cover
    with pytest.raises(NoBreastError, match="no breast-like region"):
        border_crop(speck, NO_MARGIN)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64), np.float32), np.zeros((8, 64), np.uint8)],
)
def test_invalid_images_are_refused(bad: np.ndarray) -> None:
    with pytest.raises(InvalidImageError):
        preprocess_arrays(bad)


# ---------------------------------------------------------------------------------------------
# side, window, CLAHE, padding
# ---------------------------------------------------------------------------------------------
def test_chest_wall_side_from_pixels_beats_the_tag() -> None:
    right = phantom("R", label=False)
    mask = right > 0
    assert chest_wall_side(right, mask) == ("R", "pixels")
    assert chest_wall_side(right, mask, "L") == ("R", "pixels")  # pixels win over a wrong tag
    left = right[:, ::-1]
    assert chest_wall_side(left, left > 0, "R") == ("L", "pixels")


def test_dense_tissue_near_the_nipple_does_not_flip_the_side() -> None:
    # a breast attached to the left edge along its whole height (chest wall left), fatty (dim)
    # near the chest wall and dense (bright) towards the nipple: the mass cue says right
    h, w = 120, 80
    breast = ellipse_mask(h, 2 * w, (h - 1) / 2, 0, h / 2, w - 4)[:, :w]
    img = np.where(breast, 3000, 0).astype(np.uint16)
    img[breast & (np.arange(w)[None, :] > w // 2)] = 30000
    (attached, a_strength), (heavier, m_strength) = side_cues(img, breast)
    assert (attached, heavier) == ("L", "R") and a_strength >= 0.2 and m_strength >= 0.05
    assert chest_wall_side(img, breast) == ("L", "pixels")  # no tag: the attachment
    assert chest_wall_side(img, breast, "L") == ("L", "laterality")  # the cues disagree: the tag
    assert chest_wall_side(img, breast, "R") == ("R", "laterality")


def test_chest_wall_side_falls_back_to_the_tag_when_symmetric() -> None:
    img = np.zeros((100, 100), np.uint16)
    disc = ellipse_mask(100, 100, 49.5, 49.5, 30, 30)
    img[disc] = 20000
    assert chest_wall_side(img, disc, "R") == ("R", "laterality")
    assert chest_wall_side(img, disc, "L") == ("L", "laterality")


def test_flip_decision_in_preprocess_arrays() -> None:
    right = preprocess_arrays(phantom("R"), [], PreprocessParams(size=64))
    left = preprocess_arrays(phantom("L", label=False), [], PreprocessParams(size=64))
    assert right.transform.flipped and right.chest_wall_side == "R"
    assert not left.transform.flipped and left.chest_wall_side == "L"
    for case in (right, left):  # canonical: the chest wall (bright) on the left edge
        cols = case.image.astype(float).sum(axis=0)
        assert cols[:8].sum() > 3 * cols[-8:].sum()
    to_r = preprocess_arrays(phantom("R"), [], PreprocessParams(size=64, canonical_side="R"))
    assert not to_r.transform.flipped


def test_stretch_to_uint16_is_exact_for_8bit_and_keeps_levels() -> None:
    img8 = np.array([[0, 1, 128, 255]], dtype=np.uint8)
    assert stretch_to_uint16(img8, 0, 255).tolist() == [[0, 257, 32896, 65535]]
    img12 = np.array([[100, 101, 4095, 5000]], dtype=np.uint16)
    out = stretch_to_uint16(img12, 100, 4095)
    assert out.tolist()[0][:2] == [0, round(65535 / 3995)] and out[0, 2] == out[0, 3] == 65535
    assert img12.tolist() == [[100, 101, 4095, 5000]]


def test_clahe_keeps_uint16_and_changes_contrast() -> None:
    rng = np.random.default_rng(1)
    xx = np.mgrid[0:128, 0:128][1]
    img = (20000 + 40 * xx + 200 * rng.standard_normal((128, 128))).astype(np.uint16)
    before = img.copy()
    out = clahe(img, 2.0, 4)
    assert out.dtype == np.uint16 and out.shape == img.shape
    assert np.array_equal(img, before)
    assert out.std() > 2 * img.std()  # contrast stretched
    # Monotone on average: left (darker) half stays darker than the right half.
    assert out[:, :64].mean() < out[:, 64:].mean()


def test_clahe_levels_make_the_clip_limit_depth_independent() -> None:
    # 256 levels spread over 16 bits (x 257) with levels=256 behave like 8-bit CLAHE; plain
    # 16-bit CLAHE (clip relative to 65536 bins) clips nearly everything and barely enhances.
    rng = np.random.default_rng(2)
    img8 = np.clip(100 + 30 * rng.standard_normal((128, 128)), 0, 255).astype(np.uint8)
    ref = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4)).apply(img8).astype(float)
    scaled = clahe(img8.astype(np.uint16) * 257, 2.0, 4, levels=256) / 257
    plain = clahe(img8.astype(np.uint16) * 257, 2.0, 4) / 257
    assert np.abs(scaled - ref).mean() < 2.0  # measured 0.95 (integer rounding in OpenCV)
    assert np.abs(plain - ref).mean() > 10.0  # measured 26
    assert scaled.std() > 1.5 * plain.std()


@pytest.mark.parametrize(
    ("h", "w", "side", "expected"),
    [
        (10, 4, "L", (0, 0, 0, 6)),
        (10, 4, "R", (0, 0, 6, 0)),
        (4, 9, "L", (2, 3, 0, 0)),
        (5, 5, "L", (0, 0, 0, 0)),
    ],
)
def test_square_padding(h: int, w: int, side: str, expected: tuple) -> None:
    assert square_padding(h, w, side) == expected  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Transform
# ---------------------------------------------------------------------------------------------
T = Transform(
    original_shape=(100, 60),
    crop_box=(10, 90, 20, 60),
    flipped=True,
    pad=(0, 0, 0, 40),
    output_size=40,
)


def test_transform_json_round_trip_and_validation() -> None:
    assert Transform.from_json(T.to_json()) == T
    assert json.loads(T.to_json())["crop_box"] == [10, 90, 20, 60]
    with pytest.raises(ValueError, match="not square"):
        Transform((100, 60), (10, 90, 20, 60), False, (0, 0, 0, 39), 40)
    with pytest.raises(ValueError, match="not inside"):
        Transform((100, 60), (10, 90, 20, 61), False, (0, 0, 0, 39), 40)
    with pytest.raises(ValueError, match="version"):
        Transform.from_json('{"crop_box": [0, 1, 0, 1]}')
    with pytest.raises(ValueError, match="JSON"):
        Transform.from_json("{nope")


def test_transform_points_by_hand() -> None:
    # crop (80 x 40) → flip → pad to 80 x 80 → scale 0.5.
    assert T.scale == 0.5
    # (y=10, x=59): crop → (0, 39); flip → (0, 0); pad → (0, 0); resize → (-0.25, -0.25).
    assert T.point_to_output(10, 59) == (-0.25, -0.25)
    assert T.point_to_original(-0.25, -0.25) == (10.0, 59.0)
    # (y=49.5, x=40): crop → (39.5, 20); flip → (39.5, 19); resize: (p + 0.5) / 2 - 0.5.
    assert T.point_to_output(49.5, 40) == (19.5, 9.25)
    y, x = T.point_to_original(*T.point_to_output(33.0, 27.0))
    assert (y, x) == pytest.approx((33.0, 27.0))


def test_forward_mask_nearest_keeps_masks_binary() -> None:
    mask = lesion_at(50, 40, 15, (100, 60))
    out = T.forward_mask(mask)
    assert out.dtype == np.uint8 and out.shape == (40, 40)
    assert set(np.unique(out).tolist()) == {0, 1}
    # Centre (50, 40): crop → (40, 20); flip → (40, 19); resize → (19.75, 9.25).
    cy, cx = mask_stats(out).centroid  # type: ignore[misc]
    assert abs(cy - 19.75) <= 0.5 and abs(cx - 9.25) <= 0.5


def test_to_original_undoes_everything_zero_outside_the_crop() -> None:
    ones = np.ones((40, 40), dtype=np.float32)
    back = T.to_original(ones)
    assert back.shape == (100, 60) and back.dtype == np.float32
    # The pad columns (output x >= 20) came from no original pixel; everything in the crop box
    # maps to the image half of the square, so the crop box is all ones, the rest zeros.
    assert back[10:90, 20:60].min() == 1.0
    assert back[:10].max() == 0.0 and back[90:].max() == 0.0 and back[:, :20].max() == 0.0
    pred = np.zeros((40, 40), dtype=bool)
    pred[0:2, 0:2] = True  # output top-left = original top-right of the crop (flipped)
    back_b = T.to_original(pred, order="nearest")
    assert back_b.dtype == bool
    assert back_b[10:14, 56:60].all() and back_b.sum() == 16


def test_roundtrip_iou_of_a_real_sized_lesion() -> None:
    img = phantom("R")
    lesion = lesion_at(100, 95, 12)
    case = preprocess_arrays(img, [lesion], PreprocessParams(size=64))
    iou = roundtrip_iou(lesion, case.transform)
    assert iou >= 0.9
    assert roundtrip_iou(lesion, case.transform, order="nearest") >= 0.85


# ---------------------------------------------------------------------------------------------
# alignment checks
# ---------------------------------------------------------------------------------------------
def test_check_alignment_passes_a_correct_resize_and_catches_shifts_and_scale() -> None:
    step = Resize(source_side=100, size=50)
    before = lesion_at(40, 60, 10, (100, 100))
    good = cv2.resize(before.view(np.uint8), (50, 50), interpolation=cv2.INTER_NEAREST_EXACT)
    assert check_alignment(before, good, (50, 50), step) == []

    shifted = np.roll(good, 4, axis=1)
    problems = check_alignment(before, shifted, (50, 50), step, name="lesion 1")
    assert len(problems) == 1 and "lesion 1 after resize: centroid" in problems[0]
    # The correct output is centred on (19.5, 29.5) (rows/cols sampled at 2i+1), the mapped
    # centre (40, 60) → (19.75, 29.75); shifted by 4: hypot(0.25, 3.75) = 3.76 px.
    assert "3.8 px off" in problems[0]

    wrong_scale = cv2.resize(
        cv2.resize(before.view(np.uint8), (70, 70), interpolation=cv2.INTER_NEAREST_EXACT)[
            :50, :50
        ],
        (50, 50),
        interpolation=cv2.INTER_NEAREST_EXACT,
    )
    assert any("area" in p for p in check_alignment(before, wrong_scale, (50, 50), step))
    assert "differs from image shape" in check_alignment(before, good, (64, 64), step)[0]


def test_check_alignment_in_breast() -> None:
    step = Resize(source_side=50, size=50)
    mask = lesion_at(10, 10, 5, (50, 50))
    breast = np.zeros((50, 50), bool)
    breast[:, 25:] = True
    problems = check_alignment(mask, mask, (50, 50), step, breast_after=breast)
    assert problems and "0% of its" in problems[0]


def test_preprocess_refuses_a_lesion_outside_the_breast() -> None:
    img = phantom("R")
    on_label = np.zeros((H, W), bool)
    on_label[6:18, 2:25] = True  # sits on the label, not in the breast
    with pytest.raises(AlignmentError, match=r"lesion 1 .*0% of its pixels lie inside"):
        preprocess_arrays(img, [on_label], PreprocessParams(size=64))


def test_preprocess_refuses_a_mask_of_another_size() -> None:
    with pytest.raises(MaskShapeError, match="200x121"):
        preprocess_arrays(phantom("R"), [np.zeros((H, W + 1), bool)], PreprocessParams(size=64))


def test_a_label_in_the_corner_of_the_crop_box_is_blanked() -> None:
    img = phantom("R", label=False)
    img[40:50, 70:80] = 65535  # inside the breast's bounding box, >= 19 px from the breast
    label = np.zeros((H, W), bool)
    label[40:50, 70:80] = True
    params = PreprocessParams(size=64, opening_fraction=0.0)
    case = preprocess_arrays(img, [], params)
    y0, _, x0, _ = case.transform.crop_box
    assert y0 <= 40 and x0 <= 70  # the label is inside the crop box ...
    where = case.transform.forward_mask(label) == 1
    assert where.sum() > 0 and case.image[where].max() == 0  # ... but blanked
    kept = preprocess_arrays(img, [], replace(params, blank_outside_breast=False))
    assert kept.image[where].max() > 30000


def test_a_lesion_near_the_skin_extends_the_crop_instead_of_being_cut() -> None:
    img = phantom("R", label=False)
    # Over the nipple tip (breast from x = 69): columns 66..78, about 80 % inside the breast.
    lesion = lesion_at(100, 72, 6)
    case = preprocess_arrays(img, [lesion], PreprocessParams(size=64, crop_margin=0.0))
    assert case.crop_extended and case.transform.crop_box[2] == 66
    assert case.mask.sum() > 0


# ---------------------------------------------------------------------------------------------
# preprocess_arrays: outputs and no mutation
# ---------------------------------------------------------------------------------------------
def test_preprocess_arrays_outputs_and_inputs_untouched() -> None:
    img = phantom("R")
    lesions = [lesion_at(100, 95, 12), lesion_at(70, 105, 6)]
    img_copy, les_copy = img.copy(), [m.copy() for m in lesions]
    case = preprocess_arrays(img, lesions, PreprocessParams(size=64), laterality="R")
    assert np.array_equal(img, img_copy)
    assert all(np.array_equal(a, b) for a, b in zip(lesions, les_copy, strict=True))
    assert not np.shares_memory(case.image, img)
    assert case.image.dtype == np.uint16 and case.image.shape == (64, 64)
    assert case.mask.dtype == np.uint8 and set(np.unique(case.mask).tolist()) <= {0, 1}
    assert case.lesion_masks.shape == (2, 64, 64) and case.lesion_masks.dtype == np.uint8
    assert np.array_equal(case.mask, case.lesion_masks.max(axis=0))
    assert case.lesion_in_breast == (1.0, 1.0) and case.mask_in_breast_fraction == 1.0
    # Areas scale by (64 / padded side)^2: breast pi*60*50/2, lesions pi*(12^2 + 6^2).
    side = case.transform.padded_side
    assert 125 <= side <= 131  # crop rows 36..165 (ellipse 40..160 + 4 px margin), ±1 px
    assert case.breast_fraction == pytest.approx(math.pi * 60 * 50 / 2 / side**2, rel=0.05)
    assert case.lesion_fraction == pytest.approx(math.pi * (144 + 36) / side**2, rel=0.1)
    # 16-bit precision kept: far more than 256 grey levels inside the breast.
    assert np.unique(case.image[case.breast_mask == 1]).size > 256


def test_no_lesion_gives_empty_masks() -> None:
    case = preprocess_arrays(phantom("L", label=False), [], PreprocessParams(size=32))
    assert case.lesion_masks.shape == (0, 32, 32)
    assert case.mask.shape == (32, 32) and case.mask.sum() == 0
    assert case.mask_in_breast_fraction is None and case.lesion_fraction == 0.0


def test_a_lesion_smaller_than_an_output_pixel_is_counted_as_lost() -> None:
    dot = np.zeros((H, W), bool)
    dot[100, 100] = True  # 1 px; at 16 / 129 px per px it covers 0.015 output pixels
    case = preprocess_arrays(phantom("R"), [dot, lesion_at(100, 95, 12)], PreprocessParams(size=16))
    assert case.lost_lesions == 1
    assert case.lesion_masks[0].sum() == 0 and case.lesion_masks[1].sum() > 0


def test_params_from_settings() -> None:
    from mammoseg.settings import Settings

    p = PreprocessParams.from_settings(Settings(image_size=256, canonical_side="R"))
    assert (p.size, p.canonical_side, p.clahe_clip_limit) == (256, "R", 2.0)


def test_params_digest_is_stable_and_sensitive() -> None:
    a = PreprocessParams()
    assert a.digest() == PreprocessParams(clahe_clip_limit=2).digest()  # 2 == 2.0
    assert len(a.digest()) == 12
    assert a.digest() != PreprocessParams(size=256).digest()
    with pytest.raises(ValueError, match="canonical_side"):
        PreprocessParams(canonical_side="X")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# case level
# ---------------------------------------------------------------------------------------------
def _png(arr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    return buf.tobytes()


@pytest.fixture()
def source(tmp_path) -> LocalStore:
    store = LocalStore(tmp_path / "src")
    store.write_bytes("img/case1.png", _png(phantom("R")))
    store.write_bytes("img/case1_mask.png", _png(lesion_at(100, 95, 12).astype(np.uint8) * 255))
    return store


def test_preprocess_case_writes_npz_and_second_run_is_cached(source, tmp_path) -> None:
    out = LocalStore(tmp_path / "out")
    params = PreprocessParams(size=64)
    geom = json.dumps({"type": "circle", "cx": 105, "cy": 70, "r": 6})
    refs = [MaskRef(key="img/case1_mask.png"), MaskRef(geometry=geom)]
    first = preprocess_case(source, "img/case1.png", refs, out, params, laterality="R")
    assert not first.cached
    assert first.npz_key.startswith(f"preprocessed/{params.digest()}/")
    assert first.npz_key.endswith(".npz") and len(first.npz_key.rsplit("/", 1)[1]) == 24 + 4
    assert first.pairing.image_found and first.pairing.mask_found
    assert (first.pairing.image_height, first.pairing.image_width) == (H, W)
    assert (first.pairing.mask_height, first.pairing.mask_width) == (H, W)
    assert first.pairing.mask_binary is True and first.pairing.mask_in_breast_fraction == 1.0
    assert first.pairing.mask_pixels == int((lesion_at(100, 95, 12) | lesion_at(70, 105, 6)).sum())
    rows = first.pairing_records()  # one per lesion, for the GX pairing suite
    assert [r["lesion_id"] for r in rows] == [1, 2]
    assert [r["mask_pixels"] for r in rows] == [
        int(lesion_at(100, 95, 12).sum()),
        int(lesion_at(70, 105, 6).sum()),
    ]
    assert all(r["mask_in_breast_fraction"] == 1.0 and r["mask_binary"] for r in rows)

    arrays = read_preprocessed(out, first.npz_key)
    assert arrays.image.dtype == np.uint16 and arrays.lesion_masks.shape == (2, 64, 64)
    assert arrays.transform == first.transform
    # Lossless: the stored arrays equal a fresh array-level run.
    masks = [lesion_at(100, 95, 12), lesion_at(70, 105, 6)]
    direct = preprocess_arrays(phantom("R"), masks, params, laterality="R")
    assert np.array_equal(arrays.image, direct.image)
    assert np.array_equal(arrays.mask, direct.mask)

    fresh_source = LocalStore(source.root)  # empty read_log
    second = preprocess_case(fresh_source, "img/case1.png", refs, out, params, laterality="R")
    assert second.cached and second.npz_key == first.npz_key
    assert second.npz_etag == first.npz_etag and second.pairing == first.pairing
    assert second.pairing_records() == rows
    assert fresh_source.read_log == {}  # no image or mask byte was read

    other = preprocess_case(source, "img/case1.png", refs[:1], out, params)
    assert not other.cached and other.npz_key != first.npz_key


def test_preprocess_case_on_s3_output_is_cached_too(source, s3_bucket) -> None:
    out = open_store(f"s3://{s3_bucket}/run")
    params = PreprocessParams(size=32)
    refs = [MaskRef(key="img/case1_mask.png")]
    first = preprocess_case(source, "img/case1.png", refs, out, params)
    assert not first.cached and out.exists(first.npz_key)
    assert load_preprocessed(out.read_bytes(first.npz_key)).mask.sum() > 0
    assert preprocess_case(source, "img/case1.png", refs, out, params).cached


def test_preprocess_case_errors_carry_reason_and_pairing(source, tmp_path) -> None:
    out = LocalStore(tmp_path / "out")
    params = PreprocessParams(size=32)
    with pytest.raises(ImageDecodeError, match="not found") as e1:
        preprocess_case(source, "img/nope.png", [], out, params)
    assert e1.value.pairing is not None and e1.value.pairing.image_found is False

    with pytest.raises(MaskNotFoundError, match="lesion mask 1") as e2:
        preprocess_case(source, "img/case1.png", [MaskRef(key="img/missing.png")], out, params)
    assert e2.value.pairing.mask_found is False and e2.value.code == "mask_missing"

    source.write_bytes("img/garbage.png", b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ImageDecodeError, match="cannot be decoded"):
        preprocess_case(source, "img/garbage.png", [], out, params)

    source.write_bytes("img/small_mask.png", _png(np.zeros((H - 10, W), np.uint8)))
    with pytest.raises(MaskShapeError, match="190x120 but the image is 200x120") as e3:
        preprocess_case(source, "img/case1.png", [MaskRef(key="img/small_mask.png")], out, params)
    assert (e3.value.pairing.mask_height, e3.value.pairing.image_height) == (190, 200)

    with pytest.raises(MaskDecodeError, match="geometry"):
        preprocess_case(
            source, "img/case1.png", [MaskRef(geometry='{"type": "blob"}')], out, params
        )

    grey = (np.arange(H * W).reshape(H, W) % 256).astype(np.uint8)  # not a mask at all
    source.write_bytes("img/grey_mask.png", _png(grey))
    with pytest.raises(AlignmentError) as e4:
        preprocess_case(source, "img/case1.png", [MaskRef(key="img/grey_mask.png")], out, params)
    assert e4.value.pairing.mask_binary is False
    assert e4.value.pairing.mask_in_breast_fraction is not None
    assert list(out.list()) == []  # nothing written for failed cases

    with pytest.raises(ValueError, match="exactly one"):
        MaskRef()


def test_no_header_data_reaches_the_outputs(tmp_path) -> None:
    from mammoseg.dicom import write_dicom

    src, out = LocalStore(tmp_path / "src"), LocalStore(tmp_path / "out")
    dcm = write_dicom(
        phantom("R", label=False),
        patient_id="PID-SECRET-4711",
        patient_name="DOE^JANE",
        birth_date="19600101",
        study_date="20200202",
        laterality="R",
    )
    src.write_bytes("a/b.dcm", dcm)
    res = preprocess_case(src, "a/b.dcm", [], out, PreprocessParams(size=32))
    blobs = [out.read_bytes(res.npz_key), out.read_bytes(res.meta_key)]
    with np.load(io.BytesIO(blobs[0]), allow_pickle=False) as z:
        blobs.append(str(z["transform"]).encode())
    for blob in blobs:
        for secret in (b"PID-SECRET", b"DOE", b"JANE", b"19600101", b"20200202", b"a/b.dcm"):
            assert secret not in blob
    assert res.to_record()["image_found"] is True
    assert [r["lesion_id"] for r in res.pairing_records()] == [0]  # no lesion: one row, id 0


def test_no_tensorflow_or_prefect_on_the_preprocess_path() -> None:
    import subprocess
    import sys

    code = (
        "import sys, mammoseg.preprocess, mammoseg.contact_sheet;"
        "bad=[m for m in sys.modules if m.split('.')[0] in ('tensorflow','keras','prefect')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---------------------------------------------------------------------------------------------
# contact sheet
# ---------------------------------------------------------------------------------------------
def test_contact_sheet_grid_and_contour() -> None:
    img = np.full((64, 64), 30000, np.uint16)
    mask = np.zeros((64, 64), np.uint8)
    mask[40:60, 20:40] = 1
    cases = [(img, mask, f"cs-{i:012x}") for i in range(3)]
    png = contact_sheet(cases, tile=32, cols=2)
    sheet = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert sheet.shape == (64, 64, 3)  # 2 rows x 2 columns of 32 px
    yellow = (sheet[:, :, 0] < 50) & (sheet[:, :, 1] > 200) & (sheet[:, :, 2] > 200)
    # The 20-px square at half size: a 10-px square outline, rows 20..29, columns 10..19
    # (below the label strip at the top of the tile).
    assert yellow[20, 10:20].all() and yellow[20:30, 10].all() and yellow[29, 10:20].all()
    assert not yellow[21:29, 11:19].any()  # an outline, not filled
    # Tiles 0, 1 and 2 alike: 4 * 10 - 4 outline pixels each.
    assert yellow[:32, :32].sum() == yellow[:32, 32:].sum() == yellow[32:, :32].sum() == 36
    assert sheet[32:, 32:].max() == 0  # unused fourth cell
    with pytest.raises(ValueError, match="pseudonymous"):
        contact_sheet([(img, mask, "Mass-Test_P_00016_LEFT_CC")])
    with pytest.raises(ValueError, match="at least one"):
        contact_sheet([])


def test_hand_geometry_helpers() -> None:
    # Sanity of the phantom used above: the breast bbox is what the tests claim.
    m = ellipse_mask(H, W, CY, W - 1, RY, RX)
    ys, xs = np.nonzero(m)
    assert (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1) == (40, 161, 69, 120)
    assert math.isclose(m.sum(), math.pi * RY * RX / 2, rel_tol=0.03)


# ---------------------------------------------------------------------------------------------
# end to end on the synthetic CBIS-DDSM generator (DICOM, MONOCHROME1, windows, labels, defects)
# ---------------------------------------------------------------------------------------------
def test_synthetic_cbis_cases_end_to_end(tmp_path) -> None:
    from mammoseg.synth import CbisSynthParams, generate_cbis

    src, out = LocalStore(tmp_path / "src"), LocalStore(tmp_path / "out")
    summary = generate_cbis(src, CbisSynthParams(n_patients=3, n_bad=4, seed=3))
    params = PreprocessParams(size=128)
    expected_error = {
        "truncated_dicom": ImageDecodeError,
        "no_pixel_data": ImageDecodeError,
        "missing_mask": MaskNotFoundError,
        "mask_size_mismatch": MaskShapeError,
    }
    seen_ok = 0
    for im in summary.images:
        assert im.key is not None
        # The mask object's key as the CSV names it (written or not): next to the crop.
        refs = [MaskRef(key=les.crop_key.replace("000000.dcm", "000001.dcm")) for les in im.lesions]
        if im.defect in expected_error:
            with pytest.raises(expected_error[im.defect]):
                preprocess_case(src, im.key, refs, out, params, laterality=im.laterality)
            continue
        res = preprocess_case(src, im.key, refs, out, params, laterality=im.laterality)
        seen_ok += 1
        assert res.chest_wall_side == im.chest_wall[0].upper(), im.source_image_id
        assert res.side_source == "pixels"
        assert res.pairing.mask_binary is True
        assert res.pairing.mask_pixels == sum(les.mask_area for les in im.lesions)
        assert res.pairing.mask_in_breast_fraction is not None
        assert res.pairing.mask_in_breast_fraction >= 0.9
        arrays = read_preprocessed(out, res.npz_key)
        assert arrays.mask.sum() > 0 and arrays.lesion_masks.shape[0] == len(im.lesions)
        # Film labels (often inside the crop box's corner) are not visible to the model.
        shape = (res.pairing.image_height, res.pairing.image_width)
        for kind, (b0, b1, b2, b3) in im.artefacts:
            if kind == "label":
                box = np.zeros(shape, bool)
                box[b0:b1, b2:b3] = True
                assert arrays.image[res.transform.forward_mask(box) == 1].max(initial=0) == 0
    assert seen_ok >= 5


def test_lossy_jpeg_masks_count_as_binary_but_a_grey_image_does_not() -> None:
    """CDD-CESM's masks are JPEGs: edge ringing must not make them 'non-binary'."""
    import cv2

    from mammoseg.preprocess.case import _is_binary

    mask = np.zeros((256, 256), np.uint8)
    cv2.circle(mask, (100, 120), 6, 255, -1)  # a small lesion: ringing is a large share of it
    _, jpeg = cv2.imencode(".jpg", mask, [cv2.IMWRITE_JPEG_QUALITY, 60])
    decoded = cv2.imdecode(jpeg, cv2.IMREAD_GRAYSCALE)
    assert _is_binary(decoded)
    grey = np.tile(np.linspace(0, 255, 256, dtype=np.uint8), (256, 1))
    assert not _is_binary(grey)
