"""Score the published champion on a dataset without retraining: the evaluate flow and command."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.evaluate import evaluate_flow
from mammoseg.casetable import from_csv_bytes, image_table
from mammoseg.cli import _evaluate_text, app
from mammoseg.layout import SYNTH_MIAS_PREFIX, new_run_id
from mammoseg.plan import PLAN_FILE, ModelPlan
from mammoseg.preprocess import PreprocessParams
from mammoseg.publish import promote_if_better, publish_version
from mammoseg.settings import get_settings
from mammoseg.storage import LocalStore, open_store, open_uri
from mammoseg.synth import MiasSynthParams, generate_mias
from tasks.model_ref import locate_training_data

SIZE = 64
N_BOOT = 200
runner = CliRunner()


def _tiny_unet(path: Path) -> None:
    import keras

    from mammoseg.model.unet import UNetConfig, build_unet

    keras.utils.set_random_seed(0)
    build_unet(UNetConfig(input_size=SIZE, base_filters=2, depth=2)).save(path)


def _publish_tiny(store: LocalStore, tmp_path: Path, plan: ModelPlan, *, promote: bool = True) -> str:
    """A tiny untrained U-Net as a published version, its plan.json beside model.keras."""
    model = tmp_path / f"model-{len(list(tmp_path.glob('model-*')))}.keras"
    _tiny_unet(model)
    version = publish_version(
        store,
        model_file=model,
        training_config={"threshold": plan.threshold, "run_id": "train-run"},
        data_manifest=[
            {"key": "preprocessed/abc/1111.npz", "etag": "e1", "case_id": "cs-train-1", "split": "train"},
            {"key": "preprocessed/abc/2222.npz", "etag": "e2", "case_id": "cs-train-2", "split": "val"},
        ],
        metrics={"dice_mean": 0.1},
        model_card_md="# tiny\n",
        plan=plan,
    ).version
    if promote:
        assert promote_if_better(store, version).promoted
    return version


def _direct_evaluation(store_url: str, model_uri: str, result) -> dict:
    """The same numbers without the flow: predict each preprocessed case with the plan, map it
    back, score it against the circles of the lesion table."""
    from mammoseg.evaluation import EvalCase, evaluate, lesion_from_geometry
    from mammoseg.inference import load_predictor
    from mammoseg.masks import render_geometry
    from mammoseg.preprocess import read_preprocessed

    settings = get_settings()
    store = open_store(store_url, settings)
    run = f"runs/{result.run_id}"
    manifest = pd.read_csv(io.BytesIO(store.read_bytes(f"{run}/preprocessed.csv")))
    images = image_table(from_csv_bytes(store.read_bytes(f"{run}/lesions-validated.csv"))).set_index("case_id")
    predictor = load_predictor(model_uri, settings)
    cases = []
    for row in manifest.itertuples(index=False):
        arrays = read_preprocessed(store, row.npz_key)
        prob = predictor.predict_preprocessed(arrays.image[None])[0]
        prob = np.clip(arrays.transform.to_original(prob, order="linear"), 0, 1)
        meta = images.loc[row.case_id]
        shape = arrays.transform.original_shape
        assert not meta["mask_uris"]  # MIAS: circles only
        truth = np.zeros(shape, bool)
        for g in meta["mask_geometries"]:
            truth |= render_geometry(g, shape)
        lesions = [lesion_from_geometry(g, shape) for g in meta["mask_geometries"]]
        cases.append(EvalCase(row.case_id, row.patient_id, prob, truth, lesions=lesions))
    return evaluate(cases, threshold=predictor.plan.threshold, n_boot=N_BOOT, seed=0,
                    top_k=predictor.plan.top_k).to_dict()


def test_evaluate_flow_scores_the_champion_like_a_direct_evaluation(tmp_path: Path) -> None:
    store_url = str(tmp_path / "store")
    store = LocalStore(store_url)
    generate_mias(store, MiasSynthParams(n_women=2, size=SIZE, seed=2, prefix=SYNTH_MIAS_PREFIX))
    source_url = store.uri(SYNTH_MIAS_PREFIX).rstrip("/")
    # preprocessing unlike the settings': the data pipeline must follow the plan, not the environment
    plan = ModelPlan(preprocess=PreprocessParams(size=SIZE, clahe_clip_limit=3.0), threshold=0.5)
    version = _publish_tiny(store, tmp_path, plan)
    # the training run's manifest gives the audit its patient ids
    store.write_bytes("runs/train-run/preprocessed.csv", b"case_id,patient_id\ncs-train-1,pt-a\ncs-train-2,pt-b\n")

    run_id = new_run_id()
    result = evaluate_flow("mini-mias", source_url, store_url, run_id, n_boot=N_BOOT)

    assert result.champion and result.model_version == version
    assert result.threshold == 0.5 and result.run_id == run_id
    m = result.metrics
    for key in ("dice_mean", "iou_mean", "dice_pooled", "n_cases", "n_patients", "ci95", "subgroups",
                "detection", "definitions", "leakage_audit"):
        assert key in m, key
    assert m["n_cases"] == result.counts["cases_preprocessed"] >= 3
    manifest = pd.read_csv(io.BytesIO(store.read_bytes(f"runs/{run_id}/preprocessed.csv")))
    assert set(manifest["params_digest"]) == {plan.preprocess.digest()}  # the plan's CLAHE, not the settings'
    assert {"sensitivity_at_0_5fp", "sensitivity_at_1fp", "sensitivity_at_2fp"} <= set(m["detection"])
    # written under runs/<run-id>/evaluation/, the model and plan recorded next to the metrics
    assert result.metrics_uri.endswith(f"runs/{run_id}/evaluation/mini-mias.json")
    assert json.loads(store.read_bytes(f"runs/{run_id}/evaluation/mini-mias.json"))["dice_mean"] == m["dice_mean"]
    assert result.overlays_uri and result.overlays_uri.endswith("mini-mias-overlays.png")
    record = json.loads(store.read_bytes(f"runs/{run_id}/evaluation/mini-mias-model.json"))
    assert record["model_version"] == version and ModelPlan.from_dict(record["plan"]) == plan
    # leakage audit against the published data manifest, patient ids from the training run
    assert result.leakage_findings == [] and "with patient ids" in result.leakage_audit_basis
    trained_on = pd.read_csv(io.BytesIO(store.read_bytes(f"runs/{run_id}/evaluation/trained-on.csv")))
    assert trained_on[["case_id", "patient_id", "npz_etag", "split"]].values.tolist() == [
        ["cs-train-1", "pt-a", "e1", "train"], ["cs-train-2", "pt-b", "e2", "val"],
    ]

    direct = _direct_evaluation(store_url, result.model_uri, result)
    for key in ("dice_mean", "iou_mean", "dice_pooled", "n_cases", "n_patients", "threshold"):
        assert m[key] == pytest.approx(direct[key], abs=1e-6), key
    for key in ("dice_mean", "iou_mean", "dice_pooled"):
        assert m["ci95"][key] == pytest.approx(direct["ci95"][key], abs=1e-6), key
    for key in ("sensitivity_at_0_5fp", "sensitivity_at_1fp", "sensitivity_at_2fp", "n_lesions",
                "sensitivity_at_threshold", "fp_per_image_at_threshold"):
        assert m["detection"][key] == pytest.approx(direct["detection"][key], abs=1e-6, nan_ok=True), key

    text = _evaluate_text(result.model_dump())
    assert f"model {version} (champion) on mini-mias" in text and "per-image mean Dice" in text


def test_training_data_of_a_run_model_and_of_an_unrecorded_model(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    store.write_bytes("runs/r1/model/model.keras", b"weights")
    store.write_bytes("runs/r1/preprocessed.csv", b"case_id,patient_id\ncs-1,pt-1\n")
    store.write_bytes("runs/r1/split.csv", b"case_id,patient_id,split\ncs-1,pt-1,train\n")
    found = locate_training_data.fn(store.uri("runs/r1/model/model.keras"), store.url, "ev")
    assert found.train_manifest_uri == store.uri("runs/r1/preprocessed.csv")
    assert found.split_uri == store.uri("runs/r1/split.csv") and "run r1" in found.note

    elsewhere = LocalStore(tmp_path / "elsewhere")
    elsewhere.write_bytes("model.keras", b"weights")
    unknown = locate_training_data(elsewhere.uri("model.keras"), store.url, "ev")
    assert unknown.train_manifest_uri is None and unknown.split_uri is None
    assert "not recorded" in unknown.note


def _one_error_line(args: list[str]) -> str:
    res = runner.invoke(app, ["evaluate", *args])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and res.stdout == ""
    lines = [line for line in res.stderr.splitlines() if line.startswith("mammoseg")]
    assert len(lines) == 1, res.stderr
    return lines[0]


def test_evaluate_command_refuses_bad_models_in_one_line(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    common = ["--dataset", "mini-mias", "--source", str(tmp_path / "nowhere"), "--store", str(store.root)]
    assert "no champion" in _one_error_line(common)
    assert "model not found" in _one_error_line([*common, "--model", str(tmp_path / "absent.keras")])

    version = _publish_tiny(store, tmp_path, ModelPlan(preprocess=PreprocessParams(size=SIZE)))

    # a plan from a newer mammoseg
    folder, _ = open_uri(store.uri(f"models/versions/{version}/model.keras"))
    newer = json.loads(folder.read_bytes(PLAN_FILE)) | {"format_version": 99}
    folder.write_bytes(PLAN_FILE, json.dumps(newer).encode())
    assert "format version 99" in _one_error_line([*common, "--model", str(store.root / f"models/versions/{version}/model.keras")])
