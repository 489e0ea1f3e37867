"""Exceptions of the preprocessing step.

Every one is a :class:`ValueError` with a human-readable reason and a short machine ``code``; the
preprocess flow turns them into quarantine records (``code`` + ``str(exc)`` + ``pairing``).
Messages name object keys and numbers only, never anything read from a DICOM header.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from mammoseg.preprocess.case import PairingInfo


class PreprocessError(ValueError):
    """Base class: this case cannot be preprocessed; ``str(exc)`` says why."""

    code: ClassVar[str] = "preprocess_error"

    def __init__(self, reason: str, *, pairing: PairingInfo | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        #: What was learned about the image/mask pairing before the failure (None at array level).
        self.pairing = pairing


class InvalidImageError(PreprocessError):
    """The pixel array is not a usable 2-D uint8/uint16 image."""

    code = "invalid_image"


class ImageDecodeError(PreprocessError):
    """The image object is missing or its bytes cannot be decoded."""

    code = "image_undecodable"


class NoBreastError(PreprocessError):
    """No breast-like region was found (blank, constant or non-mammogram image)."""

    code = "no_breast_found"


class MaskNotFoundError(PreprocessError):
    """A lesion mask object named by the lesion table does not exist."""

    code = "mask_missing"


class MaskDecodeError(PreprocessError):
    """A mask object cannot be decoded, or a mask geometry cannot be rendered."""

    code = "mask_undecodable"


class MaskShapeError(PreprocessError):
    """A lesion mask does not have the image's height and width."""

    code = "mask_shape_mismatch"


class AlignmentError(PreprocessError):
    """A mask no longer matches the image after a step (area, centroid, in-breast checks)."""

    code = "alignment_failed"
