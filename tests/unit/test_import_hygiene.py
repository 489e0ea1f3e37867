"""No TensorFlow/Keras on the ingest/validate/preprocess path; no side effects at import."""

from __future__ import annotations

import subprocess
import sys

DATA_PATH_MODULES = [
    "mammoseg.cli",
    "mammoseg.storage",
    "mammoseg.adapters.registry",
    "mammoseg.adapters.cbis_ddsm",
    "mammoseg.dicom",
    "mammoseg.preprocess",
    "mammoseg.validation",
    "mammoseg.evaluation",
    "mammoseg.publish",
    "flows.data_pipeline",
    "flows.retrain",
    "tasks.ingest",
    "tasks.validate",
    "tasks.preprocess",
]


def test_data_path_imports_no_tensorflow_or_keras(tmp_path) -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in DATA_PATH_MODULES)
        + "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'jax', 'torch'))\n"
        + "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path.parent, check=True)
    assert out.stdout.strip() == "", f"heavy frameworks imported: {out.stdout.strip()[:200]}"


def test_importing_the_package_writes_nothing(tmp_path) -> None:
    code = "".join(f"import {m}\n" for m in DATA_PATH_MODULES)
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, capture_output=True)
    assert list(tmp_path.iterdir()) == []
