"""Segmentation quality on the real shared data: today's recipe against the new one, per dataset.

    .venv/bin/python benchmarks/quality.py [--data ../shared/data] [--size 256] [--folds 3]
        [--minutes-per-model 6] [--recipes seed,new] [--json out.json]

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
   positives per image. Each fold's threshold (and, when the recipe's ``postprocess`` is
   ``choose``, the score cut-off below which a component is dropped and how many of the
   highest-scoring components the mask keeps) is chosen on its own validation images; the
   probabilities are remapped piecewise-linearly so that each fold's threshold lands on 0.5
   (monotone within a fold, so the FROC of a fold is unchanged; the cut-off is remapped with
   them) and all folds are scored at 0.5, each image's mask with its fold's post-processing.
4. **Recipes.** ``seed`` is the recipe before issue 7 (16 x 4 U-Net, 0..1 input, geometric + mild
   brightness/contrast augmentation, no test-time augmentation); ``new`` is today's
   ``RetrainParams`` defaults: an 8-filter, 5-level U-Net (the parameters of the 16 x 4 one, a
   receptive field twice as wide, 2.4x its training images/s on a CPU), per-breast input
   normalisation (a layer of the model), intensity augmentation (gamma, contrast, noise, blur),
   mirroring test-time augmentation and pectoral suppression. Ablations: ``new-16x4`` (the former
   network), ``new-no-norm``, ``new-no-intensity``; every recipe trained with TTA is also scored
   without it (``…/no-tta``), and every recipe that chooses its post-processing also without the
   score cut-off (``…/top-components``: only how many components are kept is chosen, the rule
   before stop 25) and with every component kept and the threshold chosen alone
   (``…/all-components``), from the same models. ``patch`` trains on 256-px patches of 512-px
   images and ``patch128`` on 128-px patches of the 256-px images (lesion-centred, hard
   negatives, random), both predicted with a sliding window; ``new-balanced`` draws the datasets
   in proportion to the square root of their sizes (``dataset_balance=0.5``); ``new-poly``
   replaces the plateau LR halving by nnU-Net's poly schedule over the time budget
   (``lr_schedule=poly``: the rate decays to ~0 as the budget runs out); ``new-ds`` adds deep
   supervision (``deep_supervision=2``: auxiliary heads at 1/2 and 1/4 of the input side);
   ``new-geo`` widens the geometric augmentation (rotation 20 degrees, zoom 0.7-1.3, shift 10%);
   ``new-robust`` normalises each breast on its median and interquartile range
   (``input_norm=breast_robust``) instead of its mean and std.

Every model trains for at most ``--minutes-per-model`` minutes (early stopping on the validation
Dice may end it sooner) of wall time, or of this process's CPU time with ``--budget-clock cpu``
(fair between recipes on a shared machine), so the whole run costs about
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
    """One training recipe: :class:`~mammoseg.params.RetrainParams` overrides (the pipeline's own
    knobs, so a recipe can be run by ``mammoseg retrain`` as it is measured here)."""

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)


#: The recipe before issue 7 (the former RetrainParams defaults), pinned here.
SEED = {"base_filters": 16, "depth": 4, "input_norm": "none", "aug_intensity": 0.05, "aug_gamma": 0.0, "aug_noise": 0.0, "aug_blur": 0.0,
        "tta_mirror": False, "suppress_pectoral": False, "postprocess": "none"}
#: What the new recipe changes (today's RetrainParams defaults).
NEW = {"base_filters": 8, "depth": 5, "norm": "instance", "input_norm": "breast", "aug_intensity": 0.15, "aug_gamma": 0.4, "aug_noise": 0.03, "aug_blur": 1.5,
       "tta_mirror": True, "suppress_pectoral": True, "postprocess": "choose"}

RECIPES = {
    "seed": Recipe("seed", SEED),
    "new": Recipe("new", NEW),
    "new-no-norm": Recipe("new-no-norm", NEW | {"input_norm": "none"}),
    "new-no-intensity": Recipe("new-no-intensity", NEW | {"aug_intensity": 0.05, "aug_gamma": 0.0,
                                                          "aug_noise": 0.0, "aug_blur": 0.0}),
    "patch": Recipe("patch", NEW | {"size": 512, "patch_size": 256}),
    # the former network of 'new' (16 base filters, 4 levels): what the 8 x 5 network gains
    "new-16x4": Recipe("new-16x4", NEW | {"base_filters": 16, "depth": 4}),
    "new-balanced": Recipe("new-balanced", NEW | {"dataset_balance": 0.5}),
    "new-poly": Recipe("new-poly", NEW | {"lr_schedule": "poly"}),
    "new-ds": Recipe("new-ds", NEW | {"deep_supervision": 2}),
    # batch normalisation: 'new' before run 9 (instance normalisation became the default)
    "new-bn": Recipe("new-bn", NEW | {"norm": "batch"}),
    "new-gn": Recipe("new-gn", NEW | {"norm": "group"}),
    # 128-px patches of the 256-px images, half of them lesion-centred: 4x the lesions per pixel
    # computed, predicted with a sliding window
    "patch128": Recipe("patch128", NEW | {"patch_size": 128}),
    # stronger geometric augmentation (nnU-Net-like scale range): rotation 20 deg, zoom 0.7-1.3,
    # shift 10% -- the breast's size in a 256-px image differs from one dataset (scanner) to another
    "new-geo": Recipe("new-geo", NEW | {"aug_rotate_deg": 20.0, "aug_zoom": 0.3, "aug_shift": 0.1}),
    # the per-breast input normalisation on the median and IQR: a large bright lesion no longer
    # shifts its image's scale (lesion-free images looked brighter to the model than the rest)
    "new-robust": Recipe("new-robust", NEW | {"input_norm": "breast_robust"}),
}


def recipe_params(recipe: Recipe, args: argparse.Namespace, seed: int) -> Any:
    """The recipe's :class:`RetrainParams` for this benchmark run (its size, time budget, seed)."""
    from mammoseg.params import RetrainParams

    return RetrainParams(**({"size": args.size, "epochs": 200, "early_stopping_patience": 12, "lr_patience": 5,
                             "max_train_minutes": args.minutes_per_model, "budget_clock": args.budget_clock,
                             "seed": seed} | recipe.overrides))


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


# --- training: the pipeline's own recipe code (mammoseg.training.recipe) --------------------


def training_settings(precision: str | None) -> Any:
    """The machine settings the fold models train with: ``--precision`` when given, else
    ``MAMMOSEG_TRAIN_PRECISION``, else :class:`~mammoseg.settings.Settings`' default."""
    from mammoseg.settings import Settings

    return Settings(**({"train_precision": precision} if precision else {}))


def train_fold(store: Any, params: Any, plan: Any, train: pd.DataFrame, val: pd.DataFrame,
               workdir: Path, settings: Any = None) -> tuple[Any, int]:
    """Train one fold model within the time budget; returns (best model, epochs run).
    ``settings``: the machine's training precision (``mammoseg.settings.Settings``; None: its defaults)."""
    from mammoseg.training.recipe import fit_one

    def on_epoch_end(epoch: int, logs: dict) -> None:
        print(f"    epoch {epoch:3d}  loss {logs.get('loss', float('nan')):.4f}  "
              f"val Dice {logs.get('val_dice', float('nan')):.3f}", file=sys.stderr)

    model, result = fit_one(store, train, val, params, plan, workdir, on_epoch_end, settings)
    return model, result.epochs_run


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
            from mammoseg.evaluation.truth import read_truth
            from mammoseg.storage import open_store

            self._cache[row["case_id"]] = read_truth(
                open_store(row["source_root"]), row["mask_uris"], row["mask_geometries"], shape
            )
        return self._cache[row["case_id"]]


def mask_rule(saved: Any) -> tuple[int | None, float | None]:
    """``(keep_components, min_score)`` of a case's saved post-processing: a dict with both
    (min_score on the remapped scale), or a bare ``keep_components`` (saved before stop 25)."""
    if isinstance(saved, dict):
        return saved.get("keep_components"), saved.get("min_score")
    return saved, None


def score(store: Any, cases: pd.DataFrame, probs: dict[str, np.ndarray], truths: Truths, n_boot: int,
          kept: dict[str, Any]) -> dict[str, Any]:
    """Score remapped out-of-fold maps (threshold 0.5); ``kept``: each case's fold's
    post-processing (:func:`mask_rule`; the mask scored for Dice)."""
    from mammoseg.evaluation import EvalCase, evaluate, segment
    from mammoseg.plan import ModelPlan
    from mammoseg.preprocess import read_preprocessed

    def stream():
        for _, row in cases.iterrows():
            arrays = read_preprocessed(store, row["npz_key"])
            prob = np.clip(arrays.transform.to_original(probs[row["case_id"]].astype(np.float32), order="linear"), 0, 1)
            truth, lesions = truths.get(row, arrays.transform.original_shape)
            yield EvalCase(case_id=row["case_id"], patient_id=row["patient_id"], prob=prob,
                           truth=truth, lesions=lesions, subgroups={"dataset": row["dataset"]},
                           pred=segment(prob, 0.5, *mask_rule(kept.get(row["case_id"]))))

    r = evaluate(stream(), threshold=0.5, n_boot=n_boot, seed=0, top_k=ModelPlan().top_k)
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
    from mammoseg.evaluation import choose_postprocessing
    from mammoseg.inference import Predictor
    from mammoseg.plan import ModelPlan
    from mammoseg.preprocess import PreprocessParams
    from mammoseg.storage import open_store
    from mammoseg.training.dataset import load_samples
    from mammoseg.training.recipe import postprocess_candidates

    settings = training_settings(args.precision)
    recipes = [RECIPES[r] for r in args.recipes.split(",")]
    cache_url = Path(args.cache).resolve().as_uri()
    store = open_store(cache_url)
    t0 = time.monotonic()
    sizes = sorted({recipe_params(r, args, 0).size for r in recipes})
    data: dict[int, pd.DataFrame] = {}
    left_out: dict[str, dict[str, int]] = {}
    for size in sizes:
        print(f"preprocessing at {size} px …", file=sys.stderr)
        data[size], left_out[str(size)] = load_cases(Path(args.data), size, cache_url)
    prep_minutes = (time.monotonic() - t0) / 60
    truths = Truths()
    results: dict[str, Any] = {"rows": [], "settings": vars(args), "preprocess_minutes": prep_minutes,
                               "left_out_by_adapter_or_preprocessing": left_out}
    for recipe in recipes:
        params = recipe_params(recipe, args, args.seed)
        size = params.size
        cases = data[size].copy()
        cases["fold"] = assign_folds(cases, args.folds, args.seed)
        tta, mode = params.tta_mirror, params.postprocess
        # variants scored from the same fold models: (mirroring TTA, pectoral suppression,
        # the RetrainParams.postprocess mode whose filters are chosen on validation with the threshold)
        variants = {recipe.name: (tta, params.suppress_pectoral, mode)}
        if tta:
            variants[f"{recipe.name}/no-tta"] = (False, params.suppress_pectoral, mode)
        if mode == "choose":
            variants[f"{recipe.name}/top-components"] = (tta, params.suppress_pectoral, "top_components")
        if mode != "none":
            variants[f"{recipe.name}/all-components"] = (tta, params.suppress_pectoral, "none")
        if args.pectoral_variants:
            variants[f"{recipe.name}/{'no-' if params.suppress_pectoral else ''}pectoral"] = (
                tta, not params.suppress_pectoral, mode)
        oof: dict[str, dict[str, np.ndarray]] = {v: {} for v in variants}
        kept: dict[str, dict[str, dict[str, Any]]] = {v: {} for v in variants}
        epochs = []
        t_recipe = time.monotonic()
        for fold in range(args.folds):
            test = cases[cases["fold"] == fold]
            rest = cases[cases["fold"] != fold]
            vp = val_patients(rest, 0.15, args.seed + fold)
            train, val = rest[~rest["patient_id"].isin(vp)], rest[rest["patient_id"].isin(vp)]
            print(f"{recipe.name} fold {fold}: train {len(train)}, val {len(val)}, test {len(test)} images",
                  file=sys.stderr)
            fold_params = recipe_params(recipe, args, args.seed + fold)
            base_plan = ModelPlan(preprocess=PreprocessParams(size=size), patch_size=params.patch_size)
            with tempfile.TemporaryDirectory() as tmp:
                model, n_epochs = train_fold(store, fold_params, base_plan, train, val, Path(tmp), settings)
            epochs.append(n_epochs)
            val_images, val_masks = load_samples(store, val)
            test_images, _ = load_samples(store, test)
            for variant, (tta, pectoral, mode) in variants.items():
                plan = base_plan.replace(tta_mirror=tta, suppress_pectoral=pectoral)
                predictor = Predictor(model, plan)
                val_probs = predictor.predict_preprocessed(val_images, breast_masks=_breasts(store, val, plan))
                keeps, min_scores = postprocess_candidates(mode)
                chosen = choose_postprocessing(list(val_probs), list(val_masks.astype(bool)),
                                               keeps=keeps, min_scores=min_scores)
                print(f"  {variant} fold {fold}: threshold {chosen.threshold:.2f}, min score {chosen.min_score}, "
                      f"keep {chosen.keep_components} (val Dice {chosen.dice_mean:.3f})", file=sys.stderr)
                cut = None if chosen.min_score is None else float(remap(np.float32(chosen.min_score), chosen.threshold))
                test_probs = predictor.predict_preprocessed(test_images, breast_masks=_breasts(store, test, plan))
                for cid, p in zip(test["case_id"], test_probs):
                    oof[variant][cid] = remap(p, chosen.threshold).astype(np.float16)
                    kept[variant][cid] = {"keep_components": chosen.keep_components, "min_score": cut}
        minutes = (time.monotonic() - t_recipe) / 60
        for variant in variants:
            for name, _ in DATASETS:
                subset = cases[cases["dataset"] == name]
                row = {"recipe": variant, "dataset": name, "epochs": epochs, "recipe_minutes": minutes}
                row |= score(store, subset, oof[variant], truths, args.n_boot, kept[variant])
                results["rows"].append(row)
                print(_line(row), file=sys.stderr)
            if args.save:
                _save(Path(args.save), variant, cases, oof[variant], kept[variant], store, truths)
    results["total_minutes"] = (time.monotonic() - t0) / 60
    return results


def rescore(args: argparse.Namespace) -> dict[str, Any]:
    """Score saved out-of-fold maps again with today's scoring code (``--rescore DIR``): every
    ``oof-<variant>.npz`` of a ``--save`` folder, at the size its maps have. No training."""
    from mammoseg.storage import open_store

    folder = Path(args.rescore)
    cache_url = Path(args.cache).resolve().as_uri()
    store = open_store(cache_url)
    saved = pd.read_csv(folder / "cases.csv")
    truths = Truths()
    results: dict[str, Any] = {"rows": [], "settings": vars(args), "rescored_from": str(folder)}
    data: dict[int, pd.DataFrame] = {}
    for path in sorted(folder.glob("oof-*.npz")):
        variant = path.stem.removeprefix("oof-")
        with np.load(path) as z:
            oof = {k: z[k] for k in z.files}
        keep_file = folder / f"keep-{variant}.json"
        kept = json.loads(keep_file.read_text()) if keep_file.exists() else {}
        size = next(iter(oof.values())).shape[0]
        if size not in data:
            data[size], _ = load_cases(Path(args.data), size, cache_url)
        # the maps were predicted on the saved run's arrays: their transforms map them back, even
        # when today's preprocessing would cut or flip an image differently
        cases = data[size].drop(columns="npz_key").merge(saved[["case_id", "npz_key"]], on="case_id")
        for name, _ in DATASETS:
            row = {"recipe": variant, "dataset": name}
            row |= score(store, cases[cases["dataset"] == name], oof, truths, args.n_boot, kept)
            results["rows"].append(row)
            print(_line(row), file=sys.stderr)
    results["total_minutes"] = results["preprocess_minutes"] = 0.0
    return results


def _breasts(store: Any, rows: pd.DataFrame, plan: Any) -> np.ndarray | None:
    """The breast masks of ``rows``, when the plan needs them (pectoral suppression)."""
    from mammoseg.training.recipe import breast_masks

    return breast_masks(store, rows) if plan.suppress_pectoral else None


def _save(folder: Path, variant: str, cases: pd.DataFrame, oof: dict[str, np.ndarray], kept: dict[str, Any],
          store: Any, truths: Truths) -> None:
    """Out-of-fold maps (``oof-<variant>.npz``, preprocessed grid), each case's
    post-processing (``keep-<variant>.json``: keep_components and the remapped min_score) and, per dataset, the best, median and worst
    images in original geometry (``overlays-<variant>-<dataset>.png``)."""
    from mammoseg.evaluation import best_median_worst, dice, overlay_grid, segment
    from mammoseg.imageio import load_image
    from mammoseg.preprocess import read_preprocessed
    from mammoseg.storage import open_store

    folder.mkdir(parents=True, exist_ok=True)
    tag = variant.replace("/", "-")
    np.savez_compressed(folder / f"oof-{tag}.npz", **{c: oof[c] for c in cases["case_id"]})
    (folder / f"keep-{tag}.json").write_text(json.dumps({c: kept.get(c) for c in cases["case_id"]}))
    cases.drop(columns=["mask_uris", "mask_geometries"]).to_csv(folder / "cases.csv", index=False)
    for name, subset in cases.groupby("dataset", sort=True):
        rows, maps = [], {}
        for _, row in subset.iterrows():
            arrays = read_preprocessed(store, row["npz_key"])
            prob = arrays.transform.to_original(oof[row["case_id"]].astype(np.float32), order="linear")
            pred = segment(np.clip(prob, 0, 1), 0.5, *mask_rule(kept.get(row["case_id"])))
            truth, _ = truths.get(row, arrays.transform.original_shape)
            maps[row["case_id"]] = (row, pred)
            rows.append({"case_id": row["case_id"], "dice": dice(pred, truth)})
        items = []
        for label, cid in zip(("best", "median", "worst"), best_median_worst(pd.DataFrame(rows))):
            row, pred = maps[cid]
            source = open_store(row["source_root"])
            key = source.key_from_uri(row["image_uri"])
            truth, _ = truths.get(row, pred.shape)
            items.append((load_image(source.read_bytes(key), key), truth, pred,
                          f"{label}: {cid} Dice {dice(pred, truth):.2f}"))
        (folder / f"overlays-{tag}-{name}.png").write_bytes(overlay_grid(items))


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
    ap.add_argument("--budget-clock", choices=("wall", "cpu"), default="wall",
                    help="count --minutes-per-model on the wall clock, or as this process's CPU minutes "
                         "(fair between recipes when the machine is shared; 2 cores: ~2 CPU min per wall min)")
    ap.add_argument("--recipes", default="seed,new")
    ap.add_argument("--precision", choices=("auto", "float32", "mixed_bfloat16", "mixed_float16"),
                    help="Keras dtype policy of training (default: MAMMOSEG_TRAIN_PRECISION, else 'auto')")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the figures to this JSON file")
    ap.add_argument("--save", help="folder for the out-of-fold maps and best/median/worst overlays per dataset")
    ap.add_argument("--pectoral-variants", action="store_true",
                    help="also score every recipe with pectoral-muscle suppression toggled (same models)")
    ap.add_argument("--rescore", help="score the out-of-fold maps saved by --save in this folder again (no training)")
    args = ap.parse_args(argv)
    unknown = [r for r in args.recipes.split(",") if r not in RECIPES]
    if unknown:
        ap.error(f"unknown recipe(s) {unknown}; choose from {sorted(RECIPES)}")
    if not (Path(args.data) / "cdd-cesm").is_dir():
        ap.error(f"no real data under {args.data} (expected cdd-cesm/, inbreast/, mini-mias/)")
    results = rescore(args) if args.rescore else run(args)
    print(table(results))
    print(f"\ntotal {results['total_minutes']:.1f} min (preprocessing {results['preprocess_minutes']:.1f} min)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    main()
