"""benchmarks/quality.py measures the pipeline's own recipe: its 'new' recipe is the defaults."""

from __future__ import annotations

import pytest

from mammoseg.params import RetrainParams


@pytest.fixture(scope="module")
def quality(load_benchmark):
    return load_benchmark("quality")


def test_the_new_recipe_is_what_retrain_runs_by_default(quality) -> None:
    defaults = RetrainParams()
    assert {k: getattr(defaults, k) for k in quality.NEW} == quality.NEW
    assert all(getattr(defaults, k) != v for k, v in quality.SEED.items())  # the seed recipe is the former one
    for recipe in quality.RECIPES.values():  # every recipe is a valid parameter set
        RetrainParams(**recipe.overrides)


def test_remap_puts_each_fold_threshold_on_one_half_and_keeps_order(quality) -> None:
    import numpy as np

    prob = np.array([0.0, 0.1, 0.3, 0.6, 1.0], np.float32)
    out = quality.remap(prob, 0.3)
    np.testing.assert_allclose(out, [0.0, 1 / 6, 0.5, 0.5 + 0.3 * 0.5 / 0.7, 1.0], rtol=1e-6)
    assert (np.diff(out) > 0).all()


def test_training_precision_comes_from_the_flag_else_the_environment(quality, monkeypatch) -> None:
    monkeypatch.setenv("MAMMOSEG_TRAIN_PRECISION", "float32")
    assert quality.training_settings(None).train_precision == "float32"
    assert quality.training_settings("mixed_bfloat16").train_precision == "mixed_bfloat16"
    monkeypatch.delenv("MAMMOSEG_TRAIN_PRECISION")
    assert quality.training_settings(None).train_precision == "auto"


def test_saved_post_processing_reads_both_forms(quality) -> None:
    # since stop 25 a case's rule is a dict (min_score on the remapped scale); before, a bare keep
    assert quality.mask_rule({"keep_components": 2, "min_score": 0.8}) == (2, 0.8)
    assert quality.mask_rule({"keep_components": None, "min_score": None}) == (None, None)
    assert quality.mask_rule(1) == (1, None) and quality.mask_rule(None) == (None, None)
