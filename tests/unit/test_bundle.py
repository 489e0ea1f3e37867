"""The model bundle (bundle.json): published with every version that has a plan; `predict`
refuses, in one line, a bundle whose declared format it cannot honour."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mammoseg.bundle import BUNDLE_FILE, MODEL_FORMAT, BundleError, check_bundle, make_bundle
from mammoseg.plan import ModelPlan
from mammoseg.preprocess import PreprocessParams

PLAN = ModelPlan(preprocess=PreprocessParams(size=64), patch_size=32, threshold=0.4)


def _doc(**changes) -> bytes:
    doc = make_bundle(PLAN, version="v1", libraries={"keras": "3.15.0"}).to_dict()
    doc.update(changes)
    return json.dumps(doc).encode()


def test_bundle_declares_formats_input_plan_labels_versions_use_and_licence() -> None:
    doc = check_bundle(_doc(), PLAN)
    assert doc["format"] == "mammoseg-bundle" and doc["model_format"] == MODEL_FORMAT == "keras-v3"
    assert doc["input"]["shape"] == [None, 32, 32, 1]  # the patch, not the whole image
    assert doc["plan"] == json.loads(PLAN.to_json()) and doc["labels"] == ["lesion"]
    assert doc["libraries"] == {"keras": "3.15.0"} and doc["version"] == "v1"
    assert "not a medical device" in doc["intended_use"].lower() and "Apache-2.0" in doc["licence"]
    assert any("DICOM SEG" in f for f in doc["output_formats"])
    real = make_bundle(PLAN, version=None).libraries
    assert {"mammoseg", "numpy", "pydicom", "highdicom"} <= set(real)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_doc(model_format="onnx"), "declares model format 'onnx'; this mammoseg loads only 'keras-v3'"),
        (_doc(format_version=2), "bundle format version 2 is newer"),
        (_doc(format="monai-bundle"), "bundle format is 'monai-bundle'"),
        (_doc(input={"shape": [None, 32, 32, 3], "dtype": "float32", "value_range": [0, 1]}), "input shape [None, 32, 32, 3]"),
        (_doc(input={"shape": [None, 32, 32, 1], "dtype": "uint8", "value_range": [0, 255]}), "this mammoseg feeds float32 in [0, 1]"),
        (_doc(labels=["mass", "calcification"]), "labels ['mass', 'calcification'] differ"),
        (b"{not json", "bundle.json is not JSON"),
        (b"[1, 2]", "must be a JSON object"),
    ],
)
def test_bundles_that_cannot_be_honoured_are_refused_in_one_line(data: bytes, message: str) -> None:
    with pytest.raises(BundleError) as info:
        check_bundle(data, PLAN)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_publish_writes_the_bundle_and_predict_refuses_a_foreign_one(tmp_path, monkeypatch) -> None:
    from mammoseg.cli import app
    from mammoseg.publish import is_complete
    from mammoseg.storage import open_store
    from mammoseg.synth.pacs import publish_spot_model

    monkeypatch.setenv("MAMMOSEG_PSEUDONYM_KEY", "bundle-test")
    model_uri = publish_spot_model(str(tmp_path / "store"))
    version_dir = tmp_path / "store" / "models" / "versions" / "20250102T030405Z-5a0b1c2d"
    bundle = json.loads((version_dir / BUNDLE_FILE).read_text())
    assert bundle["version"] == "20250102T030405Z-5a0b1c2d" and bundle["input"]["shape"] == [None, 32, 32, 1]
    assert is_complete(open_store(str(tmp_path / "store")), "20250102T030405Z-5a0b1c2d")
    img = tmp_path / "x.png"
    import cv2

    from mammoseg.synth.pacs import mammogram

    cv2.imwrite(str(img), mammogram())
    bundle["model_format"] = "torchscript"
    (version_dir / BUNDLE_FILE).write_text(json.dumps(bundle))
    res = CliRunner().invoke(app, ["predict", "--model", model_uri, "--image", str(img), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines == [(f"mammoseg: cannot use the model bundle of {model_uri}: the bundle declares model format "
                      "'torchscript'; this mammoseg loads only 'keras-v3'")]
    assert not (tmp_path / "o").exists()
