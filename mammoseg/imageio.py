"""Decode image bytes (DICOM, PNG, PGM, TIFF, JPEG) to 2-D arrays, and encode PNGs.

:func:`load_image` returns a 2-D array in display orientation (higher = brighter):

* DICOM → ``uint16`` via :func:`mammoseg.dicom.decode_dicom` (modality LUT, VOI, MONOCHROME1
  inversion, full 16-bit range);
* PNG / PGM / TIFF → their own depth, ``uint8`` or ``uint16`` (16-bit is kept);
* JPEG → ``uint8``.

Colour images are converted to grayscale (ITU-R BT.601 weights, as OpenCV). The format is
taken from the magic bytes first and the file name's extension second. Anything undecodable
raises :class:`ImageDecodeError` with a readable reason; for DICOM the exception is also a
:class:`~mammoseg.dicom.DicomError`.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from mammoseg.dicom import DicomError, decode_dicom

_PNG_MAGIC: Final = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC: Final = b"\xff\xd8\xff"
_TIFF_MAGIC: Final = (b"II*\x00", b"MM\x00*")
_PNM_MAGIC: Final = (b"P2", b"P5")


class ImageDecodeError(ValueError):
    """The bytes are not a decodable image; ``str(exc)`` is a human-readable reason."""


class DicomDecodeError(ImageDecodeError, DicomError):
    """A DICOM that :func:`load_image` / :func:`load_mask` could not decode (both error types)."""


def sniff_format(data: bytes, name: str = "") -> str:
    """``"dicom"``, ``"png"``, ``"jpeg"``, ``"tiff"``, ``"pnm"`` or ``"unknown"``.

    Magic bytes win over the extension; the extension decides only when no magic matches.
    """
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


def _decode_raster(data: bytes, fmt: str) -> np.ndarray:
    import cv2

    if fmt == "png" and b"IEND" not in bytes(data[-64:]):
        raise ImageDecodeError("truncated PNG (no IEND chunk at the end)")
    if fmt == "jpeg" and b"\xff\xd9" not in bytes(data[-1024:]):
        raise ImageDecodeError("truncated JPEG (no end-of-image marker)")
    buf = np.frombuffer(bytes(data), dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageDecodeError(f"undecodable {fmt.upper()} data (corrupt or truncated)")
    img = _to_gray(img)
    if img.dtype not in (np.uint8, np.uint16):
        raise ImageDecodeError(f"unsupported sample type {img.dtype} (expected 8 or 16 bit)")
    if fmt == "jpeg" and img.dtype != np.uint8:
        img = img.astype(np.uint8)
    return np.ascontiguousarray(img)


def load_image(data: bytes, name: str) -> np.ndarray:
    """Decode ``data`` (``name`` is only used for its extension) to a 2-D display array.

    ``uint16`` for DICOM and 16-bit PNG/PGM/TIFF, ``uint8`` otherwise. Raises
    :class:`ImageDecodeError` for empty, truncated, corrupt or unsupported input.
    """
    if data is None or len(data) == 0:
        raise ImageDecodeError("empty file (0 bytes)")
    fmt = sniff_format(data, name)
    if fmt == "dicom":
        try:
            return decode_dicom(bytes(data)).pixels
        except DicomError as exc:
            raise DicomDecodeError(str(exc)) from exc
    if fmt == "unknown":
        raise ImageDecodeError("unrecognised image format (not DICOM, PNG, PGM, TIFF or JPEG)")
    img = _decode_raster(data, fmt)
    if img.ndim != 2 or img.size == 0:
        raise ImageDecodeError(f"decoded image has unusable shape {img.shape}")
    return img


def load_mask(data: bytes, name: str) -> np.ndarray:
    """Decode a lesion mask to a 2-D ``bool`` array (True = lesion).

    * A lossless mask (DICOM, PNG, PGM, TIFF) whose pixels take exactly two values, 0 and
      ``v > 0``, is a label image: ``v`` is the lesion, whatever ``v`` is (0/255 stored in 16 bits,
      0/1 label PNGs).
    * Anything else is thresholded at half the range the pixels can take, so JPEG ringing and
      anti-aliased edges do not matter: DICOM is decoded **without** VOI LUT/window (MONOCHROME1
      inverted) and thresholded ``> 32767`` in the 16-bit display range, i.e. stored value
      ``> 127`` for an 8-bit mask (CBIS-DDSM ROI masks are 8-bit 0/255), ``> 2047`` for 12-bit;
      8-bit PNG/PGM/TIFF/JPEG ``> 127``; 16-bit ``> 32767``.

    A mask with no foreground gives an all-False array (no error).
    """
    if data is None or len(data) == 0:
        raise ImageDecodeError("empty file (0 bytes)")
    fmt = sniff_format(data, name)
    if fmt == "dicom":
        try:
            img = decode_dicom(bytes(data), apply_voi=False).pixels
        except DicomError as exc:
            raise DicomDecodeError(str(exc)) from exc
    else:
        img = load_image(data, name)
    if fmt != "jpeg":
        top = img.max()
        if top > 0 and not np.any((img != 0) & (img != top)):
            return img == top
    half = 127 if img.dtype == np.uint8 else 32767
    return img > half


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
