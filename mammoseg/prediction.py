"""Prediction on image files: what ``mammoseg predict`` writes for each image.

For one original image (DICOM, PNG/PGM 8- or 16-bit, JPEG) and a loaded
:class:`~mammoseg.inference.Predictor`, :func:`predict_file` writes, in the image's **own
geometry**:

* ``<name>_mask.png`` — 8-bit, 255 where ``prob >= threshold``, keeping only the components
  whose score reaches the plan's ``min_score`` and of those its ``keep_components``
  highest-scoring when these name numbers (the mask the evaluation scores,
  :func:`~mammoseg.evaluation.segment`);
* ``<name>_overlay.png`` — the image with the predicted contours in red;
* ``<name>_seg.dcm`` — for a DICOM input only: the same mask as a DICOM Segmentation object
  over the source instance (:func:`mammoseg.seg.build_seg`; pixel data equal to the PNG mask);
* ``<name>_lesions.json`` — the detection output (:func:`~mammoseg.evaluation.lesion_list`):
  components of ``prob >= threshold`` with at least :func:`min_area_original` pixels, highest score first,
  at most the plan's ``top_k``; plus the threshold, ``min_score``, ``keep_components``, the model
  version (when the model is a published version's), the image shape and the coordinate
  conventions. The list may name more lesions than the mask holds: with the default
  ``min_lesion_px`` of 0, the mask holds the first ``keep_components`` of those whose score
  reaches ``min_score``.

The plan's ``min_lesion_px`` counts pixels of the *preprocessed* grid. One grid pixel covers
``(padded_side / size)²`` original pixels (the square crop+pad that was resized to the grid), so
in original pixels the minimum is ``ceil(min_lesion_px / transform.scale²)``, at least 1. The
ratio uses the padded square, not the whole image, because the border crop removes background
that the grid never sees.

Keras is only touched through the predictor; this module imports no backend itself.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from mammoseg.publish import FILES, VERSIONS_PREFIX

if TYPE_CHECKING:
    from mammoseg.inference import Predictor
    from mammoseg.preprocess import Transform
    from mammoseg.seg import PatientModule, SegResult

#: File name endings read from an ``--input`` folder (case-insensitive).
IMAGE_SUFFIXES: Final = (".dcm", ".dicom", ".png", ".pgm", ".jpg", ".jpeg")

COORDINATES: Final = (
    "pixels of the original image, top-left origin; centroid (y, x); "
    "bbox (y0, x0, y1, x1) with exclusive ends; score = highest probability inside"
)


def image_files(folder: Path) -> list[Path]:
    """Every DICOM/PNG/PGM/JPEG file directly in ``folder`` (by name), sorted by name."""
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
        key=lambda p: p.name,
    )


def output_names(paths: list[Path]) -> list[str]:
    """One output name per input: the file stem, or the whole file name where two inputs share
    a stem (``scan.png`` and ``scan.dcm``), so no output overwrites another."""
    stems = [p.stem for p in paths]
    return [p.stem if stems.count(p.stem) == 1 else p.name for p in paths]


def model_version(model_uri: str) -> str | None:
    """The version id when ``model_uri`` is a published ``models/versions/<v>/model.keras``."""
    parts = PurePosixPath(model_uri.split("://", 1)[-1]).parts
    prefix = PurePosixPath(VERSIONS_PREFIX).parts
    n = len(prefix)
    for i in range(len(parts) - n - 1):
        if parts[i : i + n] == prefix and parts[i + n + 1 :] == (FILES["model"],):
            return parts[i + n]
    return None


def min_area_original(min_lesion_px: int, transform: Transform) -> int:
    """The plan's minimum lesion size (preprocessed-grid pixels) in original pixels (>= 1)."""
    if min_lesion_px <= 0:
        return 1
    return max(1, math.ceil(min_lesion_px / transform.scale**2 - 1e-9))


@dataclass(frozen=True)
class ImagePrediction:
    """What was written for one image (paths are strings: JSON-ready)."""

    image: str
    mask: str
    overlay: str
    lesions_json: str
    shape: tuple[int, int]
    threshold: float
    lesion_pixels: int
    n_lesions: int
    min_lesion_px: int  # in original pixels
    seg: str | None = None  # <name>_seg.dcm for a DICOM input

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


@dataclass(frozen=True)
class ImageOutputs:
    """What one image's prediction produced, before anything is written (pure)."""

    pixels: np.ndarray  # the decoded original image
    mask: np.ndarray  # bool, original geometry
    report: dict[str, Any]  # the lesion list document (<name>_lesions.json)
    seg: SegResult | None  # the DICOM SEG, for a DICOM input
    min_area: int
    n_lesions: int


def predict_image(
    predictor: Predictor,
    data: bytes,
    filename: str,
    *,
    threshold: float,
    laterality: str | None = None,
    version: str | None = None,
    seg_patient: PatientModule = "pseudonymous",
    pseudonym_key: str | None = None,
) -> ImageOutputs:
    """Decode, predict, threshold, list the lesions and (for DICOM ``data``) build the SEG.

    ``filename`` only names the image in the report and gives the decoder its extension. Raises
    :class:`ValueError` for an image that cannot be used (decoding, preprocessing, SEG).
    """
    from mammoseg.evaluation import lesion_list, segment
    from mammoseg.imageio import load_image

    pixels = load_image(data, filename)
    prob, case = predictor.predict_original(pixels, laterality=laterality)
    prob = np.clip(prob, 0.0, 1.0)
    plan = predictor.plan
    mask = segment(prob, threshold, plan.keep_components, plan.min_score)
    min_area = min_area_original(plan.min_lesion_px, case.transform)
    lesions = lesion_list(prob, threshold, min_area=min_area, top_k=plan.top_k)
    seg = None
    if is_dicom(data):
        from mammoseg.seg import build_seg

        seg = build_seg(data, mask, model_version=version, patient=seg_patient, pseudonym_key=pseudonym_key)
    report = {
        "image": filename,
        "shape": list(mask.shape),
        "threshold": float(threshold),
        "model_version": version,
        "labels": list(plan.labels),
        "min_lesion_px": min_area,
        "min_lesion_px_plan_grid": plan.min_lesion_px,
        "top_k": plan.top_k,
        "keep_components": plan.keep_components,
        "min_score": plan.min_score,
        "coordinates": COORDINATES,
        "lesions": [les.to_dict() for les in lesions],
    }
    return ImageOutputs(pixels=pixels, mask=mask, report=report, seg=seg, min_area=min_area, n_lesions=len(lesions))


def predict_file(
    predictor: Predictor,
    path: Path,
    out: Path,
    *,
    threshold: float,
    name: str | None = None,
    laterality: str | None = None,
    version: str | None = None,
    seg_patient: PatientModule = "pseudonymous",
    pseudonym_key: str | None = None,
) -> ImagePrediction:
    """Predict one image file and write its mask, overlay and lesion list into ``out``.

    A DICOM input also gets ``<name>_seg.dcm`` (patient module ``seg_patient``; the
    pseudonymous one needs ``pseudonym_key``).

    Raises :class:`ValueError` (image decoding and preprocessing errors are ValueErrors) or
    :class:`OSError` for a file that cannot be used; nothing is written then.
    """
    from mammoseg.evaluation import overlay_png
    from mammoseg.imageio import encode_png8

    name = name or path.stem
    result = predict_image(
        predictor, path.read_bytes(), path.name, threshold=threshold, laterality=laterality,
        version=version, seg_patient=seg_patient, pseudonym_key=pseudonym_key,
    )
    mask = result.mask
    out.mkdir(parents=True, exist_ok=True)
    mask_path = out / f"{name}_mask.png"
    overlay_path = out / f"{name}_overlay.png"
    lesions_path = out / f"{name}_lesions.json"
    mask_path.write_bytes(encode_png8(mask.astype(np.uint8) * 255))
    title = f"{name} (red: prediction)"
    overlay_path.write_bytes(overlay_png(result.pixels, np.zeros_like(mask), mask, title=title, max_side=1024))
    lesions_path.write_text(json.dumps(result.report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    seg_path = None
    if result.seg is not None:
        seg_path = out / f"{name}_seg.dcm"
        seg_path.write_bytes(result.seg.data)
    return ImagePrediction(
        image=str(path),
        mask=str(mask_path),
        overlay=str(overlay_path),
        lesions_json=str(lesions_path),
        shape=(int(mask.shape[0]), int(mask.shape[1])),
        threshold=float(threshold),
        lesion_pixels=int(mask.sum()),
        n_lesions=result.n_lesions,
        min_lesion_px=result.min_area,
        seg=None if seg_path is None else str(seg_path),
    )


def is_dicom(data: bytes) -> bool:
    """A DICOM Part 10 file (``DICM`` at byte 128)."""
    return len(data) >= 132 and data[128:132] == b"DICM"
