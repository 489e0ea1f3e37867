"""Segmentation quality on the real shared data: today's recipe against the new one, per dataset.

    .venv/bin/python benchmarks/quality.py [--data ../shared/data] [--size 256] [--folds 3]
        [--minutes-per-model 6] [--recipes seed,new,new-no-norm,new-no-intensity] [--json out.json]

The experiment (see benchmarks/README.md):

1. **Data.** CDD-CESM low-energy images (``cdd-cesm-dm``), the INbreast export
   (``inbreast``: 47 full-field images with mass masks) and mini-MIAS masses
   (``mini-mias-masses``, circle masks) from ``--data``, read by the project's adapters and
   preprocessed by the project's preprocessing at ``--size`` (content-addressed cache under
   ``--cache``: a re-run preprocesses nothing).
2. **Cross-validation by patient.** Each dataset is cut into ``--folds`` folds by patient
   (INbreast: by exam, the adapter's patient groups; MIAS: by woman). Fold ``f``'s model trains
   on the other folds of *all three* datasets (15% of their patients per dataset held out for
   early stopping and the threshold) and predicts fold ``f``'s images, which it never saw. Every
   image is thus scored once, out of fold — with 47 INbreast images, that is the only honest way
   to report INbreast (a small fixed test split would swing by chance).
3. **Scoring, per dataset, in original geometry** (``mammoseg.evaluation.evaluate``): mean
   per-image Dice with a 95% patient-bootstrap CI, pooled Dice, sensitivity at 1 and 2 false
   positives per image. Each fold's threshold is chosen on its own validation images; the
   probabilities are remapped piecewise-linearly so that each fold's threshold lands on 0.5
   (monotone within a fold, so the FROC of a fold is unchanged) and all folds are scored at 0.5.
4. **Recipes.** ``seed`` is today's default (0..1 input, geometric + mild brightness/contrast
   augmentation, no test-time augmentation); ``new`` adds per-breast input normalisation
   (a layer of the model), intensity augmentation (gamma, contrast, noise, blur) and mirroring
   test-time augmentation; ``new-no-norm`` and ``new-no-intensity`` remove one ingredient each;
   every recipe trained with TTA is also scored without it (``…/no-tta``), from the same models.
   ``patch`` trains on 256-px patches of 512-px images (lesion-centred, hard negatives, random)
   and predicts with a sliding window.

Every model trains for at most ``--minutes-per-model`` minutes of wall time (early stopping on
the validation Dice may end it sooner), so the whole run costs about
``recipes x folds x minutes`` plus preprocessing and scoring.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

DATASETS = (("cdd-cesm-dm", "cdd-cesm"), ("inbreast", "inbreast"), ("mini-mias-masses", "mini-mias"))


@dataclass(frozen=True)
class Recipe:
    """One training recipe: model, augmentation and inference options."""

    name: str
    input_norm: str = "none"
    intensity_aug: bool = False
    tta: bool = False
    size: int | None = None  # preprocess size; None = --size
    patch_size: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


RECIPES = {
    "seed": Recipe("seed"),
    "new": Recipe("new", input_norm="breast", intensity_aug=True, tta=True),
    "new-no-norm": Recipe("new-no-norm", input_norm="none", intensity_aug=True, tta=True),
    "new-no-intensity": Recipe("new-no-intensity", input_norm="breast", intensity_aug=False, tta=True),
    "patch": Recipe("patch", input_norm="breast", intensity_aug=True, tta=True, size=512, patch_size=256),
}


# --- data -----------------------------------------------------------------------------------


def load_cases(data_root: Path, size: int, cache_url: str) -> tuple[pd.DataFrame, dict[str, int]]:
    """Ingest and preprocess the three datasets; one row per usable image."""
    from mammoseg.adapters.registry import load_dataset
    from mammoseg.casetable import image_table
    from mammoseg.preprocess import MaskRef, PreprocessError, PreprocessParams, preprocess_case
    from mammoseg.storage import open_store

    cache = open_store(cache_url)
    params = PreprocessParams(size=size)
    rows: list[dict[str, Any]] = []
    dropped: dict[str, int] = {}
    for name, folder in DATASETS:
        root = data_root / folder
        source = open_store(root.resolve().as_uri())
        result = load_dataset(name, source, pseudonym_key="quality-benchmark")
        images = image_table(result.lesions)
        bad = 0
        for row in images.itertuples(index=False):
            refs = [MaskRef(key=source.key_from_uri(u)) for u in row.mask_uris]
            refs += [MaskRef(geometry=g) for g in row.mask_geometries]
            try:
                done = preprocess_case(
                    source, source.key_from_uri(row.image_uri), refs, cache, params,
                    laterality=row.laterality if isinstance(row.laterality, str) else None,
                )
            except PreprocessError as exc:
                bad += 1
                print(f"  {name}: case {row.case_id} left out: {str(exc).splitlines()[0]}", file=sys.stderr)
                continue
            rows.append({
                "dataset": name, "case_id": row.case_id, "patient_id": f"{name}/{row.patient_id}",
                "npz_key": done.npz_key, "source_root": root.resolve().as_uri(),
                "image_uri": row.image_uri, "mask_uris": list(row.mask_uris),
                "mask_geometries": list(row.mask_geometries), "n_lesions": int(row.n_lesions),
            })
        dropped[name] = bad + len(result.rejects)
        print(f"  {name}: {sum(r['dataset'] == name for r in rows)} images "
              f"({len(result.rejects)} rejected by the adapter, {bad} at preprocessing)", file=sys.stderr)
    return pd.DataFrame(rows), dropped


def assign_folds(cases: pd.DataFrame, k: int, seed: int) -> pd.Series:
    """Folds by patient, within each dataset (so every fold holds some of each dataset)."""
    from mammoseg.training.split import patient_folds

    parts = [patient_folds(g, k, seed=seed) for _, g in cases.groupby("dataset", sort=True)]
    return pd.concat(parts).loc[cases.index]


def val_patients(train: pd.DataFrame, fraction: float, seed: int) -> set[str]:
    rng = np.random.default_rng(seed)
    chosen: set[str] = set()
    for _, g in train.groupby("dataset", sort=True):
        patients = np.array(sorted(g["patient_id"].unique()), dtype=object)
        n = max(1, round(fraction * len(patients)))
        chosen |= set(patients[rng.permutation(len(patients))[:n]])
    return chosen


# --- training ---------------------------------------------------------------------------------


def _configs(recipe: Recipe, size: int, seed: int, minutes: float) -> tuple[Any, Any]:
    from dataclasses import fields

    from mammoseg.model.unet import UNetConfig
    from mammoseg.params import RetrainParams
    from mammoseg.training.augment import AugmentConfig
    from mammoseg.training.train import TrainConfig

    p = RetrainParams()
    net = recipe.patch_size or size
    unet_kwargs: dict[str, Any] = dict(input_size=net, base_filters=p.base_filters, depth=p.depth,
                                       dropout=p.dropout, batch_norm=p.batch_norm)
    if "input_norm" in {f.name for f in fields(UNetConfig)}:
        unet_kwargs["input_norm"] = recipe.input_norm
    elif recipe.input_norm != "none":
        raise SystemExit("this checkout's UNetConfig has no input_norm: cannot run recipe " + recipe.name)
    aug: dict[str, Any] = dict(rotate_deg=p.aug_rotate_deg, shift=p.aug_shift, zoom=p.aug_zoom,
                               brightness=p.aug_intensity, contrast=p.aug_intensity, seed=seed)
    if recipe.intensity_aug:
        aug.update(brightness=0.1, contrast=0.2, gamma=0.4, noise_std=0.03, blur_sigma=1.5, blur_prob=0.3)
    if recipe.intensity_aug or recipe.input_norm == "breast":
        aug["keep_background"] = True  # the per-breast normalisation counts pixels > 0 as breast
    train_config = TrainConfig(
        epochs=200, batch_size=p.batch_size, learning_rate=p.learning_rate, loss=p.loss,
        focal_alpha=p.focal_alpha, seed=seed, early_stopping_patience=12, lr_patience=5,
        augment=AugmentConfig(**aug),
    )
    return UNetConfig(**unet_kwargs), train_config


def train_fold(store: Any, recipe: Recipe, train: pd.DataFrame, val: pd.DataFrame, size: int,
               seed: int, minutes: float, workdir: Path) -> tuple[Any, int]:
    """Train one fold model within the time budget; returns (best model, epochs run)."""
    from mammoseg.inference import load_model
    from mammoseg.training.dataset import load_samples, make_dataset
    from mammoseg.training.train import train as fit

    model_config, train_config = _configs(recipe, size, seed, minutes)
    if recipe.patch_size:
        from mammoseg.training.patches import PatchConfig, make_patch_dataset

        images, masks = load_samples(store, train)
        breasts = np.stack([_breast(store, k) for k in train["npz_key"]])
        train_ds = make_patch_dataset(images, masks, breasts, PatchConfig(patch_size=recipe.patch_size),
                                      batch_size=train_config.batch_size, augment=train_config.augment, seed=seed)
        val_ds = _patch_val(store, val, recipe.patch_size, train_config.batch_size)
    else:
        train_ds = make_dataset(store, train, batch_size=train_config.batch_size, training=True,
                                augment=train_config.augment, shuffle_seed=seed)
        val_ds = make_dataset(store, val, batch_size=train_config.batch_size, training=False)
    start = time.monotonic()
    budget = minutes * 60.0

    def on_epoch_end(epoch: int, logs: dict) -> bool:
        elapsed = time.monotonic() - start
        print(f"    epoch {epoch:3d}  loss {logs.get('loss', float('nan')):.4f}  "
              f"val Dice {logs.get('val_dice', float('nan')):.3f}  {elapsed / 60:.1f} min", file=sys.stderr)
        per_epoch = elapsed / epoch
        return elapsed + per_epoch > budget

    result = fit(model_config, train_config, train_ds, val_ds, workdir, on_epoch_end=on_epoch_end)
    return load_model(result.best_model_path), result.epochs_run


def _breast(store: Any, key: str) -> np.ndarray:
    from mammoseg.preprocess import read_preprocessed

    return read_preprocessed(store, key).breast_mask.astype(bool)


def _patch_val(store: Any, val: pd.DataFrame, patch: int, batch: int) -> Any:
    """Validation for patch models: the centre-cropped lesion patch of each validation image."""
    import tensorflow as tf

    from mammoseg.training.dataset import load_samples

    images, masks = load_samples(store, val)
    xs, ys = [], []
    for img, m in zip(images, masks):
        ys_, xs_ = np.nonzero(m) if m.any() else (np.array([img.shape[0] // 2]), np.array([img.shape[1] // 2]))
        cy, cx = int(ys_.mean()), int(xs_.mean())
        y0 = int(np.clip(cy - patch // 2, 0, img.shape[0] - patch))
        x0 = int(np.clip(cx - patch // 2, 0, img.shape[1] - patch))
        xs.append(img[y0:y0 + patch, x0:x0 + patch].astype(np.float32) / np.iinfo(img.dtype).max)
        ys.append(m[y0:y0 + patch, x0:x0 + patch].astype(np.float32))
    return tf.data.Dataset.from_tensor_slices((np.stack(xs)[..., None], np.stack(ys)[..., None])).batch(batch)


# --- scoring ----------------------------------------------------------------------------------


def remap(prob: np.ndarray, threshold: float) -> np.ndarray:
    """Piecewise-linear, monotone: [0, t] → [0, 0.5] and [t, 1] → [0.5, 1]."""
    t = float(threshold)
    return np.where(prob < t, prob * (0.5 / t), 0.5 + (prob - t) * (0.5 / (1.0 - t))).astype(np.float32)


class Truths:
    """Original-geometry truth masks and lesions, read once per case."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[np.ndarray, list]] = {}

    def get(self, row: pd.Series, shape: tuple[int, int]) -> tuple[np.ndarray, list]:
        if row["case_id"] not in self._cache:
            from mammoseg.evaluation import lesion_from_geometry
            from mammoseg.imageio import load_mask
            from mammoseg.masks import render_geometry
            from mammoseg.storage import open_store

            source = open_store(row["source_root"])
            truth = np.zeros(shape, dtype=bool)
            lesions: list = []
            for uri in row["mask_uris"]:
                key = source.key_from_uri(uri)
                m = load_mask(source.read_bytes(key), key)
                truth |= m
                lesions.append(m)
            for g in row["mask_geometries"]:
                truth |= render_geometry(g, shape)
                lesions.append(lesion_from_geometry(g, shape))
            self._cache[row["case_id"]] = (truth, lesions)
        return self._cache[row["case_id"]]


def score(store: Any, cases: pd.DataFrame, probs: dict[str, np.ndarray], truths: Truths, n_boot: int) -> dict[str, Any]:
    from mammoseg.evaluation import EvalCase, evaluate
    from mammoseg.preprocess import read_preprocessed

    def stream():
        for _, row in cases.iterrows():
            arrays = read_preprocessed(store, row["npz_key"])
            prob = arrays.transform.to_original(probs[row["case_id"]].astype(np.float32), order="linear")
            truth, lesions = truths.get(row, arrays.transform.original_shape)
            yield EvalCase(case_id=row["case_id"], patient_id=row["patient_id"], prob=np.clip(prob, 0, 1),
                           truth=truth, lesions=lesions, subgroups={"dataset": row["dataset"]})

    r = evaluate(stream(), threshold=0.5, n_boot=n_boot, seed=0)
    return {
        "n_images": r.n_cases, "n_patients": r.n_patients, "dice_mean": r.dice_mean,
        "dice_mean_ci95": r.ci95.get("dice_mean"), "dice_pooled": r.dice_pooled,
        "sens_at_0_5fp": getattr(r.detection, "sensitivity_at_0_5fp", float("nan")),
        "sens_at_1fp": r.detection.sensitivity_at_1fp, "sens_at_2fp": r.detection.sensitivity_at_2fp,
        "fp_per_image_at_threshold": r.detection.fp_per_image_at_threshold,
        "n_lesions": r.detection.n_lesions,
    }


# --- main -------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    from mammoseg.evaluation import choose_threshold
    from mammoseg.inference import Predictor
    from mammoseg.plan import ModelPlan
    from mammoseg.preprocess import PreprocessParams
    from mammoseg.storage import open_store
    from mammoseg.training.dataset import load_samples

    recipes = [RECIPES[r] for r in args.recipes.split(",")]
    cache_url = Path(args.cache).resolve().as_uri()
    store = open_store(cache_url)
    t0 = time.monotonic()
    sizes = sorted({r.size or args.size for r in recipes})
    data: dict[int, pd.DataFrame] = {}
    for size in sizes:
        print(f"preprocessing at {size} px …", file=sys.stderr)
        data[size], dropped = load_cases(Path(args.data), size, cache_url)
    prep_minutes = (time.monotonic() - t0) / 60
    truths = Truths()
    results: dict[str, Any] = {"rows": [], "settings": vars(args), "preprocess_minutes": prep_minutes}
    for recipe in recipes:
        size = recipe.size or args.size
        cases = data[size].copy()
        cases["fold"] = assign_folds(cases, args.folds, args.seed)
        variants = {recipe.name: recipe.tta} | ({f"{recipe.name}/no-tta": False} if recipe.tta else {})
        oof: dict[str, dict[str, np.ndarray]] = {v: {} for v in variants}
        epochs = []
        t_recipe = time.monotonic()
        for fold in range(args.folds):
            test = cases[cases["fold"] == fold]
            rest = cases[cases["fold"] != fold]
            vp = val_patients(rest, 0.15, args.seed + fold)
            train, val = rest[~rest["patient_id"].isin(vp)], rest[rest["patient_id"].isin(vp)]
            print(f"{recipe.name} fold {fold}: train {len(train)}, val {len(val)}, test {len(test)} images",
                  file=sys.stderr)
            with tempfile.TemporaryDirectory() as tmp:
                model, n_epochs = train_fold(store, recipe, train, val, size, args.seed + fold,
                                             args.minutes_per_model, Path(tmp))
            epochs.append(n_epochs)
            val_images, val_masks = load_samples(store, val)
            test_images, _ = load_samples(store, test)
            for variant, tta in variants.items():
                plan = ModelPlan(preprocess=PreprocessParams(size=size), patch_size=recipe.patch_size, tta_mirror=tta)
                predictor = Predictor(model, plan)
                thr = float(choose_threshold(list(predictor.predict_preprocessed(val_images)), list(val_masks.astype(bool))))
                for cid, p in zip(test["case_id"], predictor.predict_preprocessed(test_images)):
                    oof[variant][cid] = remap(p, thr).astype(np.float16)
        minutes = (time.monotonic() - t_recipe) / 60
        for variant in variants:
            for name, _ in DATASETS:
                subset = cases[cases["dataset"] == name]
                row = {"recipe": variant, "dataset": name, "epochs": epochs, "recipe_minutes": minutes}
                row |= score(store, subset, oof[variant], truths, args.n_boot)
                results["rows"].append(row)
                print(_line(row), file=sys.stderr)
    results["total_minutes"] = (time.monotonic() - t0) / 60
    return results


def _fmt(v: Any) -> str:
    return "—" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.3f}"


def _line(r: dict[str, Any]) -> str:
    ci = r.get("dice_mean_ci95") or [None, None]
    return (f"| {r['recipe']} | {r['dataset']} | {r['n_images']} ({r['n_patients']}) | {_fmt(r['dice_mean'])} "
            f"[{_fmt(ci[0])}, {_fmt(ci[1])}] | {_fmt(r['dice_pooled'])} | {_fmt(r['sens_at_1fp'])} | "
            f"{_fmt(r['sens_at_2fp'])} | {r['n_lesions']} |")


def table(results: dict[str, Any]) -> str:
    head = ("| recipe | dataset (out-of-fold) | images (patients) | per-image Dice [95% CI] | pooled Dice | "
            "sens @1 FP/img | sens @2 FP/img | lesions |\n|---|---|---|---|---|---|---|---|")
    return "\n".join([head, *(_line(r) for r in results["rows"])])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--cache", default=str(REPO / ".mammoseg" / "bench-cache"))
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--minutes-per-model", type=float, default=6.0)
    ap.add_argument("--recipes", default="seed,new,new-no-norm,new-no-intensity")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    unknown = [r for r in args.recipes.split(",") if r not in RECIPES]
    if unknown:
        ap.error(f"unknown recipe(s) {unknown}; choose from {sorted(RECIPES)}")
    if not (Path(args.data) / "cdd-cesm").is_dir():
        ap.error(f"no real data under {args.data} (expected cdd-cesm/, inbreast/, mini-mias/)")
    results = run(args)
    print(table(results))
    print(f"\ntotal {results['total_minutes']:.1f} min (preprocessing {results['preprocess_minutes']:.1f} min)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    main()
