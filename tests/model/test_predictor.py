"""The plan travels with the model: load_predictor, mirroring TTA, sliding window, ensembles."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mammoseg.inference import Predictor, load_predictor, predict_batch
from mammoseg.model.ensemble import ensemble_model
from mammoseg.model.unet import UNetConfig, build_unet
from mammoseg.plan import PLAN_FILE, ModelPlan, PlanError
from mammoseg.preprocess import PreprocessParams
from mammoseg.settings import get_settings
from mammoseg.storage import LocalStore


def _net(size: int = 32, seed: int = 0, **kwargs):
    import keras

    keras.utils.set_random_seed(seed)
    return build_unet(UNetConfig(input_size=size, base_filters=2, depth=2, dropout=0.0, **kwargs))


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 65535, (n, size, size), dtype=np.uint16)


def _save(tmp_path, model, plan: ModelPlan | None, config: dict | None = None) -> str:
    folder = tmp_path / "version"
    folder.mkdir()
    model.save(folder / "model.keras")
    if plan is not None:
        (folder / PLAN_FILE).write_bytes(plan.to_json())
    if config is not None:
        (folder / "training_config.json").write_text(json.dumps(config))
    return LocalStore(folder).uri("model.keras")


def test_plan_round_trips_with_the_model(tmp_path) -> None:
    model = _net(input_norm="breast")
    plan = ModelPlan(preprocess=PreprocessParams(size=32), threshold=0.37, tta_mirror=False, top_k=2)
    predictor = load_predictor(_save(tmp_path, model, plan), get_settings())
    assert predictor.plan == plan
    x = _images(3, 32)
    np.testing.assert_allclose(predictor.predict_preprocessed(x), predict_batch(model, x), atol=1e-6)


def test_a_model_without_plan_gets_its_threshold_from_the_training_config(tmp_path) -> None:
    uri = _save(tmp_path, _net(), None, {"threshold": 0.65})
    plan = load_predictor(uri, get_settings()).plan
    assert plan.threshold == 0.65 and plan.preprocess.size == 32 and not plan.tta_mirror


def test_a_plan_for_another_input_size_is_refused(tmp_path) -> None:
    uri = _save(tmp_path, _net(32), ModelPlan(preprocess=PreprocessParams(size=64)))
    with pytest.raises(PlanError, match="64-px inputs but the model takes 32"):
        load_predictor(uri, get_settings())


def test_mirroring_tta_averages_the_prediction_of_the_up_down_mirrored_image() -> None:
    model = _net()
    x = _images(2, 32, seed=1)
    plain = predict_batch(model, x)
    mirrored = predict_batch(model, x[:, ::-1, :].copy())[:, ::-1, :]
    tta = Predictor(model, ModelPlan(preprocess=PreprocessParams(size=32), tta_mirror=True))
    np.testing.assert_allclose(tta.predict_preprocessed(x), (plain + mirrored) / 2, atol=1e-6)


def test_sliding_window_covers_the_image_and_equals_direct_prediction_where_it_covers_it() -> None:
    """A 64-px image through a 64-px window is one direct forward pass; a 32-px patch model slid
    over a 64-px image gives a full-size map in [0, 1]."""
    model64 = _net(64)
    x = _images(1, 64, seed=2)
    whole = Predictor(model64, ModelPlan(preprocess=PreprocessParams(size=64), patch_size=64))
    np.testing.assert_allclose(whole.predict_preprocessed(x), predict_batch(model64, x), atol=1e-6)

    patch = Predictor(_net(32), ModelPlan(preprocess=PreprocessParams(size=64), patch_size=32))
    prob = patch.predict_preprocessed(x)
    assert prob.shape == (1, 64, 64) and prob.dtype == np.float32
    assert 0.0 <= prob.min() and prob.max() <= 1.0


def test_predictor_refuses_images_of_another_size() -> None:
    predictor = Predictor(_net(), ModelPlan(preprocess=PreprocessParams(size=32)))
    with pytest.raises(ValueError, match="preprocess them with the plan"):
        predictor.predict_preprocessed(_images(1, 48))


def test_fold_ensemble_is_the_mean_of_its_members_and_round_trips(tmp_path) -> None:
    members = [_net(seed=s) for s in range(3)]
    x = _images(2, 32, seed=3)
    expected = np.mean([predict_batch(m, x) for m in members], axis=0)
    ensemble = ensemble_model(members)
    np.testing.assert_allclose(predict_batch(ensemble, x), expected, atol=1e-6)
    uri = _save(tmp_path, ensemble, ModelPlan(preprocess=PreprocessParams(size=32)))
    np.testing.assert_allclose(load_predictor(uri, get_settings()).predict_preprocessed(x), expected, atol=1e-6)
    assert ensemble_model(members[:1]) is members[0]
    with pytest.raises(ValueError, match="at least one"):
        ensemble_model([])


def test_pectoral_suppression_zeroes_the_prediction_inside_the_detected_muscle_only() -> None:
    from mammoseg.preprocess.pectoral import pectoral_mask

    rows, cols = np.mgrid[0:64, 0:64]
    breast = ((rows - 28) / 44.0) ** 2 + (cols / 46.0) ** 2 < 1
    rng = np.random.default_rng(0)
    tissue = 0.4 + 0.02 * rng.standard_normal((64, 64))
    muscle = (cols / 18 + rows / 40 < 1) & breast
    image = (np.clip(np.where(muscle, 0.75, np.where(breast, tissue, 0.0)), 0, 1) * 65535).astype(np.uint16)
    found = pectoral_mask(image, breast)
    assert found.sum() > 0.5 * muscle.sum()  # the phantom's muscle is found

    model = _net(64)
    plain = Predictor(model, ModelPlan(preprocess=PreprocessParams(size=64)))
    suppressed = Predictor(model, ModelPlan(preprocess=PreprocessParams(size=64), suppress_pectoral=True))
    p0 = plain.predict_preprocessed(image)
    p1 = suppressed.predict_preprocessed(image, breast_masks=breast)
    assert (p1[found] == 0).all() and np.array_equal(p1[~found], p0[~found])
