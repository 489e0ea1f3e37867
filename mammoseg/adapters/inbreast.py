"""INbreast → lesion table, and INbreast ROI XML → mask.

Inputs under ``prefix``: ``INbreast.csv`` (';'-separated, CRLF; ``Patient ID`` and age are
``removed``), ``AllXML/<File Name>.xml`` (OsiriX ROI export, an Apple plist) and the images,
named ``<File Name>_<patient hash>_MG_<L|R>_<view>_ANON.<dcm|png>``, in ``image_dirs``
(``AllDICOMs`` in the real dataset, ``sample/scans/raw_mammogram`` in the shared sample).
Only the CSV, the listing and the XMLs of listed images are read; never pixels or DICOM headers.

Conventions:

* **Patient** = the hash in the image file name (the CSV has no usable patient id).
  Acquisition date and age are never copied.
* **Laterality / view** from the CSV; a file name that disagrees makes the image a reject.
  BI-RADS ``4a``/``4b``/``4c`` → 4; ACR density 1–4 (blank → <NA>).
* **ROIs → lesions**: every ROI of the XML becomes one lesion row (``lesion_id`` 1.. in XML
  order). ≥ 3 points → polygon of ``Point_px`` (pixel coordinates, top-left origin); 1–2 points
  (a single calcification) → circle around their mean with radius
  ``max(CALC_RADIUS_PX, half their distance)``; ``CALC_RADIUS_PX = 3`` px ≈ 0.2 mm at INbreast's
  70 µm pixels. ``Point_px`` is used as it is (0-based, integer = pixel centre): the shared
  sample's filled mask matches it at IoU 0.977 and would match at 0.994 shifted by one pixel
  down-right, which suggests that mask was drawn with 1-based (MATLAB) indices; we do not shift.
  ROI names map to ``abnormality_type`` with :func:`roi_abnormality` (Mass and Spiculated
  Region → mass, Calcification(s) and Cluster → calcification, Distortion → distortion,
  Asymmetry → asymmetry, anything else → other); the name is kept in ``lesion_detail``.
  Calcifications stay in the table so a training run chooses which abnormality types it
  segments by filtering ``abnormality_type``; the INbreast mass masks (``raw_annotation``) are
  reproduced by :func:`render_inbreast_mask` with its default ``types=("mass",)``.
* **Pathology**: INbreast gives no biopsy result per ROI, so lesion rows are UNKNOWN (BI-RADS
  is in ``birads``). An image without XML has no annotated finding: one row, ``lesion_id`` 0,
  abnormality normal, pathology NORMAL when BI-RADS is 1, else UNKNOWN.
* **Rejects**: CSV rows whose image is not in the store (:data:`IMAGE_ABSENT`), bad CSV values,
  every row of a File Name listed twice, images not in the CSV, duplicate images, an unreadable
  XML or an unusable ROI (the whole image is rejected, so it is never kept with part of its
  lesions missing), XMLs of unknown images.
"""

from __future__ import annotations

import io
import math
import plistlib
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from xml.parsers.expat import ExpatError

import numpy as np
import pandas as pd

from mammoseg.adapters.common import (
    IMAGE_ABSENT,
    AdapterError,
    AdapterResult,
    Reject,
    list_keys,
    read_text,
)
from mammoseg.casetable import circle_geometry, conform, polygon_geometry
from mammoseg.ids import case_pseudonym, patient_pseudonym
from mammoseg.masks import render_geometries
from mammoseg.storage import ObjectNotFound, ObjectStore, join_key

DATASET = "inbreast"
CSV_NAME = "INbreast.csv"
XML_DIR = "AllXML"
IMAGE_DIRS: tuple[str, ...] = ("AllDICOMs", "sample/scans/raw_mammogram")
#: Radius (pixels) of the circle drawn for a 1–2 point ROI (a single calcification).
CALC_RADIUS_PX = 3.0

_COLUMNS = ("Laterality", "View", "File Name", "ACR", "Bi-Rads")
_IMAGE_NAME = re.compile(
    r"^(?P<file>\d+)_(?P<patient>[0-9A-Za-z]+)_MG_(?P<side>[LR])_(?P<view>[A-Z]+)_ANON\.(?:dcm|png)$",
    re.IGNORECASE,
)
_POINT = re.compile(r"^\(\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*(?:,\s*[-+0-9.eE]+\s*)?\)$")
_BIRADS = re.compile(r"^([0-6])[abc]?$", re.IGNORECASE)
_VIEWS = ("CC", "MLO", "ML", "LM", "XCCL", "FB")


class InbreastXmlError(ValueError):
    """An INbreast ROI file that is not a readable plist of Images → ROIs → Point_px."""


@dataclass(frozen=True)
class InbreastRoi:
    """One ROI of an INbreast XML: its name and its points in pixels (top-left origin)."""

    index: int  # position in the file, 0-based over all images
    name: str
    points: tuple[tuple[float, float], ...]


def _parse_point(text: object) -> tuple[float, float] | None:
    """'(x, y)' (an optional third value is ignored) → (x, y); None if unreadable or not finite."""
    m = _POINT.match(text.strip()) if isinstance(text, str) else None
    if m is None:
        return None
    try:
        x, y = float(m.group(1)), float(m.group(2))
    except ValueError:
        return None
    return (x, y) if math.isfinite(x) and math.isfinite(y) else None


def parse_inbreast_rois(xml_bytes: bytes) -> list[InbreastRoi]:
    """All ROIs of an INbreast XML (Images → ROIs → ``Name``, ``Point_px``), in file order.

    Raises :class:`InbreastXmlError` if the file is not such a plist, or if an ROI has no points or
    an unreadable point; ``NumberOfPoints`` is not trusted (``Point_px`` is what gets drawn).
    """
    try:
        root = plistlib.load(io.BytesIO(xml_bytes), fmt=plistlib.FMT_XML)
    except (plistlib.InvalidFileException, ExpatError, ValueError, TypeError) as exc:
        raise InbreastXmlError(f"not a readable plist XML: {exc}") from None
    images = root.get("Images") if isinstance(root, dict) else None
    if not isinstance(images, list):
        raise InbreastXmlError("no 'Images' array at the top of the plist")
    rois: list[InbreastRoi] = []
    for image in images:
        entries = image.get("ROIs") if isinstance(image, dict) else None
        if not isinstance(entries, list):
            raise InbreastXmlError("an 'Images' entry has no 'ROIs' array")
        for entry in entries:
            index = len(rois)
            if not isinstance(entry, dict):
                raise InbreastXmlError(f"ROI {index} is not a dict")
            raw = entry.get("Point_px")
            if not isinstance(raw, list) or not raw:
                raise InbreastXmlError(f"ROI {index} ({entry.get('Name', '?')!r}) has no Point_px")
            points = []
            for text in raw:
                xy = _parse_point(text)
                if xy is None:
                    raise InbreastXmlError(f"ROI {index}: unreadable point {text!r}")
                points.append(xy)
            rois.append(InbreastRoi(index, str(entry.get("Name", "")).strip(), tuple(points)))
    return rois


def roi_abnormality(name: str) -> str:
    """INbreast ROI name → ``abnormality_type`` (case-insensitive, tolerant of the 'Assymetry'
    spelling); unknown names such as 'Unnamed' or 'Point 1' → other."""
    n = name.lower()
    if "mass" in n or "spicul" in n:
        return "mass"
    if "calcif" in n or "cluster" in n:
        return "calcification"
    if "distort" in n:
        return "distortion"
    if re.search(r"as+ym+e", n):
        return "asymmetry"
    return "other"


def roi_geometry(roi: InbreastRoi) -> str:
    """Polygon for ≥ 3 points; a circle (see :data:`CALC_RADIUS_PX`) for 1–2 points."""
    if len(roi.points) >= 3:
        return polygon_geometry(list(roi.points))
    xs, ys = zip(*roi.points, strict=True)
    cx, cy = sum(xs) / len(xs), sum(ys) / len(ys)
    half = math.dist(roi.points[0], roi.points[-1]) / 2
    return circle_geometry(cx, cy, max(CALC_RADIUS_PX, half))


def render_inbreast_mask(
    xml_bytes: bytes, shape: tuple[int, int], *, types: Sequence[str] = ("mass",)
) -> np.ndarray:
    """Union mask (``bool``, ``shape`` = (rows, columns)) of the ROIs whose
    :func:`roi_abnormality` is in ``types``; all False when there are none."""
    geoms = [
        roi_geometry(r) for r in parse_inbreast_rois(xml_bytes) if roi_abnormality(r.name) in types
    ]
    return render_geometries(geoms, shape)


def _parse_birads(text: str) -> int | None:
    if not text:
        return None
    m = _BIRADS.match(text)
    if not m:
        raise ValueError(f"unreadable BI-RADS {text!r}")
    return int(m.group(1))


def _parse_acr(text: str) -> int | None:
    if not text:
        return None
    if text not in ("1", "2", "3", "4"):
        raise ValueError(f"ACR density {text!r} is not 1-4")
    return int(text)


def load_inbreast(
    store: ObjectStore,
    *,
    pseudonym_key: str,
    prefix: str = "",
    image_dirs: Sequence[str] = IMAGE_DIRS,
) -> AdapterResult:
    """INbreast.csv + AllXML + image listing under ``prefix`` → lesion table (module doc)."""
    csv_key = join_key(prefix, CSV_NAME)
    try:
        table = pd.read_csv(
            io.StringIO(read_text(store, csv_key)), sep=";", dtype=str, keep_default_na=False
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise AdapterError(f"{csv_key} is not a ';'-separated CSV: {exc}") from None
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in _COLUMNS if c not in table.columns]
    if missing:
        raise AdapterError(f"{csv_key} lacks column(s) {missing}")

    rejects: list[Reject] = []
    images: dict[str, str] = {}  # File Name -> image key (first of image_dirs wins)
    for folder in image_dirs:
        for key in list_keys(store, prefix, folder):
            name = key.rsplit("/", 1)[-1]
            m = _IMAGE_NAME.match(name)
            if not m:
                continue
            file_name = m.group("file")
            if file_name in images:
                rejects.append(
                    Reject(
                        key, f"second image for File Name {file_name} (kept {images[file_name]})"
                    )
                )
                continue
            images[file_name] = key
    xml_keys = {
        k.rsplit("/", 1)[-1][: -len(".xml")]: k
        for k in list_keys(store, prefix, XML_DIR)
        if k.lower().endswith(".xml")
    }

    records: list[dict[str, object]] = []
    rows = table.to_dict("records")
    counts = Counter(str(r["File Name"]).strip() for r in rows)
    seen: set[str] = set()
    for i, row in enumerate(rows, start=1):
        cells = {c: str(row[c]).strip() for c in _COLUMNS}
        file_name = cells["File Name"]
        source = f"{csv_key}:row {i} (File Name {file_name or '?'})"
        if not re.fullmatch(r"\d+", file_name):
            rejects.append(Reject(source, f"File Name {file_name!r} is not a number"))
            continue
        seen.add(file_name)
        image_key = images.get(file_name)
        if image_key is None:
            rejects.append(Reject(source, f"{IMAGE_ABSENT}: no image for File Name {file_name}"))
            continue
        case_id = case_pseudonym(pseudonym_key, DATASET, image_key)
        if counts[file_name] > 1:
            why = f"File Name {file_name} has {counts[file_name]} rows in {csv_key}"
            rejects.append(Reject(source, why, case_id))
            continue
        m = _IMAGE_NAME.match(image_key.rsplit("/", 1)[-1])
        assert m is not None  # images only holds matching names
        try:
            side, view = cells["Laterality"].upper(), cells["View"].upper()
            if side not in ("L", "R"):
                raise ValueError(f"laterality {cells['Laterality']!r} is not L or R")
            if view not in _VIEWS:
                raise ValueError(f"unknown view {cells['View']!r}")
            if (m.group("side").upper(), m.group("view").upper()) != (side, view):
                raise ValueError(
                    f"CSV says {side} {view} but the image name says "
                    f"{m.group('side').upper()} {m.group('view').upper()}"
                )
            birads, density = _parse_birads(cells["Bi-Rads"]), _parse_acr(cells["ACR"])
        except ValueError as exc:
            rejects.append(Reject(source, str(exc), case_id))
            continue
        base: dict[str, object] = {
            "case_id": case_id,
            "patient_id": patient_pseudonym(pseudonym_key, DATASET, m.group("patient")),
            "source_dataset": DATASET,
            "source_split": "",
            "laterality": side,
            "view": view,
            "image_type": "FFDM",
            "image_uri": store.uri(image_key),
            "density": density,
            "birads": birads,
        }
        xml_key = xml_keys.get(file_name)
        if xml_key is None:
            pathology = "NORMAL" if birads == 1 else "UNKNOWN"
            records.append(dict(base, lesion_id=0, abnormality_type="normal", pathology=pathology))
            continue
        try:
            rois = parse_inbreast_rois(store.read_bytes(xml_key))
            geoms = [roi_geometry(r) for r in rois]
        except (InbreastXmlError, ObjectNotFound) as exc:
            rejects.append(Reject(xml_key, f"{exc}; image left out whole", case_id))
            continue
        if not rois:
            records.append(
                dict(
                    base,
                    lesion_id=0,
                    abnormality_type="normal",
                    pathology="NORMAL" if birads == 1 else "UNKNOWN",
                    lesion_detail="ROI file has no ROIs",
                )
            )
            continue
        for lesion_id, (roi, geom) in enumerate(zip(rois, geoms, strict=True), start=1):
            detail = f"ROI '{roi.name or 'unnamed'}', {len(roi.points)} point(s)"
            records.append(
                dict(
                    base,
                    lesion_id=lesion_id,
                    abnormality_type=roi_abnormality(roi.name),
                    pathology="UNKNOWN",
                    mask_geometry=geom,
                    lesion_detail=detail,
                )
            )

    for file_name, key in sorted(images.items()):
        if file_name not in seen:
            rejects.append(
                Reject(
                    key,
                    f"image not listed in {csv_key}",
                    case_pseudonym(pseudonym_key, DATASET, key),
                )
            )
    for file_name, key in sorted(xml_keys.items()):
        if file_name not in seen:
            rejects.append(
                Reject(key, f"ROI file for File Name {file_name!r}, which is not in {csv_key}")
            )
    lesions = conform(pd.DataFrame.from_records(records)) if records else conform(pd.DataFrame())
    return AdapterResult(lesions=lesions, rejects=rejects)
