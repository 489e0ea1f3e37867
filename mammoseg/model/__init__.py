"""The U-Net, its custom layers, losses and monitoring metrics (Keras 3, backend-agnostic).

Importing this package does not import Keras: names are resolved on first use, so the data layer
(ingest / validate / preprocess) never pulls a deep-learning backend. In particular, importing it
does not yet register the custom layer, losses and metrics with Keras: call
:func:`custom_objects` (or import ``mammoseg.model.layers`` / ``.losses`` / ``.metrics``) before
``keras.saving.load_model``, with ``compile=False`` too when the model has an ``input_norm``
layer (Keras imports the module of a custom class from a saved config only for its own
packages).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "UNetConfig": "mammoseg.model.unet",
    "build_unet": "mammoseg.model.unet",
    "BreastNormalization": "mammoseg.model.layers",
    "BinaryFocalLoss": "mammoseg.model.losses",
    "DiceLoss": "mammoseg.model.losses",
    "FocalDiceLoss": "mammoseg.model.losses",
    "DiceScore": "mammoseg.model.metrics",
    "IoUScore": "mammoseg.model.metrics",
    "PooledDice": "mammoseg.model.metrics",
}

__all__ = list(_EXPORTS) + ["custom_objects"]


def custom_objects() -> dict[str, Any]:
    """Register (by importing) and return the serialisable custom layers, losses and metrics.

    Keys are the registered names (``"mammoseg>BreastNormalization"``,
    ``"mammoseg>FocalDiceLoss"``, …). Call it before ``keras.saving.load_model``: a model built
    with ``input_norm="breast"`` needs the layer registered even with ``compile=False``.
    """
    import keras

    importlib.import_module("mammoseg.model.layers")
    importlib.import_module("mammoseg.model.losses")
    importlib.import_module("mammoseg.model.metrics")
    return {
        name: obj
        for name, obj in keras.saving.get_custom_objects().items()
        if name.startswith("mammoseg>")
    }


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
