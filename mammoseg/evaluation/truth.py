"""Ground truth of one case in its original geometry, as every scorer reads it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mammoseg.storage import ObjectStore


def read_truth(
    source: ObjectStore, mask_uris: Sequence[str], mask_geometries: Sequence[Any], shape: tuple[int, int]
) -> tuple[np.ndarray, list]:
    """The union lesion mask ``[H, W]`` bool and the per-lesion objects (masks, or circles/ellipses
    from the lesion table's geometries) of one image of ``shape``, read from its ``source`` store."""
    from mammoseg.evaluation.detection import lesion_from_geometry
    from mammoseg.imageio import load_mask
    from mammoseg.masks import render_geometry

    truth = np.zeros(shape, dtype=bool)
    lesions: list = []
    for uri in mask_uris:
        key = source.key_from_uri(uri)
        m = load_mask(source.read_bytes(key), key)
        truth |= m
        lesions.append(m)
    for geometry in mask_geometries:
        truth |= render_geometry(geometry, shape)
        lesions.append(lesion_from_geometry(geometry, shape))
    return truth, lesions
