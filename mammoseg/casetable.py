"""The one table every dataset adapter produces.

Long form: **one row per lesion** (an image with three abnormalities has three rows sharing the
``case_id``; an image without any lesion has one row with ``lesion_id = 0`` and no mask). The
per-image view used for training is :func:`image_table`, which groups lesions and keeps the list
of per-lesion masks from which the union mask is drawn.

A lesion mask is either an object (``mask_uri``: DICOM, PNG or JPEG in a store) or a geometry
(``mask_geometry``: JSON, in *image pixel coordinates with a top-left origin*):
``{"type": "circle", "cx": .., "cy": .., "r": ..}`` or
``{"type": "polygon", "points": [[x, y], ...]}``.
"""

from __future__ import annotations

import json
from typing import Final

import pandas as pd

#: Columns of the lesion table, in order, with their pandas dtypes.
LESION_COLUMNS: Final[dict[str, str]] = {
    "case_id": "string",  # pseudonymous, one per image
    "patient_id": "string",  # pseudonymous
    "lesion_id": "Int64",  # 1.. per image; 0 = no lesion on this image
    "source_dataset": "string",  # cbis-ddsm | mini-mias | inbreast | cdd-cesm | synthetic-…
    "source_split": "string",  # train | test as the dataset ships it ("" when none)
    "laterality": "string",  # L | R
    "view": "string",  # CC | MLO | ML | …
    "image_type": "string",  # film (scanned: CBIS-DDSM, MIAS) | FFDM | DM (CESM low energy) | CM
    "image_uri": "string",
    "mask_uri": "string",  # <NA> when the mask is a geometry or there is no lesion
    "mask_geometry": "string",  # JSON or <NA>
    "abnormality_type": "string",  # mass | calcification | distortion | asymmetry | normal | other
    "pathology": "string",  # MALIGNANT | BENIGN | BENIGN_WITHOUT_CALLBACK | NORMAL | UNKNOWN
    "density": "Int64",  # ACR/BI-RADS density 1–4
    "birads": "Int64",  # assessment 0–6
    "subtlety": "Int64",  # 1–5 (CBIS-DDSM only)
    "lesion_detail": "string",  # free text: shape/margins, calc type/distribution, finding
}

PATHOLOGIES: Final = ("MALIGNANT", "BENIGN", "BENIGN_WITHOUT_CALLBACK", "NORMAL", "UNKNOWN")
ABNORMALITY_TYPES: Final = ("mass", "calcification", "distortion", "asymmetry", "normal", "other")
LATERALITIES: Final = ("L", "R")
VIEWS: Final = ("CC", "MLO", "ML", "LM", "XCCL", "FB", "OTHER")


def empty_lesion_table() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in LESION_COLUMNS.items()})


def conform(df: pd.DataFrame) -> pd.DataFrame:
    """Return a copy with exactly :data:`LESION_COLUMNS` (missing ones filled with <NA>), typed."""
    out = pd.DataFrame(index=df.index)
    for col, dtype in LESION_COLUMNS.items():
        if col in df.columns:
            out[col] = df[col].astype(dtype)
        else:
            out[col] = pd.Series(pd.NA, index=df.index, dtype=dtype)
    return out.reset_index(drop=True)


def circle_geometry(cx: float, cy: float, r: float) -> str:
    return json.dumps({"type": "circle", "cx": float(cx), "cy": float(cy), "r": float(r)})


def polygon_geometry(points: list[tuple[float, float]]) -> str:
    return json.dumps({"type": "polygon", "points": [[float(x), float(y)] for x, y in points]})


_PATHOLOGY_RANK = {p: i for i, p in enumerate(("MALIGNANT", "BENIGN", "BENIGN_WITHOUT_CALLBACK", "UNKNOWN", "NORMAL"))}


def image_table(lesions: pd.DataFrame) -> pd.DataFrame:
    """One row per image: per-lesion masks as lists, the worst pathology, the lesion count."""
    rows = []
    for case_id, g in lesions.groupby("case_id", sort=True):
        first = g.iloc[0]
        real = g[g["lesion_id"].fillna(0) > 0]
        paths = [p for p in g["pathology"].dropna()]
        worst = min(paths, key=lambda p: _PATHOLOGY_RANK.get(p, 99)) if paths else "UNKNOWN"
        rows.append(
            {
                "case_id": case_id,
                "patient_id": first["patient_id"],
                "source_dataset": first["source_dataset"],
                "source_split": first["source_split"],
                "laterality": first["laterality"],
                "view": first["view"],
                "image_type": first["image_type"],
                "image_uri": first["image_uri"],
                "mask_uris": [u for u in real["mask_uri"].dropna()],
                "mask_geometries": [m for m in real["mask_geometry"].dropna()],
                "n_lesions": len(real),
                "abnormality_types": sorted(set(real["abnormality_type"].dropna())),
                "pathology": worst,
                "density": first["density"],
                "birads": real["birads"].max() if len(real) else first["birads"],
                "subtlety": real["subtlety"].min() if len(real) else first["subtlety"],
            }
        )
    return pd.DataFrame(rows)


def to_csv_bytes(lesions: pd.DataFrame) -> bytes:
    return conform(lesions).to_csv(index=False).encode("utf-8")


def from_csv_bytes(data: bytes) -> pd.DataFrame:
    """Read a lesion table written by :func:`to_csv_bytes` back with its dtypes."""
    import io

    raw = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, na_values=[""])
    return conform(raw)
