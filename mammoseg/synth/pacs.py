"""Synthetic DICOM mammogram studies and a known-answer stand-in model, for PACS tests and the
PACS benchmark (``benchmarks/pacs.py``).

:func:`synthetic_study` writes one study (one or more MG images, its own Study Instance UID and
a fake patient with name, ID and birth date, so leak checks have something to find) with bright
round "lesions" on a half-ellipse breast. :func:`publish_spot_model` publishes, as the store's
champion, a one-layer model with a known answer — probability > 0.5 where the preprocessed
image is brighter than 0.75 of its range — with its plan (and so its bundle). Keras is imported
only by that function.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mammoseg.dicom import make_uid, write_dicom


def mammogram(h: int = 150, w: int = 100, *, spots: tuple[tuple[int, int, int], ...] = ((25, 45, 9), (55, 75, 5))) -> np.ndarray:
    """A uint16 half-ellipse breast (chest wall on the left) with bright discs ``(x, y, r)``."""
    import cv2

    image = np.zeros((h, w), np.uint16)
    cv2.ellipse(image, (0, h // 2), (int(w * 0.8), int(h * 0.47)), 0, -90, 90, 20000, -1)
    for x, y, r in spots:
        cv2.circle(image, (x, y), r, 60000, -1)
    return image


def synthetic_study(index: int, *, images: int = 1, h: int = 150, w: int = 100, tag: str = "pacs") -> list[bytes]:
    """DICOM Part-10 bytes of one synthetic study (``images`` MG instances, one series)."""
    study_uid = make_uid("synthetic-study", tag, index)
    series_uid = make_uid("synthetic-series", tag, index)
    out = []
    for i in range(images):
        spot = (20 + 7 * ((index + i) % 5), 40 + 9 * ((index + 2 * i) % 7), 6 + (index + i) % 4)
        out.append(write_dicom(
            mammogram(h, w, spots=(spot,)), modality="MG", series_description="full mammogram images",
            patient_id=f"SYN{index:05d}", patient_name=f"SYNTHETIC^PATIENT{index}", birth_date="19600101",
            study_date="20240102", study_uid=study_uid, series_uid=series_uid, instance_number=i + 1,
            laterality="L" if i % 2 == 0 else "R", view="CC",
        ))
    return out


def publish_spot_model(store_url: str, *, size: int = 32, version: str = "20250102T030405Z-5a0b1c2d") -> str:
    """Publish the known-answer model as the champion of ``store_url``; its model URI."""
    import tempfile

    import keras

    from mammoseg.plan import ModelPlan
    from mammoseg.preprocess import PreprocessParams
    from mammoseg.publish import promote_if_better, publish_version
    from mammoseg.storage import open_store

    inp = keras.Input((size, size, 1))
    out = keras.layers.Conv2D(1, 1, activation="sigmoid", name="spot")(inp)
    model = keras.Model(inp, out)
    model.get_layer("spot").set_weights([np.full((1, 1, 1, 1), 40.0, np.float32), np.array([-30.0], np.float32)])
    store = open_store(store_url)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        model.save(path)
        published = publish_version(
            store, model_file=path, training_config={"model": "known-answer spot model"},
            data_manifest=[], metrics={"dice_mean": 0.5}, model_card_md="# known-answer spot model\n",
            version=version, plan=ModelPlan(preprocess=PreprocessParams(size=size), threshold=0.5),
        )
    promote_if_better(store, published.version)
    return published.model_uri
