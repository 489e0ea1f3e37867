"""The inference plan: everything needed to turn an original image into the model's answer.

In the spirit of nnU-Net's plans file, it is written next to every trained model
(``plan.json`` beside ``model.keras``) and published with it. ``predict`` and ``evaluate`` read
it from there and never from the environment, so a model is always used exactly as it was
trained and validated:

* ``preprocess``: the :class:`~mammoseg.preprocess.PreprocessParams` of the training arrays
  (size, CLAHE settings, canonical side, …);
* ``patch_size``: ``None`` when the network sees the whole preprocessed image, else the side of
  the patches it was trained on; inference then slides a window of that size over the image
  (:func:`mammoseg.sliding.sliding_window_predict`, ``window_overlap``, Gaussian blending);
* ``tta_mirror``: average the prediction with that of the up/down mirrored image (the only
  mirror that keeps the chest wall on its canonical side);
* ``suppress_pectoral``: set the probability to 0 inside the pectoral muscle of MLO views, as
  found by :func:`mammoseg.preprocess.pectoral.pectoral_mask` on the preprocessed image (the
  muscle is bright, lesion-like texture and the commonest large false positive);
* ``threshold``: the probability cut-off chosen on validation data;
* ``min_score``: ``None`` keeps every connected component of ``prob >= threshold`` in the mask;
  a number keeps only those whose highest probability inside reaches it (a faint blob on a
  lesion-free image is dropped, a confident lesion keeps its full outline);
* ``keep_components``: ``None`` keeps every (remaining) component; ``k`` keeps the ``k`` with
  the highest probability inside. Both are chosen together with the threshold
  (:mod:`mammoseg.evaluation.postprocess`);
* ``min_lesion_px`` and ``top_k``: the detection output (lesion list): connected components
  smaller than ``min_lesion_px`` pixels *of the preprocessed grid* are dropped, and at most
  ``top_k`` lesions are listed per image, highest score first;
* ``labels``: the label names of the output channel(s).

Input normalisation (per-breast or plain 0..1) is part of the model itself, not of the plan.
No I/O here: :func:`mammoseg.inference.load_predictor` reads the file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from mammoseg.preprocess import AlignmentTolerances, PreprocessParams

PLAN_FILE = "plan.json"


class PlanError(ValueError):
    """A plan file that this version of mammoseg cannot honour; the message says why."""


@dataclass(frozen=True)
class ModelPlan:
    """How a model is applied; see the module docstring. JSON round-trip: :meth:`to_json`."""

    preprocess: PreprocessParams = field(default_factory=PreprocessParams)
    patch_size: int | None = None
    window_overlap: float = 0.5
    tta_mirror: bool = False
    suppress_pectoral: bool = False
    threshold: float = 0.5
    keep_components: int | None = None
    min_score: float | None = None
    min_lesion_px: int = 0
    top_k: int = 5
    labels: tuple[str, ...] = ("lesion",)

    FORMAT: ClassVar[str] = "mammoseg-plan"
    FORMAT_VERSION: ClassVar[int] = 2  # 2: min_score (a version-1 plan reads as min_score None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))
        problems = []
        if self.patch_size is not None and not 16 <= self.patch_size <= self.preprocess.size:
            problems.append(
                f"patch_size must be in [16, preprocess.size={self.preprocess.size}] or None "
                f"(got {self.patch_size})"
            )
        if not 0.0 <= self.window_overlap < 1.0:
            problems.append(f"window_overlap must be in [0, 1) (got {self.window_overlap})")
        if not 0.0 < self.threshold < 1.0:
            problems.append(f"threshold must be in (0, 1) (got {self.threshold})")
        if self.keep_components is not None and (
            isinstance(self.keep_components, bool) or not isinstance(self.keep_components, int) or self.keep_components < 1
        ):
            problems.append(f"keep_components must be None or an integer >= 1 (got {self.keep_components!r})")
        if self.min_score is not None and (
            isinstance(self.min_score, bool) or not isinstance(self.min_score, int | float) or not 0.0 < self.min_score <= 1.0
        ):
            problems.append(f"min_score must be None or a number in (0, 1] (got {self.min_score!r})")
        if self.min_lesion_px < 0 or self.top_k < 1:
            problems.append("min_lesion_px must be >= 0 and top_k >= 1")
        if not self.labels:
            problems.append("labels must name at least one class")
        if problems:
            raise PlanError("invalid ModelPlan: " + "; ".join(problems))

    @property
    def network_size(self) -> int:
        """Side of the network's input: the patch, or the whole preprocessed image."""
        return self.patch_size or self.preprocess.size

    def replace(self, **changes: Any) -> ModelPlan:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return ModelPlan(**values)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["labels"] = list(self.labels)
        return {"format": self.FORMAT, "format_version": self.FORMAT_VERSION, **data}

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True).encode("utf-8")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelPlan:
        """Inverse of :meth:`to_dict`. A foreign format, a newer format version or an unknown
        field is refused (a plan we cannot fully honour must not be half-applied)."""
        if not isinstance(data, dict):
            raise PlanError("plan must be a JSON object")
        values = dict(data)
        fmt = values.pop("format", None)
        version = values.pop("format_version", None)
        if fmt != cls.FORMAT:
            raise PlanError(f"plan format is {fmt!r}, expected {cls.FORMAT!r}")
        if not isinstance(version, int) or version > cls.FORMAT_VERSION:
            raise PlanError(
                f"plan format version {version!r} is newer than this mammoseg reads "
                f"({cls.FORMAT_VERSION}); upgrade mammoseg"
            )
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise PlanError(f"unknown plan field(s): {', '.join(unknown)}")
        prep = dict(values.get("preprocess") or {})
        if isinstance(prep.get("alignment"), dict):
            prep["alignment"] = AlignmentTolerances(**prep["alignment"])
        try:
            values["preprocess"] = PreprocessParams(**prep)
            return cls(**values)
        except PlanError:
            raise
        except (TypeError, ValueError) as exc:
            raise PlanError(f"plan does not fit: {exc}") from None

    @classmethod
    def from_json(cls, data: bytes | str) -> ModelPlan:
        try:
            parsed = json.loads(data)
        except ValueError as exc:
            raise PlanError(f"plan is not JSON: {exc}") from None
        return cls.from_dict(parsed)
