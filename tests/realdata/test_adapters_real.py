"""mini-MIAS, INbreast and CDD-CESM adapters on the real public data in ../shared/data."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from mammoseg.adapters.cdd_cesm import load_cdd_cesm
from mammoseg.adapters.common import IMAGE_ABSENT
from mammoseg.adapters.inbreast import load_inbreast, render_inbreast_mask
from mammoseg.adapters.mias import load_mias
from mammoseg.casetable import LESION_COLUMNS
from mammoseg.ids import case_pseudonym
from mammoseg.masks import mask_iou, render_geometry
from mammoseg.storage import LocalStore

pytestmark = pytest.mark.realdata

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
KEY = "test-key"


def _dataset(name: str) -> Path:
    path = DATA / name
    if not path.is_dir():
        pytest.skip(f"real data {path} absent (the shared data folder is ../shared/data)")
    return path


# ============================================ mini-MIAS ===========================================


@pytest.fixture(scope="module")
def mias():
    store = LocalStore(_dataset("mini-mias"))
    return store, load_mias(store, pseudonym_key=KEY)


def _ref_of(store: LocalStore, source: str) -> str:
    """The ``mdbNNN`` of a reject's ``Info.txt:line N`` source (reasons never name the image)."""
    key, _, line = source.partition(":line ")
    return store.read_bytes(key).decode("latin-1").splitlines()[int(line) - 1].split()[0]


def test_mias_every_entry_is_a_lesion_or_a_reject(mias) -> None:
    store, result = mias
    lesions = result.lesions
    assert list(lesions.columns) == list(LESION_COLUMNS)
    # 330 data lines: 322 images, 7 of them with 2 or 3 lines
    assert len(lesions) + len(result.rejects) == 330
    refs = {u.rsplit("/", 1)[-1][:6] for u in lesions["image_uri"]}
    absent = {_ref_of(store, r.source) for r in result.rejects}
    assert len(refs) == 118 and len(refs | absent) == 322 and not refs & absent
    assert lesions["case_id"].nunique() == 118


def test_mias_absent_images_are_rejects_with_reason(mias) -> None:
    store, result = mias
    assert result.rejects, "the held-back part should be rejected"
    for r in result.rejects:
        assert r.reason.startswith(IMAGE_ABSENT) and r.source.startswith("Info.txt:line ")
        assert "mdb" not in r.reason  # the reason names no image
        assert not store.exists(f"{_ref_of(store, r.source)}.pgm")
    first = {_ref_of(store, r.source): r.source for r in result.rejects}
    assert first["mdb003"] == "Info.txt:line 106"  # 'mdb003 D NORM '


def test_mias_coordinates_are_flipped(mias) -> None:
    _, result = mias
    lesions = result.lesions
    mdb001 = lesions[lesions["case_id"] == case_pseudonym(KEY, "mini-mias", "mdb001.pgm")]
    assert len(mdb001) == 1
    # Info.txt: 'mdb001 G CIRC B 535 425 197', origin bottom-left, image 1024 high
    assert json.loads(mdb001["mask_geometry"].iloc[0]) == {
        "type": "circle",
        "cx": 535.0,
        "cy": 1024.0 - 425.0,
        "r": 197.0,
    }
    assert mdb001[["abnormality_type", "pathology", "lesion_id"]].values.tolist() == [
        ["mass", "BENIGN", 1]
    ]


def test_mias_pairs_are_patients(mias) -> None:
    _, result = mias
    images = result.lesions.drop_duplicates("case_id")
    per_patient = images.groupby("patient_id")["laterality"].agg(sorted)
    # the 118 images held here are 59 complete pairs: one left and one right breast each
    assert len(per_patient) == 59
    assert all(sides == ["L", "R"] for sides in per_patient)
    by_name = dict(zip(images["image_uri"].str[-10:-4], images["patient_id"], strict=True))
    assert by_name["mdb001"] == by_name["mdb002"] != by_name["mdb007"] == by_name["mdb008"]


def test_mias_lesions_without_coordinates_are_kept_and_flagged(mias) -> None:
    _, result = mias
    lesions = result.lesions
    no_geom = lesions[(lesions["lesion_id"] > 0) & lesions["mask_geometry"].isna()]
    assert len(no_geom) >= 1
    assert no_geom["lesion_detail"].str.contains("no coordinates").all()
    normal = lesions[lesions["lesion_id"] == 0]
    assert set(normal["pathology"]) == {"NORMAL"} and normal["mask_geometry"].isna().all()


def test_mias_laterality_matches_the_pixels(mias) -> None:
    """Even (left) images have the breast in the left half of the picture, odd (right) ones in
    the right half — the convention of Info.txt's note 1, checked on 12 real images."""
    store, result = mias
    images = result.lesions.drop_duplicates("case_id").head(12)
    for uri, side in zip(images["image_uri"], images["laterality"], strict=True):
        data = store.read_bytes(store.key_from_uri(uri))
        pixels = np.frombuffer(data[-1024 * 1024 :], dtype=np.uint8).reshape(1024, 1024)
        left_brighter = pixels[:, :512].mean() > pixels[:, 512:].mean()
        assert left_brighter == (side == "L"), uri


# ============================================ INbreast ============================================

SAMPLE = "22580192_5530d5782fc89dd7_MG_R_CC_ANON.png"


@pytest.fixture(scope="module")
def inbreast():
    store = LocalStore(_dataset("inbreast"))
    return store, load_inbreast(store, pseudonym_key=KEY, export_dirs=())


def test_inbreast_rows(inbreast) -> None:
    store, result = inbreast
    lesions = result.lesions
    # 410 CSV rows: the one image held here, the rest held back
    assert len(result.rejects) == 409
    assert all(r.reason.startswith(IMAGE_ABSENT) for r in result.rejects)
    assert len(lesions) == 1
    row = lesions.iloc[0]
    assert row["image_uri"] == store.uri(f"sample/scans/raw_mammogram/{SAMPLE}")
    assert (row["laterality"], row["view"], row["birads"], row["density"]) == ("R", "CC", 3, 2)
    assert (row["abnormality_type"], row["image_type"]) == ("mass", "FFDM")
    assert len(json.loads(row["mask_geometry"])["points"]) == 62
    # nothing of the CSV's date column ('201001' for this image) reaches the table
    text = " ".join(str(v) for col, v in row.items() if col != "mask_geometry")
    assert "201001" not in text and "removed" not in text


def test_inbreast_xml_reproduces_the_sample_mask(inbreast) -> None:
    store, result = inbreast
    ref_path = store.root / "sample" / "scans" / "raw_annotation" / SAMPLE
    reference = cv2.imread(str(ref_path), cv2.IMREAD_UNCHANGED) > 127
    assert reference.shape == (3328, 2560)
    xml = store.read_bytes("AllXML/22580192.xml")
    mask = render_inbreast_mask(xml, reference.shape)
    iou = mask_iou(mask, reference)
    assert iou >= 0.95, iou
    # the table's geometry draws the same mask
    from_table = render_geometry(result.lesions["mask_geometry"].iloc[0], reference.shape)
    assert np.array_equal(from_table, mask)


# ============================================ CDD-CESM ============================================


@pytest.fixture(scope="module")
def cdd():
    store = LocalStore(_dataset("cdd-cesm"))
    return store, load_cdd_cesm(store, pseudonym_key=KEY)


def test_cdd_images_and_masks(cdd) -> None:
    store, result = cdd
    lesions = result.lesions
    assert list(lesions.columns) == list(LESION_COLUMNS)
    assert len(lesions) == 524 and lesions["case_id"].nunique() == 524
    assert lesions["image_type"].value_counts().to_dict() == {"DM": 263, "CM": 261}
    assert lesions["patient_id"].nunique() == 144
    # every image has its mask, and the mask is the image's namesake
    assert lesions["mask_uri"].notna().all() and (lesions["lesion_id"] == 1).all()
    for image, mask in zip(lesions["image_uri"], lesions["mask_uri"], strict=True):
        assert mask.replace("/masks/", "/images/") == image
        assert store.exists(store.key_from_uri(mask))
    # the CSV's other 482 rows have no image here
    assert len(result.rejects) == 1006 - 524
    assert all(r.reason.startswith(IMAGE_ABSENT) for r in result.rejects)


def test_cdd_density_and_labels(cdd) -> None:
    store, result = cdd
    lesions = result.lesions
    counts = lesions["density"].dropna().astype(int).value_counts().to_dict()
    assert counts == {
        3: 130,  # C
        2: 86,  # B
        4: 22,  # D
        1: 2,  # A
    }
    assert lesions["density"].isna().sum() == 284  # '_': all CM images and 23 DM ones
    assert lesions.loc[lesions["image_type"] == "CM", "density"].isna().all()
    p3 = lesions[lesions["image_uri"] == store.uri("images/P3_L_DM_CC.jpg")].iloc[0]
    # 'P3_L_DM_CC', density C, BI-RADS 5, 'High density mass with speculated margin', Malignant
    assert (p3["density"], p3["birads"], p3["abnormality_type"], p3["pathology"]) == (
        3,
        5,
        "mass",
        "MALIGNANT",
    )
    assert set(lesions["pathology"]) == {"MALIGNANT"}
    assert set(lesions["abnormality_type"]) <= {
        "mass",
        "calcification",
        "distortion",
        "asymmetry",
        "other",
    }


def test_cdd_image_type_selection(cdd) -> None:
    store, _ = cdd
    dm = load_cdd_cesm(store, pseudonym_key=KEY, image_types=("DM",))
    assert len(dm.lesions) == 263 and set(dm.lesions["image_type"]) == {"DM"}
    assert len(dm.rejects) == 503 - 263  # only the DM rows without image
