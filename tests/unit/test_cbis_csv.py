"""CBIS-DDSM CSV parsing: the real files' quirks on hand-made rows."""

from __future__ import annotations

from mammoseg.adapters.cbis_ddsm import classify, read_csv_bytes

MASS_HEADER = (
    "patient_id,breast_density,left or right breast,image view,abnormality id,abnormality type,"
    "mass shape,mass margins,assessment,pathology,subtlety,image file path,cropped image file path,"
    "ROI mask file path\n"
)
CALC_HEADER = MASS_HEADER.replace("breast_density", "breast density").replace(
    "mass shape,mass margins", "calc type,calc distribution"
)


def test_mass_row_with_quoted_newline_path_and_multivalued_shape() -> None:
    csv = MASS_HEADER + (
        'P_00001,3,LEFT,CC,1,mass,IRREGULAR-ARCHITECTURAL_DISTORTION,SPICULATED,4,MALIGNANT,4,'
        'Mass-Training_P_00001_LEFT_CC/1.2/1.3/000000.dcm,'
        '"Mass-Training_P_00001_LEFT_CC_1/1.2/1.4/000000.dcm\n",'
        '"Mass-Training_P_00001_LEFT_CC_1/1.2/1.4/000001.dcm\n"\n'
    )
    rows, rejects = read_csv_bytes(csv.encode(), "mass_case_description_train_set.csv")
    assert rejects == []
    (row,) = rows
    assert (row.laterality, row.view, row.abnormality_id, row.density, row.birads, row.subtlety) == (
        "L", "CC", 1, 3, 4, 4,
    )
    assert row.roi_keys == (
        "Mass-Training_P_00001_LEFT_CC_1/1.2/1.4/000001.dcm",
        "Mass-Training_P_00001_LEFT_CC_1/1.2/1.4/000000.dcm",
    )  # newline stripped, both lesion-folder files kept: which is the mask is decided by content
    assert row.image_folder == "Mass-Training_P_00001_LEFT_CC"
    assert row.lesion_folder == "Mass-Training_P_00001_LEFT_CC_1"
    assert row.detail == "shape=IRREGULAR-ARCHITECTURAL_DISTORTION; margins=SPICULATED"
    assert row.split == "train" and row.abnormality_type == "mass"


def test_calc_file_density_column_name_and_na_values() -> None:
    csv = CALC_HEADER + (
        "P_00005,2,RIGHT,MLO,1,calcification,N/A,N/A,3,BENIGN_WITHOUT_CALLBACK,3,"
        "Calc-Test_P_00005_RIGHT_MLO/1/2/000000.dcm,Calc-Test_P_00005_RIGHT_MLO_1/1/3/000001.dcm,"
        "Calc-Test_P_00005_RIGHT_MLO_1/1/3/000000.dcm\n"
    )
    rows, rejects = read_csv_bytes(csv.encode(), "calc_case_description_test_set.csv")
    assert rejects == []
    assert rows[0].density == 2 and rows[0].pathology == "BENIGN_WITHOUT_CALLBACK"
    assert rows[0].detail == "calc type=N/A; distribution=N/A"
    assert rows[0].split == "test" and rows[0].abnormality_type == "calcification"


def test_bad_rows_become_readable_rejects_and_the_rest_is_kept() -> None:
    good = (
        "P_00001,3,LEFT,CC,1,mass,OVAL,CIRCUMSCRIBED,3,BENIGN,3,"
        "M_P_00001_LEFT_CC/a/b/000000.dcm,M_P_00001_LEFT_CC_1/a/c/000000.dcm,M_P_00001_LEFT_CC_1/a/c/000001.dcm\n"
    )
    csv = MASS_HEADER + good + (
        "P_00002,3,LEFT,CC,one,mass,OVAL,CIRCUMSCRIBED,3,BENIGN,3,x/a/000000.dcm,x_1/b/000000.dcm,x_1/b/000001.dcm\n"
        "P_00003,3,LEFT,CC,1,mass,OVAL,CIRCUMSCRIBED,3,BENIGN,3,../../etc/passwd,y_1/b/000000.dcm,y_1/b/000001.dcm\n"
        "P_00004,3,LEFT,CC,1,mass,OVAL,CIRCUMSCRIBED,3,,3,z/a/000000.dcm,z_1/b/000000.dcm,z_1/b/000001.dcm\n"
    )
    rows, rejects = read_csv_bytes(csv.encode(), "mass_case_description_train_set.csv")
    assert [r.source_patient for r in rows] == ["P_00001"]
    reasons = {r.source: r.reason for r in rejects}
    assert reasons["mass_case_description_train_set.csv row 2"] == "'abnormality id' is not an integer"
    assert reasons["mass_case_description_train_set.csv row 3"] == (
        "path escapes the dataset (column 'image file path': it has a '.' or '..' segment)"
    )
    assert reasons["mass_case_description_train_set.csv row 4"] == "empty required cell 'pathology'"
    # reasons say which column is wrong and how, never what the cell holds
    assert not any("one" in r or "passwd" in r for r in reasons.values())


def test_reasons_quote_no_cell_value() -> None:
    """A name or patient id in a bad column (as a mis-exported CSV would have) never reaches a
    reject: not its reason, not its source."""
    name, pid = "DOE^JANE", "PID-4711"
    csv = MASS_HEADER + (
        f"{name},3,LEFT,CC,1,mass,OVAL,CIRCUMSCRIBED,3,BENIGN,3,a/b/000000.dcm,a_1/b/000000.dcm,a_1/b/000001.dcm\n"
        f"P_00002,{name},LEFT,CC,1,mass,OVAL,CIRCUMSCRIBED,3,BENIGN,3,b/b/000000.dcm,b_1/b/000000.dcm,b_1/b/000001.dcm\n"
        f"P_00003,3,LEFT,CC,{pid},mass,OVAL,CIRCUMSCRIBED,3,BENIGN,3,c/b/000000.dcm,c_1/b/000000.dcm,c_1/b/000001.dcm\n"
        f"P_00004,3,LEFT,CC,1,mass,OVAL,CIRCUMSCRIBED,{pid},BENIGN,3,d/b/000000.dcm,d_1/b/000000.dcm,d_1/b/000001.dcm\n"
        f"P_00005,3,LEFT,CC,1,mass,OVAL,CIRCUMSCRIBED,3,BENIGN,3,/{name}/000000.dcm,e_1/b/000000.dcm,e_1/b/000001.dcm\n"
        f"P_00006,3,LEFT,CC,1,mass,OVAL,CIRCUMSCRIBED,3,BENIGN,3,f/../{pid}.dcm,f_1/b/000000.dcm,f_1/b/000001.dcm\n"
    )
    rows, rejects = read_csv_bytes(csv.encode(), "mass_case_description_train_set.csv")
    assert rows == [] and len(rejects) == 6
    assert [r.reason for r in rejects] == [
        "'patient_id' is not of the form P_00000",
        "'breast density' is not a number",
        "'abnormality id' is not an integer",
        "'assessment' is not a number",
        (
            "path escapes the dataset (column 'image file path': it is an absolute path; "
            "it has an empty segment ('//'))"
        ),
        "path escapes the dataset (column 'image file path': it has a '.' or '..' segment)",
    ]
    for r in rejects:
        text = f"{r.source} {r.reason} {r.case_id}"
        assert name not in text and "DOE" not in text and pid not in text and "4711" not in text


def test_out_of_range_values_are_kept_for_the_validation_suite() -> None:
    """Range checks are GX's job (the real CSVs hold density 0 and subtlety 0)."""
    csv = MASS_HEADER + (
        "P_00710,0,LEFT,CC,1,mass,OVAL,CIRCUMSCRIBED,3,BENIGN,0,"
        "a/b/c/000000.dcm,a_1/b/c/000000.dcm,a_1/b/c/000001.dcm\n"
    )
    rows, rejects = read_csv_bytes(csv.encode(), "mass_case_description_train_set.csv")
    assert rejects == [] and rows[0].density == 0 and rows[0].subtlety == 0


def test_missing_columns_and_unknown_file_names_are_rejected_whole() -> None:
    rows, rejects = read_csv_bytes(b"patient_id,foo\nP_00001,1\n", "mass_case_description_train_set.csv")
    assert rows == [] and "missing columns" in rejects[0].reason
    rows, rejects = read_csv_bytes(MASS_HEADER.encode(), "other.csv")
    assert rows == [] and "not one of the four" in rejects[0].reason


def test_series_descriptions_classify() -> None:
    assert classify("ROI mask images") == "mask"
    assert classify("cropped images") == "crop"
    assert classify("full mammogram images") == "full"
    assert classify("") == "unknown"
