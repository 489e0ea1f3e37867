"""k-fold cross-validation by patient: a patient's images never sit in two folds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mammoseg.training.split import patient_folds


def _images(n_patients: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [
        {"case_id": f"cs-{p}-{i}", "patient_id": f"pt-{p}"}
        for p in range(n_patients)
        for i in range(int(rng.integers(1, 5)))
    ]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_folds_never_share_a_patient_and_are_balanced(k: int) -> None:
    images = _images(40)
    folds = patient_folds(images, k, seed=1)
    assert folds.index.equals(images.index) and set(folds) == set(range(k))
    assert (images.assign(fold=folds).groupby("patient_id")["fold"].nunique() == 1).all()
    sizes = folds.value_counts()
    assert sizes.max() - sizes.min() <= images.groupby("patient_id").size().max()


def test_folds_are_deterministic_and_seeded() -> None:
    images = _images(30)
    assert patient_folds(images, 3, seed=7).equals(patient_folds(images, 3, seed=7))
    assert not patient_folds(images, 3, seed=7).equals(patient_folds(images, 3, seed=8))


def test_hand_computed_greedy_assignment() -> None:
    # sizes 3, 2, 1, 1 into 2 folds, largest first, each to the lighter fold (ties: fold 0):
    # a→0 (3, 0), b→1 (3, 2), c→1 (3, 3), d→0 (4, 3)
    images = pd.DataFrame({"patient_id": ["a"] * 3 + ["b"] * 2 + ["c", "d"]})
    folds = patient_folds(images, 2, seed=0)
    by_patient = images.assign(fold=folds).groupby("patient_id")["fold"].first()
    assert by_patient["a"] == by_patient["d"] != by_patient["b"] == by_patient["c"]
    assert sorted(folds.value_counts()) == [3, 4]


def test_bad_fold_requests_are_refused() -> None:
    with pytest.raises(ValueError, match="k must be >= 2"):
        patient_folds(_images(5), 1)
    with pytest.raises(ValueError, match="cannot fill 6 folds"):
        patient_folds(_images(5), 6)
    with pytest.raises(ValueError, match="patient_id"):
        patient_folds(pd.DataFrame({"patient_id": ["a", None]}), 2)
