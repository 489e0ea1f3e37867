"""Stateful overlap metrics for monitoring during training (``keras.ops`` only, any backend).

Binarisation: truth pixel positive where ``y_true >= 0.5``; prediction positive where
``y_pred >= threshold`` (default 0.5, as ``keras.metrics.BinaryIoU``).

Empty masks (written down, since they are common in mammography):

* truth empty **and** prediction empty → the image scores **1** (a correct "no lesion");
* truth empty but prediction not (or the reverse) → the image scores **0**.

``DiceScore`` and ``IoUScore`` are *per-image means* over all images seen since the last reset:
they accumulate the sum of per-image scores and the number of images. ``PooledDice`` pools
TP/FP/FN over every pixel seen instead (large lesions weigh more). The formal evaluation lives in
``mammoseg.evaluation`` (numpy); these are for ``model.fit`` logs and checkpoint selection.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

_PACKAGE = "mammoseg"


def _binarise(y_true: Any, y_pred: Any, threshold: float) -> tuple[Any, Any]:
    t = ops.cast(ops.greater_equal(ops.cast(y_true, "float32"), 0.5), "float32")
    p = ops.cast(ops.greater_equal(ops.cast(y_pred, "float32"), threshold), "float32")
    return t, p


def _flat_per_image(x: Any) -> Any:
    """``[batch, ...]`` → ``[batch, pixels]``."""
    return ops.reshape(x, (ops.shape(x)[0], -1))


def _image_weights(sample_weight: Any, batch: Any) -> Any:
    """One weight per image (pixel weights are averaged per image); all ones when None."""
    if sample_weight is None:
        return ops.ones((batch,), dtype="float32")
    w = ops.cast(sample_weight, "float32")
    if len(w.shape) == 0:
        return ops.ones((batch,), dtype="float32") * w
    if len(w.shape) > 1:
        w = ops.mean(_flat_per_image(w), axis=1)
    return w


def overlap_counts(y_true: Any, y_pred: Any, threshold: float) -> tuple[Any, Any, Any]:
    """Per-image ``(intersection, truth pixels, predicted pixels)`` after binarisation."""
    t, p = _binarise(y_true, y_pred, threshold)
    t, p = _flat_per_image(t), _flat_per_image(p)
    return ops.sum(t * p, axis=1), ops.sum(t, axis=1), ops.sum(p, axis=1)


def dice_per_image(y_true: Any, y_pred: Any, threshold: float = 0.5) -> Any:
    """``2|T∩P| / (|T| + |P|)`` per image; 1 when both are empty."""
    inter, st, sp = overlap_counts(y_true, y_pred, threshold)
    denom = st + sp
    return ops.where(denom > 0, 2.0 * inter / ops.maximum(denom, 1.0), 1.0)


def iou_per_image(y_true: Any, y_pred: Any, threshold: float = 0.5) -> Any:
    """``|T∩P| / |T∪P|`` per image; 1 when both are empty."""
    inter, st, sp = overlap_counts(y_true, y_pred, threshold)
    union = st + sp - inter
    return ops.where(union > 0, inter / ops.maximum(union, 1.0), 1.0)


def _mask_channels(y_true: Any, y_pred: Any) -> Any:
    """``y_pred`` cut to ``y_true``'s channels: a deep-supervision model's extra output channels
    (auxiliary heads, see ``UNetConfig.deep_supervision``) are not scored."""
    n = y_true.shape[-1]
    return y_pred[..., :n] if len(y_pred.shape) == len(y_true.shape) and y_pred.shape[-1] != n else y_pred


class _PerImageMean(keras.metrics.Metric):
    """Mean of a per-image score over the images seen (optionally weighted per image)."""

    def __init__(self, threshold: float = 0.5, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1) (got {threshold})")
        self.threshold = float(threshold)
        self._direction = "up"
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def _score(self, y_true: Any, y_pred: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        scores = self._score(y_true, _mask_channels(y_true, y_pred))
        w = _image_weights(sample_weight, ops.shape(scores)[0])
        self.total.assign(self.total + ops.sum(scores * w))
        self.count.assign(self.count + ops.sum(w))

    def result(self) -> Any:
        """Mean per-image score; 0 before any image was seen."""
        return ops.divide_no_nan(self.total, self.count)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "threshold": self.threshold}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DiceScore(_PerImageMean):
    """Mean per-image Dice. Both masks empty → 1; exactly one of them empty → 0."""

    def __init__(self, threshold: float = 0.5, name: str = "dice", **kwargs: Any) -> None:
        super().__init__(threshold=threshold, name=name, **kwargs)

    def _score(self, y_true: Any, y_pred: Any) -> Any:
        return dice_per_image(y_true, y_pred, self.threshold)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class IoUScore(_PerImageMean):
    """Mean per-image IoU (Jaccard). Both masks empty → 1; exactly one of them empty → 0."""

    def __init__(self, threshold: float = 0.5, name: str = "iou", **kwargs: Any) -> None:
        super().__init__(threshold=threshold, name=name, **kwargs)

    def _score(self, y_true: Any, y_pred: Any) -> Any:
        return iou_per_image(y_true, y_pred, self.threshold)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PooledDice(keras.metrics.Metric):
    """Dice of the pixels pooled over all images seen: ``2TP / (2TP + FP + FN)``.

    1 when no pixel of any image seen is positive in truth or prediction.
    """

    def __init__(self, threshold: float = 0.5, name: str = "pooled_dice", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1) (got {threshold})")
        self.threshold = float(threshold)
        self._direction = "up"
        self.tp = self.add_variable(shape=(), initializer="zeros", name="tp")
        self.fp = self.add_variable(shape=(), initializer="zeros", name="fp")
        self.fn = self.add_variable(shape=(), initializer="zeros", name="fn")

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        inter, st, sp = overlap_counts(y_true, _mask_channels(y_true, y_pred), self.threshold)
        w = _image_weights(sample_weight, ops.shape(inter)[0])
        self.tp.assign(self.tp + ops.sum(inter * w))
        self.fp.assign(self.fp + ops.sum((sp - inter) * w))
        self.fn.assign(self.fn + ops.sum((st - inter) * w))

    def result(self) -> Any:
        denom = 2.0 * self.tp + self.fp + self.fn
        return ops.where(denom > 0, 2.0 * self.tp / ops.maximum(denom, 1e-12), 1.0)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "threshold": self.threshold}
