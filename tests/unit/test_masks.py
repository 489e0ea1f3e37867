"""Geometry rendering, union and IoU on tiny masks with hand-computed expected pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mammoseg.casetable import circle_geometry, polygon_geometry
from mammoseg.masks import (
    GeometryError,
    mask_iou,
    render_geometries,
    render_geometry,
    union_mask,
)


def _pixels(mask: np.ndarray) -> set[tuple[int, int]]:
    """(row, col) of the True pixels."""
    return {(int(r), int(c)) for r, c in zip(*np.nonzero(mask), strict=True)}


# --- circles: pixels whose centre (x=col, y=row) lies within r --------------------------------


def test_circle_radius_one_is_a_plus_sign() -> None:
    m = render_geometry(circle_geometry(2, 2, 1), (5, 5))
    assert m.dtype == bool and m.shape == (5, 5)
    assert _pixels(m) == {(2, 2), (1, 2), (3, 2), (2, 1), (2, 3)}


def test_circle_radius_one_and_a_half_takes_the_diagonals() -> None:
    # diagonal neighbours are sqrt(2) = 1.414 away; the next ring (distance 2) is out
    m = render_geometry(circle_geometry(2, 2, 1.5), (5, 5))
    assert _pixels(m) == {(r, c) for r in (1, 2, 3) for c in (1, 2, 3)}


def test_circle_between_pixel_centres() -> None:
    # centre (0.5, 0.5): the four pixels around it are 0.707 away, the next ones 1.58
    m = render_geometry(circle_geometry(0.5, 0.5, 0.75), (4, 4))
    assert _pixels(m) == {(0, 0), (0, 1), (1, 0), (1, 1)}


def test_circle_x_is_column_and_y_is_row() -> None:
    m = render_geometry(circle_geometry(3, 1, 0), (3, 5))
    assert _pixels(m) == {(1, 3)}


def test_circle_is_clipped_at_the_border() -> None:
    m = render_geometry(circle_geometry(0, 0, 1), (3, 3))
    assert _pixels(m) == {(0, 0), (0, 1), (1, 0)}


def test_circle_outside_the_image_is_empty() -> None:
    m = render_geometry(circle_geometry(-10, 50, 3), (8, 8))
    assert m.shape == (8, 8) and not m.any()


# --- polygons: cv2.fillPoly on 1/256-px vertices, outline pixels included -------------------------


def test_integer_square_covers_its_outline_and_inside() -> None:
    m = render_geometry(polygon_geometry([(1, 1), (4, 1), (4, 4), (1, 4)]), (6, 6))
    assert _pixels(m) == {(r, c) for r in range(1, 5) for c in range(1, 5)}


def test_fractional_vertices_are_not_truncated() -> None:
    # the outline x = 1.4 and x = 3.6 passes through pixels 1 and 4 (which cover [0.5, 1.5) and
    # [3.5, 4.5)); truncating the vertices to int would give 1..3 instead
    m = render_geometry(polygon_geometry([(1.4, 1.4), (3.6, 1.4), (3.6, 3.6), (1.4, 3.6)]), (6, 6))
    assert _pixels(m) == {(r, c) for r in range(1, 5) for c in range(1, 5)}
    # an outline at 0.6 / 3.4 lies in pixels 1 and 3
    m = render_geometry(polygon_geometry([(0.6, 0.6), (3.4, 0.6), (3.4, 3.4), (0.6, 3.4)]), (6, 6))
    assert _pixels(m) == {(r, c) for r in range(1, 4) for c in range(1, 4)}


def test_triangle() -> None:
    # right triangle (0,0) (4,0) (0,4): the pixel centres with x + y <= 4 → 5+4+3+2+1 pixels
    m = render_geometry(polygon_geometry([(0, 0), (4, 0), (0, 4)]), (6, 6))
    assert _pixels(m) == {(r, c) for r in range(6) for c in range(6) if r + c <= 4}


def test_polygon_partly_outside_is_clipped() -> None:
    m = render_geometry(polygon_geometry([(-2, -2), (2, -2), (2, 2), (-2, 2)]), (5, 5))
    assert _pixels(m) == {(r, c) for r in range(3) for c in range(3)}


def test_polygon_outside_is_empty() -> None:
    m = render_geometry(polygon_geometry([(20, 20), (30, 20), (30, 30)]), (8, 8))
    assert not m.any()


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        (json.dumps({"type": "ellipse"}), "unknown mask geometry type"),
        (json.dumps({"type": "circle", "cx": 1, "cy": 1, "r": -1}), "negative"),
        (json.dumps({"type": "circle", "cx": 1, "cy": 1}), "circle r"),
        (json.dumps({"type": "circle", "cx": True, "cy": 1, "r": 1}), "circle cx"),
        ('{"type": "circle", "cx": NaN, "cy": 1, "r": 1}', "finite"),
        (json.dumps({"type": "circle", "cx": 1e12, "cy": 1, "r": 1}), "finite"),
        (json.dumps({"type": "polygon", "points": [[0, 0], [1, 1]]}), "at least 3 points"),
        (json.dumps({"type": "polygon", "points": [[0, 0], [1, 1], [2]]}), "point 2"),
        (json.dumps({"type": "polygon", "points": [[0, 0], [1, 1], ["a", 2]]}), "point 2 x"),
    ],
)
def test_bad_geometries_raise_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(GeometryError, match=reason):
        render_geometry(text, (4, 4))


@pytest.mark.parametrize("shape", [(0, 4), (4,), (4, -1), (2.5, 3)])
def test_bad_shapes_are_refused(shape) -> None:
    with pytest.raises(ValueError, match="shape"):
        render_geometry(circle_geometry(1, 1, 1), shape)


# --- union and IoU ----------------------------------------------------------------------------


def test_union_of_nothing_is_all_false() -> None:
    u = union_mask([], (3, 4))
    assert u.shape == (3, 4) and u.dtype == bool and not u.any()


def test_union_is_pixelwise_or_and_leaves_inputs_alone() -> None:
    a = np.array([[1, 0, 0], [0, 0, 0]], dtype=np.uint8)
    b = np.array([[False, False, True], [False, True, False]])
    a0, b0 = a.copy(), b.copy()
    u = union_mask([a, b], (2, 3))
    assert u.tolist() == [[True, False, True], [False, True, False]]
    assert np.array_equal(a, a0) and np.array_equal(b, b0)
    u[:] = False  # the result is a new array
    assert a.any() and b.any()


def test_union_refuses_a_mask_of_another_shape() -> None:
    with pytest.raises(ValueError, match="mask 1 has shape"):
        union_mask([np.zeros((2, 2)), np.zeros((3, 2))], (2, 2))


def test_render_geometries_unions_circles_and_polygons() -> None:
    geoms = [circle_geometry(0, 0, 0), polygon_geometry([(2, 2), (3, 2), (3, 3), (2, 3)])]
    m = render_geometries(geoms, (4, 4))
    assert _pixels(m) == {(0, 0), (2, 2), (2, 3), (3, 2), (3, 3)}
    assert not render_geometries([], (4, 4)).any()


def test_mask_iou_hand_values() -> None:
    a = np.array([[1, 1, 0]], dtype=bool)
    b = np.array([[0, 1, 1]], dtype=bool)
    assert mask_iou(a, b) == pytest.approx(1 / 3)
    assert mask_iou(a, a) == 1.0
    assert mask_iou(a, ~a) == 0.0
    assert mask_iou(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0  # both empty
    with pytest.raises(ValueError, match="differ in shape"):
        mask_iou(np.zeros((2, 2)), np.zeros((2, 3)))
