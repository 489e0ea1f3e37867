"""Detection view on hand-made arrays: components, lesion hits, FROC."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mammoseg.evaluation.detection import (
    CircleLesion,
    Component,
    MaskLesion,
    components,
    detection_counts,
    froc_points,
    lesion_from_geometry,
    lesion_list,
    lesions_from_truth,
    match_lesions,
    sensitivity_at_fp,
)
from mammoseg.evaluation.metrics import EvaluationInputError


def _square(shape: tuple[int, int], y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def test_components_centroid_area_bbox_score_and_8_connectivity() -> None:
    pred = _square((64, 64), 12, 18, 12, 18)  # 6x6 block: centroid (14.5, 14.5)
    pred[40, 40] = pred[41, 41] = True  # diagonal neighbours: one component with 8-connectivity
    prob = np.where(pred, 0.6, 0.0).astype(np.float32)
    prob[13, 14] = 0.95
    comps = components(pred, prob=prob)
    assert len(comps) == 2
    a, b = comps
    assert a.centroid == pytest.approx((14.5, 14.5))
    assert (a.area, a.bbox) == (36, (12, 12, 18, 18))
    assert a.score == pytest.approx(0.95)
    assert (b.area, b.bbox, b.centroid) == (2, (40, 40, 42, 42), pytest.approx((40.5, 40.5)))
    assert b.score == pytest.approx(0.6)
    assert [c.area for c in components(pred, min_area=3)] == [36]
    assert components(np.zeros((8, 8), bool)) == []
    assert np.isnan(components(pred)[0].score)  # no probability map given


def test_two_lesions_one_hit_one_missed_one_false_positive() -> None:
    shape = (64, 64)
    lesion_a = _square(shape, 10, 20, 10, 20)
    lesion_b = _square(shape, 40, 50, 40, 50)
    pred = _square(shape, 12, 18, 12, 18) | _square(shape, 40, 46, 2, 8)  # hit A, FP off B
    hits, fps = match_lesions(components(pred), [lesion_a, lesion_b])
    assert hits == [True, False]
    assert len(fps) == 1 and fps[0].bbox == (40, 2, 46, 8)

    prob = pred.astype(np.float32) * 0.9
    froc = froc_points([prob], [[lesion_a, lesion_b]], thresholds=[0.5])
    row = froc.iloc[0]
    assert row.sensitivity == 0.5  # 1 of 2 lesions
    assert row.fp_per_image == 1.0  # 1 FP on 1 image
    assert (row.hits, row.n_lesions, row.false_positives, row.n_images) == (1, 2, 1, 1)


def test_circle_lesions_mias_style() -> None:
    pred = _square((64, 64), 12, 18, 12, 18)  # centroid (y, x) = (14.5, 14.5)
    # distance from (cx, cy) = (15, 14) to (14.5, 14.5) is sqrt(0.5) ~ 0.71
    assert match_lesions(components(pred), [(15.0, 14.0, 1.0)]).hits == [True]
    assert match_lesions(components(pred), [CircleLesion(15.0, 14.0, 0.7)]).hits == [False]
    with pytest.raises(EvaluationInputError, match="radius"):
        match_lesions([], [(1.0, 1.0, 0.0)])
    with pytest.raises(EvaluationInputError, match="outside"):
        match_lesions([], [(100.0, 100.0, 5.0)], shape=(64, 64))


def test_one_component_hitting_a_lesion_twice_counts_once_and_merged_blob_is_a_fp() -> None:
    shape = (32, 64)
    lesion = _square(shape, 4, 14, 4, 14)
    twice = _square(shape, 5, 7, 5, 7) | _square(shape, 10, 12, 10, 12)
    hits, fps = match_lesions(components(twice), [lesion])
    assert (hits, fps) == ([True], [])
    # two lesions side by side, one blob covering both: centroid between them -> both missed
    left, right = _square(shape, 10, 20, 10, 20), _square(shape, 10, 20, 30, 40)
    blob = _square(shape, 10, 20, 10, 40)  # centroid x = 24.5, in the gap
    hits, fps = match_lesions(components(blob), [left, right])
    assert hits == [False, False] and len(fps) == 1


def test_froc_recomputes_components_at_each_threshold() -> None:
    shape = (64, 64)
    lesion_a = _square(shape, 10, 20, 10, 20)
    lesion_b = _square(shape, 40, 50, 40, 50)
    prob = np.zeros(shape, np.float32)
    prob[12:18, 12:18] = 0.9  # on A
    prob[40:46, 2:8] = 0.6  # false positive
    prob[42:48, 42:48] = 0.3  # on B, weak
    normal = np.zeros(shape, np.float32)  # second image, no lesion
    froc = froc_points([prob, normal], [[lesion_a, lesion_b], []], thresholds=[0.8, 0.2, 0.5])
    assert froc["threshold"].tolist() == [0.2, 0.5, 0.8]
    # t=0.2: A, B hit, 1 FP | t=0.5: A hit, 1 FP | t=0.8: A hit, no FP; FP over 2 images
    assert froc["sensitivity"].tolist() == [1.0, 0.5, 0.5]
    assert froc["fp_per_image"].tolist() == [0.5, 0.5, 0.0]
    assert sensitivity_at_fp(froc, 0.5) == 1.0
    assert sensitivity_at_fp(froc, 0.25) == 0.5
    strict = pd.DataFrame({"threshold": [0.5], "sensitivity": [0.8], "fp_per_image": [3.0]})
    assert sensitivity_at_fp(strict, 2.0) == 0.0  # no swept threshold is that strict


def test_froc_handles_a_blob_that_splits_at_higher_thresholds() -> None:
    shape = (32, 64)
    left, right = _square(shape, 10, 20, 10, 20), _square(shape, 10, 20, 30, 40)
    prob = np.zeros(shape, np.float32)
    prob[10:20, 10:40] = 0.3  # one blob covering both lesions and the gap
    prob[10:20, 10:20] = 0.9
    prob[10:20, 30:40] = 0.9
    counts = detection_counts(prob, [left, right], [0.2, 0.5])
    # t=0.2: single blob, centroid in the gap -> 0 hits, 1 FP; t=0.5: two blobs -> 2 hits
    assert counts.hits.tolist() == [0, 2]
    assert counts.false_positives.tolist() == [1, 0]
    # the same answer as labelling each binarised map from scratch
    for k, t in enumerate([0.2, 0.5]):
        hits, fps = match_lesions(components(prob >= np.float32(t)), [left, right])
        assert (sum(hits), len(fps)) == (counts.hits[k], counts.false_positives[k])


def test_detection_counts_match_brute_force_on_random_maps() -> None:
    rng = np.random.default_rng(7)
    thresholds = [0.3, 0.5, 0.7, 0.9]
    for _ in range(5):
        prob = rng.random((48, 48)).astype(np.float32) ** 3
        truth = _square((48, 48), 5, 20, 5, 20) | _square((48, 48), 30, 40, 25, 45)
        lesions = lesions_from_truth(truth) + [CircleLesion(40.0, 10.0, 4.0)]
        counts = detection_counts(prob, lesions, thresholds, min_area=2)
        for k, t in enumerate(thresholds):
            comps = components(prob >= np.float32(t), min_area=2)
            hits, fps = match_lesions(comps, lesions)
            assert counts.hits[k] == sum(hits)
            assert counts.false_positives[k] == len(fps)


def test_top_k_counts_only_the_highest_scoring_components_like_the_lesion_list() -> None:
    # three blobs: a lesion scored 0.6, false positives scored 0.9 and 0.8
    prob = np.zeros((30, 30), np.float32)
    prob[2:6, 2:6] = 0.9
    prob[10:14, 10:14] = 0.8
    prob[20:26, 20:26] = 0.6
    lesion = _square((30, 30), 20, 26, 20, 26)
    every = detection_counts(prob, [lesion], [0.5, 0.7])
    assert every.hits.tolist() == [1, 0] and every.false_positives.tolist() == [2, 2]
    top1 = detection_counts(prob, [lesion], [0.5, 0.7], top_k=1)
    assert top1.hits.tolist() == [0, 0] and top1.false_positives.tolist() == [1, 1]
    top3 = detection_counts(prob, [lesion], [0.5, 0.7], top_k=3)
    assert top3.hits.tolist() == every.hits.tolist() and top3.false_positives.tolist() == [2, 2]


def test_top_k_matches_brute_force_with_the_lesion_list_on_random_maps() -> None:
    rng = np.random.default_rng(11)
    thresholds = [0.3, 0.5, 0.7, 0.9]
    for _ in range(5):
        prob = rng.random((48, 48)).astype(np.float32) ** 3
        truth = _square((48, 48), 5, 20, 5, 20) | _square((48, 48), 30, 40, 25, 45)
        lesions = lesions_from_truth(truth)
        counts = detection_counts(prob, lesions, thresholds, min_area=2, top_k=4)
        for k, t in enumerate(thresholds):
            listed = lesion_list(prob, t, min_area=2, top_k=4)
            kept = [Component(centroid=d.centroid, area=d.area, bbox=d.bbox, score=d.score) for d in listed]
            hits, fps = match_lesions(kept, lesions)
            assert counts.hits[k] == sum(hits) and counts.false_positives[k] == len(fps)
    with pytest.raises(EvaluationInputError, match="top_k"):
        detection_counts(prob, lesions, thresholds, top_k=0)


def test_lesions_from_truth_and_geometry() -> None:
    truth = _square((32, 32), 2, 6, 2, 6) | _square((32, 32), 20, 25, 10, 12)
    lesions = lesions_from_truth(truth)
    assert [les.area for les in lesions] == [16, 10]
    assert isinstance(lesions[1], MaskLesion) and (lesions[1].y0, lesions[1].x0) == (20, 10)
    assert lesions[1].contains(np.array([22.4, 19.0]), np.array([10.6, 10.0])).tolist() == [
        True,
        False,
    ]
    circle = lesion_from_geometry(
        json.dumps({"type": "circle", "cx": 5, "cy": 6, "r": 3}), (32, 32)
    )
    assert circle == CircleLesion(5.0, 6.0, 3.0)
    square = {"type": "polygon", "points": [[4, 4], [9, 4], [9, 9], [4, 9]]}
    poly = lesion_from_geometry(square, (32, 32))
    assert isinstance(poly, MaskLesion) and poly.area == 36  # filled, border included
    with pytest.raises(EvaluationInputError, match="no pixel"):
        match_lesions([], [np.zeros((8, 8), bool)])
    with pytest.raises(EvaluationInputError, match="unknown mask geometry"):
        lesion_from_geometry({"type": "ellipse"}, (8, 8))


# -- detection output: lesion_list ----------------------------------------------------------
def test_lesion_list_ranks_by_score_filters_by_area_and_keeps_top_k() -> None:
    from mammoseg.evaluation.detection import DetectedLesion, lesion_list

    prob = np.zeros((32, 32), np.float32)
    prob[2:5, 3:7] = 0.6  # 3x4 = 12 px, centroid (3, 4.5)
    prob[3, 4] = 0.7
    prob[20:22, 20:22] = 0.9  # 2x2 = 4 px, centroid (20.5, 20.5)
    prob[10, 28] = 0.95  # a single pixel
    prob[30, 0:3] = 0.4  # below the threshold: not a lesion
    found = lesion_list(prob, 0.5)
    assert [les.area for les in found] == [1, 4, 12]  # highest score first
    assert [les.score for les in found] == pytest.approx([0.95, 0.9, 0.7])
    assert found[2] == DetectedLesion(
        score=pytest.approx(0.7), bbox=(2, 3, 5, 7), area=12, centroid=pytest.approx((3.0, 4.5))
    )
    assert found[1].bbox == (20, 20, 22, 22) and found[1].centroid == pytest.approx((20.5, 20.5))
    # min_area drops the single pixel; top_k keeps the best ones only
    assert [les.area for les in lesion_list(prob, 0.5, min_area=2)] == [4, 12]
    assert [les.area for les in lesion_list(prob, 0.5, top_k=2)] == [1, 4]
    # the threshold is inclusive and compared in the map's dtype
    assert [les.area for les in lesion_list(prob, 0.4)][-1] == 3
    assert lesion_list(np.zeros((8, 8), np.float32), 0.5) == []
    with pytest.raises(EvaluationInputError, match="top_k"):
        lesion_list(prob, 0.5, top_k=0)


def test_lesion_list_to_dict_is_plain_json() -> None:
    from mammoseg.evaluation.detection import lesion_list

    prob = np.zeros((16, 16), np.float64)
    prob[4:6, 8:11] = 0.8  # 2x3 = 6 px
    (les,) = lesion_list(prob, 0.5, top_k=5)
    d = les.to_dict()
    assert d == {"score": 0.8, "bbox": [4, 8, 6, 11], "area": 6, "centroid": [4.5, 9.0]}
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert all(type(v) is int for v in d["bbox"]) and type(d["score"]) is float


def test_operating_points_cut_marks_by_score_at_each_threshold() -> None:
    """Hand-computed: one threshold (0.2), three images, marks ranked by their scores.

    Image 1: mark on lesion A (0.9), FP (0.7). Image 2: FP (0.8), mark on B (0.4). Image 3: no
    lesion, FP (0.3). A threshold sweep alone has one point here: 2/2 hits at 3 FP / 3 images.
    """
    from mammoseg.evaluation import froc_operating_points

    shape = (40, 40)
    a, b = _square(shape, 5, 10, 5, 10), _square(shape, 25, 30, 25, 30)
    p1 = np.zeros(shape, np.float32)
    p1[6:9, 6:9] = 0.9
    p1[30:33, 5:8] = 0.7
    p2 = np.zeros(shape, np.float32)
    p2[5:8, 30:33] = 0.8
    p2[26:29, 26:29] = 0.4
    p3 = np.zeros(shape, np.float32)
    p3[20:23, 20:23] = 0.3
    counts = [detection_counts(p, les, [0.2]) for p, les in ((p1, [a]), (p2, [b]), (p3, []))]
    points = froc_operating_points(counts)
    got = points.sort_values("min_score", ascending=False)
    # cut-offs inf, 0.9, 0.8, 0.7, 0.4, 0.3 -> (hits, FPs)
    assert got["min_score"].tolist() == [np.inf, pytest.approx(0.9), pytest.approx(0.8), pytest.approx(0.7),
                                         pytest.approx(0.4), pytest.approx(0.3)]
    assert got["hits"].tolist() == [0, 1, 1, 1, 2, 2]
    assert got["false_positives"].tolist() == [0, 0, 1, 2, 2, 3]
    assert got["n_lesions"].unique().tolist() == [2]
    assert sensitivity_at_fp(points, 0.5) == 0.5  # the 0.9 mark alone (0 FP)
    assert sensitivity_at_fp(points, 2 / 3) == 1.0  # down to 0.4: 2 FPs over 3 images
    # the threshold sweep alone can only say 0 below 1 FP/image
    assert sensitivity_at_fp(froc_points([p1, p2, p3], [[a], [b], []], thresholds=[0.2]), 0.9) == 0.0


def test_operating_points_count_a_lesion_once_and_respect_top_k() -> None:
    from mammoseg.evaluation import froc_operating_points

    shape = (40, 40)
    a = _square(shape, 5, 20, 5, 20)
    p = np.zeros(shape, np.float32)
    p[6:9, 6:9] = 0.9  # hits A
    p[15:18, 15:18] = 0.8  # hits A again: no second hit, no FP
    p[30:33, 30:33] = 0.5  # FP, dropped by top_k=2
    points = froc_operating_points([detection_counts(p, [a], [0.2], top_k=2)])
    assert points["hits"].max() == 1
    assert points["false_positives"].max() == 0
    assert sensitivity_at_fp(points, 0.0) == 1.0
