"""Segmentation losses on per-pixel probabilities, written with ``keras.ops`` only (any backend).

All losses take ``y_true`` (0/1 mask, any float or int dtype) and ``y_pred`` (sigmoid
probabilities, same shape ``[batch, ...]``), compute in float32 (``y_pred`` from a mixed-precision
model is cast up) and return one value per image, which Keras then averages over the batch
(``reduction="sum_over_batch_size"``).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

_PACKAGE = "mammoseg"


def _per_image_mean(x: Any) -> Any:
    """Mean over every axis but the first (the batch); rank-1 input is returned as is."""
    ndim = len(x.shape)
    return ops.mean(x, axis=tuple(range(1, ndim))) if ndim > 1 else x


def _per_image_sum(x: Any) -> Any:
    ndim = len(x.shape)
    return ops.sum(x, axis=tuple(range(1, ndim))) if ndim > 1 else x


def _as_float32(y_true: Any, y_pred: Any) -> tuple[Any, Any]:
    return ops.cast(y_true, "float32"), ops.cast(y_pred, "float32")


def focal_per_image(y_true: Any, y_pred: Any, alpha: float, gamma: float) -> Any:
    """Mean over pixels of ``-a_t (1 - p_t)**gamma * log(p_t)``.

    ``p_t = p`` where the truth is 1 and ``1 - p`` where it is 0; ``a_t = alpha`` on lesion
    pixels and ``1 - alpha`` on background. ``p`` is clipped to ``[eps, 1 - eps]``
    (``eps = keras.config.epsilon()``) so the log never sees 0.
    """
    y_true, y_pred = _as_float32(y_true, y_pred)
    eps = keras.config.epsilon()
    p = ops.clip(y_pred, eps, 1.0 - eps)
    p_t = y_true * p + (1.0 - y_true) * (1.0 - p)
    alpha_t = y_true * alpha + (1.0 - y_true) * (1.0 - alpha)
    loss = -alpha_t * ops.power(1.0 - p_t, gamma) * ops.log(p_t)
    return _per_image_mean(loss)


def dice_loss_per_image(y_true: Any, y_pred: Any, smooth: float) -> Any:
    """``1 - (2·Σ(y·p) + smooth) / (Σy + Σp + smooth)`` per image (soft Dice on probabilities).

    With ``smooth > 0`` an image with an empty truth and an all-zero prediction has loss 0.
    """
    y_true, y_pred = _as_float32(y_true, y_pred)
    inter = _per_image_sum(y_true * y_pred)
    total = _per_image_sum(y_true) + _per_image_sum(y_pred)
    return 1.0 - (2.0 * inter + smooth) / (total + smooth)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BinaryFocalLoss(keras.losses.Loss):
    """Binary focal loss (Lin et al. 2017) on probabilities; see :func:`focal_per_image`."""

    def __init__(
        self,
        alpha: float = 0.25,
        gamma: float = 2.0,
        name: str = "binary_focal_loss",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"focal alpha must be in [0, 1] (got {alpha})")
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0 (got {gamma})")
        self.alpha = float(alpha)
        self.gamma = float(gamma)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return focal_per_image(y_true, y_pred, self.alpha, self.gamma)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "alpha": self.alpha, "gamma": self.gamma}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DiceLoss(keras.losses.Loss):
    """Soft Dice loss per image; see :func:`dice_loss_per_image`."""

    def __init__(self, smooth: float = 1.0, name: str = "dice_loss", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        if smooth < 0:
            raise ValueError(f"dice smooth must be >= 0 (got {smooth})")
        self.smooth = float(smooth)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return dice_loss_per_image(y_true, y_pred, self.smooth)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "smooth": self.smooth}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FocalDiceLoss(keras.losses.Loss):
    """``focal_weight · focal + dice_weight · dice`` per image.

    Focal alone tends to settle on an empty prediction when lesions are a tiny fraction of the
    pixels; the Dice term rewards overlap directly.
    """

    def __init__(
        self,
        focal_weight: float = 1.0,
        dice_weight: float = 1.0,
        alpha: float = 0.25,
        gamma: float = 2.0,
        smooth: float = 1.0,
        name: str = "focal_dice_loss",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        if focal_weight < 0 or dice_weight < 0:
            raise ValueError(
                f"loss weights must be >= 0 (got focal {focal_weight}, dice {dice_weight})"
            )
        # Reuse the checks of the single losses.
        BinaryFocalLoss(alpha=alpha, gamma=gamma)
        DiceLoss(smooth=smooth)
        self.focal_weight = float(focal_weight)
        self.dice_weight = float(dice_weight)
        self.alpha = float(alpha)
        self.gamma = float(gamma)
        self.smooth = float(smooth)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        focal = focal_per_image(y_true, y_pred, self.alpha, self.gamma)
        dice = dice_loss_per_image(y_true, y_pred, self.smooth)
        return self.focal_weight * focal + self.dice_weight * dice

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "focal_weight": self.focal_weight,
            "dice_weight": self.dice_weight,
            "alpha": self.alpha,
            "gamma": self.gamma,
            "smooth": self.smooth,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DeepSupervisionLoss(keras.losses.Loss):
    """Deep supervision: ``Σ_i weights[i] · inner(y_true, y_pred[..., i])`` per image.

    For a U-Net built with ``UNetConfig.deep_supervision = k``: channel 0 of its output is the
    mask, channels 1..k the auxiliary heads of coarser decoder levels, each brought back to the
    full size, so every head is compared with the same truth. ``weights`` (one per channel, > 0)
    are normalised to sum 1.
    """

    def __init__(self, inner: keras.losses.Loss | dict, weights: list[float] | tuple[float, ...],
                 name: str = "deep_supervision_loss", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        if isinstance(inner, dict):
            inner = keras.saving.deserialize_keras_object(inner)
        if not weights or any(not w > 0 for w in weights):
            raise ValueError(f"deep supervision weights must be > 0 (got {list(weights)})")
        total = float(sum(weights))
        self.inner = inner
        self.weights = [float(w) / total for w in weights]

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return sum(w * self.inner.call(y_true, y_pred[..., i:i + 1]) for i, w in enumerate(self.weights))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "inner": keras.saving.serialize_keras_object(self.inner),
                "weights": self.weights}


def deep_supervision_weights(heads: int) -> list[float]:
    """nnU-Net's weights for the mask and ``heads`` auxiliary outputs: 1, 1/2, 1/4, ... (then
    normalised by :class:`DeepSupervisionLoss`)."""
    return [0.5**i for i in range(heads + 1)]
