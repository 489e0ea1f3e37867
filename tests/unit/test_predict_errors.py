"""``mammoseg predict`` on hostile input (issue 8): a missing or corrupt model, a text file, a
10x10 image, pixel bombs (PNG and RLE DICOM declaring 60000x60000). Each is one line on stderr
and a non-zero exit code, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from mammoseg.cli import app
from mammoseg.plan import ModelPlan
from mammoseg.preprocess import PreprocessParams

sys.path.insert(0, str(Path(__file__).parent))
from test_bounded_decoding import mammogram, png_header_bomb, png_zero_image, rle_dicom

runner = CliRunner()
SIZE = 32


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    import keras

    folder = tmp_path_factory.mktemp("model")
    inp = keras.Input((SIZE, SIZE, 1))
    keras.Model(inp, keras.layers.Conv2D(1, 1, activation="sigmoid")(inp)).save(folder / "model.keras")
    (folder / "plan.json").write_bytes(ModelPlan(preprocess=PreprocessParams(size=SIZE), threshold=0.5).to_json())
    return folder / "model.keras"


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    cv2.imwrite(str(folder / "good.png"), mammogram())
    (folder / "bomb.png").write_bytes(png_header_bomb(60000, 60000))
    (folder / "big.png").write_bytes(png_zero_image(20000, 20000))  # 389 KB, 400 Mpx
    (folder / "bomb.dcm").write_bytes(rle_dicom(60000, 60000, runs=4))
    (folder / "notes.png").write_text("this is a text file, not an image\n")
    cv2.imwrite(str(folder / "tiny.png"), np.full((10, 10), 128, np.uint8))
    return folder


EXPECTED = {
    "bomb.png": "PNG declares 60000x60000 (width x height) = 3.6e9 pixels, above the 1e8-pixel budget",
    "big.png": "PNG declares 20000x20000 (width x height) = 4e8 pixels, above the 1e8-pixel budget",
    "bomb.dcm": "DICOM declares 60000x60000 (Columns x Rows) = 3.6e9 pixels, above the 1e8-pixel budget",
    "notes.png": "not a PNG file: unrecognised content (the content looks like text)",
    "tiny.png": "too small",
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_unusable_image_is_one_line_and_exit_1(model: Path, images: Path, tmp_path: Path, name: str) -> None:
    res = runner.invoke(app, ["predict", "--model", str(model), "--image", str(images / name), "--out", str(tmp_path / "o"), "--json"])
    assert res.exit_code == 1, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    lines = [line for line in res.stderr.splitlines() if line.startswith("mammoseg")]
    assert len(lines) == 1 and lines[0].startswith(f"mammoseg predict: {images / name}: "), res.stderr
    assert EXPECTED[name] in lines[0], lines[0]
    payload = json.loads(res.stdout)
    assert payload["results"] == [] and payload["errors"][0]["error"] in lines[0]
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())  # nothing written


def test_missing_and_corrupt_models_are_one_line_exit_2(images: Path, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt" / "model.keras"
    corrupt.parent.mkdir()
    corrupt.write_text("a text file, not a model\n")
    cases = {
        tmp_path / "absent" / "model.keras": "model not found",
        corrupt: "corrupt, or not a .keras model file",
    }
    for path, reason in cases.items():
        res = runner.invoke(app, ["predict", "--model", str(path), "--image", str(images / "good.png"), "--out", str(tmp_path / "o")])
        assert res.exit_code == 2 and "Traceback" not in res.output, res.output
        lines = [line for line in res.stderr.splitlines() if line.startswith("mammoseg")]
        assert len(lines) == 1 and reason in lines[0], res.stderr
    assert "not found" not in lines[0]  # the corrupt model is not called "File not found"


def test_real_process_folder_with_bombs_runs_the_good_image(model: Path, images: Path, tmp_path: Path) -> None:
    """The console entry point in a real process: stderr holds one line per bad image (TensorFlow's
    own start-up log lines aside) and no traceback; the good image is still predicted."""
    env = {**os.environ, "MAMMOSEG_STORE_URL": str(tmp_path / "store")}
    res = subprocess.run(
        [sys.executable, "-m", "mammoseg.cli", "predict", "--model", str(model), "--input", str(images),
         "--out", str(tmp_path / "out"), "--json"],
        check=False, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
    )
    assert res.returncode == 1, res.stderr[-3000:]
    assert "Traceback" not in res.stderr and "cv2.error" not in res.stderr, res.stderr[-3000:]
    lines = sorted(line for line in res.stderr.splitlines() if line.startswith("mammoseg"))
    assert len(lines) == len(EXPECTED), res.stderr[-3000:]
    for line, (name, reason) in zip(lines, sorted(EXPECTED.items()), strict=True):
        assert line.startswith(f"mammoseg predict: {images / name}: ") and reason in line, line
    payload = json.loads(res.stdout)
    assert [Path(r["image"]).name for r in payload["results"]] == ["good.png"]
