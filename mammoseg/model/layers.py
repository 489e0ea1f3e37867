"""Custom Keras layers of the U-Net, written with ``keras.layers`` and ``keras.ops`` only.

Backend-agnostic (TensorFlow, JAX, PyTorch) and serialisable (``get_config``, registered under
the ``mammoseg`` package), so a saved ``.keras`` model reloads with the layer in place: Keras
imports this module from the saved config, no ``custom_objects`` needed.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

_PACKAGE = "mammoseg"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BreastNormalization(keras.layers.Layer):
    """Standardise each image over its breast pixels: ``(x - mean) / (std + epsilon)``.

    Why: the training mix holds digital (CDD-CESM, INbreast) and scanned-film (mini-MIAS)
    mammograms whose grey levels differ in offset and spread. Standardising every image on its
    own breast removes both, at training *and* at inference, because the step is part of the
    saved model (predict / evaluate cannot forget it).

    The breast is every pixel ``> threshold``: preprocessing blanks the background outside the
    breast to exactly 0 (and augmentation keeps it 0). ``mean`` and ``std`` (population std)
    are computed per image and per channel over those pixels only, in float32 whatever the
    dtype policy (the sums over a 512² image overflow float16). Background pixels come out as
    exactly 0 (which is also the breast mean after standardisation); an image without a single
    breast pixel comes out as all zeros, never NaN. ``epsilon`` (images in 0..1) bounds the gain
    on a near-uniform breast; the output is invariant to ``x → a·x + b`` (``a > 0``) inside the
    breast up to a relative error of about ``epsilon / std`` (≈ 0.1 % for a CLAHE'd breast,
    whose std is ~0.1).

    Input and output: ``[batch, *spatial, channels]``, same shape. No weights.
    """

    def __init__(self, threshold: float = 0.0, epsilon: float = 1e-4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if threshold < 0:
            raise ValueError(f"threshold must be >= 0 (got {threshold})")
        if epsilon <= 0:
            raise ValueError(f"epsilon must be > 0 (got {epsilon})")
        self.threshold = float(threshold)
        self.epsilon = float(epsilon)

    def call(self, inputs: Any) -> Any:
        x = ops.cast(inputs, "float32")
        axes = tuple(range(1, len(x.shape) - 1))  # spatial axes: per image, per channel
        breast = ops.greater(x, self.threshold)
        weight = ops.cast(breast, "float32")
        count = ops.maximum(ops.sum(weight, axis=axes, keepdims=True), 1.0)
        mean = ops.sum(x * weight, axis=axes, keepdims=True) / count
        centred = (x - mean) * weight  # two passes: no E[x²] - E[x]² cancellation
        std = ops.sqrt(ops.sum(ops.square(centred), axis=axes, keepdims=True) / count)
        out = ops.where(breast, centred / (std + self.epsilon), ops.zeros_like(x))
        return ops.cast(out, self.compute_dtype)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "threshold": self.threshold, "epsilon": self.epsilon}
