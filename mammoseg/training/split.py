"""Patient-level train / val / test split, stratified by each patient's dominant label.

Pure pandas/numpy (no TensorFlow). All images of one patient land in one split, so no patient's
anatomy is seen in training and scored in validation or test.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")


def _cell_text(value: object) -> str:
    """One stratum component: lists (``abnormality_types``) become ``a+b`` sorted, NA ``?``."""
    if isinstance(value, (list, tuple, set, np.ndarray)):
        return "+".join(sorted(str(v) for v in value)) or "none"
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "?"
    return str(value)


def patient_labels(images: pd.DataFrame, stratify_cols: Sequence[str]) -> pd.Series:
    """The dominant label of each patient (index: ``patient_id``).

    An image's label joins its ``stratify_cols`` values with ``|``; a patient's label is the
    most frequent label over their images (ties: the lexicographically smallest).
    """
    missing = [c for c in stratify_cols if c not in images.columns]
    if missing:
        raise ValueError(f"stratify column(s) {missing} not in the image table")
    if stratify_cols:
        per_image = pd.Series(
            ["|".join(_cell_text(row[c]) for c in stratify_cols) for _, row in images.iterrows()],
            index=images.index,
        )
    else:
        per_image = pd.Series("all", index=images.index)
    out = {}
    for pid, labels in per_image.groupby(images["patient_id"], sort=True):
        counts = Counter(labels)
        best = max(counts.values())
        out[pid] = min(label for label, c in counts.items() if c == best)
    return pd.Series(out, name="label", dtype="string")


def patient_split(
    images: pd.DataFrame,
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    stratify_cols: Sequence[str] = ("pathology", "abnormality_types"),
) -> pd.Series:
    """``'train'`` / ``'val'`` / ``'test'`` for each row of ``images`` (same index), by patient.

    Fractions are of *images*. Patients are grouped into strata by their dominant label
    (:func:`patient_labels`); strata with too few patients to reach every split
    (fewer than ``ceil(1 / smallest non-zero fraction)``) are pooled into one "rare" stratum,
    so with tiny data this degrades to a plain seeded group shuffle. Within a stratum the
    patients are shuffled (``seed``), then taken largest first and each is given to the split
    furthest below its target share of the stratum's images (greedy). Deterministic for a seed.

    Raises ``ValueError`` when ``patient_id`` is missing/empty or the fractions are invalid.
    """
    if "patient_id" not in images.columns:
        raise ValueError("image table has no 'patient_id' column: cannot split by patient")
    if images["patient_id"].isna().any():
        raise ValueError(f"{int(images['patient_id'].isna().sum())} image(s) have no patient_id")
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= f < 1.0:
            raise ValueError(f"{name} must be in [0, 1) (got {f})")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction must be < 1 (got {val_fraction + test_fraction})"
        )
    result = pd.Series(pd.NA, index=images.index, dtype="string", name="split")
    if len(images) == 0:
        return result

    targets = np.array([1.0 - val_fraction - test_fraction, val_fraction, test_fraction])
    labels = patient_labels(images, stratify_cols)
    sizes = images.groupby("patient_id", sort=True).size()
    nonzero = [f for f in (val_fraction, test_fraction) if f > 0]
    min_patients = math.ceil(1.0 / min(nonzero)) if nonzero else 1
    stratum_count = labels.value_counts()
    strata = labels.where(labels.map(stratum_count) >= min_patients, "__rare__")

    rng = np.random.default_rng(seed)
    assignment: dict[object, str] = {}
    for stratum in sorted(strata.unique()):
        patients = np.array(sorted(strata.index[strata == stratum]), dtype=object)
        patients = patients[rng.permutation(len(patients))]
        # Stable sort keeps the shuffled order among patients with equally many images.
        order = np.argsort(-sizes.loc[patients].to_numpy(), kind="stable")
        total = float(sizes.loc[patients].sum())
        given = np.zeros(3)
        for pid in patients[order]:
            deficit = targets * total - given
            split = int(np.argmax(deficit))  # ties: train, then val, then test
            assignment[pid] = SPLITS[split]
            given[split] += sizes.loc[pid]
    return images["patient_id"].map(assignment).astype("string").rename("split")
