"""Patient-clustered bootstrap: degenerate data, known means, seeds, clusters vs images."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mammoseg.evaluation.bootstrap import bootstrap_ci, bootstrap_pooled_dice_ci, cluster_counts
from mammoseg.evaluation.metrics import EvaluationInputError


def test_all_equal_values_give_a_zero_width_interval() -> None:
    df = pd.DataFrame({"patient_id": list("aabbbc"), "dice": [0.7] * 6})
    point, lo, hi = bootstrap_ci(df, "dice", n_boot=300)
    assert point == lo == hi == pytest.approx(0.7)
    assert hi - lo == 0.0


def test_point_is_the_mean_over_images_not_over_patients() -> None:
    # patient a: three images scoring 1; patient b: one image scoring 0 -> 3/4 (not 1/2)
    df = pd.DataFrame({"patient_id": ["a", "a", "a", "b"], "dice": [1.0, 1.0, 1.0, 0.0]})
    point, lo, hi = bootstrap_ci(df, "dice", n_boot=500)
    assert point == pytest.approx(0.75)
    # resamples: {a,a} -> 1, {b,b} -> 0, {a,b} -> 3/4; each all-same pair has p = 1/4 > 2.5 %
    assert (lo, hi) == (0.0, 1.0)


def test_known_mean_and_normal_width_for_independent_images() -> None:
    rng = np.random.default_rng(11)
    values = rng.normal(0.6, 0.1, size=400)
    df = pd.DataFrame({"patient_id": [f"p{i}" for i in range(400)], "dice": values})
    point, lo, hi = bootstrap_ci(df, "dice", n_boot=2000, seed=1)
    assert point == pytest.approx(values.mean())
    assert lo < point < hi
    # one patient per image: width ~ 2 * 1.96 * sd / sqrt(n)
    expected = 2 * 1.96 * values.std(ddof=1) / np.sqrt(400)
    assert hi - lo == pytest.approx(expected, rel=0.15)


def test_deterministic_by_seed() -> None:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"patient_id": rng.integers(0, 30, 100).astype(str), "dice": rng.random(100)})
    assert bootstrap_ci(df, "dice", seed=5) == bootstrap_ci(df, "dice", seed=5)
    assert bootstrap_ci(df, "dice", seed=5) != bootstrap_ci(df, "dice", seed=6)
    # 600 resamples span more than one block: same draws whatever the path
    a = np.vstack(list(cluster_counts(7, 600, seed=2)))
    b = np.vstack(list(cluster_counts(7, 600, seed=2)))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (600, 7) and (a.sum(axis=1) == 7).all()


def test_cluster_resampling_is_wider_than_image_resampling_for_correlated_images() -> None:
    # 4 patients x 10 images; every image of a patient scores the same (perfect correlation)
    per_patient = {"a": 0.0, "b": 0.0, "c": 1.0, "d": 1.0}
    df = pd.DataFrame(
        [{"patient_id": p, "dice": v} for p, v in per_patient.items() for _ in range(10)]
    )
    _, c_lo, c_hi = bootstrap_ci(df, "dice", n_boot=2000, seed=0)
    _, i_lo, i_hi = bootstrap_ci(df, "dice", cluster_col=None, n_boot=2000, seed=0)
    # clusters: P(all four drawn patients score 0) = 1/16 > 2.5 %, same for 1 -> [0, 1]
    assert (c_lo, c_hi) == (0.0, 1.0)
    # images: 40 "independent" Bernoulli(0.5) -> about 0.5 +/- 1.96 * sqrt(0.25 / 40) = +/- 0.155
    assert 0.3 < i_lo < 0.4 and 0.6 < i_hi < 0.7
    assert (c_hi - c_lo) > 2.5 * (i_hi - i_lo)


def test_generic_statistic_path_draws_the_same_resamples_as_the_mean_path() -> None:
    rng = np.random.default_rng(3)
    df = pd.DataFrame({"patient_id": rng.integers(0, 12, 50).astype(str), "dice": rng.random(50)})
    fast = bootstrap_ci(df, "dice", n_boot=300, seed=9)
    slow = bootstrap_ci(df, "dice", n_boot=300, seed=9, statistic=lambda x: float(np.mean(x)))
    assert slow == pytest.approx(fast)
    point, lo, hi = bootstrap_ci(df, "dice", n_boot=300, seed=9, statistic=np.median)
    assert point == pytest.approx(float(np.median(df["dice"])))
    assert lo <= point <= hi


def test_pooled_dice_ci() -> None:
    # patient a: tp 8 fp 2 fn 0 ; patient b: tp 0 fp 0 fn 10 (missed lesion)
    df = pd.DataFrame({"patient_id": ["a", "b"], "tp": [8, 0], "fp": [2, 0], "fn": [0, 10]})
    point, lo, hi = bootstrap_pooled_dice_ci(df, n_boot=500)
    assert point == pytest.approx(16 / (16 + 2 + 10))
    # resamples: {a,a}: 32/36, {b,b}: 0, {a,b}: 16/28; the all-same pairs have p = 1/4 each
    assert lo == 0.0 and hi == pytest.approx(32 / 36)
    empty = pd.DataFrame({"patient_id": ["a"], "tp": [0], "fp": [0], "fn": [0]})
    assert bootstrap_pooled_dice_ci(empty, n_boot=10) == (1.0, 1.0, 1.0)


def test_bad_input_is_refused() -> None:
    df = pd.DataFrame({"patient_id": ["a", None], "dice": [0.1, 0.2]})
    with pytest.raises(EvaluationInputError, match="missing values"):
        bootstrap_ci(df, "dice")
    with pytest.raises(EvaluationInputError, match="empty"):
        bootstrap_ci(df.iloc[:0], "dice")
    with pytest.raises(EvaluationInputError, match="non-finite"):
        bootstrap_ci(pd.DataFrame({"patient_id": ["a"], "dice": [np.nan]}), "dice")
    with pytest.raises(EvaluationInputError, match="n_boot"):
        bootstrap_ci(df.fillna("b"), "dice", n_boot=0)
