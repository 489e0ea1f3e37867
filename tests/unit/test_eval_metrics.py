"""Per-image metrics, threshold choice, the streaming evaluation report, leakage audit, overlays.

Expected values are computed by hand in the comments.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
import pytest

from mammoseg.evaluation.metrics import (
    EvaluationInputError,
    MaskPair,
    binarize,
    choose_threshold,
    dice,
    iou,
    lesion_size_bin,
    per_image_scores,
    pooled_dice,
    threshold_counts,
    threshold_sweep,
)
from mammoseg.evaluation.overlays import best_median_worst, overlay_grid, overlay_png
from mammoseg.evaluation.report import EvalCase, evaluate, is_suspicious, leakage_audit


def _masks() -> tuple[np.ndarray, np.ndarray]:
    """pred: 2x2 block at the top-left (4 px); truth: rows 1-2, cols 0-2 (6 px); overlap 2 px."""
    pred = np.zeros((8, 8), bool)
    pred[0:2, 0:2] = True
    truth = np.zeros((8, 8), bool)
    truth[1:3, 0:3] = True
    return pred, truth


# -- per-image metrics ------------------------------------------------------------------------
def test_dice_and_iou_hand_computed() -> None:
    pred, truth = _masks()
    assert dice(pred, truth) == pytest.approx(2 * 2 / (4 + 6))  # 0.4
    assert iou(pred, truth) == pytest.approx(2 / (4 + 6 - 2))  # 0.25


def test_empty_mask_rules() -> None:
    empty = np.zeros((8, 8), bool)
    some = np.zeros((8, 8), bool)
    some[3, 3] = True
    assert dice(empty, empty) == 1.0  # correct rejection
    assert iou(empty, empty) == 1.0
    assert dice(empty, empty, empty_score=0.0) == 0.0
    assert dice(some, empty) == 0.0  # false alarm on a normal image
    assert dice(empty, some) == 0.0  # missed lesion
    assert iou(some, empty) == 0.0


def test_integer_masks_accepted_float_refused_and_shapes_checked() -> None:
    pred, truth = _masks()
    assert dice(pred.astype(np.uint8) * 255, truth.astype(np.uint8)) == pytest.approx(0.4)
    with pytest.raises(EvaluationInputError, match="threshold probabilities"):
        dice(pred.astype(np.float32), truth)
    with pytest.raises(EvaluationInputError, match="shapes differ"):
        dice(pred, truth[:, :7])
    with pytest.raises(EvaluationInputError, match="2-D"):
        dice(pred[None], truth[None])


def test_pooled_dice_is_dominated_by_the_large_lesion() -> None:
    small_pred, small_truth = _masks()  # tp 2, fp 2, fn 4 -> Dice 0.4
    big = np.zeros((16, 16), bool)
    big[0:6, 0:5] = True  # 30 px, perfectly predicted -> Dice 1
    # pooled: 2*32 / (2*32 + 2 + 4) = 64/70
    assert pooled_dice([small_pred, big], [small_truth, big]) == pytest.approx(64 / 70)
    # mean per image would be (0.4 + 1) / 2 = 0.7
    e = np.zeros((4, 4), bool)
    assert pooled_dice([e], [e]) == 1.0
    with pytest.raises(EvaluationInputError, match="different lengths"):
        pooled_dice([e, e], [e])


@pytest.mark.parametrize(
    ("truth_px", "expected"),
    [(0, "none"), (20, "small"), (21, "medium"), (81, "medium"), (82, "large")],
)
def test_lesion_size_bins_on_a_64px_image(truth_px: int, expected: str) -> None:
    # 64*64 = 4096 px: 0.5 % = 20.48 px, 2 % = 81.92 px
    assert lesion_size_bin(truth_px, 64 * 64) == expected


def test_per_image_scores_table_and_no_mutation() -> None:
    pred, truth = _masks()
    pred_before, truth_before = pred.copy(), truth.copy()
    empty = np.zeros((8, 8), bool)
    df = per_image_scores(
        [
            MaskPair("cs-a", "pt-1", pred, truth, {"dataset": "cbis-ddsm"}),
            MaskPair("cs-b", "pt-1", empty, empty, {"dataset": "mini-mias"}),
        ]
    )
    assert list(df.columns[:12]) == [
        "case_id", "patient_id", "dice", "iou", "truth_pixels", "pred_pixels",
        "tp", "fp", "fn", "image_pixels", "lesion_fraction", "size_bin",
    ]  # fmt: skip
    a = df.set_index("case_id").loc["cs-a"]
    assert (a.tp, a.fp, a.fn, a.truth_pixels, a.pred_pixels) == (2, 2, 4, 6, 4)
    assert a.lesion_fraction == pytest.approx(6 / 64)
    assert a.size_bin == "large"
    assert df["dataset"].tolist() == ["cbis-ddsm", "mini-mias"]
    assert df["dice"].tolist() == pytest.approx([0.4, 1.0])
    np.testing.assert_array_equal(pred, pred_before)
    np.testing.assert_array_equal(truth, truth_before)
    with pytest.raises(EvaluationInputError, match="duplicate case ids"):
        per_image_scores([MaskPair("x", "p", empty, empty), MaskPair("x", "p", empty, empty)])
    with pytest.raises(EvaluationInputError, match="clashes"):
        per_image_scores([MaskPair("x", "p", empty, empty, {"dice": "high"})])


# -- threshold on validation ------------------------------------------------------------------
def test_choose_threshold_hand_computed() -> None:
    t1 = np.array([[1, 1, 0, 0]], bool)
    p1 = np.array([[0.9, 0.6, 0.4, 0.2]], np.float32)
    t2 = np.zeros((1, 4), bool)
    p2 = np.array([[0.55, 0.1, 0.1, 0.1]], np.float32)
    # t=0.3: img1 tp2 fp1 -> 0.8, img2 FP -> 0   : mean 0.4
    # t=0.5: img1 perfect -> 1,   img2 FP -> 0   : mean 0.5
    # t=0.7: img1 tp1 fn1 -> 2/3, img2 empty -> 1: mean 5/6
    sweep = threshold_sweep([p1, p2], [t1, t2], [0.3, 0.5, 0.7])
    assert sweep["dice_mean"].tolist() == pytest.approx([0.4, 0.5, 5 / 6])
    # pooled at 0.5: tp 2, fp 1 -> 4/5
    assert sweep["dice_pooled"].iloc[1] == pytest.approx(0.8)
    assert choose_threshold([p1, p2], [t1, t2], [0.7, 0.3, 0.5]) == pytest.approx(0.7)
    # generators are fine (maps are streamed)
    assert choose_threshold((p for p in [p1, p2]), iter([t1, t2]), [0.3, 0.5]) == 0.5


def test_threshold_counts_match_direct_thresholding_including_ties() -> None:
    rng = np.random.default_rng(1)
    prob = rng.random((40, 50)).astype(np.float32)
    prob[0, :5] = [0.1, 0.3, 0.5, 0.7, 0.9]  # values exactly on candidates count as positive
    truth = rng.random((40, 50)) > 0.7
    cands = np.linspace(0.1, 0.9, 17)
    tp, fp, fn = threshold_counts(prob, truth, cands)
    for k, t in enumerate(cands):
        pred = binarize(prob, t)
        assert tp[k] == np.count_nonzero(pred & truth)
        assert fp[k] == np.count_nonzero(pred & ~truth)
        assert fn[k] == np.count_nonzero(~pred & truth)


def test_probability_maps_are_checked() -> None:
    truth = np.zeros((4, 4), bool)
    with pytest.raises(EvaluationInputError, match=r"\[0, 1\]"):
        choose_threshold([np.full((4, 4), 1.5)], [truth])
    with pytest.raises(EvaluationInputError, match="NaN"):
        choose_threshold([np.full((4, 4), np.nan)], [truth])
    # float rounding just above 1 after resampling is tolerated, not clipped
    nearly = np.full((4, 4), 1.0 + 5e-7, np.float64)
    assert choose_threshold([nearly], [~truth], [0.5]) == 0.5
    assert nearly[0, 0] == 1.0 + 5e-7
    with pytest.raises(EvaluationInputError, match="no validation images"):
        choose_threshold([], [])


# -- streaming evaluation -------------------------------------------------------------------
def _cases() -> list[EvalCase]:
    """a: half of a 64-px lesion found (Dice 2/3, IoU 1/2); b: normal, correctly empty
    (Dice 1); c: 16-px lesion found plus a 4-px false positive blob (Dice 32/36, IoU 16/20)."""
    a_truth = np.zeros((32, 32), bool)
    a_truth[4:12, 4:12] = True
    a_prob = np.zeros((32, 32), np.float32)
    a_prob[4:12, 4:8] = 0.9
    b_truth = np.zeros((32, 32), bool)
    b_prob = np.full((32, 32), 0.1, np.float32)
    c_truth = np.zeros((32, 32), bool)
    c_truth[20:24, 20:24] = True
    c_prob = np.zeros((32, 32), np.float32)
    c_prob[20:24, 20:24] = 0.8
    c_prob[0:2, 28:30] = 0.7
    return [
        EvalCase("cs-a", "pt-1", a_prob, a_truth, subgroups={"dataset": "x"}),
        EvalCase("cs-b", "pt-1", b_prob, b_truth, subgroups={"dataset": "x"}),
        EvalCase("cs-c", "pt-2", c_prob, c_truth, subgroups={"dataset": "y"}),
    ]


def test_evaluate_hand_computed_numbers() -> None:
    cases = _cases()
    before = [(c.prob.copy(), c.truth.copy()) for c in cases]
    res = evaluate((c for c in cases), threshold=0.5, n_boot=500, seed=3)
    assert res.dice_mean == pytest.approx((2 / 3 + 1 + 32 / 36) / 3)
    assert res.iou_mean == pytest.approx((0.5 + 1 + 0.8) / 3)
    # pooled: tp 32+16, fp 4, fn 32 -> 96 / (96 + 4 + 32)
    assert res.dice_pooled == pytest.approx(96 / 132)
    assert (res.n_cases, res.n_patients) == (3, 2)
    # two patients: resampled means can only be p1 only (5/6), p2 only (8/9) or both (point)
    lo, hi = res.ci95["dice_mean"]
    assert 5 / 6 - 1e-9 <= lo < hi <= 8 / 9 + 1e-9
    sub = res.subgroups.set_index(["group", "value"])
    assert sub.loc[("dataset", "x"), "n"] == 2
    assert sub.loc[("dataset", "x"), "dice_mean"] == pytest.approx((2 / 3 + 1) / 2)
    assert sub.loc[("dataset", "y"), "n_patients"] == 1
    # lesion size: a 64/1024 = 6.25 % large, b none, c 16/1024 = 1.6 % medium
    sizes = res.subgroups[res.subgroups["group"] == "lesion_size"]
    assert sizes["value"].tolist() == ["none", "medium", "large"]
    # detection: lesions from the truth components; both hit, one FP blob over 3 images
    assert res.detection.n_lesions == 2
    assert res.detection.sensitivity_at_threshold == 1.0
    assert res.detection.fp_per_image_at_threshold == pytest.approx(1 / 3)
    assert res.detection.sensitivity_at_1fp == 1.0
    for c, (p, t) in zip(cases, before, strict=True):  # caller's arrays untouched
        np.testing.assert_array_equal(c.prob, p)
        np.testing.assert_array_equal(c.truth, t)


def test_evaluation_result_is_json_safe_and_renders_markdown() -> None:
    res = evaluate(_cases(), threshold=0.5, n_boot=200, seed=0)
    d = res.to_dict()
    text = json.dumps(d, allow_nan=False)
    assert "per_image" not in d
    assert set(d["ci95"]) == {"dice_mean", "iou_mean", "dice_pooled"}
    assert d["threshold"] == 0.5
    assert "validation" in d["definitions"]["threshold"]
    assert "pt-1" not in text  # pseudonyms stay in the per-image table only
    assert "per_image" in res.to_dict(include_per_image=True)
    md = res.markdown_table()
    assert "| Dice, mean per image | 0.852 |" in md
    assert "3 images from 2 patients" in md
    assert md.startswith("**Evaluation**")
    # no Markdown emphasis characters in the formulas (they rendered as italics in the UI)
    assert "*" not in "".join(d["definitions"].values())
    # no lesion anywhere: sensitivity undefined -> null in JSON, "n/a" in Markdown
    normal = EvalCase("cs-n", "pt-9", np.zeros((16, 16), np.float32), np.zeros((16, 16), bool))
    r2 = evaluate([normal], threshold=0.5, n_boot=0)
    assert r2.to_dict()["detection"]["sensitivity_at_2fp"] is None
    assert r2.to_dict()["detection"]["sensitivity_at_0_5fp"] is None
    assert r2.ci95["dice_mean"] is None
    assert "n/a" in r2.markdown_table()


def test_evaluate_rejects_bad_cases_with_the_case_id() -> None:
    good = _cases()[0]
    bad = EvalCase("cs-bad", "pt-3", np.zeros((32, 30), np.float32), good.truth)
    with pytest.raises(EvaluationInputError, match="case cs-bad: .*shape"):
        evaluate([good, bad], threshold=0.5, n_boot=0)
    with pytest.raises(EvaluationInputError, match="duplicate"):
        evaluate([good, good], threshold=0.5, n_boot=0)
    with pytest.raises(EvaluationInputError, match="no cases"):
        evaluate([], threshold=0.5, n_boot=0)
    with pytest.raises(EvaluationInputError, match="threshold"):
        evaluate([good], threshold=0.0, n_boot=0)


def test_explicit_circle_lesions_are_used_for_detection() -> None:
    truth = np.zeros((40, 40), bool)
    cv2.circle(truth.view(np.uint8), (10, 10), 4, 1, -1)
    prob = np.zeros((40, 40), np.float32)
    prob[8:13, 8:13] = 0.9
    case = EvalCase("cs-m", "pt-m", prob, truth, lesions=[(10.0, 10.0, 4.0), (30.0, 30.0, 3.0)])
    res = evaluate([case], threshold=0.5, n_boot=0)
    assert res.detection.n_lesions == 2
    assert res.detection.sensitivity_at_threshold == 0.5


def test_is_suspicious() -> None:
    res = evaluate(_cases(), threshold=0.5, n_boot=0)
    assert not is_suspicious(res)
    assert is_suspicious(res, dice_limit=0.8)


# -- leakage audit --------------------------------------------------------------------------
def test_leakage_audit_finds_shared_patients_and_contents() -> None:
    train = pd.DataFrame(
        {
            "case_id": ["cs-1", "cs-2"],
            "patient_id": ["pt-1", "pt-2"],
            "npz_key": ["preprocessed/aaa/h1.npz", "preprocessed/aaa/h2.npz"],
            "npz_etag": ["e1", "e2"],
        }
    )
    clean = [
        {"case_id": "cs-3", "patient_id": "pt-3", "npz_key": "preprocessed/aaa/h3.npz",
         "npz_etag": "e3"},
    ]  # fmt: skip
    assert leakage_audit(train, clean) == []
    leaky = [
        {"case_id": "cs-4", "patient_id": "pt-2", "npz_key": "preprocessed/aaa/h4.npz",
         "npz_etag": "e4"},
        # same input content preprocessed with other parameters
        {"case_id": "cs-5", "patient_id": "pt-5", "npz_key": "preprocessed/bbb/h1.npz",
         "npz_etag": "e5"},
    ]  # fmt: skip
    findings = leakage_audit(train, leaky)
    assert len(findings) == 2
    assert "1 patient id(s) in both train and test: pt-2" in findings[0]
    assert "input content hash" in findings[1] and "h1" in findings[1]
    with pytest.raises(EvaluationInputError, match="patient_id"):
        leakage_audit([{"case_id": "x"}], clean)


# -- overlays -------------------------------------------------------------------------------
def test_overlay_png_draws_green_truth_and_red_prediction() -> None:
    img = np.tile(np.linspace(0, 4000, 200, dtype=np.uint16), (300, 1))  # 300 x 200, 12-bit
    truth = np.zeros((300, 200), bool)
    truth[20:80, 20:80] = True
    pred = np.zeros((300, 200), bool)
    pred[200:260, 120:180] = True
    png = overlay_png(img, truth, pred, title="cs-a dice 0.00", max_side=150)
    out = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert out.shape == (20 + 150, 100, 3)  # title band + image reduced to 150 px long side
    body = out[20:]
    green = (body[..., 1] > 150) & (body[..., 2] < 80) & (body[..., 0] < 80)
    red = (body[..., 2] > 200) & (body[..., 1] < 80) & (body[..., 0] < 80)
    gy, gx = np.nonzero(green)
    ry, rx = np.nonzero(red)
    # scale 0.5: truth outline around rows/cols 10-40, prediction around rows 100-130, cols 60-90
    assert gy.size and 8 <= gy.min() and gy.max() <= 41 and 8 <= gx.min() and gx.max() <= 41
    assert ry.size and 98 <= ry.min() and ry.max() <= 131 and 58 <= rx.min() and rx.max() <= 91
    with pytest.raises(EvaluationInputError, match="one shape"):
        overlay_png(img, truth[:10], pred)


def test_best_median_worst_and_grid() -> None:
    df = pd.DataFrame(
        {
            "case_id": ["a", "b", "c", "d", "n"],
            "dice": [0.2, 0.9, 0.5, 0.6, 1.0],
            "truth_pixels": [10, 10, 10, 10, 0],  # "n" is a normal image: left out
        }
    )
    assert best_median_worst(df) == ("b", "c", "a")  # a c d b: lower middle is c
    assert best_median_worst(df, lesion_only=False) == ("n", "d", "a")  # a c d b n
    small = np.zeros((64, 48), np.uint8)
    m = np.zeros((64, 48), bool)
    m[10:20, 10:20] = True
    png = overlay_grid([(small, m, m, f"case {i}") for i in range(4)], tile=64, cols=3)
    grid = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert grid.shape == (2 * (64 + 20), 3 * 64, 3)


def test_sensitivity_at_half_one_and_two_fp_per_image() -> None:
    """Two images, one lesion each, false-positive blobs that outscore the lesions:
    t <= 0.6: 2 hits, 2 FP (1.0/image); 0.6 < t <= 0.7: 1 hit, 2 FP; 0.7 < t <= 0.8: 1 hit,
    1 FP (0.5/image); above 0.8: no hit."""

    def image(lesion_score: float, fp_score: float) -> EvalCase:
        truth = np.zeros((32, 32), bool)
        truth[4:10, 4:10] = True
        prob = np.zeros((32, 32), np.float32)
        prob[4:10, 4:10] = lesion_score
        prob[20:24, 20:24] = fp_score
        return EvalCase(f"cs-{lesion_score}", f"pt-{lesion_score}", prob, truth)

    res = evaluate([image(0.6, 0.9), image(0.8, 0.7)], threshold=0.5, n_boot=0)
    det = res.detection
    assert det.sensitivity_at_0_5fp == 0.5
    assert det.sensitivity_at_1fp == 1.0 and det.sensitivity_at_2fp == 1.0
    d = res.to_dict()["detection"]
    assert (d["sensitivity_at_0_5fp"], d["sensitivity_at_1fp"], d["sensitivity_at_2fp"]) == (0.5, 1.0, 1.0)
    md = res.markdown_table("heldout-x")
    assert "0.500 at 0.5 FP/image, 1.000 at 1 FP/image, 1.000 at 2 FP/image" in md
    # the threshold line names the chosen threshold, then the sensitivity and FP/image at it
    at = f"at the chosen threshold (0.5): sensitivity {det.sensitivity_at_threshold:.3f} with "
    assert at in md and md.startswith("**heldout-x**") and "Held-out evaluation" not in md
