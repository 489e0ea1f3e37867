"""Synthetic data shaped like mini-MIAS: ``mdbNNN.pgm`` images and an ``Info.txt`` table.

Written under ``<prefix>/``:

* ``mdbNNN.pgm`` — binary PGM (P5), 8-bit, ``size`` x ``size`` (real: 1024), one MLO view each,
  drawn with the same anatomy and the same lesion model as the CBIS-DDSM synthetic images: each
  MIAS class is drawn as the CBIS-DDSM lesion it corresponds to (:data:`CLASS_LESIONS`), with
  the same size and subtlety distributions, so the two sets differ by format, not by lesion.
* ``Info.txt`` — a text preamble, then one line per abnormality
  ``mdbNNN BG CLASS SEVERITY X Y RADIUS``, or ``mdbNNN BG NORM`` (trailing space, as the real
  file) for normal images. ``BG`` is the background tissue (``F`` fatty, ``G`` fatty-glandular,
  ``D`` dense-glandular), ``CLASS`` one of ``CIRC SPIC MISC ARCH ASYM CALC``, ``SEVERITY``
  ``B``/``M``. An image with several abnormalities has several lines. Some abnormal lines carry no
  coordinates: ``mdbNNN BG CLASS SEV`` (a lesion is drawn but not located) or, for widely
  spread calcifications, ``mdbNNN BG CALC SEV *NOTE 3*``.

Coordinates, as in MIAS: **origin at the bottom-left corner**, ``X`` = column, ``Y`` = rows
counted upwards from the bottom, ``RADIUS`` encloses the lesion mask; all in **this image's
pixels** (real MIAS uses 1024-px units; here the unit is the generated ``size``). For pixel
indexing: ``row = size - 1 - Y``, ``col = X``.

Pairing and side, as the real notes state: images ``2k-1`` and ``2k`` are the two breasts of one
woman, odd numbers the **right** breast, even numbers the **left**; the chest wall is on the
image edge of that side (right breast: right edge), as in the real images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np

from mammoseg.storage import ObjectStore, join_key, validate_key
from mammoseg.synth import anatomy as A
from mammoseg.synth.records import SynthImage, SynthLesion, SynthSummary

MIAS_CLASSES: Final = ("CIRC", "SPIC", "MISC", "ARCH", "ASYM", "CALC")
_DENSITY: Final = {"F": (1, 2), "G": (2, 3), "D": (3, 4)}
#: MIAS class -> CBIS-DDSM kind and descriptors (shape/margins or calc type/distribution); a
#: CIRC mass is ROUND or OVAL at random, a CALC line without coordinates is widely scattered.
CLASS_LESIONS: Final = {
    "CIRC": ("mass", "ROUND|OVAL", "CIRCUMSCRIBED"),
    "SPIC": ("mass", "IRREGULAR", "SPICULATED"),
    "MISC": ("mass", "IRREGULAR", "ILL_DEFINED"),
    "ARCH": ("mass", "ARCHITECTURAL_DISTORTION", "N/A"),
    "ASYM": ("mass", "FOCAL_ASYMMETRIC_DENSITY", "N/A"),
    "CALC": ("calcification", "PLEOMORPHIC", "CLUSTERED"),
}
_ABNORMALITY_TYPE: Final = {
    "CIRC": "mass",
    "SPIC": "mass",
    "MISC": "mass",
    "ARCH": "distortion",
    "ASYM": "asymmetry",
    "CALC": "calcification",
}


@dataclass(frozen=True)
class MiasSynthParams:
    """Parameters of :func:`generate_mias`.

    ``n_women`` pairs of images (``2 * n_women`` images). Fractions become exact counts
    (rounded) over images (``abnormal_fraction``) and abnormal images
    (``multi_lesion_fraction``: two lesions; ``no_coords_fraction``: lines without coordinates).
    ``lesion_contrast`` and ``lesion_size`` scale the shared lesion model
    (:class:`~mammoseg.synth.anatomy.LesionLook`; 1.0: realistic), as in
    :class:`~mammoseg.synth.cbis.CbisSynthParams`.
    """

    n_women: int = 4
    size: int = 256
    seed: int = 0
    abnormal_fraction: float = 0.6
    multi_lesion_fraction: float = 0.2
    no_coords_fraction: float = 0.2
    prefix: str = "mini-mias"
    lesion_contrast: float = 1.0
    lesion_size: float = 1.0

    def __post_init__(self) -> None:
        if not 1 <= self.n_women <= 499:
            raise ValueError(
                f"n_women must be 1..499 (mdb numbers have 3 digits), got {self.n_women}"
            )
        if self.size < 64:
            raise ValueError(f"size must be >= 64, got {self.size}")
        for name in ("abnormal_fraction", "multi_lesion_fraction", "no_coords_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        A.LesionLook(self.lesion_contrast, self.lesion_size)  # validates the scales
        validate_key(self.prefix)


def _exact(rng: np.random.Generator, items: list[int], fraction: float) -> set[int]:
    k = math.floor(len(items) * fraction + 0.5)
    return {items[int(i)] for i in rng.permutation(len(items))[:k]}


def _preamble(size: int) -> str:
    rule = "=" * 65
    return "\n".join(
        [
            "          SYNTHETIC MINI-MIAS-STYLE DATABASE (mammoseg)",
            "",
            "Generated images in the layout of the MIAS MiniMammographic Database",
            "(Suckling et al. 1994). No real patient data.",
            "",
            rule,
            "",
            "INFORMATION:",
            "",
            "1st column: database reference number (mdbNNN).",
            "2nd column: character of background tissue:",
            "                F - Fatty",
            "                G - Fatty-glandular",
            "                D - Dense-glandular",
            "3rd column: class of abnormality present:",
            "                CALC - Calcification",
            "                CIRC - Well-defined/circumscribed masses",
            "                SPIC - Spiculated masses",
            "                MISC - Other, ill-defined masses",
            "                ARCH - Architectural distortion",
            "                ASYM - Asymmetry",
            "                NORM - Normal",
            "4th column: severity of abnormality: B - Benign, M - Malignant",
            "5th,6th columns: x,y image-coordinates of centre of abnormality.",
            "7th column: approximate radius (in pixels) of a circle enclosing",
            "            the abnormality.",
            "",
            "NOTES",
            "=====",
            "1) The list is arranged in pairs of films, where each pair",
            "   represents the left (even filename numbers) and right mammograms",
            "   (odd filename numbers) of a single patient.",
            "",
            f"2) The size of ALL the images is {size} pixels x {size} pixels;",
            "   coordinates and radii are in these pixels.",
            "",
            "3) When calcifications are present, centre locations and radii",
            "   apply to clusters rather than individual calcifications.",
            "   Coordinate system origin is the bottom-left corner.",
            "",
            "4) In some cases calcifications are widely distributed throughout",
            "   the image; centre locations and radii have then been omitted.",
            "",
            rule,
            "",
        ]
    )


def _pgm(img: np.ndarray) -> bytes:
    h, w = img.shape
    return f"P5\n{w} {h}\n255\n".encode("ascii") + np.ascontiguousarray(img, np.uint8).tobytes()


def lesion_spec(rng: np.random.Generator, cls: str, located: bool) -> A.LesionSpec:
    """The shared-model lesion of a MIAS class (:data:`CLASS_LESIONS`): radius and subtlety
    drawn as for the CBIS-DDSM synthetic lesions."""
    kind, a, b = CLASS_LESIONS[cls]
    if "|" in a:
        options = a.split("|")
        a = options[int(rng.integers(len(options)))]
    if kind == "calcification" and not located:
        b = "DIFFUSELY_SCATTERED"
    radius = A.draw_mass_radius_mm(rng) if kind == "mass" else 0.0
    return A.LesionSpec(kind, a, b, radius, int(rng.integers(1, 6)))


def generate_mias(store: ObjectStore, params: MiasSynthParams | None = None) -> SynthSummary:
    """Write a synthetic mini-MIAS-shaped data set under ``params.prefix`` (see module doc)."""
    p = params or MiasSynthParams()
    master = np.random.default_rng([p.seed, 100])
    n_images = 2 * p.n_women
    numbers = list(range(1, n_images + 1))
    abnormal = _exact(master, numbers, p.abnormal_fraction)
    abnormal_list = sorted(abnormal)
    multi = _exact(master, abnormal_list, p.multi_lesion_fraction)
    no_coords = _exact(master, abnormal_list, p.no_coords_fraction)
    classes = [MIAS_CLASSES[int(i)] for i in master.permutation(len(MIAS_CLASSES))]
    backgrounds = [("F", "G", "D")[int(master.integers(3))] for _ in range(p.n_women)]

    look = A.LesionLook(p.lesion_contrast, p.lesion_size)
    lines: list[str] = []
    keys: list[str] = []
    images: list[SynthImage] = []
    n_lesions = 0
    cls_counter = 0
    for number in numbers:
        woman = (number - 1) // 2
        bg = backgrounds[woman]
        rng = np.random.default_rng([p.seed, 101, number])
        density = int(_DENSITY[bg][int(np.random.default_rng([p.seed, 102, woman]).integers(2))])
        right = number % 2 == 1
        layout = A.random_layout(rng, p.size, p.size, "MLO", "right" if right else "left")
        anatomy = A.draw_anatomy(rng, layout, density)
        canvas = anatomy.image.copy()
        name = f"mdb{number:03d}"

        lesion_classes: list[str] = []
        if number in abnormal:
            first = classes[cls_counter % len(classes)]
            cls_counter += 1
            lesion_classes = [first]
            if number in multi:
                lesion_classes.append(first if first in ("CIRC", "CALC") else "CIRC")
        located_all = number not in no_coords

        lesions: list[SynthLesion] = []
        taken: list[tuple[int, int, float]] = []
        for i, cls in enumerate(lesion_classes, start=1):
            severity = {"SPIC": "M", "CIRC": "B"}.get(cls, ("B", "M")[int(rng.integers(2))])
            if cls in ("SPIC", "CIRC") and rng.random() < 0.15:
                severity = "B" if severity == "M" else "M"
            spec = lesion_spec(rng, cls, located_all)
            patch, row, col, mask = A.place_and_paste(
                rng, anatomy, canvas, taken, A.lesion_maker(rng, spec, layout.px_mm, look),
                f"a {cls} lesion in {name}",
            )
            ys, xs = np.nonzero(mask)
            radius = math.ceil(float(np.hypot(ys - row, xs - col).max()) + 0.5)
            x, y = col, p.size - 1 - row
            if located_all:
                lines.append(f"{name} {bg} {cls} {severity} {x} {y} {radius}")
            elif cls == "CALC":
                lines.append(f"{name} {bg} CALC {severity} *NOTE 3* ")
            else:
                lines.append(f"{name} {bg} {cls} {severity}")
            n_lesions += 1
            lesions.append(
                SynthLesion(
                    abnormality_id=i,
                    abnormality_type=_ABNORMALITY_TYPE[cls],
                    detail=cls,
                    pathology="MALIGNANT" if severity == "M" else "BENIGN",
                    center=(row, col),
                    reach=round(patch.reach, 2),
                    bbox=(int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1),
                    mask_area=int(mask.sum()),
                )
            )
        if not lesion_classes:
            lines.append(f"{name} {bg} NORM ")

        key = join_key(p.prefix, f"{name}.pgm")
        store.write_bytes(key, _pgm(A.to_uint8(canvas)), content_type="image/x-portable-graymap")
        keys.append(key)
        images.append(
            SynthImage(
                key=key,
                source_patient_id=f"mdb{2 * woman + 1:03d}-{2 * woman + 2:03d}",
                source_image_id=name,
                split="",
                laterality="R" if right else "L",
                view="MLO",
                photometric="MONOCHROME2",
                chest_wall="right" if right else "left",
                density=density,
                lesions=tuple(lesions),
                artefacts=anatomy.artefacts,
            )
        )

    info_key = join_key(p.prefix, "Info.txt")
    text = _preamble(p.size) + "\n".join(lines) + "\n\n" + "=" * 65 + "\n"
    store.write_bytes(info_key, text.encode("ascii"), content_type="text/plain")
    keys.append(info_key)
    return SynthSummary(
        n_images=n_images,
        n_lesions=n_lesions,
        keys=tuple(sorted(keys)),
        csv_keys=(info_key,),
        bad_cases={},
        images=tuple(images),
    )
