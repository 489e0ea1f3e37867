"""mammoseg.imageio: format detection, decoding, mask thresholds, PNG encoding, errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mammoseg.dicom import DicomError, decode_dicom, write_dicom
from mammoseg.imageio import (
    ImageDecodeError,
    encode_png8,
    encode_png16,
    load_image,
    load_mask,
    sniff_format,
)


def _png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def _jpeg(img: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def _disc(size: int = 64, radius: int = 16) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (yy - size // 2) ** 2 + (xx - size // 2) ** 2 <= radius**2


def test_png16_round_trip_keeps_16_bits() -> None:
    img = np.random.default_rng(0).integers(0, 65536, (64, 96)).astype(np.uint16)
    data = encode_png16(img)
    out = load_image(data, "x.png")
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, img)


def test_png8_round_trip_and_bool_masks_become_0_255() -> None:
    img = np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8)
    np.testing.assert_array_equal(load_image(encode_png8(img), "x.png"), img)
    mask = _disc()
    out = load_image(encode_png8(mask), "m.png")
    assert set(np.unique(out)) == {0, 255}
    np.testing.assert_array_equal(out == 255, mask)


def test_encoders_refuse_lossy_or_odd_input() -> None:
    with pytest.raises(ValueError, match="uint16"):
        encode_png16(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        encode_png8(np.zeros((4, 4), np.uint16))
    with pytest.raises(ValueError, match="2-D"):
        encode_png16(np.zeros((4, 4, 3), np.uint16))


def test_pgm_p5_8bit_hand_made() -> None:
    pixels = bytes([0, 10, 200, 255, 1, 2])
    data = b"P5\n3 2\n255\n" + pixels
    out = load_image(data, "mdb001.pgm")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[0, 10, 200], [255, 1, 2]])


def test_colour_png_becomes_grayscale_with_bt601_weights() -> None:
    bgr = np.zeros((4, 4, 3), np.uint8)
    bgr[0, 0] = (0, 0, 255)  # pure red   -> 0.299 * 255 = 76.2 -> 76
    bgr[0, 1] = (0, 255, 0)  # pure green -> 0.587 * 255 = 149.7 -> 150
    bgr[0, 2] = (255, 0, 0)  # pure blue  -> 0.114 * 255 = 29.1 -> 29
    out = load_image(_png(bgr), "c.png")
    assert out.shape == (4, 4)
    assert out[0, :3].tolist() == [76, 150, 29]


def test_jpeg_decodes_to_uint8() -> None:
    img = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (64, 1))
    out = load_image(_jpeg(img), "x.jpg")
    assert out.dtype == np.uint8 and out.shape == (64, 64)
    assert np.abs(out.astype(int) - img.astype(int)).max() < 12


def test_dicom_is_detected_by_magic_or_extension_and_decoded() -> None:
    stored = np.random.default_rng(2).integers(0, 4096, (32, 32)).astype(np.uint16)
    data = write_dicom(stored, bits_stored=12)
    expected = decode_dicom(data).pixels
    for name in ("000000.dcm", "no_extension", "misleading.png"):
        out = load_image(data, name)
        assert out.dtype == np.uint16
        np.testing.assert_array_equal(out, expected)


def test_sniff_format_prefers_magic_over_extension() -> None:
    png = _png(np.zeros((2, 2), np.uint8))
    assert sniff_format(png, "a.jpg") == "png"
    assert sniff_format(b"P5\n1 1\n255\n\x00", "a.bin") == "pnm"
    assert sniff_format(b"garbage", "a.dcm") == "dicom"
    assert sniff_format(b"garbage", "a.txt") == "unknown"


@pytest.mark.parametrize(
    ("data", "name", "reason"),
    [
        (b"", "x.png", "empty file"),
        (b"not an image at all", "x.bin", "unrecognised image format"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "x.png", "truncated PNG"),
    ],
)
def test_undecodable_bytes_raise_readable_errors(data: bytes, name: str, reason: str) -> None:
    with pytest.raises(ImageDecodeError, match=reason):
        load_image(data, name)


def test_truncated_png_and_jpeg_are_refused() -> None:
    img = np.random.default_rng(3).integers(0, 255, (64, 64)).astype(np.uint8)
    png, jpg = _png(img), _jpeg(img)
    with pytest.raises(ImageDecodeError, match="truncated PNG"):
        load_image(png[: len(png) // 2], "x.png")
    with pytest.raises(ImageDecodeError, match="truncated JPEG"):
        load_image(jpg[: len(jpg) - 40], "x.jpg")


def test_dicom_errors_are_both_image_and_dicom_errors() -> None:
    data = write_dicom(np.zeros((32, 32), np.uint16))
    with pytest.raises(ImageDecodeError, match="truncated DICOM") as info:
        load_image(data[: len(data) // 2], "x.dcm")
    assert isinstance(info.value, DicomError)
    with pytest.raises(DicomError, match="not a DICOM file"):
        load_mask(b"\x00" * 300, "mask.dcm")


def test_dicom_mask_thresholds_at_half_the_stored_range() -> None:
    stored = np.array([[0, 127, 128, 255]], np.uint8)  # 127 -> background, 128 -> lesion
    mask = load_mask(write_dicom(stored, bits_stored=8), "m.dcm")
    assert mask.dtype == bool
    assert mask.tolist() == [[False, False, True, True]]
    # a 12-bit mask: 2047 -> background, 2048 -> lesion
    m12 = np.array([[0, 2047, 2048, 4095]], np.uint16)
    assert load_mask(write_dicom(m12, bits_stored=12), "m.dcm").tolist() == [
        [False, False, True, True]
    ]


def test_two_valued_lossless_masks_are_label_images() -> None:
    disc = _disc()
    # 0/255 stored in 16 bits: half the 16-bit range would miss it; the two values do not
    as16 = write_dicom(disc.astype(np.uint16) * np.uint16(255), bits_stored=16)
    np.testing.assert_array_equal(load_mask(as16, "m.dcm"), disc)
    png = _png(disc.astype(np.uint8) * np.uint8(100))
    np.testing.assert_array_equal(load_mask(png, "m.png"), disc)


def test_dicom_mask_ignores_the_window_and_respects_monochrome1() -> None:
    disc = _disc()
    stored = disc.astype(np.uint8) * np.uint8(255)
    # a window that would push everything to white if applied
    windowed = write_dicom(stored, bits_stored=8, window=(0, 2))
    np.testing.assert_array_equal(load_mask(windowed, "m.dcm"), disc)
    inverted = write_dicom(255 - stored, photometric="MONOCHROME1", bits_stored=8)
    np.testing.assert_array_equal(load_mask(inverted, "m.dcm"), disc)


def test_raster_mask_thresholds() -> None:
    png8 = _png(np.array([[0, 126, 127, 128, 255]], np.uint8))
    assert load_mask(png8, "m.png").tolist() == [[False, False, False, True, True]]
    png16 = _png(np.array([[0, 32767, 32768, 65535]], np.uint16))
    assert load_mask(png16, "m.png").tolist() == [[False, False, True, True]]
    labels = _png(np.array([[0, 1, 1, 0]], np.uint8))  # a 0/1 label image
    assert load_mask(labels, "m.png").tolist() == [[False, True, True, False]]
    # JPEG is never taken as a label image: 0/100 stays below the threshold
    assert not load_mask(_jpeg(np.full((16, 16), 100, np.uint8)), "m.jpg").any()
    empty = _png(np.zeros((8, 8), np.uint8))
    assert not load_mask(empty, "m.png").any()


def test_noisy_jpeg_mask_recovers_the_shape() -> None:
    disc = _disc(128, 30)
    data = _jpeg(disc.astype(np.uint8) * np.uint8(255), quality=50)
    mask = load_mask(data, "m.jpg")
    iou = (mask & disc).sum() / (mask | disc).sum()
    assert iou > 0.97
