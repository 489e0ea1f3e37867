"""The dataset-level code the evaluate / train / publish tasks call, tested without Prefect."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mammoseg.evaluation.scoring import (
    BASELINE_WHAT,
    NO_AUDIT,
    NO_FINDINGS,
    check_plan_digest,
    score_set,
    set_metrics,
    subgroups,
    trained_on_rows,
    whole_breast_baseline,
)
from mammoseg.publish import EvaluatedSet, combined_metrics, eval_set_fingerprint, training_data
from mammoseg.training.split import combine_manifests, split_counts, split_table


def test_whole_breast_baseline_by_hand() -> None:
    # case 1: tp 2, fp 6, fn 0 (Dice 4/12); case 2: tp 0, fp 4, fn 2 (Dice 0)
    b = whole_breast_baseline([(1 / 3, 2, 6, 0), (0.0, 0, 4, 2)])
    assert b == {"what": BASELINE_WHAT, "dice_mean": pytest.approx(1 / 6), "dice_pooled": pytest.approx(4 / 16)}
    assert whole_breast_baseline([]) is None


class _Result:
    """An evaluation result's figures, as :meth:`EvaluationResult.to_dict` gives them."""

    def to_dict(self) -> dict:
        return {"dice_mean": 0.5, "n_cases": 2}


def test_set_metrics_one_schema() -> None:
    manifest = pd.DataFrame({"case_id": ["a", "b"], "npz_etag": ["e1", "e2"]})
    m = set_metrics(_Result(), manifest=manifest, plan={"threshold": 0.4}, findings=None, suspicious=False, baseline=None)
    assert list(m) == ["dice_mean", "n_cases", "eval_set", "plan", "leakage_audit", "suspicious"]
    assert m["eval_set"] == eval_set_fingerprint([{"case_id": "b", "npz_etag": "e2"}, {"case_id": "a", "npz_etag": "e1"}])
    assert m["leakage_audit"] == [NO_AUDIT]
    base = {"what": BASELINE_WHAT, "dice_mean": 0.1, "dice_pooled": 0.2}
    m = set_metrics(_Result(), manifest=manifest, plan={}, findings=[], suspicious=True, baseline=base)
    assert m["leakage_audit"] == [NO_FINDINGS] and m["suspicious"] is True and m["baseline_whole_breast"] == base
    m = set_metrics(_Result(), manifest=manifest, plan={}, findings=["2 patients overlap"], suspicious=False, baseline=None)
    assert m["leakage_audit"] == ["2 patients overlap"]


def test_arrays_of_other_parameters_are_refused() -> None:
    manifest = pd.DataFrame({"params_digest": ["aaa", "bbb", "aaa"]})
    check_plan_digest("heldout-x", manifest.iloc[[0, 2]], "aaa")
    with pytest.raises(ValueError, match=r"heldout-x: arrays preprocessed with parameters \['bbb'\].*plan preprocesses with aaa"):
        check_plan_digest("heldout-x", manifest, "aaa")


def test_subgroups_and_trained_on_rows() -> None:
    row = {"source_dataset": "mini-mias", "pathology": "BENIGN", "abnormality_types": ["mass", "calcification"],
           "density": 3.0}
    assert subgroups(row) == {"dataset": "mini-mias", "pathology": "BENIGN", "lesion_type": "mass+calcification",
                              "density": "3"}
    assert subgroups(row | {"abnormality_types": [], "density": float("nan")})["lesion_type"] == "normal"
    assert subgroups(row | {"density": float("nan")})["density"] == "n/a"
    training = pd.DataFrame({"case_id": ["a", "b", "c"], "patient_id": ["p", "q", "r"]})
    split = pd.DataFrame({"case_id": ["a", "b", "c"], "split": ["train", "test", "val"]})
    assert trained_on_rows(training, split)["case_id"].tolist() == ["a", "c"]


def _manifest(prefix: str, n_patients: int) -> pd.DataFrame:
    rows = [{"case_id": f"{prefix}-{p}-{v}", "patient_id": f"{prefix}-p{p}", "source_dataset": prefix,
             "pathology": "BENIGN" if p % 2 else "NORMAL", "abnormality_types": ["mass"] if p % 2 else [],
             "npz_key": f"pre/{prefix}{p}{v}.npz", "npz_etag": f"e{p}{v}", "n_lesions": p % 2}
            for p in range(n_patients) for v in range(2)]
    return pd.DataFrame(rows)


def test_combine_manifests_and_duplicates() -> None:
    a, b = _manifest("a", 2), _manifest("b", 1)
    table = combine_manifests({"set-a": a, "set-b": b})
    assert table.columns[0] == "dataset" and table["dataset"].tolist() == ["set-a"] * 4 + ["set-b"] * 2
    assert "dataset" not in a.columns  # the caller's tables are not changed
    with pytest.raises(ValueError, match=r"1 case id\(s\) occur in more than one training set: \['a-0-0'\]"):
        combine_manifests({"set-a": a, "again": a.head(1)})


def test_split_table_by_patient_per_dataset() -> None:
    single = _manifest("mias", 20)
    table = split_table(single, val_fraction=0.2, test_fraction=0.2, seed=0)
    assert list(table.columns) == ["case_id", "patient_id", "dataset", "split"]
    assert set(table["dataset"]) == {"mias"}  # a single data-pipeline manifest: its source_dataset
    assert table.groupby("patient_id")["split"].nunique().max() == 1  # a patient in one split only
    images, patients = split_counts(table)
    assert sum(images.values()) == 40 and sum(patients.values()) == 20
    assert set(images) == {"train", "val", "test"}
    combined = combine_manifests({"x": _manifest("x", 10), "y": _manifest("y", 10)})
    both = split_table(combined, val_fraction=0.2, test_fraction=0.2, seed=0)
    for dataset in ("x", "y"):  # each dataset reaches every split
        assert set(both.loc[both["dataset"] == dataset, "split"]) == {"train", "val", "test"}


def test_training_data_counts_by_hand() -> None:
    manifest = combine_manifests({"a": _manifest("a", 2)})  # a-0 (2 normal images), a-1 (2 with 1 lesion)
    split = pd.DataFrame({"case_id": ["a-0-0", "a-0-1", "a-1-0", "a-1-1"], "split": ["train", "train", "val", "val"]})
    data = training_data(manifest, split, {"h": _manifest("h", 3)})
    counts = {(c.dataset, c.split): (c.n_images, c.n_patients, c.n_lesions) for c in data.counts}
    assert counts == {("a", "train"): (2, 1, 0), ("a", "val"): (2, 1, 2), ("a", "test"): (0, 0, 0),
                      ("h", "held-out test"): (6, 3, 2)}
    assert [r["case_id"] for r in data.data_manifest] == ["a-0-0", "a-0-1", "a-1-0", "a-1-1"]
    assert data.data_manifest[2] == {"key": "pre/a10.npz", "etag": "e10", "case_id": "a-1-0", "dataset": "a", "split": "val"}
    assert data.datasets == {"train": ["a"], "heldout": ["h"]}


def test_combined_metrics_built_in_one_place() -> None:
    sets = [EvaluatedSet(name="heldout-h", dataset="h", kind="heldout", metrics={"dice_mean": 0.4})]
    m = combined_metrics(sets, "heldout-h", run_id="r1", validation={"best_val_dice": 0.5, "best_epoch": 3})
    assert m == {"dice_mean": 0.4, "primary_set": "heldout-h", "primary_dataset": "h", "primary_kind": "heldout",
                 "internal_test": {}, "heldout": {"h": {"dice_mean": 0.4}}, "run_id": "r1",
                 "validation": {"best_val_dice": 0.5, "best_epoch": 3}}
    assert "run_id" not in combined_metrics(sets, "heldout-h")


class TruthPredictor:
    """Predicts the preprocessed lesion mask itself: what a perfect model would say (a plain
    function of the arrays, no model)."""

    def __init__(self, store, manifest: pd.DataFrame, plan) -> None:
        from mammoseg.preprocess import read_preprocessed

        self.plan = plan
        self.masks = {read_preprocessed(store, k).image.tobytes(): read_preprocessed(store, k).mask
                      for k in manifest["npz_key"]}

    def predict_preprocessed(self, image: np.ndarray, breast_masks=None) -> np.ndarray:
        return self.masks[image.tobytes()].astype(np.float32)


def test_score_set_without_prefect(tmp_path: Path) -> None:
    """Synthetic MIAS → adapter → preprocess (library calls) → score_set with a perfect predictor:
    Dice near 1 on every lesion image, the overlays rendered, the audit finding the shared patient."""
    from mammoseg.adapters.registry import load_dataset
    from mammoseg.casetable import image_table
    from mammoseg.layout import SYNTH_MIAS_PREFIX
    from mammoseg.plan import ModelPlan
    from mammoseg.preprocess import MaskRef, PreprocessParams, preprocess_case
    from mammoseg.storage import LocalStore
    from mammoseg.synth import MiasSynthParams, generate_mias

    store = LocalStore(tmp_path / "store")
    generate_mias(store, MiasSynthParams(n_women=2, size=64, seed=3, prefix=SYNTH_MIAS_PREFIX, abnormal_fraction=1.0))
    source = store.child(SYNTH_MIAS_PREFIX)
    images = image_table(load_dataset("mini-mias", source, pseudonym_key="k").lesions)
    params = PreprocessParams(size=64)
    records = []
    for row in images.itertuples(index=False):
        refs = [MaskRef(key=source.key_from_uri(u)) for u in row.mask_uris] + [MaskRef(geometry=g) for g in row.mask_geometries]
        result = preprocess_case(source, source.key_from_uri(row.image_uri), refs, store, params, laterality=row.laterality)
        records.append({"case_id": row.case_id, "patient_id": row.patient_id, **result.to_record()})
    manifest = pd.DataFrame(records)
    plan = ModelPlan(preprocess=params, threshold=0.5)
    trained_on = manifest.head(1)[["case_id", "patient_id"]].assign(case_id="another-case")
    scored = score_set("heldout-mias", manifest=manifest.iloc[1:], images=images.set_index("case_id"), store=store,
                       source=source, predictor=TruthPredictor(store, manifest, plan), n_boot=20, trained_on=trained_on)
    m = scored.metrics
    assert m["n_cases"] == len(manifest) - 1 and m["threshold"] == 0.5
    assert m["dice_mean"] > 0.8  # resampling back to the original grid loses a little at the edges
    assert m["baseline_whole_breast"]["dice_mean"] < m["dice_mean"]
    assert scored.overlays_png is not None and scored.overlays_png.startswith(b"\x89PNG")
    assert scored.leakage_findings is not None  # the audit ran: one shared patient ...
    assert (manifest["patient_id"].iloc[1:] == manifest["patient_id"].iloc[0]).any() == bool(scored.leakage_findings)
    json.dumps(m)  # the metrics.json is JSON
    with pytest.raises(ValueError, match="plan preprocesses with"):
        other = ModelPlan(preprocess=PreprocessParams(size=64, clahe_clip_limit=3.0))
        score_set("x", manifest=manifest, images=images.set_index("case_id"), store=store, source=source,
                  predictor=TruthPredictor(store, manifest.head(1), other))


def test_retrain_summary_by_hand() -> None:
    from mammoseg.runreport import QuarantineRecord, RunReport
    from mammoseg.runsummary import DatasetRun, PublishedLine, ScoredLine, retrain_artifacts
    from mammoseg.settings import Settings

    report = RunReport(run_id="r1-a", dataset="a", source_url="s", store_url="t", cases_found=5, cases_preprocessed=3,
                       quarantined=[QuarantineRecord(stage="preprocess", reason="bad"),
                                    QuarantineRecord(stage="skipped", reason="absent")])
    specs = retrain_artifacts(
        run_id="r1", primary="heldout-h", settings=Settings(),
        datasets=[(DatasetRun(role="train", dataset="a", report_uri="file:///s/runs/r1-a/report.json"), report)],
        scored=[ScoredLine(name="heldout-h", metrics={"n_cases": 4, "n_patients": 2, "dice_mean": 0.5,
                                                      "ci95": {"dice_mean": [0.25, 0.75]}, "dice_pooled": 0.4},
                           overlays_uri=None)],
        published=PublishedLine(version="v1", promoted=False, gate_reason="worse", model_card_uri="file:///c",
                                model_uri="file:///m", metrics_uri="file:///x"),
    )
    assert [s.key for s in specs] == ["retrain-summary", "retrain-report-train-a"]
    summary = specs[0].body
    assert "**Model version `v1`**: not promoted (worse)." in summary
    assert "| heldout-h (primary) | 4 (2) | 0.500 [0.250 – 0.750] | 0.400 | — |" in summary
    # 5 found, 3 preprocessed, 1 quarantined (the skipped case is not a quarantine)
    assert "| a | training | 5 | 3 | 1 | `file:///s/runs/r1-a/report.json` |" in summary


def test_trained_on_table_and_the_run_of_a_model(tmp_path: Path) -> None:
    from mammoseg.catalog import RunCatalog
    from mammoseg.publish import trained_on_table
    from mammoseg.storage import LocalStore

    rows = [{"case_id": "a", "key": "pre/a.npz", "etag": "e1", "split": "val"}, {"case_id": "b", "key": "pre/b.npz", "etag": "e2"}]
    table = trained_on_table(rows, pd.Series({"a": "p1"}))
    assert table.to_dict("records") == [
        {"case_id": "a", "npz_key": "pre/a.npz", "npz_etag": "e1", "split": "val", "patient_id": "p1"},
        {"case_id": "b", "npz_key": "pre/b.npz", "npz_etag": "e2", "split": "train", "patient_id": np.nan},
    ]
    assert trained_on_table(rows, None)["patient_id"].isna().all()
    store = LocalStore(tmp_path)
    assert RunCatalog.of_model_key(store, "runs/r7/model/model.keras").run_id == "r7"
    for key in ("runs/r7/model/plan.json", "models/versions/v/model.keras", "runs//model/model.keras", "model.keras"):
        assert RunCatalog.of_model_key(store, key) is None, key


def test_publish_run_writes_one_schema_and_a_retry_is_the_same_version(tmp_path: Path) -> None:
    from mammoseg.plan import ModelPlan
    from mammoseg.preprocess import PreprocessParams
    from mammoseg.publish import TrainingRecord, publish_run, read_metrics
    from mammoseg.storage import LocalStore

    store = LocalStore(tmp_path / "store")
    model = tmp_path / "model.keras"
    model.write_bytes(b"weights")
    manifest = combine_manifests({"a": _manifest("a", 2)})
    split = pd.DataFrame({"case_id": manifest["case_id"], "split": ["train", "train", "val", "test"]})
    def publish():
        return publish_run(
            store, run_id="r9", model_file=model, plan=ModelPlan(preprocess=PreprocessParams(size=64)), primary="heldout-h",
            evaluations=[EvaluatedSet(name="heldout-h", dataset="h", kind="heldout", metrics={"dice_mean": 0.3, "n_cases": 6})],
            data=training_data(manifest, split, {"h": _manifest("h", 3)}),
            training=TrainingRecord(model={"depth": 2}, training={"epochs": 1}, threshold=0.4, history=[{"epoch": 1.0}],
                                    best_val_dice=0.2, best_epoch=1),
        )

    first, card = publish()
    again, _ = publish()
    assert again.version == first.version and "r9" in first.version
    m = read_metrics(store, first.version)
    assert m["run_id"] == "r9" and m["validation"] == {"best_val_dice": 0.2, "best_epoch": 1}
    assert m["primary_set"] == "heldout-h" and m["dice_mean"] == 0.3
    config = json.loads(store.read_bytes(f"models/versions/{first.version}/training_config.json"))
    assert config["datasets"] == {"train": ["a"], "heldout": ["h"]} and config["threshold"] == 0.4
    rows = json.loads(store.read_bytes(f"models/versions/{first.version}/data_manifest.json"))
    assert sorted(r["split"] for r in rows) == ["train", "train", "val"]  # never the test split
    assert first.version in card
