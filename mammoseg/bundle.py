"""The model bundle: ``bundle.json`` beside every published ``model.keras``.

In the spirit of a MONAI bundle's ``metadata.json``: what a deployment platform (or a person)
needs to know to run the model without reading our code — the model file's format, the data
formats in and out, the network's input spec, the preprocessing plan, the label names, the
library versions it was built with, its intended use and licence.

``mammoseg predict`` (:func:`mammoseg.inference.load_predictor`) reads it when present and
refuses, with one line saying why, a bundle it cannot honour: another bundle format, a newer
bundle version, a model format other than :data:`MODEL_FORMAT`, an input spec other than one
grayscale channel at the plan's size, or labels that differ from the plan's.

Pure: :func:`make_bundle` builds the document, :func:`check_bundle` validates one; no I/O here
(library versions are read from the installed distributions' metadata, nothing is imported).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from mammoseg.plan import ModelPlan, PlanError

BUNDLE_FILE: Final = "bundle.json"
BUNDLE_FORMAT: Final = "mammoseg-bundle"
BUNDLE_VERSION: Final = 1
#: The one model file format this mammoseg loads: a Keras 3 ``.keras`` archive.
MODEL_FORMAT: Final = "keras-v3"
INPUT_FORMATS: Final = ("DICOM (grayscale MG, single frame)", "PNG/PGM 8- or 16-bit", "JPEG")
OUTPUT_FORMATS: Final = ("DICOM SEG (binary, segment 'lesion')", "PNG mask (0/255)", "lesion list JSON")
INTENDED_USE: Final = (
    "Research and teaching: segmenting lesions (masses, calcification clusters) in mammograms to "
    "study methods and pipelines. Not a medical device: not for diagnosis, screening or any "
    "decision about a patient; outputs must be reviewed by a qualified reader."
)
LICENCE: Final = "Apache-2.0 (code); model weights inherit the terms of their training data"
_LIBRARIES: Final = ("mammoseg", "keras", "tensorflow", "numpy", "opencv-python-headless", "pydicom", "highdicom")


class BundleError(PlanError):
    """A bundle this mammoseg cannot honour; ``str(exc)`` is one line saying why."""


@dataclass(frozen=True)
class InputSpec:
    """The network's input: ``[batch, size, size, channels]`` ``dtype`` scaled to ``value_range``."""

    shape: tuple[int | None, int, int, int]
    dtype: str = "float32"
    value_range: tuple[float, float] = (0.0, 1.0)
    channels: tuple[str, ...] = ("grayscale",)


@dataclass(frozen=True)
class Bundle:
    version: str | None
    model_format: str
    input_formats: tuple[str, ...]
    output_formats: tuple[str, ...]
    input: InputSpec
    plan: dict[str, Any]
    labels: tuple[str, ...]
    libraries: dict[str, str]
    intended_use: str = INTENDED_USE
    licence: str = LICENCE
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {"format": BUNDLE_FORMAT, "format_version": BUNDLE_VERSION, "model_file": "model.keras", **d}

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False).encode("utf-8")


def library_versions(names: tuple[str, ...] = _LIBRARIES) -> dict[str, str]:
    """Installed versions of ``names`` from the distributions' metadata (no import)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def make_bundle(plan: ModelPlan, *, version: str | None, libraries: dict[str, str] | None = None) -> Bundle:
    size = plan.network_size
    return Bundle(
        version=version,
        model_format=MODEL_FORMAT,
        input_formats=INPUT_FORMATS,
        output_formats=OUTPUT_FORMATS,
        input=InputSpec(shape=(None, size, size, 1)),
        plan=plan.to_dict(),
        labels=tuple(plan.labels),
        libraries=dict(library_versions() if libraries is None else libraries),
    )


def check_bundle(data: bytes, plan: ModelPlan) -> dict[str, Any]:
    """The parsed bundle if this mammoseg can honour it with ``plan``, else :class:`BundleError`."""
    doc = check_bundle_format(data)
    spec = doc.get("input")
    shape = spec.get("shape") if isinstance(spec, dict) else None
    want = [None, plan.network_size, plan.network_size, 1]
    if not isinstance(shape, list) or shape != want:
        raise BundleError(f"the bundle declares input shape {shape!r}; the plan feeds {want}")
    assert isinstance(spec, dict)
    if spec.get("dtype") != "float32" or list(spec.get("value_range") or []) != [0.0, 1.0]:
        raise BundleError(
            f"the bundle declares input {spec.get('dtype')!r} in {spec.get('value_range')!r}; "
            "this mammoseg feeds float32 in [0, 1]"
        )
    labels = doc.get("labels")
    if not isinstance(labels, list) or tuple(labels) != tuple(plan.labels):
        raise BundleError(f"the bundle's labels {labels!r} differ from the plan's {list(plan.labels)}")
    return doc


def check_bundle_format(data: bytes) -> dict[str, Any]:
    """The parsed bundle if its format, version and model format are readable here (checked
    before the model file is loaded), else :class:`BundleError`."""
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise BundleError(f"{BUNDLE_FILE} is not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise BundleError(f"{BUNDLE_FILE} must be a JSON object")
    if doc.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"bundle format is {doc.get('format')!r}, expected {BUNDLE_FORMAT!r}")
    fv = doc.get("format_version")
    if not isinstance(fv, int) or isinstance(fv, bool) or fv > BUNDLE_VERSION:
        raise BundleError(f"bundle format version {fv!r} is newer than this mammoseg reads ({BUNDLE_VERSION}); upgrade mammoseg")
    fmt = doc.get("model_format")
    if fmt != MODEL_FORMAT:
        raise BundleError(f"the bundle declares model format {fmt!r}; this mammoseg loads only {MODEL_FORMAT!r}")
    return doc
