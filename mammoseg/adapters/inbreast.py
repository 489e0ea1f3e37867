"""INbreast → lesion table: the original DICOM + AllXML layout and the public "jpeg-export".

Inputs under ``prefix`` (the INbreast root):

* ``INbreast.csv`` (';'-separated, CRLF; ``Patient ID`` and age are ``removed``);
* the **original layout**: ``AllXML/<File Name>.xml`` (OsiriX ROI export, an Apple plist) and
  the images, named ``<File Name>_<patient hash>_MG_<L|R>_<view>_ANON.<dcm|png>``, in
  ``image_dirs`` (``AllDICOMs`` in the real dataset, ``sample/scans/raw_mammogram`` in the
  shared sample);
* the **jpeg-export** (a public thesis repository's export of the INbreast mass images): the
  first of ``export_dirs`` (``jpeg-export``, then ``prefix`` itself, so the export folder can be
  given as the root) holding ``images/`` or ``masks/``: ``images/<File Name>.jpg`` (8-bit, three
  identical channels) and one binary PNG per mass, ``masks/<File Name>_bw_Mass_<k>.png``.

Only the CSV, the listings and the XMLs of listed images are read; never pixels or DICOM headers.
``INbreast.csv`` may be absent when there is an export (a bare export folder); it is required
otherwise.

Conventions:

* **One image per File Name.** The export's image wins over an original image of the same File
  Name when the export has mask files for it (the original is left out as :data:`OUT_OF_SCOPE`,
  not quarantined); an export image without mask files gives way to an original image.
* **Patient.** Original layout: the hash in the image file name (the CSV has no usable patient
  id). Export: the exam group (:func:`exam_groups`: sorted File Names, a new group after a gap
  > :data:`EXAM_GAP`; over the CSV's File Names and every image found, so a group does not
  depend on which images are present), named ``exam-<first File Name of the group>``; if
  original images of exactly one patient hash lie in that group, that hash, so one woman never
  gets two pseudonyms. Without the CSV the groups come from the images found alone and can
  split an exam whose middle views are held back (the 47 shared export images: 35 groups
  without the CSV, 23 with it). Acquisition date and age are never copied.
* **Laterality / view** from the CSV; an original image name that disagrees makes the image a
  reject. BI-RADS ``4a``/``4b``/``4c`` → 4; ACR density 1–4 (blank → <NA>).
* **Export masks → lesions**: one row per mask file (``lesion_id`` 1.. in ``k`` order,
  ``mask_uri`` = the PNG, abnormality mass, pathology UNKNOWN); the image's lesion mask is their
  union. An export image without any mask file is kept as a normal image (``lesion_id`` 0) only
  when the CSV says BI-RADS 1; otherwise it is rejected, since the export holds mass images
  only and a lost mask file cannot be told from a normal image.
* **Export image not in the CSV** (or no CSV at all): kept, with laterality, view, density and
  BI-RADS <NA> and a note in ``lesion_detail``. The masks are the reference, and preprocessing
  finds the chest-wall side from the pixels (the laterality tag only breaks ties).
* **ROIs → lesions** (original layout): every ROI of the XML becomes one lesion row
  (``lesion_id`` 1.. in XML order). ≥ 3 points → polygon of ``Point_px`` (pixel coordinates,
  top-left origin); 1–2 points (a single calcification) → circle around their mean with radius
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
  is in ``birads``). An original image without XML has no annotated finding: one row,
  ``lesion_id`` 0, abnormality normal, pathology NORMAL when BI-RADS is 1, else UNKNOWN.
* **Rejects**: CSV rows whose image is not in the store (:data:`IMAGE_ABSENT`), bad CSV values,
  every row of a File Name listed twice, original images not in the CSV, duplicate images, an
  unreadable XML or an unusable ROI (the whole image is rejected, so it is never kept with part
  of its lesions missing), XMLs of unknown images; in the export: names that are not
  ``<File Name>.jpg`` / ``<File Name>_bw_Mass_<k>.png``, mask files without image, images
  without mask file (see above). A reason says which column or file is wrong and how; it never
  quotes a cell, a File Name, an ROI name or an object key (rejects carry the case's pseudonym;
  :attr:`Reject.source`, ``<csv>:row N`` or the object key, locates it for the operator).
"""

from __future__ import annotations

import io
import math
import plistlib
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from xml.parsers.expat import ExpatError

import numpy as np
import pandas as pd

from mammoseg.adapters.common import (
    IMAGE_ABSENT,
    OUT_OF_SCOPE,
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
#: Folders (under the root) that may hold the jpeg-export; "" = the root is the export itself.
EXPORT_DIRS: tuple[str, ...] = ("jpeg-export", "")
EXPORT_IMAGE_DIR = "images"
EXPORT_MASK_DIR = "masks"
#: Largest File Name gap between two views of one exam (see :func:`exam_groups`).
EXAM_GAP = 30
#: Radius (pixels) of the circle drawn for a 1–2 point ROI (a single calcification).
CALC_RADIUS_PX = 3.0

_COLUMNS = ("Laterality", "View", "File Name", "ACR", "Bi-Rads")
_IMAGE_NAME = re.compile(
    r"^(?P<file>\d+)_(?P<patient>[0-9A-Za-z]+)_MG_(?P<side>[LR])_(?P<view>[A-Z]+)_ANON\.(?:dcm|png)$",
    re.IGNORECASE,
)
_EXPORT_IMAGE = re.compile(r"^(?P<file>\d+)\.(?:jpe?g|png)$", re.IGNORECASE | re.ASCII)
_EXPORT_MASK = re.compile(r"^(?P<file>\d+)_bw_Mass_(?P<k>\d+)\.png$", re.IGNORECASE | re.ASCII)
_POINT = re.compile(r"^\(\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*(?:,\s*[-+0-9.eE]+\s*)?\)$")
_BIRADS = re.compile(r"^([0-6])[abc]?$", re.IGNORECASE)
_VIEWS = ("CC", "MLO", "ML", "LM", "XCCL", "FB")
_SECOND_IMAGE = "second image for one File Name (the first one listed is kept)"


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
    except ExpatError as exc:  # "not well-formed (invalid token): line 3, column 0"
        raise InbreastXmlError(f"not a readable plist XML: {exc}") from None
    except (plistlib.InvalidFileException, ValueError, TypeError) as exc:  # may quote content
        raise InbreastXmlError(f"not a readable plist XML ({type(exc).__name__})") from None
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
                raise InbreastXmlError(f"ROI {index} has no Point_px")
            points = []
            for text in raw:
                xy = _parse_point(text)
                if xy is None:
                    raise InbreastXmlError(f"ROI {index}: unreadable point in Point_px")
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
        raise ValueError("unreadable 'Bi-Rads' (expected 0-6, or 4a/4b/4c)")
    return int(m.group(1))


def _parse_acr(text: str) -> int | None:
    if not text:
        return None
    if text not in ("1", "2", "3", "4"):
        raise ValueError("'ACR' density is not 1-4")
    return int(text)


def _csv_fields(cells: dict[str, str]) -> tuple[str, str, int | None, int | None]:
    """Laterality, view, BI-RADS and ACR density of one CSV row; ValueError with the reason."""
    side, view = cells["Laterality"].upper(), cells["View"].upper()
    if side not in ("L", "R"):
        raise ValueError("'Laterality' is not L or R")
    if view not in _VIEWS:
        raise ValueError(f"unknown 'View' (expected one of {', '.join(_VIEWS)})")
    return side, view, _parse_birads(cells["Bi-Rads"]), _parse_acr(cells["ACR"])


def exam_groups(file_names: Iterable[str], gap: int = EXAM_GAP) -> dict[str, str]:
    """File Name → the first File Name of its exam group.

    INbreast names no patient, but the views of one exam have File Names at most ``gap`` apart:
    the numeric File Names, sorted, are cut into runs wherever two neighbours differ by more than
    ``gap``. Names that are not (ASCII) numbers are left out; each name maps as it is written
    (``"0123"`` stays ``"0123"``).
    """
    names = sorted(
        {f for f in file_names if f.isascii() and f.isdigit()}, key=lambda f: (int(f), f)
    )
    groups: dict[str, str] = {}
    first, previous = "", None
    for name in names:
        if previous is None or int(name) - previous > gap:
            first = name
        groups[name] = first
        previous = int(name)
    return groups


@dataclass(frozen=True)
class ExportListing:
    """What the listing of a jpeg-export holds: File Name → image key, File Name → mask keys
    (in ``k`` order), and the files that could not be used."""

    images: dict[str, str]
    masks: dict[str, tuple[str, ...]]
    rejects: tuple[Reject, ...]


def list_export(store: ObjectStore, prefix: str, export_dirs: Sequence[str]) -> ExportListing:
    """List the first folder of ``export_dirs`` (under ``prefix``) holding ``images/`` or
    ``masks/``; the others are not read. Reads no object, only the listing."""
    rejects: list[Reject] = []
    images: dict[str, str] = {}
    numbered: dict[str, list[tuple[int, str]]] = {}
    for folder in export_dirs:
        image_keys = list_keys(store, prefix, folder, EXPORT_IMAGE_DIR)
        mask_keys = list_keys(store, prefix, folder, EXPORT_MASK_DIR)
        if not image_keys and not mask_keys:
            continue
        image_dir = join_key(prefix, folder, EXPORT_IMAGE_DIR)
        for key in image_keys:
            m = _EXPORT_IMAGE.match(key[len(image_dir) + 1 :])
            if m is None:
                why = f"not an export image name ({EXPORT_IMAGE_DIR}/<File Name>.jpg)"
                rejects.append(Reject(key, why))
            elif m.group("file") in images:
                rejects.append(Reject(key, _SECOND_IMAGE))
            else:
                images[m.group("file")] = key
        mask_dir = join_key(prefix, folder, EXPORT_MASK_DIR)
        for key in mask_keys:
            m = _EXPORT_MASK.match(key[len(mask_dir) + 1 :])
            if m is None:
                why = f"not an export mask name ({EXPORT_MASK_DIR}/<File Name>_bw_Mass_<k>.png)"
                rejects.append(Reject(key, why))
            elif m.group("file") not in images:
                why = f"mask without an image of its File Name in {EXPORT_IMAGE_DIR}/"
                rejects.append(Reject(key, why))
            else:
                numbered.setdefault(m.group("file"), []).append((int(m.group("k")), key))
        break
    masks = {f: tuple(k for _, k in sorted(pairs)) for f, pairs in numbered.items()}
    return ExportListing(images=images, masks=masks, rejects=tuple(rejects))


def _read_csv(store: ObjectStore, csv_key: str, *, required: bool) -> list[dict[str, str]] | None:
    """The CSV's rows as stripped strings; None if absent and not ``required``."""
    if not required and not store.exists(csv_key):
        return None
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
    return [{c: str(row[c]).strip() for c in _COLUMNS} for row in table.to_dict("records")]


def _list_originals(
    store: ObjectStore, prefix: str, image_dirs: Sequence[str]
) -> tuple[dict[str, str], list[Reject]]:
    """File Name → original-layout image key (first of ``image_dirs`` wins) and the rejects of
    second images of a File Name."""
    images: dict[str, str] = {}
    rejects: list[Reject] = []
    for folder in image_dirs:
        for key in list_keys(store, prefix, folder):
            m = _IMAGE_NAME.match(key.rsplit("/", 1)[-1])
            if not m:
                continue
            file_name = m.group("file")
            if file_name in images:
                rejects.append(Reject(key, _SECOND_IMAGE))
                continue
            images[file_name] = key
    return images, rejects


def _export_records(
    file_name: str,
    mask_keys: Sequence[str],
    cells: dict[str, str] | None,
    base: dict[str, object],
    store: ObjectStore,
) -> list[dict[str, object]]:
    """Lesion rows of one export image (``base`` holds ids and URIs; ``cells`` its CSV row, or
    None when the CSV has none); ValueError with the reason if the image is unusable."""
    if cells is None:
        side = view = birads = density = None
        note: str | None = f"File Name {file_name} not in {CSV_NAME}: side and view unknown"
    else:
        side, view, birads, density = _csv_fields(cells)
        note = None
    base = dict(base, laterality=side, view=view, birads=birads, density=density)
    if not mask_keys:
        if birads == 1:
            detail = "export image without mask file, BI-RADS 1"
            return [
                dict(
                    base,
                    lesion_id=0,
                    abnormality_type="normal",
                    pathology="NORMAL",
                    lesion_detail=detail,
                )
            ]
        said = "no BI-RADS" if birads is None else f"BI-RADS {birads}"
        raise ValueError(
            f"export image without mask file ({EXPORT_MASK_DIR}/<File Name>_bw_Mass_<k>.png) and "
            f"{said}: the export holds mass images only, a lost mask cannot be told from a normal image"
        )
    return [
        dict(
            base,
            lesion_id=lesion_id,
            abnormality_type="mass",
            pathology="UNKNOWN",
            mask_uri=store.uri(key),
            lesion_detail="; ".join(
                t for t in (f"export mask {key.rsplit('/', 1)[-1]}", note) if t
            ),
        )
        for lesion_id, key in enumerate(mask_keys, start=1)
    ]


def load_inbreast(
    store: ObjectStore,
    *,
    pseudonym_key: str,
    prefix: str = "",
    image_dirs: Sequence[str] = IMAGE_DIRS,
    export_dirs: Sequence[str] = EXPORT_DIRS,
) -> AdapterResult:
    """INbreast.csv + AllXML + original images + jpeg-export under ``prefix`` → lesion table
    (module doc). ``export_dirs=()`` reads the original layout only."""
    export = list_export(store, prefix, export_dirs)
    rejects: list[Reject] = list(export.rejects)
    csv_key = join_key(prefix, CSV_NAME)
    rows = _read_csv(store, csv_key, required=not (export.images or export.masks))
    originals, second = _list_originals(store, prefix, image_dirs)
    rejects += second
    xml_keys = {
        k.rsplit("/", 1)[-1][: -len(".xml")]: k
        for k in list_keys(store, prefix, XML_DIR)
        if k.lower().endswith(".xml")
    }

    def case_of(key: str) -> str:
        return case_pseudonym(pseudonym_key, DATASET, key)

    # one image per File Name: the export's with its masks, else the original, else the export's
    exported = dict(export.images)
    images = dict(originals)
    for file_name in sorted(set(exported) & set(images)):
        if export.masks.get(file_name):
            key = images.pop(file_name)
            why = f"{OUT_OF_SCOPE}: its File Name is read from the export's image and masks"
        else:
            key = exported.pop(file_name)
            why = (
                f"{OUT_OF_SCOPE}: export image without mask file; its File Name is read from the "
                "original layout"
            )
        rejects.append(Reject(key, why, case_of(key)))

    # patients of export images: the exam group, or the one name hash of the group's originals
    listed = [r["File Name"] for r in rows or []]
    groups = exam_groups([*listed, *exported, *originals])
    hashes: dict[str, set[str]] = {}
    for file_name, key in originals.items():
        m = _IMAGE_NAME.match(key.rsplit("/", 1)[-1])
        assert m is not None  # originals only holds matching names
        hashes.setdefault(groups.get(file_name, file_name), set()).add(m.group("patient"))

    def export_base(file_name: str) -> dict[str, object]:
        group = groups.get(file_name, file_name)
        named = hashes.get(group, set())
        patient = next(iter(named)) if len(named) == 1 else f"exam-{group}"
        key = exported[file_name]
        return {
            "case_id": case_of(key),
            "patient_id": patient_pseudonym(pseudonym_key, DATASET, patient),
            "source_dataset": DATASET,
            "source_split": "",
            "image_type": "FFDM",
            "image_uri": store.uri(key),
        }

    records: list[dict[str, object]] = []
    counts = Counter(listed)
    seen: set[str] = set()
    for i, cells in enumerate(rows or [], start=1):
        file_name = cells["File Name"]
        source = f"{csv_key}:row {i}"  # reasons and sources quote no cell
        if not re.fullmatch(r"\d+", file_name):
            rejects.append(Reject(source, "'File Name' is not a number"))
            continue
        seen.add(file_name)
        image_key = exported.get(file_name) or images.get(file_name)
        if image_key is None:
            rejects.append(Reject(source, f"{IMAGE_ABSENT}: no image for the row's File Name"))
            continue
        case_id = case_of(image_key)
        if counts[file_name] > 1:
            why = f"the row's File Name has {counts[file_name]} rows in {CSV_NAME}"
            rejects.append(Reject(source, why, case_id))
            continue
        try:
            if file_name in exported:
                base = export_base(file_name)
                masks = export.masks.get(file_name, ())
                records += _export_records(file_name, masks, cells, base, store)
            else:
                records += _original_records(
                    cells, image_key, xml_keys.get(file_name), store, pseudonym_key
                )
        except ValueError as exc:
            where = xml_keys[file_name] if isinstance(exc, _XmlProblem) else source
            rejects.append(Reject(where, str(exc), case_id))

    for file_name, key in sorted(exported.items()):
        if file_name in seen:
            continue
        try:
            base = export_base(file_name)
            records += _export_records(
                file_name, export.masks.get(file_name, ()), None, base, store
            )
        except ValueError as exc:
            rejects.append(Reject(key, str(exc), case_of(key)))
    absent = "" if rows is not None else " (absent)"
    for file_name, key in sorted(images.items()):
        if file_name not in seen:
            rejects.append(Reject(key, f"image not listed in {CSV_NAME}{absent}", case_of(key)))
    for file_name, key in sorted(xml_keys.items()):
        if file_name not in seen:
            rejects.append(Reject(key, f"ROI file of a File Name that is not in {CSV_NAME}"))
    lesions = conform(pd.DataFrame.from_records(records)) if records else conform(pd.DataFrame())
    return AdapterResult(lesions=lesions, rejects=rejects)


class _XmlProblem(ValueError):
    """An unreadable XML of an original image; the reject is filed under the XML's key."""


def _original_records(
    cells: dict[str, str],
    image_key: str,
    xml_key: str | None,
    store: ObjectStore,
    pseudonym_key: str,
) -> list[dict[str, object]]:
    """Lesion rows of one original-layout image with its CSV row; ValueError with the reason
    (:class:`_XmlProblem` when the XML is unusable) if the image is unusable."""
    m = _IMAGE_NAME.match(image_key.rsplit("/", 1)[-1])
    assert m is not None  # only matching names are listed
    side, view, birads, density = _csv_fields(cells)
    named = (m.group("side").upper(), m.group("view").upper())
    if named != (side, view):
        differ = [c for c, a, b in zip(("Laterality", "View"), (side, view), named, strict=True) if a != b]
        raise ValueError(f"CSV column(s) {', '.join(map(repr, differ))} disagree with the image name")
    base: dict[str, object] = {
        "case_id": case_pseudonym(pseudonym_key, DATASET, image_key),
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
    pathology = "NORMAL" if birads == 1 else "UNKNOWN"
    if xml_key is None:
        return [dict(base, lesion_id=0, abnormality_type="normal", pathology=pathology)]
    try:
        rois = parse_inbreast_rois(store.read_bytes(xml_key))
        geoms = [roi_geometry(r) for r in rois]
    except InbreastXmlError as exc:
        raise _XmlProblem(f"{exc}; image left out whole") from None
    except ObjectNotFound:  # listed, then gone; an outage raises instead
        raise _XmlProblem("ROI file is no longer in the store; image left out whole") from None
    if not rois:
        return [
            dict(
                base,
                lesion_id=0,
                abnormality_type="normal",
                pathology=pathology,
                lesion_detail="ROI file has no ROIs",
            )
        ]
    return [
        dict(
            base,
            lesion_id=lesion_id,
            abnormality_type=roi_abnormality(roi.name),
            pathology="UNKNOWN",
            mask_geometry=geom,
            lesion_detail=f"ROI '{roi.name or 'unnamed'}', {len(roi.points)} point(s)",
        )
        for lesion_id, (roi, geom) in enumerate(zip(rois, geoms, strict=True), start=1)
    ]
