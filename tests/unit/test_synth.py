"""mammoseg.synth: determinism, CBIS-DDSM layout and quirks, defects, mini-MIAS format."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np
import pytest

from mammoseg.dicom import DicomError, decode_dicom, phi_values, read_meta, read_series_description
from mammoseg.imageio import load_image, load_mask
from mammoseg.storage import LocalStore, ObjectStore, UnsafeKeyError, join_key, validate_key
from mammoseg.synth import (
    DEFECT_KINDS,
    CbisSynthParams,
    MiasSynthParams,
    SynthImage,
    SynthSummary,
    generate_cbis,
    generate_mias,
)

# The real CBIS-DDSM headers (copied by hand from the four TCIA CSVs).
REAL_MASS_HEADER = [
    "patient_id", "breast_density", "left or right breast", "image view", "abnormality id",
    "abnormality type", "mass shape", "mass margins", "assessment", "pathology", "subtlety",
    "image file path", "cropped image file path", "ROI mask file path",
]  # fmt: skip
REAL_CALC_HEADER = [
    "patient_id", "breast density", "left or right breast", "image view", "abnormality id",
    "abnormality type", "calc type", "calc distribution", "assessment", "pathology", "subtlety",
    "image file path", "cropped image file path", "ROI mask file path",
]  # fmt: skip

PREFIX = "CBIS-DDSM"
N_BAD = len(DEFECT_KINDS)
MIAS_LINE = re.compile(
    r"^(mdb\d{3}) ([FGD]) (CIRC|SPIC|MISC|ARCH|ASYM|CALC|NORM)"
    r"(?: ([BM])(?: (\d+) (\d+) (\d+)| \*NOTE 3\*)?)? ?$"
)


@pytest.fixture(scope="module")
def cbis(tmp_path_factory: pytest.TempPathFactory) -> tuple[ObjectStore, SynthSummary]:
    store = LocalStore(tmp_path_factory.mktemp("cbis"))
    return store, generate_cbis(store, CbisSynthParams(n_bad=N_BAD))


@pytest.fixture(scope="module")
def mias(tmp_path_factory: pytest.TempPathFactory) -> tuple[ObjectStore, SynthSummary]:
    store = LocalStore(tmp_path_factory.mktemp("mias"))
    return store, generate_mias(store, MiasSynthParams())


def _csv(store: ObjectStore, name: str) -> list[dict[str, str]]:
    text = store.read_bytes(join_key(PREFIX, "csv", name)).decode("utf-8")
    return list(csv.DictReader(io.StringIO(text, newline="")))


def _all_rows(store: ObjectStore) -> dict[str, list[dict[str, str]]]:
    return {
        f"{kind}_{split}": _csv(store, f"{kind}_case_description_{split}_set.csv")
        for kind in ("mass", "calc")
        for split in ("train", "test")
    }


def _good(summary: SynthSummary) -> list[SynthImage]:
    return [im for im in summary.images if im.defect is None]


def _background(px: np.ndarray, im: SynthImage) -> float:
    """Median of the outer 10 % of columns (away from the chest wall), artefacts excluded."""
    w = px.shape[1]
    keep = np.zeros(px.shape, bool)
    n = max(1, w // 10)
    if im.chest_wall == "left":
        keep[:, w - n :] = True
    else:
        keep[:, :n] = True
    for _, (y0, y1, x0, x1) in im.artefacts:
        keep[y0:y1, x0:x1] = False
    return float(np.median(px[keep]))


# ------------------------------------------------------------------------------------------------
# determinism
# ------------------------------------------------------------------------------------------------


def _objects(store: ObjectStore) -> dict[str, bytes]:
    return {info.key: store.read_bytes(info.key) for info in store.list("")}


def test_same_seed_gives_byte_identical_objects(
    cbis: tuple[ObjectStore, SynthSummary], tmp_path: Path
) -> None:
    store, summary = cbis
    again = LocalStore(tmp_path)
    summary2 = generate_cbis(again, CbisSynthParams(n_bad=N_BAD))
    assert summary2 == summary
    assert _objects(again) == _objects(store)


def test_different_seed_gives_different_objects(tmp_path: Path) -> None:
    a, b = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    sa = generate_cbis(a, CbisSynthParams(n_patients=2, seed=0))
    sb = generate_cbis(b, CbisSynthParams(n_patients=2, seed=1))
    pixels_a = decode_dicom(a.read_bytes(sa.images[0].key)).pixels
    pixels_b = decode_dicom(b.read_bytes(sb.images[0].key)).pixels
    assert pixels_a.shape == pixels_b.shape and not np.array_equal(pixels_a, pixels_b)
    dicoms_a = set(sa.keys) - set(sa.csv_keys)
    assert dicoms_a.isdisjoint(sb.keys)  # UIDs in the keys depend on the seed
    assert a.read_bytes(sa.csv_keys[0]) != b.read_bytes(sb.csv_keys[0])


def test_defect_cases_do_not_change_the_good_ones(
    cbis: tuple[ObjectStore, SynthSummary], tmp_path: Path
) -> None:
    store, summary = cbis
    clean = LocalStore(tmp_path)
    plain = generate_cbis(clean, CbisSynthParams(n_bad=0))
    assert [im for im in summary.images if im.defect is None] == list(plain.images)
    for im in plain.images:
        assert clean.read_bytes(im.key) == store.read_bytes(im.key)


# ------------------------------------------------------------------------------------------------
# CBIS-DDSM layout and quirks
# ------------------------------------------------------------------------------------------------


def test_csv_headers_are_the_real_ones(cbis: tuple[ObjectStore, SynthSummary]) -> None:
    store, summary = cbis
    assert len(summary.csv_keys) == 4
    for key in summary.csv_keys:
        header = next(csv.reader(io.StringIO(store.read_bytes(key).decode(), newline="")))
        assert header == (REAL_MASS_HEADER if "/mass_" in key else REAL_CALC_HEADER)


def test_csv_quirks_are_present(cbis: tuple[ObjectStore, SynthSummary]) -> None:
    store, _ = cbis
    raw = store.read_bytes(join_key(PREFIX, "csv", "mass_case_description_train_set.csv"))
    assert raw.count(b"\r\n") == raw.count(b"\n") - raw.count(b'.dcm\n"')  # CRLF records
    assert b'000001.dcm\n"\r\n' in raw  # quoted path cell ending in a newline
    tables = _all_rows(store)
    mass = tables["mass_train"] + tables["mass_test"]
    calc = tables["calc_train"] + tables["calc_test"]
    assert mass and calc
    assert all(r["ROI mask file path"].endswith("000001.dcm\n") for r in mass)
    assert all(r["cropped image file path"].endswith("000000.dcm") for r in mass)
    assert all(r["cropped image file path"].endswith("000001.dcm\n") for r in calc)
    assert all(r["ROI mask file path"].endswith("000000.dcm") for r in calc)
    assert any("-" in r["mass shape"] for r in mass)  # multi-valued shape
    assert any(r["mass margins"] == "N/A" for r in mass)
    assert any(r["calc distribution"] == "N/A" for r in calc)
    pathologies = {r["pathology"] for r in mass + calc}
    assert "BENIGN_WITHOUT_CALLBACK" in pathologies
    assert pathologies <= {"MALIGNANT", "BENIGN", "BENIGN_WITHOUT_CALLBACK"}
    assert any(r["abnormality id"] == "2" for r in mass + calc)  # several lesions per image
    assert {r["breast_density"] for r in mass} <= {"1", "2", "3", "4"}
    assert {r["breast density"] for r in calc} <= {"1", "2", "3", "4"}


def test_calc_csv_columns_point_at_the_swapped_files(
    cbis: tuple[ObjectStore, SynthSummary],
) -> None:
    store, summary = cbis
    tables = _all_rows(store)
    for kind, rows in (("mass", tables["mass_train"]), ("calc", tables["calc_train"])):
        for row in rows:
            if row["patient_id"] in summary.bad_cases:
                continue
            crop_col = join_key(PREFIX, row["cropped image file path"].strip())
            mask_col = join_key(PREFIX, row["ROI mask file path"].strip())
            crop_desc = read_series_description(store.read_bytes(crop_col))
            mask_desc = read_series_description(store.read_bytes(mask_col))
            if kind == "mass":
                assert (crop_desc, mask_desc) == ("cropped images", "ROI mask images")
            else:  # the column names lie; the SeriesDescription does not
                assert (crop_desc, mask_desc) == ("ROI mask images", "cropped images")


def test_train_and_test_are_split_by_patient(cbis: tuple[ObjectStore, SynthSummary]) -> None:
    tables = _all_rows(cbis[0])
    train = {r["patient_id"] for k, rows in tables.items() if k.endswith("train") for r in rows}
    test = {r["patient_id"] for k, rows in tables.items() if k.endswith("test") for r in rows}
    assert train and test and not train & test
    for key, rows in tables.items():
        word = "Training" if key.endswith("train") else "Test"
        kind = "Mass" if key.startswith("mass") else "Calc"
        for r in rows:
            if r["image file path"].startswith(".."):
                continue  # the path_escape defect
            assert r["image file path"].startswith(f"{kind}-{word}_{r['patient_id']}_")


def test_full_images_headers_and_phi(cbis: tuple[ObjectStore, SynthSummary]) -> None:
    store, summary = cbis
    for im in _good(summary):
        data = store.read_bytes(im.key)
        meta = read_meta(data)
        assert meta.series_description == "full mammogram images"
        assert (meta.rows, meta.columns, meta.bits_stored) == (256, 160, 16)
        assert meta.image_laterality == im.laterality and meta.view_position == im.view
        phi = phi_values(data)
        number = im.source_patient_id.split("_")[1]
        assert im.source_image_id in phi  # PatientID is the folder name, as in the real data
        assert f"SYNTH^PATIENT^{number}" in phi
        assert any(re.fullmatch(r"19[2-6]\d{5}", v) for v in phi)  # fake birth date
        assert any(re.fullmatch(r"199\d{5}", v) for v in phi)  # fake study date
        assert im.key.startswith(f"{PREFIX}/{im.source_image_id}/")
        assert im.key.endswith("/000000.dcm")


def test_monochrome1_share_and_display_orientation(cbis: tuple[ObjectStore, SynthSummary]) -> None:
    store, summary = cbis
    good = _good(summary)
    photometric = [read_meta(store.read_bytes(im.key)).photometric for im in good]
    assert photometric.count("MONOCHROME1") == round(0.25 * len(good))
    assert [im.photometric for im in good] == photometric
    assert any(im.windowed for im in good) and any(im.rescaled for im in good)
    for im in good:
        px = decode_dicom(store.read_bytes(im.key)).pixels
        # decoded images are display orientation whatever the storage: dark background
        assert _background(px, im) < 0.2 * 65535


def test_masks_are_non_empty_full_size_and_inside_the_breast(
    cbis: tuple[ObjectStore, SynthSummary],
) -> None:
    store, summary = cbis
    n_lesions = 0
    for im in _good(summary):
        px = load_image(store.read_bytes(im.key), im.key)
        union = np.zeros(px.shape, bool)
        background = _background(px.astype(float), im)
        for lesion in im.lesions:
            n_lesions += 1
            data = store.read_bytes(lesion.mask_key)
            assert read_series_description(data) == "ROI mask images"
            assert read_meta(data).bits_stored == 8
            mask = load_mask(data, lesion.mask_key)
            assert mask.shape == px.shape
            assert mask.sum() == lesion.mask_area > 0
            ys, xs = np.nonzero(mask)
            assert (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1) == lesion.bbox
            # every lesion pixel is breast tissue, clearly brighter than the film background
            assert px[mask].min() > background + 0.05 * 65535
            assert not (union & mask).any()  # lesions of one image do not overlap
            union |= mask
            crop = decode_dicom(store.read_bytes(lesion.crop_key))
            assert crop.meta.series_description == "cropped images"
            y0, y1, x0, x1 = lesion.bbox
            assert crop.pixels.shape[0] >= y1 - y0 and crop.pixels.shape[1] >= x1 - x0
    assert n_lesions == sum(len(im.lesions) for im in _good(summary)) > 0


def test_every_good_csv_path_resolves(cbis: tuple[ObjectStore, SynthSummary]) -> None:
    store, summary = cbis
    bad = set(summary.bad_cases)
    n_rows = 0
    for rows in _all_rows(store).values():
        for row in rows:
            n_rows += 1
            if row["patient_id"] in bad:
                continue
            for col in ("image file path", "cropped image file path", "ROI mask file path"):
                assert store.exists(join_key(PREFIX, row[col].strip()))
    assert n_rows == summary.n_lesions


# ------------------------------------------------------------------------------------------------
# defects
# ------------------------------------------------------------------------------------------------


def test_each_defect_kind_is_made_once_and_is_detectable(
    cbis: tuple[ObjectStore, SynthSummary],
) -> None:
    store, summary = cbis
    assert sorted(summary.bad_cases.values()) == sorted(DEFECT_KINDS)
    rows = {r["patient_id"]: r for r in _csv(store, "mass_case_description_train_set.csv")}
    found: dict[str, str] = {}
    for patient, kind in summary.bad_cases.items():
        row = rows[patient]
        image_path = row["image file path"]
        mask_path = row["ROI mask file path"].strip()
        if kind == "path_escape":
            with pytest.raises(UnsafeKeyError):
                validate_key(join_key(PREFIX, image_path))
            found[patient] = kind
            continue
        image_key = join_key(PREFIX, image_path)
        if kind == "bad_csv_row":
            assert not row["abnormality id"].isdigit()
            found[patient] = kind
            continue
        image = store.read_bytes(image_key)
        if kind == "truncated_dicom":
            with pytest.raises(DicomError, match="truncated"):
                decode_dicom(image)
        elif kind == "no_pixel_data":
            with pytest.raises(DicomError, match="no pixel data"):
                decode_dicom(image)
        elif kind == "missing_mask":
            assert not store.exists(join_key(PREFIX, mask_path))
        elif kind == "mask_size_mismatch":
            mask = load_mask(store.read_bytes(join_key(PREFIX, mask_path)), mask_path)
            assert mask.shape != decode_dicom(image).pixels.shape
        found[patient] = kind
    assert found == summary.bad_cases
    # good rows are unaffected: their abnormality ids are numbers
    assert all(r["abnormality id"].isdigit() for p, r in rows.items() if p not in summary.bad_cases)


# ------------------------------------------------------------------------------------------------
# sizes and parameters
# ------------------------------------------------------------------------------------------------


def test_larger_images_use_the_working_resolution_path(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    params = CbisSynthParams(
        n_patients=1, height=1024, width=640, views=("CC",), bilateral_fraction=0.0
    )
    summary = generate_cbis(store, params)
    (im,) = summary.images
    px = load_image(store.read_bytes(im.key), im.key)
    assert px.shape == (1024, 640)
    for lesion in im.lesions:
        mask = load_mask(store.read_bytes(lesion.mask_key), lesion.mask_key)
        assert mask.shape == px.shape and mask.any()
        assert px[mask].min() > _background(px.astype(float), im) + 0.05 * 65535


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"calc_fraction": 1.5}, ValueError),
        ({"height": 32}, ValueError),
        ({"views": ("CC", "LM")}, ValueError),
        ({"n_patients": 0, "n_bad": 0}, ValueError),
        ({"prefix": "../escape"}, UnsafeKeyError),
    ],
)
def test_invalid_params_are_refused(kwargs: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        CbisSynthParams(**kwargs)


# ------------------------------------------------------------------------------------------------
# mini-MIAS
# ------------------------------------------------------------------------------------------------


def _mias_lines(store: ObjectStore) -> list[re.Match[str]]:
    text = store.read_bytes("mini-mias/Info.txt").decode("ascii")
    data_lines = [line for line in text.splitlines() if line.startswith("mdb")]
    matches = [MIAS_LINE.match(line) for line in data_lines]
    assert all(matches), [line for line, m in zip(data_lines, matches, strict=True) if not m]
    return [m for m in matches if m]


def test_mias_is_deterministic(mias: tuple[ObjectStore, SynthSummary], tmp_path: Path) -> None:
    store, summary = mias
    again = LocalStore(tmp_path)
    assert generate_mias(again, MiasSynthParams()) == summary
    assert _objects(again) == _objects(store)


def test_mias_files_and_info_txt_format(mias: tuple[ObjectStore, SynthSummary]) -> None:
    store, summary = mias
    assert summary.n_images == 8
    text = store.read_bytes("mini-mias/Info.txt").decode("ascii")
    assert "bottom-left" in text and text.index("INFORMATION") < text.index("mdb001")
    lines = _mias_lines(store)
    assert {m.group(1) for m in lines} == {f"mdb{i:03d}" for i in range(1, 9)}
    assert any(m.group(3) == "NORM" and m.group(0).endswith(" ") for m in lines)
    assert any(m.group(3) != "NORM" and m.group(5) is None for m in lines)  # no coordinates
    names = [m.group(1) for m in lines]
    assert any(names.count(n) > 1 for n in names)  # several abnormalities on one image
    for i in range(1, 9):
        data = store.read_bytes(f"mini-mias/mdb{i:03d}.pgm")
        assert data.startswith(b"P5\n256 256\n255\n")
        assert load_image(data, "x.pgm").shape == (256, 256)


def test_mias_sides_follow_the_numbering(mias: tuple[ObjectStore, SynthSummary]) -> None:
    store, summary = mias
    for im in summary.images:
        number = int(im.source_image_id[3:])
        img = load_image(store.read_bytes(im.key), im.key).astype(float)
        left, right = img[:, :128].mean(), img[:, 128:].mean()
        if number % 2:  # odd: right breast, chest wall on the right edge
            assert im.laterality == "R" and right > left
        else:
            assert im.laterality == "L" and left > right
    pairs = {im.source_patient_id for im in summary.images}
    assert pairs == {"mdb001-002", "mdb003-004", "mdb005-006", "mdb007-008"}


def test_mias_coordinates_have_a_bottom_left_origin(mias: tuple[ObjectStore, SynthSummary]) -> None:
    store, summary = mias
    truth = {im.source_image_id: im for im in summary.images}
    size = 256
    yy, xx = np.mgrid[:size, :size]
    checked = 0
    for m in _mias_lines(store):
        if m.group(5) is None:
            continue
        name, cls = m.group(1), m.group(3)
        x, y, r = int(m.group(5)), int(m.group(6)), int(m.group(7))
        row, col = size - 1 - y, x  # flip: y counts rows up from the bottom
        assert (row, col) in {les.center for les in truth[name].lesions}
        if cls in ("CIRC", "SPIC", "MISC", "CALC"):
            img = load_image(store.read_bytes(f"mini-mias/{name}.pgm"), name).astype(float)
            dist = np.hypot(yy - row, xx - col)
            inner = img[dist <= max(1.5, 0.5 * r)].mean()
            ring = img[(dist > r + 2) & (dist <= 2 * r + 2)].mean()
            assert inner > ring + 10  # a bright lesion at the flipped centre
            checked += 1
    assert checked >= 2
