"""The whole retrain flow on tiny images, against the local S3 server over HTTP; then predict."""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.retrain import retrain_flow
from mammoseg.cli import app
from mammoseg.layout import new_run_id
from mammoseg.params import DatasetSource, RetrainParams
from mammoseg.publish import read_pointer, read_version
from mammoseg.settings import get_settings
from mammoseg.storage import open_store
from tasks.synth import synthesize

pytestmark = pytest.mark.slow

TINY = RetrainParams(size=64, base_filters=4, depth=2, epochs=2, batch_size=4, n_boot=200, early_stopping_patience=2)


def test_retrain_end_to_end_on_s3_then_predict(s3_bucket: str, tmp_path) -> None:
    """One model (no folds) trained with deep supervision and the poly LR schedule: the published
    model is the mask head alone."""
    store_url = f"s3://{s3_bucket}/pipeline"
    data = synthesize(store_url=store_url, patients=6, height=128, width=96, mias_images=4, mias_size=64, bad=0, seed=1)
    result = retrain_flow(
        [DatasetSource(dataset="cbis-ddsm", source_url=data["cbis_source_url"])],
        [DatasetSource(dataset="mini-mias", source_url=data["mias_source_url"])],
        store_url, new_run_id(), TINY.model_copy(update={"deep_supervision": 1, "lr_schedule": "poly"}),
    )
    # published, and promoted because there is no champion yet
    store = open_store(store_url, get_settings())
    assert result.promoted and read_pointer(store).version == result.version
    version = f"models/versions/{result.version}"
    for name in ("model.keras", "plan.json", "training_config.json", "data_manifest.json", "metrics.json", "MODEL_CARD.md", "COMPLETE"):
        assert store.exists(f"{version}/{name}"), name
    manifest = json.loads(store.read_bytes(f"{version}/data_manifest.json"))
    assert manifest and all(row["etag"] and row["key"].startswith("preprocessed/") for row in manifest)
    # the honest-number fields are there
    m = result.metrics
    for key in ("dice_mean", "iou_mean", "dice_pooled", "n_cases", "ci95", "threshold", "leakage_audit"):
        assert key in m
    assert m["n_cases"] >= 1 and set(m["ci95"]) >= {"dice_mean", "iou_mean", "dice_pooled"}
    assert result.primary == "heldout-mini-mias" and m["eval_set"]
    assert sum(result.split.values()) >= 6
    config = json.loads(store.read_bytes(f"{version}/training_config.json"))
    assert '"deep_supervision": 1' in json.dumps(config) and '"lr_schedule": "poly"' in json.dumps(config)
    published = keras_load(store, f"{version}/model.keras", tmp_path)
    assert published.output_shape[-1] == 1 and "deep_supervision" not in [layer.name for layer in published.layers]

    # predict on a 16-bit PNG in its own geometry, with the published model
    image = np.zeros((150, 100), np.uint16)
    cv2.ellipse(image, (0, 75), (80, 70), 0, -90, 90, 30000, -1)
    png = tmp_path / "scan.png"
    cv2.imwrite(str(png), image)
    out = tmp_path / "pred"
    runner = CliRunner()
    res = runner.invoke(app, ["predict", "--model", store.uri(f"{version}/model.keras"), "--image", str(png),
                              "--out", str(out), "--json"], env={})
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)
    [done] = payload["results"]
    mask = cv2.imread(done["mask"], cv2.IMREAD_UNCHANGED)
    assert "mask" in done["mask"] and mask.shape == image.shape and set(np.unique(mask)) <= {0, 255}
    assert payload["threshold"] == pytest.approx(json.loads(store.read_bytes(f"{version}/training_config.json"))["threshold"])

    # and on a MONOCHROME1 DICOM: the mask comes back in the DICOM's own geometry
    from mammoseg.dicom import write_dicom

    dcm = tmp_path / "scan.dcm"
    dcm.write_bytes(write_dicom((65535 - image).astype(np.uint16), photometric="MONOCHROME1"))
    res = runner.invoke(app, ["predict", "--model", store.uri(f"{version}/model.keras"), "--image", str(dcm),
                              "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    assert cv2.imread(json.loads(res.stdout)["results"][0]["mask"], cv2.IMREAD_UNCHANGED).shape == image.shape


def test_retrain_on_two_datasets_scores_each_and_publishes_the_plan(tmp_path) -> None:
    """Two training sets (synthetic CBIS-DDSM + synthetic mini-MIAS) and one held-out set:
    per-dataset figures everywhere, the plan published with the model."""
    from mammoseg.inference import load_predictor
    from mammoseg.synth import MiasSynthParams, generate_mias

    store_url = (tmp_path / "store").as_uri()
    settings = get_settings()
    store = open_store(store_url, settings)
    data = synthesize(store_url=store_url, patients=6, height=128, width=96, mias_images=6, mias_size=64, seed=1)
    # The held-out MIAS-format set: its own images, but the generator names files mdb001… as in
    # the training set, and ids are pseudonyms of dataset + file name: drop the shared names.
    generate_mias(store, MiasSynthParams(n_women=12, size=64, seed=2, prefix="raw/heldout-mias"))
    for number in range(1, 7):
        store.delete(f"raw/heldout-mias/mdb{number:03d}.pgm")
    run_id = new_run_id()
    params = TINY.model_copy(update={"val_fraction": 0.25, "test_fraction": 0.25})
    result = retrain_flow(
        [DatasetSource(dataset="cbis-ddsm", source_url=data["cbis_source_url"]),
         DatasetSource(dataset="mini-mias", source_url=data["mias_source_url"])],
        [DatasetSource(dataset="mini-mias-masses", source_url=store.uri("raw/heldout-mias"))],
        store_url, run_id, params,
    )

    # every training dataset is in every split, and scored on its own test patients
    split = pd.read_csv(io.BytesIO(store.read_bytes(f"runs/{run_id}/split.csv")))
    assert {(d, s) for d, s in zip(split["dataset"], split["split"])} == {
        (d, s) for d in ("cbis-ddsm", "mini-mias") for s in ("train", "val", "test")
    }
    names = ["internal-test-cbis-ddsm", "internal-test-mini-mias", "heldout-mini-mias-masses"]
    assert [e.name for e in result.evaluations] == names
    assert [e.kind for e in result.evaluations] == ["internal_test", "internal_test", "heldout"]
    for e in result.evaluations:
        scored = json.loads(store.read_bytes(f"runs/{run_id}/evaluation/{e.name}.json"))
        assert scored["eval_set"] == e.metrics["eval_set"] and scored["n_cases"] >= 1
    test_cases = {d: set(split.loc[(split["dataset"] == d) & (split["split"] == "test"), "case_id"]) for d in ("cbis-ddsm", "mini-mias")}
    assert result.evaluations[0].metrics["n_cases"] == len(test_cases["cbis-ddsm"])
    assert result.evaluations[1].metrics["n_cases"] == len(test_cases["mini-mias"])
    assert result.primary == "heldout-mini-mias-masses" and result.metrics == result.evaluations[2].metrics

    # the published version: metrics per dataset, in-domain and cross-dataset apart
    assert result.promoted
    version = read_version(store, result.version)
    metrics = json.loads(store.read_bytes(f"models/versions/{result.version}/metrics.json"))
    assert metrics["primary_set"] == "heldout-mini-mias-masses"
    assert set(metrics["internal_test"]) == {"cbis-ddsm", "mini-mias"} and set(metrics["heldout"]) == {"mini-mias-masses"}
    assert metrics["eval_set"] == metrics["heldout"]["mini-mias-masses"]["eval_set"]
    assert metrics["dice_mean"] == metrics["heldout"]["mini-mias-masses"]["dice_mean"]
    card = store.read_bytes(f"models/versions/{result.version}/MODEL_CARD.md").decode()
    assert "## In-domain metrics" in card and "## Cross-dataset metrics" in card
    for dataset, name in (("cbis-ddsm", names[0]), ("mini-mias", names[1]), ("mini-mias-masses", names[2])):
        assert f"### {dataset} — {name}" in card
    assert "| metric (mini-mias-masses, held-out dataset) | value | 95% CI |" in card

    # the plan travels with the model and gives the threshold chosen on validation
    marker = json.loads(store.read_bytes(f"models/versions/{result.version}/COMPLETE"))
    assert "plan.json" in marker["files"] and version.plan_uri == result.plan_uri
    config = json.loads(store.read_bytes(f"models/versions/{result.version}/training_config.json"))
    predictor = load_predictor(result.model_uri, settings)
    assert predictor.plan.threshold == pytest.approx(config["threshold"])
    assert predictor.plan.preprocess.size == params.size and predictor.plan.tta_mirror is params.tta_mirror
    assert all(e.metrics["threshold"] == pytest.approx(config["threshold"]) for e in result.evaluations)

    # `mammoseg evaluate` on the published champion reproduces the model card's held-out figures
    from flows.evaluate import evaluate_flow

    again = evaluate_flow("mini-mias-masses", store.uri("raw/heldout-mias"), store_url, new_run_id(),
                          n_boot=params.n_boot)
    published = metrics["heldout"]["mini-mias-masses"]
    for key in ("dice_mean", "iou_mean", "dice_pooled", "n_cases"):
        assert again.metrics[key] == pytest.approx(published[key], abs=1e-6), key
    assert again.metrics["ci95"]["dice_mean"] == pytest.approx(published["ci95"]["dice_mean"], abs=1e-6)

    # `mammoseg predict` on the same source images, with the same model, gives the same Dice
    from mammoseg.adapters.registry import load_dataset
    from mammoseg.casetable import image_table
    from mammoseg.evaluation import dice
    from mammoseg.evaluation.truth import read_truth
    from mammoseg.settings import require_pseudonym_key

    source = open_store(store.uri("raw/heldout-mias"), settings)
    cases = image_table(load_dataset("mini-mias-masses", source,
                                     pseudonym_key=require_pseudonym_key(settings)).lesions)
    paths = [Path(source.key_from_uri(u)) for u in cases["image_uri"]]
    images = [str(tmp_path / "store" / "raw" / "heldout-mias" / p.name) for p in paths]
    out = tmp_path / "predicted"
    res = CliRunner().invoke(app, ["predict", "--model", result.model_uri, "--out", str(out), "--json"]
                             + [a for i in images for a in ("--image", i)])
    assert res.exit_code == 0, res.output
    scores = []
    for row, path in zip(cases.itertuples(index=False), paths):
        mask = cv2.imread(str(out / f"{path.stem}_mask.png"), cv2.IMREAD_UNCHANGED) > 0
        truth, _ = read_truth(source, row.mask_uris, row.mask_geometries, mask.shape)
        scores.append(dice(mask, truth))
    assert len(scores) == published["n_cases"]
    assert float(np.mean(scores)) == pytest.approx(published["dice_mean"], abs=1e-6)


def test_retrain_with_fold_ensemble_and_patches_publishes_one_model_that_predict_uses(tmp_path) -> None:
    """folds=2 + patch_size: two fold models trained on patches, averaged into one published
    model; its plan says 'slide a 32-px window over 64-px images' and the threshold comes from
    out-of-fold predictions."""
    store_url = (tmp_path / "store").as_uri()
    data = synthesize(store_url=store_url, patients=6, height=128, width=96, mias_images=4, mias_size=64, bad=0, seed=3)
    params = TINY.model_copy(update={"folds": 2, "patch_size": 32, "epochs": 1, "tta_mirror": True})
    result = retrain_flow(
        [DatasetSource(dataset="cbis-ddsm", source_url=data["cbis_source_url"])], [], store_url, new_run_id(), params,
    )
    store = open_store(store_url, get_settings())
    version = read_version(store, result.version)
    from mammoseg.inference import load_predictor

    predictor = load_predictor(version.model_uri, get_settings())
    assert predictor.plan.patch_size == 32 and predictor.plan.preprocess.size == 64 and predictor.plan.tta_mirror
    assert [layer.name for layer in predictor.model.layers if layer.name.startswith("fold")] == ["fold0", "fold1"]
    config = json.loads(store.read_bytes(f"models/versions/{result.version}/training_config.json"))
    assert {h["fold"] for h in config["history"]} == {0.0, 1.0}
    assert result.primary == "internal-test-cbis-ddsm"


def keras_load(store, key: str, tmp_path):
    """The stored .keras file as it is (not through mammoseg.inference, which drops training heads)."""
    import keras

    from mammoseg.model import custom_objects

    custom_objects()
    path = tmp_path / "raw.keras"
    path.write_bytes(store.read_bytes(key))
    return keras.saving.load_model(path, compile=False)
