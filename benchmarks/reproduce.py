"""Does a published model's card hold when the model is scored again? Real data, the user's commands.

    .venv/bin/python benchmarks/reproduce.py [--data ../shared/data] [--store .mammoseg/reproduce]
        [--epochs 40] [--size 256] [--model URI] [--json out.json]

1. **Train and publish** (skipped with ``--model``): ``mammoseg retrain`` on CDD-CESM low-energy
   images and INbreast from ``--data``, with mini-MIAS masses held out (the README's "several
   datasets in one run" command), into a store of its own.
2. **Evaluate**: ``mammoseg evaluate --dataset mini-mias-masses`` on the published model (the
   store's champion, or ``--model``): a fresh Prefect run that preprocesses the source again with
   the model's plan and scores it.
3. **Predict**: ``mammoseg predict`` on the same source images (one process, the model loaded
   once); each written mask, in the image's own geometry, is scored against the dataset's truth.

It prints the model card's held-out figures beside evaluate's (per-image Dice and its 95% CI,
IoU, pooled Dice, sensitivity at 1 and 2 FP/image, images) and predict's per-image mean Dice,
and the largest absolute difference. Every command runs as a user would run it (a subprocess
of the ``mammoseg`` CLI); nothing from the images' headers is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

HELDOUT = "mini-mias-masses"


def cli(*args: str) -> dict[str, Any]:
    """Run ``mammoseg ARGS --json`` and return its JSON (stderr passes through)."""
    out = subprocess.run([sys.executable, "-m", "mammoseg.cli", *args, "--json"], cwd=REPO,
                         stdout=subprocess.PIPE, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"mammoseg {args[0]} exited with {out.returncode}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def card_figures(store_url: str, version: str) -> dict[str, Any]:
    """The held-out block of the published version's metrics.json (what MODEL_CARD.md prints)."""
    from mammoseg.publish import read_metrics
    from mammoseg.settings import get_settings
    from mammoseg.storage import open_store

    return read_metrics(open_store(store_url, get_settings()), version)["heldout"][HELDOUT]


def predict_dice(model_uri: str, source: Path, out: Path) -> list[float]:
    """``mammoseg predict`` on the held-out set's images; the per-image Dice of its masks."""
    import cv2

    from mammoseg.adapters.registry import load_dataset
    from mammoseg.casetable import image_table
    from mammoseg.evaluation import dice
    from mammoseg.evaluation.truth import read_truth
    from mammoseg.prediction import output_names
    from mammoseg.settings import get_settings, require_pseudonym_key
    from mammoseg.storage import open_store

    settings = get_settings()
    store = open_store(source.resolve().as_uri(), settings)
    cases = image_table(load_dataset(HELDOUT, store, pseudonym_key=require_pseudonym_key(settings)).lesions)
    paths = [source / store.key_from_uri(u) for u in cases["image_uri"]]
    images = [a for p in paths for a in ("--image", str(p))]
    predicted = subprocess.run([sys.executable, "-m", "mammoseg.cli", "predict", "--model", model_uri,
                                "--out", str(out), *images], cwd=REPO, stdout=subprocess.DEVNULL, check=False)
    if predicted.returncode != 0:
        raise SystemExit(f"mammoseg predict exited with {predicted.returncode}")
    scores = []
    for row, name in zip(cases.itertuples(index=False), output_names(paths)):
        mask = cv2.imread(str(out / f"{name}_mask.png"), cv2.IMREAD_UNCHANGED) > 0
        truth, _ = read_truth(store, row.mask_uris, row.mask_geometries, mask.shape)
        scores.append(float(dice(mask, truth)))
    return scores


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--store", type=Path, default=REPO / ".mammoseg" / "reproduce")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--model", help="A published model's URI (skip training; its store is --store).")
    ap.add_argument("--json", type=Path, help="Also write the figures here.")
    a = ap.parse_args(argv)
    if not (a.data / "mini-mias").is_dir():
        raise SystemExit(f"no shared data under {a.data} (needs cdd-cesm/, inbreast/, mini-mias/)")
    os.environ.setdefault("MAMMOSEG_PSEUDONYM_KEY", "reproduce-benchmark-key")
    store = ["--store", a.store.resolve().as_uri()]
    mias = str((a.data / "mini-mias").resolve())

    if a.model is None:
        trained = cli("retrain", "--dataset", f"cdd-cesm-dm={(a.data / 'cdd-cesm').resolve()}",
                      "--dataset", f"inbreast={(a.data / 'inbreast').resolve()}", "--heldout", f"{HELDOUT}={mias}",
                      "--primary", HELDOUT, "--size", str(a.size), "--epochs", str(a.epochs), *store)
        model_uri, version = trained["model_uri"], trained["version"]
        print(f"trained and published {version} ({trained.get('epochs_run')} epochs)", flush=True)
    else:
        from mammoseg.prediction import model_version

        model_uri, version = a.model, model_version(a.model)
        if version is None:
            raise SystemExit(f"--model {a.model} is not a published models/versions/<v>/model.keras")
    card = card_figures(a.store.resolve().as_uri(), version)

    evaluated = cli("evaluate", "--dataset", HELDOUT, "--source", mias, "--model", model_uri, *store)["metrics"]
    with tempfile.TemporaryDirectory() as tmp:
        per_image = predict_dice(model_uri, a.data / "mini-mias", Path(tmp))
    predicted_mean = sum(per_image) / len(per_image)

    def row(m: dict[str, Any]) -> dict[str, float]:
        det = m.get("detection") or {}
        ci = m["ci95"]["dice_mean"]
        return {"dice_mean": m["dice_mean"], "ci_low": ci[0], "ci_high": ci[1], "iou_mean": m["iou_mean"],
                "dice_pooled": m["dice_pooled"], "sens_1fp": det.get("sensitivity_at_1fp"), "sens_2fp": det.get("sensitivity_at_2fp"),
                "n_cases": m["n_cases"]}

    table = {"model card": row(card), "mammoseg evaluate": row(evaluated),
             "mammoseg predict": {"dice_mean": predicted_mean, "n_cases": len(per_image)}}
    print(f"\n{HELDOUT} (held out; per-image Dice, empty truth and prediction = 1), model {version}")
    print(f"{'':<18} {'Dice':>6} {'95% CI':>16} {'IoU':>6} {'pooled':>7} {'s@1FP':>6} {'s@2FP':>6} {'images':>6}")
    def fmt(r: dict[str, Any], k: str) -> str:
        v = r.get(k)
        return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)

    for name, r in table.items():
        ci = f"[{fmt(r, 'ci_low')}, {fmt(r, 'ci_high')}]" if "ci_low" in r else "-"
        rest = " ".join(f"{fmt(r, k):>{w}}" for k, w in [("iou_mean", 6), ("dice_pooled", 7), ("sens_1fp", 6),
                                                         ("sens_2fp", 6), ("n_cases", 6)])
        print(f"{name:<18} {fmt(r, 'dice_mean'):>6} {ci:>16} {rest}")
    diffs = [abs(table["model card"][k] - table["mammoseg evaluate"][k]) for k in table["model card"]
             if table["model card"][k] is not None]
    diffs.append(abs(table["model card"]["dice_mean"] - predicted_mean))
    print(f"largest absolute difference from the card: {max(diffs):.2e}")
    if a.json:
        a.json.write_text(json.dumps({"model_uri": model_uri, "version": version, "figures": table}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
