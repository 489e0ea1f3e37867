"""What the out-of-fold maps saved by ``quality.py --save`` say, without training again.

    .venv/bin/python benchmarks/oof_maps.py SAVE_DIR [SAVE_DIR ...] [--cache .mammoseg/bench-cache]
        [--variant all-components] [--relative 0.7,0.8,0.9] [--edge-px 10]

For each saved run (its ``oof-<recipe>-<variant>.npz``) and for the average of all the runs given
(an ensemble of their fold models), per dataset: the mean per-image Dice on the preprocessed grid
(every component kept; the maps are saved centred on their fold's threshold, so 0.5 is that
threshold; both masks empty scores 1), the same with each component cut at a share of its peak
probability (``--relative``), and the share of false-positive pixels within ``--edge-px`` of
the breast edge or outside the breast, beside the share of truth pixels there.
Read-only: the maps and the cached arrays of the run (``--cache``, as ``quality.py``'s).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from mammoseg.evaluation.metrics import dice
from mammoseg.preprocess import read_preprocessed
from mammoseg.storage import open_store


def relative_cut(prob: np.ndarray, share: float) -> np.ndarray:
    """``prob >= 0.5``, each 8-connected component then cut to its pixels at ``share`` of its peak."""
    mask = prob >= 0.5
    n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    out = np.zeros_like(mask)
    for i in range(1, n):
        part = labels == i
        out |= part & (prob >= share * prob[part].max())
    return out


def near_edge(breast: np.ndarray, px: int) -> np.ndarray:
    """Pixels within ``px`` of the breast edge, or outside the breast."""
    kernel = np.ones((2 * px + 1, 2 * px + 1), np.uint8)
    return cv2.erode((breast > 0).astype(np.uint8), kernel) == 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="folders written by quality.py --save")
    ap.add_argument("--cache", default=".mammoseg/bench-cache")
    ap.add_argument("--variant", default="all-components", help="oof-<recipe>-<variant>.npz ('' for the recipe's own)")
    ap.add_argument("--relative", default="0.7,0.8,0.9")
    ap.add_argument("--edge-px", type=int, default=10)
    args = ap.parse_args()

    suffix = f"-{args.variant}" if args.variant else ""
    maps = {}
    for run in args.runs:
        found = [p for p in run.glob(f"oof-*{suffix}.npz") if suffix or p.stem.count("-") <= 2]
        if len(found) != 1:
            raise SystemExit(f"{run}: expected one oof-*{suffix}.npz, found {[p.name for p in found]}")
        with np.load(found[0]) as z:
            maps[run.name] = {k: z[k].astype(np.float32) for k in z.files}
    cases = pd.read_csv(args.runs[0] / "cases.csv")
    store = open_store(Path(args.cache).resolve().as_uri())
    arrays = {r.case_id: read_preprocessed(store, r.npz_key) for r in cases.itertuples()}
    sources = dict(maps)
    if len(maps) > 1:
        sources["ensemble"] = {c: np.mean([m[c] for m in maps.values()], axis=0) for c in cases["case_id"]}
    shares = [0.0] + [float(s) for s in args.relative.split(",") if s]

    print(f"| maps | cut at share of peak | {' | '.join(sorted(cases['dataset'].unique()))} |")
    for name, probs in sources.items():
        for share in shares:
            cells = []
            for _, subset in cases.groupby("dataset", sort=True):
                scores = []
                for cid in subset["case_id"]:
                    truth = arrays[cid].mask > 0
                    pred = relative_cut(probs[cid], share) if share else probs[cid] >= 0.5
                    scores.append(dice(pred, truth))
                cells.append(f"{np.mean(scores):.3f}")
            print(f"| {name} | {share or '—'} | {' | '.join(cells)} |")
    print(f"\nfalse-positive pixels (truth pixels) within {args.edge_px} px of the breast edge, at 0.5:")
    for name, probs in sources.items():
        cells = []
        for ds, subset in cases.groupby("dataset", sort=True):
            fp = fp_edge = truth_n = truth_edge = 0
            for cid in subset["case_id"]:
                a = arrays[cid]
                truth, pred, edge = a.mask > 0, probs[cid] >= 0.5, near_edge(a.breast_mask, args.edge_px)
                fp += np.count_nonzero(pred & ~truth)
                fp_edge += np.count_nonzero(pred & ~truth & edge)
                truth_n += np.count_nonzero(truth)
                truth_edge += np.count_nonzero(truth & edge)
            cells.append(f"{ds} {fp_edge / max(fp, 1):.2f} ({truth_edge / max(truth_n, 1):.2f})")
        print(f"  {name}: " + "; ".join(cells))


if __name__ == "__main__":
    main()
