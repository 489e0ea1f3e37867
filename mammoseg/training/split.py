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
    group_col: str | None = None,
) -> pd.Series:
    """``'train'`` / ``'val'`` / ``'test'`` for each row of ``images`` (same index), by patient.

    ``group_col`` (e.g. ``"dataset"`` when several datasets are trained on together): each group
    is split on its own, with the same fractions and strata, so every group reaches every split
    its patient count allows (pooled, a small dataset could land wholly in one split). A patient
    must not appear in two groups.

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
    if group_col is not None:
        if group_col not in images.columns:
            raise ValueError(f"group column {group_col!r} not in the image table")
        groups_per_patient = images.groupby("patient_id")[group_col].nunique()
        shared = sorted(groups_per_patient.index[groups_per_patient > 1])
        if shared:
            raise ValueError(f"{len(shared)} patient(s) in more than one {group_col}: {shared[:3]}")
        parts = [
            patient_split(
                part, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                stratify_cols=stratify_cols,
            )
            for _, part in images.groupby(group_col, sort=True, dropna=False)
        ]
        return pd.concat(parts).reindex(images.index).astype("string").rename("split")

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


def patient_folds(images: pd.DataFrame, k: int, *, seed: int = 0, group_col: str = "patient_id") -> pd.Series:
    """Fold number ``0..k-1`` for each row of ``images`` (same index), whole patients per fold.

    For k-fold cross-validation (nnU-Net's default of five): every patient's images land in one
    fold, so a fold's test images come from patients the other folds' models never saw.
    Patients are shuffled (``seed``), then taken largest first and each given to the fold with
    the fewest images so far (folds within one patient's size of each other). With a
    ``group_col`` other than ``patient_id`` (e.g. a dataset column joined to it) the same holds
    for that grouping. Raises ``ValueError`` for ``k < 2``, missing groups, or fewer groups
    than folds.
    """
    if k < 2:
        raise ValueError(f"k must be >= 2 (got {k})")
    if group_col not in images.columns or images[group_col].isna().any():
        raise ValueError(f"every image needs a {group_col!r} to be assigned to a fold")
    sizes = images.groupby(group_col, sort=True).size()
    if len(sizes) < k:
        raise ValueError(f"{len(sizes)} patient(s) cannot fill {k} folds")
    rng = np.random.default_rng(seed)
    patients = sizes.index.to_numpy(dtype=object)[rng.permutation(len(sizes))]
    order = np.argsort(-sizes.loc[patients].to_numpy(), kind="stable")
    load = np.zeros(k)
    assignment: dict[object, int] = {}
    for pid in patients[order]:
        fold = int(np.argmin(load))  # ties: the lowest fold number
        assignment[pid] = fold
        load[fold] += sizes.loc[pid]
    return images[group_col].map(assignment).astype(int).rename("fold")


def combine_manifests(manifests: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The training sets' manifests (dataset name → table) as one table with a leading
    ``dataset`` column. A case id in more than one set is an error (it would be split twice)."""
    parts = [part.copy() for part in manifests.values()]
    for dataset, part in zip(manifests, parts, strict=True):
        part.insert(0, "dataset", dataset)
    table = pd.concat(parts, ignore_index=True)
    twice = table["case_id"][table["case_id"].duplicated()]
    if len(twice):
        raise ValueError(f"{twice.nunique()} case id(s) occur in more than one training set: {sorted(twice)[:3]}")
    return table


def split_table(
    manifest: pd.DataFrame, *, val_fraction: float, test_fraction: float, seed: int
) -> pd.DataFrame:
    """``split.csv`` of a manifest: case, patient, dataset and split, by patient and stratified,
    each dataset of a combined manifest split on its own (so every dataset is in every split).
    A single data-pipeline manifest (no ``dataset`` column) is its ``source_dataset``."""
    dataset = manifest["dataset"] if "dataset" in manifest.columns else manifest["source_dataset"]
    frame = manifest if "dataset" in manifest.columns else manifest.assign(dataset=dataset)
    split = patient_split(frame, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, group_col="dataset")
    return pd.DataFrame({"case_id": manifest["case_id"], "patient_id": manifest["patient_id"], "dataset": dataset, "split": split})


def split_counts(table: pd.DataFrame) -> tuple[dict[str, int], dict[str, int]]:
    """Images and patients per split of a ``split.csv`` table."""
    images = {k: int(v) for k, v in table["split"].value_counts().items()}
    patients = {k: int(v) for k, v in table.groupby("split")["patient_id"].nunique().items()}
    return images, patients
