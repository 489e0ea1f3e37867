"""U-Net construction, config round trip, mixed precision, save/load, import hygiene."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from mammoseg.model.losses import FocalDiceLoss
from mammoseg.model.metrics import DiceScore, IoUScore
from mammoseg.model.unet import UNetConfig, build_unet
from mammoseg.training.train import dtype_policy

REPO = Path(__file__).resolve().parents[2]
TINY = UNetConfig(input_size=64, base_filters=4, depth=2)


def _images(n: int = 2, size: int = 64) -> np.ndarray:
    return np.random.default_rng(0).random((n, size, size, 1)).astype("float32")


def test_builds_with_expected_shape_range_and_layers() -> None:
    model = build_unet(TINY)
    out = model.predict(_images(), verbose=0)
    assert model.input_shape == (None, 64, 64, 1)
    assert out.shape == (2, 64, 64, 1)
    assert out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    names = {layer.name for layer in model.layers}
    assert {
        "enc0_conv1",
        "enc1_conv2",
        "bottleneck_conv1",
        "up0",
        "skip0",
        "dec0_conv2",
        "mask",
    } <= names
    assert sum(isinstance(layer, keras.layers.MaxPooling2D) for layer in model.layers) == 2
    assert model.get_layer("mask").activation.__name__ == "sigmoid"
    # Widths double per level: enc0 4, enc1 8, bottleneck 16, back to 4 in dec0.
    assert model.get_layer("enc1_conv1").filters == 8
    assert model.get_layer("bottleneck_conv1").filters == 16
    assert model.get_layer("dec0_conv1").filters == 4


def test_no_batch_norm_and_no_dropout_layers_when_disabled() -> None:
    model = build_unet(
        UNetConfig(input_size=64, base_filters=4, depth=2, dropout=0.0, batch_norm=False)
    )
    kinds = {type(layer).__name__ for layer in model.layers}
    assert "BatchNormalization" not in kinds and "Dropout" not in kinds
    assert model.get_layer("enc0_conv1").use_bias


def test_config_round_trip_and_validation() -> None:
    cfg = UNetConfig(input_size=128, base_filters=8, depth=3, dropout=0.2, batch_norm=False)
    assert UNetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="multiple of 2\\*\\*depth = 8"):
        UNetConfig(input_size=60, depth=3)
    with pytest.raises(ValueError, match="kernel_size"):
        UNetConfig(kernel_size=4)
    with pytest.raises(ValueError, match="unknown UNetConfig field.*widht"):
        UNetConfig.from_dict({"widht": 3})


def test_mixed_precision_keeps_float32_output() -> None:
    before = keras.config.dtype_policy().name
    with dtype_policy("mixed_float16"):
        model = build_unet(TINY)
    assert keras.config.dtype_policy().name == before  # the global policy is restored
    assert model.get_layer("enc0_conv1").compute_dtype == "float16"
    assert model.get_layer("mask").compute_dtype == "float32"
    out = model(_images(1), training=False)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"


def test_save_load_round_trip_gives_identical_predictions(tmp_path: Path) -> None:
    model = build_unet(TINY)
    model.compile(
        optimizer="adam",
        loss=FocalDiceLoss(focal_weight=2.0, dice_weight=0.5, alpha=0.3),
        metrics=[DiceScore(threshold=0.4), IoUScore()],
    )
    x = _images(4)
    y = (x > 0.5).astype("float32")
    model.fit(x, y, epochs=1, batch_size=2, verbose=0)  # non-trivial BN statistics
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert isinstance(loaded.loss, FocalDiceLoss)
    assert loaded.loss.get_config()["focal_weight"] == 2.0
    assert loaded.loss.get_config()["alpha"] == pytest.approx(0.3)


def test_model_loss_and_metric_sources_use_no_tensorflow() -> None:
    """They must run under the JAX / PyTorch backends too: keras.layers and keras.ops only."""
    for name in ("unet.py", "layers.py", "losses.py", "metrics.py"):
        text = (REPO / "mammoseg" / "model" / name).read_text(encoding="utf-8")
        assert not re.search(r"^\s*(import|from)\s+tensorflow", text, re.MULTILINE), name
        assert not re.search(r"\btf\.", text), name


def test_importing_packages_and_configs_does_not_import_keras() -> None:
    code = (
        "import sys\n"
        "import mammoseg.model, mammoseg.training\n"
        "from mammoseg.model.unet import UNetConfig\n"
        "from mammoseg.training.split import patient_split\n"
        "from mammoseg.training.augment import AugmentConfig\n"
        "from mammoseg.training.train import TrainConfig\n"
        "TrainConfig(); UNetConfig(); AugmentConfig()\n"
        "heavy = [m for m in ('keras', 'tensorflow') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_custom_objects_lists_the_registered_losses_and_metrics() -> None:
    import mammoseg.model

    objects = mammoseg.model.custom_objects()
    assert objects["mammoseg>FocalDiceLoss"] is FocalDiceLoss
    assert objects["mammoseg>DiceScore"] is DiceScore
    assert {"mammoseg>BinaryFocalLoss", "mammoseg>DiceLoss", "mammoseg>IoUScore"} <= set(objects)
    assert objects["mammoseg>BreastNormalization"] is mammoseg.model.BreastNormalization


# A config dict as written before ``norm`` / ``norm_groups`` / ``input_norm`` existed.
OLD_DICT = {
    "input_size": 64,
    "channels": 1,
    "base_filters": 4,
    "depth": 2,
    "dropout": 0.1,
    "batch_norm": True,
    "kernel_size": 3,
}


def _signature(model) -> list[tuple[str, str, list[tuple[int, ...]]]]:
    return [
        (layer.name, type(layer).__name__, [tuple(w.shape) for w in layer.weights])
        for layer in model.layers
    ]


@pytest.mark.parametrize(
    ("batch_norm", "params", "n_layers"), [(True, 7637, 43), (False, 7397, 33)]
)
def test_old_config_dicts_load_and_build_the_model_they_built_before(
    batch_norm: bool, params: int, n_layers: int
) -> None:
    """``params`` / ``n_layers``: what the U-Net of ``OLD_DICT`` had before ``norm`` existed."""
    cfg = UNetConfig.from_dict({**OLD_DICT, "batch_norm": batch_norm})
    assert cfg.input_norm == "none"
    assert cfg.normalization == ("batch" if batch_norm else "none")
    model = build_unet(cfg)
    assert model.count_params() == params and len(model.layers) == n_layers
    assert ("enc0_bn1" in {layer.name for layer in model.layers}) is batch_norm
    assert model.get_layer("enc0_conv1").use_bias is not batch_norm
    explicit = UNetConfig(
        input_size=64, base_filters=4, depth=2, norm="batch" if batch_norm else "none"
    )
    assert _signature(build_unet(explicit)) == _signature(model)


def test_norm_options_build_the_right_layers() -> None:
    group = build_unet(UNetConfig(input_size=32, base_filters=4, depth=2, norm="group"))
    gn = group.get_layer("enc0_gn1")
    assert isinstance(gn, keras.layers.GroupNormalization) and gn.groups == 4  # min(8, 4)
    assert group.get_layer("bottleneck_gn2").groups == 8  # 16 filters, at most 8 groups
    assert not group.get_layer("enc0_conv1").use_bias
    assert not any(isinstance(la, keras.layers.BatchNormalization) for la in group.layers)

    odd = build_unet(UNetConfig(input_size=32, base_filters=6, depth=2, norm="group"))
    assert odd.get_layer("enc1_gn1").groups == 6  # 12 filters: the largest divisor <= 8

    inst = build_unet(UNetConfig(input_size=32, base_filters=4, depth=2, norm="instance"))
    assert inst.get_layer("enc0_in1").groups == 4
    assert inst.get_layer("bottleneck_in1").groups == 16  # one group per filter

    none = build_unet(UNetConfig(input_size=32, base_filters=4, depth=2, norm="none"))
    kinds = {type(layer).__name__ for layer in none.layers}
    assert not kinds & {"BatchNormalization", "GroupNormalization"}
    assert none.get_layer("enc0_conv1").use_bias


@pytest.mark.parametrize("norm", ["group", "instance"])
def test_norm_options_round_trip_through_save_and_load(norm: str, tmp_path: Path) -> None:
    cfg = UNetConfig(input_size=32, base_filters=2, depth=2, norm=norm, input_norm="breast")
    assert UNetConfig.from_dict(cfg.to_dict()) == cfg
    model = build_unet(cfg)
    x = _images(2, 32)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_norm_and_input_norm_validation() -> None:
    with pytest.raises(ValueError, match="norm must be one of"):
        UNetConfig(norm="layer")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="input_norm must be one of"):
        UNetConfig(input_norm="zscore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="norm_groups"):
        UNetConfig(norm="group", norm_groups=0)
    with pytest.raises(ValueError, match="contradicts norm='group'"):
        UNetConfig(batch_norm=False, norm="group")
    assert UNetConfig(batch_norm=False).normalization == "none"  # legacy switch
    assert UNetConfig(norm="none").normalization == "none"


def test_deep_supervision_heads_train_and_are_dropped_for_inference(tmp_path: Path) -> None:
    from mammoseg.inference import load_model
    from mammoseg.model.losses import DeepSupervisionLoss
    from mammoseg.model.unet import inference_model
    from mammoseg.training.train import TrainConfig, build_compiled_model

    config = UNetConfig(input_size=32, base_filters=4, depth=3, deep_supervision=2)
    assert UNetConfig.from_dict(config.to_dict()) == config
    model = build_compiled_model(config, TrainConfig(mixed_precision="float32"))
    assert model.output_shape == (None, 32, 32, 3)  # the mask, then the heads at 1/2 and 1/4
    assert isinstance(model.loss, DeepSupervisionLoss)
    x = _images(4, 32)
    y = (x > 0.7).astype("float32")
    logs = model.fit(x, y, epochs=1, batch_size=2, verbose=0).history
    assert {"loss", "dice", "iou"} <= set(logs)
    path = tmp_path / "ds.keras"
    model.save(path)
    published = load_model(path)
    assert published.output_shape == (None, 32, 32, 1)
    np.testing.assert_allclose(published.predict(x, verbose=0), model.predict(x, verbose=0)[..., :1], atol=1e-6)
    plain = build_unet(TINY)
    assert inference_model(plain) is plain  # a model without heads is left as it is
    with pytest.raises(ValueError, match="deep_supervision"):
        UNetConfig(input_size=32, depth=2, deep_supervision=2)
