"""Losses and metrics on tiny 2×2 masks, against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from mammoseg.model.losses import BinaryFocalLoss, DiceLoss, FocalDiceLoss
from mammoseg.model.metrics import DiceScore, IoUScore, PooledDice


def batch(*masks: list[list[float]]) -> np.ndarray:
    """2-D lists → float32 ``[n, h, w, 1]``."""
    return np.array(masks, dtype="float32")[..., None]


# y = [[1, 0], [0, 1]], p = [[0.9, 0.1], [0.2, 0.6]]
Y = batch([[1, 0], [0, 1]])
P = batch([[0.9, 0.1], [0.2, 0.6]])


def value(x: object) -> float:
    return float(keras.ops.convert_to_numpy(x))


def test_focal_loss_hand_computed() -> None:
    # Per pixel -a_t (1 - p_t)^2 ln p_t, alpha = 0.25 on lesion pixels, 0.75 on background:
    #   y=1 p=.9: .25 * .1^2 * -ln .9 = .25 * .01 * .1053605 = .00026340
    #   y=0 p=.1: .75 * .1^2 * -ln .9 = .75 * .01 * .1053605 = .00079020
    #   y=0 p=.2: .75 * .2^2 * -ln .8 = .75 * .04 * .2231436 = .00669431
    #   y=1 p=.6: .25 * .4^2 * -ln .6 = .25 * .16 * .5108256 = .02043302
    # mean = .02818093 / 4 = .00704523
    assert value(BinaryFocalLoss()(Y, P)) == pytest.approx(0.00704523, rel=1e-5)


def test_focal_loss_with_gamma_0_alpha_half_is_half_bce() -> None:
    # y=1, p=.5 everywhere: .5 * -ln .5 = .34657359
    y, p = batch([[1, 1], [1, 1]]), batch([[0.5, 0.5], [0.5, 0.5]])
    assert value(BinaryFocalLoss(alpha=0.5, gamma=0.0)(y, p)) == pytest.approx(0.34657359, rel=1e-5)


def test_focal_loss_is_finite_at_saturated_wrong_predictions() -> None:
    # p clipped to 1e-7: y=1 p=0 → .25 * 1 * -ln 1e-7 = .25 * 16.1181 = 4.02952; y=0 p=0 → ~0.
    y, p = batch([[1, 0], [0, 0]]), batch([[0.0, 0.0], [0.0, 0.0]])
    loss = value(BinaryFocalLoss()(y, p))
    assert math.isfinite(loss)
    assert loss == pytest.approx(4.02952 / 4, rel=1e-3)


def test_dice_loss_hand_computed() -> None:
    # Σyp = .9 + .6 = 1.5, Σy = 2, Σp = 1.8: 1 - (3 + 1) / (3.8 + 1) = 1 - 4/4.8 = 1/6
    assert value(DiceLoss()(Y, P)) == pytest.approx(1 / 6, rel=1e-5)
    # smooth 0: 1 - 3 / 3.8 = .21052632
    assert value(DiceLoss(smooth=0.0)(Y, P)) == pytest.approx(0.21052632, rel=1e-5)
    # empty truth and all-zero prediction: (0 + 1) / (0 + 1) → loss 0
    zeros = batch([[0, 0], [0, 0]])
    assert value(DiceLoss()(zeros, zeros)) == pytest.approx(0.0, abs=1e-7)


def test_losses_are_per_image_then_averaged_over_the_batch() -> None:
    # image 1: loss 1/6 (above); image 2: both empty → 0; batch mean 1/12.
    y = np.concatenate([Y, batch([[0, 0], [0, 0]])])
    p = np.concatenate([P, batch([[0, 0], [0, 0]])])
    assert value(DiceLoss()(y, p)) == pytest.approx(1 / 12, rel=1e-5)


def test_focal_dice_is_the_weighted_sum() -> None:
    loss = FocalDiceLoss(focal_weight=2.0, dice_weight=0.5)
    assert value(loss(Y, P)) == pytest.approx(2 * 0.00704523 + 0.5 / 6, rel=1e-5)


def test_losses_accept_float16_predictions() -> None:
    assert value(DiceLoss()(Y, P.astype("float16"))) == pytest.approx(1 / 6, rel=1e-3)


def test_loss_configs_round_trip_and_bad_values_are_refused() -> None:
    loss = FocalDiceLoss(focal_weight=2.0, dice_weight=0.5, alpha=0.4, gamma=1.0, smooth=2.0)
    again = FocalDiceLoss.from_config(loss.get_config())
    assert again.get_config() == loss.get_config()
    assert value(again(Y, P)) == pytest.approx(value(loss(Y, P)))
    with pytest.raises(ValueError, match="alpha"):
        BinaryFocalLoss(alpha=1.5)
    with pytest.raises(ValueError, match="smooth"):
        DiceLoss(smooth=-1)


# Metric cases (threshold 0.5, prediction positive where p >= 0.5):
A_T, A_P = [[1, 1], [0, 0]], [[0.9, 0.4], [0.6, 0.1]]  # P = {(0,0), (1,0)}: ∩=1 |T|=2 |P|=2
B_T, B_P = [[0, 0], [0, 0]], [[0.1, 0.2], [0.3, 0.4]]  # both empty
C_T, C_P = [[0, 0], [0, 0]], [[0.7, 0.0], [0.0, 0.0]]  # truth empty, prediction not
D_T, D_P = [[0, 1], [0, 0]], [[0.0, 0.0], [0.0, 0.0]]  # truth not empty, prediction empty


def test_dice_and_iou_per_image_means_including_empty_cases() -> None:
    dice, iou = DiceScore(), IoUScore()
    for m in (dice, iou):
        m.update_state(batch(A_T, B_T), batch(A_P, B_P))
    # A: dice 2*1/(2+2) = .5, IoU 1/3; B: both empty → 1, 1
    assert value(dice.result()) == pytest.approx((0.5 + 1) / 2)
    assert value(iou.result()) == pytest.approx((1 / 3 + 1) / 2)
    for m in (dice, iou):
        m.update_state(batch(C_T, D_T), batch(C_P, D_P))
    # C and D score 0: mean over 4 images
    assert value(dice.result()) == pytest.approx(1.5 / 4)
    assert value(iou.result()) == pytest.approx((4 / 3) / 4)
    dice.reset_state()
    assert value(dice.result()) == 0.0


def test_threshold_is_configurable_and_inclusive() -> None:
    # threshold .3: A's prediction becomes {(0,0), (0,1), (1,0)}: ∩=2 |P|=3 → dice 4/5, IoU 2/3
    dice, iou = DiceScore(threshold=0.3), IoUScore(threshold=0.3)
    dice.update_state(batch(A_T), batch(A_P))
    iou.update_state(batch(A_T), batch(A_P))
    assert value(dice.result()) == pytest.approx(0.8)
    assert value(iou.result()) == pytest.approx(2 / 3)
    # p exactly at the threshold counts as positive
    exact = DiceScore()
    exact.update_state(batch([[1, 0], [0, 0]]), batch([[0.5, 0.0], [0.0, 0.0]]))
    assert value(exact.result()) == 1.0


def test_per_image_sample_weights() -> None:
    dice = DiceScore()
    dice.update_state(batch(A_T, C_T), batch(A_P, C_P), sample_weight=np.array([3.0, 1.0]))
    assert value(dice.result()) == pytest.approx((3 * 0.5 + 1 * 0.0) / 4)


def test_pooled_dice() -> None:
    pooled = PooledDice()
    pooled.update_state(batch(A_T, C_T), batch(A_P, C_P))
    # TP = 1; FP = 1 (A) + 1 (C); FN = 1 (A): 2/(2 + 2 + 1)
    assert value(pooled.result()) == pytest.approx(0.4)
    empty = PooledDice()
    empty.update_state(batch(B_T), batch(B_P))
    assert value(empty.result()) == 1.0


def test_metric_config_round_trip() -> None:
    again = IoUScore.from_config(IoUScore(threshold=0.3, name="iou30").get_config())
    assert again.threshold == pytest.approx(0.3) and again.name == "iou30"
    with pytest.raises(ValueError, match="threshold"):
        DiceScore(threshold=1.0)


def test_deep_supervision_loss_weighs_each_head_against_the_same_truth() -> None:
    from mammoseg.model.losses import DeepSupervisionLoss, deep_supervision_weights

    perfect = Y  # a head equal to the truth: Dice loss (smooth 1) 0
    p = np.concatenate([P, perfect, P], axis=-1)  # mask, aux 1, aux 2
    assert deep_supervision_weights(2) == [1.0, 0.5, 0.25]
    loss = DeepSupervisionLoss(DiceLoss(), deep_supervision_weights(2))
    # weights 1, .5, .25 normalised: 4/7, 2/7, 1/7; head losses 1/6, 0, 1/6
    assert value(loss(Y, p)) == pytest.approx((4 / 7 + 1 / 7) / 6, rel=1e-5)
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(again.inner, DiceLoss) and again.weights == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    assert value(again(Y, p)) == pytest.approx(value(loss(Y, p)))
    with pytest.raises(ValueError, match="weights"):
        DeepSupervisionLoss(DiceLoss(), [1.0, 0.0])


def test_metrics_score_the_mask_channel_only() -> None:
    y = batch(A_T)
    ones = np.ones_like(y)  # an auxiliary head that marks everything
    for metric, expected in ((DiceScore(), 0.5), (IoUScore(), 1 / 3), (PooledDice(), 0.5)):
        metric.update_state(y, np.concatenate([batch(A_P), ones], axis=-1))
        assert value(metric.result()) == pytest.approx(expected, rel=1e-6), metric.name
