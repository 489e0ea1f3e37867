"""Versioned models and the champion/challenger gate, on a LocalStore (and once on S3)."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import pytest

from mammoseg.publish import (
    CURRENT_KEY,
    DataSplitSummary,
    PublishError,
    current_model,
    eval_set_fingerprint,
    is_complete,
    list_versions,
    make_version_id,
    model_card,
    promote_if_better,
    publish_version,
    read_pointer,
    read_version,
    verify_version,
)
from mammoseg.storage import LocalStore, ObjectInfo, open_store

MANIFEST = [{"key": "preprocessed/p1/abc.npz", "etag": "0123abcd"}]


class RecordingStore(LocalStore):
    """A LocalStore that remembers the order of writes."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.written: list[str] = []

    def _put_stream(self, key: str, stream: IO[bytes], content_type: str | None) -> ObjectInfo:
        info = super()._put_stream(key, stream, content_type)
        self.written.append(key)
        return info


class CrashingStore(LocalStore):
    """A LocalStore whose process "dies" when it reaches one key (simulated crash mid-publish)."""

    def __init__(self, root: Path, crash_on: str) -> None:
        super().__init__(root)
        self.crash_on = crash_on

    def _put_stream(self, key: str, stream: IO[bytes], content_type: str | None) -> ObjectInfo:
        if key.endswith(self.crash_on):
            raise RuntimeError("simulated crash")
        return super()._put_stream(key, stream, content_type)


def _model(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / f"model-{hashlib.md5(content).hexdigest()[:6]}.keras"
    path.write_bytes(content)
    return path


def _publish(store: LocalStore, tmp_path: Path, score: float, **metrics: object) -> str:
    model = _model(tmp_path, f"weights scoring {score}".encode())
    pv = publish_version(
        store,
        model_file=model,
        training_config={"epochs": 2, "lr": 1e-3},
        data_manifest=MANIFEST,
        metrics={"dice_mean": score, **metrics},
        model_card_md="# card\n",
    )
    return pv.version


def test_publish_writes_every_file_and_complete_last(tmp_path: Path) -> None:
    store = RecordingStore(tmp_path / "store")
    model = _model(tmp_path, b"fake keras weights")
    pv = publish_version(
        store,
        model_file=model,
        training_config={"epochs": 3, "data_dir": Path("/x")},
        data_manifest=MANIFEST,
        metrics={"dice_mean": 0.5, "ci95": {"dice_mean": [0.4, 0.6]}},
        model_card_md="# Model card\n",
    )
    sha = hashlib.sha256(b"fake keras weights").hexdigest()
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{8}", pv.version)
    assert pv.version.endswith(sha[:8]) and pv.model_sha256 == sha
    prefix = f"models/versions/{pv.version}"
    assert pv.prefix == prefix
    names = [k.removeprefix(prefix + "/") for k in store.written]
    assert names == [
        "model.keras", "training_config.json", "data_manifest.json", "metrics.json",
        "MODEL_CARD.md", "COMPLETE",
    ]  # fmt: skip
    assert store.read_bytes(f"{prefix}/model.keras") == b"fake keras weights"
    assert json.loads(store.read_bytes(f"{prefix}/data_manifest.json")) == MANIFEST
    assert json.loads(store.read_bytes(f"{prefix}/training_config.json"))["data_dir"] == "/x"
    marker = json.loads(store.read_bytes(f"{prefix}/COMPLETE"))
    assert marker["files"]["model.keras"]["size"] == len(b"fake keras weights")
    assert pv.model_uri == store.uri(f"{prefix}/model.keras")
    assert is_complete(store, pv.version) and list_versions(store) == [pv.version]


def test_the_plan_is_published_beside_the_model_and_recorded_in_complete(tmp_path: Path) -> None:
    from mammoseg.plan import ModelPlan
    from mammoseg.preprocess import PreprocessParams

    store = RecordingStore(tmp_path / "store")
    plan = ModelPlan(preprocess=PreprocessParams(size=64), tta_mirror=True, threshold=0.35)
    pv = publish_version(store, model_file=_model(tmp_path, b"weights"), training_config={}, data_manifest=MANIFEST,
                         metrics={"dice_mean": 0.5}, model_card_md="# card\n", plan=plan)  # fmt: skip
    prefix = f"models/versions/{pv.version}"
    assert [k.removeprefix(prefix + "/") for k in store.written][:2] == ["model.keras", "plan.json"]
    assert store.written[-1] == f"{prefix}/COMPLETE"
    marker = json.loads(store.read_bytes(f"{prefix}/COMPLETE"))
    assert marker["files"]["plan.json"]["size"] == len(plan.to_json())
    assert ModelPlan.from_json(store.read_bytes(f"{prefix}/plan.json")) == plan
    assert pv.plan_uri == store.uri(f"{prefix}/plan.json") == read_version(store, pv.version).plan_uri
    # once COMPLETE lists the plan, a changed or missing plan makes the version ineligible
    store.write_bytes(f"{prefix}/plan.json", ModelPlan(threshold=0.9).to_json())
    assert verify_version(store, pv.version) == ["plan.json changed after publishing (size/ETag differ)"]
    store.delete(f"{prefix}/plan.json")
    assert verify_version(store, pv.version) == ["plan.json is missing"]


def test_a_version_without_a_plan_is_still_readable(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    v = _publish(store, tmp_path, 0.4)
    assert not store.exists(f"models/versions/{v}/plan.json")
    assert is_complete(store, v) and read_version(store, v).plan_uri is None
    assert promote_if_better(store, v).promoted


def test_version_ids_sort_by_time() -> None:
    early = make_version_id(
        Path("unused"), now=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC), sha256="f" * 64
    )
    late = make_version_id(
        Path("unused"), now=datetime(2025, 1, 2, 3, 4, 6, tzinfo=UTC), sha256="0" * 64
    )
    assert early == "20250102T030405Z-ffffffff"
    assert sorted([late, early]) == [early, late]


def test_gate_promotes_better_and_refuses_worse(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    assert read_pointer(store) is None and current_model(store) is None

    v1 = _publish(store, tmp_path, 0.60)
    d1 = promote_if_better(store, v1)
    assert d1.promoted and d1.champion_before is None and "no champion" in d1.reason
    pointer = json.loads(store.read_bytes(CURRENT_KEY))
    assert set(pointer) == {"version", "metric", "score", "promoted_at", "previous"}
    assert (pointer["version"], pointer["metric"], pointer["score"]) == (v1, "dice_mean", 0.60)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", pointer["promoted_at"])

    v2 = _publish(store, tmp_path, 0.70)
    d2 = promote_if_better(store, v2)
    assert d2.promoted and d2.champion_before == v1
    assert (d2.challenger_score, d2.champion_score) == (0.70, 0.60)
    assert read_pointer(store).previous == v1
    assert current_model(store).version == v2

    v3 = _publish(store, tmp_path, 0.65)
    before = store.read_bytes(CURRENT_KEY)
    d3 = promote_if_better(store, v3)
    assert not d3.promoted
    assert "does not beat champion" in d3.reason and v2 in d3.reason
    assert (d3.challenger_score, d3.champion_score, d3.champion_before) == (0.65, 0.70, v2)
    assert store.read_bytes(CURRENT_KEY) == before
    assert not promote_if_better(store, v2).promoted  # already the champion


def test_min_improvement(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    assert promote_if_better(store, _publish(store, tmp_path, 0.70)).promoted
    small = _publish(store, tmp_path, 0.705)
    d = promote_if_better(store, small, min_improvement=0.01)
    assert not d.promoted and "by more than 0.01" in d.reason
    assert promote_if_better(store, small, min_improvement=0.001).promoted
    with pytest.raises(PublishError, match="min_improvement"):
        promote_if_better(store, small, min_improvement=-0.1)


def test_equal_score_is_not_promoted(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    first = _publish(store, tmp_path, 0.7)
    promote_if_better(store, first)
    same = publish_version(
        store,
        model_file=_model(tmp_path, b"other weights, same score"),
        training_config={},
        data_manifest=MANIFEST,
        metrics={"dice_mean": 0.7},
        model_card_md="",
    )
    d = promote_if_better(store, same.version)
    assert not d.promoted and read_pointer(store).version == first


def test_incomplete_version_is_never_promoted(tmp_path: Path) -> None:
    root = tmp_path / "store"
    good = LocalStore(root)
    champion = _publish(good, tmp_path, 0.5)
    promote_if_better(good, champion)
    pointer_before = good.read_bytes(CURRENT_KEY)

    crashing = CrashingStore(root, crash_on="MODEL_CARD.md")
    model = _model(tmp_path, b"much better weights")
    with pytest.raises(RuntimeError, match="simulated crash"):
        publish_version(
            crashing,
            model_file=model,
            training_config={},
            data_manifest=MANIFEST,
            metrics={"dice_mean": 0.99},
            model_card_md="# card",
            version="v-crashed",
        )
    assert good.exists("models/versions/v-crashed/metrics.json")  # partly written
    assert not good.exists("models/versions/v-crashed/COMPLETE")
    d = promote_if_better(good, "v-crashed")
    assert not d.promoted and "COMPLETE" in d.reason
    assert good.read_bytes(CURRENT_KEY) == pointer_before
    assert list_versions(good) == [champion]
    assert "v-crashed" in list_versions(good, complete_only=False)
    with pytest.raises(PublishError, match="not usable"):
        read_version(good, "v-crashed")
    # a retry of the interrupted publish completes the version, which is then eligible
    publish_version(
        good,
        model_file=model,
        training_config={},
        data_manifest=MANIFEST,
        metrics={"dice_mean": 0.99},
        model_card_md="# card",
        version="v-crashed",
    )
    assert promote_if_better(good, "v-crashed").promoted


def test_a_version_changed_after_publishing_is_not_eligible(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    v = _publish(store, tmp_path, 0.4)
    store.write_bytes(f"models/versions/{v}/metrics.json", b'{"dice_mean": 0.99}')
    assert verify_version(store, v) == ["metrics.json changed after publishing (size/ETag differ)"]
    d = promote_if_better(store, v)
    assert not d.promoted and "changed after publishing" in d.reason
    assert not store.exists(CURRENT_KEY)


def test_publish_refuses_bad_input_before_writing_anything(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    model = _model(tmp_path, b"w")
    kwargs = {"training_config": {}, "data_manifest": MANIFEST, "model_card_md": ""}
    with pytest.raises(PublishError, match="NaN"):
        publish_version(store, model_file=model, metrics={"dice_mean": float("nan")}, **kwargs)
    with pytest.raises(PublishError, match="'key' and 'etag'"):
        publish_version(
            store, model_file=model, metrics={}, training_config={}, data_manifest=[{"key": "a"}],
            model_card_md="",
        )  # fmt: skip
    with pytest.raises(PublishError, match="does not exist"):
        publish_version(store, model_file=tmp_path / "missing.keras", metrics={}, **kwargs)
    with pytest.raises(PublishError, match="invalid version id"):
        publish_version(store, model_file=model, metrics={}, version="../evil", **kwargs)
    assert list(store.list()) == []
    first = publish_version(store, model_file=model, metrics={}, version="v1", **kwargs)
    # the same content again (a retry) returns the existing version; different content is refused
    assert publish_version(store, model_file=model, metrics={}, version="v1", **kwargs) == first
    with pytest.raises(PublishError, match="immutable"):
        publish_version(store, model_file=model, metrics={"dice_mean": 0.1}, version="v1", **kwargs)


def test_gate_refuses_missing_metric_and_different_eval_sets(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    fp_a = eval_set_fingerprint([{"case_id": "cs-1", "npz_etag": "e1"}])
    fp_b = eval_set_fingerprint([{"case_id": "cs-2", "npz_etag": "e2"}])
    assert fp_a == eval_set_fingerprint([{"case_id": "cs-1", "npz_etag": "e1"}]) != fp_b
    champion = _publish(store, tmp_path, 0.5, eval_set=fp_a)
    assert promote_if_better(store, champion).promoted
    other_set = _publish(store, tmp_path, 0.9, eval_set=fp_b)
    d = promote_if_better(store, other_set)
    assert not d.promoted and "different held-out sets" in d.reason
    d = promote_if_better(store, other_set, metric="iou_mean")
    assert not d.promoted and "no finite 'iou_mean'" in d.reason
    nested = _publish(store, tmp_path, 0.4, eval_set=fp_a, detection={"sensitivity_at_2fp": 0.8})
    d = promote_if_better(store, nested, metric="detection.sensitivity_at_2fp")
    assert (
        not d.promoted
        and "champion" in d.reason
        and "no 'detection.sensitivity_at_2fp'" in d.reason
    )
    assert read_pointer(store).version == champion


def test_model_card_content() -> None:
    metrics = {
        "dice_mean": 0.61234,
        "iou_mean": 0.5,
        "dice_pooled": 0.7,
        "n_cases": 40,
        "n_patients": 20,
        "threshold": 0.45,
        "ci95": {"dice_mean": [0.55, 0.67], "iou_mean": None, "dice_pooled": [0.6, 0.8]},
        "detection": {"sensitivity_at_1fp": 0.7, "sensitivity_at_2fp": None},
        "subgroups": [{"group": "lesion_size", "value": "small", "n": 5, "dice_mean": 0.2,
                       "ci": [0.1, 0.3]}],
        "definitions": {"dice_mean": "Mean over images of the per-image Dice."},
    }  # fmt: skip
    card = model_card(
        version="20250102T030405Z-abcdef12",
        data=[
            DataSplitSummary("mini-mias", "train", 80, 40, 20),
            DataSplitSummary("synthetic-v1", "test", 40, 20),
        ],
        metrics=metrics,
        training_config={"epochs": 30, "image_size": 256},
        leakage_findings=[],
    )
    assert "not a medical device" in card
    assert "| Dice, mean per image | 0.612 | 0.550 – 0.670 |" in card
    assert "| IoU, mean per image | 0.500 | n/a |" in card
    assert "| Sensitivity at 2 FP/image | n/a | n/a |" in card
    assert "| mini-mias | train | 80 | 40 | 20 |" in card
    assert "by patient" in card
    assert "circles" in card and "synthetic" in card and "domain shift" in card
    assert "| image_size | 256 |" in card and "```" not in card  # a table, no raw JSON
    assert "no shared patients" in card
    leaky = model_card(version="v", data=[], metrics={}, training_config={},
                       leakage_findings=["1 patient id(s) in both train and test: pt-1"])  # fmt: skip
    assert "not trustworthy" in leaky and "pt-1" in leaky


def test_metrics_and_model_card_per_dataset() -> None:
    from mammoseg.publish import EvaluatedSet, combined_metrics

    def figures(dice: float, fingerprint: str) -> dict:
        return {"dice_mean": dice, "iou_mean": dice / 2, "dice_pooled": dice, "n_cases": 4, "n_patients": 2,
                "threshold": 0.4, "ci95": {"dice_mean": [dice - 0.1, dice + 0.1]}, "eval_set": fingerprint}  # fmt: skip

    sets = [
        EvaluatedSet("internal-test-cbis-ddsm", "cbis-ddsm", "internal_test", figures(0.5, "a"), []),
        EvaluatedSet("internal-test-inbreast", "inbreast", "internal_test", figures(0.6, "b"), []),
        EvaluatedSet("heldout-mini-mias", "mini-mias", "heldout", figures(0.3, "c"), ["1 patient id(s) in both"]),
    ]
    metrics = combined_metrics(sets, "heldout-mini-mias")
    # the top level is the primary set's: what the champion gate compares
    assert metrics["dice_mean"] == 0.3 and metrics["eval_set"] == "c" and metrics["primary_set"] == "heldout-mini-mias"
    assert set(metrics["internal_test"]) == {"cbis-ddsm", "inbreast"} and set(metrics["heldout"]) == {"mini-mias"}
    assert metrics["internal_test"]["inbreast"]["dice_mean"] == 0.6
    missing = combined_metrics(sets[:2], "heldout-mini-mias")
    assert "dice_mean" not in missing and "primary_missing" in missing

    card = model_card(version="v", data=[DataSplitSummary("cbis-ddsm", "train", 8, 4)], metrics=metrics,
                      training_config={}, evaluations=sets, primary="heldout-mini-mias")  # fmt: skip
    assert card.index("## In-domain metrics") < card.index("## Cross-dataset metrics")
    for e in sets:
        assert f"### {e.dataset} — {e.name}" in card
    assert "| metric (inbreast, internal test split) | value | 95% CI |" in card
    assert "| heldout-mini-mias (primary) | mini-mias | held-out dataset | 4 | 2 | 0.300 |" in card
    assert "**heldout-mini-mias**" in card and "not trustworthy" in card and "circles" in card


def test_model_card_training_section_reads_as_a_document() -> None:
    """No raw JSON, numbers rounded, one threshold (the chosen one, not the monitoring cut-off)."""
    config = {
        "model": {"input_size": 64, "base_filters": 4, "depth": 2, "dropout": 0.1, "norm": "batch", "input_norm": "breast"},
        "training": {"epochs": 20, "batch_size": 4, "learning_rate": 0.0010000000474974513, "loss": "focal_dice",
                     "focal_alpha": 0.25, "focal_gamma": 2.0, "dice_weight": 1.0, "early_stopping_patience": 5,
                     "lr_patience": 2, "lr_factor": 0.5, "min_learning_rate": 1e-06, "seed": 0,
                     "lesion_oversample": 0.0, "augment": {"flip": True}, "threshold": 0.5},
        "threshold": 0.75, "history": [{"val_dice": 0.4123}, {"val_dice": 0.5071234}],
        "run_id": "r1", "datasets": {"train": ["cbis-ddsm"], "heldout": ["mini-mias"]}, "primary_set": "heldout-mini-mias",
    }  # fmt: skip
    card = model_card(version="v", data=[], metrics={}, training_config=config)
    training = card[card.index("## Training"):]
    assert "```" not in card and "{" not in training
    assert "0.0010000000474974513" not in card and "learning rate 0.001," in training
    assert "| decision threshold | 0.75 (chosen on the validation split) |" in training
    assert "0.5 " not in training.replace("× 0.5", "")  # the monitoring threshold 0.5 is not shown
    assert "| epochs run | 2; best validation Dice 0.507 |" in training
    assert "U-Net, depth 2, 4 base filters, batch normalisation, dropout 0.1, input 64 px, input normalisation breast" in training


def test_publish_and_gate_on_s3(s3_bucket: str, tmp_path: Path) -> None:
    from mammoseg.settings import get_settings

    store = open_store(f"s3://{s3_bucket}/mammoseg", get_settings())
    v1 = _publish(store, tmp_path, 0.3)
    assert is_complete(store, v1)
    assert promote_if_better(store, v1).promoted
    v2 = _publish(store, tmp_path, 0.2)
    assert not promote_if_better(store, v2).promoted
    cm = current_model(store)
    assert cm.version == v1 and cm.model_uri.startswith(f"s3://{s3_bucket}/mammoseg/models/")
