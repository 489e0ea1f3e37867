"""CDD-CESM → lesion table.

Inputs under ``prefix``: ``Radiology-manual-annotations.csv``, ``images/<name>.jpg`` and
``masks/<name>.jpg`` with ``<name> = P<patient>_<L|R>_<DM|CM>_<CC|MLO>`` (a few repeat images
carry a suffix, e.g. ``P99_L_DM_MLO_2``). Only the CSV and the two listings are read.

Conventions:

* One mask per image (all findings of the image in one file) → one lesion row per image,
  ``lesion_id`` 1, ``mask_uri`` = the mask JPEG (thresholded at 127 by ``load_mask``).
* ``image_type`` "DM" (low energy) or "CM" (recombined contrast; the CSV's Type says ``CESM``);
  ``image_types`` selects which are loaded. Rows and files of other types are skipped silently
  (a selection, not bad data).
* Density A–D → 1–4, ``_`` or blank → <NA> (the CSV gives none for most CM images).
  BI-RADS: ``$`` separates the assessments of several findings (``4$2``); the highest is kept.
  Pathology Malignant/Benign/Normal → MALIGNANT/BENIGN/NORMAL. Age and machine are not copied.
* ``abnormality_type`` from the text of Findings + Tags (lower case), first rule that matches:
  the word ``mass``/``masses`` outside ``non mass`` / ``non-mass`` / ``no mass`` → mass;
  ``distort`` → distortion; ``asym``/``assym`` → asymmetry; ``calcif`` → calcification;
  otherwise other (non-mass enhancement, edema, lymph nodes, …). Masses and distortions come
  first because the drawn outline is the mass/distortion when calcifications are mentioned
  alongside. A Normal row
  without a mask is kept as a no-lesion image (``lesion_id`` 0, abnormality normal); a Normal
  row *with* a mask contradicts itself and is rejected.
* Findings (free-text radiology description, no identifiers) go to ``lesion_detail``.
* **Patient** = ``Patient_ID``; the file name's patient number, side, type and view must agree
  with the CSV's columns, else the row is rejected.
* **Rejects**: CSV rows whose image is not in the store (:data:`IMAGE_ABSENT`), bad values, an
  image without its mask (unless the row says Normal), a mask or image without CSV row, a mask
  without image, duplicate CSV rows for one name (all of them). A reason names the column and
  the kind of problem, never a cell's value or an image name (``P<n>_…`` holds the patient
  number); :attr:`Reject.source` (``<csv>:row N`` or the object key) locates it for the operator.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from collections.abc import Sequence

import pandas as pd

from mammoseg.adapters.common import (
    IMAGE_ABSENT,
    AdapterError,
    AdapterResult,
    Reject,
    list_keys,
    read_text,
)
from mammoseg.casetable import conform
from mammoseg.ids import case_pseudonym, patient_pseudonym
from mammoseg.storage import ObjectStore, join_key

DATASET = "cdd-cesm"
CSV_NAME = "Radiology-manual-annotations.csv"
IMAGE_DIR = "images"
MASK_DIR = "masks"
IMAGE_TYPES = ("DM", "CM")

_COL_NAME = "Image_name"
_COL_PATIENT = "Patient_ID"
_COL_SIDE = "Side"
_COL_TYPE = "Type"
_COL_DENSITY = "Breast density (ACR)"
_COL_BIRADS = "BIRADS"
_COL_FINDINGS = "Findings"
_COL_VIEW = "View"
_COL_TAGS = "Tags"
_COL_PATHOLOGY = "Pathology Classification/ Follow up"
_COLUMNS = (
    _COL_NAME,
    _COL_PATIENT,
    _COL_SIDE,
    _COL_TYPE,
    _COL_DENSITY,
    _COL_BIRADS,
    _COL_FINDINGS,
    _COL_VIEW,
    _COL_TAGS,
    _COL_PATHOLOGY,
)

_NAME = re.compile(r"^P(?P<patient>\d+)_(?P<side>[LR])_(?P<type>DM|CM)_(?P<view>CC|MLO)(?:_?\d+)?$")
_FILE = re.compile(r"^(?P<stem>.+)\.(?:jpe?g|png)$", re.IGNORECASE)
_TYPES = {"DM": "DM", "CESM": "CM", "CM": "CM"}
_DENSITY = {"A": 1, "B": 2, "C": 3, "D": 4}
_PATHOLOGY = {"malignant": "MALIGNANT", "benign": "BENIGN", "normal": "NORMAL"}
_NON_MASS = re.compile(r"\b(?:non[\s-]*|no\s+)mass(?:es)?\b")
_MASS = re.compile(r"\bmass(?:es)?\b")


def abnormality_from_text(findings: str, tags: str) -> str:
    """Findings + Tags text → abnormality_type, by the ordered rules of the module doc."""
    text = _NON_MASS.sub(" ", f"{findings} {tags}".lower())
    if _MASS.search(text):
        return "mass"
    if "distort" in text:
        return "distortion"
    if re.search(r"as+ym", text):
        return "asymmetry"
    if "calcif" in text:
        return "calcification"
    return "other"


def parse_birads(text: str) -> int | None:
    """'4' → 4; '4$2' (several findings) → the highest, 4; blank → None; else ValueError."""
    parts = [p.strip() for p in text.split("$")] if text.strip() else []
    if not all(re.fullmatch(r"[0-6]", p) for p in parts):
        raise ValueError(f"unreadable BI-RADS in {_COL_BIRADS!r} (0-6, several joined by '$')")
    return max(int(p) for p in parts) if parts else None


def parse_density(text: str) -> int | None:
    """ACR letter A–D → 1–4; '_' or blank → None; else ValueError."""
    t = text.strip().upper()
    if t in ("", "_"):
        return None
    if t not in _DENSITY:
        raise ValueError(f"{_COL_DENSITY!r} is not A-D or '_'")
    return _DENSITY[t]


def _stems(store: ObjectStore, prefix: str, folder: str) -> dict[str, str]:
    """File stem → key for the image files directly in ``prefix/folder``."""
    out: dict[str, str] = {}
    for key in list_keys(store, prefix, folder):
        name = key.rsplit("/", 1)[-1]
        m = _FILE.match(name)
        if m and key == join_key(prefix, folder, name):
            out.setdefault(m.group("stem"), key)
    return out


def load_cdd_cesm(
    store: ObjectStore,
    *,
    pseudonym_key: str,
    prefix: str = "",
    image_types: Sequence[str] = IMAGE_TYPES,
) -> AdapterResult:
    """CSV + images/ + masks/ under ``prefix`` → lesion table of the selected ``image_types``."""
    unknown = [t for t in image_types if t not in IMAGE_TYPES]
    if unknown or not image_types:
        raise ValueError(
            f"image_types must be a non-empty subset of {IMAGE_TYPES}, got {tuple(image_types)}"
        )
    wanted = set(image_types)
    csv_key = join_key(prefix, CSV_NAME)
    try:
        table = pd.read_csv(
            io.StringIO(read_text(store, csv_key)), dtype=str, keep_default_na=False
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise AdapterError(f"{csv_key} is not a readable CSV: {exc}") from None
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in _COLUMNS if c not in table.columns]
    if missing:
        raise AdapterError(f"{csv_key} lacks column(s) {missing}")

    images = _stems(store, prefix, IMAGE_DIR)
    masks = _stems(store, prefix, MASK_DIR)
    rows = table.to_dict("records")
    names = [str(r[_COL_NAME]).strip() for r in rows]
    counts = Counter(names)

    def type_of(stem: str) -> str | None:
        m = _NAME.match(stem)
        return m.group("type") if m else None

    rejects: list[Reject] = []
    records: list[dict[str, object]] = []
    for i, (row, name) in enumerate(zip(rows, names, strict=True), start=1):
        cells = {c: str(row[c]).strip() for c in _COLUMNS}
        source = f"{csv_key}:row {i}"  # reasons and sources quote no cell
        m = _NAME.match(name)
        if m is None:
            rejects.append(
                Reject(source, f"{_COL_NAME!r} is not of the form P<n>_<L|R>_<DM|CM>_<CC|MLO>")
            )
            continue
        if m.group("type") not in wanted:
            continue
        image_key = images.get(name)
        case_id = case_pseudonym(pseudonym_key, DATASET, image_key) if image_key else None
        if counts[name] > 1:
            why = f"the row's {_COL_NAME} has {counts[name]} rows in {CSV_NAME}"
            rejects.append(Reject(source, why, case_id))
            continue
        if image_key is None:
            why = f"{IMAGE_ABSENT}: no image of the row's {_COL_NAME} in {IMAGE_DIR}/"
            rejects.append(Reject(source, why))
            continue
        try:
            record = _record(cells, m, image_key, masks.get(name), store, pseudonym_key)
        except ValueError as exc:
            rejects.append(Reject(source, str(exc), case_id))
            continue
        record["case_id"] = case_id
        records.append(record)

    listed = set(names)
    for stem, key in sorted(images.items()):
        if type_of(stem) in IMAGE_TYPES and type_of(stem) not in wanted:
            continue
        if stem not in listed:
            case_id = case_pseudonym(pseudonym_key, DATASET, key)
            rejects.append(Reject(key, f"image without a row in {CSV_NAME}", case_id))
    for stem, key in sorted(masks.items()):
        if type_of(stem) in IMAGE_TYPES and type_of(stem) not in wanted:
            continue
        if stem not in images:
            rejects.append(Reject(key, f"mask without an image of the same name in {IMAGE_DIR}/"))
        elif stem not in listed:
            rejects.append(Reject(key, f"mask without a row in {CSV_NAME}"))
    lesions = conform(pd.DataFrame.from_records(records)) if records else conform(pd.DataFrame())
    return AdapterResult(lesions=lesions, rejects=rejects)


def _record(
    cells: dict[str, str],
    m: re.Match[str],
    image_key: str,
    mask_key: str | None,
    store: ObjectStore,
    pseudonym_key: str,
) -> dict[str, object]:
    """One lesion row from a CSV row whose image exists; ValueError with the reason if bad."""
    kind = _TYPES.get(cells[_COL_TYPE].upper())
    patient = cells[_COL_PATIENT].lstrip("0") or "0"
    said = (patient, cells[_COL_SIDE].upper(), kind, cells[_COL_VIEW].upper())
    named = (
        m.group("patient").lstrip("0") or "0",
        m.group("side"),
        m.group("type"),
        m.group("view"),
    )
    if said != named:
        columns = (_COL_PATIENT, _COL_SIDE, _COL_TYPE, _COL_VIEW)
        differ = [c for c, a, b in zip(columns, said, named, strict=True) if a != b]
        raise ValueError(f"column(s) {', '.join(map(repr, differ))} disagree with {_COL_NAME!r}")
    pathology = _PATHOLOGY.get(cells[_COL_PATHOLOGY].lower())
    if pathology is None:
        raise ValueError(f"unknown {_COL_PATHOLOGY!r} (expected Malignant, Benign or Normal)")
    density, birads = parse_density(cells[_COL_DENSITY]), parse_birads(cells[_COL_BIRADS])
    record: dict[str, object] = {
        "patient_id": patient_pseudonym(pseudonym_key, DATASET, patient),
        "source_dataset": DATASET,
        "source_split": "",
        "laterality": named[1],
        "view": named[3],
        "image_type": named[2],
        "image_uri": store.uri(image_key),
        "pathology": pathology,
        "density": density,
        "birads": birads,
        "lesion_detail": cells[_COL_FINDINGS] or pd.NA,
    }
    if mask_key is None:
        if pathology != "NORMAL":
            raise ValueError(f"{pathology.lower()} image without a mask of its name in {MASK_DIR}/")
        return dict(record, lesion_id=0, abnormality_type="normal")
    if pathology == "NORMAL":
        raise ValueError(f"image is classified Normal but has a mask in {MASK_DIR}/")
    abnormality = abnormality_from_text(cells[_COL_FINDINGS], cells[_COL_TAGS])
    return dict(record, lesion_id=1, abnormality_type=abnormality, mask_uri=store.uri(mask_key))
