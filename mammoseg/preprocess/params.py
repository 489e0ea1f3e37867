"""Typed parameters of the preprocessing step, with a stable digest used in output keys."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal

if TYPE_CHECKING:
    from mammoseg.settings import Settings


def _settings_defaults() -> dict[str, object]:
    from mammoseg.settings import Settings

    return {name: f.default for name, f in Settings.model_fields.items()}


#: MAMMOSEG_IMAGE_SIZE, _CLAHE_CLIP_LIMIT, _CLAHE_TILE_GRID, _CANONICAL_SIDE: one default each.
_SETTINGS_DEFAULTS = _settings_defaults()


@dataclass(frozen=True)
class AlignmentTolerances:
    """How far a mask may drift from the image before :class:`AlignmentError` is raised.

    * ``centroid_px`` — the lesion centroid, mapped through a step, must land within this many
      output pixels of the centroid of the transformed mask.
    * area — the transformed lesion area must be within
      ``area_rel * expected + area_sqrt * sqrt(expected) + area_abs_px`` of
      ``expected = area_in * scale**2`` (the ``sqrt`` term is the boundary error of nearest
      resampling; it lets lesions smaller than ~9 output pixels shrink to nothing).
    * ``min_in_breast`` — fraction of each lesion's pixels that must lie in the detected breast.
    """

    centroid_px: float = 1.5
    area_rel: float = 0.1
    area_sqrt: float = 2.0
    area_abs_px: float = 2.0
    min_in_breast: float = 0.5

    def __post_init__(self) -> None:
        for name in ("centroid_px", "area_rel", "area_sqrt", "area_abs_px", "min_in_breast"):
            object.__setattr__(self, name, float(getattr(self, name)))
        if self.centroid_px <= 0 or self.area_rel < 0 or self.area_sqrt < 0 or self.area_abs_px < 0:
            raise ValueError("alignment tolerances must be positive")
        if not 0.0 <= self.min_in_breast <= 1.0:
            raise ValueError(f"min_in_breast must be in [0, 1], got {self.min_in_breast}")


@dataclass(frozen=True)
class PreprocessParams:
    """Everything that changes the preprocessed output (and so its key).

    * ``size`` — output side in pixels (square).
    * ``clahe_clip_limit`` — CLAHE clip limit *relative to the grey levels actually used*:
      2.0 clips each histogram bin at twice the mean count per used level, whether the image
      has 256 (8-bit), 4096 (12-bit) or 65536 levels (see :func:`~.steps.clahe`).
    * ``clahe_tile_grid`` — CLAHE tiles per side.
    * ``canonical_side`` — where the chest wall ends up: ``"L"`` = left image edge.
    * ``crop_margin`` — margin around the breast bounding box, as a fraction of the image's
      longer side.
    * ``otsu_downsample`` — longer side (px) of the working copy on which the breast is found.
    * ``threshold_fraction`` — breast threshold, as a fraction of the way from the background
      level to Otsu's threshold (see :func:`~.steps.breast_threshold`); low, to keep the faint
      periphery of the breast.
    * ``opening_fraction`` — size of the morphological opening (fraction of that working side),
      wide enough to cut thin scanner strips off the breast.
    * ``blank_outside_breast`` — set output pixels farther than ``blank_margin`` (fraction of
      the output side) from the detected breast to 0: film labels, markers and burned-in text
      that share the crop box with the breast never reach the model (or a report).
    """

    # the defaults shared with the environment's settings live in mammoseg/settings.py
    size: int = _SETTINGS_DEFAULTS["image_size"]
    clahe_clip_limit: float = _SETTINGS_DEFAULTS["clahe_clip_limit"]
    clahe_tile_grid: int = _SETTINGS_DEFAULTS["clahe_tile_grid"]
    canonical_side: Literal["L", "R"] = _SETTINGS_DEFAULTS["canonical_side"]
    crop_margin: float = 0.02
    otsu_downsample: int = 256
    threshold_fraction: float = 0.2
    opening_fraction: float = 0.02
    blank_outside_breast: bool = True
    blank_margin: float = 0.01
    alignment: AlignmentTolerances = field(default_factory=AlignmentTolerances)

    #: Bump when the algorithm changes in a way that changes outputs for the same parameters.
    #: 2: large images on a reduced working copy (mammoseg.preprocess.fast, issue 9).
    #: 3: the chest-wall side from the breast's attachment and mass together (steps.side_cues).
    ALGORITHM_VERSION: ClassVar[int] = 3

    def __post_init__(self) -> None:
        # Normalise numeric types so that e.g. clip limit 2 and 2.0 give the same digest.
        for name in ("size", "clahe_tile_grid", "otsu_downsample"):
            object.__setattr__(self, name, int(getattr(self, name)))
        for name in (
            "clahe_clip_limit",
            "crop_margin",
            "threshold_fraction",
            "opening_fraction",
            "blank_margin",
        ):
            object.__setattr__(self, name, float(getattr(self, name)))
        problems = []
        if not 16 <= self.size <= 4096:
            problems.append(f"size must be in [16, 4096], got {self.size}")
        if self.clahe_clip_limit <= 0:
            problems.append(f"clahe_clip_limit must be > 0, got {self.clahe_clip_limit}")
        if self.clahe_tile_grid < 1:
            problems.append(f"clahe_tile_grid must be >= 1, got {self.clahe_tile_grid}")
        if self.canonical_side not in ("L", "R"):
            problems.append(f"canonical_side must be 'L' or 'R', got {self.canonical_side!r}")
        if not 0.0 <= self.crop_margin < 0.5:
            problems.append(f"crop_margin must be in [0, 0.5), got {self.crop_margin}")
        if self.otsu_downsample < 32:
            problems.append(f"otsu_downsample must be >= 32, got {self.otsu_downsample}")
        if not 0.0 < self.threshold_fraction <= 1.0:
            problems.append(f"threshold_fraction must be in (0, 1], got {self.threshold_fraction}")
        if not 0.0 <= self.opening_fraction < 0.25:
            problems.append(f"opening_fraction must be in [0, 0.25), got {self.opening_fraction}")
        if not 0.0 <= self.blank_margin < 0.5:
            problems.append(f"blank_margin must be in [0, 0.5), got {self.blank_margin}")
        object.__setattr__(self, "blank_outside_breast", bool(self.blank_outside_breast))
        if problems:
            raise ValueError("invalid PreprocessParams: " + "; ".join(problems))

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def digest(self) -> str:
        """Stable 12-hex-digit hash of the parameters and the algorithm version."""
        payload = {"algorithm": self.ALGORITHM_VERSION, **self.to_dict()}
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: object) -> PreprocessParams:
        """Parameters from :class:`~mammoseg.settings.Settings` (image size, CLAHE, side)."""
        values: dict[str, object] = {
            "size": settings.image_size,
            "clahe_clip_limit": settings.clahe_clip_limit,
            "clahe_tile_grid": settings.clahe_tile_grid,
            "canonical_side": settings.canonical_side,
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]
