"""Prediction: a model and its plan, on a preprocessed array or on an original image.

:class:`Predictor` applies a model exactly as its :class:`~mammoseg.plan.ModelPlan` says:
whole-image or sliding-window inference, optional mirroring test-time augmentation, then (for an
original image) the plan's preprocessing and the mapping back onto the original geometry.
An ensemble of fold models is one Keras model (:func:`mammoseg.model.ensemble.ensemble_model`),
so nothing here depends on how many models were averaged.

Keras (and so the backend) is imported only when a model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mammoseg.plan import PLAN_FILE, ModelPlan, PlanError
from mammoseg.preprocess import PreprocessedCase, PreprocessParams, preprocess_arrays

if TYPE_CHECKING:
    from mammoseg.settings import Settings


def load_model(path: str | Path) -> Any:
    """Load a ``.keras`` file written by training (custom layers/losses/metrics registered),
    without the deep-supervision heads a training checkpoint may carry."""
    import keras

    from mammoseg.model import custom_objects
    from mammoseg.model.unet import inference_model

    custom_objects()  # registers the serialisable custom layers (e.g. BreastNormalization)
    return inference_model(keras.saving.load_model(str(path), compile=False))


def model_input_size(model: Any) -> int:
    return int(model.input_shape[1])


def to_network_input(images: np.ndarray) -> np.ndarray:
    """uint8/uint16 ``[..., S, S]`` → float32 in 0..1, scaled by the dtype's maximum exactly as in
    training (:mod:`mammoseg.training.dataset`)."""
    if images.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"preprocessed images must be uint8 or uint16, got {images.dtype}")
    return images.astype(np.float32) / float(np.iinfo(images.dtype).max)


def predict_batch(model: Any, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """Probabilities ``[N, S, S]`` float32 for images ``[N, S, S]`` (uint8/uint16): one plain
    forward pass at the model's input size (no plan: no sliding window, no mirroring)."""
    return _forward(model, to_network_input(images), batch_size)


def _forward(model: Any, x: np.ndarray, batch_size: int) -> np.ndarray:
    out = model.predict(x[..., None], batch_size=batch_size, verbose=0)
    return np.asarray(out, dtype=np.float32)[..., 0]


@dataclass(frozen=True)
class Predictor:
    """A loaded model and the plan it is applied with."""

    model: Any
    plan: ModelPlan
    batch_size: int = 8

    def _probabilities(self, x: np.ndarray) -> np.ndarray:
        """``[N, S, S]`` float32 inputs at the preprocessed size → probabilities, same shape."""
        if self.plan.patch_size is None or self.plan.patch_size >= x.shape[-1]:
            return _forward(self.model, x, self.batch_size)
        from mammoseg.sliding import sliding_window_predict

        def window_fn(batch: np.ndarray) -> np.ndarray:
            return _forward(self.model, batch, self.batch_size)

        return np.stack([
            sliding_window_predict(
                window_fn, image, window=self.plan.patch_size, overlap=self.plan.window_overlap,
                batch_size=self.batch_size,
            )
            for image in x
        ]).astype(np.float32)

    def predict_preprocessed(self, images: np.ndarray, *, breast_masks: np.ndarray | None = None) -> np.ndarray:
        """Probabilities ``[N, S, S]`` for preprocessed images ``[N, S, S]`` (uint8/uint16) at
        the plan's size, with the plan's sliding window, mirroring and pectoral suppression.

        ``breast_masks`` (the preprocessed cases' ``breast_mask``) help the pectoral-muscle
        search; without them the breast is taken as the pixels > 0 (preprocessing blanks the
        rest)."""
        if images.ndim == 2:
            masks = None if breast_masks is None else breast_masks[None]
            return self.predict_preprocessed(images[None], breast_masks=masks)[0]
        size = self.plan.preprocess.size
        if images.shape[-2:] != (size, size):
            raise ValueError(
                f"images are {images.shape[-2]}x{images.shape[-1]} but the plan preprocesses to "
                f"{size}x{size}: preprocess them with the plan's parameters"
            )
        x = to_network_input(images)
        prob = self._probabilities(x)
        if self.plan.tta_mirror:
            mirrored = self._probabilities(x[:, ::-1, :].copy())[:, ::-1, :]
            prob = (prob + mirrored) / 2.0
        if self.plan.suppress_pectoral:
            from mammoseg.preprocess.pectoral import pectoral_mask

            breasts = images > 0 if breast_masks is None else breast_masks.astype(bool)
            prob = np.stack([np.where(pectoral_mask(i, b), 0.0, p) for i, b, p in zip(images, breasts, prob)])
        return prob.astype(np.float32)

    def predict_original(
        self, image: np.ndarray, *, laterality: str | None = None
    ) -> tuple[np.ndarray, PreprocessedCase]:
        """Preprocess an original image with the plan, predict, and map the probabilities back
        onto it: ``(prob in the original geometry, the preprocessed case)``."""
        case = preprocess_arrays(image, [], self.plan.preprocess, laterality=laterality)
        prob = self.predict_preprocessed(case.image, breast_masks=case.breast_mask)
        return case.transform.to_original(prob, order="linear").astype(np.float32), case


def predict_original(
    model: Any, image: np.ndarray, params: PreprocessParams | None = None, *, laterality: str | None = None
) -> tuple[np.ndarray, PreprocessedCase]:
    """Plan-less prediction (default preprocessing at the model's input size); prefer
    :meth:`Predictor.predict_original` with the model's published plan."""
    params = params or PreprocessParams(size=model_input_size(model))
    return Predictor(model, ModelPlan(preprocess=params)).predict_original(image, laterality=laterality)


def load_predictor(model_uri: str, settings: Settings) -> Predictor:
    """The model at ``model_uri`` (a ``model.keras`` in any store) with the ``plan.json`` beside it.

    A model published before plans existed has none: its plan is then rebuilt from the model's
    input size and the ``threshold`` of its ``training_config.json`` (default preprocessing),
    never from the environment. A plan that cannot be honoured raises :class:`PlanError`, and so
    does a ``bundle.json`` beside the model whose declared formats cannot be honoured
    (:class:`~mammoseg.bundle.BundleError`).
    """
    import json

    from mammoseg.catalog import cached_file
    from mammoseg.storage import ObjectNotFound, open_uri

    store, key = open_uri(model_uri, settings)
    folder = key.rsplit("/", 1)[0] if "/" in key else ""
    sibling = f"{folder}/{{}}" if folder else "{}"
    from mammoseg.bundle import BUNDLE_FILE, check_bundle, check_bundle_format

    try:  # the model bundle: refuse one whose declared formats cannot be honoured, before loading
        bundle: bytes | None = store.read_bytes(sibling.format(BUNDLE_FILE))
        check_bundle_format(bundle)
    except ObjectNotFound:
        bundle = None  # published before bundles existed (or a run's model): the plan alone decides
    # downloaded once per model version (a run loads its model for every evaluated set)
    model = load_model(cached_file(store, key, settings, name="model.keras"))
    try:
        plan = ModelPlan.from_json(store.read_bytes(sibling.format(PLAN_FILE)))
    except ObjectNotFound:
        threshold = 0.5
        try:
            config = json.loads(store.read_bytes(sibling.format("training_config.json")))
            threshold = float(config.get("threshold", 0.5))
        except (ObjectNotFound, ValueError, TypeError, AttributeError):
            pass
        plan = ModelPlan(preprocess=PreprocessParams(size=model_input_size(model)), threshold=threshold)
    if bundle is not None:
        check_bundle(bundle, plan)
    if plan.network_size != model_input_size(model):
        raise PlanError(
            f"the plan feeds {plan.network_size}-px inputs but the model takes "
            f"{model_input_size(model)} px: model and plan do not belong together"
        )
    # images or sliding windows per forward pass (MAMMOSEG_INFERENCE_BATCH_SIZE; larger on a GPU)
    return Predictor(model, plan, settings.inference_batch_size)
