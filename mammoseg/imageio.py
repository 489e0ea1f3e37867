"""Decode image bytes (DICOM, PNG, PGM, TIFF, JPEG) to 2-D arrays, and encode PNGs.

:func:`load_image` returns a 2-D array in display orientation (higher = brighter):

* DICOM → ``uint16`` via :func:`mammoseg.dicom.decode_dicom` (modality LUT, VOI, MONOCHROME1
  inversion, full 16-bit range);
* PNG / PGM / TIFF → their own depth, ``uint8`` or ``uint16`` (16-bit is kept);
* JPEG → ``uint8``.

Colour images are converted to grayscale (ITU-R BT.601 weights, as OpenCV). The format is
taken from the magic bytes first and the file name's extension second; a file whose extension
names a raster format but whose content has no such signature (a text file called ``.png``) is
refused as "not a PNG file". Anything undecodable raises :class:`ImageDecodeError` with a
readable one-line reason, whatever the decoder raised (``cv2.error``, pydicom errors,
``MemoryError``); for DICOM the exception is also a :class:`~mammoseg.dicom.DicomError`.

**Pixel budget.** Before any pixel is decoded the image's size is read from its header (PNG
IHDR, JPEG SOF, PGM/PNM header, TIFF first IFD, DICOM Rows/Columns/NumberOfFrames), see
:func:`read_dimensions`, and an image declaring more than the budget is refused: a 100-byte PNG
that declares 60000x60000 never makes a decoder allocate 3.6 GB. The budget is the keyword
``max_pixels`` of :func:`load_image` / :func:`load_mask`, else the setting
``MAMMOSEG_MAX_IMAGE_PIXELS`` (default :data:`mammoseg.settings.DEFAULT_MAX_IMAGE_PIXELS`,
100 million pixels; full-field mammograms have at most ~35 million).
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from typing import Final

import numpy as np

from mammoseg.dicom import (
    DicomError,
    decode_dicom,
    decode_dicom_sparse,
    max_image_pixels,
    pixel_budget_error,
)
from mammoseg.dicom import read_dimensions as _dicom_dimensions

_PNG_MAGIC: Final = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC: Final = b"\xff\xd8\xff"
_TIFF_MAGIC: Final = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF
_PNM_MAGIC: Final = (b"P1", b"P2", b"P3", b"P4", b"P5", b"P6")
_LABEL: Final = {"png": "PNG", "jpeg": "JPEG", "tiff": "TIFF", "pnm": "PGM/PNM", "dicom": "DICOM"}


class ImageDecodeError(ValueError):
    """The bytes are not a decodable image; ``str(exc)`` is a human-readable reason."""


class DicomDecodeError(ImageDecodeError, DicomError):
    """A DICOM that :func:`load_image` / :func:`load_mask` could not decode (both error types)."""


def sniff_format(data: bytes, name: str = "") -> str:
    """``"dicom"``, ``"png"``, ``"jpeg"``, ``"tiff"``, ``"pnm"`` or ``"unknown"``.

    Magic bytes win over the extension; the extension decides only when no magic matches
    (:func:`load_image` then refuses a raster format whose signature is missing).
    """
    magic = _magic_format(data)
    if magic != "unknown":
        return magic
    ext = name.lower().rsplit("/", 1)[-1]
    ext = ext[ext.rfind(".") :] if "." in ext else ""
    return {
        ".dcm": "dicom",
        ".dicom": "dicom",
        ".dic": "dicom",
        ".png": "png",
        ".jpg": "jpeg",
        ".jpeg": "jpeg",
        ".tif": "tiff",
        ".tiff": "tiff",
        ".pgm": "pnm",
        ".pnm": "pnm",
    }.get(ext, "unknown")


def _magic_format(data: bytes) -> str:
    """The format named by the content's signature alone, or ``"unknown"``."""
    head = bytes(data[:8])
    if len(data) >= 132 and bytes(data[128:132]) == b"DICM":
        return "dicom"
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head.startswith(_JPEG_MAGIC):
        return "jpeg"
    if head[:4] in _TIFF_MAGIC:
        return "tiff"
    if head[:2] in _PNM_MAGIC and len(head) > 2 and head[2:3].isspace():
        return "pnm"
    return "unknown"


def _looks_like_text(data: bytes) -> bool:
    head = bytes(data[:512])
    if not head or b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # a multi-byte character cut at byte 512 is still text
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    return all(c.isprintable() or c in "\t\r\n\f" for c in text)


# -- sizes from the headers, before any pixel is decoded -------------------------------------------


@dataclass(frozen=True)
class ImageDimensions:
    """What a file's header declares: ``width`` x ``height`` pixels (``frames`` for DICOM)."""

    format: str
    width: int
    height: int
    frames: int = 1

    @property
    def pixels(self) -> int:
        return self.width * self.height * max(1, self.frames)


class _BadHeader(ValueError):
    """A header that cannot be read; the caller turns it into an ImageDecodeError."""


_U32_MAX: Final = 2**31 - 1  # PNG: "a four-byte unsigned integer ... limited to 2^31-1"


def _png_dimensions(data: bytes) -> tuple[int, int]:
    if len(data) < 33:
        raise _BadHeader("the IHDR header chunk is incomplete")
    length, ctype = struct.unpack(">I4s", data[8:16])
    if ctype != b"IHDR" or length != 13:
        raise _BadHeader("the first chunk is not a 13-byte IHDR header")
    (crc,) = struct.unpack(">I", data[29:33])
    if zlib.crc32(data[12:29]) & 0xFFFFFFFF != crc:
        raise _BadHeader("IHDR checksum mismatch")
    width, height = struct.unpack(">II", data[16:24])
    if not (0 < width <= _U32_MAX and 0 < height <= _U32_MAX):
        raise _BadHeader(f"invalid size {width}x{height} in IHDR")
    return width, height


#: JPEG start-of-frame markers (baseline, extended, progressive, lossless; Huffman or arithmetic).
_SOF: Final = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)


def _jpeg_dimensions(data: bytes) -> tuple[int, int]:
    """Width and height from the first SOF segment, skipping the segments before it."""
    n, i = len(data), 2
    while i < n:
        if data[i] != 0xFF:  # stray bytes between segments: libjpeg skips them, so do we
            i = data.find(b"\xff", i)
            if i < 0:
                break
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            break
        marker = data[i]
        i += 1
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # markers without a length
            continue
        if marker in (0xD9, 0xDA):
            raise _BadHeader("no frame header (SOF) before the image data")
        if i + 2 > n:
            break
        (seglen,) = struct.unpack(">H", data[i : i + 2])
        if seglen < 2:
            raise _BadHeader(f"invalid segment length {seglen} at byte {i}")
        if marker in _SOF:
            if i + 8 > n:
                break
            _precision, height, width = struct.unpack(">BHH", data[i + 2 : i + 7])
            if width == 0 or height == 0:
                raise _BadHeader(
                    f"frame header declares {width}x{height} (height from a DNL marker is unsupported)"
                )
            return width, height
        i += seglen
    raise _BadHeader("the file ends before the frame header (SOF)")


_TIFF_WIDTH, _TIFF_HEIGHT = 256, 257


def _tiff_dimensions(data: bytes) -> tuple[int, int]:
    """Width and height from the first IFD (classic TIFF or BigTIFF)."""
    if len(data) < 8:
        raise _BadHeader("header incomplete")
    e = "<" if data[:2] == b"II" else ">"
    (version,) = struct.unpack(e + "H", data[2:4])
    if version == 42:
        (offset,) = struct.unpack(e + "I", data[4:8])
        count_fmt, entry, value_at = "H", 12, 8
    else:  # 43: BigTIFF
        if len(data) < 16:
            raise _BadHeader("header incomplete")
        (offset,) = struct.unpack(e + "Q", data[8:16])
        count_fmt, entry, value_at = "Q", 20, 12
    count_size = struct.calcsize(count_fmt)
    if offset < 8 or offset + count_size > len(data):
        raise _BadHeader(f"first IFD offset {offset} lies outside the {len(data)}-byte file")
    (count,) = struct.unpack(e + count_fmt, data[offset : offset + count_size])
    start = offset + count_size
    if count == 0 or start + count * entry > len(data):
        raise _BadHeader(f"first IFD ({count} entries) does not fit in the file")
    found: dict[int, int] = {}
    for k in range(count):
        at = start + k * entry
        tag, typ = struct.unpack(e + "HH", data[at : at + 4])
        if tag not in (_TIFF_WIDTH, _TIFF_HEIGHT):
            continue
        fmt = {3: "H", 4: "I", 16: "Q"}.get(typ)  # SHORT, LONG, LONG8
        if fmt is None:
            raise _BadHeader(f"tag {tag} has unsupported type {typ}")
        (found[tag],) = struct.unpack(
            e + fmt, data[at + value_at : at + value_at + struct.calcsize(fmt)]
        )
    if _TIFF_WIDTH not in found or _TIFF_HEIGHT not in found:
        raise _BadHeader("the first IFD has no ImageWidth/ImageLength")
    width, height = found[_TIFF_WIDTH], found[_TIFF_HEIGHT]
    if width == 0 or height == 0:
        raise _BadHeader(f"invalid size {width}x{height}")
    return width, height


_PNM_TOKEN: Final = re.compile(rb"\s*(?:#[^\n\r]*[\n\r]\s*)*(\d+)(?=[\s#])")


def _pnm_dimensions(data: bytes) -> tuple[int, int]:
    """Width and height: the two numbers after the magic (comments and whitespace skipped)."""
    head = bytes(data[:4096])
    values = []
    pos = 2
    for _ in range(2):
        m = _PNM_TOKEN.match(head, pos)
        if m is None:
            raise _BadHeader("no width/height after the magic number")
        values.append(int(m.group(1)))
        pos = m.end()
    width, height = values
    if width == 0 or height == 0:
        raise _BadHeader(f"invalid size {width}x{height}")
    return width, height


_DIMENSIONS: Final = {
    "png": _png_dimensions,
    "jpeg": _jpeg_dimensions,
    "tiff": _tiff_dimensions,
    "pnm": _pnm_dimensions,
}


def read_dimensions(data: bytes, name: str = "") -> ImageDimensions:
    """The size the header declares, reading no pixel data (format as :func:`sniff_format`).

    Raises :class:`ImageDecodeError` (:class:`DicomDecodeError` for DICOM) when the header is
    missing, cut short or corrupt, or the content has no signature of the format its name says.
    """
    if data is None or len(data) == 0:
        raise ImageDecodeError("empty file (0 bytes)")
    fmt = sniff_format(data, name)
    if fmt == "dicom":
        try:
            dims = _dicom_dimensions(bytes(data))
        except DicomError as exc:
            raise DicomDecodeError(str(exc)) from exc
        return ImageDimensions("dicom", dims.columns, dims.rows, dims.frames)
    if fmt == "unknown":
        raise ImageDecodeError(_unrecognised(data))
    if _magic_format(data) != fmt:
        raise ImageDecodeError(_not_a(data, fmt))
    try:
        width, height = _DIMENSIONS[fmt](bytes(data[:65536]) if fmt == "pnm" else bytes(data))
    except _BadHeader as exc:
        raise ImageDecodeError(_bad_header(data, fmt, str(exc))) from None
    except (struct.error, IndexError) as exc:
        raise ImageDecodeError(_bad_header(data, fmt, f"cut short ({exc})")) from None
    return ImageDimensions(fmt, width, height)


def _unrecognised(data: bytes) -> str:
    hint = "; the content looks like text" if _looks_like_text(data) else ""
    return f"unrecognised image format (not DICOM, PNG, PGM, TIFF or JPEG{hint})"


def _not_a(data: bytes, fmt: str) -> str:
    label = _LABEL[fmt]
    hint = "the content looks like text" if _looks_like_text(data) else f"no {label} signature"
    return f"not a {label} file: unrecognised content ({hint})"


def _bad_header(data: bytes, fmt: str, why: str) -> str:
    if fmt == "png" and b"IEND" not in bytes(data[-64:]):
        return f"truncated PNG (no IEND chunk at the end; header: {why})"
    if fmt == "jpeg" and b"\xff\xd9" not in bytes(data[-1024:]):
        return f"truncated JPEG (no end-of-image marker; header: {why})"
    return f"corrupt {_LABEL[fmt]} header ({why})"


def _check_budget(dims: ImageDimensions, budget: int) -> None:
    what = _LABEL.get(dims.format, dims.format.upper())
    reason = pixel_budget_error(what, dims.width, dims.height, budget, frames=dims.frames)
    if reason:
        cls = DicomDecodeError if dims.format == "dicom" else ImageDecodeError
        raise cls(reason)


def _cv2_reason(exc: Exception) -> str:
    """OpenCV's message without its version/source-file prefix, on one line."""
    text = " ".join(str(exc).split())
    return re.sub(r"^OpenCV\([^)]*\)\s*\S+:\d+:\s*error:\s*", "", text) or type(exc).__name__


def _to_gray(img: np.ndarray) -> np.ndarray:
    import cv2

    if img.ndim == 2:
        return img
    if img.ndim == 3 and img.shape[2] == 1:
        return img[:, :, 0]
    if img.ndim == 3 and img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY)
    if img.ndim == 3 and img.shape[2] == 2:  # gray + alpha
        return img[:, :, 0]
    raise ImageDecodeError(f"unsupported image layout {img.shape}")


def _decode_raster(data: bytes, fmt: str, dims: ImageDimensions) -> np.ndarray:
    import cv2

    label = _LABEL[fmt]
    if fmt == "png" and b"IEND" not in bytes(data[-64:]):
        raise ImageDecodeError("truncated PNG (no IEND chunk at the end)")
    if fmt == "jpeg" and b"\xff\xd9" not in bytes(data[-1024:]):
        raise ImageDecodeError("truncated JPEG (no end-of-image marker)")
    try:
        buf = np.frombuffer(bytes(data), dtype=np.uint8)
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        if img is None:
            raise ImageDecodeError(f"undecodable {label} data (corrupt or truncated)")
        img = _to_gray(img)
    except ImageDecodeError:
        raise
    except MemoryError:
        raise ImageDecodeError(
            f"not enough memory to decode the {label} ({dims.width}x{dims.height} pixels)"
        ) from None
    except cv2.error as exc:
        raise ImageDecodeError(f"undecodable {label} data (OpenCV: {_cv2_reason(exc)})") from None
    except Exception as exc:  # any decoder failure is a decode error
        raise ImageDecodeError(
            f"undecodable {label} data ({type(exc).__name__}: {' '.join(str(exc).split())})"
        ) from exc
    if img.dtype not in (np.uint8, np.uint16):
        raise ImageDecodeError(f"unsupported sample type {img.dtype} (expected 8 or 16 bit)")
    if fmt == "jpeg" and img.dtype != np.uint8:
        img = img.astype(np.uint8)
    return np.ascontiguousarray(img)


def load_image(data: bytes, name: str, *, max_pixels: int | None = None) -> np.ndarray:
    """Decode ``data`` (``name`` is only used for its extension) to a 2-D display array.

    ``uint16`` for DICOM and 16-bit PNG/PGM/TIFF, ``uint8`` otherwise. Raises
    :class:`ImageDecodeError` for empty, truncated, corrupt or unsupported input, and for an
    image whose header declares more than ``max_pixels`` pixels (default: the setting
    ``MAMMOSEG_MAX_IMAGE_PIXELS``) — refused before any pixel is decoded.
    """
    if data is None or len(data) == 0:
        raise ImageDecodeError("empty file (0 bytes)")
    budget = max_image_pixels(max_pixels)
    fmt = sniff_format(data, name)
    if fmt == "dicom":
        try:
            return decode_dicom(bytes(data), max_pixels=budget).pixels
        except DicomError as exc:
            raise DicomDecodeError(str(exc)) from exc
    dims = read_dimensions(data, name)
    _check_budget(dims, budget)
    img = _decode_raster(data, fmt, dims)
    if img.ndim != 2 or img.size == 0:
        raise ImageDecodeError(f"decoded image has unusable shape {img.shape}")
    return img


def load_mask(data: bytes, name: str, *, max_pixels: int | None = None) -> np.ndarray:
    """Decode a lesion mask to a 2-D ``bool`` array (True = lesion).

    * A lossless mask (DICOM, PNG, PGM, TIFF) whose pixels take exactly two values, 0 and
      ``v > 0``, is a label image: ``v`` is the lesion, whatever ``v`` is (0/255 stored in 16 bits,
      0/1 label PNGs).
    * Anything else is thresholded at half the range the pixels can take, so JPEG ringing and
      anti-aliased edges do not matter: DICOM is decoded **without** VOI LUT/window (MONOCHROME1
      inverted) and thresholded ``> 32767`` in the 16-bit display range, i.e. stored value
      ``> 127`` for an 8-bit mask (CBIS-DDSM ROI masks are 8-bit 0/255), ``> 2047`` for 12-bit;
      8-bit PNG/PGM/TIFF/JPEG ``> 127``; 16-bit ``> 32767``.

    A mask with no foreground gives an all-False array (no error). The pixel budget and the
    errors are :func:`load_image`'s.
    """
    return decode_mask(data, name, max_pixels=max_pixels)[0]


def decode_mask(
    data: bytes, name: str, *, max_pixels: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(mask, raw)``: :func:`load_mask`'s mask, and the decoded pixels it was made from
    inside the box of the nonzero ones (DICOM without VOI; every nonzero pixel is in ``raw``,
    e.g. to judge how binary the mask is). A lesion mask is mostly zeros: a DICOM one is
    mapped to display values inside that box only (:func:`~mammoseg.dicom.decode_dicom_sparse`).
    """
    if data is None or len(data) == 0:
        raise ImageDecodeError("empty file (0 bytes)")
    budget = max_image_pixels(max_pixels)
    fmt = sniff_format(data, name)
    if fmt == "dicom":
        try:
            sparse = decode_dicom_sparse(bytes(data), apply_voi=False, max_pixels=budget)
        except DicomError as exc:
            raise DicomDecodeError(str(exc)) from exc
        shape, box, sub, dtype = sparse.shape, sparse.box, sparse.values, np.dtype(np.uint16)
    else:
        img = load_image(data, name, max_pixels=budget)
        shape, box, dtype = img.shape, nonzero_box(img), img.dtype
        sub = img[box[0] : box[1], box[2] : box[3]] if box is not None else img[:0, :0]
    out = np.zeros(shape, dtype=bool)
    if box is not None:
        out[box[0] : box[1], box[2] : box[3]] = _mask_rule(sub, dtype, lossy=fmt == "jpeg")
    return out, sub


def _mask_rule(sub: np.ndarray, dtype: np.dtype, *, lossy: bool) -> np.ndarray:
    """:func:`load_mask`'s rule on the box of the nonzero pixels (zeros outside it change
    nothing: 0 is never the lesion value nor above the threshold)."""
    if not lossy:
        top = sub.max()
        if not np.any((sub != 0) & (sub != top)):
            return sub == top
    half = 127 if dtype == np.uint8 else 32767
    return sub > half


def nonzero_box(img: np.ndarray) -> tuple[int, int, int, int] | None:
    """Half-open ``(y0, y1, x0, x1)`` box of the nonzero pixels of a 2-D array; None if none."""
    rows = np.flatnonzero(img.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(img[rows[0] : rows[-1] + 1].any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _encode_png(img: np.ndarray, what: str) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise ValueError(f"OpenCV could not encode the {what} PNG")
    return buf.tobytes()


def encode_png16(img: np.ndarray) -> bytes:
    """Lossless 16-bit grayscale PNG of a 2-D ``uint16`` array (other dtypes are refused)."""
    arr = np.asarray(img)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"encode_png16 needs a non-empty 2-D array, got shape {arr.shape}")
    if arr.dtype != np.uint16:
        raise ValueError(f"encode_png16 needs uint16, got {arr.dtype}")
    return _encode_png(np.ascontiguousarray(arr), "16-bit")


def encode_png8(img: np.ndarray) -> bytes:
    """8-bit grayscale PNG of a 2-D ``uint8`` array; a ``bool`` mask is written as 0/255."""
    arr = np.asarray(img)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"encode_png8 needs a non-empty 2-D array, got shape {arr.shape}")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * np.uint8(255)
    elif arr.dtype != np.uint8:
        raise ValueError(f"encode_png8 needs uint8 or bool, got {arr.dtype}")
    return _encode_png(np.ascontiguousarray(arr), "8-bit")
