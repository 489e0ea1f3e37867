"""Bounded decoding (issue 8): image sizes are read from the header and checked against a pixel
budget before any decoder allocates; every decoder failure is an ImageDecodeError.

The hostile files are made here, byte by byte: a PNG whose IHDR declares 60000x60000 (with a
valid CRC, so libpng would believe it), a *valid* 389 KB PNG that inflates to 400 MB, a 1 KB
RLE-compressed DICOM declaring 60000x60000, JPEG/TIFF/PGM headers declaring the same, text files
named like images.
"""

from __future__ import annotations

import io
import json
import logging
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from mammoseg import imageio
from mammoseg.dicom import DicomError, decode_dicom, write_dicom
from mammoseg.imageio import (
    DicomDecodeError,
    ImageDecodeError,
    load_image,
    load_mask,
    read_dimensions,
)
from mammoseg.settings import DEFAULT_MAX_IMAGE_PIXELS, Settings

REPO = Path(__file__).resolve().parents[2]


# -- hostile inputs ---------------------------------------------------------------------------------
def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_header_bomb(width: int, height: int) -> bytes:
    """A well-formed PNG (valid CRCs) declaring ``width x height`` with almost no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _chunk(b"IEND", b"")


def png_zero_image(width: int, height: int) -> bytes:
    """A *valid* 8-bit gray PNG of zeros, compressed row by row (20000x20000: 389 KB → 400 MB)."""
    comp = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte 0 + the row
    idat = b"".join([comp.compress(row) for _ in range(height)] + [comp.flush()])
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def jpeg_header_bomb(width: int, height: int) -> bytes:
    """SOI, an APP0 segment, a baseline SOF0 declaring ``width x height``, then EOI."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof0 + b"\xff\xd9"


def tiff_header_bomb(width: int, height: int, *, order: str = "<") -> bytes:
    """A little- or big-endian TIFF whose first IFD declares ``width x height`` (LONG values)."""
    mark = b"II*\x00" if order == "<" else b"MM\x00*"
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1)]
    ifd = struct.pack(order + "H", len(entries))
    for tag, typ, count, value in entries:
        packed = struct.pack(order + ("I" if typ == 4 else "H2x"), value)
        ifd += struct.pack(order + "HHI", tag, typ, count) + packed
    return mark + struct.pack(order + "I", 8) + ifd + struct.pack(order + "I", 0)


def rle_dicom(rows: int, cols: int, *, runs: int | None = None) -> bytes:
    """An RLE Lossless (compressed) 16-bit DICOM declaring ``rows x cols``.

    Its two RLE segments (high and low bytes) hold zeros: exactly ``rows x cols`` of them when
    ``runs`` is None, else ``runs`` runs of 128 (a few hundred bytes in all, for a bomb)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.filewriter import dcmwrite
    from pydicom.uid import RLELossless, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["bomb", str(rows), str(cols)])
    meta.TransferSyntaxUID = RLELossless
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    full, rest = divmod(rows * cols, 128) if runs is None else (runs, 0)
    segment = bytes([0x81, 0x00]) * full  # 0x81 (-127): repeat the next byte 128 times
    segment += bytes([257 - rest, 0x00]) if rest > 1 else b"\x00\x00" if rest else b""
    segment += b"\x00" * (len(segment) % 2)  # segments are padded to even length
    header = struct.pack("<16I", 2, 64, 64 + len(segment), *([0] * 13))
    ds.PixelData = encapsulate([header + segment + segment])
    ds["PixelData"].VR = "OB"
    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def mammogram(h: int = 150, w: int = 100) -> np.ndarray:
    image = np.zeros((h, w), np.uint16)
    cv2.ellipse(image, (0, h // 2), (int(w * 0.8), int(h * 0.47)), 0, -90, 90, 20000, -1)
    cv2.circle(image, (25, h // 2), 8, 60000, -1)
    return image


BUDGET_RE = r"declares 60000x60000 \(\w+ x \w+\) = 3\.6e9 pixels, above the 1e8-pixel budget \(MAMMOSEG_MAX_IMAGE_PIXELS\)"


@pytest.fixture()
def no_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a pixel decoder runs: a refusal must come from the header alone."""

    def boom(*_a, **_k):
        raise AssertionError("a pixel decoder was called")

    monkeypatch.setattr(cv2, "imdecode", boom)
    monkeypatch.setattr("mammoseg.dicom._pixel_array", boom)


# -- the issue, reproduced -----------------------------------------------------------------------------
def test_png_declaring_60000x60000_is_an_image_decode_error_naming_the_budget(no_decoder: None) -> None:
    bomb = png_header_bomb(60000, 60000)
    assert len(bomb) < 200
    with pytest.raises(ImageDecodeError, match=BUDGET_RE) as info:
        load_image(bomb, "bomb.png")
    assert str(info.value).startswith("PNG declares") and "\n" not in str(info.value)
    with pytest.raises(ImageDecodeError, match=BUDGET_RE):
        load_mask(bomb, "bomb_mask.png")


def test_rle_dicom_declaring_60000x60000_is_refused_from_the_header(no_decoder: None) -> None:
    bomb = rle_dicom(60000, 60000, runs=4)
    assert len(bomb) < 2048
    for call in (lambda: load_image(bomb, "x.dcm"), lambda: load_mask(bomb, "x.dcm")):
        with pytest.raises(DicomDecodeError, match=BUDGET_RE) as info:
            call()
        assert isinstance(info.value, DicomError) and "Columns x Rows" in str(info.value)
    with pytest.raises(DicomError, match=BUDGET_RE):
        decode_dicom(bomb, apply_voi=False)
    assert read_dimensions(bomb, "x.dcm") == imageio.ImageDimensions("dicom", 60000, 60000, 1)


@pytest.mark.parametrize(
    ("data", "name", "fmt"),
    [
        (jpeg_header_bomb(60000, 60000), "x.jpg", "JPEG"),
        (tiff_header_bomb(60000, 60000), "x.tif", "TIFF"),
        (tiff_header_bomb(60000, 60000, order=">"), "x.tiff", "TIFF"),
        (b"P5\n# a comment\n60000 60000\n255\n" + b"\x00" * 64, "x.pgm", "PGM/PNM"),
    ],
)
def test_every_raster_format_reads_its_size_from_the_header(data: bytes, name: str, fmt: str, no_decoder: None) -> None:
    assert read_dimensions(data, name).pixels == 3_600_000_000
    with pytest.raises(ImageDecodeError, match=f"^{fmt} {BUDGET_RE}"):
        load_image(data, name)


def test_valid_389kb_png_of_400_megapixels_is_refused_without_decoding(no_decoder: None) -> None:
    png = png_zero_image(20000, 20000)
    assert len(png) < 400_000
    with pytest.raises(ImageDecodeError, match=r"20000x20000 .* = 4e8 pixels, above the 1e8-pixel budget"):
        load_image(png, "big.png")


MEASURE = r"""
import json, resource, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from test_bounded_decoding import png_zero_image, rle_dicom
from mammoseg.imageio import ImageDecodeError, load_image

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MB (Linux: KiB)

label = sys.argv[3]
data, name, budget = {
    "png": lambda: (png_zero_image(20000, 20000), "a.png", None),
    "dicom": lambda: (rle_dicom(60000, 60000, runs=4), "a.dcm", None),
    "control": lambda: (png_zero_image(12000, 12000), "c.png", 2 * 10**8),  # 144 MB when decoded
}[label]()
load_image(png_zero_image(16, 16), "w.png")  # warm-up: lazy imports and first-call buffers
load_image(rle_dicom(16, 16, runs=4), "w.dcm")
before = peak()
try:
    load_image(data, name, max_pixels=budget)
    print(json.dumps(["decoded", peak() - before]))
except ImageDecodeError as exc:
    print(json.dumps([str(exc), peak() - before]))
"""


def _measure(label: str) -> tuple[str, float]:
    """Decode one case in a fresh process; its message and the rise of the peak RSS (MB)."""
    res = subprocess.run(
        [sys.executable, "-c", MEASURE, str(REPO), str(Path(__file__).parent), label],
        capture_output=True, text=True, timeout=300, check=True,
    )
    message, rise = json.loads(res.stdout.strip().splitlines()[-1])
    return message, rise


def test_refusal_allocates_nothing_while_a_decode_is_visible() -> None:
    """Peak RSS of a fresh process per case: the bombs leave it where it was; the control (an
    allowed 144 MB decode) shows that the measurement would see a decode."""
    control = _measure("control")
    if control[0] != "decoded" or control[1] < 100:
        pytest.skip(f"peak RSS does not show a 144 MB decode on this machine ({control}); "
                    "the header-only refusal is shown by the no-decoder tests above")
    for label in ("png", "dicom"):
        message, rise = _measure(label)
        assert "above the 1e8-pixel budget" in message and rise < 30, (label, message, rise)


# -- the budget: one default, settings, keyword -------------------------------------------------------
def test_budget_default_setting_and_keyword(monkeypatch: pytest.MonkeyPatch) -> None:
    assert DEFAULT_MAX_IMAGE_PIXELS == 100_000_000 == Settings().max_image_pixels
    png16 = cv2.imencode(".png", np.zeros((16, 16), np.uint8))[1].tobytes()
    dcm = write_dicom(np.zeros((16, 16), np.uint16))
    assert load_image(png16, "a.png", max_pixels=256).shape == (16, 16)  # the budget is inclusive
    assert load_image(dcm, "a.dcm", max_pixels=256).shape == (16, 16)
    with pytest.raises(ImageDecodeError, match=r"16x16 \(width x height\) = 256 pixels, above the 255-pixel budget"):
        load_image(png16, "a.png", max_pixels=255)
    with pytest.raises(DicomDecodeError, match="above the 255-pixel budget"):
        load_mask(dcm, "a.dcm", max_pixels=255)
    monkeypatch.setenv("MAMMOSEG_MAX_IMAGE_PIXELS", "100")
    assert Settings().max_image_pixels == 100
    for data, name in ((png16, "a.png"), (dcm, "a.dcm")):
        with pytest.raises(ImageDecodeError, match="above the 100-pixel budget"):
            load_image(data, name)
    assert load_image(png16, "a.png", max_pixels=1000).shape == (16, 16)  # the keyword wins
    with pytest.raises(ValueError, match="positive"):
        load_image(png16, "a.png", max_pixels=0)


# -- every decoder failure is an ImageDecodeError ---------------------------------------------------------
def test_opencv_errors_become_image_decode_errors() -> None:
    # within a raised budget, OpenCV's own limit (2**30 pixels) refuses it with cv2.error
    with pytest.raises(ImageDecodeError, match=r"undecodable PNG data \(OpenCV: .*CV_IO_MAX_IMAGE_PIXELS") as info:
        load_image(png_header_bomb(40000, 40000), "x.png", max_pixels=2_000_000_000)
    assert "\n" not in str(info.value) and "loadsave.cpp" not in str(info.value)


def test_memory_errors_become_decode_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_memory(*_a, **_k):
        raise MemoryError

    png = cv2.imencode(".png", np.zeros((16, 16), np.uint8))[1].tobytes()
    dcm = write_dicom(np.zeros((16, 16), np.uint16))
    monkeypatch.setattr(cv2, "imdecode", no_memory)
    monkeypatch.setattr("mammoseg.dicom._pixel_array", no_memory)
    with pytest.raises(ImageDecodeError, match=r"not enough memory to decode the PNG \(16x16 pixels\)"):
        load_image(png, "a.png")
    with pytest.raises(DicomDecodeError, match=r"not enough memory to decode the pixel data \(Rows 16, Columns 16\)"):
        load_image(dcm, "a.dcm")


def test_unexpected_dicom_decoder_errors_name_the_type_only(monkeypatch: pytest.MonkeyPatch) -> None:
    def odd(*_a, **_k):
        raise KeyError("DOE^JANE")  # a decoder message could quote the header: not repeated

    monkeypatch.setattr("mammoseg.dicom._to_display_values", odd)
    with pytest.raises(DicomDecodeError, match=r"^undecodable DICOM \(KeyError\)$"):
        load_image(write_dicom(np.zeros((16, 16), np.uint16)), "a.dcm")


@pytest.mark.parametrize("name", ["notes.png", "notes.jpg", "notes.tif", "notes.pgm"])
def test_text_named_like_an_image_is_not_that_format(name: str) -> None:
    label = {"png": "PNG", "jpg": "JPEG", "tif": "TIFF", "pgm": "PGM/PNM"}[name.rsplit(".", 1)[1]]
    with pytest.raises(ImageDecodeError, match=rf"^not a {label} file: unrecognised content \(the content looks like text\)$"):
        load_image(b"patient notes: nothing to see here\n" * 3, name)
    with pytest.raises(ImageDecodeError, match=rf"^not a {label} file: unrecognised content \(no {label} signature\)$"):
        load_image(bytes(range(256)) * 4, name)
    with pytest.raises(ImageDecodeError, match="looks like text"):
        load_image(b"hello\n", "notes.bin")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (png_header_bomb(16, 16)[:30], "truncated PNG"),
        (png_header_bomb(16, 16)[:29] + b"\x00\x00\x00\x00" + png_header_bomb(16, 16)[33:], "corrupt PNG header (IHDR checksum mismatch)"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "truncated JPEG"),
        (b"\xff\xd8\xff\xda\x00\x08" + b"\x00" * 10 + b"\xff\xd9", "no frame header"),
        (b"II*\x00\xff\xff\x00\x00", "corrupt TIFF header"),
        (b"P5\n12\n", "corrupt PGM/PNM header"),
    ],
)
def test_broken_headers_are_readable_errors(data: bytes, reason: str) -> None:
    name = {b"\x89P": "x.png", b"\xff\xd8": "x.jpg", b"II": "x.tif", b"P5": "x.pgm"}[data[:2]]
    with pytest.raises(ImageDecodeError, match=re.escape(reason)):
        load_image(data, name)


@pytest.mark.parametrize(
    ("ext", "image"),
    [
        (".png", np.arange(12 * 20, dtype=np.uint16).reshape(12, 20)),
        (".png", np.zeros((12, 20, 3), np.uint8)),
        (".jpg", np.zeros((12, 20), np.uint8)),
        (".jpg", np.zeros((12, 20, 3), np.uint8)),
        (".tif", np.zeros((12, 20), np.uint16)),
        (".pgm", np.zeros((12, 20), np.uint8)),
        (".ppm", np.zeros((12, 20, 3), np.uint8)),
    ],
)
def test_header_sizes_agree_with_the_decoder(ext: str, image: np.ndarray) -> None:
    data = cv2.imencode(ext, image)[1].tobytes()
    dims = read_dimensions(data, "x" + ext)
    assert (dims.height, dims.width) == (12, 20)
    assert load_image(data, "x" + ext).shape == (12, 20)
    small = rle_dicom(12, 20)
    assert load_image(small, "x.dcm").shape == (12, 20)


# -- the preprocess path quarantines the bomb and goes on ------------------------------------------------
def test_preprocess_task_quarantines_bombs_and_processes_the_rest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``preprocess_one`` (the preprocess flow's per-case task, its body called directly) on a
    dataset of good images, a PNG bomb, a DICOM bomb, a bomb as a lesion mask and a text file."""
    import tasks.preprocess as tp
    from mammoseg.preprocess.params import PreprocessParams

    monkeypatch.setattr(tp, "get_run_logger", lambda: logging.getLogger("test"))
    src = tmp_path / "src"
    src.mkdir()
    image = mammogram()
    mask = np.zeros(image.shape, np.uint8)
    cv2.circle(mask, (25, 75), 8, 255, -1)
    files = {
        "good_a.png": cv2.imencode(".png", image)[1].tobytes(),
        "good_b.dcm": write_dicom(image[:, ::-1].copy()),
        "good_a_mask.png": cv2.imencode(".png", mask)[1].tobytes(),
        "bomb.png": png_header_bomb(60000, 60000),
        "bomb.dcm": rle_dicom(60000, 60000, runs=4),
        "bomb_mask.png": png_header_bomb(60000, 60000),
        "notes.png": b"not an image\n",
    }
    for key, data in files.items():
        (src / key).write_bytes(data)
    specs = [
        tp.CaseSpec(case_id="A", image_key="good_a.png", masks=[tp.MaskSpec(key="good_a_mask.png")]),
        tp.CaseSpec(case_id="PNGBOMB", image_key="bomb.png", masks=[]),
        tp.CaseSpec(case_id="DCMBOMB", image_key="bomb.dcm", masks=[]),
        tp.CaseSpec(case_id="MASKBOMB", image_key="good_a.png", masks=[tp.MaskSpec(key="bomb_mask.png")]),
        tp.CaseSpec(case_id="TEXT", image_key="notes.png", masks=[]),
        tp.CaseSpec(case_id="B", image_key="good_b.dcm", masks=[]),
    ]
    from tasks.states import QUARANTINED, unwrap

    returned = {s.case_id: tp.preprocess_one.fn(s, str(src), str(tmp_path / "store"), PreprocessParams(size=32)) for s in specs}
    # a refused case ends its task run in a Completed state named "Quarantined" (the UI shows it)
    assert {c for c, r in returned.items() if getattr(r, "name", None) == QUARANTINED} == {"PNGBOMB", "DCMBOMB", "MASKBOMB", "TEXT"}
    outcomes = {c: unwrap(r) for c, r in returned.items()}
    assert outcomes["A"].ok and outcomes["B"].ok, outcomes
    assert outcomes["A"].record["n_lesions"] == 1
    budget = "declares 60000x60000 (width x height) = 3.6e9 pixels, above the 1e8-pixel budget"
    assert outcomes["PNGBOMB"].reason == f"image cannot be decoded: PNG {budget} (MAMMOSEG_MAX_IMAGE_PIXELS); refused before decoding"
    assert not outcomes["DCMBOMB"].ok and "DICOM declares 60000x60000 (Columns x Rows)" in outcomes["DCMBOMB"].reason
    assert not outcomes["MASKBOMB"].ok and outcomes["MASKBOMB"].reason.startswith("lesion mask 1 cannot be decoded: PNG declares 60000x60000")
    assert outcomes["TEXT"].reason == "image cannot be decoded: not a PNG file: unrecognised content (the content looks like text)"
    assert all(outcomes[c].source for c in ("PNGBOMB", "DCMBOMB", "MASKBOMB", "TEXT"))

