"""The whole retrain flow on tiny images, against the local S3 server over HTTP; then predict."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from flows.retrain import retrain_flow
from mammoseg.cli import app
from mammoseg.layout import new_run_id
from mammoseg.params import RetrainParams
from mammoseg.publish import read_pointer
from mammoseg.settings import get_settings
from mammoseg.storage import open_store
from tasks.synth import synthesize

pytestmark = pytest.mark.slow

TINY = RetrainParams(size=64, base_filters=4, depth=2, epochs=2, batch_size=4, n_boot=200, early_stopping_patience=2)


def test_retrain_end_to_end_on_s3_then_predict(s3_bucket: str, tmp_path) -> None:
    store_url = f"s3://{s3_bucket}/pipeline"
    data = synthesize(store_url=store_url, patients=6, height=128, width=96, mias_images=4, mias_size=64, bad=0, seed=1)
    result = retrain_flow(
        "cbis-ddsm", data["cbis_source_url"], "mini-mias", data["mias_source_url"], store_url, new_run_id(), TINY
    )
    # published, and promoted because there is no champion yet
    store = open_store(store_url, get_settings())
    assert result.promoted and read_pointer(store).version == result.version
    version = f"models/versions/{result.version}"
    for name in ("model.keras", "training_config.json", "data_manifest.json", "metrics.json", "MODEL_CARD.md", "COMPLETE"):
        assert store.exists(f"{version}/{name}"), name
    manifest = json.loads(store.read_bytes(f"{version}/data_manifest.json"))
    assert manifest and all(row["etag"] and row["key"].startswith("preprocessed/") for row in manifest)
    # the honest-number fields are there
    m = result.metrics
    for key in ("dice_mean", "iou_mean", "dice_pooled", "n_cases", "ci95", "threshold", "leakage_audit"):
        assert key in m
    assert m["n_cases"] >= 1 and set(m["ci95"]) >= {"dice_mean", "iou_mean", "dice_pooled"}
    assert sum(result.split.values()) >= 6

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
    mask = cv2.imread(payload["mask"], cv2.IMREAD_UNCHANGED)
    assert "mask" in payload["mask"] and mask.shape == image.shape and set(np.unique(mask)) <= {0, 255}
    assert payload["threshold"] == pytest.approx(json.loads(store.read_bytes(f"{version}/training_config.json"))["threshold"])

    # and on a MONOCHROME1 DICOM: the mask comes back in the DICOM's own geometry
    from mammoseg.dicom import write_dicom

    dcm = tmp_path / "scan.dcm"
    dcm.write_bytes(write_dicom((65535 - image).astype(np.uint16), photometric="MONOCHROME1"))
    res = runner.invoke(app, ["predict", "--model", store.uri(f"{version}/model.keras"), "--image", str(dcm),
                              "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    assert cv2.imread(json.loads(res.stdout)["mask"], cv2.IMREAD_UNCHANGED).shape == image.shape
