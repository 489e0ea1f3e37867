"""Fold models averaged into one Keras model (nnU-Net's cross-validation ensemble).

The ensemble is an ordinary functional model: one input, the fold models applied to it, their
probabilities averaged. It saves to one ``.keras`` file and predicts through the same code as a
single model, so publishing, ``predict`` and ``evaluate`` need not know how many folds there were.
No I/O; backend-agnostic (Keras layers only).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras


def ensemble_model(models: Sequence[keras.Model], name: str = "ensemble") -> keras.Model:
    """The mean of ``models``' outputs (all must share one input and output shape).

    One model is returned unchanged. Each member is renamed ``fold<i>`` inside the ensemble so
    members built with the same name do not clash.
    """
    import keras

    if not models:
        raise ValueError("an ensemble needs at least one model")
    if len(models) == 1:
        return models[0]
    shapes = {tuple(m.input_shape[1:]) for m in models}
    if len(shapes) != 1:
        raise ValueError(f"ensemble members take different input shapes: {sorted(shapes)}")
    inputs = keras.Input(shape=models[0].input_shape[1:], name="image")
    outputs = []
    for i, member in enumerate(models):
        member.name = f"fold{i}"
        outputs.append(member(inputs))
    mean = keras.layers.Average(name="mean", dtype="float32")(outputs)
    return keras.Model(inputs, mean, name=name)
