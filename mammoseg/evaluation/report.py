"""The held-out evaluation: stream cases, keep small per-image stats, report honest numbers.

:func:`evaluate` reads one :class:`EvalCase` at a time (a generator is fine) and keeps only a
per-image score row and a few per-threshold detection counts — never the full-size maps — so the
memory use does not grow with image size × number of cases.

Headline numbers: mean per-image Dice and IoU and the pooled Dice, each with a 95 %
patient-clustered bootstrap interval; a subgroup table (every subgroup key of the cases plus the
lesion size bin); the detection view (sensitivity at 0.5, 1 and 2 false positives per image,
FROC points). ``EvaluationResult.definitions`` states every rule in words, and goes wherever the
numbers go.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Final

import numpy as np
import pandas as pd

from mammoseg.evaluation.bootstrap import bootstrap_ci, bootstrap_pooled_dice_ci
from mammoseg.evaluation.detection import (
    DEFAULT_FROC_THRESHOLDS,
    DetectionCounts,
    Lesion,
    detection_counts,
    froc_from_counts,
    froc_operating_points,
    lesions_from_truth,
    sensitivity_at_fp,
)
from mammoseg.evaluation.metrics import (
    SIZE_BINS,
    EvaluationInputError,
    as_mask,
    as_prob,
    score_row,
    scores_frame,
)
from mammoseg.evaluation.postprocess import segment

#: Above this mean Dice the pipeline runs :func:`leakage_audit` before believing the number.
SUSPICIOUS_DICE_MEAN: Final = 0.9

#: Name of the automatic subgroup built from the truth area (see ``metrics.lesion_size_bin``).
SIZE_GROUP: Final = "lesion_size"

_CI_ALPHA: Final = 0.05


@dataclass(frozen=True, eq=False)
class EvalCase:
    """One held-out image, everything in the **original image geometry**.

    ``prob``: float probabilities in [0, 1] (already mapped back with ``Transform.to_original``).
    ``truth``: bool union mask. ``lesions``: per-lesion bool masks or circles ``(cx, cy, r)`` for
    the detection view; ``None`` means one lesion per connected component of ``truth``, ``[]``
    means the image has no lesion. ``subgroups``: short categorical labels (dataset, pathology,
    density…), never header fields. ``pred``: the mask scored for Dice and IoU when the caller
    made it itself (``None``: the map thresholded and post-processed as :func:`evaluate` says).
    """

    case_id: str
    patient_id: str
    prob: np.ndarray
    truth: np.ndarray
    lesions: Sequence[Lesion] | None = None
    subgroups: Mapping[str, str] = field(default_factory=dict)
    pred: np.ndarray | None = None


@dataclass(frozen=True)
class DetectionSummary:
    """Lesion-level results (no confidence interval)."""

    sensitivity_at_0_5fp: float
    sensitivity_at_1fp: float
    sensitivity_at_2fp: float
    sensitivity_at_threshold: float
    fp_per_image_at_threshold: float
    n_lesions: int
    min_area: int
    froc: pd.DataFrame
    top_k: int | None = None  # at most this many components per image counted (the lesion list)


def definitions(
    threshold: float, n_boot: int, min_area: int, top_k: int | None = None, keep_components: int | None = None,
    min_score: float | None = None,
) -> dict[str, str]:
    """The rules behind every number, in words (goes into reports and the model card)."""
    cut = (
        f" Connected components of that mask whose highest probability inside is below {min_score:g} are "
        "dropped (post-processing chosen with the threshold)."
        if min_score
        else ""
    )
    kept = (
        f" Of the connected components of that mask, only the {keep_components} with the highest "
        "probability inside are kept (post-processing chosen with the threshold)."
        if keep_components
        else ""
    )
    return {
        "geometry": "All metrics are computed in the original image geometry (predictions mapped "
        "back through the preprocessing transform), not on the network's resized input.",
        "threshold": f"A pixel is positive when probability >= {threshold:g}; the threshold was "
        "chosen on the validation split (maximising mean per-image Dice), never on the test split."
        + cut + kept,
        "dice_mean": "Mean over images of the per-image Dice 2TP/(2TP+FP+FN).",
        "iou_mean": "Mean over images of the per-image IoU TP/(TP+FP+FN).",
        "empty_masks": "An image with empty truth and empty prediction scores 1 (correct "
        "rejection); empty truth with any predicted pixel scores 0; a missed lesion scores 0.",
        "dice_pooled": "2·ΣTP / (2·ΣTP + ΣFP + ΣFN) over all pixels of all images; "
        "dominated by large lesions.",
        "ci": f"95% percentile interval of {n_boot} bootstrap resamples of patients (all images "
        "of a drawn patient are kept together); the point estimate uses all images."
        if n_boot
        else "No confidence intervals were computed (n_boot = 0).",
        "lesion_size": "Truth area relative to the whole image: none (0), small (< 0.5%), medium "
        "(0.5% to < 2%), large (>= 2%).",
        "detection": "A lesion is hit when the centroid of an 8-connected predicted component "
        f"(area >= {min_area} px"
        + (f"; at most the {top_k} highest-scoring components per image, as in the lesion list" if top_k else "")
        + ") lies inside it (mask, or circle for MIAS); a component inside "
        "no lesion is a false positive. Components are recomputed at every threshold, and at each "
        "threshold the marks are also cut by their score (the FROC of CAD studies). Sensitivity at "
        "k FP/image = best sensitivity over these operating points (threshold, score cut-off) with "
        "at most k false positives per image (0 if none).",
    }


@dataclass(frozen=True, eq=False)
class EvaluationResult:
    """Numbers of one held-out evaluation; :meth:`to_dict` is JSON-safe (NaN → null)."""

    dice_mean: float
    iou_mean: float
    dice_pooled: float
    n_cases: int
    n_patients: int
    ci95: dict[str, list[float] | None]
    threshold: float
    subgroups: pd.DataFrame
    detection: DetectionSummary
    definitions: dict[str, str]
    per_image: pd.DataFrame
    n_boot: int
    seed: int

    def to_dict(self, *, include_per_image: bool = False) -> dict[str, Any]:
        sub = [
            {
                "group": r.group,
                "value": r.value,
                "n": r.n,
                "n_patients": r.n_patients,
                "dice_mean": r.dice_mean,
                "ci": None if pd.isna(r.ci_low) else [r.ci_low, r.ci_high],
            }
            for r in self.subgroups.itertuples(index=False)
        ]
        det = self.detection
        out: dict[str, Any] = {
            "dice_mean": self.dice_mean,
            "iou_mean": self.iou_mean,
            "dice_pooled": self.dice_pooled,
            "n_cases": self.n_cases,
            "n_patients": self.n_patients,
            "ci95": self.ci95,
            "threshold": self.threshold,
            "subgroups": sub,
            "detection": {
                "sensitivity_at_0_5fp": det.sensitivity_at_0_5fp,
                "sensitivity_at_1fp": det.sensitivity_at_1fp,
                "sensitivity_at_2fp": det.sensitivity_at_2fp,
                "sensitivity_at_threshold": det.sensitivity_at_threshold,
                "fp_per_image_at_threshold": det.fp_per_image_at_threshold,
                "n_lesions": det.n_lesions,
                "min_area": det.min_area,
                "top_k": det.top_k,
                "froc": det.froc[["threshold", "sensitivity", "fp_per_image"]].to_dict("records"),
            },
            "definitions": dict(self.definitions),
            "n_boot": self.n_boot,
            "seed": self.seed,
        }
        if include_per_image:
            out["per_image"] = self.per_image.to_dict("records")
        return _jsonable(out)

    def markdown_table(self, title: str = "Evaluation") -> str:
        """A Markdown summary (headline table, subgroups, detection, definitions); ``title``
        names the evaluated set (e.g. ``internal-test-cbis-ddsm``)."""

        def num(v: float | None) -> str:
            return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"

        def ci(key: str) -> str:
            c = self.ci95.get(key)
            return "n/a" if not c else f"{num(c[0])} – {num(c[1])}"

        lines = [
            (
                f"**{_md(title)}** — {self.n_cases} images from {self.n_patients} patients, "
                f"threshold {round(self.threshold, 3):g} (chosen on validation)."
            ),
            "",
            "| metric | value | 95% CI (patient bootstrap) |",
            "|---|---|---|",
            f"| Dice, mean per image | {num(self.dice_mean)} | {ci('dice_mean')} |",
            f"| IoU, mean per image | {num(self.iou_mean)} | {ci('iou_mean')} |",
            f"| Dice, pooled over pixels | {num(self.dice_pooled)} | {ci('dice_pooled')} |",
            "",
            "| subgroup | value | images | patients | Dice mean | 95% CI |",
            "|---|---|---|---|---|---|",
        ]
        for r in self.subgroups.itertuples(index=False):
            rng = "n/a" if pd.isna(r.ci_low) else f"{num(r.ci_low)} – {num(r.ci_high)}"
            lines.append(
                f"| {_md(r.group)} | {_md(r.value)} | {r.n} | {r.n_patients} | "
                f"{num(r.dice_mean)} | {rng} |"
            )
        d = self.detection
        lines += [
            "",
            (
                f"**Detection** ({d.n_lesions} lesions): sensitivity {num(d.sensitivity_at_0_5fp)} at "
                f"0.5 FP/image, {num(d.sensitivity_at_1fp)} at 1 FP/image, "
                f"{num(d.sensitivity_at_2fp)} at 2 FP/image; at the chosen threshold "
                f"({round(self.threshold, 3):g}): sensitivity {num(d.sensitivity_at_threshold)} with "
                f"{_fp(d.fp_per_image_at_threshold)} FP/image."
            ),
            "",
            "**Definitions**",
            "",
        ]
        lines += [f"- *{k}*: {v}" for k, v in self.definitions.items()]
        return "\n".join(lines) + "\n"


def _fp(v: float | None) -> str:
    """False positives per image: 2 decimals below 10, 1 above (88.4, not 88.400)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.2f}" if v < 10 else f"{v:.1f}"


def _md(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return [_jsonable(v) for v in x.tolist()]
    if isinstance(x, bool | np.bool_):
        return bool(x)
    if isinstance(x, int | np.integer):
        return int(x)
    if isinstance(x, float | np.floating):
        return None if not math.isfinite(float(x)) else float(x)
    if x is None or x is pd.NA or x is pd.NaT:
        return None
    if isinstance(x, str):
        return x
    return str(x)


def _case_stats(
    case: EvalCase, threshold: float, froc_thresholds: np.ndarray, min_area: int, top_k: int | None = None,
    keep_components: int | None = None, min_score: float | None = None,
) -> tuple[dict[str, object], DetectionCounts]:
    if not isinstance(case.case_id, str) or not case.case_id:
        raise EvaluationInputError("a case has no case_id")
    try:
        if not isinstance(case.patient_id, str) or not case.patient_id:
            raise EvaluationInputError("no patient_id")
        prob = as_prob(case.prob)
        truth = as_mask(case.truth, "truth")
        if prob.shape != truth.shape:
            raise EvaluationInputError(
                f"prob shape {prob.shape} != truth shape {truth.shape} "
                "(map the prediction back to the original geometry first)"
            )
        if SIZE_GROUP in case.subgroups:
            raise EvaluationInputError(f"subgroup name {SIZE_GROUP!r} is reserved")
        if case.pred is None:
            pred = segment(prob, threshold, keep_components, min_score)
        else:
            pred = as_mask(case.pred, "pred")
            if pred.shape != truth.shape:
                raise EvaluationInputError(f"pred shape {pred.shape} != truth shape {truth.shape}")
        row = score_row(case.case_id, case.patient_id, pred, truth, case.subgroups)
        lesions = lesions_from_truth(truth) if case.lesions is None else list(case.lesions)
        counts = detection_counts(prob, lesions, froc_thresholds, min_area=min_area, top_k=top_k)
    except EvaluationInputError as exc:
        raise EvaluationInputError(f"case {case.case_id}: {exc}") from exc
    return row, counts


def _subgroup_table(
    per_image: pd.DataFrame, groups: list[str], n_boot: int, seed: int
) -> pd.DataFrame:
    rows = []
    for group in groups:
        col = "size_bin" if group == SIZE_GROUP else group
        values = per_image[col].astype(object).where(per_image[col].notna(), "(missing)")
        order = (
            [v for v in SIZE_BINS if (values == v).any()]
            if group == SIZE_GROUP
            else sorted(values.unique(), key=str)
        )
        for value in order:
            sub = per_image[values == value]
            lo = hi = float("nan")
            if n_boot:
                _, lo, hi = bootstrap_ci(sub, "dice", n_boot=n_boot, seed=seed, alpha=_CI_ALPHA)
            rows.append(
                {
                    "group": group,
                    "value": str(value),
                    "n": len(sub),
                    "n_patients": int(sub["patient_id"].nunique()),
                    "dice_mean": float(sub["dice"].mean()),
                    "ci_low": lo,
                    "ci_high": hi,
                }
            )
    return pd.DataFrame(
        rows, columns=["group", "value", "n", "n_patients", "dice_mean", "ci_low", "ci_high"]
    )


def evaluate(
    cases: Iterable[EvalCase],
    *,
    threshold: float,
    n_boot: int = 2000,
    seed: int = 0,
    min_area: int = 1,
    top_k: int | None = None,
    keep_components: int | None = None,
    min_score: float | None = None,
    froc_thresholds: Sequence[float] | np.ndarray = DEFAULT_FROC_THRESHOLDS,
) -> EvaluationResult:
    """Evaluate held-out cases at a fixed ``threshold`` (chosen on validation).

    The scored mask of a case is ``prob >= threshold`` with only its components scoring at
    least ``min_score`` and of those its ``keep_components`` highest-scoring (all when None;
    :func:`~mammoseg.evaluation.postprocess.segment`),
    unless the case brings its own ``pred``. The detection view sweeps the map itself.

    Streams ``cases``; ``n_boot = 0`` skips the bootstrap (intervals are then ``None``). Raises
    :class:`EvaluationInputError` naming the case for unusable input, and for duplicate case ids.
    """
    if not 0.0 < float(threshold) <= 1.0:
        raise EvaluationInputError(f"threshold {threshold!r} must be within (0, 1]")
    if n_boot < 0:
        raise EvaluationInputError("n_boot must be >= 0")
    thr = np.unique(np.append(np.asarray(froc_thresholds, dtype=np.float64), float(threshold)))
    rows: list[dict[str, object]] = []
    counts: list[DetectionCounts] = []
    seen: set[str] = set()
    groups: list[str] = []
    for case in cases:
        if case.case_id in seen:
            raise EvaluationInputError(f"case {case.case_id}: duplicate case id")
        seen.add(case.case_id)
        row, cnt = _case_stats(case, float(threshold), thr, min_area, top_k, keep_components, min_score)
        rows.append(row)
        counts.append(cnt)
        groups += [str(g) for g in case.subgroups if str(g) not in groups]
    if not rows:
        raise EvaluationInputError("no cases to evaluate")

    per_image = scores_frame(rows)
    ci95: dict[str, list[float] | None] = {"dice_mean": None, "iou_mean": None, "dice_pooled": None}
    if n_boot:
        for key, col in (("dice_mean", "dice"), ("iou_mean", "iou")):
            _, lo, hi = bootstrap_ci(per_image, col, n_boot=n_boot, seed=seed, alpha=_CI_ALPHA)
            ci95[key] = [lo, hi]
        _, lo, hi = bootstrap_pooled_dice_ci(per_image, n_boot=n_boot, seed=seed, alpha=_CI_ALPHA)
        ci95["dice_pooled"] = [lo, hi]
    tp, fp, fn = (int(per_image[c].sum()) for c in ("tp", "fp", "fn"))
    den = 2 * tp + fp + fn
    froc = froc_from_counts(counts)
    points = froc_operating_points(counts)
    at_thr = froc[np.isclose(froc["threshold"], float(threshold))].iloc[0]
    detection = DetectionSummary(
        sensitivity_at_0_5fp=sensitivity_at_fp(points, 0.5),
        sensitivity_at_1fp=sensitivity_at_fp(points, 1.0),
        sensitivity_at_2fp=sensitivity_at_fp(points, 2.0),
        sensitivity_at_threshold=float(at_thr["sensitivity"]),
        fp_per_image_at_threshold=float(at_thr["fp_per_image"]),
        n_lesions=int(froc["n_lesions"].iloc[0]),
        min_area=min_area,
        top_k=top_k,
        froc=froc,
    )
    return EvaluationResult(
        dice_mean=float(per_image["dice"].mean()),
        iou_mean=float(per_image["iou"].mean()),
        dice_pooled=1.0 if den == 0 else 2 * tp / den,
        n_cases=len(per_image),
        n_patients=int(per_image["patient_id"].nunique()),
        ci95=ci95,
        threshold=float(threshold),
        subgroups=_subgroup_table(per_image, [*groups, SIZE_GROUP], n_boot, seed),
        detection=detection,
        definitions=definitions(float(threshold), n_boot, min_area, top_k, keep_components, min_score),
        per_image=per_image,
        n_boot=n_boot,
        seed=seed,
    )


def is_suspicious(result: EvaluationResult, *, dice_limit: float = SUSPICIOUS_DICE_MEAN) -> bool:
    """True when the score is high enough that leakage must be ruled out before believing it."""
    return result.dice_mean > dice_limit


# -- leakage audit --------------------------------------------------------------------------
def _frame(manifest: pd.DataFrame | Iterable[Mapping[str, object]], name: str) -> pd.DataFrame:
    df = manifest if isinstance(manifest, pd.DataFrame) else pd.DataFrame(list(manifest))
    if "patient_id" not in df.columns:
        raise EvaluationInputError(f"the {name} manifest has no patient_id column")
    return df


def _overlap(a: pd.Series, b: pd.Series) -> list[str]:
    left = {str(v) for v in a.dropna() if str(v)}
    right = {str(v) for v in b.dropna() if str(v)}
    return sorted(left & right)


def _examples(values: list[str], k: int = 5) -> str:
    more = f" and {len(values) - k} more" if len(values) > k else ""
    return ", ".join(values[:k]) + more


def leakage_audit(
    train_manifest: pd.DataFrame | Iterable[Mapping[str, object]],
    test_manifest: pd.DataFrame | Iterable[Mapping[str, object]],
) -> list[str]:
    """Findings of train/test leakage, one readable sentence each; ``[]`` means none found.

    Checks overlapping pseudonymous patient ids (required column), and — where both manifests
    have the column — case ids, source image URIs, preprocessed NPZ keys, NPZ ETags and the
    input content hash (file name of the content-addressed NPZ key, whatever the parameters).
    """
    train = _frame(train_manifest, "train")
    test = _frame(test_manifest, "test")
    findings: list[str] = []

    def check(col: str, what: str, a: pd.Series | None = None, b: pd.Series | None = None) -> None:
        if a is None or b is None:
            if col not in train.columns or col not in test.columns:
                return
            a, b = train[col], test[col]
        shared = _overlap(a, b)
        if shared:
            findings.append(f"{len(shared)} {what} in both train and test: {_examples(shared)}")

    check("patient_id", "patient id(s)")
    check("case_id", "case id(s)")
    check("image_uri", "source image(s)")
    check("npz_key", "preprocessed object key(s)")
    check("npz_etag", "preprocessed object ETag(s) (identical content)")
    if "npz_key" in train.columns and "npz_key" in test.columns:

        def stem(s: pd.Series) -> pd.Series:
            return s.dropna().map(lambda k: PurePosixPath(str(k)).stem)

        shared_keys = set(_overlap(train["npz_key"], test["npz_key"]))
        a = stem(train["npz_key"][~train["npz_key"].astype(str).isin(shared_keys)])
        b = stem(test["npz_key"][~test["npz_key"].astype(str).isin(shared_keys)])
        check("npz_key", "input content hash(es) under different preprocessing keys", a, b)
    return findings
