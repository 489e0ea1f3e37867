"""Benchmark: our preprocessing vs the seed-style 8-bit pipeline, on full-size synthetic DICOMs.

    .venv/bin/python benchmarks/preprocess.py [--n 6] [--json]

Generates ``--n`` CBIS-DDSM-like full mammograms (16-bit DICOM, ``--height`` x ``--width``,
default 5000 x 3000, with film labels, border strips and lesion masks) with
:func:`mammoseg.synth.generate_cbis`, then times single-threaded (``cv2.setNumThreads(1)``):

(a) ours: DICOM bytes → :func:`mammoseg.imageio.load_image` (16-bit) and the lesion masks →
    :func:`mammoseg.preprocess.preprocess_arrays` (crop, flip, CLAHE on 16 bits, pad, resize,
    alignment checks) → lossless NPZ bytes;
(b) reference (seed style): pydicom → min-max to 8 bits → JPEG file → ``cv2.imread`` →
    8-bit CLAHE → ``cv2.resize`` to size x size (aspect ratio not kept, no masks).

Quality figures: distinct grey levels inside the breast in the model-ready image (precision
kept), the lesion masks' round-trip IoU (model grid and back; the reference resizes the mask
the way it resizes the image), and sanity checks of ours against the generator's ground truth
(chest-wall side found; film label hidden: every model-input pixel under the label's box is
0, i.e. cropped away or blanked as non-breast). Nothing from the generated DICOM
headers is printed.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mammoseg import imageio
from mammoseg.preprocess import (
    PreprocessParams,
    border_crop,
    iou,
    npz_bytes,
    preprocess_arrays,
    roundtrip_iou,
)
from mammoseg.storage import LocalStore


@dataclass
class Sample:
    dicom: bytes
    masks: list[bytes]
    chest_wall: str  # "left" | "right" (ground truth)
    label_boxes: list[tuple[int, int, int, int]]


def generate(n: int, height: int, width: int, seed: int) -> list[Sample]:
    from mammoseg.synth import CbisSynthParams, generate_cbis

    with tempfile.TemporaryDirectory(prefix="mammoseg-bench-") as tmp:
        store = LocalStore(tmp)
        params = CbisSynthParams(
            n_patients=n,
            height=height,
            width=width,
            seed=seed,
            views=("CC",),
            bilateral_fraction=0.0,
            n_bad=0,
        )
        summary = generate_cbis(store, params)
        samples = []
        for im in summary.images:
            if im.key is None:
                continue
            samples.append(
                Sample(
                    dicom=store.read_bytes(im.key),
                    masks=[store.read_bytes(les.mask_key) for les in im.lesions if les.mask_key],
                    chest_wall=im.chest_wall,
                    label_boxes=[box for kind, box in im.artefacts if kind == "label"],
                )
            )
    return samples[:n]


def ours(sample: Sample, params: PreprocessParams) -> tuple[bytes, object, list[np.ndarray]]:
    image = imageio.load_image(sample.dicom, "image.dcm")
    masks = [imageio.load_mask(m, "mask.dcm") for m in sample.masks]
    case = preprocess_arrays(image, masks, params)
    return npz_bytes(case), case, masks


def reference(sample: Sample, size: int, workdir: Path) -> np.ndarray:
    import pydicom

    arr = pydicom.dcmread(io.BytesIO(sample.dicom)).pixel_array.astype(np.float32)
    img8 = ((arr - arr.min()) / max(float(arr.max() - arr.min()), 1.0) * 255.0).astype(np.uint8)
    path = workdir / "image.jpg"
    cv2.imwrite(str(path), img8)
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    img = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(img)
    return cv2.resize(img, (size, size))


def reference_mask_iou(mask: np.ndarray, size: int) -> float:
    h, w = mask.shape
    small = cv2.resize(mask.astype(np.uint8) * 255, (size, size))
    back = cv2.resize(small, (w, h)) > 127
    return iou(mask, back)


def _label_hidden(case: object, shape: tuple[int, ...], box: tuple[int, int, int, int]) -> bool:
    """True when no model-input pixel under the label's box ``(y0, y1, x0, x1)`` is nonzero."""
    label = np.zeros(shape[:2], dtype=bool)
    label[box[0] : box[1], box[2] : box[3]] = True
    under = case.transform.forward_mask(label) == 1  # type: ignore[attr-defined]
    return not np.any(case.image[under])  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=6, help="number of images (default 6)")
    ap.add_argument("--height", type=int, default=5000)
    ap.add_argument("--width", type=int, default=3000)
    ap.add_argument("--size", type=int, default=512, help="model input side (default 512)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    params = PreprocessParams(size=args.size)

    t = time.perf_counter()
    samples = generate(args.n, args.height, args.width, args.seed)
    gen_s = time.perf_counter() - t
    if not samples:
        print("the generator wrote no images", file=sys.stderr)
        return 1

    # Warm-up (first-call costs of OpenCV/pydicom), not timed.
    with tempfile.TemporaryDirectory(prefix="mammoseg-bench-") as tmp:
        workdir = Path(tmp)
        ours(samples[0], params)
        reference(samples[0], args.size, workdir)

        t = time.perf_counter()
        results = [ours(s, params) for s in samples]
        ours_s = time.perf_counter() - t

        t = time.perf_counter()
        refs = [reference(s, args.size, workdir) for s in samples]
        ref_s = time.perf_counter() - t

    n = len(samples)
    levels_ours, levels_ref, iou_ours, iou_ref = [], [], [], []
    side_ok, label_hidden, npz_sizes = 0, 0, []
    for sample, (blob, case, masks), ref in zip(samples, results, refs, strict=True):
        npz_sizes.append(len(blob))
        levels_ours.append(int(np.unique(case.image[case.breast_mask == 1]).size))
        image = imageio.load_image(sample.dicom, "image.dcm")
        breast = border_crop(image, params).breast_mask.astype(np.uint8)
        breast_ref = (
            cv2.resize(breast, (args.size, args.size), interpolation=cv2.INTER_NEAREST) == 1
        )
        levels_ref.append(int(np.unique(ref[breast_ref]).size))
        for m in masks:
            if m.any():
                iou_ours.append(roundtrip_iou(m, case.transform))
                iou_ref.append(reference_mask_iou(m, args.size))
        side_ok += case.chest_wall_side == sample.chest_wall[0].upper()
        label_hidden += all(_label_hidden(case, image.shape, b) for b in sample.label_boxes)

    report = {
        "images": n,
        "image_size": [args.height, args.width],
        "output_size": args.size,
        "threads": 1,
        "generate_s": round(gen_s, 2),
        "ours_images_per_s_per_core": round(n / ours_s, 3),
        "reference_images_per_s_per_core": round(n / ref_s, 3),
        "speed_ratio_ours_over_reference": round(ref_s / ours_s, 3),
        "ours_s_per_image": round(ours_s / n, 3),
        "reference_s_per_image": round(ref_s / n, 3),
        "grey_levels_in_breast_ours_median": int(statistics.median(levels_ours)),
        "grey_levels_in_breast_reference_median": int(statistics.median(levels_ref)),
        "mask_roundtrip_iou_ours_mean": round(statistics.fmean(iou_ours), 4) if iou_ours else None,
        "mask_roundtrip_iou_ours_min": round(min(iou_ours), 4) if iou_ours else None,
        "mask_roundtrip_iou_reference_mean": round(statistics.fmean(iou_ref), 4)
        if iou_ref
        else None,
        "lesion_masks": len(iou_ours),
        "chest_wall_side_correct": f"{side_ok}/{n}",
        "film_label_hidden": f"{label_hidden}/{n}",
        "npz_kib_median": round(statistics.median(npz_sizes) / 1024, 1),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"preprocess benchmark: {n} synthetic DICOMs {args.height}x{args.width} → "
        f"{args.size}x{args.size}, 1 thread (generation {gen_s:.1f} s, not timed)"
    )
    print(
        f"  ours      : {report['ours_images_per_s_per_core']:7.3f} images/s/core "
        f"({report['ours_s_per_image']:.3f} s/image; decode + masks + checks + NPZ)"
    )
    print(
        f"  reference : {report['reference_images_per_s_per_core']:7.3f} images/s/core "
        f"({report['reference_s_per_image']:.3f} s/image; 8-bit JPEG round trip, no masks)"
    )
    print(f"  speed ratio ours/reference: {report['speed_ratio_ours_over_reference']:.2f}")
    print(
        f"  grey levels inside the breast (median): ours "
        f"{report['grey_levels_in_breast_ours_median']}, reference "
        f"{report['grey_levels_in_breast_reference_median']}"
    )
    print(
        f"  mask round-trip IoU over {len(iou_ours)} lesions: ours mean "
        f"{report['mask_roundtrip_iou_ours_mean']} (min {report['mask_roundtrip_iou_ours_min']}), "
        f"reference mean {report['mask_roundtrip_iou_reference_mean']}"
    )
    print(
        f"  chest-wall side correct {report['chest_wall_side_correct']}, film label hidden "
        f"{report['film_label_hidden']}, NPZ median {report['npz_kib_median']} KiB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
