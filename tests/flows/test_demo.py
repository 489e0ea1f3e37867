"""The README's main job: `mammoseg demo`'s flow end to end on tiny synthetic data."""

from __future__ import annotations

import json
from pathlib import Path

from flows.demo import DEMO_DATA, DemoData, demo_flow, demo_params
from mammoseg.layout import new_run_id
from mammoseg.storage import open_store


def test_demo_flow_synthesises_trains_scores_both_sets_and_publishes(tmp_path: Path) -> None:
    data = DemoData(patients=8, height=128, width=96, mias_images=6, mias_size=64,
                    lesion_contrast=DEMO_DATA.lesion_contrast, lesion_size=DEMO_DATA.lesion_size)
    params = demo_params(size=64, seed=0, epochs=1, base_filters=4, depth=2, patch_size=32, batch_size=4,
                         n_boot=100, val_fraction=0.25, test_fraction=0.25)
    store_url = str(tmp_path / "store")
    result = demo_flow(store_url=store_url, run_id=new_run_id(), bad=1, params=params, data=data)  # DemoData's patients

    assert result["promoted"] and result["model_version"]
    assert result["synthetic"]["defective_cases"] == 1 and result["synthetic"]["demo_data"]["calc_fraction"] == 0.1
    # in-domain and cross-dataset figures apart; the MIAS-format set is the gate
    assert [(e["name"], e["kind"]) for e in result["evaluations"]] == [
        ("internal-test-cbis-ddsm", "internal_test"), ("heldout-mini-mias", "heldout"),
    ]
    assert result["primary"] == "heldout-mini-mias"
    assert result["metrics"]["dice_mean"] == result["evaluations"][1]["metrics"]["dice_mean"]
    store = open_store(store_url)
    plan = json.loads(store.read_bytes(f"models/versions/{result['model_version']}/plan.json"))
    assert plan["patch_size"] == 32 and plan["tta_mirror"] is True
    card = store.read_bytes(f"models/versions/{result['model_version']}/MODEL_CARD.md").decode()
    assert "## Cross-dataset metrics" in card
    assert "synthetic" in card.lower() and "made by mammoseg's generator" in card  # the demo says so
