"""Benchmark: our preprocessing vs the seed-style 8-bit pipeline, on full-size synthetic DICOMs.

    .venv/bin/python benchmarks/preprocess.py [--n 6] [--json]

Generates ``--n`` CBIS-DDSM-like full mammograms (16-bit DICOM, ``--height`` x ``--width``,
default 5000 x 3000, with film labels, border strips and lesion masks) with
:func:`mammoseg.synth.generate_cbis`, then times single-threaded (``cv2.setNumThreads(1)``):

(a) ours, what ``preprocess_case`` runs between reading the bytes and writing the NPZ: DICOM
    bytes → :func:`mammoseg.imageio.load_image` (16-bit) and the lesion masks
    (:func:`mammoseg.preprocess.case.decode_mask`) → :func:`mammoseg.preprocess.border_crop`
    → :func:`mammoseg.preprocess.preprocess_arrays` (crop, flip, 16-bit window and CLAHE, pad,
    resize, alignment checks; a full-size image goes through the reduced working copy of
    :mod:`mammoseg.preprocess.fast`) → NPZ bytes;
(b) reference (seed style): pydicom → min-max to 8 bits → JPEG file → ``cv2.imread`` →
    8-bit CLAHE → ``cv2.resize`` to size x size (aspect ratio not kept, no masks).

Unless ``--no-full-resolution``, it also times our step-by-step full-resolution path
(``preprocess_arrays(..., reduced=False)``: the arrays path every image took before issue 9,
here with the new decoding) and reports how far the fast path's model-ready image is from it.

Peak memory per worker: each pipeline runs once more in a fresh worker process (spawned, so
nothing of this process is shared) over the same images; the worker reports its peak resident
memory (VmHWM, reset after its imports and inputs) and that peak above its resident memory
before the first image.

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
import resource
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
from mammoseg.preprocess.case import decode_mask
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


def ours(
    sample: Sample, params: PreprocessParams, *, reduced: bool = True
) -> tuple[bytes, object, list[np.ndarray]]:
    budget = imageio.max_image_pixels()  # preprocess_case reads the setting once per case
    image = imageio.load_image(sample.dicom, "image.dcm", max_pixels=budget)
    masks = [
        decode_mask(m, "mask.dcm", i, max_pixels=budget)[0]
        for i, m in enumerate(sample.masks, start=1)
    ]
    found = border_crop(image, params)
    case = preprocess_arrays(image, masks, params, crop=found, reduced=reduced)
    return npz_bytes(case), case, masks


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> bool:
    """Reset the peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0); False if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_worker(paths: list[str], size: int, which: str, workdir: str) -> dict[str, float]:
    """Runs in a spawned process: one pipeline over the pickled samples; peak RSS (MiB)."""
    import pickle

    cv2.setNumThreads(1)
    samples = [pickle.loads(Path(p).read_bytes()) for p in paths]
    params = PreprocessParams(size=size)
    # imports and first calls on a tiny DICOM, so library loading is in the base but no
    # full-size buffer is (freed buffers stay in the process and would hide the peak)
    from mammoseg.dicom import write_dicom

    tiny = np.zeros((64, 64), dtype=np.uint16)
    tiny[16:48, 8:40] = 30000
    imageio.load_image(write_dicom(tiny), "tiny.dcm")
    import gc

    import pydicom  # noqa: F401  (the reference's decoder)

    gc.collect()
    reset = _reset_peak()
    base = _status_kib("VmRSS")
    for s in samples:
        if which == "reference":
            reference(s, size, Path(workdir))
        else:
            ours(s, params, reduced=which == "ours")
    peak = _status_kib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_mib": peak / 1024, "above_inputs_mib": max(0, peak - base) / 1024}


def peak_memory(samples: list[Sample], size: int, which: str) -> dict[str, float]:
    import multiprocessing as mp
    import pickle

    with tempfile.TemporaryDirectory(prefix="mammoseg-bench-") as tmp:
        paths = []
        for i, s in enumerate(samples):
            path = Path(tmp) / f"{i}.pkl"
            path.write_bytes(pickle.dumps(s))
            paths.append(str(path))
        with mp.get_context("spawn").Pool(1) as pool:
            return pool.apply(_peak_worker, (paths, size, which, tmp))


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


def _quality(samples: list[Sample], results: list, params: PreprocessParams) -> dict[str, object]:
    levels, ious, side_ok, hidden, sizes = [], [], 0, 0, []
    for sample, (blob, case, masks) in zip(samples, results, strict=True):
        sizes.append(len(blob))
        levels.append(int(np.unique(case.image[case.breast_mask == 1]).size))
        for m in masks:
            if m.any():
                ious.append(roundtrip_iou(m, case.transform))
        side_ok += case.chest_wall_side == sample.chest_wall[0].upper()
        shape = case.transform.original_shape
        hidden += all(_label_hidden(case, shape, b) for b in sample.label_boxes)
    n = len(samples)
    return {
        "grey_levels_in_breast_median": int(statistics.median(levels)),
        "mask_roundtrip_iou_mean": round(statistics.fmean(ious), 4) if ious else None,
        "mask_roundtrip_iou_min": round(min(ious), 4) if ious else None,
        "lesion_masks": len(ious),
        "chest_wall_side_correct": f"{side_ok}/{n}",
        "film_label_hidden": f"{hidden}/{n}",
        "npz_kib_median": round(statistics.median(sizes) / 1024, 1),
    }


def _difference(fast: list, full: list) -> dict[str, float]:
    """How far the fast path's model-ready images are from the full-resolution path's, inside
    the breast (both masks), in fractions of the 16-bit range; and the masks' agreement."""
    maes, p95s, corrs, breast_ious, lesion_ious = [], [], [], [], []
    for (_, a, _), (_, b, _) in zip(fast, full, strict=True):
        both = (a.breast_mask == 1) & (b.breast_mask == 1)
        x, y = a.image[both].astype(np.float64), b.image[both].astype(np.float64)
        d = np.abs(x - y) / 65535.0
        maes.append(float(d.mean()))
        p95s.append(float(np.percentile(d, 95)))
        corrs.append(float(np.corrcoef(x, y)[0, 1]))
        breast_ious.append(iou(a.breast_mask, b.breast_mask))
        for la, lb in zip(a.lesion_masks, b.lesion_masks, strict=True):
            if la.any() or lb.any():
                lesion_ious.append(iou(la, lb))
    return {
        "image_mean_abs_diff_mean": round(statistics.fmean(maes), 4),
        "image_abs_diff_p95_mean": round(statistics.fmean(p95s), 4),
        "image_correlation_min": round(min(corrs), 4),
        "breast_mask_iou_min": round(min(breast_ious), 4),
        "lesion_mask_iou_min": round(min(lesion_ious), 4) if lesion_ious else None,
    }


def _timed(fn, samples: list[Sample]) -> tuple[list, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = [fn(s) for s in samples]
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=6, help="number of images (default 6)")
    ap.add_argument("--height", type=int, default=5000)
    ap.add_argument("--width", type=int, default=3000)
    ap.add_argument("--size", type=int, default=512, help="model input side (default 512)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=2, help="timed rounds, sides alternating")
    ap.add_argument(
        "--no-full-resolution",
        action="store_true",
        help="skip our step-by-step full-resolution path (timing, quality, difference)",
    )
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory workers")
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
    n = len(samples)

    sides: dict[str, object] = {"ours": lambda s: ours(s, params)}
    if not args.no_full_resolution:
        sides["full_resolution"] = lambda s: ours(s, params, reduced=False)
    wall = dict.fromkeys([*sides, "reference"], 0.0)
    cpu = dict.fromkeys([*sides, "reference"], 0.0)
    outputs: dict[str, list] = {}
    with tempfile.TemporaryDirectory(prefix="mammoseg-bench-") as tmp:
        workdir = Path(tmp)
        sides["reference"] = lambda s: reference(s, args.size, workdir)
        for fn in sides.values():  # warm-up (first-call costs of OpenCV/pydicom), not timed
            fn(samples[0])  # type: ignore[operator]
        for _ in range(max(1, args.rounds)):  # alternate, so load changes hit every side
            for name, fn in sides.items():
                out, w, c = _timed(fn, samples)
                outputs[name] = out
                wall[name] += w
                cpu[name] += c
    rounds = max(1, args.rounds)

    def rate(seconds: float) -> float:
        return round(n * rounds / seconds, 3) if seconds > 0 else float("inf")

    levels_ref, iou_ref = [], []
    for sample, (_, case, masks), ref in zip(
        samples, outputs["ours"], outputs["reference"], strict=True
    ):
        image = imageio.load_image(sample.dicom, "image.dcm")
        breast = border_crop(image, params).breast_mask.astype(np.uint8)
        breast_ref = (
            cv2.resize(breast, (args.size, args.size), interpolation=cv2.INTER_NEAREST) == 1
        )
        levels_ref.append(int(np.unique(ref[breast_ref]).size))
        iou_ref += [reference_mask_iou(m, args.size) for m in masks if m.any()]

    report: dict[str, object] = {
        "images": n,
        "image_size": [args.height, args.width],
        "output_size": args.size,
        "threads": 1,
        "rounds": rounds,
        "generate_s": round(gen_s, 2),
        "images_per_s_per_core_wall": {k: rate(v) for k, v in wall.items()},
        "images_per_s_per_core_cpu": {k: rate(v) for k, v in cpu.items()},
        "speed_ratio_ours_over_reference_wall": round(wall["reference"] / wall["ours"], 3),
        "speed_ratio_ours_over_reference_cpu": round(cpu["reference"] / cpu["ours"], 3),
        "quality_ours": _quality(samples, outputs["ours"], params),
        "quality_reference": {
            "grey_levels_in_breast_median": int(statistics.median(levels_ref)),
            "mask_roundtrip_iou_mean": round(statistics.fmean(iou_ref), 4) if iou_ref else None,
        },
    }
    if "full_resolution" in outputs:
        report["speed_ratio_ours_over_full_resolution_cpu"] = round(
            cpu["full_resolution"] / cpu["ours"], 3
        )
        report["quality_full_resolution"] = _quality(samples, outputs["full_resolution"], params)
        report["ours_vs_full_resolution"] = _difference(outputs["ours"], outputs["full_resolution"])
    if not args.no_memory:
        report["peak_memory_per_worker_mib"] = {
            name: {k: round(v, 1) for k, v in peak_memory(samples, args.size, name).items()}
            for name in (
                "ours",
                *(["full_resolution"] if "full_resolution" in outputs else []),
                "reference",
            )
        }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"preprocess benchmark: {n} synthetic DICOMs {args.height}x{args.width} → "
        f"{args.size}x{args.size}, 1 thread, {rounds} rounds (generation {gen_s:.1f} s, not timed)"
    )
    labels = {
        "ours": "ours (fast path)",
        "full_resolution": "ours, full-resolution path (new decode)",
        "reference": "reference (seed 8-bit JPEG recipe)",
    }
    wr, cr = report["images_per_s_per_core_wall"], report["images_per_s_per_core_cpu"]
    for name in wall:
        print(
            f"  {labels[name]:40s}: {cr[name]:7.3f} images/s/core (CPU time), "  # type: ignore[index]
            f"{wr[name]:7.3f} (wall)"  # type: ignore[index]
        )
    print(
        f"  speed ratio ours/reference: {report['speed_ratio_ours_over_reference_cpu']:.2f} "
        f"(CPU time), {report['speed_ratio_ours_over_reference_wall']:.2f} (wall)"
    )
    if "full_resolution" in outputs:
        print(
            f"  speed ratio ours/full resolution: {report['speed_ratio_ours_over_full_resolution_cpu']:.2f} (CPU time)"
        )
    for key in ("quality_ours", "quality_full_resolution", "quality_reference"):
        if key in report:
            print(f"  {key}: " + json.dumps(report[key]))
    if "ours_vs_full_resolution" in report:
        print(
            "  ours vs full resolution (inside the breast): "
            + json.dumps(report["ours_vs_full_resolution"])
        )
    if "peak_memory_per_worker_mib" in report:
        print("  peak memory per worker (MiB): " + json.dumps(report["peak_memory_per_worker_mib"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
