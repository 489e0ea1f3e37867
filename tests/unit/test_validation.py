"""GX suites (expectations/*.json), the runner and the readable report, on hand-made tables."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from mammoseg.casetable import (
    ABNORMALITY_TYPES,
    LATERALITIES,
    LESION_COLUMNS,
    PATHOLOGIES,
    VIEWS,
    circle_geometry,
    conform,
)
from mammoseg.validation import (
    SuiteError,
    SuiteSpec,
    ValidationInputError,
    ValidationReport,
    describe_expectation,
    load_suite,
    validate_frame,
)

REPO = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------------------------
# tables
# ----------------------------------------------------------------------------------------------


def lesion_table() -> pd.DataFrame:
    """Three images: cs-a with two lesions (mask file, circle), cs-b normal, cs-c a MIAS-like
    lesion without density."""
    base = {"source_dataset": "synthetic-test", "source_split": "", "image_type": "FFDM"}
    rows = [
        dict(
            base,
            case_id="cs-a",
            patient_id="pt-1",
            lesion_id=1,
            laterality="L",
            view="CC",
            image_uri="file:///s/a.png",
            mask_uri="file:///s/a_m1.png",
            abnormality_type="mass",
            pathology="MALIGNANT",
            density=2,
            birads=5,
            subtlety=4,
        ),
        dict(
            base,
            case_id="cs-a",
            patient_id="pt-1",
            lesion_id=2,
            laterality="L",
            view="CC",
            image_uri="file:///s/a.png",
            mask_geometry=circle_geometry(30, 20, 5),
            abnormality_type="calcification",
            pathology="BENIGN",
            density=2,
            birads=2,
            subtlety=1,
        ),
        dict(
            base,
            case_id="cs-b",
            patient_id="pt-2",
            lesion_id=0,
            laterality="R",
            view="MLO",
            image_uri="file:///s/b.png",
            abnormality_type="normal",
            pathology="NORMAL",
            density=4,
            birads=1,
        ),
        dict(
            base,
            case_id="cs-c",
            patient_id="pt-3",
            lesion_id=1,
            laterality="R",
            view="MLO",
            image_uri="file:///s/c.png",
            mask_uri="file:///s/c_m1.png",
            abnormality_type="mass",
            pathology="BENIGN_WITHOUT_CALLBACK",
        ),
    ]
    return conform(pd.DataFrame(rows))


def pairing_table() -> pd.DataFrame:
    """Per lesion: case p1 (64x64, good), p2 (normal image, no mask), p3 (good, 128x96)."""
    return pd.DataFrame(
        {
            "case_id": ["p1", "p2", "p3"],
            "lesion_id": [1, 0, 1],
            "image_found": [True, True, True],
            "mask_found": [True, False, True],
            "image_height": [64, 64, 128],
            "image_width": [64, 64, 96],
            "mask_height": pd.array([64, None, 128], dtype="Int64"),
            "mask_width": pd.array([64, None, 96], dtype="Int64"),
            "mask_binary": pd.array([True, None, True], dtype="boolean"),
            "mask_pixels": [40, 0, 300],
            "mask_in_breast_fraction": [1.0, float("nan"), 0.75],
        }
    )


def by_name(report: ValidationReport, name: str):
    (outcome,) = [r for r in report.results if r.name == name]
    return outcome


def failed_names(report: ValidationReport) -> list[str]:
    return [r.name for r in report.failed]


# ----------------------------------------------------------------------------------------------
# lesion_metadata
# ----------------------------------------------------------------------------------------------


def test_good_lesion_table_passes_and_is_not_modified() -> None:
    df = lesion_table()
    before = df.copy(deep=True)
    report = validate_frame(df, "lesion_metadata")
    assert report.success, report.summary_text()
    assert report.failing_case_ids() == []
    assert report.table_failures() == []
    assert (report.evaluated_rows, report.evaluated_ids) == (4, 3)
    assert report.failing_fraction() == 0.0
    assert len(report.failing_rows(df)) == 0
    pd.testing.assert_frame_equal(df, before)
    # every expectation in the file came back, in file order
    spec = load_suite("lesion_metadata")
    assert [r.expectation_type for r in report.results] == [e["type"] for e in spec.expectations]


def _set(row: int, col: str, value: object) -> Callable[[pd.DataFrame], None]:
    def mutate(df: pd.DataFrame) -> None:
        df.loc[row, col] = value

    return mutate


BROKEN = [
    # (what to break, expectation that must fail, unexpected count, examples, failing case ids)
    (
        _set(3, "pathology", "BAD"),
        "expect_column_values_to_be_in_set(pathology)",
        1,
        ("BAD",),
        ["cs-c"],
    ),
    (_set(0, "density", 7), "expect_column_values_to_be_between(density)", 1, (7,), ["cs-a"]),
    (_set(2, "birads", 9), "expect_column_values_to_be_between(birads)", 1, (9,), ["cs-b"]),
    (_set(2, "view", "AP"), "expect_column_values_to_be_in_set(view)", 1, ("AP",), ["cs-b"]),
    (
        _set(1, "lesion_id", 1),
        "expect_compound_columns_to_be_unique(case_id, lesion_id)",
        2,
        (["cs-a", 1],),
        ["cs-a"],
    ),
    (
        _set(3, "mask_uri", pd.NA),
        "expect_column_values_to_not_be_null(mask_uri)",
        1,
        (None,),
        ["cs-c"],
    ),
    (
        _set(1, "mask_geometry", "{oops"),
        "expect_column_values_to_be_json_parseable(mask_geometry)",
        1,
        ("{oops",),
        ["cs-a"],
    ),
]


@pytest.mark.parametrize(("mutate", "name", "count", "examples", "ids"), BROKEN)
def test_one_broken_thing_fails_exactly_its_expectation(mutate, name, count, examples, ids) -> None:
    df = lesion_table()
    mutate(df)
    report = validate_frame(df, "lesion_metadata")
    assert not report.success
    assert failed_names(report) == [name]
    outcome = by_name(report, name)
    assert outcome.row_level and outcome.unexpected_count == count
    assert outcome.unexpected_examples == examples
    assert report.failing_case_ids() == ids
    assert report.table_failures() == []
    # every row of the failing case is quarantined, nothing else
    assert sorted(report.failing_rows(df)) == sorted(df.index[df["case_id"].isin(ids)])


def test_normal_image_needs_no_mask_but_a_lesion_does() -> None:
    df = lesion_table()
    df.loc[2, "lesion_id"] = 1  # cs-b now claims a lesion, and has no mask
    report = validate_frame(df, "lesion_metadata")
    assert failed_names(report) == ["expect_column_values_to_not_be_null(mask_uri)"]
    assert report.failing_case_ids() == ["cs-b"]


def test_missing_column_is_a_table_failure_not_a_case_failure() -> None:
    df = lesion_table().drop(columns=["pathology"])
    report = validate_frame(df, "lesion_metadata")
    assert not report.success
    columns = by_name(report, "expect_table_columns_to_match_set")
    assert not columns.success and columns.unexpected_examples == ("missing: pathology",)
    values = by_name(report, "expect_column_values_to_be_in_set(pathology)")
    assert not values.success and "pathology" in (values.error or "")
    assert {r.name for r in report.table_failures()} == {columns.name, values.name}
    assert report.failing_case_ids() == []


def test_failing_rows_uses_the_callers_index_labels() -> None:
    df = lesion_table()
    df.index = [10, 20, 30, 40]
    df.loc[40, "pathology"] = "benign"  # wrong case
    report = validate_frame(df, "lesion_metadata")
    assert list(report.failing_rows(df)) == [40]
    with pytest.raises(ValueError, match="4 rows"):
        report.failing_rows(df.iloc[:3])


def test_report_is_json_and_readable() -> None:
    df = lesion_table()
    df.loc[3, "pathology"] = "BAD"
    df.loc[0, "density"] = 7
    report = validate_frame(df, "lesion_metadata", run_name="unit")
    data = json.loads(json.dumps(report.to_dict()))  # plain JSON types only
    assert data["suite"] == "lesion_metadata" and data["success"] is False
    assert data["failing_ids"] == ["cs-a", "cs-c"] and data["failing_fraction"] == 2 / 3
    density = next(r for r in data["results"] if r["name"].endswith("(density)"))
    assert density["unexpected_examples"] == [7] and density["failing_ids"] == ["cs-a"]
    text = report.summary_text()
    lines = text.splitlines()
    assert lines[0].startswith("✗ suite lesion_metadata: FAILED — 16/18 expectations met on 4 rows")
    (bad,) = [line for line in lines if "pathology must be one of" in line]
    assert (
        bad.lstrip().startswith("✗") and "1 unexpected" in bad and "'BAD'" in bad and "cs-c" in bad
    )
    assert sum(line.lstrip().startswith("✓") for line in lines[1:]) == 16


def test_the_suite_file_matches_casetable() -> None:
    """The JSON suite is the data contract of casetable.py; keep the two in step."""
    exps = load_suite("lesion_metadata").expectations
    kw = {(e["type"], e["kwargs"].get("column")): e["kwargs"] for e in exps}
    assert kw[("expect_table_columns_to_match_set", None)]["column_set"] == list(LESION_COLUMNS)
    assert kw[("expect_column_values_to_be_in_set", "pathology")]["value_set"] == list(PATHOLOGIES)
    assert kw[("expect_column_values_to_be_in_set", "view")]["value_set"] == list(VIEWS)
    assert kw[("expect_column_values_to_be_in_set", "laterality")]["value_set"] == list(
        LATERALITIES
    )
    assert kw[("expect_column_values_to_be_in_set", "abnormality_type")]["value_set"] == list(
        ABNORMALITY_TYPES
    )


# ----------------------------------------------------------------------------------------------
# pairing
# ----------------------------------------------------------------------------------------------


def test_good_pairing_table_passes_including_a_normal_image() -> None:
    report = validate_frame(pairing_table(), "pairing")
    assert report.success, report.summary_text()
    assert report.parameters == {"min_mask_in_breast_fraction": 0.5}


PAIRING_BROKEN = [
    (
        {"mask_width": 63},
        "expect_column_pair_values_to_be_equal(mask_width, image_width)",
        [[63, 64]],
    ),
    ({"mask_binary": False}, "expect_column_values_to_be_in_set(mask_binary)", [False]),
    ({"mask_pixels": 0}, "expect_column_values_to_be_between(mask_pixels)", [0]),
    (
        {"mask_in_breast_fraction": 0.2},
        "expect_column_values_to_be_between(mask_in_breast_fraction)",
        [0.2],
    ),
    ({"mask_found": False}, "expect_column_values_to_be_in_set(mask_found)", [False]),
    ({"image_found": False}, "expect_column_values_to_be_in_set(image_found)", [False]),
]


@pytest.mark.parametrize(("change", "name", "examples"), PAIRING_BROKEN)
def test_pairing_problem_fails_its_case(change: dict, name: str, examples: list) -> None:
    df = pairing_table()
    for col, value in change.items():
        df.loc[0, col] = value
    report = validate_frame(df, "pairing")
    assert failed_names(report) == [name]
    assert list(by_name(report, name).unexpected_examples) == examples
    assert report.failing_case_ids() == ["p1"]


def test_in_breast_threshold_is_a_run_parameter() -> None:
    df = pairing_table()
    df.loc[2, "mask_in_breast_fraction"] = 0.3
    strict = validate_frame(df, "pairing")
    assert strict.failing_case_ids() == ["p3"]
    rule = by_name(strict, "expect_column_values_to_be_between(mask_in_breast_fraction)")
    assert rule.description == (
        "mask_in_breast_fraction must be between 0.5 and 1 (where lesion_id > 0)"
    )
    lenient = validate_frame(df, "pairing", parameters={"min_mask_in_breast_fraction": 0.25})
    assert lenient.success and lenient.parameters == {"min_mask_in_breast_fraction": 0.25}
    with pytest.raises(SuiteError, match="no parameter 'min_fraction'"):
        validate_frame(df, "pairing", parameters={"min_fraction": 0.1})


# ----------------------------------------------------------------------------------------------
# splits
# ----------------------------------------------------------------------------------------------


def test_splits_one_row_per_image_is_fine_a_patient_in_two_splits_is_not() -> None:
    df = pd.DataFrame(
        {
            "patient_id": ["pt-1", "pt-1", "pt-2", "pt-2", "pt-2", "pt-3"],
            "split": ["train", "train", "train", "test", "test", "val"],
            "case_id": ["c1", "c2", "c3", "c4", "c5", "c6"],
        }
    )
    ok = validate_frame(df[df["patient_id"] != "pt-2"], "splits")
    assert ok.success, ok.summary_text()

    report = validate_frame(df, "splits")
    assert failed_names(report) == ["expect_column_values_to_be_unique(patient_id)"]
    outcome = report.failed[0]
    assert outcome.description == "no patient may be in two splits"
    assert outcome.unexpected_count == 2  # (pt-2, train) and (pt-2, test) after de-duplication
    assert report.failing_ids() == ["pt-2"] and report.id_column == "patient_id"
    assert list(report.failing_rows(df)) == [2, 3, 4]
    assert report.evaluated_rows == 6 and report.evaluated_ids == 3
    with pytest.raises(ValueError, match="patient_id"):
        report.failing_case_ids()


def test_splits_unknown_split_name() -> None:
    df = pd.DataFrame({"patient_id": ["pt-1", "pt-2"], "split": ["train", "validation"]})
    report = validate_frame(df, "splits")
    assert failed_names(report) == ["expect_column_values_to_be_in_set(split)"]
    assert report.failing_ids() == ["pt-2"]


# ----------------------------------------------------------------------------------------------
# Data Docs, isolation, imports
# ----------------------------------------------------------------------------------------------


def test_data_docs_are_built_only_where_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    docs = tmp_path / "docs"
    df = lesion_table()
    df.loc[0, "density"] = 7
    report = validate_frame(df, "lesion_metadata", data_docs_dir=docs, run_name="unit-docs")
    index = Path(report.data_docs_index or "")
    assert index == docs / "index.html" and index.is_file()
    assert "lesion_metadata" in index.read_text(encoding="utf-8")
    pages = list((docs / "validations" / "lesion_metadata").rglob("*.html"))
    assert len(pages) == 1 and "unit-docs" in pages[0].as_posix()
    assert list(cwd.iterdir()) == []  # no gx/ folder or anything else in the working directory
    assert f"Data Docs: {index}" in report.summary_text()


def test_no_docs_unless_asked() -> None:
    assert validate_frame(lesion_table(), "lesion_metadata").data_docs_index is None


def test_importing_validation_does_not_import_gx_or_tensorflow() -> None:
    code = (
        "import sys, mammoseg.validation; "
        "bad = [m for m in ('great_expectations', 'tensorflow', 'keras', 'prefect') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], check=False, cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ----------------------------------------------------------------------------------------------
# bad input, bad suites, rule text
# ----------------------------------------------------------------------------------------------


def test_bad_tables_raise_clear_errors() -> None:
    with pytest.raises(ValidationInputError, match="DataFrame"):
        validate_frame([{"case_id": "x"}], "lesion_metadata")  # type: ignore[arg-type]
    dup = pd.DataFrame([[1, 2]], columns=["case_id", "case_id"])
    with pytest.raises(ValidationInputError, match="duplicate column names"):
        validate_frame(dup, "lesion_metadata")
    with pytest.raises(SuiteError, match="no suite file"):
        validate_frame(lesion_table(), "no_such_suite")


def _spec(*exps: dict, meta: dict | None = None) -> dict:
    return {"name": "t", "expectations": list(exps), "meta": meta or {}}


def test_bad_suites_are_refused_not_silently_shortened() -> None:
    # GX itself would only log these and drop the expectation
    unknown = _spec({"type": "expect_column_values_to_be_purple", "kwargs": {"column": "a"}})
    with pytest.raises(
        SuiteError, match=r"refused expectation #1 \(expect_column_values_to_be_purple\)"
    ):
        validate_frame(pd.DataFrame({"a": [1]}), SuiteSpec.from_dict(unknown))
    no_column = _spec({"type": "expect_column_values_to_not_be_null", "kwargs": {}})
    with pytest.raises(SuiteError, match="refused expectation #1 .*column"):
        validate_frame(pd.DataFrame({"a": [1]}), SuiteSpec.from_dict(no_column))
    with pytest.raises(SuiteError, match="no default"):
        SuiteSpec.from_dict(
            _spec(
                {
                    "type": "expect_column_values_to_be_between",
                    "kwargs": {"column": "a", "min_value": {"$PARAMETER": "lo"}},
                }
            )
        )
    with pytest.raises(SuiteError, match="unknown keys"):
        SuiteSpec.from_dict(_spec({"type": "expect_column_to_exist", "kwags": {"column": "a"}}))
    with pytest.raises(SuiteError, match="non-empty list"):
        SuiteSpec.from_dict({"name": "t", "expectations": []})


def test_suite_from_a_file_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.json"
    path.write_text(
        json.dumps(
            _spec(
                {
                    "type": "expect_column_values_to_be_between",
                    "kwargs": {"column": "a", "max_value": 3},
                },
                meta={"mammoseg": {"id_column": "k"}},
            )
        ),
        encoding="utf-8",
    )
    df = pd.DataFrame({"k": ["x", "y", "z"], "a": [1, 5, 3]})
    report = validate_frame(df, path)
    assert report.suite == "t" and report.failing_ids() == ["y"]


def test_describe_expectation() -> None:
    assert (
        describe_expectation(
            "expect_column_values_to_be_in_set", {"column": "laterality", "value_set": ["L", "R"]}
        )
        == "laterality must be one of L, R"
    )
    assert (
        describe_expectation(
            "expect_column_values_to_be_between",
            {"column": "density", "min_value": 1, "max_value": 4.0},
        )
        == "density must be between 1 and 4"
    )
    assert (
        describe_expectation(
            "expect_column_values_to_be_between", {"column": "mask_pixels", "min_value": 1}
        )
        == "mask_pixels must be ≥ 1"
    )
    assert (
        describe_expectation(
            "expect_column_values_to_be_in_set", {"column": "mask_found", "value_set": [True]}
        )
        == "mask_found must be true"
    )
    cond = {"type": "comparison", "column": {"name": "lesion_id"}, "operator": ">", "parameter": 0}
    assert (
        describe_expectation(
            "expect_column_values_to_not_be_null", {"column": "mask_uri", "row_condition": cond}
        )
        == "mask_uri must not be empty (where lesion_id > 0)"
    )
    assert describe_expectation(
        "expect_column_mean_to_be_between", {"column": "a", "min_value": 2}
    ) == ("expect_column_mean_to_be_between(column=a, min_value=2)")
