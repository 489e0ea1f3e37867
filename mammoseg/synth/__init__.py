"""Synthetic mammography data sets shaped like the real ones, for tests, demos and benchmarks.

* :func:`generate_cbis` — CBIS-DDSM layout: DICOMs, ROI masks, crops and the four CSVs, quirks
  included, plus deliberately defective cases (``n_bad``) for the quarantine.
* :func:`generate_mias` — mini-MIAS layout: PGM images and ``Info.txt`` (bottom-left origin).

Both draw with :mod:`mammoseg.synth.anatomy`, are deterministic in their ``seed`` and return a
:class:`SynthSummary` with the keys written and per-image ground truth.
"""

from mammoseg.synth.cbis import (
    CALC_COLUMNS,
    DEFECT_KINDS,
    MASS_COLUMNS,
    CbisSynthParams,
    generate_cbis,
)
from mammoseg.synth.mias import MIAS_CLASSES, MiasSynthParams, generate_mias
from mammoseg.synth.records import SynthImage, SynthLesion, SynthSummary

__all__ = [
    "CALC_COLUMNS",
    "DEFECT_KINDS",
    "MASS_COLUMNS",
    "MIAS_CLASSES",
    "CbisSynthParams",
    "MiasSynthParams",
    "SynthImage",
    "SynthLesion",
    "SynthSummary",
    "generate_cbis",
    "generate_mias",
]
