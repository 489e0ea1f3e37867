"""The geometric part of preprocessing (crop → flip → pad → resize), forwards and backwards.

A :class:`Transform` is recorded for every case (JSON in the NPZ); evaluation uses
:meth:`Transform.to_original` to put predictions back on the original image. Conventions: see
:mod:`mammoseg.preprocess.steps` (``(y, x)`` points, integer = pixel centre, half-open boxes).
Resizing maps pixel *areas* (OpenCV's half-pixel convention): a point ``p`` goes to
``(p + 0.5) * scale - 0.5``, for ``INTER_AREA``, ``INTER_LINEAR`` and ``INTER_NEAREST_EXACT``
alike, so image and masks stay on the same grid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal, Protocol

import cv2
import numpy as np

Interpolation = Literal["area", "linear", "nearest"]

_CV_INTERP = {
    "area": cv2.INTER_AREA,
    "linear": cv2.INTER_LINEAR,
    # INTER_NEAREST_EXACT samples the source pixel under each output pixel *centre*; plain
    # INTER_NEAREST takes the top-left one and shifts masks by up to half an input block.
    "nearest": cv2.INTER_NEAREST_EXACT,
}


class GeometricStep(Protocol):
    """One step of the geometry: what :func:`~.checks.check_alignment` needs to know."""

    name: str

    @property
    def scale(self) -> float: ...

    def map_point(self, y: float, x: float) -> tuple[float, float]: ...

    def apply(self, array: np.ndarray, interpolation: Interpolation) -> np.ndarray: ...


@dataclass(frozen=True)
class Crop:
    box: tuple[int, int, int, int]
    name: str = "crop"
    scale: float = 1.0

    def map_point(self, y: float, x: float) -> tuple[float, float]:
        return y - self.box[0], x - self.box[2]

    def apply(self, array: np.ndarray, interpolation: Interpolation = "nearest") -> np.ndarray:
        y0, y1, x0, x1 = self.box
        return array[y0:y1, x0:x1]  # a view; later steps copy


@dataclass(frozen=True)
class Flip:
    enabled: bool
    width: int  # width of the array being flipped
    name: str = "flip"
    scale: float = 1.0

    def map_point(self, y: float, x: float) -> tuple[float, float]:
        return (y, self.width - 1 - x) if self.enabled else (y, x)

    def apply(self, array: np.ndarray, interpolation: Interpolation = "nearest") -> np.ndarray:
        return array[:, ::-1] if self.enabled else array


@dataclass(frozen=True)
class Pad:
    pad: tuple[int, int, int, int]  # top, bottom, left, right
    name: str = "pad"
    scale: float = 1.0

    def map_point(self, y: float, x: float) -> tuple[float, float]:
        return y + self.pad[0], x + self.pad[2]

    def apply(self, array: np.ndarray, interpolation: Interpolation = "nearest") -> np.ndarray:
        top, bottom, left, right = self.pad
        src = np.ascontiguousarray(array)
        if not any(self.pad):
            return src.copy() if src is array else src
        return cv2.copyMakeBorder(src, top, bottom, left, right, cv2.BORDER_CONSTANT, value=0)


@dataclass(frozen=True)
class Resize:
    source_side: int  # the square being resized
    size: int
    name: str = "resize"

    @property
    def scale(self) -> float:
        return self.size / self.source_side

    def map_point(self, y: float, x: float) -> tuple[float, float]:
        s = self.scale
        return (y + 0.5) * s - 0.5, (x + 0.5) * s - 0.5

    def apply(self, array: np.ndarray, interpolation: Interpolation = "area") -> np.ndarray:
        src = np.ascontiguousarray(array)
        if src.shape[:2] == (self.size, self.size):
            return src.copy() if src is array else src
        return cv2.resize(src, (self.size, self.size), interpolation=_CV_INTERP[interpolation])


def _ints(values: object, n: int, what: str) -> tuple[int, ...]:
    seq = tuple(values)  # type: ignore[arg-type]
    if len(seq) != n or any(isinstance(v, bool) or int(v) != v for v in seq):
        raise ValueError(f"{what} must be {n} integers, got {values!r}")
    return tuple(int(v) for v in seq)


@dataclass(frozen=True)
class Transform:
    """Where the ``output_size``² model input came from in the original image.

    * ``original_shape`` — (height, width) of the decoded original image;
    * ``crop_box`` — (y0, y1, x0, x1), half-open, in original pixels;
    * ``flipped`` — the crop was mirrored left-right (to put the chest wall on the canonical side);
    * ``pad`` — (top, bottom, left, right) zero rows/columns added after the flip to make it square;
    * ``output_size`` — side of the square output.
    """

    original_shape: tuple[int, int]
    crop_box: tuple[int, int, int, int]
    flipped: bool
    pad: tuple[int, int, int, int]
    output_size: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "original_shape", _ints(self.original_shape, 2, "original_shape"))
        object.__setattr__(self, "crop_box", _ints(self.crop_box, 4, "crop_box"))
        object.__setattr__(self, "pad", _ints(self.pad, 4, "pad"))
        object.__setattr__(self, "output_size", int(self.output_size))
        object.__setattr__(self, "flipped", bool(self.flipped))
        height, width = self.original_shape
        y0, y1, x0, x1 = self.crop_box
        if not (0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width):
            raise ValueError(
                f"crop box {self.crop_box} is not inside an image of {self.original_shape}"
            )
        if min(self.pad) < 0:
            raise ValueError(f"negative padding {self.pad}")
        top, bottom, left, right = self.pad
        if (y1 - y0) + top + bottom != (x1 - x0) + left + right:
            raise ValueError(f"crop {self.cropped_shape} padded by {self.pad} is not square")
        if self.output_size < 1:
            raise ValueError(f"output size must be positive, got {self.output_size}")

    # -- geometry ---------------------------------------------------------------------------
    @property
    def cropped_shape(self) -> tuple[int, int]:
        y0, y1, x0, x1 = self.crop_box
        return (y1 - y0, x1 - x0)

    @property
    def padded_side(self) -> int:
        return self.cropped_shape[0] + self.pad[0] + self.pad[1]

    @property
    def scale(self) -> float:
        """Output pixels per original pixel (same in x and y)."""
        return self.output_size / self.padded_side

    def steps(self) -> list[GeometricStep]:
        """The four steps in order: crop, flip, pad, resize."""
        return [
            Crop(self.crop_box),
            Flip(self.flipped, self.cropped_shape[1]),
            Pad(self.pad),
            Resize(self.padded_side, self.output_size),
        ]

    # -- forwards ---------------------------------------------------------------------------
    def forward_mask(self, mask: np.ndarray) -> np.ndarray:
        """An original-geometry mask (nonzero = in) as a new uint8 0/1 ``S x S`` array."""
        arr = np.asarray(mask)
        if arr.shape != self.original_shape:
            raise ValueError(
                f"mask shape {arr.shape} is not the original shape {self.original_shape}"
            )
        out = (arr != 0).view(np.uint8)
        for step in self.steps():
            out = step.apply(out, "nearest")
        return out

    def forward_image(self, image: np.ndarray) -> np.ndarray:
        """Geometry only (no windowing, no CLAHE): crop, flip, pad, resize with INTER_AREA."""
        arr = np.asarray(image)
        if arr.shape != self.original_shape:
            raise ValueError(
                f"image shape {arr.shape} is not the original shape {self.original_shape}"
            )
        for step in self.steps():
            arr = step.apply(arr, "area")
        return arr

    def point_to_output(self, y: float, x: float) -> tuple[float, float]:
        """An original-image point in output coordinates."""
        for step in self.steps():
            y, x = step.map_point(y, x)
        return y, x

    # -- backwards --------------------------------------------------------------------------
    def point_to_original(self, y: float, x: float) -> tuple[float, float]:
        """An output point (e.g. a detection centre) in original-image coordinates."""
        s = self.scale
        y, x = (y + 0.5) / s - 0.5, (x + 0.5) / s - 0.5
        y, x = y - self.pad[0], x - self.pad[2]
        if self.flipped:
            x = self.cropped_shape[1] - 1 - x
        return y + self.crop_box[0], x + self.crop_box[2]

    def to_original(
        self, pred: np.ndarray, *, order: Literal["linear", "nearest"] = "linear"
    ) -> np.ndarray:
        """Undo resize, pad, flip and crop: an ``S x S`` map on the original image grid.

        ``pred`` is a probability map (float) or a mask (bool / 0-1 integers). ``order`` is the
        interpolation of the upsampling. Returns a new array of ``original_shape``: ``bool`` for
        a bool input (linear: interpolated, then ``>= 0.5``), ``float32`` otherwise. Pixels
        outside the crop box (the removed borders) are 0 / False.
        """
        arr = np.asarray(pred)
        side = self.output_size
        if arr.shape != (side, side):
            raise ValueError(f"prediction shape {arr.shape} is not ({side}, {side})")
        if order not in ("linear", "nearest"):
            raise ValueError(f"order must be 'linear' or 'nearest', got {order!r}")
        is_bool = arr.dtype == np.bool_
        if order == "nearest" and is_bool:
            work = arr.view(np.uint8)
        else:
            work = arr.astype(np.float32)
        n = self.padded_side
        up = cv2.resize(np.ascontiguousarray(work), (n, n), interpolation=_CV_INTERP[order])
        top, bottom, left, right = self.pad
        up = up[top : n - bottom, left : n - right]
        if self.flipped:
            up = up[:, ::-1]
        if is_bool:
            up = up >= 0.5 if order == "linear" else up != 0
            out = np.zeros(self.original_shape, dtype=bool)
        else:
            out = np.zeros(self.original_shape, dtype=np.float32)
        y0, y1, x0, x1 = self.crop_box
        out[y0:y1, x0:x1] = up
        return out

    # -- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, object]:
        return {
            "version": 1,
            "original_shape": list(self.original_shape),
            "crop_box": list(self.crop_box),
            "flipped": self.flipped,
            "pad": list(self.pad),
            "output_size": self.output_size,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Transform:
        """Parse :meth:`to_json` output; raises ``ValueError`` with the reason if it is not one."""
        try:
            data = json.loads(text)
        except (TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"transform is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("version") != 1:
            raise ValueError("transform JSON must be an object with version 1")
        missing = {"original_shape", "crop_box", "flipped", "pad", "output_size"} - set(data)
        if missing:
            raise ValueError(f"transform JSON lacks {sorted(missing)}")
        if not isinstance(data["flipped"], bool):
            raise ValueError(f"transform 'flipped' must be true/false, got {data['flipped']!r}")  # noqa: TRY004
        return cls(
            original_shape=data["original_shape"],
            crop_box=data["crop_box"],
            flipped=data["flipped"],
            pad=data["pad"],
            output_size=data["output_size"],
        )
