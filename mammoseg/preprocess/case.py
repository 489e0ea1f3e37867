"""Case level: one image (and its lesion masks) from a store → one NPZ in another store.

Output keys are content-addressed::

    preprocessed/<params.digest()>/<input hash>.npz    image, mask, lesion_masks, breast_mask,
                                                       transform (JSON string)
    preprocessed/<params.digest()>/<input hash>.json   the CaseResult fields (no pixels)

The input hash covers the image's ETag, each mask's ETag (or its geometry JSON), the laterality
hint and the parameter digest, so a rerun with the same inputs finds both objects and returns
without reading a pixel (``cached=True``). The JSON is written after the NPZ and is the cache
marker. Neither object holds source keys, file names or anything from a DICOM header.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import asdict, dataclass, replace
from typing import Literal

import numpy as np

from mammoseg import imageio
from mammoseg.dicom import DicomError
from mammoseg.masks import GeometryError, parse_geometry, render_geometry
from mammoseg.preprocess.arrays import PreprocessedCase, preprocess_arrays
from mammoseg.preprocess.errors import (
    ImageDecodeError,
    MaskDecodeError,
    MaskNotFoundError,
    MaskShapeError,
    PreprocessError,
)
from mammoseg.preprocess.params import PreprocessParams
from mammoseg.preprocess.steps import border_crop
from mammoseg.preprocess.transform import Transform
from mammoseg.storage import ObjectNotFound, ObjectStore, join_key, validate_key

OUTPUT_PREFIX = "preprocessed"
#: A decoded mask is "binary" when at most this fraction of its pixels is mid-grey
#: (between 1/4 and 3/4 of its dtype's range): JPEG ringing passes, a grey image does not.
MAX_MID_GREY_FRACTION = 0.005
#: ... or when its mid-grey pixels are at most this share of its foreground pixels: the grey then
#: lies along the edges only, as in lossy (JPEG) masks such as CDD-CESM's, whose edge ringing
#: reaches up to ~0.8% of the image (15% of the lesion) while an image passed as a mask has
#: mid-grey pixels several times its bright ones.
MAX_MID_GREY_PER_FOREGROUND = 0.25


@dataclass(frozen=True)
class MaskRef:
    """One lesion mask: an object ``key`` in the source store (DICOM/PNG/JPEG) *or* a
    ``geometry`` JSON (see :mod:`mammoseg.casetable`) in original pixel coordinates."""

    key: str | None = None
    geometry: str | None = None

    def __post_init__(self) -> None:
        if (self.key is None) == (self.geometry is None):
            raise ValueError("a MaskRef needs exactly one of key= or geometry=")
        if self.key is not None:
            validate_key(self.key)


@dataclass(frozen=True)
class PairingInfo:
    """Image/mask pairing facts on the ORIGINAL arrays, for the GX pairing suite.

    ``lesion_id`` None: the image-level summary (:attr:`CaseResult.pairing`, ``exc.pairing``),
    where ``mask_*`` describe the union of the lesion masks (heights/widths: the first mask
    whose shape differs from the image, else the common shape); filled as far as the case got,
    a failure leaves later fields ``None``. With no lesion mask ``mask_found`` is True, the
    shapes None and ``mask_pixels`` 0. ``lesion_id`` 1..N: one lesion's mask
    (:attr:`CaseResult.lesion_pairing`); 0: the single row of an image without lesions.
    """

    image_found: bool
    mask_found: bool | None = None
    n_masks: int = 0
    image_height: int | None = None
    image_width: int | None = None
    mask_height: int | None = None
    mask_width: int | None = None
    mask_binary: bool | None = None
    mask_pixels: int | None = None
    mask_in_breast_fraction: float | None = None
    lesion_id: int | None = None

    def to_record(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class CaseResult:
    """A small record (no arrays) describing one preprocessed case."""

    npz_key: str
    npz_etag: str
    meta_key: str
    input_hash: str
    params_digest: str
    cached: bool
    transform: Transform
    pairing: PairingInfo
    n_lesions: int
    lesion_fraction: float
    breast_fraction: float
    chest_wall_side: Literal["L", "R"]
    side_source: Literal["pixels", "laterality"]
    crop_extended: bool
    lost_lesions: int = 0
    lesion_pairing: tuple[PairingInfo, ...] = ()

    @property
    def flipped(self) -> bool:
        return self.transform.flipped

    def to_record(self) -> dict[str, object]:
        """Flat dict for manifests: keys, fractions, transform JSON and the pairing fields."""
        rec: dict[str, object] = {
            "npz_key": self.npz_key,
            "npz_etag": self.npz_etag,
            "input_hash": self.input_hash,
            "params_digest": self.params_digest,
            "cached": self.cached,
            "n_lesions": self.n_lesions,
            "lesion_fraction": self.lesion_fraction,
            "breast_fraction": self.breast_fraction,
            "flipped": self.flipped,
            "chest_wall_side": self.chest_wall_side,
            "side_source": self.side_source,
            "crop_extended": self.crop_extended,
            "lost_lesions": self.lost_lesions,
            "transform": self.transform.to_json(),
        }
        rec.update(self.pairing.to_record())
        del rec["lesion_id"]
        return rec

    def pairing_records(self) -> list[dict[str, object]]:
        """Rows for the GX pairing suite: one per lesion (``lesion_id`` 1..N), or one row with
        ``lesion_id`` 0 for an image without lesions."""
        if self.lesion_pairing:
            return [p.to_record() for p in self.lesion_pairing]
        return [replace(self.pairing, lesion_id=0).to_record()]


@dataclass(frozen=True, eq=False)
class PreprocessedArrays:
    """What an NPZ written by :func:`preprocess_case` holds."""

    image: np.ndarray  # uint16 S x S
    mask: np.ndarray  # uint8 S x S, 0/1
    lesion_masks: np.ndarray  # uint8 N x S x S, 0/1
    breast_mask: np.ndarray  # uint8 S x S, 0/1
    transform: Transform


# -- NPZ ---------------------------------------------------------------------------------------
def npz_bytes(case: PreprocessedCase) -> bytes:
    """Lossless NPZ of a preprocessed case (no pickles), readable by ``np.load``.

    The image is stored uncompressed (16-bit texture gains little from deflate and costs more
    to compress than the rest of preprocessing); the masks and the transform are deflated at
    level 1 (mostly zeros: a few KiB each).
    """
    arrays = {
        "image": (case.image, zipfile.ZIP_STORED),
        "mask": (case.mask, zipfile.ZIP_DEFLATED),
        "lesion_masks": (case.lesion_masks, zipfile.ZIP_DEFLATED),
        "breast_mask": (case.breast_mask, zipfile.ZIP_DEFLATED),
        "transform": (np.array(case.transform.to_json()), zipfile.ZIP_DEFLATED),
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, (arr, method) in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asanyarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = method
            zf.writestr(info, member.getvalue(), compress_type=method, compresslevel=1)
    return buf.getvalue()


def load_preprocessed(data: bytes) -> PreprocessedArrays:
    """Read :func:`npz_bytes` output back (``allow_pickle=False``); ValueError if malformed."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {
                k: z[k] for k in ("image", "mask", "lesion_masks", "breast_mask", "transform")
            }
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f"not a preprocessed-case NPZ: {exc}") from None
    return PreprocessedArrays(
        image=arrays["image"],
        mask=arrays["mask"],
        lesion_masks=arrays["lesion_masks"],
        breast_mask=arrays["breast_mask"],
        transform=Transform.from_json(str(arrays["transform"])),
    )


def read_preprocessed(store: ObjectStore, key: str) -> PreprocessedArrays:
    """:func:`load_preprocessed` of an object in ``store``."""
    return load_preprocessed(store.read_bytes(key))


# -- keys ----------------------------------------------------------------------------------------
def input_hash(
    image_etag: str,
    mask_parts: list[dict[str, str]],
    params: PreprocessParams,
    laterality: str | None,
) -> str:
    """24 hex digits of SHA-256 over everything that determines the output."""
    payload = {
        "image_etag": image_etag,
        "masks": mask_parts,
        "params": params.digest(),
        "laterality": laterality or "",
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def output_key(params: PreprocessParams, digest: str, suffix: str = ".npz") -> str:
    return join_key(OUTPUT_PREFIX, params.digest(), digest + suffix)


# -- decoding --------------------------------------------------------------------------------------
def _is_binary(raw: np.ndarray, n_pixels: int | None = None) -> bool:
    """A decoded mask is binary when mid-grey pixels are rare in the image or confined to edges.

    ``raw`` may be the box of the nonzero pixels only (both counts are of nonzero pixels);
    ``n_pixels`` is then the whole image's pixel count (default: ``raw.size``).
    """
    if raw.dtype == np.bool_:
        return True
    top = float(np.iinfo(raw.dtype).max) if raw.dtype.kind in "ui" else 1.0
    total = raw.size if n_pixels is None else n_pixels
    mid = np.count_nonzero((raw > 0.25 * top) & (raw < 0.75 * top))
    foreground = np.count_nonzero(raw >= 0.5 * top)
    return bool(
        mid <= MAX_MID_GREY_FRACTION * total or mid <= MAX_MID_GREY_PER_FOREGROUND * foreground
    )


def decode_mask(
    data: bytes, key: str, index: int, *, max_pixels: int | None = None
) -> tuple[np.ndarray, bool]:
    """(bool mask, is_binary) of a mask object; raises :class:`MaskDecodeError`.

    The mask is :func:`mammoseg.imageio.load_mask`'s; "binary" is judged on the raw decoded
    values (DICOM without VOI), the very pixels the mask is made from (one decode).
    ``max_pixels``: the pixel budget (default: the setting).
    """
    try:
        mask, raw = imageio.decode_mask(data, key, max_pixels=max_pixels)
    except (imageio.ImageDecodeError, DicomError) as exc:
        raise MaskDecodeError(f"lesion mask {index} cannot be decoded: {exc}") from exc
    return mask, _is_binary(raw, mask.size)


def _render(geometry: str, shape: tuple[int, int], index: int) -> np.ndarray:
    try:
        return render_geometry(geometry, shape)
    except GeometryError as exc:
        raise MaskDecodeError(f"lesion mask {index} geometry cannot be rendered: {exc}") from exc


def _result_from_meta(meta: dict, *, npz_key: str, npz_etag: str, meta_key: str) -> CaseResult:
    return CaseResult(
        npz_key=npz_key,
        npz_etag=npz_etag,
        meta_key=meta_key,
        input_hash=meta["input_hash"],
        params_digest=meta["params_digest"],
        cached=True,
        transform=Transform.from_json(meta["transform"]),
        pairing=PairingInfo(**meta["pairing"]),
        n_lesions=int(meta["n_lesions"]),
        lesion_fraction=float(meta["lesion_fraction"]),
        breast_fraction=float(meta["breast_fraction"]),
        chest_wall_side=meta["chest_wall_side"],
        side_source=meta["side_source"],
        crop_extended=bool(meta["crop_extended"]),
        lost_lesions=int(meta.get("lost_lesions", 0)),
        lesion_pairing=tuple(PairingInfo(**p) for p in meta.get("lesion_pairing", [])),
    )


# -- the case ----------------------------------------------------------------------------------------
def preprocess_case(
    source: ObjectStore,
    image_key: str,
    lesion_masks: list[MaskRef],
    out: ObjectStore,
    params: PreprocessParams | None = None,
    *,
    laterality: str | None = None,
) -> CaseResult:
    """Preprocess one image of ``source`` with its lesion masks into ``out`` (see module doc).

    Raises a :class:`PreprocessError` subclass, with ``exc.pairing`` filled as far as known
    (messages name no object key: source keys can embed dataset patient ids):
    :class:`ImageDecodeError` (image missing or undecodable), :class:`MaskNotFoundError`,
    :class:`MaskDecodeError`, :class:`MaskShapeError` (mask size ≠ image size),
    :class:`~.errors.NoBreastError`, :class:`~.errors.AlignmentError`.
    """
    params = params or PreprocessParams()
    refs = list(lesion_masks)
    n = len(refs)

    # 1. cheap metadata first: every input must exist, and the ETags make the output key.
    try:
        image_etag = source.head(image_key).etag
    except ObjectNotFound:
        raise ImageDecodeError(
            "image object not found in the source store", pairing=PairingInfo(False, n_masks=n)
        ) from None
    parts: list[dict[str, str]] = []
    for i, ref in enumerate(refs, start=1):
        if ref.key is not None:
            try:
                parts.append({"etag": source.head(ref.key).etag})
            except ObjectNotFound:
                raise MaskNotFoundError(
                    f"lesion mask {i} object not found in the source store",
                    pairing=PairingInfo(True, mask_found=False, n_masks=n),
                ) from None
        else:
            try:
                geom = parse_geometry(str(ref.geometry))
            except GeometryError as exc:
                raise MaskDecodeError(
                    f"lesion mask {i} geometry cannot be rendered: {exc}",
                    pairing=PairingInfo(True, mask_found=True, n_masks=n),
                ) from exc
            parts.append({"geometry": json.dumps(geom, sort_keys=True, separators=(",", ":"))})
    digest = input_hash(image_etag, parts, params, laterality)
    npz_key = output_key(params, digest, ".npz")
    meta_key = output_key(params, digest, ".json")

    # 2. cache: both objects present → no pixel is read.
    try:
        npz_info = out.head(npz_key)
        meta = json.loads(out.read_bytes(meta_key))
        return _result_from_meta(meta, npz_key=npz_key, npz_etag=npz_info.etag, meta_key=meta_key)
    except ObjectNotFound:
        pass
    except (ValueError, KeyError, TypeError):
        pass  # unreadable sidecar from an older/broken run: recompute and overwrite

    # 3. decode.
    budget = imageio.max_image_pixels()  # the settings are read once per case
    try:
        image = imageio.load_image(source.read_bytes(image_key), image_key, max_pixels=budget)
    except (imageio.ImageDecodeError, DicomError) as exc:
        raise ImageDecodeError(
            f"image cannot be decoded: {exc}",
            pairing=PairingInfo(True, n_masks=n),
        ) from exc
    shape = (int(image.shape[0]), int(image.shape[1]))
    base = {"image_found": True, "n_masks": n, "image_height": shape[0], "image_width": shape[1]}

    masks: list[np.ndarray] = []
    binaries: list[bool] = []
    binary = True
    for i, ref in enumerate(refs, start=1):
        try:
            if ref.key is not None:
                m, is_binary = decode_mask(
                    source.read_bytes(ref.key), ref.key, i, max_pixels=budget
                )
            else:
                m, is_binary = _render(str(ref.geometry), shape, i), True
        except MaskDecodeError as exc:
            exc.pairing = PairingInfo(**base, mask_found=True)
            raise
        binary = binary and is_binary
        binaries.append(is_binary)
        if m.shape != shape:
            raise MaskShapeError(
                f"lesion mask {i} is {m.shape[0]}x{m.shape[1]} but the image is "
                f"{shape[0]}x{shape[1]} (height x width)",
                pairing=PairingInfo(
                    **base,
                    mask_found=True,
                    mask_height=int(m.shape[0]),
                    mask_width=int(m.shape[1]),
                    mask_binary=binary,
                ),
            )
        masks.append(m)
    union = np.logical_or.reduce(masks) if masks else None
    pairing_kw: dict[str, object] = {
        **base,
        "mask_found": True,
        "mask_height": shape[0] if masks else None,
        "mask_width": shape[1] if masks else None,
        "mask_binary": binary if masks else None,
        "mask_pixels": int(np.count_nonzero(union)) if union is not None else 0,
    }

    # 4. preprocess (the breast is found once, for the pairing facts and the crop).
    try:
        found = border_crop(image, params)
        pairing_kw["mask_in_breast_fraction"] = (
            found.fraction_inside(union) if union is not None else None
        )
        case = preprocess_arrays(image, masks, params, laterality=laterality, crop=found)
    except PreprocessError as exc:
        exc.pairing = PairingInfo(**pairing_kw)  # type: ignore[arg-type]
        raise
    pairing = PairingInfo(**pairing_kw)  # type: ignore[arg-type]
    lesion_pairing = [
        PairingInfo(
            **base,
            mask_found=True,
            mask_height=shape[0],
            mask_width=shape[1],
            mask_binary=is_binary,
            mask_pixels=int(np.count_nonzero(m)),
            mask_in_breast_fraction=frac,
            lesion_id=i,
        )
        for i, (m, is_binary, frac) in enumerate(
            zip(masks, binaries, case.lesion_in_breast, strict=True), start=1
        )
    ]

    # 5. write NPZ, then the sidecar (the cache marker).
    npz_info = out.write_bytes(npz_key, npz_bytes(case), content_type="application/octet-stream")
    meta = {
        "version": 1,
        "input_hash": digest,
        "params_digest": params.digest(),
        "params": params.to_dict(),
        "transform": case.transform.to_json(),
        "pairing": pairing.to_record(),
        "lesion_pairing": [p.to_record() for p in lesion_pairing],
        "n_lesions": n,
        "lesion_fraction": case.lesion_fraction,
        "breast_fraction": case.breast_fraction,
        "chest_wall_side": case.chest_wall_side,
        "side_source": case.side_source,
        "crop_extended": case.crop_extended,
        "lost_lesions": case.lost_lesions,
        "intensity_window": list(case.intensity_window),
    }
    out.write_bytes(
        meta_key, json.dumps(meta, sort_keys=True).encode("utf-8"), content_type="application/json"
    )
    result = _result_from_meta(meta, npz_key=npz_key, npz_etag=npz_info.etag, meta_key=meta_key)
    return replace(result, cached=False)
