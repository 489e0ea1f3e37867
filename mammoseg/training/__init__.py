"""Training: patient split, tf.data input, paired augmentation, ``model.fit`` with resume.

Importing this package imports neither TensorFlow nor Keras; names are resolved on first use.
The training entry point is ``mammoseg.training.train.train`` (not re-exported here: the name
would clash with the submodule ``train``).
``split`` and the config dataclasses never need TensorFlow at all.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "patient_split": "mammoseg.training.split",
    "AugmentConfig": "mammoseg.training.augment",
    "augment_pair": "mammoseg.training.augment",
    "DatasetError": "mammoseg.training.dataset",
    "make_dataset": "mammoseg.training.dataset",
    "TrainConfig": "mammoseg.training.train",
    "TrainResult": "mammoseg.training.train",
    "TrainingStateError": "mammoseg.training.train",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
