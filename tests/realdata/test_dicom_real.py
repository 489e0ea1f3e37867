"""DICOM decoding on the real CBIS-DDSM samples, and the synthetic data's formats checked against
the real metadata files in ../shared/data (skipped when that folder is absent)."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest

from mammoseg.dicom import decode_dicom, phi_values, read_meta, read_series_description
from mammoseg.imageio import load_image
from mammoseg.synth import CALC_COLUMNS, MASS_COLUMNS

pytestmark = pytest.mark.realdata

DATA = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data").resolve()
SAMPLES = DATA / "cbis-ddsm" / "samples" / "dicom"
CSV_DIR = DATA / "cbis-ddsm" / "csv"

# (folder, rows, columns, laterality, view) as the headers of the three samples say
EXPECTED = {
    "Mass-Test_P_00116_RIGHT_MLO_2": (486, 497, "R", "MLO"),
    "Mass-Test_P_00116_RIGHT_MLO_1": (483, 286, "R", "MLO"),
    "Mass-Test_P_00016_LEFT_CC_1": (384, 385, "L", "CC"),
}


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data {path} absent (needs ../shared/data next to the repo)")
    return path


def _sample(folder: str) -> bytes:
    files = sorted(_need(SAMPLES / folder).rglob("*.dcm"))
    assert len(files) == 1, files
    return files[0].read_bytes()


@pytest.mark.parametrize("folder", sorted(EXPECTED))
def test_real_cbis_samples_decode(folder: str) -> None:
    rows, cols, laterality, view = EXPECTED[folder]
    data = _sample(folder)
    decoded = decode_dicom(data)
    assert decoded.pixels.dtype == np.uint16
    assert decoded.pixels.shape == (rows, cols)
    assert decoded.pixels.min() < decoded.pixels.max()  # not constant
    assert decoded.meta.photometric == "MONOCHROME2" and decoded.meta.bits_stored == 16
    # the folder may say "ROI mask images"; the header says what the file really is
    assert decoded.meta.series_description == "cropped images"
    assert read_series_description(data) == "cropped images"
    assert (decoded.meta.image_laterality, decoded.meta.view_position) == (laterality, view)
    assert read_meta(data) == decoded.meta
    np.testing.assert_array_equal(load_image(data, "000000.dcm"), decoded.pixels)
    # 16-bit MONOCHROME2 without rescale/window: decoding is the identity on stored values
    np.testing.assert_array_equal(pydicom.dcmread(io.BytesIO(data)).pixel_array, decoded.pixels)


def test_real_sample_phi_is_listed_and_not_in_safe_meta() -> None:
    data = _sample("Mass-Test_P_00016_LEFT_CC_1")
    phi = phi_values(data)
    assert "Mass-Test_P_00016_LEFT_CC_1" in phi  # CBIS-DDSM puts the case name in PatientID/Name
    assert "20161004" in phi  # Study Date
    assert not any(v in repr(decode_dicom(data).meta) for v in phi)


@pytest.mark.parametrize(
    ("name", "columns"),
    [
        ("mass_case_description_train_set.csv", MASS_COLUMNS),
        ("mass_case_description_test_set.csv", MASS_COLUMNS),
        ("calc_case_description_train_set.csv", CALC_COLUMNS),
        ("calc_case_description_test_set.csv", CALC_COLUMNS),
    ],
)
def test_synthetic_csv_columns_match_the_real_headers(name: str, columns: tuple[str, ...]) -> None:
    with _need(CSV_DIR / name).open(newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh))
    assert tuple(header) == columns


def test_synthetic_mias_lines_parse_like_the_real_info_txt(tmp_path: Path) -> None:
    from mammoseg.storage import LocalStore
    from mammoseg.synth import MiasSynthParams, generate_mias

    real = _need(DATA / "mini-mias" / "Info.txt").read_text(encoding="ascii")
    line = re.compile(
        r"^(mdb\d{3}) ([FGD]) (CIRC|SPIC|MISC|ARCH|ASYM|CALC|NORM)"
        r"(?: ([BM])(?: (\d+) (\d+) (\d+)| \*NOTE 3\*)?)? *$"
    )
    real_lines = [x for x in real.splitlines() if x.startswith("mdb")]
    assert len(real_lines) > 300 and all(line.match(x) for x in real_lines)
    store = LocalStore(tmp_path)
    generate_mias(store, MiasSynthParams())
    synth = store.read_bytes("mini-mias/Info.txt").decode("ascii")
    synth_lines = [x for x in synth.splitlines() if x.startswith("mdb")]
    assert synth_lines and all(line.match(x) for x in synth_lines)
