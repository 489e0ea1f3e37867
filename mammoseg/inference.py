"""Prediction: a published model on a preprocessed array or on an original image.

Keras (and so the backend) is imported only when a model is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mammoseg.preprocess import PreprocessedCase, PreprocessParams, preprocess_arrays


def load_model(path: str | Path) -> Any:
    """Load a ``.keras`` file written by training (custom layers/losses/metrics registered)."""
    import keras

    import mammoseg.model  # noqa: F401 - registers the serialisable custom objects

    return keras.saving.load_model(str(path), compile=False)


def model_input_size(model: Any) -> int:
    return int(model.input_shape[1])


def predict_batch(model: Any, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """Probabilities ``[N, S, S]`` float32 for images ``[N, S, S]`` (uint8/uint16, scaled by the
    dtype's maximum exactly as in training)."""
    scale = float(np.iinfo(images.dtype).max)
    x = (images.astype(np.float32) / scale)[..., None]
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float32)[..., 0]


def predict_original(
    model: Any, image: np.ndarray, params: PreprocessParams | None = None, *, laterality: str | None = None
) -> tuple[np.ndarray, PreprocessedCase]:
    """Preprocess an original image, predict, and map the probabilities back onto it."""
    params = params or PreprocessParams(size=model_input_size(model))
    case = preprocess_arrays(image, [], params, laterality=laterality)
    prob = predict_batch(model, case.image[None])[0]
    return case.transform.to_original(prob, order="linear").astype(np.float32), case
