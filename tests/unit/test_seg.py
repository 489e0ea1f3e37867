"""DICOM SEG output: hand-made masks over synthetic DICOMs, read back with highdicom and
validated by pydicom; references, algorithm, patient module; hostile inputs."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest

from mammoseg.dicom import DicomError, phi_values, write_dicom
from mammoseg.seg import SegError, build_seg, read_seg, seg_series_uid

KEY = "seg-test-key"


def _source(h: int = 40, w: int = 30) -> bytes:
    px = (np.arange(h * w).reshape(h, w) % 4000).astype(np.uint16)
    return write_dicom(px, bits_stored=12, laterality="L", view="CC", patient_id="P0042", patient_name="DOE^JANE",
                       birth_date="19700101", study_date="20200101")


def _mask(h: int = 40, w: int = 30) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[5:10, 3:9] = True  # 30 px
    m[30:32, 20:29] = True  # 18 px
    return m


def test_seg_reads_back_with_the_same_pixels_and_references() -> None:
    src = _source()
    result = build_seg(src, _mask(), model_version="v7", pseudonym_key=KEY)
    back = read_seg(result.data)
    ds = pydicom.dcmread(io.BytesIO(src))
    assert np.array_equal(back.mask, _mask()) and result.lesion_pixels == 48
    assert back.referenced == ((str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)),)
    assert back.study_uid == str(ds.StudyInstanceUID) == result.study_uid
    assert back.segment_labels == ("lesion",) and back.algorithm == ("mammoseg", "v7")
    seg = pydicom.dcmread(io.BytesIO(result.data))
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert (seg.Rows, seg.Columns, int(seg.NumberOfFrames)) == (40, 30, 1)


def test_seg_passes_pydicom_validation_in_raise_mode() -> None:
    from pydicom import config
    from pydicom.dataset import validate_file_meta

    data = build_seg(_source(), _mask(), model_version="v7", pseudonym_key=KEY).data
    old = (config.settings.reading_validation_mode, config.settings.writing_validation_mode)
    config.settings.reading_validation_mode = config.RAISE
    config.settings.writing_validation_mode = config.RAISE
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        for elem in ds.iterall():  # every value is converted (and validated) on access
            _ = elem.value
        validate_file_meta(ds.file_meta, enforce_standard=True)
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
    finally:
        config.settings.reading_validation_mode, config.settings.writing_validation_mode = old
    assert out.getvalue() == data


def test_pseudonymous_by_default_copied_on_request() -> None:
    src = _source()
    pseudo = build_seg(src, _mask(), model_version="v7", pseudonym_key=KEY).data
    assert not any(v.encode() in pseudo for v in phi_values(src))
    ds = pydicom.dcmread(io.BytesIO(pseudo))
    assert ds.PatientID.startswith("pt-") and ds.PatientIdentityRemoved == "YES" and ds.PatientBirthDate == ""
    copied = pydicom.dcmread(io.BytesIO(build_seg(src, _mask(), model_version="v7", patient="copy").data))
    assert (copied.PatientID, str(copied.PatientName), copied.PatientBirthDate) == ("P0042", "DOE^JANE", "19700101")


def test_uids_depend_only_on_source_and_model_version() -> None:
    src = _source()
    a = build_seg(src, _mask(), model_version="v7", pseudonym_key=KEY)
    b = build_seg(src, np.zeros((40, 30), bool), model_version="v7", pseudonym_key=KEY)
    c = build_seg(src, _mask(), model_version="v8", pseudonym_key=KEY)
    assert (a.series_uid, a.sop_uid) == (b.series_uid, b.sop_uid) != (c.series_uid, c.sop_uid)
    sop = str(pydicom.dcmread(io.BytesIO(src)).SOPInstanceUID)
    assert a.series_uid == seg_series_uid(sop, "v7")


def test_an_empty_prediction_is_a_seg_too() -> None:
    back = read_seg(build_seg(_source(), np.zeros((40, 30), bool), model_version=None, pseudonym_key=KEY).data)
    assert back.mask.shape == (40, 30) and not back.mask.any() and back.algorithm == ("mammoseg", "unversioned")


@pytest.mark.parametrize(
    ("mask", "kwargs", "error", "message"),
    [
        (np.zeros((30, 40), bool), {}, SegError, "the mask is 30x40 but the source image is 40x30"),
        (np.zeros((2, 40, 30), bool), {}, SegError, "must be 2-D"),
        (np.full((40, 30), 0.7), {}, SegError, "must be boolean"),
        (np.full((40, 30), 7, np.uint8), {}, SegError, "must be boolean"),
        (np.zeros((40, 30), bool), {"pseudonym_key": None}, SegError, "needs the pseudonym key"),
        (np.zeros((40, 30), bool), {"patient": "keep"}, SegError, "'pseudonymous' or 'copy'"),
    ],
)
def test_hostile_masks_and_options_are_refused_in_one_line(mask, kwargs, error, message) -> None:
    args = {"model_version": "v", "pseudonym_key": KEY} | kwargs
    with pytest.raises(error) as info:
        build_seg(_source(), mask, **args)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_not_dicom_or_truncated_source_is_a_dicom_error() -> None:
    with pytest.raises(DicomError, match="not a DICOM file"):
        build_seg(b"\x89PNG\r\n" + b"\0" * 200, _mask(), model_version="v", pseudonym_key=KEY)
    with pytest.raises(DicomError, match="truncated"):
        build_seg(_source()[:200], _mask(), model_version="v", pseudonym_key=KEY)


def test_predict_writes_a_seg_equal_to_its_png_mask_and_none_for_a_png(tmp_path, monkeypatch) -> None:
    import cv2
    from typer.testing import CliRunner

    from mammoseg.cli import app
    from mammoseg.synth.pacs import mammogram, publish_spot_model, synthetic_study

    monkeypatch.setenv("MAMMOSEG_PSEUDONYM_KEY", KEY)
    model = publish_spot_model(str(tmp_path / "store"))
    src = tmp_path / "in"
    src.mkdir()
    dicom = synthetic_study(11)[0]
    (src / "a.dcm").write_bytes(dicom)
    cv2.imwrite(str(src / "b.png"), mammogram())
    res = CliRunner().invoke(app, ["predict", "--model", model, "--input", str(src), "--out", str(tmp_path / "out"), "--json"])
    assert res.exit_code == 0, res.output
    import json

    a, b = json.loads(res.stdout)["results"]
    png = cv2.imread(a["mask"], cv2.IMREAD_UNCHANGED) > 0
    assert png.any() and not png.all()
    back = read_seg((tmp_path / "out" / "a_seg.dcm").read_bytes())
    assert a["seg"].endswith("a_seg.dcm") and np.array_equal(back.mask, png)
    assert back.algorithm == ("mammoseg", "20250102T030405Z-5a0b1c2d")
    assert b["seg"] is None and not (tmp_path / "out" / "b_seg.dcm").exists()
    assert not any(v.encode() in (tmp_path / "out" / "a_seg.dcm").read_bytes() for v in phi_values(dicom))
