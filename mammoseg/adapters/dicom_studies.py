"""Unlabelled DICOM images, e.g. studies in a PACS read through ``dicomweb://`` (issue 10).

Every ``*.dcm`` object below the root is one case: one row with ``lesion_id`` 0, no mask,
``abnormality_type`` "other" and ``pathology`` UNKNOWN (nothing is known about lesions: these are
images to segment, not ground truth). Laterality and view come from the header (SafeMeta only);
the case id is the keyed pseudonym of the object key, the patient id that of the study (the
first key segment: ``<study UID>/<series UID>/<SOP UID>.dcm`` in a PACS), never a header value.

An object that is not a decodable DICOM header, or not an image (no rows/columns), is rejected
with its reason; the source is never modified.
"""

from __future__ import annotations

import pandas as pd

from mammoseg.adapters.common import AdapterResult, Reject
from mammoseg.casetable import conform
from mammoseg.dicom import DicomError, read_meta
from mammoseg.ids import case_pseudonym, patient_pseudonym
from mammoseg.storage import ObjectStore

DATASET = "dicom"


def load_dicom_studies(store: ObjectStore, *, pseudonym_key: str) -> AdapterResult:
    records: list[dict[str, object]] = []
    rejects: list[Reject] = []
    for info in store.list(""):
        if not info.key.lower().endswith(".dcm"):
            continue
        case_id = case_pseudonym(pseudonym_key, DATASET, info.key)
        where = f"image {case_id}"  # object keys in a PACS are UIDs: they stay out of reasons
        try:
            meta = read_meta(store.read_bytes(info.key))
        except DicomError as exc:
            rejects.append(Reject(where, f"unreadable DICOM: {exc}", case_id))
            continue
        if meta.rows <= 0 or meta.columns <= 0:
            rejects.append(Reject(where, "not an image (no Rows/Columns)", case_id))
            continue
        study = info.key.split("/", 1)[0] if "/" in info.key else info.key
        records.append({
            "case_id": case_id,
            "patient_id": patient_pseudonym(pseudonym_key, DATASET, study),
            "lesion_id": 0,
            "source_dataset": DATASET,
            "source_split": "",
            "laterality": meta.image_laterality,
            "view": meta.view_position,
            "image_type": "FFDM" if meta.modality == "MG" else None,
            "image_uri": store.uri(info.key),
            "abnormality_type": "other",
            "pathology": "UNKNOWN",
            "lesion_detail": "unlabelled image (no ground truth)",
        })
    lesions = conform(pd.DataFrame.from_records(records)) if records else conform(pd.DataFrame())
    return AdapterResult(lesions=lesions, rejects=rejects)
