"""Data tests: GX suites on the real CBIS-DDSM metadata CSVs in ../shared/data (read-only).

Two levels: the four raw CSVs as shipped (a suite written here, checking the facts a loader
relies on and the quirks the README lists), and the lesion table the CBIS-DDSM adapter makes of
them, through the project's ``lesion_metadata`` suite.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mammoseg.validation import SuiteSpec, ValidationReport, validate_frame

pytestmark = pytest.mark.realdata

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
CSV_DIR = DATA / "cbis-ddsm" / "csv"

# file → (abnormality kind, name of its density column, rows)
CSVS = {
    "mass_case_description_train_set.csv": ("mass", "breast_density", 1318),
    "mass_case_description_test_set.csv": ("mass", "breast_density", 378),
    "calc_case_description_train_set.csv": ("calcification", "breast density", 1546),
    "calc_case_description_test_set.csv": ("calcification", "breast density", 326),
}


@pytest.fixture(scope="module")
def csv_dir() -> Path:
    if not CSV_DIR.is_dir():
        pytest.skip(
            f"CBIS-DDSM CSVs absent: {CSV_DIR.resolve()} (real data lives in ../shared/data)"
        )
    return CSV_DIR


def _e(type_: str, **kwargs: object) -> dict:
    return {"type": type_, "kwargs": kwargs}


def raw_suite(kind: str, density: str) -> SuiteSpec:
    """What a CBIS-DDSM loader may assume about one raw case-description CSV."""
    detail = (
        ["mass shape", "mass margins"] if kind == "mass" else ["calc type", "calc distribution"]
    )
    columns = [
        "patient_id",
        density,
        "left or right breast",
        "image view",
        "abnormality id",
        "abnormality type",
        *detail,
        "assessment",
        "pathology",
        "subtlety",
        "image file path",
        "cropped image file path",
        "ROI mask file path",
    ]
    dcm = r"\.dcm\s*$"  # path cells may end in a newline inside the quotes
    return SuiteSpec.from_dict(
        {
            "name": f"cbis_raw_{kind}",
            "expectations": [
                _e("expect_table_columns_to_match_set", column_set=columns, exact_match=True),
                _e("expect_column_values_to_match_regex", column="patient_id", regex=r"^P_\d{5}$"),
                _e(
                    "expect_column_values_to_be_in_set",
                    column="left or right breast",
                    value_set=["LEFT", "RIGHT"],
                ),
                _e(
                    "expect_column_values_to_be_in_set",
                    column="image view",
                    value_set=["CC", "MLO"],
                ),
                _e(
                    "expect_column_values_to_be_in_set",
                    column="abnormality type",
                    value_set=["mass"] if kind == "mass" else ["calcification"],
                ),
                _e(
                    "expect_column_values_to_be_in_set",
                    column="pathology",
                    value_set=["MALIGNANT", "BENIGN", "BENIGN_WITHOUT_CALLBACK"],
                ),
                _e("expect_column_values_to_be_between", column="abnormality id", min_value=1),
                _e(
                    "expect_column_values_to_be_between",
                    column="assessment",
                    min_value=0,
                    max_value=5,
                ),
                _e(
                    "expect_compound_columns_to_be_unique",
                    column_list=[
                        "patient_id",
                        "left or right breast",
                        "image view",
                        "abnormality id",
                    ],
                ),
                *[
                    _e("expect_column_values_to_not_be_null", column=c)
                    for c in ("image file path", "cropped image file path", "ROI mask file path")
                ],
                *[
                    _e("expect_column_values_to_match_regex", column=c, regex=dcm)
                    for c in ("image file path", "cropped image file path", "ROI mask file path")
                ],
                # value ranges as documented; the real files break these in a few rows (see below)
                _e("expect_column_values_to_be_between", column=density, min_value=1, max_value=4),
                _e(
                    "expect_column_values_to_be_between",
                    column="subtlety",
                    min_value=1,
                    max_value=5,
                ),
            ],
        }
    )


def _failed(report: ValidationReport) -> dict[str, int | None]:
    return {r.name: r.unexpected_count for r in report.failed}


@pytest.mark.parametrize("name", sorted(CSVS))
def test_raw_csv_meets_what_the_loader_assumes(csv_dir: Path, name: str) -> None:
    kind, density, rows = CSVS[name]
    raw = pd.read_csv(csv_dir / name)
    report = validate_frame(raw, raw_suite(kind, density))
    assert report.evaluated_rows == rows
    # The only departures in the shipped files: two calc-test rows with density 0 and two
    # mass-train rows with subtlety 0 (hand-checked in the CSVs).
    known = {
        "calc_case_description_test_set.csv": {f"expect_column_values_to_be_between({density})": 2},
        "mass_case_description_train_set.csv": {"expect_column_values_to_be_between(subtlety)": 2},
    }.get(name, {})
    assert _failed(report) == known, report.summary_text()
    for outcome in report.failed:
        assert outcome.unexpected_examples == (0,)
        assert (raw.iloc[list(outcome.failing_positions)][list(outcome.columns)] == 0).all().all()


def test_newlines_inside_quoted_path_cells_are_real(csv_dir: Path) -> None:
    """The quirk the ``\\s*$`` in the path regex allows for: some cells end in a newline."""
    raw = pd.read_csv(csv_dir / "calc_case_description_train_set.csv")
    paths = pd.concat([raw[c] for c in ("cropped image file path", "ROI mask file path")])
    assert paths.str.endswith("\n").any()


def test_cbis_lesion_table_through_the_lesion_metadata_suite(csv_dir: Path) -> None:
    try:
        from mammoseg.adapters.cbis_ddsm import read_cbis_csvs
    except ImportError as exc:  # the adapter is written in parallel
        pytest.skip(f"CBIS-DDSM adapter not importable yet: {exc}")
    lesions = read_cbis_csvs(csv_dir, pseudonym_key="gx-data-test").lesions
    report = validate_frame(lesions, "lesion_metadata")

    assert report.table_failures() == [], report.summary_text()
    # out-of-range values are kept by the adapter and reported here, per case
    density = lesions["density"]
    subtlety = lesions["subtlety"]
    bad_density = density.notna() & ~density.between(1, 4)
    bad_subtlety = subtlety.notna() & ~subtlety.between(1, 5)
    assert (int(bad_density.sum()), int(bad_subtlety.sum())) == (2, 2)
    assert _failed(report) == {
        "expect_column_values_to_be_between(density)": 2,
        "expect_column_values_to_be_between(subtlety)": 2,
    }, report.summary_text()
    expected = sorted(set(lesions.loc[bad_density | bad_subtlety, "case_id"]))
    assert report.failing_case_ids() == expected
    assert report.failing_fraction() < 0.01
    # density is an ACR density in every CBIS-DDSM file (two column spellings): the dataset-level
    # null-share check the shared suite cannot make (mini-MIAS has no ACR density)
    assert density.notna().mean() > 0.99
