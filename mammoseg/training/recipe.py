"""One training recipe, from :class:`~mammoseg.params.RetrainParams` to a fitted model.

The retrain flow's ``train-unet`` task and ``benchmarks/quality.py`` both train through here, so
what the benchmark measures is what the pipeline publishes:

* :func:`configs` — the U-Net and training configurations of a parameter set;
* :func:`fit_one` — one model on a train / validation pair of manifests: whole images, or
  patches (``patch_size``; validated on lesion-centred patches of the validation images), with
  an optional wall-time budget (``max_train_minutes``);
* :func:`fit_folds` — k-fold cross-validation by patient over a pool of images: one model per
  fold, each validated on its own fold; the fold models averaged into one model
  (:func:`mammoseg.model.ensemble.ensemble_model`), and every image's out-of-fold probability
  (predicted with the plan) for the threshold choice.

Arrays come from the store by the manifests' ``npz_key``; nothing here knows Prefect.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mammoseg.params import RetrainParams
from mammoseg.plan import ModelPlan
from mammoseg.storage import ObjectStore

if TYPE_CHECKING:
    from mammoseg.model.unet import UNetConfig
    from mammoseg.settings import Settings
    from mammoseg.training.train import TrainConfig, TrainResult

EpochHook = Callable[[int, dict], None]


def configs(
    params: RetrainParams, network_size: int, settings: Settings | None = None
) -> tuple[UNetConfig, TrainConfig]:
    """The model and training configurations of ``params`` (one place for the mapping); the
    machine's precision, XLA and multi-GPU settings from ``settings`` (defaults when None)."""
    from mammoseg.model.unet import UNetConfig
    from mammoseg.training.augment import AugmentConfig
    from mammoseg.training.train import TrainConfig

    model_config = UNetConfig(
        input_size=network_size, base_filters=params.base_filters, depth=params.depth,
        dropout=params.dropout, norm=params.norm, input_norm=params.input_norm,
        deep_supervision=params.deep_supervision,
    )
    augment = None
    if params.augment:
        extra: dict[str, Any] = {}
        if params.aug_gamma or params.aug_noise or params.aug_blur or params.input_norm != "none":
            # intensity changes stay on the breast, so the background stays 0 for the per-breast
            # normalisation (it counts pixels > 0 as breast)
            extra = {"keep_background": True, "gamma": params.aug_gamma, "noise_std": params.aug_noise,
                     "blur_sigma": params.aug_blur, "blur_prob": 0.3}
        augment = AugmentConfig(
            rotate_deg=params.aug_rotate_deg, shift=params.aug_shift, zoom=params.aug_zoom,
            brightness=params.aug_intensity, contrast=params.aug_intensity, seed=params.seed, **extra,
        )
    train_config = TrainConfig(
        epochs=params.epochs, batch_size=params.batch_size, learning_rate=params.learning_rate,
        loss=params.loss, focal_alpha=params.focal_alpha, lesion_oversample=params.lesion_oversample,
        seed=params.seed, early_stopping_patience=params.early_stopping_patience,
        lr_patience=params.lr_patience, lr_schedule=params.lr_schedule, augment=augment,
        **({} if settings is None else {
            "mixed_precision": settings.train_precision, "jit_compile": settings.train_jit_compile,
            "distribution": settings.train_distribution,
        }),
    )
    return model_config, train_config


#: What a time budget counts (``RetrainParams.budget_clock``): wall time, or this process's CPU time.
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.monotonic, "cpu": time.process_time}


class Budget:
    """``minutes`` (None: no limit) of the ``clock`` (a key of :data:`CLOCKS`), counted from
    creation: what share is spent, and an epoch hook that stops training before it overruns."""

    def __init__(self, minutes: float | None, clock: str = "wall") -> None:
        self.minutes, self._now = minutes, CLOCKS[clock]
        self._start = self._now()

    def spent(self) -> float:
        """The share of the budget used so far (0 without a limit)."""
        return 0.0 if self.minutes is None else (self._now() - self._start) / (self.minutes * 60.0)

    def hook(self, inner: EpochHook | None) -> Callable[[int, dict], bool]:
        """Calls ``inner``; asks training to stop when another epoch (as long as the mean one so
        far) would overrun the budget."""

        def hook(epoch: int, logs: dict) -> bool:
            if inner is not None:
                inner(epoch, logs)
            spent = self.spent()
            return self.minutes is not None and spent + spent / epoch > 1.0

        return hook

    def progress(self, epochs: int) -> Callable[[int], float]:
        """The share of training done before a 0-based epoch, for the poly LR schedule: of
        ``epochs`` or of the budget, whichever is further along."""
        return lambda epoch: max(epoch / epochs, self.spent())


def lesion_centred_patches(images: np.ndarray, masks: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One ``size`` patch per image, centred on its lesion (on the image centre when it has
    none), shifted to lie inside: ``(images, masks)`` ``[N, size, size]`` of the input dtypes."""
    out_i = np.empty((len(images), size, size), dtype=images.dtype)
    out_m = np.empty((len(images), size, size), dtype=masks.dtype)
    for k, (image, mask) in enumerate(zip(images, masks)):
        ys, xs = np.nonzero(mask)
        cy, cx = (ys.mean(), xs.mean()) if ys.size else (image.shape[0] / 2, image.shape[1] / 2)
        y0 = int(np.clip(round(cy - size / 2), 0, image.shape[0] - size))
        x0 = int(np.clip(round(cx - size / 2), 0, image.shape[1] - size))
        out_i[k], out_m[k] = image[y0:y0 + size, x0:x0 + size], mask[y0:y0 + size, x0:x0 + size]
    return out_i, out_m


def _datasets(store: ObjectStore, train_rows: pd.DataFrame, val_rows: pd.DataFrame, params: RetrainParams,
              plan: ModelPlan, train_config: TrainConfig) -> tuple[Any, Any]:
    from mammoseg.training.dataset import load_samples, make_dataset

    if plan.patch_size is None:
        train_ds = make_dataset(
            store, train_rows, batch_size=params.batch_size, training=True, augment=train_config.augment,
            shuffle_seed=params.seed, lesion_oversample=params.lesion_oversample,
            dataset_balance=params.dataset_balance,
        )
        return train_ds, make_dataset(store, val_rows, batch_size=params.batch_size, training=False)

    import tensorflow as tf

    from mammoseg.training.patches import PatchConfig, make_patch_dataset

    images, masks = load_samples(store, train_rows)
    breasts = breast_masks(store, train_rows)
    train_ds = make_patch_dataset(
        images, masks, breasts, PatchConfig(
            patch_size=plan.patch_size, lesion_share=params.patch_lesion_share,
            hard_negative_share=params.patch_hard_negative_share,
        ), batch_size=params.batch_size,
        augment=train_config.augment, seed=params.seed,
    )
    vi, vm = lesion_centred_patches(*load_samples(store, val_rows), plan.patch_size)
    scale = float(np.iinfo(vi.dtype).max)
    val_ds = tf.data.Dataset.from_tensor_slices(
        ((vi.astype(np.float32) / scale)[..., None], vm.astype(np.float32)[..., None])
    ).batch(params.batch_size)
    return train_ds, val_ds


def fit_one(
    store: ObjectStore, train_rows: pd.DataFrame, val_rows: pd.DataFrame, params: RetrainParams,
    plan: ModelPlan, workdir: Path, on_epoch_end: EpochHook | None = None, settings: Settings | None = None,
) -> tuple[Any, TrainResult]:
    """Train one model (resumable in ``workdir``); returns the best checkpoint and the result.
    ``settings``: the machine's precision / XLA / multi-GPU choices (see :func:`configs`)."""
    from mammoseg.inference import load_model
    from mammoseg.training.train import train

    model_config, train_config = configs(params, plan.network_size, settings)
    train_ds, val_ds = _datasets(store, train_rows, val_rows, params, plan, train_config)
    budget = Budget(params.max_train_minutes, params.budget_clock)
    result = train(model_config, train_config, train_ds, val_ds, workdir, on_epoch_end=budget.hook(on_epoch_end),
                   progress=budget.progress(train_config.epochs))
    return load_model(result.best_model_path), result


def breast_masks(store: ObjectStore, rows: pd.DataFrame) -> np.ndarray:
    """The preprocessed cases' breast masks ``[N, S, S]`` bool (for pectoral suppression)."""
    from mammoseg.preprocess import read_preprocessed

    return np.stack([read_preprocessed(store, k).breast_mask.astype(bool) for k in rows["npz_key"]])


@dataclass(frozen=True)
class FoldFit:
    """Outcome of :func:`fit_folds`: the averaged model, each fold's training result, the fold of
    every pooled image and its out-of-fold probability map (preprocessed grid)."""

    model: Any
    results: list[TrainResult]
    folds: pd.Series
    oof: dict[str, np.ndarray]


def fit_folds(
    store: ObjectStore, pool: pd.DataFrame, params: RetrainParams, plan: ModelPlan, workdir: Path,
    on_epoch_end: Callable[[int, int, dict], None] | None = None, settings: Settings | None = None,
) -> FoldFit:
    """k-fold cross-validation by patient over ``pool`` (``params.folds`` folds, within each
    dataset when the pool has a ``dataset`` column); the fold models averaged into one."""
    from mammoseg.inference import Predictor
    from mammoseg.model.ensemble import ensemble_model
    from mammoseg.training.dataset import load_samples
    from mammoseg.training.split import patient_folds

    if "dataset" in pool.columns:
        folds = pd.concat(
            [patient_folds(g, params.folds, seed=params.seed) for _, g in pool.groupby("dataset", sort=True)]
        ).loc[pool.index]
    else:
        folds = patient_folds(pool, params.folds, seed=params.seed)
    models, results, oof = [], [], {}
    for k in range(params.folds):
        hook = (lambda e, logs, k=k: on_epoch_end(k, e, logs)) if on_epoch_end else None
        held = pool[folds == k]
        model, result = fit_one(store, pool[folds != k], held, params, plan, workdir / f"fold{k}", hook, settings)
        images, _ = load_samples(store, held)
        probs = Predictor(model, plan).predict_preprocessed(images, breast_masks=breast_masks(store, held))
        for case_id, prob in zip(held["case_id"], probs):
            oof[case_id] = prob
        models.append(model)
        results.append(result)
    return FoldFit(model=ensemble_model(models), results=results, folds=folds, oof=oof)



@dataclass
class TrainedModel:
    """A fitted model of a run: the file to publish, its plan (threshold chosen), the fits."""

    model_path: Path
    plan: ModelPlan
    results: list[TrainResult]
    history: list[dict[str, float]]
    threshold: float
    model_config: UNetConfig
    train_config: TrainConfig

    @property
    def best_val_dice(self) -> float:
        return float(np.mean([r.best_val_dice for r in self.results]))


def run_plan(params: RetrainParams, settings: Settings) -> ModelPlan:
    """The inference plan a run's model is trained for (its threshold still to choose)."""
    from mammoseg.preprocess import PreprocessParams

    return ModelPlan(
        preprocess=PreprocessParams.from_settings(settings, size=params.size),
        patch_size=params.patch_size, tta_mirror=params.tta_mirror, suppress_pectoral=params.suppress_pectoral,
    )


def postprocess_candidates(mode: str) -> tuple[tuple[int | None, ...], tuple[float | None, ...]]:
    """The ``keep_components`` and ``min_score`` candidates searched on validation for a
    ``RetrainParams.postprocess`` mode (the threshold is always searched)."""
    from mammoseg.evaluation import DEFAULT_KEEP_CANDIDATES, DEFAULT_MIN_SCORE_CANDIDATES

    return {
        "choose": (DEFAULT_KEEP_CANDIDATES, DEFAULT_MIN_SCORE_CANDIDATES),
        "top_components": (DEFAULT_KEEP_CANDIDATES, (None,)),
        "none": ((None,), (None,)),
    }[mode]


def train_model(
    store: ObjectStore, manifest: pd.DataFrame, params: RetrainParams, workdir: Path,
    on_epoch_end: Callable[[int, int, dict], None] | None, settings: Settings,
) -> TrainedModel:
    """Fit the run's model on ``manifest`` (with its ``split`` column) and choose its threshold
    and post-processing (``params.postprocess``).

    One model on ``train`` validated on ``val``; or, with ``params.folds > 1`` (nnU-Net style),
    k fold models over train + val, each validated on its own fold, averaged into one model. The
    threshold (and how many components the mask keeps) is chosen on validation predictions made
    with the plan (out-of-fold for folds), never on a test set. ``on_epoch_end(fold, epoch,
    logs)`` reports progress. The arrays must have been preprocessed with the plan's parameters.
    """
    from mammoseg.evaluation import choose_postprocessing
    from mammoseg.inference import Predictor
    from mammoseg.training.dataset import load_samples

    plan = run_plan(params, settings)
    digests = set(manifest["params_digest"])
    if digests != {plan.preprocess.digest()}:
        raise ValueError(
            f"the training arrays were preprocessed with parameters {sorted(digests)}, not the plan's "
            f"({plan.preprocess.digest()}): preprocess them with this run's settings"
        )
    model_config, train_config = configs(params, plan.network_size, settings)
    hook = on_epoch_end or (lambda fold, epoch, logs: None)
    if params.folds > 1:
        pool = manifest[manifest["split"].isin(["train", "val"])]
        fitted = fit_folds(store, pool, params, plan, workdir, hook, settings)
        results = fitted.results
        _, masks = load_samples(store, pool)
        probs = np.stack([fitted.oof[c] for c in pool["case_id"]])
        model_path = workdir / "ensemble.keras"
        fitted.model.save(model_path)
        history = [{**h, "fold": float(k)} for k, r in enumerate(results) for h in r.history]
    else:
        train_rows, val_rows = manifest[manifest["split"] == "train"], manifest[manifest["split"] == "val"]
        model, result = fit_one(store, train_rows, val_rows, params, plan, workdir, lambda e, logs: hook(0, e, logs), settings)
        results, model_path, history = [result], result.best_model_path, result.history
        if model_config.deep_supervision:  # publish the mask alone, without the training heads
            model_path = workdir / "model.keras"
            model.save(model_path)
        images, masks = load_samples(store, val_rows)
        probs = Predictor(model, plan, settings.inference_batch_size).predict_preprocessed(
            images, breast_masks=breast_masks(store, val_rows))
    keeps, min_scores = postprocess_candidates(params.postprocess)
    chosen = choose_postprocessing(list(probs), list(masks.astype(bool)), keeps=keeps, min_scores=min_scores)
    plan = plan.replace(threshold=chosen.threshold, keep_components=chosen.keep_components, min_score=chosen.min_score)
    return TrainedModel(model_path=model_path, plan=plan, results=results, history=history,
                        threshold=chosen.threshold, model_config=model_config, train_config=train_config)
