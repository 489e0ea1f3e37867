"""CBIS-DDSM adapter on the real CSVs and DICOM samples in ../shared/data."""

from __future__ import annotations

import pytest

from mammoseg.adapters.cbis_ddsm import read_cbis_csvs
from mammoseg.casetable import LESION_COLUMNS
from mammoseg.storage import LocalStore

pytestmark = pytest.mark.realdata


def test_real_csvs_parse_completely(shared_data) -> None:
    result = read_cbis_csvs(shared_data / "cbis-ddsm" / "csv", pseudonym_key="test")
    lesions = result.lesions
    # 1318 + 378 + 1546 + 326 rows in the four files; every row either parsed or rejected
    assert len(lesions) + len(result.rejects) == 1318 + 378 + 1546 + 326
    assert list(lesions.columns) == list(LESION_COLUMNS)
    assert set(lesions["abnormality_type"]) == {"mass", "calcification"}
    assert set(lesions["laterality"]) == {"L", "R"}
    assert set(lesions["pathology"]) == {"MALIGNANT", "BENIGN", "BENIGN_WITHOUT_CALLBACK"}
    assert not lesions["image_uri"].str.contains("\n").any()
    # both density spellings were read
    assert lesions.groupby("abnormality_type")["density"].count().min() > 300
    # pseudonyms only: no dataset patient id in the id columns
    assert not lesions["patient_id"].str.contains("P_").any()
    assert lesions["patient_id"].nunique() < lesions["case_id"].nunique()


def test_real_samples_in_the_new_tcia_layout_are_told_apart_by_header(shared_data, tmp_path) -> None:
    """The three sample DICOMs are all *cropped images*, even those in folders named
    'ROI mask images': the adapter must not take them for masks."""
    from mammoseg.adapters.cbis_ddsm import _folder_index, _series_description, classify

    store = LocalStore(shared_data / "cbis-ddsm" / "samples" / "dicom")
    index = _folder_index(store, "")
    kinds = {k: classify(_series_description(store, k)) for keys in index.values() for k in keys}
    assert len(kinds) == 3 and set(kinds.values()) == {"crop"}
    assert any("ROI mask images" in k for k in kinds)
