"""mammoseg.dicom: decode/encode round trips, the 16-bit mapping, errors, and PHI handling."""

from __future__ import annotations

import dataclasses
import io
import logging
import warnings

import numpy as np
import pytest

from mammoseg.dicom import (
    DicomError,
    SafeMeta,
    VoiLut,
    decode_dicom,
    phi_values,
    read_meta,
    read_series_description,
    write_dicom,
)

# Display value of a 12-bit stored value v is round(v * 65535 / 4095); e.g.
# 1000 -> 16003.66 -> 16004 and 1001 -> 16019.67 -> 16020.
RAMP12 = np.array([[0, 1000, 1001, 4095]], dtype=np.uint16)
RAMP12_DISPLAY = np.array([[0, 16004, 16020, 65535]], dtype=np.uint16)


def _image12(rows: int = 64, cols: int = 48) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 4096, (rows, cols)).astype(np.uint16)


def test_monochrome2_16bit_round_trip_is_identity() -> None:
    pixels = np.random.default_rng(0).integers(0, 65536, (64, 80)).astype(np.uint16)
    decoded = decode_dicom(write_dicom(pixels, bits_stored=16))
    assert decoded.pixels.dtype == np.uint16
    assert decoded.pixels.shape == (64, 80)
    np.testing.assert_array_equal(decoded.pixels, pixels)


def test_12bit_values_keep_16bit_precision() -> None:
    decoded = decode_dicom(write_dicom(RAMP12, bits_stored=12))
    np.testing.assert_array_equal(decoded.pixels, RAMP12_DISPLAY)
    assert decoded.pixels[0, 1] != decoded.pixels[0, 2]  # 1000 and 1001 stay distinct


def test_8bit_values_map_by_257() -> None:
    stored = np.array([[0, 1, 127, 128, 255]], dtype=np.uint8)
    decoded = decode_dicom(write_dicom(stored, bits_stored=8))
    np.testing.assert_array_equal(decoded.pixels, [[0, 257, 32639, 32896, 65535]])


def test_monochrome1_is_inverted_to_the_same_display_image() -> None:
    display = _image12()
    plain = decode_dicom(write_dicom(display, bits_stored=12)).pixels
    inverted = decode_dicom(
        write_dicom(4095 - display, photometric="MONOCHROME1", bits_stored=12)
    ).pixels
    np.testing.assert_array_equal(inverted, plain)
    one = decode_dicom(write_dicom(4095 - RAMP12, photometric="MONOCHROME1", bits_stored=12))
    np.testing.assert_array_equal(one.pixels, RAMP12_DISPLAY)
    assert one.meta.photometric == "MONOCHROME1"


def test_linear_rescale_does_not_change_the_display_image() -> None:
    display = _image12()
    plain = decode_dicom(write_dicom(display, bits_stored=12)).pixels
    rescaled = decode_dicom(write_dicom(display, bits_stored=12, rescale=(2.0, -1000.0))).pixels
    np.testing.assert_array_equal(rescaled, plain)


def test_window_is_applied_and_can_be_skipped() -> None:
    # LINEAR window c=2048, w=1024 on 12-bit data (DICOM PS3.3 C.11.2.1.2.1):
    # x <= 1536 -> 0; x > 2559 -> max; else ((x - 2047.5) / 1023 + 0.5) * 4095, then * 65535/4095.
    # 1537 -> 4.0029 -> 64.06 -> 64; 2048 -> 2049.5015 -> 32799.53 -> 32800.
    stored = np.array([[1000, 1536, 1537, 2048, 2559, 2560]], dtype=np.uint16)
    data = write_dicom(stored, bits_stored=12, window=(2048, 1024))
    np.testing.assert_array_equal(decode_dicom(data).pixels, [[0, 0, 64, 32800, 65535, 65535]])
    # without VOI: plain 12-bit mapping (1000 -> 16004, 1536 -> 24580.5.. etc.)
    expected = np.round(stored.astype(float) * 65535 / 4095).astype(np.uint16)
    np.testing.assert_array_equal(decode_dicom(data, apply_voi=False).pixels, expected)


def test_window_on_monochrome1_inverts_after_windowing() -> None:
    stored = np.array([[1536, 2048, 2560]], dtype=np.uint16)
    data = write_dicom(stored, photometric="MONOCHROME1", bits_stored=12, window=(2048, 1024))
    # windowed: [0, 32800, 65535] -> inverted
    np.testing.assert_array_equal(decode_dicom(data).pixels, [[65535, 65535 - 32800, 0]])


def test_voi_lut_sequence_is_applied() -> None:
    # table[v] = v // 2 with 12-bit output: 1000 -> 500 -> 500 * 65535 / 4095 = 8001.8 -> 8002;
    # 4095 -> 2047 -> 32759.498 -> 32759
    lut = VoiLut(table=(np.arange(4096) // 2).astype(np.uint16), first_mapped=0, bits=12)
    stored = np.array([[0, 1000, 4095]], dtype=np.uint16)
    data = write_dicom(stored, bits_stored=12, voi_lut=lut)
    np.testing.assert_array_equal(decode_dicom(data).pixels, [[0, 8002, 32759]])


def test_decode_does_not_share_memory_with_a_second_decode() -> None:
    data = write_dicom(_image12(), bits_stored=16)
    a = decode_dicom(data).pixels
    a[:] = 0
    assert decode_dicom(data).pixels.any()


def test_write_dicom_is_deterministic_and_valid_part10() -> None:
    pixels = _image12()
    one = write_dicom(pixels, bits_stored=12, patient_id="A", series_description="x")
    two = write_dicom(pixels, bits_stored=12, patient_id="A", series_description="x")
    assert one == two
    assert one[128:132] == b"DICM"
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(one))
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"  # Explicit VR Little Endian
    assert ds.SOPClassUID == ds.file_meta.MediaStorageSOPClassUID
    assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
    other = write_dicom((pixels + 1) % 4096, bits_stored=12, patient_id="A", series_description="x")
    assert pydicom.dcmread(io.BytesIO(other)).SOPInstanceUID != ds.SOPInstanceUID


@pytest.mark.parametrize(
    ("pixels", "kwargs", "reason"),
    [
        (np.array([[4096]], np.uint16), {"bits_stored": 12}, "do not fit"),
        (np.array([[-1]], np.int32), {}, "do not fit"),
        (np.zeros((2, 2, 2), np.uint16), {}, "2-D"),
        (np.zeros((2, 2), np.float32), {}, "integer"),
        (np.zeros((2, 2), np.uint16), {"photometric": "RGB"}, "MONOCHROME"),
    ],
)
def test_write_dicom_refuses_bad_input(pixels: np.ndarray, kwargs: dict, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        write_dicom(pixels, **kwargs)


def test_safe_meta_and_series_description() -> None:
    data = write_dicom(
        _image12(32, 24),
        bits_stored=12,
        series_description="ROI mask images",
        laterality="R",
        view="MLO",
        patient_name="DOE^JANE",
    )
    meta = decode_dicom(data).meta
    assert meta == SafeMeta(
        rows=32,
        columns=24,
        photometric="MONOCHROME2",
        bits_stored=12,
        series_description="ROI mask images",
        modality="MG",
        image_laterality="R",
        view_position="MLO",
    )
    assert read_meta(data) == meta
    assert read_series_description(data) == "ROI mask images"
    # only non-identifying fields exist on SafeMeta
    assert {f.name for f in dataclasses.fields(SafeMeta)} == {
        "rows",
        "columns",
        "photometric",
        "bits_stored",
        "series_description",
        "modality",
        "image_laterality",
        "view_position",
    }


def test_read_series_description_needs_no_pixel_data() -> None:
    data = write_dicom(_image12(8, 8), series_description="cropped images", with_pixel_data=False)
    assert read_series_description(data) == "cropped images"


def test_phi_values_lists_identifiers_which_never_reach_decoded_output() -> None:
    data = write_dicom(
        _image12(16, 16),
        patient_id="PID-4711",
        patient_name="DOE^JANE",
        birth_date="19530412",
        study_date="19970203",
    )
    assert phi_values(data) == {"PID-4711", "DOE^JANE", "DOE JANE", "19530412", "19970203"}
    decoded = decode_dicom(data)
    text = repr(decoded.meta)
    assert not any(v in text for v in phi_values(data))


def test_reading_emits_no_warning_or_log_quoting_header_values(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # invalid DA and an over-long PN: pydicom would warn and log, quoting them
        data = write_dicom(_image12(8, 8), birth_date="1953/04/12", patient_name="X" * 70)
        assert "1953/04/12" in phi_values(data)
        decode_dicom(data)
        read_meta(data)
    assert not caught
    assert "1953/04/12" not in caplog.text and "XXXXXXXX" not in caplog.text


def test_truncated_pixel_data_is_reported() -> None:
    data = write_dicom(_image12(), bits_stored=12)
    with pytest.raises(DicomError, match="truncated DICOM"):
        decode_dicom(data[: len(data) // 2])
    with pytest.raises(DicomError, match="truncated DICOM"):
        decode_dicom(data[:-1])


def test_truncated_header_is_reported() -> None:
    data = write_dicom(_image12(), bits_stored=12)
    for cut in (131, 140, 200):  # inside the marker / file meta group
        with pytest.raises(DicomError, match="truncated DICOM"):
            decode_dicom(data[:cut])


def test_missing_pixel_data_is_reported() -> None:
    data = write_dicom(_image12(8, 8), with_pixel_data=False)
    with pytest.raises(DicomError, match="no pixel data"):
        decode_dicom(data)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not a DICOM file"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 200, "not a DICOM file"),
        (b"hello world", "not a DICOM file"),
    ],
)
def test_non_dicom_bytes_are_refused(data: bytes, reason: str) -> None:
    with pytest.raises(DicomError, match=reason):
        decode_dicom(data)
    with pytest.raises(DicomError, match=reason):
        read_series_description(data)


def test_unknown_transfer_syntax_is_refused() -> None:
    data = write_dicom(np.zeros((8, 8), np.uint16))
    explicit_le = b"1.2.840.10008.1.2.1\x00"
    assert data.count(explicit_le) == 1
    with pytest.raises(DicomError, match="unsupported transfer syntax"):
        decode_dicom(data.replace(explicit_le, b"1.2.840.99999.9.9.9\x00"))


def test_compressed_transfer_syntax_without_decoder_is_refused() -> None:
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEG2000Lossless

    if get_decoder(JPEG2000Lossless).is_available:
        pytest.skip("a JPEG 2000 decoder is installed here")
    ds = pydicom.dcmread(io.BytesIO(write_dicom(np.zeros((8, 8), np.uint16))))
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([b"\x00" * 16])
    ds["PixelData"].VR = "OB"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    with pytest.raises(DicomError, match="unsupported transfer syntax JPEG 2000"):
        decode_dicom(buf.getvalue())
