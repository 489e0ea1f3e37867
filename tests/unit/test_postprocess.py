"""Mask post-processing (a score cut-off, keep the k highest-scoring components), on hand-computed maps."""

from __future__ import annotations

import numpy as np
import pytest

from mammoseg.evaluation import (
    EvalCase,
    EvaluationInputError,
    best_postprocessing,
    choose_postprocessing,
    evaluate,
    keep_top_components,
    lesion_list,
    postprocessing_sweep,
    segment,
)


def _map() -> np.ndarray:
    """Three blobs: 2x2 at 0.9 (top-left), 3x3 at 0.7 (bottom-right), one pixel at 0.6."""
    p = np.zeros((10, 10), np.float32)
    p[1:3, 1:3] = 0.9
    p[6:9, 6:9] = 0.7
    p[1, 8] = 0.6
    return p


def test_segment_keeps_the_highest_scoring_components() -> None:
    p = _map()
    assert segment(p, 0.5).sum() == 4 + 9 + 1
    one = segment(p, 0.5, 1)
    assert one.sum() == 4 and one[1:3, 1:3].all()
    two = segment(p, 0.5, 2)
    assert two.sum() == 13 and not two[1, 8]
    assert segment(p, 0.5, 5).sum() == 14  # more asked than there are: all kept
    assert segment(np.zeros((4, 4), np.float32), 0.5, 1).sum() == 0


def test_equal_scores_keep_raster_order_as_the_lesion_list() -> None:
    p = np.zeros((8, 8), np.float32)
    p[5:7, 1:3] = 0.8  # lower blob, larger
    p[1, 5] = 0.8  # upper blob, one pixel, same score
    kept = segment(p, 0.5, 1)
    assert kept[1, 5] and kept.sum() == 1
    first = lesion_list(p, 0.5, top_k=5)[0]
    assert first.bbox == (1, 5, 2, 6)


def test_keep_does_not_touch_the_inputs() -> None:
    p = _map()
    pred = p >= 0.5
    before = pred.copy()
    keep_top_components(pred, p, 1)
    assert np.array_equal(pred, before)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_keep_is_refused(bad: object) -> None:
    with pytest.raises(EvaluationInputError, match="keep_components"):
        segment(_map(), 0.5, bad)  # type: ignore[arg-type]


def test_sweep_dice_by_hand() -> None:
    p = _map()
    truth = np.zeros((10, 10), bool)
    truth[1:3, 1:3] = True  # only the 0.9 blob is a lesion
    sweep = postprocessing_sweep([p], [truth], candidates=[0.5, 0.8], keeps=(None, 2, 1), min_scores=(None,)).set_index(
        ["threshold", "keep_components"])["dice_mean"]
    assert sweep[(0.5, 0)] == pytest.approx(2 * 4 / (14 + 4))  # every blob kept
    assert sweep[(0.5, 2)] == pytest.approx(2 * 4 / (13 + 4))
    assert sweep[(0.5, 1)] == pytest.approx(1.0)
    assert sweep[(0.8, 0)] == pytest.approx(1.0)  # at 0.8 only the lesion passes anyway


def test_choice_prefers_no_filter_on_ties_and_filters_when_it_helps() -> None:
    p = _map()
    lesion = np.zeros((10, 10), bool)
    lesion[1:3, 1:3] = True
    # the 0.9 blob alone is the truth: threshold 0.8 with every component ties with keep=1 at
    # lower thresholds; the tie goes to keeping every component
    chosen = best_postprocessing(postprocessing_sweep([p], [lesion], candidates=[0.5, 0.8], keeps=(None, 1)))
    assert (chosen.threshold, chosen.keep_components, chosen.min_score, chosen.dice_mean) == (0.8, None, None, 1.0)
    # a 4x4 lesion whose rim is at 0.55 and a one-pixel false positive at 0.58: no threshold
    # keeps the rim without the false positive (Dice 32/33 at <= 0.55, 8/20 above), one component does
    p = np.zeros((12, 12), np.float32)
    p[1:5, 1:5] = 0.55
    p[2:4, 2:4] = 0.9
    p[9, 9] = 0.58
    truth = np.zeros((12, 12), bool)
    truth[1:5, 1:5] = True
    chosen = choose_postprocessing([p], [truth], min_scores=(None,))
    assert chosen.keep_components == 1 and chosen.dice_mean == pytest.approx(1.0)
    assert chosen.threshold == pytest.approx(0.1)  # every candidate up to 0.55 ties: the smallest
    # the same gain over five images (four lesion-free, untouched either way) is 0.006 of mean
    # Dice, under MIN_FILTER_GAIN: every component is kept
    empty = np.zeros_like(p)
    diluted = choose_postprocessing([p, *[empty] * 4], [truth, *[np.zeros_like(truth)] * 4])
    assert diluted.keep_components is None and diluted.min_score is None
    assert diluted.dice_mean == pytest.approx((32 / 33 + 4) / 5)
    assert best_postprocessing(
        postprocessing_sweep([p, *[empty] * 4], [truth, *[np.zeros_like(truth)] * 4], min_scores=(None,)), min_gain=0.0
    ).keep_components == 1


def test_score_cut_off_drops_faint_components() -> None:
    p = _map()  # blobs scored 0.9 (4 px), 0.7 (9 px), 0.6 (1 px)
    assert segment(p, 0.5, min_score=0.65).sum() == 4 + 9
    assert segment(p, 0.5, min_score=0.8).sum() == 4
    assert segment(p, 0.5, min_score=0.7).sum() == 4 + 9  # a score equal to the cut-off passes
    assert segment(p, 0.5, min_score=0.95).sum() == 0
    assert segment(p, 0.5, min_score=0.4).sum() == 14  # at or below the threshold: no effect
    assert segment(p, 0.5, 1, min_score=0.65).sum() == 4  # then the best one
    assert segment(p, 0.5, 3, min_score=0.65).sum() == 13
    pred = p >= 0.5
    before = pred.copy()
    keep_top_components(pred, p, None, 0.8)
    assert np.array_equal(pred, before)


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.5, True, "0.8"])
def test_bad_min_score_is_refused(bad: object) -> None:
    with pytest.raises(EvaluationInputError, match="min_score"):
        segment(_map(), 0.5, min_score=bad)  # type: ignore[arg-type]
    with pytest.raises(EvaluationInputError, match="min_score"):
        postprocessing_sweep([_map()], [np.zeros((10, 10), bool)], min_scores=(None, bad))  # type: ignore[arg-type]


def test_sweep_with_score_cut_offs_by_hand() -> None:
    p = _map()
    truth = np.zeros((10, 10), bool)
    truth[1:3, 1:3] = True
    empty = np.zeros((10, 10), np.float32)
    faint = np.zeros((10, 10), np.float32)
    faint[4:6, 4:6] = 0.7  # a lesion-free image with one faint blob
    no_truth = np.zeros((10, 10), bool)
    sweep = postprocessing_sweep([p, faint, empty], [truth, no_truth, no_truth], candidates=[0.5, 0.8],
                                 keeps=(None, 1), min_scores=(None, 0.65, 0.8)).set_index(
        ["threshold", "keep_components", "min_score"])["dice_mean"]
    assert sweep[(0.5, 0, 0.0)] == pytest.approx((2 * 4 / 18 + 0 + 1) / 3)
    assert sweep[(0.5, 0, 0.65)] == pytest.approx((2 * 4 / 17 + 0 + 1) / 3)  # the 0.6 pixel goes
    assert sweep[(0.5, 0, 0.8)] == pytest.approx((1 + 1 + 1) / 3)  # the faint blob goes too
    assert sweep[(0.5, 1, 0.0)] == pytest.approx((1 + 0 + 1) / 3)  # keep 1 cannot empty an image
    # at threshold 0.8 every cut-off at or below it is no cut-off: one row, min_score 0
    assert sweep.loc[(0.8, 0)].index.tolist() == [0.0]
    assert sweep[(0.8, 0, 0.0)] == pytest.approx(1.0)


def test_choice_of_a_score_cut_off_hysteresis() -> None:
    # image 1: a 4x4 lesion whose rim is at 0.55 around a 0.9 core; image 2: lesion-free with a
    # 0.7 blob. No threshold gets both right (<= 0.55: 1 + 0; above 0.7: 8/20 + 1); a low
    # threshold with a score cut-off above 0.7 gets both (the smallest such candidate, 0.8)
    one = np.zeros((12, 12), np.float32)
    one[1:5, 1:5] = 0.55
    one[2:4, 2:4] = 0.9
    two = np.zeros((12, 12), np.float32)
    two[7:10, 7:10] = 0.7
    truth = np.zeros((12, 12), bool)
    truth[1:5, 1:5] = True
    chosen = choose_postprocessing([one, two], [truth, np.zeros_like(truth)])
    assert chosen.min_score == pytest.approx(0.8) and chosen.keep_components is None
    assert chosen.threshold == pytest.approx(0.1) and chosen.dice_mean == pytest.approx(1.0)
    plain = choose_postprocessing([one, two], [truth, np.zeros_like(truth)], keeps=(None,), min_scores=(None,))
    assert plain.min_score is None and plain.dice_mean == pytest.approx((8 / 20 + 1) / 2)
    assert np.array_equal(segment(one, chosen.threshold, None, chosen.min_score), truth)
    assert not segment(two, chosen.threshold, None, chosen.min_score).any()


def test_evaluate_scores_the_post_processed_mask() -> None:
    p = _map()
    truth = np.zeros((10, 10), bool)
    truth[1:3, 1:3] = True
    case = EvalCase(case_id="c1", patient_id="p1", prob=p, truth=truth)
    plain = evaluate([case], threshold=0.5, n_boot=0)
    kept = evaluate([case], threshold=0.5, n_boot=0, keep_components=1)
    assert plain.dice_mean == pytest.approx(8 / 18) and kept.dice_mean == pytest.approx(1.0)
    assert "only the 1 with the highest" in kept.definitions["threshold"]
    # the detection view sweeps the map itself, whatever the mask keeps
    assert kept.detection.fp_per_image_at_threshold == plain.detection.fp_per_image_at_threshold == 2
    own = EvalCase(case_id="c1", patient_id="p1", prob=p, truth=truth, pred=truth)
    assert evaluate([own], threshold=0.5, n_boot=0).dice_mean == 1.0
