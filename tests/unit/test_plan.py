"""The inference plan (plan.json): round trip and refusals (no Keras needed)."""

from __future__ import annotations

import json

import pytest

from mammoseg.plan import ModelPlan, PlanError
from mammoseg.preprocess import PreprocessParams


def test_plan_round_trips_through_json() -> None:
    plan = ModelPlan(
        preprocess=PreprocessParams(size=512, clahe_clip_limit=3.0), patch_size=256, window_overlap=0.25,
        tta_mirror=True, threshold=0.35, keep_components=2, min_score=0.9, min_lesion_px=12, top_k=3,
    )
    again = ModelPlan.from_json(plan.to_json())
    assert again == plan
    assert again.network_size == 256 and ModelPlan().network_size == 512


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "monai-bundle"}, "plan format"),
        ({"format_version": 99}, "newer than this mammoseg reads"),
        ({"colour": "red"}, "unknown plan field"),
        ({"threshold": 1.5}, "threshold must be in (0, 1)"),
        ({"keep_components": 0}, "keep_components must be None or an integer >= 1"),
        ({"keep_components": 1.5}, "keep_components must be None or an integer >= 1"),
        ({"min_score": 0.0}, "min_score must be None or a number in (0, 1]"),
        ({"min_score": 1.2}, "min_score must be None or a number in (0, 1]"),
        ({"min_score": "high"}, "min_score must be None or a number in (0, 1]"),
        ({"patch_size": 1024}, "patch_size must be in"),
        ({"preprocess": {"size": 8}}, "size must be in"),
        ({"preprocess": {"size": 256, "sharpen": True}}, "plan does not fit"),
    ],
)
def test_plan_refuses_what_it_cannot_honour(change: dict, message: str) -> None:
    data = ModelPlan().to_dict() | change
    with pytest.raises(PlanError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ModelPlan.from_json(json.dumps(data))


def test_a_version_1_plan_reads_with_no_score_cut_off() -> None:
    data = ModelPlan(threshold=0.4, keep_components=1).to_dict()
    del data["min_score"]
    old = ModelPlan.from_json(json.dumps(data | {"format_version": 1}))
    assert old.min_score is None and old.threshold == 0.4 and old.keep_components == 1


def test_plan_refuses_non_json_and_non_objects() -> None:
    with pytest.raises(PlanError, match="not JSON"):
        ModelPlan.from_json(b"\x00not json")
    with pytest.raises(PlanError, match="JSON object"):
        ModelPlan.from_json("[1, 2]")
