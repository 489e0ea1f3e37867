"""Does `mammoseg demo` learn, from seed to seed? The demo's flow, several seeds, one table.

    .venv/bin/python benchmarks/demo.py [--seeds 0,1,2] [--set KEY=VALUE ...] [--data KEY=VALUE ...]
        [--lesion-free N] [--store DIR] [--json out.json]

Runs :func:`flows.demo.demo_flow` (synthetic CBIS-DDSM-shaped training set, MIAS-format held-out
set, the whole retrain flow) once per seed, each into a store of its own, with the demo's recipe
(:data:`flows.demo.DEMO_OVERRIDES`) changed by ``--set`` (``RetrainParams`` fields, JSON values:
``--set folds=1 --set epochs=80`` is the recipe before two fold models) and its synthetic data by
``--data`` (:class:`flows.demo.DemoData` fields). Per seed it prints the held-out (cross-dataset)
per-image Dice with its 95 % CI, that of lesion-free images, lesion sensitivity at 1 FP/image,
false positives per image at the threshold, the internal-test (in-domain) Dice, epochs and wall
time; then the mean over seeds. Seeds run one after the other, so wall times are comparable on
an otherwise idle machine.

``--lesion-free N`` then scores each seed's published model on ``N`` fresh lesion-free MLO
breasts per BI-RADS density (1-4) in each format of the run's :class:`~flows.demo.DemoData`
(by default CBIS-shaped 10-bit 320 x 200, MIAS-format 8-bit 256 x 256; the same drawn anatomy in both): how many come out clean (no pixel above the
model's threshold once its plan's post-processing has dropped what it drops) and false-positive
components per image. The held-out set has 6 lesion-free
images, each worth 1/14 of its Dice; this measures the same failure on 8 x N images.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flows.demo import DemoData

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))


def lesion_free_probe(
    model_uri: str, n: int, data: DemoData, seed: int = 11
) -> dict[str, dict[int, tuple[int, float]]]:
    """``{format: {density: (clean images of n, false-positive components per image)}}`` of the
    model at ``model_uri`` (applied with its plan) on lesion-free synthetic MLO breasts, drawn
    in the two formats of the run's ``data`` (its CBIS-shaped size and bit depth, its MIAS size)."""
    import cv2
    import numpy as np

    from mammoseg.evaluation import segment
    from mammoseg.inference import load_predictor
    from mammoseg.preprocess import preprocess_arrays
    from mammoseg.settings import get_settings
    from mammoseg.synth import anatomy as A

    predictor = load_predictor(model_uri, get_settings())
    plan = predictor.plan
    shapes = {"cbis": (data.height, data.width), "mias": (data.mias_size, data.mias_size)}
    out: dict[str, dict[int, tuple[int, float]]] = {k: {} for k in shapes}
    for density in (1, 2, 3, 4):
        counts: dict[str, list[int]] = {k: [] for k in shapes}
        for i in range(n):
            for fmt, (h, w) in shapes.items():
                rng = np.random.default_rng([seed, density, i])  # the same anatomy in both formats
                layout = A.random_layout(rng, h, w, "MLO", "left" if i % 2 else "right")
                drawn = A.draw_anatomy(rng, layout, density).image
                image = A.to_uint8(drawn) if fmt == "mias" else A.to_uint16(drawn, 2**data.bits)
                case = preprocess_arrays(image, [], plan.preprocess)
                prob = predictor.predict_preprocessed(case.image, breast_masks=case.breast_mask)
                mask = segment(np.clip(prob, 0, 1), plan.threshold, plan.keep_components, plan.min_score)
                n_comp, _ = cv2.connectedComponents(mask.astype(np.uint8))
                counts[fmt].append(n_comp - 1)
        for fmt, c in counts.items():
            out[fmt][density] = (sum(k == 0 for k in c), float(np.mean(c)))
    return out


def one_seed(
    seed: int, store: Path, overrides: dict[str, Any], data: dict[str, Any], lesion_free: int = 0
) -> dict[str, Any]:
    """The demo flow on ``seed``; its held-out and internal-test figures and wall time."""
    from flows.demo import DEMO_DATA, demo_flow, demo_params
    from mammoseg.layout import new_run_id
    from mammoseg.storage import open_store

    demo_data = replace(DEMO_DATA, **data)
    start = time.monotonic()
    result = demo_flow(store_url=store.resolve().as_uri(), run_id=new_run_id(), seed=seed,
                       params=demo_params(seed=seed, **overrides), data=demo_data)
    wall = time.monotonic() - start
    store = open_store(result["store_url"])
    by_kind = {e["kind"]: json.loads(store.read_bytes(store.key_from_uri(e["metrics_uri"])))
               for e in result["evaluations"]}  # each set's whole metrics.json (subgroups included)
    held, internal = by_kind["heldout"], by_kind["internal_test"]
    normal = [g for g in held["subgroups"] if g["group"] == "lesion_type" and g["value"] == "normal"]
    return {
        "seed": seed,
        "heldout_dice": held["dice_mean"],
        "heldout_ci": held["ci95"]["dice_mean"],
        "heldout_images": held["n_cases"],
        "lesion_free_dice": normal[0]["dice_mean"] if normal else None,
        "lesion_free_images": normal[0]["n"] if normal else 0,
        "sens_1fp": held["detection"]["sensitivity_at_1fp"],
        "fp_per_image": held["detection"]["fp_per_image_at_threshold"],
        "threshold": held["threshold"],
        "min_score": (held.get("plan") or {}).get("min_score"),
        "keep_components": (held.get("plan") or {}).get("keep_components"),
        "internal_dice": internal["dice_mean"],
        "epochs": result["epochs_run"],
        "wall_s": wall,
        "lesion_free_probe": lesion_free_probe(result["model_uri"], lesion_free, demo_data) if lesion_free else None,
    }


def _opt(v: Any) -> str:
    """A post-processing filter in the table: '-' when none."""
    return "-" if v is None else f"{v:g}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--data", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--lesion-free", type=int, default=0, metavar="N",
                    help="Also score each model on N lesion-free synthetic breasts per density and format.")
    ap.add_argument("--store", type=Path, default=REPO / ".mammoseg" / "bench-demo")
    ap.add_argument("--json", type=Path, help="Also write the figures here.")
    a = ap.parse_args(argv)
    os.environ.setdefault("MAMMOSEG_PSEUDONYM_KEY", "demo-benchmark-key")  # synthetic data only
    from dataclasses import fields

    from flows.demo import DemoData
    from mammoseg.cli import _param_overrides, key_value_overrides

    try:
        overrides = _param_overrides(a.overrides)
        data = key_value_overrides(a.data, [f.name for f in fields(DemoData)], "DemoData field (flows/demo.py)", "--data")
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    rows = [one_seed(int(s), a.store / f"seed-{s}", overrides, data, a.lesion_free) for s in a.seeds.split(",")]

    print(f"\nmammoseg demo, recipe overrides {overrides or 'none'}, data {data or 'as DEMO_DATA'}")
    print("held out = the MIAS-format set (cross-dataset); per-image Dice, a lesion-free image scores 1 "
          "only with no predicted pixel")
    print(f"{'seed':>4} {'held-out Dice':>13} {'95% CI':>15} {'lesion-free':>11} {'s@1FP':>6} {'FP/img':>6} "
          f"{'thr':>5} {'cut':>5} {'keep':>4} {'in-domain':>9} {'epochs':>6} {'wall s':>6}")
    for r in rows:
        free = "-" if r["lesion_free_dice"] is None else f"{r['lesion_free_dice']:.2f} of {r['lesion_free_images']}"
        ci = f"[{r['heldout_ci'][0]:.2f}, {r['heldout_ci'][1]:.2f}]"
        print(f"{r['seed']:>4} {r['heldout_dice']:>13.3f} {ci:>15} {free:>11} {r['sens_1fp']:>6.2f} "
              f"{r['fp_per_image']:>6.2f} {r['threshold']:>5.2f} {_opt(r['min_score']):>5} {_opt(r['keep_components']):>4} "
              f"{r['internal_dice']:>9.3f} {r['epochs']:>6} "
              f"{r['wall_s']:>6.0f}")
    mean = sum(r["heldout_dice"] for r in rows) / len(rows)
    print(f"mean held-out Dice over {len(rows)} seeds: {mean:.3f}; "
          f"mean wall {sum(r['wall_s'] for r in rows) / len(rows):.0f} s")
    if a.lesion_free:
        print(f"\nlesion-free breasts, {a.lesion_free} per density and format: clean images (FP components per image)")
        print(f"{'seed':>4} {'format':>6} " + " ".join(f"{'density ' + str(d):>14}" for d in (1, 2, 3, 4)) + f" {'clean':>9}")
        for r in rows:
            for fmt, by_density in r["lesion_free_probe"].items():
                cells = " ".join(f"{c:>4} ({fp:4.2f})".rjust(14) for c, fp in by_density.values())
                clean = sum(c for c, _ in by_density.values())
                print(f"{r['seed']:>4} {fmt:>6} {cells} {clean:>4} of {4 * a.lesion_free}")
    if a.json:
        a.json.write_text(json.dumps({"overrides": overrides, "data": data, "seeds": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
