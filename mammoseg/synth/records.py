"""What a synthetic-data generator reports back: the objects it wrote and their ground truth."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SynthLesion:
    """Ground truth of one drawn lesion, in the full image's pixels (top-left origin).

    ``center`` is ``(row, col)``; ``reach`` the radius in px of a circle around ``center`` that
    holds the whole lesion (mask and visible signs); ``bbox`` ``(y0, y1, x0, x1)`` (half-open) of
    its mask. ``mask_key`` / ``crop_key`` are the store keys of its ROI mask / cropped image
    (CBIS-DDSM) or ``None``.
    """

    abnormality_id: int
    abnormality_type: str  # mass | calcification | distortion | asymmetry (MIAS: class code)
    detail: str  # CBIS: "<shape>/<margins>" or "<calc type>/<distribution>"; MIAS: class
    pathology: str
    center: tuple[int, int]
    reach: float
    bbox: tuple[int, int, int, int]
    mask_area: int
    mask_key: str | None = None
    crop_key: str | None = None


@dataclass(frozen=True)
class SynthImage:
    """One synthetic image: where it is, who it belongs to, how it was stored, what it shows.

    ``key`` is ``None`` when the image object was deliberately not written (defect cases).
    ``chest_wall`` is the image edge the breast is attached to (``"left"``/``"right"``).
    ``artefacts`` are ``(kind, (y0, y1, x0, x1))`` film label / border strip boxes.
    """

    key: str | None
    source_patient_id: str
    source_image_id: str
    split: str  # train | test ("" for MIAS)
    laterality: str  # L | R
    view: str
    photometric: str
    chest_wall: str
    density: int
    lesions: tuple[SynthLesion, ...]
    artefacts: tuple[tuple[str, tuple[int, int, int, int]], ...] = ()
    windowed: bool = False
    rescaled: bool = False
    defect: str | None = None


@dataclass(frozen=True)
class SynthSummary:
    """What a generator wrote.

    ``n_images``: image records (including defect cases); ``n_lesions``: lesion rows/lines in the
    metadata (including defect cases, excluding MIAS ``NORM`` lines); ``keys``: every object key
    written, sorted; ``csv_keys``: the metadata tables (CBIS: four CSVs; MIAS: ``Info.txt``);
    ``bad_cases``: ``{source_patient_id: defect kind}``; ``images``: per-image ground truth.
    """

    n_images: int
    n_lesions: int
    keys: tuple[str, ...]
    csv_keys: tuple[str, ...]
    bad_cases: dict[str, str] = field(default_factory=dict)
    images: tuple[SynthImage, ...] = ()
