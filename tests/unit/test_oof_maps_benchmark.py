"""benchmarks/oof_maps.py's two array rules, by hand."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def oof_maps(load_benchmark):
    return load_benchmark("oof_maps")


def test_relative_cut_keeps_each_components_pixels_near_its_own_peak(oof_maps) -> None:
    prob = np.array(
        [
            [1.0, 0.9, 0.6, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.6, 0.55],
        ],
        dtype=np.float32,
    )
    # at 0.8 of the peak: the first component (peak 1.0) keeps 1.0 and 0.9 and drops 0.6 (< 0.8);
    # the second (peak 0.6) keeps 0.6 and 0.55 (>= 0.48)
    got = oof_maps.relative_cut(prob, 0.8)
    expected = np.array(
        [
            [True, True, False, False, False],
            [False, False, False, False, False],
            [False, False, False, True, True],
        ]
    )
    np.testing.assert_array_equal(got, expected)
    # share 0.95: 0.55 < 0.57 goes; the plain threshold is untouched by a share of 0.5
    assert not oof_maps.relative_cut(prob, 0.95)[2, 4]
    np.testing.assert_array_equal(oof_maps.relative_cut(prob, 0.5), prob >= 0.5)


def test_near_edge_is_the_band_inside_the_breast_edge_and_everything_outside(oof_maps) -> None:
    breast = np.zeros((9, 9), np.uint8)
    breast[1:8, 1:8] = 1  # a 7 x 7 breast
    edge = oof_maps.near_edge(breast, 1)
    inner = ~edge
    # one pixel in from the edge on every side: the 5 x 5 core at [2:7, 2:7]
    expected_inner = np.zeros((9, 9), bool)
    expected_inner[2:7, 2:7] = True
    np.testing.assert_array_equal(inner, expected_inner)
