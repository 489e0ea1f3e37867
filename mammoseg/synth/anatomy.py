"""Drawing of synthetic scanned-film mammograms: breast, tissue, pectoral muscle, film artefacts
and lesions (masses, architectural distortions, asymmetries, calcification clusters).

Conventions:

* Images are ``float32`` in ``[0, 1]``, display orientation (higher = brighter): background
  (film base) near 0.01, fatty tissue ~0.3, fibroglandular tissue and pectoral muscle ~0.6,
  lesions added on top, film labels ~0.9.
* Coordinates are pixels, top-left origin, ``(row, col)``; the breast is a wobbly half-ellipse
  whose flat side lies on the chest-wall edge (``"left"`` or ``"right"`` image edge).
* Physical scale: the image height is taken as :data:`FILM_HEIGHT_MM`, so lesion sizes are in
  millimetres and scale with the image (a 256-px tall image has ~0.94 mm pixels, a 5000-px one
  ~0.05 mm, like CBIS-DDSM scans).
* Smooth fields (breast shape, tissue) are computed at a working resolution of at most
  :data:`WORK_MAX` px and resized, so full-size (5000x3000) images stay fast.

Everything takes a ``numpy.random.Generator`` and is deterministic given its state. Functions
return new arrays; only :func:`paste_add` writes into an array, the caller's own canvas.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

import cv2
import numpy as np

FILM_HEIGHT_MM: Final = 240.0
WORK_MAX: Final = 384
BACKGROUND: Final = 0.012

ChestWall = Literal["left", "right"]

_MASS_SHAPES: Final = frozenset({"ROUND", "OVAL", "LOBULATED", "IRREGULAR", "LYMPH_NODE"})
_ASYMMETRIES: Final = frozenset({"ASYMMETRIC_BREAST_TISSUE", "FOCAL_ASYMMETRIC_DENSITY"})
_MARGIN_BLUR: Final = {  # Gaussian sigma of the mass edge, as a fraction of the radius
    "CIRCUMSCRIBED": 0.03,
    "MICROLOBULATED": 0.05,
    "SPICULATED": 0.06,
    "OBSCURED": 0.12,
    "ILL_DEFINED": 0.2,
}


# ----------------------------------------------------------------------------------------------
# layout and tissue
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BreastLayout:
    """Geometry of one synthetic breast image (pixels, top-left origin)."""

    height: int
    width: int
    view: str  # CC | MLO
    chest_wall: ChestWall
    center_row: float  # row of the ellipse centre on the chest-wall edge
    depth: float  # horizontal semi-axis: chest wall to nipple
    half_height_top: float
    half_height_bottom: float
    pectoral: tuple[float, float] | None  # MLO: (width at the top edge, height on the chest wall)

    @property
    def px_mm(self) -> float:
        """Millimetres per pixel."""
        return FILM_HEIGHT_MM / self.height


def random_layout(
    rng: np.random.Generator, height: int, width: int, view: str, chest_wall: ChestWall
) -> BreastLayout:
    """A plausible breast geometry for a ``height`` x ``width`` image of ``view``."""
    if height < 16 or width < 16:
        raise ValueError(f"image too small for a breast: {height}x{width}")
    if chest_wall not in ("left", "right"):
        raise ValueError(f"chest_wall must be 'left' or 'right', got {chest_wall!r}")
    depth = width * rng.uniform(0.58, 0.84)
    if view.upper() == "MLO":
        center = height * rng.uniform(0.36, 0.46)
        top = height * rng.uniform(0.55, 0.7)  # reaches the top edge (axilla)
        bottom = height * rng.uniform(0.4, 0.5)
        pectoral = (width * rng.uniform(0.22, 0.4), height * rng.uniform(0.3, 0.5))
    else:
        center = height * rng.uniform(0.45, 0.55)
        top = bottom = height * rng.uniform(0.33, 0.42)
        bottom *= rng.uniform(0.95, 1.05)
        pectoral = None
    return BreastLayout(
        height=int(height),
        width=int(width),
        view=view.upper(),
        chest_wall=chest_wall,
        center_row=float(center),
        depth=float(depth),
        half_height_top=float(top),
        half_height_bottom=float(bottom),
        pectoral=None if pectoral is None else (float(pectoral[0]), float(pectoral[1])),
    )


def smooth_noise(
    rng: np.random.Generator,
    shape: tuple[int, int],
    cell_px: float,
    *,
    octaves: int = 3,
    persistence: float = 0.5,
    stretch: float = 1.0,
) -> np.ndarray:
    """Band-limited noise (``float32``, mean ~0, std ~1): Gaussian grids at ``cell_px`` spacing
    (halved per octave) upsampled bicubically; ``stretch`` > 1 elongates it horizontally."""
    h, w = shape
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for octave in range(octaves):
        cy = max(cell_px / 2**octave, 1.0)
        cx = cy * stretch
        gh, gw = math.ceil(h / cy) + 3, math.ceil(w / cx) + 3
        grid = rng.standard_normal((gh, gw), dtype=np.float32)
        up = cv2.resize(grid, (int(gw * cx), int(gh * cy)), interpolation=cv2.INTER_CUBIC)
        out += amp * up[:h, :w]
        total += amp * amp
        amp *= persistence
    out /= math.sqrt(total) * 0.8
    return out


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


@dataclass(frozen=True, eq=False)
class Anatomy:
    """A drawn breast image without lesions.

    ``image``: ``float32`` ``height x width`` in ``[0, 1]``. ``breast`` and ``allowed`` are at the
    working resolution (``round(height * scale) x round(width * scale)``): the breast
    (with skin and pectoral muscle) and where lesion pixels may go (breast interior, not muscle,
    not under film artefacts). ``artefacts`` lists ``(kind, (y0, y1, x0, x1))`` boxes in image
    pixels (``"label"``, ``"strip"``).
    """

    image: np.ndarray
    breast: np.ndarray
    allowed: np.ndarray
    scale: float
    layout: BreastLayout
    artefacts: tuple[tuple[str, tuple[int, int, int, int]], ...]


_GLAND_BIAS: Final = {1: -1.5, 2: -0.7, 3: 0.0, 4: 0.7}


def draw_anatomy(
    rng: np.random.Generator, layout: BreastLayout, density: int, *, artefacts: bool = True
) -> Anatomy:
    """Draw the breast of ``layout`` with BI-RADS ``density`` 1–4 (more fibroglandular tissue
    with higher density), skin line, pectoral muscle on MLO, film grain and, with
    ``artefacts``, a film label and a scanner border strip in the background."""
    if density not in _GLAND_BIAS:
        raise ValueError(f"density must be 1..4, got {density!r}")
    H, W = layout.height, layout.width
    scale = min(1.0, WORK_MAX / max(H, W))
    h, w = max(8, round(H * scale)), max(8, round(W * scale))
    px_mm = layout.px_mm
    lr_px_mm = px_mm / scale  # millimetres per working pixel

    rows = ((np.arange(h, dtype=np.float32) + 0.5) / scale - 0.5)[:, None]
    cols = ((np.arange(w, dtype=np.float32) + 0.5) / scale - 0.5)[None, :]
    xd = cols if layout.chest_wall == "left" else (W - 1 - cols)  # distance from chest wall
    u = xd / layout.depth
    half = np.where(rows < layout.center_row, layout.half_height_top, layout.half_height_bottom)
    v = (rows - layout.center_row) / half
    theta = np.arctan2(v, u)
    a1, a2 = rng.uniform(0.015, 0.04), rng.uniform(0.01, 0.025)
    p1, p2 = rng.uniform(0, 2 * math.pi, 2)
    wobble = 1.0 + a1 * np.sin(3 * theta + p1) + a2 * np.sin(5 * theta + p2)
    r = np.sqrt(u * u + v * v) / wobble  # < 1 inside the breast

    radius_eff = min(layout.depth, 0.5 * (layout.half_height_top + layout.half_height_bottom))
    depth_mm = (1.0 - r) * radius_eff * px_mm  # approx. distance to the skin, mm
    breast = r < 1.0
    coverage = np.clip(depth_mm / (lr_px_mm) + 0.5, 0.0, 1.0)  # anti-aliased outline
    fall = 0.35 + 0.65 * _smoothstep(depth_mm / 25.0)  # thinner compressed tissue at the rim
    rim = np.exp(-((depth_mm / 1.8) ** 2))  # skin line

    cell = 16.0 / lr_px_mm
    gland_noise = smooth_noise(rng, (h, w), cell, octaves=3, stretch=1.6)
    prior = np.exp(-(((u - 0.35) / 0.5) ** 2)) * np.exp(-((v / 0.8) ** 2))
    gland = 1.0 / (1.0 + np.exp(-(gland_noise + 2.4 * (prior - 0.5) + _GLAND_BIAS[density]) / 0.45))
    fine = smooth_noise(rng, (h, w), max(2.5 / lr_px_mm, 1.5), octaves=2)
    tissue = fall * (0.27 + 0.36 * gland + 0.03 * fine) + 0.1 * rim

    if layout.pectoral is not None:
        pw, ph = layout.pectoral
        bow = rng.uniform(-0.06, 0.1)
        t = xd / pw + rows / ph
        inside = 1.0 - t + bow * np.sin(np.clip(rows / ph, 0, 1) * math.pi)
        soft = _smoothstep(inside * min(pw, ph) * px_mm / 3.0)
        muscle = 0.56 + 0.05 * smooth_noise(rng, (h, w), 6.0 / lr_px_mm, octaves=2, stretch=0.5)
        tissue = tissue * (1.0 - soft) + muscle * soft
        muscle_zone = inside > -8.0 / (min(pw, ph) * px_mm)  # muscle plus an 8 mm margin
    else:
        muscle_zone = np.zeros((h, w), bool)

    lr = (BACKGROUND + (tissue - BACKGROUND) * coverage * breast).astype(np.float32)
    img = lr if scale == 1.0 else cv2.resize(lr, (W, H), interpolation=cv2.INTER_LINEAR)
    grain = rng.standard_normal((H, W), dtype=np.float32)
    img = img + grain * np.float32(0.004)

    boxes: list[tuple[str, tuple[int, int, int, int]]] = []
    blocked = np.zeros((h, w), np.uint8)
    if artefacts:
        img, boxes = _film_artefacts(rng, img, layout, breast, scale)
        for _, (y0, y1, x0, x1) in boxes:
            blocked[
                int(y0 * scale) : math.ceil(y1 * scale) + 1,
                int(x0 * scale) : math.ceil(x1 * scale) + 1,
            ] = 1
    np.clip(img, 0.0, 1.0, out=img)
    allowed = breast & (depth_mm > 4.0) & ~muscle_zone & (blocked == 0)
    return Anatomy(
        image=img,
        breast=breast,
        allowed=allowed,
        scale=scale,
        layout=layout,
        artefacts=tuple(boxes),
    )


def _film_artefacts(
    rng: np.random.Generator,
    img: np.ndarray,
    layout: BreastLayout,
    breast_lr: np.ndarray,
    scale: float,
) -> tuple[np.ndarray, list[tuple[str, tuple[int, int, int, int]]]]:
    """A scanner border strip on one edge and a bright film label in a background corner."""
    H, W = img.shape
    out = img.copy()
    boxes: list[tuple[str, tuple[int, int, int, int]]] = []
    outer_left = layout.chest_wall == "right"  # the side away from the chest wall

    if rng.random() < 0.75:
        edge = ("top", "bottom", "outer")[int(rng.integers(3))]
        frac = rng.uniform(0.008, 0.025)
        level = rng.uniform(0.45, 0.9)
        if edge in ("top", "bottom"):
            n = max(2, round(H * frac))
            y0, y1 = (0, n) if edge == "top" else (H - n, H)
            box = (y0, y1, 0, W)
        else:
            n = max(2, round(W * frac))
            x0, x1 = (0, n) if outer_left else (W - n, W)
            box = (0, H, x0, x1)
        y0, y1, x0, x1 = box
        ragged = smooth_noise(rng, (y1 - y0, x1 - x0), max(H, W) / 20, octaves=1)
        out[y0:y1, x0:x1] = level + 0.04 * ragged
        boxes.append(("strip", box))

    if rng.random() < 0.85:
        lh = max(4, round(H * rng.uniform(0.04, 0.07)))
        lw = max(6, round(W * rng.uniform(0.12, 0.22)))
        margin_y, margin_x = round(H * 0.03), round(W * 0.03)
        x0 = margin_x if outer_left else W - margin_x - lw
        candidates = [margin_y + round(H * 0.02), H - margin_y - lh - round(H * 0.02)]
        order = rng.permutation(len(candidates))
        dil = cv2.dilate(breast_lr.astype(np.uint8), np.ones((5, 5), np.uint8))
        for i in order:
            y0 = candidates[int(i)]
            y1, x1 = y0 + lh, x0 + lw
            sub = dil[
                int(y0 * scale) : math.ceil(y1 * scale), int(x0 * scale) : math.ceil(x1 * scale)
            ]
            if (
                sub.size
                and not sub.any()
                and all(not _overlap((y0, y1, x0, x1), b) for _, b in boxes)
            ):
                level = rng.uniform(0.85, 0.97)
                out[y0:y1, x0:x1] = level
                # a few dark "characters"
                n_chars = int(rng.integers(2, 5))
                cw = max(1, lw // (n_chars * 2 + 1))
                for c in range(n_chars):
                    cx0 = x0 + cw * (2 * c + 1)
                    cy0, cy1 = y0 + max(1, lh // 5), y1 - max(1, lh // 5)
                    out[cy0:cy1, cx0 : cx0 + cw] = level * rng.uniform(0.25, 0.5)
                boxes.append(("label", (y0, y1, x0, x1)))
                break
    return out, boxes


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]


# ----------------------------------------------------------------------------------------------
# lesions
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class LesionPatch:
    """A lesion drawn on a square patch centred at ``[k, k]`` (side ``2k + 1``).

    ``delta`` (``float32``) is added to the image; ``mask`` (``bool``) is the ROI a radiologist
    would outline (mass body without spicules; calcification cluster plus a margin); ``reach``
    is the distance in px from the centre to the farthest pixel of either.
    """

    delta: np.ndarray
    mask: np.ndarray
    reach: float

    @property
    def k(self) -> int:
        return self.mask.shape[0] // 2


def _components(text: str) -> set[str]:
    return {c.strip().upper() for c in str(text).split("-") if c.strip()}


def _finish(delta: np.ndarray, mask: np.ndarray, contrast: float) -> LesionPatch:
    k = mask.shape[0] // 2
    visible = mask | (np.abs(delta) > 0.01 * max(contrast, 1e-6))
    ys, xs = np.nonzero(visible)
    reach = float(np.hypot(ys - k, xs - k).max()) + 1.0 if ys.size else 1.0
    return LesionPatch(delta=delta.astype(np.float32), mask=mask, reach=reach)


def _polygon_mask(n: int, k: int, radius: float, r: np.ndarray, theta: np.ndarray) -> np.ndarray:
    pts = np.stack([k + radius * r * np.cos(theta), k + radius * r * np.sin(theta)], axis=1)
    mask = np.zeros((n, n), np.uint8)
    cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
    return mask.astype(bool)


def mass_patch(
    rng: np.random.Generator,
    radius_px: float,
    shape: str,
    margins: str,
    contrast: float,
) -> LesionPatch:
    """A mass (or architectural distortion / asymmetry) following CBIS-DDSM's descriptors.

    ``shape``: ``ROUND``, ``OVAL``, ``LOBULATED``, ``IRREGULAR``, ``LYMPH_NODE``,
    ``ARCHITECTURAL_DISTORTION``, ``ASYMMETRIC_BREAST_TISSUE``, ``FOCAL_ASYMMETRIC_DENSITY`` or
    ``-``-joined combinations (unknown / ``N/A`` → an irregular oval). ``margins``:
    ``CIRCUMSCRIBED`` (sharp), ``MICROLOBULATED`` (small bumps), ``OBSCURED``, ``ILL_DEFINED``
    (blurred), ``SPICULATED`` (radial spicules outside the mask) or combinations.
    ``radius_px`` is the mean radius of the body; ``contrast`` its peak added intensity.
    """
    comps, margs = _components(shape), _components(margins)
    R = max(float(radius_px), 2.0)
    distortion = "ARCHITECTURAL_DISTORTION" in comps
    distortion_only = distortion and not comps & _MASS_SHAPES
    asymmetry_only = bool(comps & _ASYMMETRIES) and not comps & _MASS_SHAPES and not distortion
    spiculated = "SPICULATED" in margs or distortion

    theta = np.linspace(0.0, 2 * math.pi, 128, endpoint=False)
    if "ROUND" in comps:
        q = rng.uniform(0.88, 1.0)
    elif comps & {"OVAL", "LYMPH_NODE"}:
        q = rng.uniform(0.5, 0.75)
    else:
        q = rng.uniform(0.65, 0.95)
    phi = rng.uniform(0.0, math.pi)
    c, s = np.cos(theta - phi), np.sin(theta - phi)
    r = q / np.sqrt((q * c) ** 2 + s**2)
    if "LOBULATED" in comps:
        r *= 1 + rng.uniform(0.08, 0.16) * np.sin(
            int(rng.integers(3, 6)) * theta + rng.uniform(0, 6.3)
        )
    if comps & {"IRREGULAR"} or distortion_only or asymmetry_only or not comps & _MASS_SHAPES:
        for harmonic in range(2, 8):
            r *= 1 + rng.uniform(0.0, 0.09) * np.sin(harmonic * theta + rng.uniform(0, 6.3))
    if "MICROLOBULATED" in margs:
        r *= 1 + 0.04 * np.sin(int(rng.integers(14, 21)) * theta + rng.uniform(0, 6.3))
    r = np.maximum(r, 0.3)

    known = [_MARGIN_BLUR[m] for m in margs if m in _MARGIN_BLUR]
    sigma_frac = float(np.mean(known)) if known else 0.12
    if asymmetry_only:
        sigma_frac = 0.3
    sigma = max(R * sigma_frac, 0.5)
    spic_len = rng.uniform(1.5, 2.4) if spiculated else 1.0
    k = math.ceil(R * float(r.max()) * spic_len + 3 * sigma + 2)
    n = 2 * k + 1
    mask = _polygon_mask(n, k, R, r, theta)

    yy, xx = np.mgrid[-k : k + 1, -k : k + 1].astype(np.float32)
    dist = np.hypot(yy, xx)
    body = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigma)
    dome = np.sqrt(np.clip(1.0 - (dist / (1.05 * R * float(r.max()))) ** 2, 0.0, 1.0))
    strength = contrast * (0.35 if distortion_only else 0.5 if asymmetry_only else 1.0)
    delta = strength * body * (0.7 + 0.3 * dome)
    texture = smooth_noise(rng, (n, n), max(R / 3, 1.5), octaves=2)
    delta *= 1.0 + 0.08 * texture

    if "LYMPH_NODE" in comps:  # fatty hilum: a darker notch near the edge
        a = rng.uniform(0, 2 * math.pi)
        hy, hx = 0.6 * R * q * math.sin(a), 0.6 * R * q * math.cos(a)
        hilum = np.exp(-(((yy - hy) ** 2 + (xx - hx) ** 2) / (2 * (0.25 * R) ** 2)))
        delta *= 1.0 - 0.7 * hilum

    if spiculated:
        layer = np.zeros((n, n), np.uint8)
        n_spic = int(rng.integers(12, 25) if distortion_only else rng.integers(8, 19))
        width = max(1, round(0.05 * R))
        for ang in rng.uniform(0, 2 * math.pi, n_spic):
            r0 = (0.15 if distortion_only else 0.7) * R
            r1 = R * rng.uniform(1.2, spic_len)
            p0 = (k + r0 * math.cos(ang), k + r0 * math.sin(ang))
            p1 = (k + r1 * math.cos(ang), k + r1 * math.sin(ang))
            cv2.line(
                layer,
                (round(p0[0] * 16), round(p0[1] * 16)),
                (round(p1[0] * 16), round(p1[1] * 16)),
                255,
                width,
                cv2.LINE_AA,
                4,
            )
        spic = layer.astype(np.float32) * np.float32(contrast * 0.45 / 255.0)
        delta = np.maximum(delta, spic)

    if distortion_only:
        mask = _polygon_mask(n, k, 0.9 * R, r, theta)
    return _finish(delta, mask, contrast)


_CALC_EXTENT_MM: Final = {  # distribution -> (extent range mm, number of calcifications)
    "CLUSTERED": ((3.0, 7.0), (6, 20)),
    "LINEAR": ((8.0, 18.0), (6, 14)),
    "SEGMENTAL": ((12.0, 22.0), (10, 24)),
    "REGIONAL": ((14.0, 24.0), (12, 28)),
    "DIFFUSELY_SCATTERED": ((18.0, 30.0), (10, 24)),
}
_CALC_SIZE_MM: Final = {  # calc type -> (radius range mm, style)
    "PUNCTATE": ((0.12, 0.25), "dot"),
    "AMORPHOUS": ((0.08, 0.2), "faint"),
    "PLEOMORPHIC": ((0.1, 0.45), "dot"),
    "FINE_LINEAR_BRANCHING": ((0.08, 0.15), "line"),
    "COARSE": ((0.5, 1.2), "dot"),
    "DYSTROPHIC": ((0.5, 1.4), "dot"),
    "LARGE_RODLIKE": ((0.3, 0.6), "rod"),
    "ROUND_AND_REGULAR": ((0.25, 0.6), "dot"),
    "LUCENT_CENTER": ((0.4, 1.0), "ring"),
    "LUCENT_CENTERED": ((0.4, 1.0), "ring"),
    "EGGSHELL": ((0.5, 1.1), "ring"),
    "SKIN": ((0.4, 0.9), "ring"),
    "VASCULAR": ((0.15, 0.3), "track"),
    "MILK_OF_CALCIUM": ((0.2, 0.5), "dot"),
}


def calcification_patch(
    rng: np.random.Generator,
    px_mm: float,
    calc_type: str,
    distribution: str,
    contrast: float,
) -> LesionPatch:
    """A group of calcifications whose size/form follows ``calc_type`` (``PUNCTATE``,
    ``PLEOMORPHIC``, ``FINE_LINEAR_BRANCHING``, ``LUCENT_CENTER`` …, ``-``-combinations; first
    known one wins, default pleomorphic) and whose layout follows ``distribution``
    (``CLUSTERED``, ``LINEAR``, ``SEGMENTAL``, ``REGIONAL``, ``DIFFUSELY_SCATTERED``; default
    clustered). The mask is the convex hull of the calcifications grown by ~1.5 mm.
    Sizes are in mm and converted with ``px_mm``; dots stay at least ~0.6 px across.
    """
    dist_key = next((d for d in _components(distribution) if d in _CALC_EXTENT_MM), "CLUSTERED")
    type_key = next((t for t in _components(calc_type) if t in _CALC_SIZE_MM), "PLEOMORPHIC")
    (e0, e1), (n0, n1) = _CALC_EXTENT_MM[dist_key]
    (s0, s1), style = _CALC_SIZE_MM[type_key]
    extent = rng.uniform(e0, e1)
    count = int(rng.integers(n0, n1 + 1))
    ang = rng.uniform(0, math.pi)
    direction = np.array([math.cos(ang), math.sin(ang)])
    normal = np.array([-direction[1], direction[0]])
    if dist_key == "CLUSTERED":
        pts = rng.normal(0.0, extent / 4.0, (count, 2))
        pts = np.clip(pts, -extent / 2, extent / 2)
    elif dist_key == "LINEAR":
        t = rng.uniform(-extent / 2, extent / 2, count)
        pts = t[:, None] * direction + rng.normal(0, 0.4, count)[:, None] * normal
    elif dist_key == "SEGMENTAL":
        t = rng.uniform(-extent / 2, extent / 2, count)
        wdt = (0.15 + 0.25 * (t + extent / 2) / extent) * extent / 2  # widening wedge
        pts = t[:, None] * direction + (rng.uniform(-1, 1, count) * wdt)[:, None] * normal
    else:
        rad = extent / 2 * np.sqrt(rng.uniform(0, 1, count))
        a = rng.uniform(0, 2 * math.pi, count)
        pts = np.stack([rad * np.cos(a), rad * np.sin(a)], axis=1)
    pts_px = pts / px_mm  # (x, y) offsets in pixels

    size_px = np.maximum(rng.uniform(s0, s1, count) / px_mm, 0.6)
    if style == "rod":
        size_px = np.maximum(size_px, 0.8)
    margin_px = max(2.0, 1.5 / px_mm)
    long_px = (3.0 / px_mm) if style in ("rod", "line") else 0.0
    k = math.ceil(float(np.abs(pts_px).max()) + size_px.max() + long_px + margin_px + 3)
    n = 2 * k + 1
    layer = np.zeros((n, n), np.uint8)

    def p16(x: float, y: float) -> tuple[int, int]:
        return (round((k + x) * 16), round((k + y) * 16))

    for (x, y), sz in zip(pts_px, size_px, strict=True):
        level = int(255 * rng.uniform(0.6, 1.0))
        if style == "faint":
            level //= 2
        if style in ("dot", "faint"):
            cv2.circle(layer, p16(x, y), max(1, round(sz * 16)), level, -1, cv2.LINE_AA, 4)
        elif style == "ring":
            thick = max(1, round(sz * 0.35))
            cv2.circle(layer, p16(x, y), max(1, round(sz * 16)), level, thick, cv2.LINE_AA, 4)
        else:  # line, rod, track: short segments
            seg = rng.uniform(0.5, 1.0) * (long_px if long_px else 4 * sz)
            a = ang + rng.normal(0, 0.5)
            dx, dy = 0.5 * seg * math.cos(a), 0.5 * seg * math.sin(a)
            thick = max(1, round(2 * sz))
            cv2.line(layer, p16(x - dx, y - dy), p16(x + dx, y + dy), level, thick, cv2.LINE_AA, 4)
            if style == "track":
                ox, oy = normal * (0.8 / px_mm)
                cv2.line(
                    layer,
                    p16(x - dx + ox, y - dy + oy),
                    p16(x + dx + ox, y + dy + oy),
                    level,
                    thick,
                    cv2.LINE_AA,
                    4,
                )
    delta = layer.astype(np.float32) * np.float32(contrast / 255.0)
    if 0.08 / px_mm > 0.4:
        delta = cv2.GaussianBlur(delta, (0, 0), 0.08 / px_mm)

    hull_src = (pts_px + k).astype(np.float32).reshape(-1, 1, 2)
    hull = cv2.convexHull(hull_src)
    mask = np.zeros((n, n), np.uint8)
    cv2.fillConvexPoly(mask, np.round(hull * 16).astype(np.int32), 1, cv2.LINE_8, 4)
    grow = math.ceil(margin_px + size_px.max())
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
    mask = cv2.dilate(mask, kernel).astype(bool)
    return _finish(delta, mask, contrast)


# ----------------------------------------------------------------------------------------------
# the lesion model shared by the generators
# ----------------------------------------------------------------------------------------------

#: Range of a mass's mean radius in mm (both generators draw masses from it).
MASS_RADIUS_MM: Final = (4.0, 13.0)


@dataclass(frozen=True)
class LesionSpec:
    """One lesion in CBIS-DDSM's vocabulary; every generator describes its lesions so (mini-MIAS
    classes map onto it), so a lesion class looks the same in every synthetic data set.

    ``kind``: ``"mass"`` (masses, architectural distortions, asymmetries: ``a`` the shape, ``b``
    the margins) or ``"calcification"`` (``a`` the calc type, ``b`` the distribution).
    ``radius_mm``: a mass's mean body radius (unused for calcifications). ``subtlety``: 1 (subtle)
    to 5 (obvious), as CBIS-DDSM's column; it sets the contrast (:func:`lesion_contrast`).
    """

    kind: str
    a: str
    b: str
    radius_mm: float
    subtlety: int


@dataclass(frozen=True)
class LesionLook:
    """Scales of the lesion model over the realistic defaults (1.0, 1.0).

    ``contrast`` multiplies every lesion's peak added intensity; ``size`` every physical size
    (mass radius, calcification cluster extent and dot size, ROI margin). Raised, they make
    lesions learnable by a small model on small images in minutes (the demo), at the cost of
    realism.
    """

    contrast: float = 1.0
    size: float = 1.0

    def __post_init__(self) -> None:
        if not (0.0 < self.contrast <= 5.0 and 0.0 < self.size <= 5.0):
            raise ValueError(f"lesion contrast and size scales must be in (0, 5]: {self}")


def draw_mass_radius_mm(rng: np.random.Generator) -> float:
    """A mass's mean radius in mm, uniform in :data:`MASS_RADIUS_MM`."""
    return float(rng.uniform(*MASS_RADIUS_MM))


def lesion_contrast(kind: str, subtlety: int) -> float:
    """Peak added intensity of a lesion of ``kind`` and CBIS ``subtlety`` (1..5), image in 0..1."""
    s = min(max(int(subtlety), 1), 5)
    return 0.3 + 0.05 * s if kind == "calcification" else 0.12 + 0.025 * s


def lesion_maker(
    rng: np.random.Generator, spec: LesionSpec, px_mm: float, look: LesionLook = LesionLook()
) -> Callable[[float], LesionPatch]:
    """``scale -> patch`` for :func:`place_and_paste` (which shrinks ``scale`` on failed
    placements): the lesion of ``spec`` on an image of ``px_mm`` millimetre pixels."""
    contrast = lesion_contrast(spec.kind, spec.subtlety) * look.contrast

    def make(scale: float) -> LesionPatch:
        if spec.kind == "calcification":
            return calcification_patch(rng, px_mm / (scale * look.size), spec.a, spec.b, contrast)
        radius = spec.radius_mm * look.size * rng.uniform(0.9, 1.1) * scale / px_mm
        return mass_patch(rng, max(radius, 2.5), spec.a, spec.b, contrast)

    return make


# ----------------------------------------------------------------------------------------------
# composition
# ----------------------------------------------------------------------------------------------


def place_lesion(
    rng: np.random.Generator,
    anatomy: Anatomy,
    reach_px: float,
    taken: list[tuple[int, int, float]],
) -> tuple[int, int] | None:
    """A centre ``(row, col)`` where a lesion of ``reach_px`` lies wholly in the allowed breast
    interior and clear of the lesions in ``taken`` (``(row, col, reach)``); ``None`` if none."""
    s = anatomy.scale
    allowed = anatomy.allowed.astype(np.uint8)
    for row, col, reach in taken:
        cv2.circle(
            allowed, (round(col * s), round(row * s)), math.ceil((reach + reach_px + 2) * s), 0, -1
        )
    padded = np.pad(allowed, 1)  # the image border counts as outside
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]
    cand = np.argwhere(dist > reach_px * s + 1.5)
    if cand.size == 0:
        return None
    y, x = cand[int(rng.integers(len(cand)))]
    H, W = anatomy.image.shape
    row = min(max(round((y + rng.uniform(0, 1)) / s - 0.5), 0), H - 1)
    col = min(max(round((x + rng.uniform(0, 1)) / s - 0.5), 0), W - 1)
    return int(row), int(col)


def _window(
    shape: tuple[int, int], k: int, row: int, col: int
) -> tuple[slice, slice, slice, slice]:
    H, W = shape
    y0, x0 = row - k, col - k
    y1, x1 = y0 + 2 * k + 1, x0 + 2 * k + 1
    sy0, sx0 = max(0, -y0), max(0, -x0)
    sy1, sx1 = (2 * k + 1) - max(0, y1 - H), (2 * k + 1) - max(0, x1 - W)
    return (
        slice(max(0, y0), min(H, y1)),
        slice(max(0, x0), min(W, x1)),
        slice(sy0, sy1),
        slice(sx0, sx1),
    )


def place_and_paste(
    rng: np.random.Generator,
    anatomy: Anatomy,
    canvas: np.ndarray,
    taken: list[tuple[int, int, float]],
    make_patch: Callable[[float], LesionPatch],
    what: str,
    attempts: int = 8,
) -> tuple[LesionPatch, int, int, np.ndarray]:
    """Draw a lesion with ``make_patch(scale)``, place it inside the breast away from the
    lesions in ``taken`` (shrinking it by 0.7 after each failed attempt), add it to ``canvas``
    and record it in ``taken``. Returns ``(patch, row, col, full-size mask)``."""
    scale = 1.0
    for _attempt in range(attempts):
        patch = make_patch(scale)
        where = place_lesion(rng, anatomy, patch.reach, taken)
        if where is not None:
            break
        scale *= 0.7
    else:
        raise RuntimeError(f"could not place {what}")
    row, col = where
    paste_add(canvas, patch, row, col)
    mask = full_mask(canvas.shape, patch, row, col)
    taken.append((row, col, patch.reach))
    return patch, row, col, mask


def paste_add(canvas: np.ndarray, patch: LesionPatch, row: int, col: int) -> None:
    """Add ``patch.delta`` to ``canvas`` (the caller's own working image) centred at
    ``(row, col)``, clipped at the border; values are clipped to ``[0, 1]``."""
    dy, dx, py, px = _window(canvas.shape, patch.k, row, col)
    region = canvas[dy, dx]
    region += patch.delta[py, px]
    np.clip(region, 0.0, 1.0, out=region)


def full_mask(shape: tuple[int, int], patch: LesionPatch, row: int, col: int) -> np.ndarray:
    """``patch.mask`` placed in a new all-False array of ``shape`` centred at ``(row, col)``."""
    out = np.zeros(shape, bool)
    dy, dx, py, px = _window(shape, patch.k, row, col)
    out[dy, dx] = patch.mask[py, px]
    return out


def to_uint16(image: np.ndarray, levels: int = 65536) -> np.ndarray:
    """``[0, 1]`` float → ``uint16`` ``0..65535`` (rounded, clipped), on ``levels`` grey levels
    spread evenly over that range (a digitiser of ``log2(levels)`` bits; 256 → multiples of 257)."""
    if not 2 <= levels <= 65536:
        raise ValueError(f"levels must be 2..65536, got {levels}")
    top = levels - 1
    q = np.round(np.clip(image, 0.0, 1.0) * top)
    return q.astype(np.uint16) if top == 65535 else np.round(q * (65535.0 / top)).astype(np.uint16)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """``[0, 1]`` float → ``uint8`` ``0..255`` (rounded, clipped)."""
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
