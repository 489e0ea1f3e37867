"""The fast preprocessing path (issue 9, item 1) against the step-by-step full-resolution path.

A synthetic 16-bit "mammogram" of 2400 x 1500 (noise, texture, a film label, one lesion) with a
256 px output is large enough for the working copy (reduction k = 4). Tolerances, inside the
breast (both paths' masks), in fractions of the 16-bit range:

* model-ready image: Pearson correlation >= 0.97 and mean absolute difference <= 0.06 (CLAHE
  runs after, not before, the averaging; measured here: 0.988 and 0.027);
* grey levels inside the breast: at least 90 % of the full-resolution path's;
* breast mask IoU >= 0.98, lesion mask IoU >= 0.9, same chest-wall side, label hidden by both,
  crop box within 2 k px per side; the lesion mask is *identical* to
  ``Transform.forward_mask`` of the original mask (same nearest-neighbour indices).
"""

from __future__ import annotations

import io
import zipfile

import cv2
import numpy as np
import pydicom
import pytest

from mammoseg import dicom, imageio
from mammoseg.preprocess import (
    MaskDecodeError,
    PreprocessParams,
    border_crop,
    iou,
    load_preprocessed,
    npz_bytes,
    preprocess_arrays,
)
from mammoseg.preprocess.case import decode_mask
from mammoseg.preprocess.fast import (
    _align_absolute,
    align_box,
    clahe_fine,
    nearest_indices,
    plan_working_copy,
)
from mammoseg.training.dataset import decode_npz

PARAMS = PreprocessParams(size=256)


def phantom(h: int = 2400, w: int = 1500, seed: int = 0):
    """(uint16 image, bool lesion mask, label box): breast against the left edge."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w), 1500.0)
    yy, xx = np.mgrid[0:h, 0:w]
    breast = ((yy - h * 0.5) / (h * 0.42)) ** 2 + (xx / (w * 0.75)) ** 2 <= 1.0
    field = cv2.GaussianBlur(rng.normal(0, 1, (h // 8, w // 8)), (0, 0), 3)
    field = cv2.resize(field / field.std(), (w, h), interpolation=cv2.INTER_LINEAR)
    img[breast] = 22000 + 6000 * field[breast] - 8000 * (xx[breast] / w)
    lesion = ((yy - h * 0.45) / 60) ** 2 + ((xx - w * 0.3) / 45) ** 2 <= 1.0
    img[lesion] += 7000
    img += rng.normal(0, 600, (h, w))
    label = (int(h * 0.05), int(h * 0.05) + 120, w - 300, w - 60)
    img[label[0] : label[1], label[2] : label[3]] = 60000
    return np.clip(img, 0, 65535).astype(np.uint16), lesion, label


@pytest.fixture(scope="module")
def both_paths():
    img, lesion, label = phantom()
    before = img.copy()
    fast = preprocess_arrays(img, [lesion], PARAMS)
    full = preprocess_arrays(img, [lesion], PARAMS, reduced=False)
    assert np.array_equal(img, before)  # the input is never modified
    return img, lesion, label, fast, full


def test_the_fast_path_runs_on_a_large_image(both_paths) -> None:
    img, _, _, fast, _ = both_paths
    found = border_crop(img, PARAMS)
    assert found.base is not None and found.base_k == 4  # 2400 // (2 x 256)
    plan = plan_working_copy(found.box, img.shape, PARAMS, found, [(0, 1, 0, 1)])
    assert plan is not None and plan.from_base and plan.k == 4
    assert all(v % 4 == 0 for v in fast.transform.crop_box)  # edges on the base grid


def test_fast_model_input_matches_the_full_resolution_path(both_paths) -> None:
    _, _, _, fast, full = both_paths
    inside = (fast.breast_mask == 1) & (full.breast_mask == 1)
    a, b = fast.image[inside].astype(np.float64), full.image[inside].astype(np.float64)
    assert np.corrcoef(a, b)[0, 1] >= 0.97
    assert np.abs(a - b).mean() / 65535 <= 0.06
    levels_fast = np.unique(fast.image[fast.breast_mask == 1]).size
    levels_full = np.unique(full.image[full.breast_mask == 1]).size
    assert levels_fast >= 0.9 * levels_full
    assert levels_fast > 256 * 10  # far beyond an 8-bit pipeline
    assert fast.image.dtype == np.uint16 and fast.image.shape == (256, 256)


def test_fast_geometry_and_masks_match(both_paths) -> None:
    img, lesion, label, fast, full = both_paths
    assert fast.chest_wall_side == full.chest_wall_side == "L"
    assert fast.transform.flipped == full.transform.flipped
    assert max(abs(p - q) for p, q in zip(fast.transform.crop_box, full.transform.crop_box)) <= 8
    assert iou(fast.breast_mask, full.breast_mask) >= 0.98
    assert iou(fast.lesion_masks[0], full.lesion_masks[0]) >= 0.9
    # the lesion goes through exactly the transform's own nearest-neighbour resize
    assert np.array_equal(fast.lesion_masks[0], fast.transform.forward_mask(lesion))
    assert np.array_equal(fast.mask, fast.lesion_masks[0])
    for case in (fast, full):  # the film label never reaches the model
        box = np.zeros(img.shape, dtype=bool)
        box[label[0] : label[1], label[2] : label[3]] = True
        assert not case.image[case.transform.forward_mask(box) == 1].any()
    assert fast.lesion_in_breast == full.lesion_in_breast == (1.0,)


def test_fast_path_refuses_a_lesion_off_the_breast() -> None:
    img, lesion, _ = phantom()
    off = np.zeros_like(lesion)
    off[50:90, 1300:1340] = True  # background, top right
    with pytest.raises(Exception, match=r"lesion 1 in the original image: only 0% of its pixels"):
        preprocess_arrays(img, [off], PARAMS)


def test_nearest_indices_are_opencvs() -> None:
    idx = nearest_indices(10, 4)
    ramp = np.arange(10, dtype=np.float32)[None, :]
    want = cv2.resize(ramp, (4, 1), interpolation=cv2.INTER_NEAREST_EXACT).ravel()
    assert idx.tolist() == want.astype(int).tolist() == [1, 3, 6, 8]


def test_box_alignment_by_hand() -> None:
    # grow outwards inside the image: height 2395 -> 2396 (+1 at the bottom), width ok
    assert align_box((5, 2400, 3, 1499), (2402, 1500), 4) == (5, 2401, 3, 1499)
    # no room below: grow upwards (2397 -> 2400 rows); 1496 columns are a multiple already
    assert align_box((5, 2402, 4, 1500), (2402, 1500), 4) == (2, 2402, 4, 1500)
    # the whole 2402 rows can't be a multiple of 4: trim 2 rows at the bottom, or at the top
    # when a lesion is there
    assert align_box((0, 2402, 0, 1500), (2402, 1500), 4) == (0, 2400, 0, 1500)
    assert align_box((0, 2402, 0, 1500), (2402, 1500), 4, [(2390, 2402, 5, 9)]) == (
        2,
        2402,
        0,
        1500,
    )
    assert align_box((0, 2402, 0, 1500), (2402, 1500), 4, [(0, 2402, 5, 9)]) is None
    # on the base grid: edges floor/ceil to multiples of 4; the last 2 rows are not covered
    assert _align_absolute((5, 2401, 3, 1499), (2402, 1500), 4, []) == (4, 2400, 0, 1500)
    assert _align_absolute((5, 2401, 3, 1499), (2402, 1500), 4, [(2390, 2401, 5, 9)]) is None


def test_clahe_fine_without_clipping_is_histogram_equalisation() -> None:
    # one tile, 2 bins: values 0,0,0 in bin 0; 40000 in bin 1 at 0.2207 of its width
    img = np.array([[0.0, 0.0], [0.0, 40000.0]], dtype=np.float32)
    out = clahe_fine(img, clip_limit=100.0, tile_grid=1, bins=2)
    frac = 40000 * 2 / 65536 - 1
    assert out[0, 0] == pytest.approx(0.0)
    assert out[1, 1] == pytest.approx((3 + frac * 1) * 65535 / 4, rel=1e-5)


def test_clahe_fine_clips_at_the_mean_density() -> None:
    # clip 0.5 x 4 px / 2 bins = 1 per bin: [3, 1] -> [1, 1] + excess 2 spread -> [2, 2]
    img = np.array([[0.0, 0.0], [0.0, 40000.0]], dtype=np.float32)
    out = clahe_fine(img, clip_limit=0.5, tile_grid=1, bins=2)
    frac = 40000 * 2 / 65536 - 1
    assert out[0, 0] == pytest.approx(0.0)
    assert out[1, 1] == pytest.approx((2 + frac * 2) * 65535 / 4, rel=1e-5)


def _per_pixel(data: bytes, voi: bool) -> np.ndarray:
    """The decode before issue 9: pydicom's pixel array, then the float64 per-pixel maps."""
    ds = pydicom.dcmread(io.BytesIO(data))
    values, lo, hi = dicom._to_display_values(ds.pixel_array, ds, voi)
    mono1 = str(ds.PhotometricInterpretation).upper() == "MONOCHROME1"
    return dicom._display_pixels(np.asarray(values), lo, hi, mono1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"photometric": "MONOCHROME1"},
        {"window": (26439.2, 30000.0)},
        {"rescale": (2.0, -100.0), "window": (20000.0, 9000.0)},
        {"bits_stored": 12},
        {"bits_stored": 8},
        {"bits_stored": 8, "photometric": "MONOCHROME1"},
    ],
)
def test_dicom_decode_by_table_is_bit_identical(kwargs: dict) -> None:
    rng = np.random.default_rng(1)
    top = 2 ** kwargs.get("bits_stored", 16) - 1
    pixels = rng.integers(0, top + 1, (64, 48)).astype(np.uint16)
    data = dicom.write_dicom(pixels, **kwargs)
    for voi in (True, False):
        assert np.array_equal(dicom.decode_dicom(data, apply_voi=voi).pixels, _per_pixel(data, voi))


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_sparse_mask_decode_equals_the_dense_rule(photometric: str) -> None:
    raw = np.zeros((300, 200), dtype=np.uint16)
    raw[100:140, 50:90] = 255
    raw[120, 60] = 100  # one mid-grey pixel (25 700 in 16 bits: below the threshold)
    stored = 255 - raw if photometric == "MONOCHROME1" else raw
    data = dicom.write_dicom(stored, photometric=photometric, bits_stored=8)
    mask, binary = decode_mask(data, "m.dcm", 1)
    dense = dicom.decode_dicom(data, apply_voi=False).pixels
    assert np.array_equal(mask, dense > 32767)  # three values: thresholded
    assert mask.sum() == 40 * 40 - 1
    assert binary  # one mid-grey pixel of 60 000
    assert np.array_equal(imageio.load_mask(data, "m.dcm"), mask)


def test_truncated_mask_is_a_one_line_decode_error() -> None:
    data = dicom.write_dicom(np.zeros((64, 64), dtype=np.uint16), bits_stored=8)
    with pytest.raises(
        MaskDecodeError, match=r"^lesion mask 2 cannot be decoded: truncated DICOM"
    ) as exc:
        decode_mask(data[:-500], "m.dcm", 2)
    assert "\n" not in str(exc.value)


def test_npz_stores_the_image_uncompressed_and_reads_back(both_paths) -> None:
    _, _, _, fast, _ = both_paths
    blob = npz_bytes(fast)
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        methods = {i.filename: i.compress_type for i in zf.infolist()}
    assert methods["image.npy"] == zipfile.ZIP_STORED
    assert methods["lesion_masks.npy"] == zipfile.ZIP_DEFLATED
    back = load_preprocessed(blob)
    assert np.array_equal(back.image, fast.image) and np.array_equal(back.mask, fast.mask)
    assert np.array_equal(back.lesion_masks, fast.lesion_masks)
    assert back.transform == fast.transform
    sample = decode_npz(blob)  # what the training input pipeline reads
    assert np.array_equal(sample.image, fast.image)


def test_lesion_in_the_edge_the_base_does_not_cover() -> None:
    # 1502 columns: the base (k = 4) covers 1500; a lesion reaching column 1501 at the chest
    # wall forces the crop-aligned working copy (one reduction of the crop) instead
    img, lesion, _ = phantom(2402, 1502)
    img, lesion = np.ascontiguousarray(img[:, ::-1]), np.ascontiguousarray(lesion[:, ::-1])
    edge = np.zeros_like(lesion)
    edge[1180:1220, 1480:1502] = True
    found = border_crop(img, PARAMS)
    plan = plan_working_copy(found.box, img.shape, PARAMS, found, [(1180, 1220, 1480, 1502)])
    assert plan is not None and not plan.from_base and plan.box[3] == 1502
    case = preprocess_arrays(img, [lesion, edge], PARAMS, laterality="R", crop=found)
    assert case.chest_wall_side == "R" and case.transform.flipped
    assert case.transform.crop_box[3] == 1502
    for out, m in zip(case.lesion_masks, (lesion, edge), strict=True):
        assert np.array_equal(out, case.transform.forward_mask(m))
