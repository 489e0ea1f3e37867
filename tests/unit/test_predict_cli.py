"""``mammoseg predict`` on many images with one model and the plan.json beside it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from mammoseg.cli import app
from mammoseg.evaluation import components
from mammoseg.plan import ModelPlan
from mammoseg.prediction import min_area_original, model_version, output_names
from mammoseg.preprocess import PreprocessParams, preprocess_arrays

runner = CliRunner()
SIZE = 32


def _bright_spot_model(path: Path) -> None:
    """A one-layer 'segmenter' with a known answer: sigmoid(40·x − 30), i.e. probability > 0.5
    where the preprocessed image is brighter than 0.75 of its range."""
    import keras

    inp = keras.Input((SIZE, SIZE, 1))
    out = keras.layers.Conv2D(1, 1, activation="sigmoid", name="spot")(inp)
    model = keras.Model(inp, out)
    model.get_layer("spot").set_weights([np.full((1, 1, 1, 1), 40.0, np.float32), np.array([-30.0], np.float32)])
    model.save(path)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("models") / "models" / "versions" / "20250102T030405Z-1a2b3c4d"
    folder.mkdir(parents=True)
    _bright_spot_model(folder / "model.keras")
    plan = ModelPlan(preprocess=PreprocessParams(size=SIZE), threshold=0.5, min_lesion_px=2, top_k=2)
    (folder / "plan.json").write_bytes(plan.to_json())
    return folder


def _mammogram(h: int = 150, w: int = 100) -> np.ndarray:
    image = np.zeros((h, w), np.uint16)
    cv2.ellipse(image, (0, h // 2), (int(w * 0.8), int(h * 0.47)), 0, -90, 90, 20000, -1)
    for (x, y, r) in ((25, 45, 9), (30, 105, 7), (55, 75, 5)):
        cv2.circle(image, (x, y), r, 60000, -1)
    return image


def _images(folder: Path) -> None:
    from mammoseg.dicom import write_dicom

    folder.mkdir()
    image = _mammogram()
    cv2.imwrite(str(folder / "a_scan.png"), image)
    (folder / "b_scan.dcm").write_bytes(write_dicom(image[:, ::-1].copy()))
    (folder / "c_notes.png").write_text("this is not an image\n")
    (folder / "readme.txt").write_text("ignored: not an image file name\n")


def test_folder_of_images_two_results_one_error_line(model_dir: Path, tmp_path: Path) -> None:
    _images(tmp_path / "in")
    out = tmp_path / "out"
    res = runner.invoke(app, ["predict", "--model", str(model_dir / "model.keras"), "--input", str(tmp_path / "in"),
                              "--out", str(out), "--json"])
    assert res.exit_code == 1, res.output
    payload = json.loads(res.stdout)
    assert [Path(r["image"]).name for r in payload["results"]] == ["a_scan.png", "b_scan.dcm"]
    assert [Path(e["image"]).name for e in payload["errors"]] == ["c_notes.png"]
    errors = [line for line in res.stderr.splitlines() if line.startswith("mammoseg predict:")]
    assert len(errors) == 1 and "c_notes.png" in errors[0] and "Traceback" not in res.output
    assert payload["model_version"] == "20250102T030405Z-1a2b3c4d" and payload["threshold"] == 0.5
    for r in payload["results"]:
        mask = cv2.imread(r["mask"], cv2.IMREAD_UNCHANGED)
        assert mask.shape == (150, 100) and set(np.unique(mask)) <= {0, 255}
        assert Path(r["overlay"]).is_file() and Path(r["lesions_json"]).is_file()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{s}_{k}" for s in ("a_scan", "b_scan") for k in ("mask.png", "overlay.png", "lesions.json")]
        + ["b_scan_seg.dcm"]  # a DICOM input also gets its DICOM SEG (issue 10)
    )
    # the text summary says the same, and the exit code is still 1
    text = runner.invoke(app, ["predict", "--model", str(model_dir / "model.keras"), "--input", str(tmp_path / "in"),
                               "--out", str(tmp_path / "out2")])
    assert text.exit_code == 1 and "2 image(s) done, 1 failed" in text.stdout


def test_lesion_json_content(model_dir: Path, tmp_path: Path) -> None:
    image = _mammogram()
    png = tmp_path / "scan.png"
    cv2.imwrite(str(png), image)
    res = runner.invoke(app, ["predict", "--model", str(model_dir / "model.keras"), "--image", str(png),
                              "--out", str(tmp_path / "out"), "--json"])
    assert res.exit_code == 0, res.output
    (result,) = json.loads(res.stdout)["results"]
    report = json.loads(Path(result["lesions_json"]).read_text())
    transform = preprocess_arrays(image, [], PreprocessParams(size=SIZE)).transform
    expected_min = math.ceil(2 / transform.scale**2)  # 2 grid pixels in original pixels
    assert expected_min > 2
    assert report["min_lesion_px"] == expected_min == result["min_lesion_px"]
    assert report["min_lesion_px_plan_grid"] == 2
    assert (report["threshold"], report["top_k"], report["shape"]) == (0.5, 2, [150, 100])
    assert report["model_version"] == "20250102T030405Z-1a2b3c4d" and report["image"] == "scan.png"
    lesions = report["lesions"]
    assert 1 <= len(lesions) <= 2 and result["n_lesions"] == len(lesions)
    scores = [les["score"] for les in lesions]
    assert scores == sorted(scores, reverse=True) and all(0.5 <= s <= 1.0 for s in scores)
    # every listed lesion is a component of the written mask, at least min_lesion_px large
    mask = cv2.imread(result["mask"], cv2.IMREAD_UNCHANGED) > 0
    comps = {(c.bbox, c.area): c for c in components(mask, expected_min)}
    for les in lesions:
        comp = comps[(tuple(les["bbox"]), les["area"])]
        assert les["centroid"] == pytest.approx(list(comp.centroid))
        y0, x0, y1, x1 = les["bbox"]
        assert 0 <= y0 < y1 <= 150 and 0 <= x0 < x1 <= 100
    assert len(lesions) == min(2, len(comps))
    # the bright spots are what the model finds
    assert any(les["bbox"][0] <= 45 < les["bbox"][2] and les["bbox"][1] <= 25 < les["bbox"][3] for les in lesions)
    # --threshold overrides the plan's
    res = runner.invoke(app, ["predict", "--model", str(model_dir / "model.keras"), "--image", str(png),
                              "--out", str(tmp_path / "out"), "--threshold", "0.99", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["threshold"] == 0.99


def test_plan_keep_components_cuts_the_mask_to_the_first_listed_lesions(model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "models" / "versions" / "20250102T030405Z-5e6f7a8b"
    folder.mkdir(parents=True)
    (folder / "model.keras").write_bytes((model_dir / "model.keras").read_bytes())
    plan = ModelPlan(preprocess=PreprocessParams(size=SIZE), threshold=0.5, keep_components=1, top_k=3)
    (folder / "plan.json").write_bytes(plan.to_json())
    png = tmp_path / "scan.png"
    cv2.imwrite(str(png), _mammogram())
    res = runner.invoke(app, ["predict", "--model", str(folder / "model.keras"), "--image", str(png),
                              "--out", str(tmp_path / "out"), "--json"])
    assert res.exit_code == 0, res.output
    (result,) = json.loads(res.stdout)["results"]
    report = json.loads(Path(result["lesions_json"]).read_text())
    assert report["keep_components"] == 1 and len(report["lesions"]) >= 2  # the list still names the others
    mask = cv2.imread(result["mask"], cv2.IMREAD_UNCHANGED) > 0
    (kept,) = components(mask)
    first = report["lesions"][0]
    assert (list(kept.bbox), kept.area) == (first["bbox"], first["area"])


def test_plan_min_score_drops_the_fainter_lesions_from_the_mask(model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "models" / "versions" / "20250102T030405Z-6e7f8a9b"
    folder.mkdir(parents=True)
    (folder / "model.keras").write_bytes((model_dir / "model.keras").read_bytes())
    png = tmp_path / "scan.png"
    cv2.imwrite(str(png), _mammogram())

    def predict(plan: ModelPlan, out: str) -> tuple[dict, np.ndarray]:
        (folder / "plan.json").write_bytes(plan.to_json())
        res = runner.invoke(app, ["predict", "--model", str(folder / "model.keras"), "--image", str(png),
                                  "--out", str(tmp_path / out), "--json"])
        assert res.exit_code == 0, res.output
        (result,) = json.loads(res.stdout)["results"]
        return json.loads(Path(result["lesions_json"]).read_text()), cv2.imread(result["mask"], cv2.IMREAD_UNCHANGED) > 0

    plain = ModelPlan(preprocess=PreprocessParams(size=SIZE), threshold=0.5, top_k=5)
    report, mask = predict(plain, "plain")
    scores = [les["score"] for les in report["lesions"]]
    assert report["min_score"] is None and len(scores) >= 2 and scores[0] > scores[-1]
    cut = (scores[0] + scores[-1]) / 2
    report, cut_mask = predict(plain.replace(min_score=cut), "cut")
    assert report["min_score"] == cut
    kept = components(cut_mask)
    assert 1 <= len(kept) < len(components(mask))
    listed = {(tuple(les["bbox"]), les["area"]): les["score"] for les in report["lesions"]}
    assert all(listed[(c.bbox, c.area)] >= cut for c in kept)  # what stays is what scores above the cut
    assert (cut_mask <= mask).all()


def test_unusable_model_or_plan_is_one_line_exit_2(model_dir: Path, tmp_path: Path) -> None:
    png = tmp_path / "scan.png"
    cv2.imwrite(str(png), _mammogram())
    args = ["--image", str(png), "--out", str(tmp_path / "out")]

    def run(model: Path) -> str:
        res = runner.invoke(app, ["predict", "--model", str(model), *args])
        assert res.exit_code == 2, res.output
        assert "Traceback" not in res.output and res.stdout == ""
        lines = [line for line in res.stderr.splitlines() if line.startswith("mammoseg")]
        assert len(lines) == 1, res.stderr
        return lines[0]

    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / "model.keras").write_bytes((model_dir / "model.keras").read_bytes())
    plan = json.loads((model_dir / "plan.json").read_text()) | {"format_version": 99}
    (newer / "plan.json").write_text(json.dumps(plan))
    assert "format version 99" in run(newer / "model.keras") and "plan" in run(newer / "model.keras")

    assert "model not found" in run(tmp_path / "absent" / "model.keras")

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "model.keras").write_bytes(b"not a keras zip file")
    assert "cannot load the model" in run(corrupt / "model.keras")
    assert not (tmp_path / "out").exists()


def test_usage_errors_are_one_line(tmp_path: Path) -> None:
    res = runner.invoke(app, ["predict", "--model", "m.keras", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "give --image" in res.stderr
    (tmp_path / "empty").mkdir()
    res = runner.invoke(app, ["predict", "--model", "m.keras", "--out", str(tmp_path / "o"), "--input", str(tmp_path / "empty")])
    assert res.exit_code == 2 and "no DICOM/PNG/PGM/JPEG" in res.stderr


def test_helpers() -> None:
    assert model_version("s3://b/pipeline/models/versions/v1-abc/model.keras") == "v1-abc"
    assert model_version("file:///tmp/runs/r1/model.keras") is None
    assert output_names([Path("a/x.png"), Path("b/x.dcm"), Path("y.png")]) == ["x.png", "x.dcm", "y"]
    transform = preprocess_arrays(_mammogram(), [], PreprocessParams(size=SIZE)).transform
    assert min_area_original(0, transform) == 1
    assert min_area_original(1, transform) == math.ceil(1 / transform.scale**2)
