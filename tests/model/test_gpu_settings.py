"""Training hardware settings: precision, XLA and data-parallel training, selected by settings."""

from __future__ import annotations

import numpy as np
import pytest

from mammoseg.model.unet import UNetConfig
from mammoseg.params import RetrainParams
from mammoseg.settings import Settings
from mammoseg.training.recipe import configs
from mammoseg.training.train import (
    TrainConfig,
    _fingerprint,
    build_compiled_model,
    resolve_distribution,
    train,
)

TINY = UNetConfig(input_size=32, base_filters=4, depth=2)


def test_auto_distribution_is_data_parallel_only_with_several_gpus() -> None:
    assert resolve_distribution("auto", gpus=0) == "none"
    assert resolve_distribution("auto", gpus=1) == "none"
    assert resolve_distribution("auto", gpus=2) == "data_parallel"
    assert resolve_distribution("none", gpus=8) == "none"
    assert resolve_distribution("data_parallel", gpus=0) == "data_parallel"


def test_settings_choose_the_training_hardware() -> None:
    settings = Settings(train_precision="mixed_bfloat16", train_jit_compile="off", train_distribution="data_parallel")
    _, tc = configs(RetrainParams(), 64, settings)
    assert (tc.mixed_precision, tc.jit_compile, tc.distribution) == ("mixed_bfloat16", "off", "data_parallel")
    _, default = configs(RetrainParams(), 64)
    assert (default.mixed_precision, default.jit_compile, default.distribution) == ("auto", "auto", "auto")


def test_bad_hardware_values_are_refused() -> None:
    with pytest.raises(ValueError, match="jit_compile must be auto, on or off"):
        TrainConfig(jit_compile="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="distribution must be auto, none or data_parallel"):
        TrainConfig(distribution="model_parallel")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Settings(train_distribution="everywhere")


def test_hardware_does_not_block_a_resume_but_the_recipe_does() -> None:
    a = _fingerprint(TINY, TrainConfig(jit_compile="on", distribution="data_parallel"))
    assert a == _fingerprint(TINY, TrainConfig(jit_compile="off", distribution="none"))
    assert a != _fingerprint(TINY, TrainConfig(learning_rate=5e-4))


def test_mixed_precision_keeps_a_float32_output_and_xla_follows_the_setting() -> None:
    import keras

    model = build_compiled_model(TINY, TrainConfig(mixed_precision="mixed_bfloat16", jit_compile="on"))
    assert model.dtype_policy.name == "mixed_bfloat16"
    assert model.get_layer("mask").compute_dtype == "float32"
    out = model(np.zeros((1, 32, 32, 1), np.float32))
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert model.jit_compile is True
    assert build_compiled_model(TINY, TrainConfig(jit_compile="off")).jit_compile is False


def test_data_parallel_training_runs_end_to_end(tmp_path) -> None:
    """On this machine's one CPU device the replicas are one, but the whole path (strategy
    scope, callbacks, checkpoint, resume state) is the one a multi-GPU box takes."""
    rng = np.random.default_rng(0)
    x = rng.random((8, 32, 32, 1)).astype(np.float32)
    y = (x > 0.7).astype(np.float32)
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    config = TrainConfig(epochs=1, batch_size=4, augment=None, distribution="data_parallel", mixed_precision="float32")
    result = train(TINY, config, ds, ds, tmp_path)
    assert result.epochs_run == 1 and result.best_model_path.exists()
    assert np.isfinite(result.history[0]["loss"])
