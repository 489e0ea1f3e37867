"""Synthetic data shaped like CBIS-DDSM (layout, CSVs, DICOM headers and their quirks).

Written under ``<prefix>/`` in the store (original TCIA layout, as the CSV paths use):

* ``<Type>-<Split>_P_00001_LEFT_CC/<StudyUID>/<SeriesUID>/000000.dcm`` — full mammogram,
  16-bit, SeriesDescription ``"full mammogram images"``; a share is MONOCHROME1 (inverted
  storage), some carry a window (VOI) and/or a rescale slope/intercept. ``<Type>`` is ``Mass`` or
  ``Calc``, ``<Split>`` ``Training`` or ``Test``.
* ``…_LEFT_CC_<n>/<StudyUID>/<SeriesUID>/000000.dcm`` — cropped lesion image (``"cropped
  images"``, 16-bit) and ``000001.dcm`` — ROI mask (``"ROI mask images"``, 8-bit 0/255, full
  image size), for abnormality ``n`` = 1, 2, …
* ``csv/{mass,calc}_case_description_{train,test}_set.csv`` with the real files' columns.

Quirks reproduced on purpose: ``breast_density`` (mass) vs ``breast density`` (calc); the path
cell ending in ``"\\n"`` inside quotes (mass: *ROI mask file path*, calc: *cropped image file
path*); CRLF line ends; in the **calc** CSVs the *cropped image file path* column points at
``000001.dcm``, which holds the ROI **mask**, and *ROI mask file path* at ``000000.dcm``, the
**crop** — pair files by SeriesDescription / pixel content, never by column or name; values such
as ``BENIGN_WITHOUT_CALLBACK``, ``N/A`` and multi-valued ``IRREGULAR-ARCHITECTURAL_DISTORTION``
(the first lesions of each type carry these, so even tiny data sets have them). Header
*PatientID* is the folder name (as in the real data), *PatientName* ``SYNTH^PATIENT^<n>``, with
fake birth and study dates, so tests can prove these never leak.

The chest wall is on the left or right image edge at random, independent of laterality (as in
the real scans). Everything is a function of ``params`` only: the same parameters give
byte-identical objects.
"""

from __future__ import annotations

import csv
import functools
import io
import math
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from mammoseg.dicom import CROPPED_IMAGE, FULL_MAMMOGRAM, ROI_MASK, make_uid, write_dicom
from mammoseg.storage import ObjectStore, join_key, validate_key
from mammoseg.synth import anatomy as A
from mammoseg.synth.records import SynthImage, SynthLesion, SynthSummary

MASS_COLUMNS: Final = (
    "patient_id",
    "breast_density",
    "left or right breast",
    "image view",
    "abnormality id",
    "abnormality type",
    "mass shape",
    "mass margins",
    "assessment",
    "pathology",
    "subtlety",
    "image file path",
    "cropped image file path",
    "ROI mask file path",
)
CALC_COLUMNS: Final = (
    "patient_id",
    "breast density",
    "left or right breast",
    "image view",
    "abnormality id",
    "abnormality type",
    "calc type",
    "calc distribution",
    "assessment",
    "pathology",
    "subtlety",
    "image file path",
    "cropped image file path",
    "ROI mask file path",
)

#: Defect kinds made by ``n_bad``, in the order they are assigned (cycling).
DEFECT_KINDS: Final = (
    "truncated_dicom",  # the full-mammogram DICOM is cut to its first half
    "no_pixel_data",  # the full-mammogram DICOM has no Pixel Data element
    "missing_mask",  # the CSV points at a ROI mask object that was not written
    "mask_size_mismatch",  # the ROI mask is smaller than its image
    "bad_csv_row",  # the CSV row's abnormality id is not a number ("one")
    "path_escape",  # the CSV image path escapes the dataset root ("../../../etc/passwd")
)
ESCAPING_PATH: Final = "../../../etc/passwd"

_MASS_SHAPES: Final = (
    ("IRREGULAR", 0.26),
    ("OVAL", 0.24),
    ("LOBULATED", 0.22),
    ("ROUND", 0.09),
    ("ARCHITECTURAL_DISTORTION", 0.06),
    ("IRREGULAR-ARCHITECTURAL_DISTORTION", 0.035),
    ("LYMPH_NODE", 0.02),
    ("ASYMMETRIC_BREAST_TISSUE", 0.015),
    ("FOCAL_ASYMMETRIC_DENSITY", 0.015),
    ("LOBULATED-IRREGULAR", 0.01),
    ("ROUND-OVAL", 0.005),
    ("N/A", 0.005),
)
_MASS_MARGINS: Final = (
    ("CIRCUMSCRIBED", 0.23),
    ("SPICULATED", 0.21),
    ("ILL_DEFINED", 0.21),
    ("OBSCURED", 0.15),
    ("MICROLOBULATED", 0.08),
    ("N/A", 0.04),
    ("CIRCUMSCRIBED-ILL_DEFINED", 0.02),
    ("ILL_DEFINED-SPICULATED", 0.02),
    ("OBSCURED-ILL_DEFINED", 0.015),
    ("CIRCUMSCRIBED-OBSCURED", 0.015),
)
_CALC_TYPES: Final = (
    ("PLEOMORPHIC", 0.43),
    ("AMORPHOUS", 0.09),
    ("PUNCTATE", 0.07),
    ("LUCENT_CENTER", 0.06),
    ("VASCULAR", 0.05),
    ("FINE_LINEAR_BRANCHING", 0.05),
    ("COARSE", 0.025),
    ("ROUND_AND_REGULAR-LUCENT_CENTER", 0.02),
    ("PLEOMORPHIC-FINE_LINEAR_BRANCHING", 0.02),
    ("ROUND_AND_REGULAR-EGGSHELL", 0.015),
    ("PUNCTATE-PLEOMORPHIC", 0.015),
    ("N/A", 0.015),
    ("DYSTROPHIC", 0.013),
    ("ROUND_AND_REGULAR", 0.012),
    ("EGGSHELL", 0.01),
    ("LARGE_RODLIKE", 0.005),
)
_CALC_DISTRIBUTIONS: Final = (
    ("CLUSTERED", 0.48),
    ("N/A", 0.24),
    ("SEGMENTAL", 0.11),
    ("REGIONAL", 0.06),
    ("LINEAR", 0.06),
    ("DIFFUSELY_SCATTERED", 0.025),
    ("CLUSTERED-LINEAR", 0.02),
    ("LINEAR-SEGMENTAL", 0.005),
)
_RESCALES: Final = ((1.0, -1024.0), (0.5, 0.0), (2.0, -32768.0))


@dataclass(frozen=True)
class CbisSynthParams:
    """Parameters of :func:`generate_cbis`.

    ``height`` x ``width`` is the full-mammogram size in px (real scans are ~5000x3000; the
    default keeps tests fast). Fractions are turned into exact counts (rounded) over breasts
    (``calc_fraction``, ``multi_lesion_fraction``, ``bilateral_fraction`` over patients),
    images (``monochrome1_fraction``, ``window_fraction``, ``rescale_fraction``) or patients
    (``test_fraction``; at least one test and one training patient when there are two or more).
    ``n_bad`` adds that many defective single-image patients, kinds cycling through
    :data:`DEFECT_KINDS`. ``lesion_contrast`` and ``lesion_size`` scale the shared lesion model
    (:class:`~mammoseg.synth.anatomy.LesionLook`; 1.0: realistic). ``bits`` is the digitiser's
    depth: the 16-bit pixels take ``2**bits`` evenly spread levels (DDSM's scanners had 12 or
    16). On small images it matters downstream: with nearly every pixel on its own grey level,
    CLAHE's tiles hold one pixel per histogram bin and it turns into per-tile histogram
    equalisation, which blows the film grain up into speckle; 8-bit images (mini-MIAS) do not.
    """

    n_patients: int = 6
    height: int = 256
    width: int = 160
    seed: int = 0
    views: tuple[str, ...] = ("CC", "MLO")
    calc_fraction: float = 0.4
    multi_lesion_fraction: float = 0.2
    monochrome1_fraction: float = 0.25
    window_fraction: float = 0.3
    rescale_fraction: float = 0.3
    bilateral_fraction: float = 0.25
    test_fraction: float = 0.3
    n_bad: int = 0
    prefix: str = "CBIS-DDSM"
    lesion_contrast: float = 1.0
    lesion_size: float = 1.0
    bits: int = 16

    def __post_init__(self) -> None:
        if self.n_patients < 0 or self.n_bad < 0 or self.n_patients + self.n_bad < 1:
            raise ValueError("need n_patients >= 0, n_bad >= 0 and at least one case")
        if self.height < 64 or self.width < 48:
            raise ValueError(f"image size {self.height}x{self.width} too small (min 64x48)")
        if not 8 <= self.bits <= 16:
            raise ValueError(f"bits must be 8..16, got {self.bits}")
        if not self.views or any(v not in ("CC", "MLO") for v in self.views):
            raise ValueError(f"views must be a non-empty subset of ('CC', 'MLO'): {self.views}")
        if len(set(self.views)) != len(self.views):
            raise ValueError(f"duplicate views: {self.views}")
        for name in (
            "calc_fraction",
            "multi_lesion_fraction",
            "monochrome1_fraction",
            "window_fraction",
            "rescale_fraction",
            "bilateral_fraction",
            "test_fraction",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        A.LesionLook(self.lesion_contrast, self.lesion_size)  # validates the scales
        validate_key(self.prefix)


@dataclass
class _Lesion:
    kind: str  # mass | calcification
    a: str  # mass shape | calc type
    b: str  # mass margins | calc distribution
    pathology: str
    assessment: int
    subtlety: int
    radius_mm: float

    @property
    def spec(self) -> A.LesionSpec:
        return A.LesionSpec(self.kind, self.a, self.b, self.radius_mm, self.subtlety)


@dataclass
class _Breast:
    number: int  # patient number
    split: str
    side: str  # LEFT | RIGHT
    kind: str  # mass | calcification
    density: int
    lesions: list[_Lesion]
    birth_date: str
    study_date: str
    defect: str | None = None

    @property
    def patient(self) -> str:
        return f"P_{self.number:05d}"


@dataclass
class _Image:
    breast: _Breast
    view: str
    photometric: str = "MONOCHROME2"
    window: bool = False
    rescale: tuple[float, float] | None = None

    @property
    def image_id(self) -> str:
        kind = "Mass" if self.breast.kind == "mass" else "Calc"
        split = "Training" if self.breast.split == "train" else "Test"
        return f"{kind}-{split}_{self.breast.patient}_{self.breast.side}_{self.view}"


@dataclass
class _Output:
    keys: list[str] = field(default_factory=list)
    images: list[SynthImage] = field(default_factory=list)


def _pick(rng: np.random.Generator, table: tuple[tuple[str, float], ...]) -> str:
    p = np.array([w for _, w in table], dtype=float)
    return table[int(rng.choice(len(table), p=p / p.sum()))][0]


def _exact(rng: np.random.Generator, n: int, fraction: float) -> set[int]:
    """A random subset of ``range(n)`` of size ``round(n * fraction)``."""
    k = math.floor(n * fraction + 0.5)
    return {int(i) for i in rng.permutation(n)[:k]}


def _fake_date(rng: np.random.Generator, y0: int, y1: int) -> str:
    return f"{int(rng.integers(y0, y1 + 1))}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"


def _mass_lesion(rng: np.random.Generator, index: int) -> _Lesion:
    shape, margins = _pick(rng, _MASS_SHAPES), _pick(rng, _MASS_MARGINS)
    if index == 0:
        shape = "IRREGULAR-ARCHITECTURAL_DISTORTION"  # multi-valued
    elif index == 1:
        margins = "N/A"
    if "SPICULATED" in margins or "ARCHITECTURAL_DISTORTION" in shape:
        pathology = _pick(
            rng, (("MALIGNANT", 0.8), ("BENIGN", 0.15), ("BENIGN_WITHOUT_CALLBACK", 0.05))
        )
    elif "CIRCUMSCRIBED" in margins:
        pathology = _pick(
            rng, (("MALIGNANT", 0.2), ("BENIGN", 0.6), ("BENIGN_WITHOUT_CALLBACK", 0.2))
        )
    else:
        pathology = _pick(
            rng, (("MALIGNANT", 0.45), ("BENIGN", 0.4), ("BENIGN_WITHOUT_CALLBACK", 0.15))
        )
    return _Lesion(
        kind="mass",
        a=shape,
        b=margins,
        pathology=pathology,
        assessment=_assessment(rng, pathology),
        subtlety=int(rng.integers(1, 6)),
        radius_mm=A.draw_mass_radius_mm(rng),
    )


def _calc_lesion(rng: np.random.Generator, index: int) -> _Lesion:
    ctype, dist = _pick(rng, _CALC_TYPES), _pick(rng, _CALC_DISTRIBUTIONS)
    pathology = _pick(
        rng, (("MALIGNANT", 0.35), ("BENIGN", 0.35), ("BENIGN_WITHOUT_CALLBACK", 0.3))
    )
    if index == 0:
        dist = "N/A"
    elif index == 1:
        pathology = "BENIGN_WITHOUT_CALLBACK"
    return _Lesion(
        kind="calcification",
        a=ctype,
        b=dist,
        pathology=pathology,
        assessment=_assessment(rng, pathology),
        subtlety=int(rng.integers(1, 6)),
        radius_mm=0.0,
    )


def _assessment(rng: np.random.Generator, pathology: str) -> int:
    if pathology == "MALIGNANT":
        return int(rng.choice([0, 3, 4, 5], p=[0.05, 0.1, 0.45, 0.4]))
    if pathology == "BENIGN":
        return int(rng.choice([0, 2, 3, 4], p=[0.1, 0.2, 0.35, 0.35]))
    return int(rng.choice([2, 3], p=[0.7, 0.3]))


def _plan(p: CbisSynthParams) -> list[_Image]:
    master = np.random.default_rng([p.seed, 0])
    n = p.n_patients
    # patient numbers with gaps, as in the real data; defect cases come after the good ones
    # and do not change them
    gaps = np.random.default_rng([p.seed, 10]).integers(1, 4, n)
    numbers = [int(x) for x in np.cumsum(gaps)]
    last = numbers[-1] if numbers else 0
    numbers += [last + 1 + 2 * k for k in range(p.n_bad)]
    n_test = math.floor(n * p.test_fraction + 0.5)
    if n >= 2 and p.test_fraction > 0:
        n_test = min(max(n_test, 1), n - 1)
    test = {int(i) for i in master.permutation(n)[:n_test]}
    bilateral = _exact(master, n, p.bilateral_fraction)

    breasts: list[_Breast] = []
    for i in range(n):
        rng = np.random.default_rng([p.seed, 1, i])
        density = int(rng.choice([1, 2, 3, 4], p=[0.2, 0.4, 0.28, 0.12]))
        birth, study = _fake_date(rng, 1925, 1960), _fake_date(rng, 1993, 1999)
        sides = ["LEFT", "RIGHT"] if i in bilateral else [("LEFT", "RIGHT")[int(rng.integers(2))]]
        for side in sides:
            breasts.append(
                _Breast(
                    numbers[i],
                    "test" if i in test else "train",
                    side,
                    "",
                    density,
                    [],
                    birth,
                    study,
                )
            )
    calc = _exact(master, len(breasts), p.calc_fraction)
    multi = _exact(master, len(breasts), p.multi_lesion_fraction)
    counters = {"mass": 0, "calcification": 0}
    for j, b in enumerate(breasts):
        rng = np.random.default_rng([p.seed, 2, j])
        b.kind = "calcification" if j in calc else "mass"
        count = int(rng.integers(2, 4)) if j in multi else 1
        for _ in range(count):
            make = _calc_lesion if b.kind == "calcification" else _mass_lesion
            b.lesions.append(make(rng, counters[b.kind]))
            counters[b.kind] += 1

    for k in range(p.n_bad):
        rng = np.random.default_rng([p.seed, 3, k])
        breasts.append(
            _Breast(
                number=numbers[n + k],
                split="train",
                side=("LEFT", "RIGHT")[int(rng.integers(2))],
                kind="mass",
                density=int(rng.integers(1, 5)),
                lesions=[_mass_lesion(rng, 99)],
                birth_date=_fake_date(rng, 1925, 1960),
                study_date=_fake_date(rng, 1993, 1999),
                defect=DEFECT_KINDS[k % len(DEFECT_KINDS)],
            )
        )

    images: list[_Image] = []
    for b in breasts:
        views = p.views if b.defect is None else p.views[:1]
        images.extend(_Image(b, v) for v in views)
    good = [im for im in images if im.breast.defect is None]
    mono1 = _exact(master, len(good), p.monochrome1_fraction)
    window = _exact(master, len(good), p.window_fraction)
    rescale = _exact(master, len(good), p.rescale_fraction)
    for idx, im in enumerate(good):
        im.photometric = "MONOCHROME1" if idx in mono1 else "MONOCHROME2"
        im.window = idx in window
        if idx in rescale:
            im.rescale = _RESCALES[idx % len(_RESCALES)]
    return images


def _stored(
    display: np.ndarray, im: _Image, rng: np.random.Generator
) -> tuple[np.ndarray, tuple[float, float] | None]:
    """Stored pixel values and window for an image's display pixels."""
    stored = (np.uint16(65535) - display) if im.photometric == "MONOCHROME1" else display
    window = None
    if im.window:
        slope, intercept = im.rescale or (1.0, 0.0)
        lo, hi = sorted(
            (float(stored.min()) * slope + intercept, float(stored.max()) * slope + intercept)
        )
        width = max((hi - lo) * rng.uniform(1.05, 1.3), 2.0)
        center = (lo + hi) / 2 + rng.uniform(-0.02, 0.02) * (hi - lo)
        window = (round(center, 1), round(width, 1))
    return stored, window


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    return int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1


def _render(
    im: _Image, p: CbisSynthParams, rng: np.random.Generator
) -> tuple[np.ndarray, A.Anatomy, str, list[tuple[_Lesion, A.LesionPatch, int, int, np.ndarray]]]:
    chest_wall = ("left", "right")[int(rng.integers(2))]
    layout = A.random_layout(rng, p.height, p.width, im.view, chest_wall)
    anatomy = A.draw_anatomy(rng, layout, im.breast.density)
    canvas = anatomy.image.copy()
    placed: list[tuple[_Lesion, A.LesionPatch, int, int, np.ndarray]] = []
    taken: list[tuple[int, int, float]] = []
    look = A.LesionLook(p.lesion_contrast, p.lesion_size)
    for les in im.breast.lesions:
        patch, row, col, mask = A.place_and_paste(
            rng, anatomy, canvas, taken, A.lesion_maker(rng, les.spec, layout.px_mm, look),
            f"a {les.kind} in a {p.height}x{p.width} image",
        )
        placed.append((les, patch, row, col, mask))
    return canvas, anatomy, chest_wall, placed


def _csv_text(columns: tuple[str, ...], rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(columns)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def generate_cbis(store: ObjectStore, params: CbisSynthParams | None = None) -> SynthSummary:
    """Write a synthetic CBIS-DDSM-shaped data set under ``params.prefix`` (see module doc)."""
    p = params or CbisSynthParams()
    out = _Output()
    csv_rows: dict[tuple[str, str], list[tuple[tuple[int, str, str, int], list[str]]]] = {
        (kind, split): [] for kind in ("mass", "calc") for split in ("train", "test")
    }
    bad: dict[str, str] = {}

    def put(key: str, data: bytes) -> str:
        full = join_key(p.prefix, key)
        store.write_bytes(full, data, content_type="application/dicom")
        out.keys.append(full)
        return full

    for im in _plan(p):
        b = im.breast
        side_i, view_i = ("LEFT", "RIGHT").index(b.side), ("CC", "MLO").index(im.view)
        rng = np.random.default_rng([p.seed, 4, b.number, side_i, view_i])
        canvas, anatomy, chest_wall, placed = _render(im, p, rng)
        display = A.to_uint16(canvas, levels=2**p.bits)
        stored, window = _stored(display, im, rng)
        image_id = im.image_id
        name = f"SYNTH^PATIENT^{b.number:05d}"
        study = make_uid("mammoseg-synth-cbis", p.seed, image_id, "study")
        series = make_uid("mammoseg-synth-cbis", p.seed, image_id, "series")
        image_path = f"{image_id}/{study}/{series}/000000.dcm"
        header = functools.partial(
            write_dicom,
            patient_name=name,
            birth_date=b.birth_date,
            study_date=b.study_date,
            laterality=b.side[0],
            view=im.view,
        )
        image_key: str | None = None
        if b.defect == "path_escape":
            image_path = ESCAPING_PATH
        else:
            data = header(
                stored,
                photometric=im.photometric,
                series_description=FULL_MAMMOGRAM,
                patient_id=image_id,
                study_uid=study,
                series_uid=series,
                window=window,
                rescale=im.rescale,
                bits_stored=16,
                with_pixel_data=b.defect != "no_pixel_data",
            )
            if b.defect == "truncated_dicom":
                data = data[: len(data) // 2]
            image_key = put(image_path, data)

        lesions: list[SynthLesion] = []
        for n_abn, (les, patch, row, col, mask) in enumerate(placed, start=1):
            roi_id = f"{image_id}_{n_abn}"
            r_study = make_uid("mammoseg-synth-cbis", p.seed, roi_id, "study")
            r_series = make_uid("mammoseg-synth-cbis", p.seed, roi_id, "series")
            folder = f"{roi_id}/{r_study}/{r_series}"
            y0, y1, x0, x1 = _bbox(mask)
            pad = max(4, round(0.2 * max(y1 - y0, x1 - x0)))
            H, W = mask.shape
            crop = display[max(0, y0 - pad) : min(H, y1 + pad), max(0, x0 - pad) : min(W, x1 + pad)]
            roi_header = functools.partial(
                header, patient_id=roi_id, study_uid=r_study, series_uid=r_series
            )
            crop_key = put(
                f"{folder}/000000.dcm",
                roi_header(crop, series_description=CROPPED_IMAGE, bits_stored=16),
            )
            mask_u8 = mask.astype(np.uint8) * np.uint8(255)
            if b.defect == "mask_size_mismatch":
                mask_u8 = mask_u8[: H - max(1, H // 4), : W - max(1, W // 5)]
            mask_key: str | None = None
            if b.defect != "missing_mask":
                mask_key = put(
                    f"{folder}/000001.dcm",
                    roi_header(
                        mask_u8, series_description=ROI_MASK, bits_stored=8, instance_number=2
                    ),
                )
            lesions.append(
                SynthLesion(
                    abnormality_id=n_abn,
                    abnormality_type=les.kind,
                    detail=f"{les.a}/{les.b}",
                    pathology=les.pathology,
                    center=(row, col),
                    reach=round(patch.reach, 2),
                    bbox=(y0, y1, x0, x1),
                    mask_area=int(mask.sum()),
                    mask_key=mask_key,
                    crop_key=crop_key,
                )
            )
            abn_id = "one" if b.defect == "bad_csv_row" else str(n_abn)
            crop_path, mask_path = f"{folder}/000000.dcm", f"{folder}/000001.dcm"
            if les.kind == "mass":
                cells = [
                    les.a,
                    les.b,
                    str(les.assessment),
                    les.pathology,
                    str(les.subtlety),
                    image_path,
                    crop_path,
                    mask_path + "\n",
                ]
            else:  # the calc CSVs' swapped columns: "cropped" -> the mask, "ROI mask" -> the crop
                cells = [
                    les.a,
                    les.b,
                    str(les.assessment),
                    les.pathology,
                    str(les.subtlety),
                    image_path,
                    mask_path + "\n",
                    crop_path,
                ]
            row_cells = [b.patient, str(b.density), b.side, im.view, abn_id, les.kind, *cells]
            table = ("mass" if les.kind == "mass" else "calc", b.split)
            csv_rows[table].append(((b.number, b.side, im.view, n_abn), row_cells))

        if b.defect is not None:
            bad[b.patient] = b.defect
        out.images.append(
            SynthImage(
                key=image_key,
                source_patient_id=b.patient,
                source_image_id=image_id,
                split=b.split,
                laterality=b.side[0],
                view=im.view,
                photometric=im.photometric,
                chest_wall=chest_wall,
                density=b.density,
                lesions=tuple(lesions),
                artefacts=anatomy.artefacts,
                windowed=window is not None,
                rescaled=im.rescale is not None,
                defect=b.defect,
            )
        )

    csv_keys: list[str] = []
    for (kind, split), rows in csv_rows.items():
        rows.sort(key=lambda r: r[0])
        columns = MASS_COLUMNS if kind == "mass" else CALC_COLUMNS
        key = join_key(p.prefix, "csv", f"{kind}_case_description_{split}_set.csv")
        store.write_bytes(key, _csv_text(columns, [r[1] for r in rows]), content_type="text/csv")
        out.keys.append(key)
        csv_keys.append(key)

    return SynthSummary(
        n_images=len(out.images),
        n_lesions=sum(len(rows) for rows in csv_rows.values()),
        keys=tuple(sorted(out.keys)),
        csv_keys=tuple(csv_keys),
        bad_cases=bad,
        images=tuple(out.images),
    )
