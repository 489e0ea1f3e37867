"""A CBIS-DDSM CSV missing a required column: a whole-file reject that still counts every case.

The file says which CSV and which column; each case (image) it lists is one reject, named by
its pseudonym (never a raw id), so ``cases found = ingested + rejected`` stays true.
"""

from __future__ import annotations

import io
import re

import pandas as pd
import pytest

from mammoseg.adapters.cbis_ddsm import load_cbis, read_csv_bytes
from mammoseg.storage import LocalStore
from mammoseg.synth import CbisSynthParams, generate_cbis

KEY = "missing-column-key"
MASS_TRAIN = "mass_case_description_train_set.csv"
MASS_HEADER = (
    "patient_id,breast_density,left or right breast,image view,abnormality id,abnormality type,"
    "mass shape,mass margins,assessment,pathology,subtlety,image file path,cropped image file path,"
    "ROI mask file path\n"
)
#: two cases: P_00001 LEFT CC with two abnormalities (two rows), P_00002 RIGHT MLO with one
ROWS = (
    "P_00001,3,LEFT,CC,1,mass,OVAL,CIRCUMSCRIBED,3,BENIGN,3,"
    "Mass-Training_P_00001_LEFT_CC/a/b/000000.dcm,Mass-Training_P_00001_LEFT_CC_1/a/c/000000.dcm,"
    "Mass-Training_P_00001_LEFT_CC_1/a/c/000001.dcm\n"
    "P_00001,3,LEFT,CC,2,mass,OVAL,CIRCUMSCRIBED,3,BENIGN,3,"
    "Mass-Training_P_00001_LEFT_CC/a/b/000000.dcm,Mass-Training_P_00001_LEFT_CC_2/a/c/000000.dcm,"
    "Mass-Training_P_00001_LEFT_CC_2/a/c/000001.dcm\n"
    "P_00002,2,RIGHT,MLO,1,mass,ROUND,OBSCURED,4,MALIGNANT,4,"
    "Mass-Training_P_00002_RIGHT_MLO/a/b/000000.dcm,Mass-Training_P_00002_RIGHT_MLO_1/a/c/000000.dcm,"
    "Mass-Training_P_00002_RIGHT_MLO_1/a/c/000001.dcm\n"
)


def _drop_column(csv: bytes, column: str) -> bytes:
    frame = pd.read_csv(io.BytesIO(csv), dtype=str, keep_default_na=False)
    return frame.drop(columns=[column]).to_csv(index=False).encode()


@pytest.mark.parametrize("column", ["pathology", "image file path", "abnormality id"])
def test_every_case_of_the_file_is_one_reject(column: str) -> None:
    data = _drop_column((MASS_HEADER + ROWS).encode(), column)
    rows, rejects = read_csv_bytes(data, MASS_TRAIN, pseudonym_key=KEY)
    assert rows == []
    assert len(rejects) == 2  # two cases, not one reject for the file, not one per row
    for r in rejects:
        assert MASS_TRAIN in r.reason and repr(column) in r.reason and "missing columns" in r.reason
        assert r.case_id and r.case_id.startswith("cs-")
        assert not re.search(r"P_\d{5}", f"{r.reason} {r.source} {r.case_id}")
    assert sorted(r.source for r in rejects) == [f"{MASS_TRAIN} row 3", f"{MASS_TRAIN} rows 1, 2"]
    assert len({r.case_id for r in rejects}) == 2


def test_without_a_key_the_cases_are_still_counted() -> None:
    rows, rejects = read_csv_bytes(
        _drop_column((MASS_HEADER + ROWS).encode(), "pathology"), MASS_TRAIN
    )
    assert rows == [] and len(rejects) == 2 and all(r.case_id is None for r in rejects)


def test_rows_whose_case_cannot_be_told_count_one_each_and_an_empty_file_once() -> None:
    data = _drop_column(
        _drop_column((MASS_HEADER + ROWS).encode(), "image file path"), "patient_id"
    )
    _, rejects = read_csv_bytes(data, MASS_TRAIN, pseudonym_key=KEY)
    assert len(rejects) == 3 and all(r.case_id is None for r in rejects)
    _, rejects = read_csv_bytes(
        _drop_column(MASS_HEADER.encode(), "pathology"), MASS_TRAIN, pseudonym_key=KEY
    )
    assert (
        len(rejects) == 1 and rejects[0].source == MASS_TRAIN and "'pathology'" in rejects[0].reason
    )


@pytest.fixture(scope="module")
def synth_cbis(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("cbis")
    summary = generate_cbis(
        LocalStore(root),
        CbisSynthParams(
            n_patients=6,
            height=192,
            width=128,
            seed=5,
            prefix="cbis",
            multi_lesion_fraction=1.0,
            calc_fraction=0.3,
            test_fraction=0.3,
        ),
    )
    store = LocalStore(root / "cbis")
    return store, summary, load_cbis(store, pseudonym_key=KEY)


@pytest.mark.parametrize("column", ["pathology", "image file path"])
def test_load_cbis_counts_every_case_of_a_file_missing_a_column(synth_cbis, column: str) -> None:
    store, summary, intact = synth_cbis
    assert intact.rejects == []
    lesions = intact.lesions
    in_file = set(
        lesions.loc[
            (lesions["abnormality_type"] == "mass") & (lesions["source_split"] == "train"),
            "case_id",
        ]
    )
    assert len(in_file) >= 2 and len(lesions[lesions["case_id"].isin(in_file)]) > len(
        in_file
    )  # multi-row cases

    key = f"csv/{MASS_TRAIN}"
    original = store.read_bytes(key)
    store.write_bytes(key, _drop_column(original, column), "text/csv")
    try:
        broken = load_cbis(store, pseudonym_key=KEY)
    finally:
        store.write_bytes(key, original, "text/csv")

    # every case of the broken file is one reject, named by the same pseudonym ingest gives it
    assert {r.case_id for r in broken.rejects} == in_file
    assert len(broken.rejects) == len(in_file)
    assert all(MASS_TRAIN in r.reason and repr(column) in r.reason for r in broken.rejects)
    # the others are ingested as before; found = ingested + rejected, as the run report counts
    kept = set(broken.lesions["case_id"])
    assert kept == set(lesions["case_id"]) - in_file
    assert len(kept) + len(broken.rejects) == summary.n_images
