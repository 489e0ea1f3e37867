"""Preprocessing: crop → flip → CLAHE → pad + resize, with alignment checks at every step.

Array level (pure functions on numpy arrays, inputs never modified):
:func:`border_crop`, :func:`chest_wall_side`, :func:`clahe`, :func:`preprocess_arrays` →
:class:`PreprocessedCase` with its :class:`Transform` (which maps predictions back with
:meth:`Transform.to_original`). Case level (reads/writes an object store):
:func:`preprocess_case` → :class:`CaseResult`, one content-addressed NPZ per image.

Full-size images (padded crop at least 4x the output side) go through a reduced working copy
(:mod:`mammoseg.preprocess.fast`: one integer reduction shared with breast detection, one
resize, CLAHE at the output resolution); ``preprocess_arrays(..., reduced=False)`` forces the
step-by-step full-resolution path.

No TensorFlow/Keras and no Prefect here.
"""

from mammoseg.preprocess.arrays import PreprocessedCase, preprocess_arrays
from mammoseg.preprocess.case import (
    CaseResult,
    MaskRef,
    PairingInfo,
    PreprocessedArrays,
    load_preprocessed,
    npz_bytes,
    output_key,
    preprocess_case,
    read_preprocessed,
)
from mammoseg.preprocess.checks import (
    MaskStats,
    check_alignment,
    in_breast_fraction,
    iou,
    mask_stats,
    roundtrip_iou,
)
from mammoseg.preprocess.errors import (
    AlignmentError,
    ImageDecodeError,
    InvalidImageError,
    MaskDecodeError,
    MaskNotFoundError,
    MaskShapeError,
    NoBreastError,
    PreprocessError,
)
from mammoseg.preprocess.params import AlignmentTolerances, PreprocessParams
from mammoseg.preprocess.steps import (
    BorderCrop,
    border_crop,
    breast_region,
    chest_wall_side,
    clahe,
    intensity_window,
    otsu_threshold,
    square_padding,
    stretch_to_uint16,
)
from mammoseg.preprocess.transform import Transform

__all__ = [
    "AlignmentError",
    "AlignmentTolerances",
    "BorderCrop",
    "CaseResult",
    "ImageDecodeError",
    "InvalidImageError",
    "MaskDecodeError",
    "MaskNotFoundError",
    "MaskRef",
    "MaskShapeError",
    "MaskStats",
    "NoBreastError",
    "PairingInfo",
    "PreprocessError",
    "PreprocessParams",
    "PreprocessedArrays",
    "PreprocessedCase",
    "Transform",
    "border_crop",
    "breast_region",
    "check_alignment",
    "chest_wall_side",
    "clahe",
    "in_breast_fraction",
    "intensity_window",
    "iou",
    "load_preprocessed",
    "mask_stats",
    "npz_bytes",
    "otsu_threshold",
    "output_key",
    "preprocess_arrays",
    "preprocess_case",
    "read_preprocessed",
    "roundtrip_iou",
    "square_padding",
    "stretch_to_uint16",
]
