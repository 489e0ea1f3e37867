"""Custom Keras layers of the U-Net, written with ``keras.layers`` and ``keras.ops`` only.

Backend-agnostic (TensorFlow, JAX, PyTorch) and serialisable (``get_config``, registered under
the ``mammoseg`` package), so a saved ``.keras`` model reloads with the layer in place: Keras
imports this module from the saved config, no ``custom_objects`` needed.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

_PACKAGE = "mammoseg"


def _breast_quantiles(x: Any, breast: Any, count: Any, qs: tuple[float, ...]) -> list[Any]:
    """Per image and channel, the quantiles ``qs`` of ``x`` over the ``breast`` pixels, each
    shaped ``[batch, 1, ..., 1, channels]`` like ``count`` (the breast pixel count, >= 1).

    Background pixels are sorted past the breast ones (set to +inf), so the breast's ranks are
    ``0 .. count - 1``; ``q`` sits at rank ``q * (count - 1)``, linearly interpolated."""
    spatial, channels = x.shape[1:-1], x.shape[-1]
    pixels = math.prod(int(side) for side in spatial)
    flat = ops.reshape(ops.where(breast, x, ops.full_like(x, float("inf"))), (-1, pixels, channels))
    ordered = ops.sort(flat, axis=1)
    n = ops.reshape(count, (-1, 1, channels))
    out = []
    for q in qs:
        pos = q * (n - 1.0)
        lo = ops.floor(pos)
        a = ops.take_along_axis(ordered, ops.cast(lo, "int32"), axis=1)
        b = ops.take_along_axis(ordered, ops.cast(ops.minimum(lo + 1.0, n - 1.0), "int32"), axis=1)
        value = a + (pos - lo) * (b - a)
        value = ops.where(ops.isfinite(value), value, ops.zeros_like(value))  # an image without breast
        out.append(ops.reshape(value, (-1, *([1] * len(spatial)), channels)))
    return out


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

    ``statistic="median_iqr"`` centres on the breast's median and divides by its interquartile
    range / 1.349 (the std of a normal distribution with that IQR) instead: a large bright lesion
    moves the mean and inflates the std, so with ``"mean_std"`` the same tissue comes out darker
    on an image with a big lesion than on a lesion-free one; the quartiles barely move. The
    quantiles are taken by sorting each image's breast pixels (linear interpolation between
    ranks, as ``numpy.quantile``).

    Input and output: ``[batch, *spatial, channels]``, same shape. No weights.
    """

    STATISTICS = ("mean_std", "median_iqr")

    def __init__(
        self, threshold: float = 0.0, epsilon: float = 1e-4, statistic: str = "mean_std", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if threshold < 0:
            raise ValueError(f"threshold must be >= 0 (got {threshold})")
        if epsilon <= 0:
            raise ValueError(f"epsilon must be > 0 (got {epsilon})")
        if statistic not in self.STATISTICS:
            raise ValueError(f"statistic must be one of {', '.join(self.STATISTICS)} (got {statistic!r})")
        self.threshold = float(threshold)
        self.epsilon = float(epsilon)
        self.statistic = statistic

    def call(self, inputs: Any) -> Any:
        x = ops.cast(inputs, "float32")
        axes = tuple(range(1, len(x.shape) - 1))  # spatial axes: per image, per channel
        breast = ops.greater(x, self.threshold)
        weight = ops.cast(breast, "float32")
        count = ops.maximum(ops.sum(weight, axis=axes, keepdims=True), 1.0)
        if self.statistic == "median_iqr":
            q1, median, q3 = _breast_quantiles(x, breast, count, (0.25, 0.5, 0.75))
            centred = (x - median) * weight
            scale = (q3 - q1) / 1.349
        else:
            mean = ops.sum(x * weight, axis=axes, keepdims=True) / count
            centred = (x - mean) * weight  # two passes: no E[x²] - E[x]² cancellation
            scale = ops.sqrt(ops.sum(ops.square(centred), axis=axes, keepdims=True) / count)
        out = ops.where(breast, centred / (scale + self.epsilon), ops.zeros_like(x))
        return ops.cast(out, self.compute_dtype)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(), "threshold": self.threshold, "epsilon": self.epsilon, "statistic": self.statistic,
        }
