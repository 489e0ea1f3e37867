"""BreastNormalization: per-image standardisation over the breast pixels, inside the model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from mammoseg.model.layers import BreastNormalization
from mammoseg.model.unet import UNetConfig, build_unet
from mammoseg.training.train import dtype_policy

REPO = Path(__file__).resolve().parents[2]


def _apply(x: np.ndarray, **kwargs: float) -> np.ndarray:
    return keras.ops.convert_to_numpy(BreastNormalization(**kwargs)(x))


def _breast_images(n: int = 3, size: int = 32, seed: int = 0) -> np.ndarray:
    """Images in 0..1 with a textured half-disc "breast" (> 0) on an exactly-0 background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = np.zeros((n, size, size, 1), "float32")
    for i in range(n):
        breast = (yy - size / 2) ** 2 + xx**2 <= (size * (0.5 + 0.1 * i)) ** 2
        out[i, ..., 0] = np.where(breast, rng.uniform(0.05, 0.9, (size, size)), 0.0)
    return out


def test_hand_computed_4x4_case_per_image() -> None:
    x = np.zeros((2, 4, 4, 1), "float32")
    x[0, :2, :2, 0] = [[0.2, 0.4], [0.6, 0.8]]  # mean 0.5, var (.09+.01+.01+.09)/4 = 0.05
    x[1, 3, :, 0] = [0.1, 0.1, 0.3, 0.3]  # mean 0.2, std 0.1
    out = _apply(x, epsilon=1e-3)
    std0 = np.sqrt(0.05)
    expected0 = np.zeros((4, 4), "float32")
    expected0[:2, :2] = (np.array([[0.2, 0.4], [0.6, 0.8]]) - 0.5) / (std0 + 1e-3)
    expected1 = np.zeros((4, 4), "float32")
    expected1[3] = np.array([-0.1, -0.1, 0.1, 0.1]) / (0.1 + 1e-3)
    np.testing.assert_allclose(out[0, ..., 0], expected0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[1, ..., 0], expected1, rtol=1e-5, atol=1e-6)
    assert out.dtype == np.float32 and out.shape == x.shape


def test_background_stays_zero_and_breast_is_standardised() -> None:
    x = _breast_images()
    out = _apply(x, epsilon=1e-6)
    breast = x > 0
    assert np.all(out[~breast] == 0.0)
    for i in range(len(x)):
        values = out[i][breast[i]]
        assert values.mean() == pytest.approx(0.0, abs=1e-5)
        assert values.std() == pytest.approx(1.0, abs=1e-4)


def test_empty_or_uniform_breast_gives_zeros_not_nan() -> None:
    x = np.zeros((2, 8, 8, 1), "float32")
    x[1, 2:6, 2:6] = 0.4  # uniform breast: std 0
    out = _apply(x)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out, np.zeros_like(out))


def test_threshold_decides_what_counts_as_breast() -> None:
    x = np.zeros((1, 2, 2, 1), "float32")
    x[0, :, :, 0] = [[0.0, 0.01], [0.5, 0.7]]
    assert (_apply(x)[0, ..., 0] != 0).sum() == 3
    out = _apply(x, threshold=0.05)[0, ..., 0]
    assert out[0, 1] == 0.0 and out[1, 0] == pytest.approx(-out[1, 1], rel=1e-4)


@pytest.mark.parametrize(("a", "b"), [(0.25, 0.0), (3.0, 0.0), (0.5, 0.3)])
def test_invariant_to_affine_changes_of_the_breast(a: float, b: float) -> None:
    """A different scanner gain/offset (inside the breast) gives the same network input."""
    x = _breast_images()
    y = np.where(x > 0, a * x + b, 0.0).astype("float32")
    np.testing.assert_allclose(_apply(y, epsilon=1e-7), _apply(x, epsilon=1e-7), atol=2e-4)
    # with the default epsilon: a relative error of about epsilon / std (std >= 0.06 here)
    np.testing.assert_allclose(_apply(y), _apply(x), rtol=0, atol=5e-3)


def test_config_round_trip_and_validation() -> None:
    layer = BreastNormalization(threshold=0.01, epsilon=1e-4, name="bn_in")
    clone = BreastNormalization.from_config(layer.get_config())
    assert (clone.threshold, clone.epsilon, clone.name) == (0.01, 1e-4, "bn_in")
    with pytest.raises(ValueError, match="epsilon"):
        BreastNormalization(epsilon=0.0)
    with pytest.raises(ValueError, match="threshold"):
        BreastNormalization(threshold=-1.0)


def test_unet_with_breast_input_norm_is_invariant_and_round_trips(tmp_path: Path) -> None:
    cfg = UNetConfig(input_size=32, base_filters=2, depth=2, dropout=0.0, input_norm="breast")
    model = build_unet(cfg)
    assert isinstance(model.layers[1], BreastNormalization)
    assert model.layers[1].name == "input_norm"
    x = _breast_images(4)
    y = (x > 0.6).astype("float32")
    model.compile(optimizer="adam", loss="binary_crossentropy")
    model.fit(x, y, epochs=1, batch_size=2, verbose=0)  # non-trivial BN statistics
    pred = model.predict(x, verbose=0)
    scaled = np.where(x > 0, 0.5 * x, 0.0).astype("float32")
    np.testing.assert_allclose(model.predict(scaled, verbose=0), pred, atol=1e-3)

    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    assert isinstance(loaded.get_layer("input_norm"), BreastNormalization)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), pred)


def test_input_norm_computes_in_float32_under_mixed_precision() -> None:
    with dtype_policy("mixed_float16"):
        model = build_unet(UNetConfig(input_size=32, base_filters=2, depth=2, input_norm="breast"))
    assert model.get_layer("input_norm").compute_dtype == "float32"
    assert model.get_layer("enc0_conv1").compute_dtype == "float16"
    out = model(_breast_images(1), training=False)
    assert np.isfinite(keras.ops.convert_to_numpy(out)).all()


def test_a_fresh_process_loads_the_model_after_custom_objects(tmp_path: Path) -> None:
    """Keras does not import a custom layer's module from a saved config by itself."""
    path = tmp_path / "m.keras"
    build_unet(UNetConfig(input_size=32, base_filters=2, depth=2, input_norm="breast")).save(path)
    code = (
        "import sys, keras, mammoseg.model\n"
        "mammoseg.model.custom_objects()\n"
        f"m = keras.saving.load_model({str(path)!r}, compile=False)\n"
        "assert type(m.get_layer('input_norm')).__name__ == 'BreastNormalization'\n"
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
