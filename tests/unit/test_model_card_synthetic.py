"""The model card warns when the data came from mammoseg's synthetic generator (as in the demo),
and only then."""

from __future__ import annotations

import pytest

from mammoseg.layout import SYNTH_CBIS_PREFIX, SYNTH_MIAS_PREFIX
from mammoseg.publish import DataSplitSummary, EvaluatedSet, model_card
from mammoseg.storage import LocalStore

WARNING = "say nothing about performance on real mammograms"


def _card(sources: dict[str, str] | None) -> str:
    """A card shaped like the demo's: CBIS-DDSM-shaped training set, mini-MIAS held out."""
    data = [DataSplitSummary("cbis-ddsm", s, 10, 5, 12) for s in ("train", "val", "test")]
    data.append(DataSplitSummary("mini-mias", "held-out test", 16, 8, 16))
    figures = {"dice_mean": 0.4, "n_cases": 4, "n_patients": 2, "ci95": {}}
    sets = [
        EvaluatedSet("internal-test-cbis-ddsm", "cbis-ddsm", "internal_test", figures, []),
        EvaluatedSet("heldout-mini-mias", "mini-mias", "heldout", figures, []),
    ]
    return model_card(version="v1", data=data, metrics={}, training_config={}, evaluations=sets,
                      primary="heldout-mini-mias", sources=sources)  # fmt: skip


def test_demo_like_run_on_the_local_store_warns(tmp_path) -> None:
    # the sources exactly as flows/demo.py makes them
    store = LocalStore(tmp_path / ".mammoseg" / "store")
    card = _card({
        "cbis-ddsm": store.uri(SYNTH_CBIS_PREFIX).rstrip("/"),
        "mini-mias": store.uri(SYNTH_MIAS_PREFIX).rstrip("/"),
    })  # fmt: skip
    assert "All of the data is synthetic" in card and WARNING in card
    assert "cbis-ddsm, mini-mias" in card.split("## Limitations", 1)[1]


@pytest.mark.parametrize(
    "sources",
    [
        {
            "cbis-ddsm": f"s3://bucket/mammoseg/{SYNTH_CBIS_PREFIX}",
            "mini-mias": "s3://bucket/real/mini-mias",
        },
        {"cbis-ddsm": f"{SYNTH_CBIS_PREFIX}/", "mini-mias": "../shared/data/mini-mias"},
    ],
)
def test_part_synthetic_warns_and_names_the_synthetic_set(sources) -> None:
    card = _card(sources)
    assert "Part of the data is synthetic" in card and WARNING in card
    limits = card.split("## Limitations", 1)[1]
    assert "generator: cbis-ddsm)" in limits


@pytest.mark.parametrize(
    "sources",
    [
        None,
        {},
        {"cbis-ddsm": "s3://bucket/CBIS-DDSM", "mini-mias": "../shared/data/mini-mias"},
        # a look-alike folder name is not the generator's prefix
        {
            "cbis-ddsm": "s3://bucket/raw/synthetic-cbis-ddsm-archive",
            "mini-mias": "/data/raw/mini-mias",
        },
    ],
)
def test_real_sources_do_not_warn(sources) -> None:
    card = _card(sources)
    assert WARNING not in card and "synthetic" not in card
