"""CBIS-DDSM → lesion table.

The four case-description CSVs carry one row per abnormality. Their quirks, all handled here:

* the density column is ``breast_density`` in the mass files and ``breast density`` in the calc
  files;
* path cells are quoted and may end in a newline;
* in the calc files the ``cropped image file path`` and ``ROI mask file path`` columns point at
  each other's file, so masks are told from cropped images by the DICOM SeriesDescription and,
  failing that, by pixel content — never by file name or column;
* the CSV paths use the original TCIA layout
  (``Mass-Training_P_00001_LEFT_CC/<StudyUID>/<SeriesUID>/000000.dcm``) while downloads made with
  current TCIA tools use ``Mass-Test_P_00016_LEFT_CC_1/10-04-2016-DDSM-09887/1-cropped
  images-26184/000001.dcm``: both resolve, because objects are found by their case folder (the
  first path segment, which both layouts share) and then classified by header.

Two entry points: :func:`read_cbis_csvs` (metadata only, no DICOM access: what ``mammoseg
validate`` checks) and :func:`load_cbis` (CSVs + the objects in a store: what ingest uses).

Reject reasons say which column or file is wrong and how, never the cell's value or a folder
name (CBIS folder names hold the PatientID); :attr:`Reject.source` locates the row or object for
the operator. A DICOM whose header or pixels cannot be read counts as "unknown" (preprocessing
reports the decode error for its case), but only when the *content* is at fault: errors of the
store itself (an outage, a timeout, access denied) propagate, so the ingest task retries and
then fails loudly instead of quarantining good cases.
"""

from __future__ import annotations

import io
import re
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mammoseg.adapters.common import AdapterResult, Reject
from mammoseg.casetable import conform
from mammoseg.ids import case_pseudonym, patient_pseudonym
from mammoseg.storage import (
    LocalStore,
    ObjectNotFound,
    ObjectStore,
    UnsafeKeyError,
    join_key,
    validate_key,
)

DATASET = "cbis-ddsm"

#: file name → (abnormality kind, split)
CSV_FILES: dict[str, tuple[str, str]] = {
    "mass_case_description_train_set.csv": ("mass", "train"),
    "mass_case_description_test_set.csv": ("mass", "test"),
    "calc_case_description_train_set.csv": ("calcification", "train"),
    "calc_case_description_test_set.csv": ("calcification", "test"),
}

_PATH_COLS = ("image file path", "cropped image file path", "ROI mask file path")
_REQUIRED = (
    "patient_id",
    "left or right breast",
    "image view",
    "abnormality id",
    "abnormality type",
    "pathology",
    "image file path",
    "ROI mask file path",
)
_SIDE = {"LEFT": "L", "RIGHT": "R"}
_PATIENT = re.compile(r"^P_\d{5}$")
HEADER_BYTES = 16 * 1024

#: What reading one DICOM's header or pixels may fail with because of the object itself: not a
#: DICOM, truncated, no pixel data (:class:`~mammoseg.dicom.DicomError` is a ValueError), or
#: gone since the listing. Such a file is "unknown". Anything else (OSError from a local store,
#: botocore's ClientError / EndpointConnectionError, timeouts) is the store's problem: it
#: propagates.
CONTENT_ERRORS: tuple[type[BaseException], ...] = (ValueError, ObjectNotFound)


@dataclass(frozen=True)
class CbisRow:
    """One clean CSV row (an abnormality), before any object is looked up."""

    csv_name: str
    row_number: int  # 1-based data row in its CSV
    source_patient: str
    split: str
    laterality: str
    view: str
    abnormality_id: int
    abnormality_type: str
    pathology: str
    density: int | None
    birads: int | None
    subtlety: int | None
    detail: str
    image_key: str
    roi_keys: tuple[str, ...]  # the two lesion-folder paths from the CSV, mask or crop unknown

    @property
    def source(self) -> str:
        return f"{self.csv_name} row {self.row_number}"

    @property
    def image_folder(self) -> str:
        return self.image_key.split("/", 1)[0]

    @property
    def lesion_folder(self) -> str:
        return self.roi_keys[0].split("/", 1)[0]


def _int_or_none(value: object, column: str) -> int | None:
    """Parse an integer cell; 'N/A'/empty → None. Ranges are the GX suite's job, not ours, so
    that out-of-range values (the real CSVs have density 0 and subtlety 0) are reported by the
    validation step with the case they belong to, instead of vanishing here. The error names
    the column, never the cell's value (it may hold anything, a name included)."""
    if value is None or (isinstance(value, float) and pd.isna(value)) or str(value).strip() in ("", "N/A"):
        return None
    try:
        return int(float(str(value).strip()))
    except ValueError:
        raise ValueError(f"{column!r} is not a number") from None


class _UnsafePath(ValueError):
    """A path cell that would leave the dataset root; says which column and why, not the path."""

    def __init__(self, column: str, exc: UnsafeKeyError) -> None:
        # validate_key's message is "refused object key '<key>': <problems>"; keep the problems
        problems = str(exc).rsplit(": ", 1)[-1]
        super().__init__(f"path escapes the dataset (column {column!r}: {problems})")


def _clean(value: object) -> str:
    return "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value).strip()


def _case_folder(rec: dict, kind: str, split: str) -> str | None:
    """The case (full-mammogram) folder of a CSV row, for a row that cannot be parsed: the first
    segment of its ``image file path``, else the CBIS-DDSM name the folder has by construction
    (``Mass-Training_P_00001_LEFT_CC``) from patient, side and view; None when neither is there."""
    path = _clean(rec.get("image file path"))
    if path:
        try:
            return validate_key(path).split("/", 1)[0]
        except UnsafeKeyError:
            pass  # then by name, if the row has what the name is made of
    patient = _clean(rec.get("patient_id"))
    side = _clean(rec.get("left or right breast")).upper()
    view = _clean(rec.get("image view")).upper()
    if _PATIENT.match(patient) and side in _SIDE and view in ("CC", "MLO"):
        kind_word = "Mass" if kind == "mass" else "Calc"
        split_word = "Training" if split == "train" else "Test"
        return f"{kind_word}-{split_word}_{patient}_{side}_{view}"
    return None


def _whole_file_rejects(
    frame: pd.DataFrame, csv_name: str, reason: str, *, kind: str, split: str, pseudonym_key: str | None
) -> list[Reject]:
    """A file-level fault (a required column missing) rejects every case of the file: one
    reject per case (image), with its pseudonym when a key is given, so that the run still
    counts every case it found. Rows whose case cannot be told are one reject each; a file
    without rows is one reject for the file."""
    by_case: dict[str, list[int]] = defaultdict(list)
    unknown: list[int] = []
    for i, rec in enumerate(frame.to_dict("records"), start=1):
        folder = _case_folder(rec, kind, split)
        (by_case[folder] if folder else unknown).append(i)
    if not by_case and not unknown:
        return [Reject(source=csv_name, reason=reason)]

    def rows(numbers: list[int]) -> str:
        return f"{csv_name} row{'s' if len(numbers) > 1 else ''} {', '.join(map(str, numbers))}"

    rejects = [
        Reject(
            source=rows(numbers),
            reason=reason,
            case_id=case_pseudonym(pseudonym_key, DATASET, folder) if pseudonym_key else None,
        )
        for folder, numbers in by_case.items()
    ]
    return rejects + [Reject(source=rows([i]), reason=reason) for i in unknown]


def parse_csv_frame(
    raw: pd.DataFrame, csv_name: str, *, kind: str, split: str, pseudonym_key: str | None = None
) -> tuple[list[CbisRow], list[Reject]]:
    """Pure: the rows of one CSV → clean rows and readable rejects (nothing dropped silently).

    A required column missing rejects the whole file, one reject per case it lists (see
    :func:`_whole_file_rejects`; ``pseudonym_key``: name those cases by pseudonym)."""
    frame = raw.rename(columns={"breast_density": "breast density"})
    missing = [c for c in _REQUIRED if c not in frame.columns]
    if missing:
        reason = (
            f"{csv_name}: missing columns {missing}: the whole file is rejected, "
            "every case it lists with it"
        )
        return [], _whole_file_rejects(frame, csv_name, reason, kind=kind, split=split, pseudonym_key=pseudonym_key)
    rows: list[CbisRow] = []
    rejects: list[Reject] = []
    for i, rec in enumerate(frame.to_dict("records"), start=1):
        patient = _clean(rec.get("patient_id"))
        where = f"{csv_name} row {i}"
        try:
            # reasons name the column and the problem, never the cell's value
            for col in _REQUIRED:
                if not _clean(rec.get(col)):
                    raise ValueError(f"empty required cell {col!r}")
            if not _PATIENT.match(patient):
                raise ValueError("'patient_id' is not of the form P_00000")
            side = _clean(rec["left or right breast"]).upper()
            try:
                abnormality_id = int(_clean(rec["abnormality id"]))
            except ValueError:
                raise ValueError("'abnormality id' is not an integer") from None
            pathology = _clean(rec["pathology"]).upper()
            paths = {c: _clean(rec.get(c)) for c in _PATH_COLS}
            for col, key in paths.items():
                if key:
                    try:
                        validate_key(key)
                    except UnsafeKeyError as exc:
                        raise _UnsafePath(col, exc) from None
            if kind == "mass":
                detail = f"shape={_clean(rec.get('mass shape')) or 'N/A'}; margins={_clean(rec.get('mass margins')) or 'N/A'}"
            else:
                detail = f"calc type={_clean(rec.get('calc type')) or 'N/A'}; distribution={_clean(rec.get('calc distribution')) or 'N/A'}"
            rows.append(
                CbisRow(
                    csv_name=csv_name,
                    row_number=i,
                    source_patient=patient,
                    split=split,
                    laterality=_SIDE.get(side, side),
                    view=_clean(rec["image view"]).upper(),
                    abnormality_id=abnormality_id,
                    abnormality_type=kind,
                    pathology=pathology,
                    density=_int_or_none(rec.get("breast density"), "breast density"),
                    birads=_int_or_none(rec.get("assessment"), "assessment"),
                    subtlety=_int_or_none(rec.get("subtlety"), "subtlety"),
                    detail=detail,
                    image_key=paths["image file path"],
                    roi_keys=tuple(
                        k for k in (paths["ROI mask file path"], paths["cropped image file path"]) if k
                    ),
                )
            )
        except ValueError as exc:
            rejects.append(Reject(source=where, reason=str(exc)))
    return rows, rejects


def read_csv_bytes(
    data: bytes, csv_name: str, *, pseudonym_key: str | None = None
) -> tuple[list[CbisRow], list[Reject]]:
    """Parse one CSV file's bytes (quoted cells with newlines are fine)."""
    if csv_name not in CSV_FILES:
        return [], [Reject(source=csv_name, reason="not one of the four CBIS-DDSM CSV names")]
    kind, split = CSV_FILES[csv_name]
    try:
        raw = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:  # positions, not content
        return [], [Reject(source=csv_name, reason=f"unparseable CSV: {exc}")]
    except ValueError as exc:
        return [], [Reject(source=csv_name, reason=f"unparseable CSV ({type(exc).__name__})")]
    return parse_csv_frame(raw, csv_name, kind=kind, split=split, pseudonym_key=pseudonym_key)


def _lesion_record(row: CbisRow, key: str, image_uri: str, mask_uri: str | None) -> dict:
    return {
        "case_id": case_pseudonym(key, DATASET, row.image_folder),
        "patient_id": patient_pseudonym(key, DATASET, row.source_patient),
        "lesion_id": row.abnormality_id,
        "source_dataset": DATASET,
        "source_split": row.split,
        "laterality": row.laterality,
        "view": row.view,
        "image_type": "film",
        "image_uri": image_uri,
        "mask_uri": mask_uri,
        "mask_geometry": None,
        "abnormality_type": row.abnormality_type,
        "pathology": row.pathology,
        "density": row.density,
        "birads": row.birads,
        "subtlety": row.subtlety,
        "lesion_detail": row.detail,
    }


def read_cbis_csvs(
    csv_dir: Path, *, pseudonym_key: str, images_root: Path | None = None
) -> AdapterResult:
    """Metadata only: the CSVs in ``csv_dir`` → lesion table. URIs point below ``images_root``
    (default: the CSV folder's parent) exactly as the CSV names them; masks are *not* resolved
    (no DICOM is read), so for calc rows ``mask_uri`` is the CSV's ROI cell as written."""
    root = LocalStore(images_root or csv_dir.parent)
    rows: list[CbisRow] = []
    rejects: list[Reject] = []
    for name in CSV_FILES:
        path = csv_dir / name
        if path.is_file():
            r, j = read_csv_bytes(path.read_bytes(), name, pseudonym_key=pseudonym_key)
            rows += r
            rejects += j
    records = [_lesion_record(r, pseudonym_key, root.uri(r.image_key), root.uri(r.roi_keys[0])) for r in rows]
    return AdapterResult(lesions=conform(pd.DataFrame.from_records(records)), rejects=rejects)


# --------------------------------------------------------------------------------------------
# Resolving objects in a store (both TCIA layouts; masks told apart by header and content)
# --------------------------------------------------------------------------------------------

SeriesReader = Callable[[ObjectStore, str], str]


def _series_description(store: ObjectStore, key: str) -> str:
    """SeriesDescription from the first bytes of a DICOM (whole object if the header is longer)."""
    from mammoseg.dicom import DicomError, read_series_description

    try:
        return read_series_description(store.read_prefix(key, HEADER_BYTES))
    except DicomError:
        return read_series_description(store.read_bytes(key))


def _looks_like_mask(store: ObjectStore, key: str) -> bool:
    """Pixel-content test for files whose header says nothing useful: two values, one of them 0."""
    import numpy as np

    from mammoseg.dicom import decode_dicom

    pixels = decode_dicom(store.read_bytes(key), apply_voi=False).pixels
    values = np.unique(pixels[:: max(1, pixels.shape[0] // 256), :: max(1, pixels.shape[1] // 256)])
    return len(values) <= 2 and values.min() == 0


def classify(description: str) -> str:
    """'mask', 'crop', 'full' or 'unknown' from a CBIS-DDSM SeriesDescription."""
    d = description.lower()
    if "roi mask" in d or d.strip() == "mask":
        return "mask"
    if "crop" in d:
        return "crop"
    if "full mammogram" in d:
        return "full"
    return "unknown"


def _folder_index(store: ObjectStore, prefix: str) -> dict[str, list[str]]:
    """Case folder (first segment below ``prefix``) → DICOM keys under it, relative to ``prefix``."""
    index: dict[str, list[str]] = defaultdict(list)
    for info in store.list(prefix):
        rel = info.key[len(prefix) :].lstrip("/") if prefix else info.key
        if rel.lower().endswith(".dcm") and "/" in rel:
            index[rel.split("/", 1)[0]].append(rel)
    return index


def load_cbis(
    store: ObjectStore,
    *,
    pseudonym_key: str,
    csv_prefix: str = "csv",
    images_prefix: str = "",
    workers: int = 8,
    describe: SeriesReader = _series_description,
) -> AdapterResult:
    """CSVs + objects in ``store`` → lesion table with resolved image and ROI-mask URIs.

    A case (one full mammogram) whose image or any lesion mask cannot be resolved is rejected as
    a whole, with the reason, so no image trains with part of its lesions unmarked.
    """
    rows: list[CbisRow] = []
    rejects: list[Reject] = []
    csv_keys = [o.key for o in store.list(join_key(csv_prefix) + "/" if csv_prefix else "") if o.key.endswith(".csv")]
    for key in csv_keys:
        name = key.rsplit("/", 1)[-1]
        if name in CSV_FILES:
            r, j = read_csv_bytes(store.read_bytes(key), name, pseudonym_key=pseudonym_key)
            rows += r
            rejects += j
    if not csv_keys:
        rejects.append(Reject(source=store.uri(csv_prefix), reason="no CBIS-DDSM case-description CSV found"))

    prefix = join_key(images_prefix)
    index = _folder_index(store, prefix + "/" if prefix else "")
    needed = {k for r in rows for folder in (r.image_folder, r.lesion_folder) for k in index.get(folder, [])}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        descriptions = dict(
            zip(sorted(needed), pool.map(lambda k: _safe_describe(describe, store, join_key(prefix, k)), sorted(needed)))
        )

    def full_image(row: CbisRow) -> str:
        candidates = index.get(row.image_folder, [])
        if row.image_key in candidates:
            return row.image_key
        if not candidates:
            raise LookupError("full mammogram not found: no DICOM under the case folder")
        full = [k for k in candidates if classify(descriptions.get(k, "")) == "full"]
        if len(candidates) == 1 or len(full) == 1:
            return candidates[0] if len(candidates) == 1 else full[0]
        raise LookupError(f"{len(candidates)} DICOMs under the case folder and none is clearly the full mammogram")

    def roi_mask(row: CbisRow) -> str:
        candidates = index.get(row.lesion_folder, [])
        if not candidates:
            raise LookupError(f"abnormality {row.abnormality_id}: no DICOM under its lesion folder")
        kinds = {k: classify(descriptions.get(k, "")) for k in candidates}
        masks = [k for k, kind in kinds.items() if kind == "mask"]
        if not masks:
            unknown = [k for k, kind in kinds.items() if kind == "unknown"]
            masks = [k for k in unknown if _safe_is_mask(store, join_key(prefix, k))]
        if not masks:
            # what the headers say, as kinds: a SeriesDescription is header text, never quoted
            seen = ", ".join(sorted({_KIND_WORDS[kind] for kind in kinds.values()}))
            raise LookupError(
                f"abnormality {row.abnormality_id}: no ROI mask among the {len(candidates)} DICOM(s) "
                f"of its lesion folder (found: {seen})"
            )
        exact = [k for k in masks if k in row.roi_keys]
        return (exact or sorted(masks))[0]

    records: list[dict] = []
    failed_cases: dict[str, tuple[str, str]] = {}  # case → (source, reason)
    # cases a broken file rejected whole: already one reject each, none of their rows is kept
    file_rejected = {r.case_id for r in rejects if r.case_id}
    for row in rows:
        case_id = case_pseudonym(pseudonym_key, DATASET, row.image_folder)
        if case_id in file_rejected:
            continue
        try:
            image_key = full_image(row)
            mask_key = roi_mask(row)
        except LookupError as exc:
            # the reason names no folder: CBIS folder names equal the DICOM PatientID
            failed_cases.setdefault(case_id, (f"{row.source}: {row.lesion_folder}", f"{row.csv_name} row {row.row_number}: {exc}"))
            continue
        records.append(
            _lesion_record(row, pseudonym_key, store.uri(join_key(prefix, image_key)), store.uri(join_key(prefix, mask_key)))
        )
    lesions = conform(pd.DataFrame.from_records(records))
    if failed_cases:
        dropped = lesions["case_id"].isin(list(failed_cases))
        lesions = lesions[~dropped].reset_index(drop=True)
        for case_id, (source, reason) in sorted(failed_cases.items()):
            rejects.append(Reject(source=source, reason=reason, case_id=case_id))
    return AdapterResult(lesions=lesions, rejects=rejects)


_KIND_WORDS = {
    "mask": "ROI mask",
    "crop": "cropped image",
    "full": "full mammogram",
    "unknown": "no known SeriesDescription or unreadable",
}


def _safe_describe(describe: SeriesReader, store: ObjectStore, key: str) -> str:
    """A header that cannot be read is 'unknown', not an abort: preprocessing reports the decode
    error for the case itself. Only content errors (:data:`CONTENT_ERRORS`) mean that; a store
    that fails to deliver the bytes raises, so the task retries instead of quarantining."""
    try:
        return describe(store, key)
    except CONTENT_ERRORS:
        return ""


def _safe_is_mask(store: ObjectStore, key: str) -> bool:
    """Undecodable content: not a usable mask. Store errors propagate (see :data:`CONTENT_ERRORS`)."""
    try:
        return _looks_like_mask(store, key)
    except CONTENT_ERRORS:
        return False
