"""mini-MIAS, INbreast and CDD-CESM adapters on tiny hand-made datasets in a LocalStore."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from mammoseg.adapters.cdd_cesm import (
    abnormality_from_text,
    load_cdd_cesm,
    parse_birads,
    parse_density,
)
from mammoseg.adapters.common import IMAGE_ABSENT, AdapterError, Reject, list_keys
from mammoseg.adapters.inbreast import (
    InbreastXmlError,
    load_inbreast,
    parse_inbreast_rois,
    render_inbreast_mask,
    roi_abnormality,
)
from mammoseg.adapters.mias import PgmHeaderError, load_mias, parse_pgm_size
from mammoseg.casetable import LESION_COLUMNS
from mammoseg.ids import case_pseudonym, patient_pseudonym
from mammoseg.settings import get_settings
from mammoseg.storage import LocalStore, open_store

KEY = "test-key"


def _rows(result, column: str = "case_id") -> dict:
    return {k: g for k, g in result.lesions.groupby(column)}


def _reasons(rejects: list[Reject]) -> dict[str, str]:
    return {r.source: r.reason for r in rejects}


# ============================================ mini-MIAS ===========================================

INFO = """\
        MiniMammographic Database (test copy)
Preamble text; the next line mentions mdb001 but does not start with it.
see mdb001 below
NOTES
3) Coordinate system origin is the bottom-left corner.
=====
mdb001 G CIRC B 10 20 5
mdb001 G CALC M 30 40 3
mdb002 F NORM{trailing_space}
mdb003 D CIRC B
mdb004 D CALC M *NOTE 3*
=====
""".format(trailing_space=" ")  # the real file has trailing spaces too
# the data lines are lines 7 (mdb001 CIRC) to 11 (mdb004)


def _pgm(width: int, height: int, pixels: bool = True) -> bytes:
    head = f"P5\n# made by a test\n{width} {height}\n255\n".encode()
    return head + (bytes(width * height) if pixels else b"")


@pytest.fixture()
def mias_store(tmp_path) -> LocalStore:
    store = LocalStore(tmp_path)
    store.write_bytes("mias/Info.txt", INFO.encode("ascii"))
    store.write_bytes("mias/mdb001.pgm", _pgm(64, 48))
    store.write_bytes("mias/mdb002.pgm", _pgm(64, 48))
    store.write_bytes("mias/mdb003.pgm", _pgm(64, 48, pixels=False))  # header only: never decoded
    store.write_bytes("mias/mdb005.pgm", _pgm(64, 48))  # no Info.txt line
    store.write_bytes("mias-old/mdb006.pgm", _pgm(64, 48))  # other folder: not this dataset
    return store


def test_mias_table(mias_store: LocalStore) -> None:
    result = load_mias(mias_store, pseudonym_key=KEY, prefix="mias")
    lesions = result.lesions
    assert list(lesions.columns) == list(LESION_COLUMNS)
    assert dict(lesions.dtypes.astype(str)) == LESION_COLUMNS
    case = {n: case_pseudonym(KEY, "mini-mias", f"mias/mdb00{n}.pgm") for n in (1, 2, 3)}
    pair1 = patient_pseudonym(KEY, "mini-mias", "001")
    pair2 = patient_pseudonym(KEY, "mini-mias", "002")
    got = (
        lesions[
            [
                "case_id",
                "lesion_id",
                "patient_id",
                "laterality",
                "abnormality_type",
                "pathology",
                "mask_geometry",
            ]
        ]
        .astype(object)
        .where(lesions.notna(), None)
    )
    assert got.values.tolist() == [
        # mdb001 (odd: right breast), two lesions; y flipped: 48 - 20 = 28, 48 - 40 = 8
        [
            case[1],
            1,
            pair1,
            "R",
            "mass",
            "BENIGN",
            json.dumps({"type": "circle", "cx": 10.0, "cy": 28.0, "r": 5.0}),
        ],
        [
            case[1],
            2,
            pair1,
            "R",
            "calcification",
            "MALIGNANT",
            json.dumps({"type": "circle", "cx": 30.0, "cy": 8.0, "r": 3.0}),
        ],
        # mdb002 (even: left breast of the same woman), normal
        [case[2], 0, pair1, "L", "normal", "NORMAL", None],
        # mdb003: a lesion without coordinates is kept without geometry
        [case[3], 1, pair2, "R", "mass", "BENIGN", None],
    ]
    assert set(lesions["source_dataset"]) == {"mini-mias"}
    assert set(lesions["view"]) == {"MLO"} and set(lesions["image_type"]) == {"film"}
    assert set(lesions["source_split"]) == {""}
    assert lesions["density"].isna().all() and lesions["mask_uri"].isna().all()
    assert lesions.loc[3, "lesion_detail"].endswith("no coordinates")
    assert lesions.loc[0, "lesion_detail"] == (
        "well-defined/circumscribed mass; background fatty-glandular"
    )
    assert lesions.loc[0, "image_uri"] == mias_store.uri("mias/mdb001.pgm")


def test_mias_rejects(mias_store: LocalStore) -> None:
    result = load_mias(mias_store, pseudonym_key=KEY, prefix="mias")
    assert result.rejects == [
        Reject("mias/Info.txt:line 11", f"{IMAGE_ABSENT}: the line's image is not in the store"),
        Reject(
            "mias/mdb005.pgm",
            "image has no line in Info.txt",
            case_pseudonym(KEY, "mini-mias", "mias/mdb005.pgm"),
        ),
    ]


def test_mias_on_s3_gives_the_same_table(mias_store: LocalStore, s3_bucket: str) -> None:
    """Same objects in a real S3-compatible server (moto over HTTP): same rows, s3:// URIs, and
    the folder boundary holds on S3 listings too (``mias-old/`` is not part of ``mias``)."""
    s3 = open_store(f"s3://{s3_bucket}/data", get_settings())
    for info in mias_store.list():
        s3.write_bytes(info.key, mias_store.read_bytes(info.key))
    local = load_mias(mias_store, pseudonym_key=KEY, prefix="mias")
    remote = load_mias(s3, pseudonym_key=KEY, prefix="mias")
    assert remote.lesions["image_uri"].tolist() == [
        f"s3://{s3_bucket}/data/mias/mdb00{n}.pgm" for n in (1, 1, 2, 3)
    ]
    cols = [c for c in LESION_COLUMNS if c != "image_uri"]
    pd.testing.assert_frame_equal(remote.lesions[cols], local.lesions[cols])
    assert remote.rejects == local.rejects


def test_mias_source_dataset_changes_ids(mias_store: LocalStore) -> None:
    real = load_mias(mias_store, pseudonym_key=KEY, prefix="mias")
    synth = load_mias(mias_store, pseudonym_key=KEY, prefix="mias", source_dataset="synthetic-mias")
    assert set(synth.lesions["source_dataset"]) == {"synthetic-mias"}
    assert not set(synth.lesions["case_id"]) & set(real.lesions["case_id"])
    assert not set(synth.lesions["patient_id"]) & set(real.lesions["patient_id"])


def _one_image_store(tmp_path, info_lines: str) -> LocalStore:
    store = LocalStore(tmp_path)
    store.write_bytes("Info.txt", ("header\n" + info_lines).encode())
    store.write_bytes("mdb001.pgm", _pgm(100, 80))
    return store


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("mdb001 X CIRC B 1 2 3", "unknown background tissue (expected F, G or D)"),
        ("mdb001 G BLOB B 1 2 3", "unknown abnormality class (expected one of CIRC"),
        ("mdb001 G CIRC Q 1 2 3", "unknown severity (expected B or M)"),
        ("mdb001 G CIRC", "has no severity"),
        ("mdb001 G CIRC B 1 2", "expected X Y RADIUS"),
        ("mdb001 G CIRC B 1 2 0", "radius must be positive"),
        ("mdb001 G CIRC B 1 y 3", "unreadable coordinates"),
        ("mdb001 G NORM B", "NORM line has 1 extra field(s)"),
    ],
)
def test_mias_bad_line_rejects_the_whole_image(tmp_path, line: str, reason: str) -> None:
    store = _one_image_store(tmp_path, f"mdb001 G CALC B 5 5 2\n{line}\n")
    result = load_mias(store, pseudonym_key=KEY)
    assert result.lesions.empty and list(result.lesions.columns) == list(LESION_COLUMNS)
    reasons = _reasons(result.rejects)
    assert reason in reasons["Info.txt:line 3"]
    assert "line 3 of the same image is malformed" in reasons["Info.txt:line 2"]
    assert not any("mdb001" in r.reason for r in result.rejects)  # the case is its pseudonym
    assert all(r.case_id == case_pseudonym(KEY, "mini-mias", "mdb001.pgm") for r in result.rejects)


def test_mias_centre_outside_the_image(tmp_path) -> None:
    store = _one_image_store(tmp_path, "mdb001 G CIRC B 50 40 5\nmdb001 G CIRC B 101 40 5\n")
    result = load_mias(store, pseudonym_key=KEY)
    assert result.lesions.empty
    reasons = _reasons(result.rejects)
    assert reasons["Info.txt:line 3"] == "centre lies outside the 100x80 image"
    assert "line 3 of the same image is invalid" in reasons["Info.txt:line 2"]


def test_mias_norm_with_a_lesion_line_is_contradictory(tmp_path) -> None:
    store = _one_image_store(tmp_path, "mdb001 G NORM\nmdb001 G CIRC B 50 40 5\n")
    result = load_mias(store, pseudonym_key=KEY)
    assert result.lesions.empty and len(result.rejects) == 2
    assert {r.reason for r in result.rejects} == {"the image has a NORM line and 1 other line(s)"}


def test_mias_bad_pgm_header_is_a_reject(tmp_path) -> None:
    store = _one_image_store(tmp_path, "mdb001 G NORM\n")
    store.write_bytes("mdb001.pgm", b"\x89PNG not a pgm")
    result = load_mias(store, pseudonym_key=KEY)
    assert result.lesions.empty
    assert result.rejects[0].reason == "image header: not a PGM image (no 'P5'/'P2' magic number)"


def test_mias_without_info_txt_is_a_dataset_error(tmp_path) -> None:
    store = LocalStore(tmp_path)
    store.write_bytes("mdb001.pgm", _pgm(8, 8))
    with pytest.raises(AdapterError, match="Info.txt"):
        load_mias(store, pseudonym_key=KEY)
    store.write_bytes("Info.txt", b"only a preamble\n")
    with pytest.raises(AdapterError, match="no data lines"):
        load_mias(store, pseudonym_key=KEY)


def test_pgm_header_parsing() -> None:
    assert parse_pgm_size(b"P5\n1024 1024\n255\n\x00\x00") == (1024, 1024)
    assert parse_pgm_size(b"P5 # c\n#more\n 256\t128 # w h\n65535\n") == (256, 128)
    assert parse_pgm_size(b"P2\n3 2\n9\n1 2 3\n") == (3, 2)
    with pytest.raises(PgmHeaderError, match="magic"):
        parse_pgm_size(b"P6\n3 2\n255\n")
    with pytest.raises(PgmHeaderError, match="truncated"):
        parse_pgm_size(b"P5\n1024 10")
    with pytest.raises(PgmHeaderError, match="non-integer"):
        parse_pgm_size(b"P5\n10 x 255\n")
    with pytest.raises(PgmHeaderError, match="out of range"):
        parse_pgm_size(b"P5\n0 10 255\n")


def test_list_keys_respects_the_folder_boundary(mias_store: LocalStore) -> None:
    assert "mias-old/mdb006.pgm" not in list_keys(mias_store, "mias")
    assert list_keys(mias_store, "mias-old") == ["mias-old/mdb006.pgm"]
    assert list_keys(mias_store, "", "mias-old") == ["mias-old/mdb006.pgm"]


# ============================================ INbreast ============================================

INBREAST_CSV = (
    "Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;Bi-Rads\r\n"
    "removed;removed;R;CC;201001;111;2;4b\r\n"
    "removed;removed;L;MLO;201001;222; ;1\r\n"
    "removed;removed;L;CC;201001;333;3;5\r\n"
    "removed;removed;R;MLO;201001;444;9;2\r\n"
    "removed;removed;R;CC;201001;666;1;2\r\n"
)

#: hand-written minimal OsiriX plist: one mass (a 10 px square), one single calcification and a
#: two-point cluster
XML_111 = b"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>Images</key>
  <array>
    <dict>
      <key>ImageIndex</key><integer>0</integer>
      <key>NumberOfROIs</key><integer>3</integer>
      <key>ROIs</key>
      <array>
        <dict>
          <key>Name</key><string>Mass</string>
          <key>NumberOfPoints</key><integer>4</integer>
          <key>Point_mm</key><array><string>(0.0, 0.0, 0.0)</string></array>
          <key>Point_px</key>
          <array>
            <string>(10.000000, 10.000000)</string>
            <string>(20.000000, 10.000000)</string>
            <string>(20.000000, 20.000000)</string>
            <string>(10.000000, 20.000000)</string>
          </array>
        </dict>
        <dict>
          <key>Name</key><string>Calcification</string>
          <key>NumberOfPoints</key><integer>1</integer>
          <key>Point_px</key><array><string>(30.500000, 40.000000)</string></array>
        </dict>
        <dict>
          <key>Name</key><string>Cluster</string>
          <key>NumberOfPoints</key><integer>2</integer>
          <key>Point_px</key>
          <array><string>(50.0, 50.0)</string><string>(60.0, 50.0)</string></array>
        </dict>
      </array>
    </dict>
  </array>
</dict>
</plist>
"""


@pytest.fixture()
def inbreast_store(tmp_path) -> LocalStore:
    store = LocalStore(tmp_path)
    store.write_bytes("inb/INbreast.csv", INBREAST_CSV.encode())
    store.write_bytes("inb/AllXML/111.xml", XML_111)
    store.write_bytes("inb/AllXML/777.xml", XML_111)  # File Name not in the CSV
    raw = "inb/sample/scans/raw_mammogram/"
    store.write_bytes(raw + "111_aaaa1111_MG_R_CC_ANON.png", b"png")
    store.write_bytes(raw + "222_aaaa1111_MG_L_MLO_ANON.png", b"png")
    store.write_bytes(raw + "444_bbbb2222_MG_R_MLO_ANON.png", b"png")
    store.write_bytes(raw + "555_cccc3333_MG_L_CC_ANON.png", b"png")  # not in the CSV
    store.write_bytes("inb/AllDICOMs/666_dddd4444_MG_L_CC_ANON.dcm", b"dcm")  # CSV says R
    # a filled mask with an image-like name: never taken for an image
    store.write_bytes("inb/sample/scans/raw_annotation/333_eeee_MG_L_CC_ANON.png", b"png")
    return store


def test_inbreast_table(inbreast_store: LocalStore) -> None:
    result = load_inbreast(inbreast_store, pseudonym_key=KEY, prefix="inb")
    lesions = result.lesions
    assert list(lesions.columns) == list(LESION_COLUMNS)
    key111 = "inb/sample/scans/raw_mammogram/111_aaaa1111_MG_R_CC_ANON.png"
    key222 = "inb/sample/scans/raw_mammogram/222_aaaa1111_MG_L_MLO_ANON.png"
    patient = patient_pseudonym(KEY, "inbreast", "aaaa1111")
    got = lesions[
        [
            "case_id",
            "lesion_id",
            "patient_id",
            "laterality",
            "view",
            "abnormality_type",
            "pathology",
            "density",
            "birads",
            "mask_geometry",
        ]
    ]
    got = got.astype(object).where(got.notna(), None).values.tolist()
    c111, c222 = (case_pseudonym(KEY, "inbreast", k) for k in (key111, key222))
    square = {"type": "polygon", "points": [[10.0, 10.0], [20.0, 10.0], [20.0, 20.0], [10.0, 20.0]]}
    assert got == [
        [c111, 1, patient, "R", "CC", "mass", "UNKNOWN", 2, 4, json.dumps(square)],
        # one point: circle of CALC_RADIUS_PX = 3 around it
        [
            c111,
            2,
            patient,
            "R",
            "CC",
            "calcification",
            "UNKNOWN",
            2,
            4,
            json.dumps({"type": "circle", "cx": 30.5, "cy": 40.0, "r": 3.0}),
        ],
        # two points 10 px apart: circle around their midpoint with half their distance
        [
            c111,
            3,
            patient,
            "R",
            "CC",
            "calcification",
            "UNKNOWN",
            2,
            4,
            json.dumps({"type": "circle", "cx": 55.0, "cy": 50.0, "r": 5.0}),
        ],
        # no XML, BI-RADS 1: a normal image; blank ACR → <NA>
        [c222, 0, patient, "L", "MLO", "normal", "NORMAL", None, 1, None],
    ]
    assert set(lesions["image_type"]) == {"FFDM"} and set(lesions["source_dataset"]) == {"inbreast"}
    assert lesions.loc[0, "image_uri"] == inbreast_store.uri(key111)
    assert lesions.loc[0, "lesion_detail"] == "ROI 'Mass', 4 point(s)"
    # only metadata was read: the CSV and the one XML of a listed image
    assert set(inbreast_store.read_log) == {"inb/INbreast.csv", "inb/AllXML/111.xml"}


def test_inbreast_rejects(inbreast_store: LocalStore) -> None:
    result = load_inbreast(inbreast_store, pseudonym_key=KEY, prefix="inb")
    reasons = _reasons(result.rejects)
    csv = "inb/INbreast.csv"
    assert reasons == {
        f"{csv}:row 3": f"{IMAGE_ABSENT}: no image for the row's File Name",
        f"{csv}:row 4": "'ACR' density is not 1-4",
        f"{csv}:row 5": "CSV column(s) 'Laterality' disagree with the image name",
        "inb/sample/scans/raw_mammogram/555_cccc3333_MG_L_CC_ANON.png": (
            "image not listed in INbreast.csv"
        ),
        "inb/AllXML/777.xml": "ROI file of a File Name that is not in INbreast.csv",
    }


def test_inbreast_unreadable_xml_rejects_the_image(inbreast_store: LocalStore) -> None:
    inbreast_store.write_bytes(
        "inb/AllXML/111.xml", XML_111.replace(b"(30.500000, 40.000000)", b"(x, 4)")
    )
    result = load_inbreast(inbreast_store, pseudonym_key=KEY, prefix="inb")
    assert set(result.lesions["lesion_id"]) == {0}  # only image 222 is left
    reasons = _reasons(result.rejects)
    assert reasons["inb/AllXML/111.xml"] == "ROI 1: unreadable point in Point_px; image left out whole"


def test_inbreast_file_name_listed_twice_rejects_every_row(inbreast_store: LocalStore) -> None:
    csv = INBREAST_CSV + "removed;removed;R;CC;201001;111;3;2\r\n"
    inbreast_store.write_bytes("inb/INbreast.csv", csv.encode())
    result = load_inbreast(inbreast_store, pseudonym_key=KEY, prefix="inb")
    key111 = "inb/sample/scans/raw_mammogram/111_aaaa1111_MG_R_CC_ANON.png"
    case = case_pseudonym(KEY, "inbreast", key111)
    assert case not in set(result.lesions["case_id"])
    twice = [r for r in result.rejects if "has 2 rows" in r.reason]
    assert [(r.source, r.case_id) for r in twice] == [
        ("inb/INbreast.csv:row 1", case),
        ("inb/INbreast.csv:row 6", case),
    ]


def test_inbreast_missing_csv_or_columns(tmp_path) -> None:
    store = LocalStore(tmp_path)
    with pytest.raises(AdapterError, match="INbreast.csv"):
        load_inbreast(store, pseudonym_key=KEY)
    store.write_bytes("INbreast.csv", b"File Name;ACR\r\n1;2\r\n")
    with pytest.raises(AdapterError, match="Laterality"):
        load_inbreast(store, pseudonym_key=KEY)


def test_parse_rois_and_render_mask() -> None:
    rois = parse_inbreast_rois(XML_111)
    assert [(r.index, r.name, len(r.points)) for r in rois] == [
        (0, "Mass", 4),
        (1, "Calcification", 1),
        (2, "Cluster", 2),
    ]
    mask = render_inbreast_mask(XML_111, (64, 80))
    assert mask.shape == (64, 80) and mask.dtype == bool
    # the square 10..20 with its outline, and nothing of the calcifications
    expected = np.zeros((64, 80), dtype=bool)
    expected[10:21, 10:21] = True
    assert np.array_equal(mask, expected)
    with_calcs = render_inbreast_mask(XML_111, (64, 80), types=("mass", "calcification"))
    assert with_calcs[40, 30] and with_calcs[40, 33] and not with_calcs[40, 34]  # r = 3 around 30.5
    assert with_calcs[50, 60] and not with_calcs[50, 61]  # r = 5 around x = 55
    assert with_calcs.sum() > expected.sum()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not xml", "not a readable plist"),
        (b'<?xml version="1.0"?><plist version="1.0"><array/></plist>', "no 'Images' array"),
        (XML_111.replace(b"<key>ROIs</key>", b"<key>Other</key>"), "has no 'ROIs' array"),
        (XML_111.replace(b"Point_px", b"Point_xx"), "ROI 0 has no Point_px"),
    ],
)
def test_parse_rois_refuses_bad_files(data: bytes, reason: str) -> None:
    with pytest.raises(InbreastXmlError, match=re.escape(reason)):
        parse_inbreast_rois(data)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("Mass", "mass"),
        ("Spiculated Region", "mass"),
        ("Calcification", "calcification"),
        ("Calcifications", "calcification"),
        ("Cluster", "calcification"),
        ("Distortion", "distortion"),
        ("Assymetry", "asymmetry"),
        ("Asymmetry", "asymmetry"),
        ("Unnamed", "other"),
        ("Point 1", "other"),
    ],
)
def test_roi_names(name: str, kind: str) -> None:
    assert roi_abnormality(name) == kind


# ============================================ CDD-CESM ============================================

CDD_HEADER = (
    '"Image_name","Patient_ID","Side","Type","Age","Breast density (ACR)","BIRADS","Findings",'
    '"View","Tags","Machine","Pathology Classification/ Follow up"\n'
)
CDD_ROWS = (
    '"P1_L_DM_MLO","1","L","DM","46","C","4$2","Architectural distortion ","MLO",'
    '"suspicious, distortion","1","Malignant"\n'
    '"P1_L_CM_MLO ","1","L","CESM","46","_","4","Heterogenous non mass enhancement ","MLO",'
    '"suspicious, non mass","1","Malignant"\n'
)


@pytest.fixture()
def cdd_store(tmp_path) -> LocalStore:
    store = LocalStore(tmp_path)
    store.write_bytes("cdd/Radiology-manual-annotations.csv", (CDD_HEADER + CDD_ROWS).encode())
    for name in ("P1_L_DM_MLO", "P1_L_CM_MLO"):
        store.write_bytes(f"cdd/images/{name}.jpg", b"jpg")
        store.write_bytes(f"cdd/masks/{name}.jpg", b"jpg")
    return store


def test_cdd_table(cdd_store: LocalStore) -> None:
    result = load_cdd_cesm(cdd_store, pseudonym_key=KEY, prefix="cdd")
    assert result.rejects == []
    lesions = result.lesions
    assert list(lesions.columns) == list(LESION_COLUMNS)
    got = lesions[
        [
            "case_id",
            "lesion_id",
            "patient_id",
            "laterality",
            "view",
            "image_type",
            "abnormality_type",
            "pathology",
            "density",
            "birads",
            "lesion_detail",
        ]
    ]
    got = got.astype(object).where(got.notna(), None).values.tolist()
    patient = patient_pseudonym(KEY, "cdd-cesm", "1")
    dm = case_pseudonym(KEY, "cdd-cesm", "cdd/images/P1_L_DM_MLO.jpg")
    cm = case_pseudonym(KEY, "cdd-cesm", "cdd/images/P1_L_CM_MLO.jpg")
    assert got == [
        [
            dm,
            1,
            patient,
            "L",
            "MLO",
            "DM",
            "distortion",
            "MALIGNANT",
            3,
            4,
            "Architectural distortion",
        ],
        [
            cm,
            1,
            patient,
            "L",
            "MLO",
            "CM",
            "other",
            "MALIGNANT",
            None,
            4,
            "Heterogenous non mass enhancement",
        ],
    ]
    assert lesions["mask_uri"].tolist() == [
        cdd_store.uri("cdd/masks/P1_L_DM_MLO.jpg"),
        cdd_store.uri("cdd/masks/P1_L_CM_MLO.jpg"),
    ]
    assert lesions["mask_geometry"].isna().all()
    assert set(cdd_store.read_log) == {"cdd/Radiology-manual-annotations.csv"}


def test_cdd_image_types_select(cdd_store: LocalStore) -> None:
    dm = load_cdd_cesm(cdd_store, pseudonym_key=KEY, prefix="cdd", image_types=("DM",))
    assert dm.lesions["image_type"].tolist() == ["DM"] and dm.rejects == []
    cm = load_cdd_cesm(cdd_store, pseudonym_key=KEY, prefix="cdd", image_types=("CM",))
    assert cm.lesions["image_type"].tolist() == ["CM"] and cm.rejects == []
    with pytest.raises(ValueError, match="image_types"):
        load_cdd_cesm(cdd_store, pseudonym_key=KEY, prefix="cdd", image_types=("CESM",))


def test_cdd_rejects(cdd_store: LocalStore) -> None:
    extra = (
        # image present, mask missing, malignant → reject
        '"P2_R_DM_CC","2","R","DM","50","B","5","Mass","CC","malignant mass","1","Malignant"\n'
        # normal image without mask → kept as a no-lesion image
        '"P3_R_DM_CC","3","R","DM","40","A","1","Normal","CC","normal","1","Normal"\n'
        # no image: held-back part
        '"P4_R_DM_CC","4","R","DM","40","D","1","Normal","CC","normal","1","Normal"\n'
        # the name says L, the Side column R
        '"P5_L_DM_CC","5","R","DM","40","B","2","Mass","CC","benign mass","1","Benign"\n'
        # bad density letter
        '"P6_R_DM_CC","6","R","DM","40","E","2","Mass","CC","benign mass","1","Benign"\n'
    )
    store = cdd_store
    store.write_bytes(
        "cdd/Radiology-manual-annotations.csv", (CDD_HEADER + CDD_ROWS + extra).encode()
    )
    for name in ("P2_R_DM_CC", "P3_R_DM_CC", "P5_L_DM_CC", "P6_R_DM_CC", "P7_L_DM_CC"):
        store.write_bytes(f"cdd/images/{name}.jpg", b"jpg")
    for name in ("P5_L_DM_CC", "P6_R_DM_CC", "P7_L_DM_CC", "P8_L_DM_CC"):
        store.write_bytes(f"cdd/masks/{name}.jpg", b"jpg")
    result = load_cdd_cesm(store, pseudonym_key=KEY, prefix="cdd")
    csv = "cdd/Radiology-manual-annotations.csv"
    assert _reasons(result.rejects) == {
        f"{csv}:row 3": "malignant image without a mask of its name in masks/",
        f"{csv}:row 5": f"{IMAGE_ABSENT}: no image of the row's Image_name in images/",
        f"{csv}:row 6": "column(s) 'Side' disagree with 'Image_name'",
        f"{csv}:row 7": "'Breast density (ACR)' is not A-D or '_'",
        "cdd/images/P7_L_DM_CC.jpg": "image without a row in Radiology-manual-annotations.csv",
        "cdd/masks/P7_L_DM_CC.jpg": "mask without a row in Radiology-manual-annotations.csv",
        "cdd/masks/P8_L_DM_CC.jpg": "mask without an image of the same name in images/",
    }
    normal = result.lesions[
        result.lesions["case_id"] == case_pseudonym(KEY, "cdd-cesm", "cdd/images/P3_R_DM_CC.jpg")
    ]
    assert normal[["lesion_id", "abnormality_type", "pathology", "density"]].values.tolist() == [
        [0, "normal", "NORMAL", 1]
    ]
    assert normal["mask_uri"].isna().all()
    assert len(result.lesions) == 3


def test_cdd_duplicate_rows_and_normal_with_mask(cdd_store: LocalStore) -> None:
    dup = '"P1_L_DM_MLO","1","L","DM","46","C","4","Other text","MLO","x","1","Malignant"\n'
    normal = '"P9_R_DM_CC","9","R","DM","40","B","1","Normal","CC","normal","1","Normal"\n'
    cdd_store.write_bytes(
        "cdd/Radiology-manual-annotations.csv", (CDD_HEADER + CDD_ROWS + dup + normal).encode()
    )
    cdd_store.write_bytes("cdd/images/P9_R_DM_CC.jpg", b"jpg")
    cdd_store.write_bytes("cdd/masks/P9_R_DM_CC.jpg", b"jpg")
    result = load_cdd_cesm(cdd_store, pseudonym_key=KEY, prefix="cdd")
    reasons = _reasons(result.rejects)
    csv = "cdd/Radiology-manual-annotations.csv"
    twice = "the row's Image_name has 2 rows in Radiology-manual-annotations.csv"
    assert reasons[f"{csv}:row 1"] == reasons[f"{csv}:row 3"] == twice
    assert reasons[f"{csv}:row 4"] == "image is classified Normal but has a mask in masks/"
    assert result.lesions["image_type"].tolist() == ["CM"]


def test_cdd_missing_csv(tmp_path) -> None:
    with pytest.raises(AdapterError, match="Radiology-manual-annotations.csv"):
        load_cdd_cesm(LocalStore(tmp_path), pseudonym_key=KEY)


@pytest.mark.parametrize(
    ("findings", "tags", "kind"),
    [
        ("High density mass with speculated margin", "malignant, mass, speculated", "mass"),
        ("Multiple heterogenously enhancing masses ", "malignant mass, multiple", "mass"),
        ("Heterogenous non mass enhancement ", "suspicious, non mass", "other"),
        ("Segmental non-mass enhancement", "", "other"),
        ("No mass or non mass enhancement", "normal", "other"),  # negated: 'no mass'
        ("Architectural distortion with overlying macrocalcification", "", "distortion"),
        ("Architectural distorton", "", "distortion"),
        ("Asymmetrical increased density ", "asymmetry", "asymmetry"),
        ("Focal assymetry", "", "asymmetry"),
        ("Benign macrocalcification", "benign macrocalcification", "calcification"),
        ("Diffuse edematous changes", "edema", "other"),
    ],
)
def test_cdd_abnormality_rule(findings: str, tags: str, kind: str) -> None:
    assert abnormality_from_text(findings, tags) == kind


def test_cdd_value_parsers() -> None:
    assert parse_birads("4") == 4
    assert parse_birads("2$4") == 4 and parse_birads("4$3") == 4
    assert parse_birads("") is None
    with pytest.raises(ValueError, match="BI-RADS"):
        parse_birads("4a")
    assert [parse_density(x) for x in ("A", "B", "C", "D", "_", "", "c")] == [
        1,
        2,
        3,
        4,
        None,
        None,
        3,
    ]
    with pytest.raises(ValueError, match="density"):
        parse_density("5")


# ================================= INbreast jpeg-export layout ====================================

EXPORT_CSV = (
    "Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;Bi-Rads\r\n"
    "removed;removed;R;CC;201001;1000;2;4c\r\n"  # export image + two mask files
    "removed;removed;R;MLO;201001;1020;2;4c\r\n"  # export image + one mask file, same exam
    "removed;removed;L;CC;201001;1040;2;2\r\n"  # original image only (patient hash hhhh)
    "removed;removed;L;CC;201001;1100;1;2\r\n"  # export image without mask, BI-RADS 2
    "removed;removed;L;MLO;201001;1110;1;1\r\n"  # export image without mask, BI-RADS 1
    "removed;removed;R;XX;201001;1200;1;2\r\n"  # bad view
    "removed;removed;L;MLO;201001;1250;3;2\r\n"  # export image without mask + original image
    "removed;removed;R;CC;201001;1300;1;2\r\n"  # listed twice
    "removed;removed;R;CC;201001;1300;1;2\r\n"
    "removed;removed;L;CC;201001;1400;1;2\r\n"  # no image anywhere
)


def _jpeg(shape: tuple[int, int] = (12, 16)) -> bytes:
    """A tiny 8-bit JPEG with three identical channels, like the export's images."""
    import cv2

    gray = np.full(shape, 90, dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", cv2.merge([gray, gray, gray]))
    assert ok
    return buf.tobytes()


def _mask_png(box: tuple[int, int, int, int], shape: tuple[int, int] = (12, 16)) -> bytes:
    """A 0/255 PNG with the half-open box ``(r0, r1, c0, c1)`` set."""
    import cv2

    mask = np.zeros(shape, dtype=np.uint8)
    r0, r1, c0, c1 = box
    mask[r0:r1, c0:c1] = 255
    ok, buf = cv2.imencode(".png", mask)
    assert ok
    return buf.tobytes()


@pytest.fixture()
def export_store(tmp_path) -> LocalStore:
    store = LocalStore(tmp_path)
    store.write_bytes("inb/INbreast.csv", EXPORT_CSV.encode())
    ex = "inb/jpeg-export/"
    for file_name in ("1000", "1020", "1100", "1110", "1200", "1250", "1300", "2000"):
        store.write_bytes(f"{ex}images/{file_name}.jpg", _jpeg())
    store.write_bytes(ex + "masks/1000_bw_Mass_1.png", _mask_png((1, 4, 1, 4)))
    store.write_bytes(ex + "masks/1000_bw_Mass_2.png", _mask_png((3, 6, 3, 8)))
    for file_name in ("1020", "1200", "1300", "2000"):
        store.write_bytes(f"{ex}masks/{file_name}_bw_Mass_1.png", _mask_png((5, 9, 5, 9)))
    # hostile files
    store.write_bytes(ex + "masks/3000_bw_Mass_1.png", _mask_png((0, 2, 0, 2)))  # no image
    store.write_bytes(ex + "images/notes.txt", b"hello")
    store.write_bytes(ex + "images/1000_copy.jpg", _jpeg())
    store.write_bytes(ex + "images/old/1500.jpg", _jpeg())
    store.write_bytes(ex + "images/\u0661\u0665.jpg", _jpeg())  # Arabic-Indic digits
    store.write_bytes(ex + "masks/1000_mass.png", _mask_png((0, 2, 0, 2)))
    # original layout next to the export
    raw = "inb/sample/scans/raw_mammogram/"
    store.write_bytes(raw + "1000_hhhh_MG_R_CC_ANON.png", b"png")  # the export's image wins
    store.write_bytes(raw + "1040_hhhh_MG_L_CC_ANON.png", b"png")
    store.write_bytes(raw + "1250_gggg_MG_L_MLO_ANON.png", b"png")  # wins: no export mask
    return store


def test_inbreast_export_table(export_store: LocalStore) -> None:
    from mammoseg.imageio import load_image, load_mask

    result = load_inbreast(export_store, pseudonym_key=KEY, prefix="inb")
    lesions = result.lesions
    assert list(lesions.columns) == list(LESION_COLUMNS)
    ex = "inb/jpeg-export/"
    case = {
        f: case_pseudonym(KEY, "inbreast", f"{ex}images/{f}.jpg")
        for f in ("1000", "1020", "1110", "2000")
    }
    case["1040"] = case_pseudonym(
        KEY, "inbreast", "inb/sample/scans/raw_mammogram/1040_hhhh_MG_L_CC_ANON.png"
    )
    case["1250"] = case_pseudonym(
        KEY, "inbreast", "inb/sample/scans/raw_mammogram/1250_gggg_MG_L_MLO_ANON.png"
    )
    hhhh = patient_pseudonym(KEY, "inbreast", "hhhh")
    got = lesions[
        [
            "case_id",
            "lesion_id",
            "patient_id",
            "laterality",
            "view",
            "abnormality_type",
            "pathology",
            "density",
            "birads",
        ]
    ]
    got = got.astype(object).where(got.notna(), None).values.tolist()
    assert got == [
        # two mask files → two mass lesions; the exam group 1000-1040 holds the original image of
        # patient hhhh, so the export's images of that exam get the same patient
        [case["1000"], 1, hhhh, "R", "CC", "mass", "UNKNOWN", 2, 4],
        [case["1000"], 2, hhhh, "R", "CC", "mass", "UNKNOWN", 2, 4],
        [case["1020"], 1, hhhh, "R", "MLO", "mass", "UNKNOWN", 2, 4],
        [case["1040"], 0, hhhh, "L", "CC", "normal", "UNKNOWN", 2, 2],
        # no mask file but BI-RADS 1: a normal image
        [
            case["1110"],
            0,
            patient_pseudonym(KEY, "inbreast", "exam-1100"),
            "L",
            "MLO",
            "normal",
            "NORMAL",
            1,
            1,
        ],
        # the original image wins when the export has no mask for the File Name
        [
            case["1250"],
            0,
            patient_pseudonym(KEY, "inbreast", "gggg"),
            "L",
            "MLO",
            "normal",
            "UNKNOWN",
            3,
            2,
        ],
        # not in the CSV: kept, side and view unknown (preprocessing reads them from the pixels)
        [
            case["2000"],
            1,
            patient_pseudonym(KEY, "inbreast", "exam-2000"),
            None,
            None,
            "mass",
            "UNKNOWN",
            None,
            None,
        ],
    ]
    masks = lesions.set_index(["case_id", "lesion_id"])["mask_uri"]
    assert masks[(case["1000"], 1)] == export_store.uri(ex + "masks/1000_bw_Mass_1.png")
    assert masks[(case["1000"], 2)] == export_store.uri(ex + "masks/1000_bw_Mass_2.png")
    assert lesions["mask_geometry"].isna().all()
    detail = lesions.set_index("case_id")["lesion_detail"]
    assert (
        detail[case["2000"]]
        == "export mask 2000_bw_Mass_1.png; File Name 2000 not in INbreast.csv: side and view unknown"
    )
    # the adapter reads the CSV and nothing else (no pixels)
    assert set(export_store.read_log) == {"inb/INbreast.csv"}
    # the masks of 1000 load with the pipeline's decoder; their union is the lesion mask
    keys = [
        export_store.key_from_uri(u)
        for u in lesions.loc[lesions["case_id"] == case["1000"], "mask_uri"]
    ]
    union = np.logical_or.reduce([load_mask(export_store.read_bytes(k), k) for k in keys])
    image = load_image(export_store.read_bytes(ex + "images/1000.jpg"), "1000.jpg")
    assert union.shape == image.shape == (12, 16) and image.dtype == np.uint8
    assert int(union.sum()) == 9 + 15 - 1  # two boxes overlapping in one pixel


def test_inbreast_export_rejects(export_store: LocalStore) -> None:
    from mammoseg.adapters.common import OUT_OF_SCOPE

    result = load_inbreast(export_store, pseudonym_key=KEY, prefix="inb")
    reasons = _reasons(result.rejects)
    csv, ex, raw = "inb/INbreast.csv", "inb/jpeg-export/", "inb/sample/scans/raw_mammogram/"
    assert reasons == {
        ex + "images/notes.txt": "not an export image name (images/<File Name>.jpg)",
        ex + "images/1000_copy.jpg": "not an export image name (images/<File Name>.jpg)",
        ex + "images/old/1500.jpg": "not an export image name (images/<File Name>.jpg)",
        ex + "images/\u0661\u0665.jpg": "not an export image name (images/<File Name>.jpg)",
        ex + "masks/1000_mass.png": "not an export mask name (masks/<File Name>_bw_Mass_<k>.png)",
        ex + "masks/3000_bw_Mass_1.png": "mask without an image of its File Name in images/",
        raw + "1000_hhhh_MG_R_CC_ANON.png": (
            f"{OUT_OF_SCOPE}: its File Name is read from the export's image and masks"
        ),
        ex + "images/1250.jpg": (
            f"{OUT_OF_SCOPE}: export image without mask file; its File Name is read from the "
            "original layout"
        ),
        f"{csv}:row 4": (
            "export image without mask file (masks/<File Name>_bw_Mass_<k>.png) and BI-RADS 2: the "
            "export holds mass images only, a lost mask cannot be told from a normal image"
        ),
        f"{csv}:row 6": "unknown 'View' (expected one of CC, MLO, ML, LM, XCCL, FB)",
        f"{csv}:row 8": "the row's File Name has 2 rows in INbreast.csv",
        f"{csv}:row 9": "the row's File Name has 2 rows in INbreast.csv",
        f"{csv}:row 10": f"{IMAGE_ABSENT}: no image for the row's File Name",
    }
    # an image's rejects carry its case id; the reasons name no patient hash
    by_source = {r.source: r for r in result.rejects}
    assert by_source[f"{csv}:row 6"].case_id == case_pseudonym(
        KEY, "inbreast", ex + "images/1200.jpg"
    )
    assert not any("hhhh" in r.reason or "gggg" in r.reason for r in result.rejects)
    # ... and no File Name (object keys stay in the source, for the operator)
    assert not any(re.search(r"\d{4}", r.reason) for r in result.rejects)
    # the flows skip, not quarantine, the images left out on purpose
    skipped = [
        r.source for r in result.rejects if r.reason.startswith((IMAGE_ABSENT, OUT_OF_SCOPE))
    ]
    assert sorted(skipped) == sorted(
        [
            raw + "1000_hhhh_MG_R_CC_ANON.png",
            ex + "images/1250.jpg",
            f"{csv}:row 10",
        ]
    )


def test_inbreast_export_folder_as_root_without_csv(export_store: LocalStore) -> None:
    result = load_inbreast(export_store, pseudonym_key=KEY, prefix="inb/jpeg-export")
    lesions = result.lesions
    files = sorted({u.rsplit("/", 1)[-1] for u in lesions["image_uri"]})
    # 1100, 1110 and 1250 have no mask and no CSV to say BI-RADS 1: rejected
    assert files == ["1000.jpg", "1020.jpg", "1200.jpg", "1300.jpg", "2000.jpg"]
    assert lesions[["laterality", "view", "density", "birads"]].isna().all().all()
    reasons = _reasons(result.rejects)
    assert reasons["inb/jpeg-export/images/1110.jpg"].startswith(
        "export image without mask file (masks/<File Name>_bw_Mass_<k>.png) and no BI-RADS"
    )
    # exam groups over the images found: 1000 and 1020 are one patient, 1200 and 1300 are not
    patients = lesions.groupby(lesions["image_uri"].str.rsplit("/", n=1).str[-1])[
        "patient_id"
    ].first()
    assert (
        patients["1000.jpg"]
        == patients["1020.jpg"]
        == patient_pseudonym(KEY, "inbreast", "exam-1000")
    )
    assert patients["1200.jpg"] != patients["1300.jpg"]


def test_inbreast_export_needs_the_csv_only_without_export(export_store: LocalStore) -> None:
    export_store.delete("inb/INbreast.csv")
    with pytest.raises(AdapterError, match="INbreast.csv"):
        load_inbreast(export_store, pseudonym_key=KEY, prefix="inb", export_dirs=())
    result = load_inbreast(export_store, pseudonym_key=KEY, prefix="inb")
    assert result.lesions["case_id"].nunique() == 5
    assert _reasons(result.rejects)[
        "inb/sample/scans/raw_mammogram/1040_hhhh_MG_L_CC_ANON.png"
    ] == ("image not listed in INbreast.csv (absent)")


def test_exam_groups() -> None:
    from mammoseg.adapters.inbreast import exam_groups

    assert exam_groups(["161", "100", "130", "5", "x", "130"]) == {
        "5": "5",
        "100": "100",
        "130": "100",
        "161": "161",
    }
    assert exam_groups(["100", "131"], gap=31) == {"100": "100", "131": "100"}
    # names map as written; non-ASCII digits are not File Names
    assert exam_groups(["0099", "120", "\u0661\u0662"]) == {"0099": "0099", "120": "0099"}
    assert exam_groups([]) == {}


# ============================ no identifiers in reject reasons ====================================

NAME, PID = "DOE^JANE", "PID-4711"


def _assert_no_identifiers(rejects: list[Reject], *values: str) -> None:
    """No reject quotes any of ``values``: not its reason, not its source (which locates CSV
    rows by number), not its case id."""
    assert rejects
    for r in rejects:
        text = f"{r.source} | {r.reason} | {r.case_id}"
        leaked = [v for v in values if v in text]
        assert not leaked, f"{leaked} in {text}"


def test_cdd_rejects_quote_no_cell(tmp_path) -> None:
    rows = (
        f'"{NAME}","1","L","DM","46","C","4","Mass","MLO","x","1","Malignant"\n'  # bad Image_name
        f'"P2_L_DM_CC","2","{NAME}","DM","46","C","4","Mass","CC","x","1","Malignant"\n'  # Side
        f'"P3_L_DM_CC","3","L","DM","46","{NAME}","4","Mass","CC","x","1","Malignant"\n'  # density
        f'"P4_L_DM_CC","4","L","DM","46","C","{PID}","Mass","CC","x","1","Malignant"\n'  # BI-RADS
        f'"P5_L_DM_CC","5","L","DM","46","C","4","Mass","CC","x","1","{NAME}"\n'  # pathology
        f'"P6_L_DM_CC","{PID}","L","DM","46","C","4","Mass","CC","x","1","Malignant"\n'  # patient
    )
    store = LocalStore(tmp_path)
    store.write_bytes("Radiology-manual-annotations.csv", (CDD_HEADER + rows).encode())
    for n in range(2, 7):
        store.write_bytes(f"images/P{n}_L_DM_CC.jpg", b"jpg")
        store.write_bytes(f"masks/P{n}_L_DM_CC.jpg", b"jpg")
    result = load_cdd_cesm(store, pseudonym_key=KEY)
    assert result.lesions.empty and len(result.rejects) == 6
    _assert_no_identifiers(result.rejects, NAME, "DOE", PID, "4711")
    reasons = [r.reason for r in result.rejects]
    assert reasons[1] == "column(s) 'Side' disagree with 'Image_name'"
    assert reasons[5] == "column(s) 'Patient_ID' disagree with 'Image_name'"


def test_inbreast_rejects_quote_no_cell(tmp_path) -> None:
    csv = (
        "Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;Bi-Rads\r\n"
        f"removed;removed;R;CC;201001;{NAME};2;4\r\n"
        f"removed;removed;{NAME};CC;201001;101;2;4\r\n"
        f"removed;removed;R;{PID};201001;102;2;4\r\n"
        f"removed;removed;R;CC;201001;103;{NAME};4\r\n"
        f"removed;removed;R;CC;201001;104;2;{PID}\r\n"
        "removed;removed;R;CC;201001;105;2;4\r\n"
        "removed;removed;R;CC;201001;106;2;4\r\n"
    )
    store = LocalStore(tmp_path)
    store.write_bytes("INbreast.csv", csv.encode())
    for n in range(101, 107):
        store.write_bytes(f"AllDICOMs/{n}_abcd{n}_MG_R_CC_ANON.dcm", b"dcm")
    # ROI files whose ROI name or points hold identifiers
    named = XML_111.replace(b">Mass<", f">{NAME}<".encode()).replace(b"Point_px", b"Point_xx", 1)
    store.write_bytes("AllXML/105.xml", named)
    store.write_bytes("AllXML/106.xml", XML_111.replace(b"(30.500000, 40.000000)", PID.encode()))
    result = load_inbreast(store, pseudonym_key=KEY)
    assert result.lesions.empty and len(result.rejects) == 7
    _assert_no_identifiers(result.rejects[:5], NAME, "DOE", PID, "4711", "abcd")
    # XML rejects are filed under the XML's key (the source index); their reasons quote nothing
    assert [r.reason for r in result.rejects[5:]] == [
        "ROI 0 has no Point_px; image left out whole",
        "ROI 1: unreadable point in Point_px; image left out whole",
    ]
    assert not any(re.search(r"\b10[1-6]\b", r.reason) for r in result.rejects)  # no File Name


def test_mias_rejects_quote_no_field(tmp_path) -> None:
    store = _one_image_store(
        tmp_path, f"mdb001 {NAME} CIRC B 1 2 3\nmdb002 G {PID} B 1 2 3\nmdb003 G CIRC {NAME}\n"
    )
    store.write_bytes("mdb002.pgm", _pgm(100, 80))
    store.write_bytes("mdb003.pgm", _pgm(100, 80))
    result = load_mias(store, pseudonym_key=KEY)
    assert result.lesions.empty and len(result.rejects) == 3
    _assert_no_identifiers(result.rejects, NAME, "DOE", PID, "4711")
    assert not any("mdb00" in r.reason for r in result.rejects)  # the image is its pseudonym
