"""INbreast adapter on the real jpeg-export in ../shared/data/inbreast (47 mass images)."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from mammoseg.adapters.common import IMAGE_ABSENT, OUT_OF_SCOPE
from mammoseg.adapters.inbreast import EXAM_GAP, exam_groups, load_inbreast
from mammoseg.adapters.registry import load_dataset
from mammoseg.casetable import LESION_COLUMNS
from mammoseg.ids import case_pseudonym
from mammoseg.imageio import load_image, load_mask
from mammoseg.storage import LocalStore

pytestmark = pytest.mark.realdata

ROOT = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "inbreast"
EXPORT = ROOT / "jpeg-export"
KEY = "test-key"
#: File Names with two mask files in the export (ls masks | sed 's/_bw.*//' | uniq -d)
TWO_MASSES = ("20586908", "20586960", "22579730", "22613770")


def _root() -> LocalStore:
    if not EXPORT.is_dir():
        pytest.skip(
            f"INbreast jpeg-export {EXPORT} absent (the shared data folder is ../shared/data)"
        )
    return LocalStore(ROOT)


@pytest.fixture(scope="module")
def export():
    store = _root()
    return store, load_inbreast(store, pseudonym_key=KEY)


def _by_file(lesions: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """File Name (the image's stem) → its lesion rows."""
    stems = lesions["image_uri"].str.rsplit("/", n=1).str[-1].str.split(".").str[0]
    return {stem: g for stem, g in lesions.groupby(stems)}


def _csv() -> pd.DataFrame:
    return pd.read_csv(ROOT / "INbreast.csv", sep=";", dtype=str, keep_default_na=False)


def test_the_export_gives_47_images_of_masses(export) -> None:
    store, result = export
    lesions = result.lesions
    assert list(lesions.columns) == list(LESION_COLUMNS)
    files = _by_file(lesions)
    assert len(files) == 47 and lesions["case_id"].nunique() == 47
    assert sorted(files) == sorted(p.stem for p in (EXPORT / "images").glob("*.jpg"))
    assert len(lesions) == len(list((EXPORT / "masks").glob("*.png"))) == 51
    assert lesions["image_uri"].str.startswith(store.uri("jpeg-export/images/")).all()
    assert lesions["mask_uri"].str.startswith(store.uri("jpeg-export/masks/")).all()
    assert lesions["mask_geometry"].isna().all()
    assert set(lesions["abnormality_type"]) == {"mass"} and set(lesions["pathology"]) == {"UNKNOWN"}
    assert set(lesions["image_type"]) == {"FFDM"} and set(lesions["source_dataset"]) == {"inbreast"}
    # 410 CSV rows: 47 in the export, the rest held back; the sample PNG of 22580192 is the same
    # image as the export's, so it is left out (not quarantined) and counted once
    absent = [r for r in result.rejects if r.reason.startswith(IMAGE_ABSENT)]
    other = [r for r in result.rejects if not r.reason.startswith(IMAGE_ABSENT)]
    assert len(absent) == 410 - 47
    assert [(r.source, r.reason.split(":")[0]) for r in other] == [
        ("sample/scans/raw_mammogram/22580192_5530d5782fc89dd7_MG_R_CC_ANON.png", OUT_OF_SCOPE)
    ]
    assert "22580192" in files and len(files["22580192"]) == 1


def test_several_mask_files_are_several_lesions_whose_union_is_the_mask(export) -> None:
    store, result = export
    files = _by_file(result.lesions)
    counts = {f: len(g) for f, g in files.items()}
    assert {f for f, n in counts.items() if n > 1} == set(TWO_MASSES)
    assert set(counts.values()) == {1, 2}
    rows = files[TWO_MASSES[0]].sort_values("lesion_id")
    assert rows["lesion_id"].tolist() == [1, 2]
    assert [u.rsplit("/", 1)[-1] for u in rows["mask_uri"]] == [
        f"{TWO_MASSES[0]}_bw_Mass_1.png",
        f"{TWO_MASSES[0]}_bw_Mass_2.png",
    ]
    # the pipeline's decoders: 3-channel JPEG → 2-D uint8; 1-bit PNG → bool of the same shape
    image_key = store.key_from_uri(rows["image_uri"].iloc[0])
    image = load_image(store.read_bytes(image_key), image_key)
    assert image.ndim == 2 and image.dtype == np.uint8 and image.shape == (4084, 3328)
    union = np.zeros(image.shape, dtype=bool)
    direct = np.zeros(image.shape, dtype=bool)
    for uri in rows["mask_uri"]:
        key = store.key_from_uri(uri)
        mask = load_mask(store.read_bytes(key), key)
        assert mask.shape == image.shape and mask.dtype == bool and mask.any()
        union |= mask
        direct |= cv2.imread(str(store.root / key), cv2.IMREAD_GRAYSCALE) > 127
    assert np.array_equal(union, direct)
    assert union.sum() == direct.sum() > 0
    # the two masses are distinct: the union is larger than either
    keys = [store.key_from_uri(u) for u in rows["mask_uri"]]
    assert union.sum() > max(load_mask(store.read_bytes(k), k).sum() for k in keys)


def test_side_view_density_birads_come_from_the_csv(export) -> None:
    _, result = export
    files = _by_file(result.lesions)
    # read by hand from INbreast.csv (Laterality;View;…;File Name;ACR;Bi-Rads)
    expected = {
        "22580192": ("R", "CC", 2, 3),  # removed;removed;R;CC;201001;22580192;2;3
        "22579730": ("R", "MLO", 2, 5),  # removed;removed;R;MLO;201001;22579730;2;5
        "53586896": ("L", "CC", 1, 2),  # removed;removed;L;CC;201001;53586896;1;2
        "50994408": ("R", "CC", 3, 2),  # removed;removed;R;CC;200901;50994408;3;2
    }
    for file_name, want in expected.items():
        rows = files[file_name]
        got = rows[["laterality", "view", "density", "birads"]].drop_duplicates()
        assert got.values.tolist() == [list(want)], file_name
    # and the whole table agrees with the CSV
    csv = _csv().set_index("File Name")
    for file_name, rows in files.items():
        assert set(rows["laterality"]) == {csv.loc[file_name, "Laterality"]}
        assert set(rows["view"]) == {csv.loc[file_name, "View"]}


def test_exam_groups_are_runs_of_close_file_names() -> None:
    _root()
    names = set(_csv()["File Name"]) | {p.stem for p in (EXPORT / "images").glob("*.jpg")}
    groups = exam_groups(names)
    assert set(groups) == names
    members: dict[str, list[int]] = {}
    for file_name, first in groups.items():
        members.setdefault(first, []).append(int(file_name))
    runs = sorted(sorted(m) for m in members.values())
    for run in runs:
        assert all(b - a <= EXAM_GAP for a, b in itertools.pairwise(run)), run
        assert str(run[0]) == groups[str(run[0])]  # named by its first File Name
    for before, after in itertools.pairwise(runs):
        assert after[0] - before[-1] > EXAM_GAP
    assert len(runs) == 116  # over all 410 CSV rows


def test_one_patient_per_exam_group(export) -> None:
    _, result = export
    files = _by_file(result.lesions)
    groups = exam_groups(set(_csv()["File Name"]) | set(files))
    patients = {f: set(g["patient_id"]) for f, g in files.items()}
    assert all(len(p) == 1 for p in patients.values())
    by_group: dict[str, set[str]] = {}
    by_patient: dict[str, set[str]] = {}
    for f, (patient,) in patients.items():
        by_group.setdefault(groups[f], set()).add(patient)
        by_patient.setdefault(patient, set()).add(groups[f])
    assert all(len(p) == 1 for p in by_group.values())  # no group split across two patients
    assert all(len(g) == 1 for g in by_patient.values())  # no patient made of two groups
    assert len(by_patient) == 23
    assert not any(result.lesions["patient_id"].str.contains("exam"))  # pseudonymised


def test_registry_name_reads_the_export() -> None:
    store = _root()
    result = load_dataset("inbreast", store, pseudonym_key=KEY)
    assert result.lesions["case_id"].nunique() == 47
    case = case_pseudonym(KEY, "inbreast", "jpeg-export/images/20586908.jpg")
    assert (result.lesions["case_id"] == case).sum() == 2


def test_the_export_folder_itself_as_root_without_csv() -> None:
    _root()
    store = LocalStore(EXPORT)
    result = load_inbreast(store, pseudonym_key=KEY)
    lesions = result.lesions
    assert result.rejects == []
    assert lesions["case_id"].nunique() == 47 and len(lesions) == 51
    # no INbreast.csv next to the export: side and view unknown (preprocessing reads the pixels)
    assert lesions[["laterality", "view", "density", "birads"]].isna().all().all()
    assert lesions["lesion_detail"].str.contains("not in INbreast.csv").all()
    assert lesions["mask_uri"].str.startswith(store.uri("masks/")).all()


def test_original_layout_only_still_reads_the_sample() -> None:
    store = _root()
    result = load_inbreast(store, pseudonym_key=KEY, export_dirs=())
    assert len(result.lesions) == 1 and len(result.rejects) == 409
    row = result.lesions.iloc[0]
    assert row["image_uri"].endswith("22580192_5530d5782fc89dd7_MG_R_CC_ANON.png")
    assert pd.isna(row["mask_uri"]) and isinstance(row["mask_geometry"], str)
