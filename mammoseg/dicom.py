"""DICOM decoding to a 16-bit display image, a safe header subset, and a small DICOM writer.

Decoding (:func:`decode_dicom`) turns the stored pixel values into a ``uint16`` image in *display
orientation* (higher = brighter), in this order:

1. **Modality LUT** (``Rescale Slope/Intercept`` or a ``Modality LUT Sequence``), via
   :func:`pydicom.pixels.apply_modality_lut`.
2. **VOI** (only with ``apply_voi=True``): a ``VOI LUT Sequence`` if present, else a
   ``Window Center/Width``, via :func:`pydicom.pixels.apply_voi_lut` (first LUT/window wins).
3. **MONOCHROME1 inversion**: ``v -> lo + hi - v``.
4. **Linear map of the nominal output range ``[lo, hi]`` onto ``0..65535``** (rounded, clipped),
   computed in float64, never via 8 bits. ``[lo, hi]`` is the range the previous step *can*
   produce, not the range the image happens to use, so the mapping depends only on the header:

   * no LUT, no window: the stored range from *Bits Stored* / *Pixel Representation*
     (unsigned 16 bits: identity; unsigned 12 bits: ``v * 65535 / 4095``; 8 bits: ``v * 257``);
   * rescale: that stored range pushed through ``slope * v + intercept``;
   * Modality/VOI LUT sequence: ``0 .. 2**(LUT bits) - 1``;
   * window: the output range pydicom's windowing produces (as the two cases above).

   A linear rescale therefore never changes the display image; a window changes its contrast.

**Pixel budget.** Rows x Columns x frames is checked against a budget (``max_pixels``, default
the setting ``MAMMOSEG_MAX_IMAGE_PIXELS``) on the parsed header, before any pixel decoder runs, so
a 1 KB compressed file declaring 60000x60000 is refused instead of allocating 7 GB;
:func:`read_dimensions` reads the same numbers with ``stop_before_pixels``.

Only the non-identifying :class:`SafeMeta` leaves this module; patient names, IDs and dates stay in
the bytes, error messages never quote them, and pydicom's log records (which can quote header
values) are dropped while this module reads or writes. :func:`phi_values` lists those strings
so tests can prove they never leak.
"""

from __future__ import annotations

import hashlib
import logging
import struct
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from typing import Any, Final

import numpy as np

#: View codes accepted from *View Position* or (as CBIS-DDSM stores them) *Patient Orientation*.
KNOWN_VIEWS: Final = frozenset({"CC", "MLO", "ML", "LM", "XCCL", "XCCM", "FB", "SIO", "LMO"})

#: Series descriptions used by CBIS-DDSM (and the synthetic generator).
FULL_MAMMOGRAM: Final = "full mammogram images"
ROI_MASK: Final = "ROI mask images"
CROPPED_IMAGE: Final = "cropped images"

_SECONDARY_CAPTURE: Final = "1.2.840.10008.5.1.4.1.1.7"
_EXPLICIT_VR_LE: Final = "1.2.840.10008.1.2.1"
_DICM_OFFSET: Final = 128


class DicomError(ValueError):
    """The bytes are not a decodable DICOM image; ``str(exc)`` is a human-readable reason."""


@dataclass(frozen=True)
class SafeMeta:
    """Header fields that identify nobody.

    ``photometric`` is the *stored* interpretation (the decoded pixels are always display
    orientation). ``image_laterality`` is ``"L"``/``"R"`` from *Image Laterality* or *Laterality*,
    ``view_position`` one of :data:`KNOWN_VIEWS` from *View Position* or *Patient Orientation*;
    ``None`` when absent or unrecognised.
    """

    rows: int
    columns: int
    photometric: str
    bits_stored: int
    series_description: str
    modality: str
    image_laterality: str | None
    view_position: str | None


@dataclass(frozen=True)
class DecodedDicom:
    """``pixels``: ``uint16``, 2-D (rows x columns), display orientation, full 16-bit range."""

    pixels: np.ndarray
    meta: SafeMeta


@dataclass(frozen=True, eq=False)
class VoiLut:
    """A VOI LUT for :func:`write_dicom`: value ``first_mapped + i`` displays as ``table[i]``.

    Values below ``first_mapped`` take ``table[0]``, values past the end the last entry.
    ``bits`` is the nominal output depth (8 or 10–16); ``table`` must fit in it.
    """

    table: np.ndarray
    first_mapped: int = 0
    bits: int = 16


# ----------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------


class _DropRecords(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


_DROP = _DropRecords()
_QUIET_LOCK = threading.Lock()
_quiet_depth = 0


@contextmanager
def _decode_errors(ds: Any) -> Iterator[None]:
    """Every failure while decoding ``ds``'s pixels as a one-line :class:`DicomError` that names
    the exception type only (its text could quote the header)."""
    try:
        yield
    except DicomError:
        raise
    except MemoryError as exc:
        dims = _dimensions(ds)
        raise DicomError(
            f"not enough memory to decode the pixel data (Rows {dims.rows}, "
            f"Columns {dims.columns})"
        ) from exc
    except Exception as exc:  # pydicom/numpy raise many types for bad data
        raise DicomError(f"undecodable DICOM ({type(exc).__name__})") from exc


@contextmanager
def _quiet_pydicom(*, catch_warnings: bool = False) -> Iterator[None]:
    """Drop pydicom's log records (thread-safe) and, with ``catch_warnings``, its warnings.

    pydicom's value-validation messages quote element values. Decoding never converts the
    patient elements (pydicom converts values lazily, on access), so only :func:`phi_values` and
    :func:`write_dicom` need ``catch_warnings`` — which, like :class:`warnings.catch_warnings`
    itself, is not thread-safe before Python 3.14; both are test/synthetic-data utilities.
    """
    global _quiet_depth
    logger = logging.getLogger("pydicom")
    with _QUIET_LOCK:
        if _quiet_depth == 0:
            logger.addFilter(_DROP)
        _quiet_depth += 1
    try:
        if catch_warnings:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield
        else:
            yield
    finally:
        with _QUIET_LOCK:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                logger.removeFilter(_DROP)


def _parse(data: bytes, *, stop_before_pixels: bool) -> Any:
    """``pydicom.dcmread`` with every failure turned into a :class:`DicomError`."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DicomError(f"not a DICOM file (expected bytes, got {type(data).__name__})")
    data = bytes(data)
    if not data:
        raise DicomError("not a DICOM file (empty)")
    if len(data) < _DICM_OFFSET + 4:
        if len(data) < _DICM_OFFSET:
            raise DicomError(f"not a DICOM file ({len(data)} bytes, shorter than the preamble)")
        raise DicomError(f"truncated DICOM (only {len(data)} bytes)")
    if data[_DICM_OFFSET : _DICM_OFFSET + 4] != b"DICM":
        raise DicomError("not a DICOM file (no 'DICM' marker at byte 128)")
    # (0002,0000) UL File Meta Information Group Length: the meta group must be complete
    start = _DICM_OFFSET + 4
    if len(data) < start + 12:
        raise DicomError("truncated DICOM (file meta information incomplete)")
    meta_end = 0
    if data[start : start + 6] == b"\x02\x00\x00\x00UL":
        (group_len,) = struct.unpack("<I", data[start + 8 : start + 12])
        meta_end = start + 12 + group_len
        if len(data) < meta_end:
            raise DicomError("truncated DICOM (file meta information incomplete)")
    try:
        ds = pydicom.dcmread(BytesIO(data), force=False, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError as exc:
        raise DicomError(f"not a DICOM file ({exc})") from exc
    except (EOFError, struct.error) as exc:
        raise DicomError(f"truncated DICOM (header ends early: {exc})") from exc
    except Exception as exc:  # pydicom raises many types for corrupt headers
        raise DicomError(f"unreadable DICOM header ({type(exc).__name__})") from exc
    _check_complete(ds, len(data), meta_end)
    return ds


def _check_complete(ds: Any, n_bytes: int, meta_end: int) -> None:
    """pydicom stops silently at a cut-off element; refuse files that end inside one."""
    from pydicom.dataelem import RawDataElement

    tags = list(ds.keys())
    if not tags:
        if meta_end and 0 < n_bytes - meta_end < 12:
            raise DicomError("truncated DICOM (file ends inside the first data element)")
        return
    last = ds.get_item(max(tags))
    if not isinstance(last, RawDataElement) or last.length == 0xFFFFFFFF:
        return
    end = last.value_tell + last.length
    if end > n_bytes:
        raise DicomError(
            f"truncated DICOM (element {last.tag} is {end - n_bytes} bytes short; "
            f"file is {n_bytes} bytes)"
        )
    if 0 < n_bytes - end < 12:
        raise DicomError(f"truncated DICOM (file ends inside the element after {last.tag})")


def _text(ds: Any, keyword: str) -> str:
    value = ds.get(keyword, None)
    if value is None:
        return ""
    if not isinstance(value, (str, bytes)) and hasattr(value, "__len__"):
        return ""  # multi-valued: not a single code
    return str(value).strip()


def _safe_meta(ds: Any) -> SafeMeta:
    laterality: str | None = None
    for kw in ("ImageLaterality", "Laterality"):
        v = _text(ds, kw).upper()
        if v in ("L", "R"):
            laterality = v
            break
    view: str | None = None
    for kw in ("ViewPosition", "PatientOrientation"):
        v = _text(ds, kw).upper()
        if v in KNOWN_VIEWS:
            view = v
            break

    def _int(kw: str) -> int:
        try:
            return int(ds.get(kw, 0) or 0)
        except (TypeError, ValueError):
            return 0

    return SafeMeta(
        rows=_int("Rows"),
        columns=_int("Columns"),
        photometric=_text(ds, "PhotometricInterpretation").upper(),
        bits_stored=_int("BitsStored") or _int("BitsAllocated"),
        series_description=_text(ds, "SeriesDescription"),
        modality=_text(ds, "Modality").upper(),
        image_laterality=laterality,
        view_position=view,
    )


def read_meta(data: bytes) -> SafeMeta:
    """The :class:`SafeMeta` of a DICOM file, reading the header only (no pixel decoding)."""
    with _quiet_pydicom():
        return _safe_meta(_parse(data, stop_before_pixels=True))


def read_series_description(data: bytes) -> str:
    """*Series Description* (stripped, ``""`` if absent), reading the header only.

    CBIS-DDSM uses it to tell ``"ROI mask images"`` from ``"cropped images"``.
    """
    with _quiet_pydicom():
        return _text(_parse(data, stop_before_pixels=True), "SeriesDescription")


_PHI_KEYWORDS: Final = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "StudyDate",
    "OtherPatientIDs",
    "OtherPatientNames",
)


def phi_values(data: bytes) -> set[str]:
    """Non-empty patient name / ID / birth date / study date strings in the header.

    Also the *Other Patient IDs/Names*. A name with ``^`` separators is listed both raw
    (``"DOE^JANE"``) and with spaces (``"DOE JANE"``). Used by tests to prove that none of them
    reaches a derived artifact, log or report.
    """
    from pydicom.multival import MultiValue

    found: set[str] = set()
    with _quiet_pydicom(catch_warnings=True):
        ds = _parse(data, stop_before_pixels=True)
        raw_values = {kw: ds.get(kw, None) for kw in _PHI_KEYWORDS}
    for kw in _PHI_KEYWORDS:
        value = raw_values[kw]
        if value is None:
            continue
        values = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
        for v in values:
            text = str(v).strip()
            if not text:
                continue
            found.add(text)
            if "^" in text:
                spaced = " ".join(p for p in text.split("^") if p)
                if spaced:
                    found.add(spaced)
    return found


def max_image_pixels(max_pixels: int | None = None) -> int:
    """The pixel budget of one decoded image: ``max_pixels`` when given, else the setting
    ``MAMMOSEG_MAX_IMAGE_PIXELS`` (default :data:`mammoseg.settings.DEFAULT_MAX_IMAGE_PIXELS`)."""
    if max_pixels is not None:
        if isinstance(max_pixels, bool) or int(max_pixels) < 1:
            raise ValueError(f"max_pixels must be a positive number of pixels, got {max_pixels!r}")
        return int(max_pixels)
    from mammoseg.settings import get_settings

    return int(get_settings().max_image_pixels)


def _count(n: float) -> str:
    """``3600000000`` → ``'3.6e9'``, ``100000000`` → ``'1e8'``, ``5000`` → ``'5000'``."""
    text = f"{n:.3g}"
    return text.replace("e+0", "e").replace("e+", "e")


def pixel_budget_error(
    what: str,
    width: int,
    height: int,
    budget: int,
    *,
    frames: int = 1,
    axes: str = "width x height",
) -> str | None:
    """The one-line refusal when ``width x height (x frames)`` exceeds ``budget``, else None."""
    n = int(width) * int(height) * max(1, int(frames))
    if n <= budget:
        return None
    size = f"{width}x{height}" + (f"x{frames}" if frames > 1 else "")
    axes = axes + (" x frames" if frames > 1 else "")
    return (
        f"{what} declares {size} ({axes}) = {_count(n)} pixels, above the {_count(budget)}-pixel "
        "budget (MAMMOSEG_MAX_IMAGE_PIXELS); refused before decoding"
    )


def _header_int(ds: Any, keyword: str, default: int) -> int:
    """An integer header value; a missing, empty or malformed one is ``default``."""
    try:
        value = ds.get(keyword, None)
        return int(value) if value not in (None, "") else default
    except Exception:  # noqa: BLE001 - pydicom converts lazily and raises many types
        return default


@dataclass(frozen=True)
class DicomDimensions:
    """What the header declares: ``rows`` x ``columns``, ``frames``, ``samples`` per pixel."""

    rows: int
    columns: int
    frames: int
    samples: int

    @property
    def pixels(self) -> int:
        return self.rows * self.columns * max(1, self.frames)


def _dimensions(ds: Any) -> DicomDimensions:
    return DicomDimensions(
        rows=_header_int(ds, "Rows", 0),
        columns=_header_int(ds, "Columns", 0),
        frames=_header_int(ds, "NumberOfFrames", 1) or 1,
        samples=_header_int(ds, "SamplesPerPixel", 1) or 1,
    )


def read_dimensions(data: bytes) -> DicomDimensions:
    """Rows, Columns, NumberOfFrames and SamplesPerPixel, reading the header only (the pixel
    data is neither read nor decoded, compressed or not). Raises :class:`DicomError`."""
    with _quiet_pydicom():
        return _dimensions(_parse(data, stop_before_pixels=True))


def check_budget(dims: DicomDimensions, budget: int) -> None:
    """Raise :class:`DicomError` when the declared image is above the pixel ``budget``."""
    reason = pixel_budget_error(
        "DICOM", dims.columns, dims.rows, budget, frames=dims.frames, axes="Columns x Rows"
    )
    if reason:
        raise DicomError(reason)


def _check_image(ds: Any, n_bytes: int, budget: int) -> None:
    if "PixelData" not in ds:
        others = [k for k in ("FloatPixelData", "DoubleFloatPixelData") if k in ds]
        if others:
            raise DicomError(f"unsupported pixel data element ({others[0]})")
        raise DicomError("no pixel data (header-only DICOM object)")
    # the budget is checked on the header, before any decoder allocates rows x columns
    check_budget(_dimensions(ds), budget)
    phot = _text(ds, "PhotometricInterpretation").upper()
    if phot not in ("MONOCHROME1", "MONOCHROME2"):
        raise DicomError(
            f"unsupported photometric interpretation {phot or 'missing'!r} "
            "(only grayscale MONOCHROME1/MONOCHROME2)"
        )
    dims = _dimensions(ds)
    if dims.samples != 1:
        raise DicomError("unsupported: more than one sample per pixel")
    if dims.frames != 1:
        raise DicomError(f"unsupported: multi-frame DICOM ({dims.frames} frames)")
    rows, cols = dims.rows, dims.columns
    if rows <= 0 or cols <= 0:
        raise DicomError(f"invalid image size {rows}x{cols}")
    ts = ds.file_meta.get("TransferSyntaxUID", None)
    if ts is not None and not ts.is_transfer_syntax:
        raise DicomError(f"unsupported transfer syntax {ts} (not a known transfer syntax UID)")
    if ts is not None and not ts.is_compressed:
        bits_alloc = int(ds.get("BitsAllocated", 0) or 0)
        if bits_alloc not in (1, 8, 16, 32):
            raise DicomError(f"unsupported Bits Allocated {bits_alloc}")
        expected = (rows * cols * bits_alloc + 7) // 8
        have = len(ds.PixelData)
        if have < expected:
            raise DicomError(
                f"truncated DICOM (pixel data has {have} of {expected} bytes; "
                f"file is {n_bytes} bytes)"
            )


def _pixel_array(ds: Any) -> np.ndarray:
    native = _native_pixels(ds)
    if native is not None:
        return native
    ts = ds.file_meta.get("TransferSyntaxUID", None)
    try:
        arr = ds.pixel_array
    except (NotImplementedError, RuntimeError) as exc:
        name = getattr(ts, "name", str(ts))
        raise DicomError(
            f"unsupported transfer syntax {name} ({ts}): no pixel decoder available"
        ) from exc
    except Exception as exc:  # decoder plugins raise their own types
        msg = str(exc)
        if "length" in msg.lower() or isinstance(exc, EOFError):
            raise DicomError(f"truncated DICOM (pixel data shorter than expected: {msg})") from exc
        raise DicomError(f"undecodable pixel data ({type(exc).__name__}: {msg})") from exc
    if arr.ndim != 2:
        raise DicomError(f"unsupported pixel array shape {arr.shape} (expected 2-D)")
    return arr


def _stored_range(ds: Any) -> tuple[float, float]:
    bits = int(ds.get("BitsStored", 0) or ds.get("BitsAllocated", 16))
    if int(ds.get("PixelRepresentation", 0) or 0) == 0:
        return 0.0, float(2**bits - 1)
    return float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)


def _lut_bits(item: Any) -> int:
    return int(list(item.LUTDescriptor)[2])


def _to_display_values(arr: np.ndarray, ds: Any, with_voi: bool) -> tuple[np.ndarray, float, float]:
    """Modality LUT, then VOI; returns the values and their nominal output range ``[lo, hi]``."""
    from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing

    lo, hi = _stored_range(ds)
    values = arr
    if ds.get("ModalityLUTSequence"):
        values = apply_modality_lut(arr, ds)
        lo, hi = 0.0, float(2 ** _lut_bits(ds.ModalityLUTSequence[0]) - 1)
    elif "RescaleSlope" in ds and "RescaleIntercept" in ds:
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        if slope == 0:
            raise DicomError("invalid Rescale Slope 0")
        values = apply_modality_lut(arr, ds)
        lo, hi = sorted((lo * slope + intercept, hi * slope + intercept))

    if not with_voi:
        return values, lo, hi

    voi_seq = ds.get("VOILUTSequence")
    has_lut = bool(voi_seq) and all(
        voi_seq[0].get(k, None) is not None for k in ("LUTDescriptor", "LUTData")
    )
    has_window = (
        ds.get("WindowCenter", None) is not None and ds.get("WindowWidth", None) is not None
    )
    try:
        if has_lut:
            if not np.issubdtype(values.dtype, np.integer):
                values = np.rint(values).astype(np.int64)
            bits = _lut_bits(voi_seq[0])
            values = apply_voi(values, ds, 0)
            lo, hi = 0.0, float(2**bits - 1)
        elif has_window:
            # pydicom's output range: the modality output range as above
            values = apply_windowing(values, ds, 0)
    except (ValueError, NotImplementedError) as exc:
        raise DicomError(f"invalid VOI LUT / window ({exc})") from exc
    return values, lo, hi


def decode_dicom(
    data: bytes, *, apply_voi: bool = True, max_pixels: int | None = None
) -> DecodedDicom:
    """Decode one grayscale DICOM image to ``uint16`` display pixels (see module docstring).

    Raises :class:`DicomError` (not a DICOM file, truncated, no pixel data, unsupported transfer
    syntax / photometric interpretation / multi-frame, invalid window, or Rows x Columns x
    frames above the pixel budget ``max_pixels`` — default :func:`max_image_pixels` — which is
    checked on the header before the pixel data is decoded, compressed or not). Any other
    failure of the parser or the pixel decoders (including ``MemoryError``) is a
    :class:`DicomError` too, naming the exception type only (its text could quote the header).
    """
    budget = max_image_pixels(max_pixels)
    with _quiet_pydicom():
        ds = _parse(data, stop_before_pixels=False)
        with _decode_errors(ds):
            _check_image(ds, len(data), budget)
            arr = _pixel_array(ds)
            monochrome1 = _text(ds, "PhotometricInterpretation").upper() == "MONOCHROME1"
            pixels = _display_by_lut(arr, ds, apply_voi, monochrome1)
            if pixels is None:
                values, lo, hi = _to_display_values(arr, ds, apply_voi)
                pixels = _display_pixels(values, lo, hi, monochrome1)
            meta = _safe_meta(ds)
            return DecodedDicom(pixels=pixels, meta=meta)


#: Uncompressed little-endian transfer syntaxes whose pixel data is read in place.
_NATIVE_LE = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")
#: Rows per chunk when a 16-bit look-up table is applied with ``np.take`` (keeps the int64
#: index copy numpy makes small: about 3x faster than one call on a 15-megapixel image).
_TAKE_ROWS = 64


def _native_pixels(ds: Any) -> np.ndarray | None:
    """The stored values of an uncompressed little-endian unsigned 8/16-bit image, without
    pydicom's pixel handlers (a ``np.frombuffer`` view of the already-read pixel data), or None
    when the image is anything else (those go through ``ds.pixel_array``).

    Only when Bits Stored equals Bits Allocated, so no bit masking is needed: the values are
    exactly what ``pixel_array`` returns. :func:`_check_image` has checked the length already.
    """
    ts = ds.file_meta.get("TransferSyntaxUID", None)
    if ts is None or str(ts) not in _NATIVE_LE:
        return None
    bits = _header_int(ds, "BitsAllocated", 0)
    if bits not in (8, 16) or _header_int(ds, "BitsStored", 0) != bits:
        return None
    if _header_int(ds, "PixelRepresentation", 0) != 0 or _header_int(ds, "SamplesPerPixel", 1) != 1:
        return None
    rows, cols = _header_int(ds, "Rows", 0), _header_int(ds, "Columns", 0)
    data = ds.PixelData
    if not isinstance(data, (bytes, bytearray)) or rows <= 0 or cols <= 0:
        return None
    dtype = np.dtype("<u2") if bits == 16 else np.dtype(np.uint8)
    if len(data) < rows * cols * dtype.itemsize:
        return None
    return np.frombuffer(data, dtype=dtype, count=rows * cols).reshape(rows, cols)


def _display_by_lut(
    arr: np.ndarray, ds: Any, with_voi: bool, monochrome1: bool
) -> np.ndarray | None:
    """:func:`_display_pixels` of :func:`_to_display_values` for a uint8/uint16 image, computed
    once per possible stored value (a 256- or 65536-entry table) instead of once per pixel, and
    applied with OpenCV: bit-identical to the per-pixel path (both are pure functions of the
    stored value). None for other dtypes (the caller then takes the per-pixel path).

    * identity table (unsigned 16 bits, no rescale/VOI, MONOCHROME2): a copy;
    * 8 bits: ``cv2.LUT``;
    * 16 bits, table equal to a saturated affine map (inversion, rescale, bit-depth scaling, a
      linear window), checked on every entry: ``cv2.addWeighted`` (one pass);
    * any other 16-bit table (VOI LUT, sigmoid window): ``np.take`` by blocks of rows.
    """
    lut = _display_table(arr, ds, with_voi, monochrome1)
    if lut is None:
        return None
    n = lut.size
    domain = np.arange(n, dtype=arr.dtype)
    if n == 256:
        return _lut8(np.ascontiguousarray(arr), lut)
    if np.array_equal(lut, domain):
        return np.array(arr, copy=True)
    affine = _as_affine(lut)
    if affine is not None:
        return _affine_16u(arr, *affine)
    out = np.empty(arr.shape, dtype=np.uint16)
    for i in range(0, arr.shape[0], _TAKE_ROWS):
        np.take(lut, arr[i : i + _TAKE_ROWS], out=out[i : i + _TAKE_ROWS])
    return out


def _display_table(
    arr: np.ndarray, ds: Any, with_voi: bool, monochrome1: bool
) -> np.ndarray | None:
    """The display value (uint16) of every possible stored value of a 2-D uint8/uint16
    array, by the per-pixel functions themselves; None for other arrays."""
    if arr.ndim != 2 or arr.dtype not in (np.uint8, np.uint16):
        return None
    n = 256 if arr.dtype == np.uint8 else 65536
    values, lo, hi = _to_display_values(np.arange(n, dtype=arr.dtype), ds, with_voi)
    lut = _display_pixels(np.asarray(values), lo, hi, monochrome1)
    if lut.shape != (n,) or lut.dtype != np.uint16:
        return None
    return lut


def _nonzero_box(img: np.ndarray) -> tuple[int, int, int, int] | None:
    rows = np.flatnonzero(img.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(img[rows[0] : rows[-1] + 1].any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


@dataclass(frozen=True, eq=False)
class SparseDicom:
    """A decoded image given by the box of its nonzero display pixels (a lesion mask).

    ``box`` is ``(y0, y1, x0, x1)`` (None: all zeros) and ``values`` the uint16 display pixels
    inside it: :meth:`dense` is exactly :func:`decode_dicom`'s ``pixels``.
    """

    shape: tuple[int, int]
    box: tuple[int, int, int, int] | None
    values: np.ndarray
    meta: SafeMeta

    def dense(self) -> np.ndarray:
        out = np.zeros(self.shape, dtype=np.uint16)
        if self.box is not None:
            y0, y1, x0, x1 = self.box
            out[y0:y1, x0:x1] = self.values
        return out


def decode_dicom_sparse(
    data: bytes, *, apply_voi: bool = True, max_pixels: int | None = None
) -> SparseDicom:
    """:func:`decode_dicom` for a mostly-zero image: when the display map sends stored 0, and
    only 0, to 0 (a MONOCHROME2 mask), the box is found on the stored values and only the box
    is mapped; otherwise the whole image is decoded and cut. Same errors as :func:`decode_dicom`.
    """
    budget = max_image_pixels(max_pixels)
    with _quiet_pydicom():
        ds = _parse(data, stop_before_pixels=False)
        with _decode_errors(ds):
            _check_image(ds, len(data), budget)
            arr = _pixel_array(ds)
            monochrome1 = _text(ds, "PhotometricInterpretation").upper() == "MONOCHROME1"
            lut = _display_table(arr, ds, apply_voi, monochrome1)
            meta = _safe_meta(ds)
    shape = (int(arr.shape[0]), int(arr.shape[1]))
    if lut is not None and lut[0] == 0 and np.all(lut[1:] != 0):
        box = _nonzero_box(arr)
        if box is None:
            return SparseDicom(shape, None, np.zeros((0, 0), dtype=np.uint16), meta)
        y0, y1, x0, x1 = box
        return SparseDicom(shape, box, np.take(lut, arr[y0:y1, x0:x1]), meta)
    full = decode_dicom(data, apply_voi=apply_voi, max_pixels=budget).pixels
    box = _nonzero_box(full)
    if box is None:
        return SparseDicom(shape, None, np.zeros((0, 0), dtype=np.uint16), meta)
    y0, y1, x0, x1 = box
    return SparseDicom(shape, box, full[y0:y1, x0:x1].copy(), meta)


def _lut8(arr: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """``lut[arr]`` for a uint8 image (OpenCV, one pass)."""
    import cv2

    return cv2.LUT(arr, lut)


def _affine_16u(arr: np.ndarray, scale: float, offset: float) -> np.ndarray:
    """``saturate(round(scale * arr + offset))`` as uint16 (OpenCV, one pass)."""
    import cv2

    src = np.ascontiguousarray(arr)
    return cv2.addWeighted(src, scale, src, 0.0, offset, dtype=cv2.CV_16U)


def _as_affine(lut: np.ndarray) -> tuple[float, float] | None:
    """``(scale, offset)`` when :func:`_affine_16u` of every index reproduces ``lut`` exactly."""
    inner = np.flatnonzero((lut > 0) & (lut < 65535))
    if inner.size < 2:
        return None
    i0, i1 = int(inner[0]), int(inner[-1])
    if i1 - i0 < 16:
        return None
    # The map's exact scale and offset are not known (the table is rounded): take them from
    # the two table ends, then refine from the mid-points of their rounding intervals.
    scale = (float(lut[i1]) - float(lut[i0])) / (i1 - i0)
    offset = float(lut[i0]) - scale * i0
    domain = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    if np.array_equal(_affine_16u(domain, scale, offset).ravel(), lut):
        return scale, offset
    return None


def _display_pixels(values: np.ndarray, lo: float, hi: float, monochrome1: bool) -> np.ndarray:
    """Step 3 and 4 of the module docstring: inversion and the map of ``[lo, hi]`` to 16 bits."""
    if lo == 0.0 and hi == 65535.0 and values.dtype == np.uint16:
        pixels = (np.uint16(65535) - values) if monochrome1 else values.copy()
    else:
        span = hi - lo
        if span <= 0:
            raise DicomError(f"degenerate value range [{lo}, {hi}]")
        scaled = values.astype(np.float64)  # always a new array
        if monochrome1:
            np.subtract(lo + hi, scaled, out=scaled)
        scaled -= lo
        scaled *= 65535.0 / span
        np.rint(scaled, out=scaled)
        np.clip(scaled, 0.0, 65535.0, out=scaled)
        pixels = scaled.astype(np.uint16)
    return np.ascontiguousarray(pixels)


# ----------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------


def _uid(*parts: object) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=[str(p) for p in parts]))


def make_uid(*parts: object) -> str:
    """A deterministic DICOM UID (pydicom root + SHA-512 of ``parts``): same parts, same UID."""
    return _uid(*parts)


def write_dicom(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    series_description: str = "",
    modality: str = "MG",
    patient_id: str = "SYNTHETIC",
    patient_name: str = "SYNTHETIC^PATIENT",
    birth_date: str = "",
    study_date: str = "",
    study_uid: str | None = None,
    series_uid: str | None = None,
    instance_number: int = 1,
    laterality: str | None = None,
    view: str | None = None,
    window: tuple[float, float] | None = None,
    voi_lut: VoiLut | None = None,
    rescale: tuple[float, float] | None = None,
    bits_stored: int = 16,
    with_pixel_data: bool = True,
) -> bytes:
    """An uncompressed Explicit VR Little Endian Secondary Capture DICOM (Modality ``modality``).

    ``pixels`` are the **stored** values, written as given (for MONOCHROME1 pass the inverted
    values); they must be non-negative integers below ``2**bits_stored``. ``bits_stored`` 1–8
    gives 8-bit storage, 9–16 gives 16-bit. ``window`` is ``(center, width)`` and ``rescale``
    ``(slope, intercept)``, both in modality units. ``laterality`` (``"L"``/``"R"``) goes to
    *Image Laterality*, ``view`` to *View Position*. UIDs left ``None`` are derived
    deterministically from the other arguments, so the same call gives the same bytes.
    ``with_pixel_data=False`` writes a header-only object (for defect tests).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filewriter import dcmwrite
    from pydicom.sequence import Sequence
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

    arr = np.asarray(pixels)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"write_dicom needs a non-empty 2-D array, got shape {arr.shape}")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"write_dicom needs integer stored values, got {arr.dtype}")
    if not 1 <= bits_stored <= 16:
        raise ValueError(f"bits_stored must be 1..16, got {bits_stored}")
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"photometric must be MONOCHROME1 or MONOCHROME2, got {photometric!r}")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= 2**bits_stored:
        raise ValueError(f"stored values {lo}..{hi} do not fit in {bits_stored} unsigned bits")
    rows, cols = arr.shape
    if rows > 65535 or cols > 65535:
        raise ValueError(f"image {rows}x{cols} too large for DICOM Rows/Columns")
    if laterality is not None and laterality not in ("L", "R"):
        raise ValueError(f"laterality must be 'L', 'R' or None, got {laterality!r}")

    bits_alloc = 8 if bits_stored <= 8 else 16
    raw = arr.astype("<u2" if bits_alloc == 16 else "u1").tobytes()
    if len(raw) % 2:
        raw += b"\x00"
    digest = hashlib.sha256(raw).hexdigest()

    study_uid = study_uid or _uid("study", patient_id, study_date)
    series_uid = series_uid or _uid("series", study_uid, series_description)
    sop_uid = _uid("instance", series_uid, instance_number, digest, photometric, series_description)

    # pydicom validates values as they are set and written; its warnings would quote them
    with _quiet_pydicom(catch_warnings=True):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = _SECONDARY_CAPTURE
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = _EXPLICIT_VR_LE
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = "MAMMOSEG_SYNTH"

        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID = _SECONDARY_CAPTURE
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = study_date
        ds.StudyTime = ""
        ds.AccessionNumber = ""
        ds.Modality = modality
        ds.ConversionType = "WSD"
        ds.ReferringPhysicianName = ""
        ds.SeriesDescription = series_description
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = birth_date
        ds.PatientSex = ""
        ds.BodyPartExamined = "BREAST"
        if view is not None:
            ds.ViewPosition = view
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = ""
        ds.SeriesNumber = 1
        ds.InstanceNumber = int(instance_number)
        ds.PatientOrientation = ""
        if laterality is not None:
            ds.ImageLaterality = laterality
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = photometric
        ds.Rows = rows
        ds.Columns = cols
        ds.BitsAllocated = bits_alloc
        ds.BitsStored = bits_stored
        ds.HighBit = bits_stored - 1
        ds.PixelRepresentation = 0
        if window is not None:
            center, width = window
            if width < 1:
                raise ValueError(f"window width must be >= 1, got {width}")
            ds.WindowCenter = f"{float(center):.6g}"
            ds.WindowWidth = f"{float(width):.6g}"
        if rescale is not None:
            slope, intercept = rescale
            if slope == 0:
                raise ValueError("rescale slope must not be 0")
            ds.RescaleIntercept = f"{float(intercept):.6g}"
            ds.RescaleSlope = f"{float(slope):.6g}"
            ds.RescaleType = "US"
        if voi_lut is not None:
            table = np.asarray(voi_lut.table)
            if table.ndim != 1 or not 1 <= table.size <= 65536:
                raise ValueError("VOI LUT table must be 1-D with 1..65536 entries")
            if not (voi_lut.bits == 8 or 10 <= voi_lut.bits <= 16):
                raise ValueError(f"VOI LUT bits must be 8 or 10..16, got {voi_lut.bits}")
            if table.min() < 0 or table.max() >= 2**voi_lut.bits:
                raise ValueError(f"VOI LUT values do not fit in {voi_lut.bits} bits")
            if not 0 <= voi_lut.first_mapped < 65536:
                raise ValueError("VOI LUT first_mapped must be 0..65535")
            item = Dataset()
            n = table.size % 65536
            item.add_new(0x00283002, "US", [n, int(voi_lut.first_mapped), int(voi_lut.bits)])
            item.add_new(0x00283006, "OW", table.astype("<u2").tobytes())
            ds.VOILUTSequence = Sequence([item])
        if with_pixel_data:
            ds.add_new(0x7FE00010, "OW" if bits_alloc == 16 else "OB", raw)

        buf = BytesIO()
        dcmwrite(buf, ds, enforce_file_format=True)
        return buf.getvalue()
