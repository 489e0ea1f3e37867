"""Patient-clustered bootstrap confidence intervals.

Images of one patient are correlated (both breasts, CC and MLO views, DM and CM images), so the
unit of resampling is the **patient**: each resample draws as many patients as there are, with
replacement, and recomputes the statistic over *all images* of the drawn patients (a patient
drawn twice contributes its images twice). The interval is the percentile interval
``[q(alpha/2), q(1 - alpha/2)]`` of the resampled statistics; the point estimate is the
statistic on the original data. Resampling images instead (``cluster_col=None``) gives
intervals that are too narrow when images of a patient are alike.

With few patients the percentile interval is coarse (with 4 patients a mean can only take a
handful of values) and a single patient gives a zero-width interval: report ``n_patients``
next to every interval.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Final

import numpy as np
import pandas as pd

from mammoseg.evaluation.metrics import EvaluationInputError

#: Resamples drawn per block (memory: block × n_patients counts).
_BLOCK: Final = 256


def _clusters(df: pd.DataFrame, cluster_col: str | None) -> tuple[np.ndarray, int]:
    """Integer cluster code per row (0..n_clusters-1) and the number of clusters."""
    if df.empty:
        raise EvaluationInputError("cannot bootstrap an empty table")
    if cluster_col is None:
        return np.arange(len(df)), len(df)
    if cluster_col not in df.columns:
        raise EvaluationInputError(f"cluster column {cluster_col!r} is missing")
    col = df[cluster_col]
    if col.isna().any():
        raise EvaluationInputError(f"cluster column {cluster_col!r} has missing values")
    codes, uniques = pd.factorize(col.astype(str), sort=True)
    return codes.astype(np.int64), len(uniques)


def _check(n_boot: int, alpha: float) -> None:
    if n_boot < 1:
        raise EvaluationInputError("n_boot must be >= 1")
    if not 0.0 < alpha < 1.0:
        raise EvaluationInputError("alpha must be within (0, 1)")


def cluster_counts(n_clusters: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Blocks of resamples: ``counts[b, c]`` = how often cluster ``c`` is drawn in resample ``b``.

    Deterministic for a given ``(n_clusters, n_boot, seed)``.
    """
    rng = np.random.default_rng(seed)
    done = 0
    while done < n_boot:
        b = min(_BLOCK, n_boot - done)
        draws = rng.integers(0, n_clusters, size=(b, n_clusters))
        offsets = (np.arange(b) * n_clusters)[:, None]
        counts = np.bincount((draws + offsets).ravel(), minlength=b * n_clusters)
        yield counts.reshape(b, n_clusters)
        done += b


def _values(df: pd.DataFrame, col: str) -> np.ndarray:
    if col not in df.columns:
        raise EvaluationInputError(f"column {col!r} is missing")
    v = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=np.float64)
    if not np.isfinite(v).all():
        raise EvaluationInputError(f"column {col!r} has missing or non-finite values")
    return v


def _interval(boot: np.ndarray, alpha: float) -> tuple[float, float]:
    lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bootstrap_ci(
    df: pd.DataFrame,
    value_col: str,
    *,
    cluster_col: str | None = "patient_id",
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    statistic: Callable[[np.ndarray], float] = np.mean,
) -> tuple[float, float, float]:
    """``(point, low, high)`` of ``statistic(df[value_col])`` with a cluster bootstrap interval.

    ``statistic=np.mean`` (the default) is computed for all resamples at once from per-patient
    sums; any other statistic is evaluated once per resample on the drawn images.
    """
    _check(n_boot, alpha)
    values = _values(df, value_col)
    codes, n_clusters = _clusters(df, cluster_col)
    boot = np.empty(n_boot)
    pos = 0
    if statistic is np.mean:
        # centre on one data value: constant data then gives exactly constant resamples
        ref = values[0]
        centred = values - ref
        point = float(ref + centred.mean())
        sums = np.bincount(codes, weights=centred, minlength=n_clusters)
        sizes = np.bincount(codes, minlength=n_clusters).astype(np.float64)
        for counts in cluster_counts(n_clusters, n_boot, seed):
            boot[pos : pos + len(counts)] = ref + (counts @ sums) / (counts @ sizes)
            pos += len(counts)
    else:
        point = float(statistic(values))
        for counts in cluster_counts(n_clusters, n_boot, seed):
            for row in counts:
                boot[pos] = float(statistic(np.repeat(values, row[codes])))
                pos += 1
    lo, hi = _interval(boot, alpha)
    return point, lo, hi


def bootstrap_pooled_dice_ci(
    per_image_df: pd.DataFrame,
    *,
    cluster_col: str | None = "patient_id",
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    empty_score: float = 1.0,
) -> tuple[float, float, float]:
    """``(point, low, high)`` of the pooled Dice 2ΣTP/(2ΣTP+ΣFP+ΣFN), resampling patients.

    Uses the ``tp``, ``fp``, ``fn`` columns of the per-image table; a resample with no positive
    pixel at all scores ``empty_score``.
    """
    _check(n_boot, alpha)
    tp, fp, fn = (_values(per_image_df, c) for c in ("tp", "fp", "fn"))
    codes, n_clusters = _clusters(per_image_df, cluster_col)

    def pooled(t: np.ndarray, f_p: np.ndarray, f_n: np.ndarray) -> np.ndarray:
        den = 2 * t + f_p + f_n
        return np.where(den == 0, empty_score, 2 * t / np.where(den == 0, 1, den))

    sums = np.stack([np.bincount(codes, weights=v, minlength=n_clusters) for v in (tp, fp, fn)])
    point = float(pooled(*(s.sum(keepdims=True) for s in sums))[0])
    boot = np.empty(n_boot)
    pos = 0
    for counts in cluster_counts(n_clusters, n_boot, seed):
        t, f_p, f_n = (counts @ s for s in sums)
        boot[pos : pos + len(counts)] = pooled(t, f_p, f_n)
        pos += len(counts)
    lo, hi = _interval(boot, alpha)
    return point, lo, hi
