"""The U-Net, its losses and its monitoring metrics (Keras 3, backend-agnostic).

Importing this package does not import Keras: names are resolved on first use, so the data layer
(ingest / validate / preprocess) never pulls a deep-learning backend. In particular, importing it
does not yet register the custom losses/metrics with Keras: call :func:`custom_objects` (or import
``mammoseg.model.losses`` / ``.metrics``) before ``keras.saving.load_model(..., compile=True)``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "UNetConfig": "mammoseg.model.unet",
    "build_unet": "mammoseg.model.unet",
    "BinaryFocalLoss": "mammoseg.model.losses",
    "DiceLoss": "mammoseg.model.losses",
    "FocalDiceLoss": "mammoseg.model.losses",
    "DiceScore": "mammoseg.model.metrics",
    "IoUScore": "mammoseg.model.metrics",
    "PooledDice": "mammoseg.model.metrics",
}

__all__ = list(_EXPORTS) + ["custom_objects"]


def custom_objects() -> dict[str, Any]:
    """Register (by importing) and return the serialisable custom losses and metrics.

    Keys are the registered names (``"mammoseg>FocalDiceLoss"``, …); the model itself uses only
    built-in layers, so ``load_model(path, compile=False)`` needs none of them.
    """
    import keras

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
