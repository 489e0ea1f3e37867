"""BreastNormalization: per-image standardisation over the breast pixels, inside the model
(mean and std, or median and interquartile range)."""

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


def _apply(x: np.ndarray, **kwargs: float | str) -> np.ndarray:
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


def test_hand_computed_median_and_iqr_case() -> None:
    x = np.zeros((2, 4, 4, 1), "float32")
    x[0, 0, :, 0] = [0.5, 0.1, 0.4, 0.2]
    x[0, 1, 0, 0] = 0.3  # 5 breast pixels: ranks 0..4, median 0.3, q1 (rank 1) 0.2, q3 (rank 3) 0.4
    x[1, 2:, 2:, 0] = [[0.1, 0.2], [0.3, 0.9]]  # 4 pixels: q1 at rank 0.75 = 0.175, median 0.25, q3 at 2.25 = 0.45
    out = _apply(x, statistic="median_iqr", epsilon=1e-3)
    scale0 = 0.2 / 1.349 + 1e-3
    np.testing.assert_allclose(out[0, 0, :, 0], (np.array([0.5, 0.1, 0.4, 0.2]) - 0.3) / scale0, rtol=1e-5)
    assert out[0, 1, 0, 0] == pytest.approx(0.0, abs=1e-6)
    scale1 = (0.45 - 0.175) / 1.349 + 1e-3
    np.testing.assert_allclose(out[1, 2:, 2:, 0], (np.array([[0.1, 0.2], [0.3, 0.9]]) - 0.25) / scale1, rtol=1e-5)
    assert np.all(out[0, 2:] == 0.0) and np.all(out[1, :2] == 0.0)


def test_median_iqr_keeps_the_tissue_where_it_was_when_a_large_lesion_is_added() -> None:
    """The reason for ``median_iqr``: a bright lesion over a twelfth of the breast moves the mean
    and std, so the same tissue comes out darker than on a lesion-free image."""
    rng = np.random.default_rng(1)
    x = np.zeros((1, 64, 64, 1), "float32")
    x[0, :, :48, 0] = np.clip(rng.normal(0.4, 0.08, (64, 48)), 0.05, 0.95)  # tissue: one mode, as CLAHE'd breasts
    with_lesion = x.copy()
    with_lesion[0, 24:40, 4:20, 0] = 1.0  # a twelfth of the breast
    tissue = (x[0, ..., 0] > 0) & (with_lesion[0, ..., 0] != 1.0)
    shift = {}
    for statistic in ("mean_std", "median_iqr"):
        plain, lesioned = _apply(x, statistic=statistic)[0, ..., 0], _apply(with_lesion, statistic=statistic)[0, ..., 0]
        shift[statistic] = float(np.abs(plain[tissue] - lesioned[tissue]).mean())
    assert shift["mean_std"] > 0.15
    assert shift["median_iqr"] < shift["mean_std"] / 2


@pytest.mark.parametrize("statistic", ["mean_std", "median_iqr"])
def test_empty_or_uniform_breast_gives_zeros_not_nan(statistic: str) -> None:
    x = np.zeros((2, 8, 8, 1), "float32")
    x[1, 2:6, 2:6] = 0.4  # uniform breast: std 0
    out = _apply(x, statistic=statistic)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out, np.zeros_like(out))


def test_threshold_decides_what_counts_as_breast() -> None:
    x = np.zeros((1, 2, 2, 1), "float32")
    x[0, :, :, 0] = [[0.0, 0.01], [0.5, 0.7]]
    assert (_apply(x)[0, ..., 0] != 0).sum() == 3
    out = _apply(x, threshold=0.05)[0, ..., 0]
    assert out[0, 1] == 0.0 and out[1, 0] == pytest.approx(-out[1, 1], rel=1e-4)


@pytest.mark.parametrize("statistic", ["mean_std", "median_iqr"])
@pytest.mark.parametrize(("a", "b"), [(0.25, 0.0), (3.0, 0.0), (0.5, 0.3)])
def test_invariant_to_affine_changes_of_the_breast(a: float, b: float, statistic: str) -> None:
    """A different scanner gain/offset (inside the breast) gives the same network input."""
    x = _breast_images()
    y = np.where(x > 0, a * x + b, 0.0).astype("float32")
    exact = {"epsilon": 1e-7, "statistic": statistic}
    np.testing.assert_allclose(_apply(y, **exact), _apply(x, **exact), atol=2e-4)
    # with the default epsilon: a relative error of about epsilon / std (std >= 0.06 here)
    np.testing.assert_allclose(_apply(y, statistic=statistic), _apply(x, statistic=statistic), rtol=0, atol=5e-3)


def test_config_round_trip_and_validation() -> None:
    layer = BreastNormalization(threshold=0.01, epsilon=1e-4, statistic="median_iqr", name="bn_in")
    clone = BreastNormalization.from_config(layer.get_config())
    assert (clone.threshold, clone.epsilon, clone.statistic, clone.name) == (0.01, 1e-4, "median_iqr", "bn_in")
    older = {k: v for k, v in layer.get_config().items() if k != "statistic"}  # saved before it existed
    assert BreastNormalization.from_config(older).statistic == "mean_std"
    with pytest.raises(ValueError, match="statistic"):
        BreastNormalization(statistic="mode")
    with pytest.raises(ValueError, match="epsilon"):
        BreastNormalization(epsilon=0.0)
    with pytest.raises(ValueError, match="threshold"):
        BreastNormalization(threshold=-1.0)


@pytest.mark.parametrize(("input_norm", "statistic"), [("breast", "mean_std"), ("breast_robust", "median_iqr")])
def test_unet_with_breast_input_norm_is_invariant_and_round_trips(tmp_path: Path, input_norm: str, statistic: str) -> None:
    cfg = UNetConfig(input_size=32, base_filters=2, depth=2, dropout=0.0, input_norm=input_norm)  # type: ignore[arg-type]
    model = build_unet(cfg)
    assert isinstance(model.layers[1], BreastNormalization)
    assert model.layers[1].name == "input_norm"
    assert model.layers[1].statistic == statistic
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
    assert loaded.get_layer("input_norm").statistic == statistic
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
