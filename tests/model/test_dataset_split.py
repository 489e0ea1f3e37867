"""Patient split and the tf.data input pipeline over NPZs in an object store."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mammoseg.storage import LocalStore, ObjectStore, S3Store
from mammoseg.training.split import patient_labels, patient_split

# --- split --------------------------------------------------------------------------------


def image_table(n_patients: int = 60, seed: int = 0) -> pd.DataFrame:
    """1–4 images per patient; a third malignant masses, a third benign calcs, a third normal."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        kind = p % 3
        for v in range(int(rng.integers(1, 5))):
            rows.append(
                {
                    "case_id": f"cs-{p:03d}-{v}",
                    "patient_id": f"pt-{p:03d}",
                    "pathology": ("MALIGNANT", "BENIGN", "NORMAL")[kind],
                    "abnormality_types": (["mass"], ["calcification"], [])[kind],
                }
            )
    return pd.DataFrame(rows, index=pd.RangeIndex(100, 100 + len(rows)))


def test_split_keeps_patients_together_and_hits_the_fractions() -> None:
    images = image_table()
    split = patient_split(images, val_fraction=0.15, test_fraction=0.15, seed=1)
    assert split.index.equals(images.index)
    assert set(split) == {"train", "val", "test"}
    assert (images.assign(split=split).groupby("patient_id")["split"].nunique() == 1).all()
    shares = split.value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.70, abs=0.06)
    assert shares["val"] == pytest.approx(0.15, abs=0.06)
    assert shares["test"] == pytest.approx(0.15, abs=0.06)
    # stratified: every label reaches every split
    by_label = pd.crosstab(images["pathology"], split)
    assert (by_label > 0).all().all()


def test_split_is_deterministic_by_seed() -> None:
    images = image_table()
    a = patient_split(images, seed=3)
    assert a.equals(patient_split(images.copy(), seed=3))
    assert not a.equals(patient_split(images, seed=4))


def test_split_does_not_modify_the_input() -> None:
    images = image_table(12)
    before = images.copy(deep=True)
    patient_split(images)
    pd.testing.assert_frame_equal(images, before)


def test_rare_strata_are_pooled_so_every_split_gets_patients() -> None:
    # Seven patients with seven different labels: each stratum alone would send its single
    # patient to train. Pooled (one stratum of 7 images, targets 4.9 / 1.05 / 1.05), the greedy
    # deficit rule gives train ×4, then val, then test, then train: 5 / 1 / 1.
    images = pd.DataFrame(
        {
            "patient_id": [f"p{i}" for i in range(7)],
            "pathology": [
                "MALIGNANT",
                "BENIGN",
                "NORMAL",
                "UNKNOWN",
                "MALIGNANT",
                "BENIGN",
                "NORMAL",
            ],
            "abnormality_types": [["mass"], ["mass"], [], [], ["calcification"], [], ["mass"]],
        }
    )
    split = patient_split(images, seed=0)
    assert split.value_counts().to_dict() == {"train": 5, "val": 1, "test": 1}


def test_each_dataset_is_split_on_its_own() -> None:
    # Pooled, the 12 small-dataset patients would be outnumbered; split per dataset, each reaches
    # every split with its own fractions, and the result equals splitting each part alone.
    big, small = image_table(60, seed=1), image_table(12, seed=2)
    small = small.assign(case_id="s" + small["case_id"], patient_id="s" + small["patient_id"])
    images = pd.concat([big.assign(dataset="big"), small.assign(dataset="small")], ignore_index=True)
    split = patient_split(images, seed=3, group_col="dataset")
    assert split.index.equals(images.index)
    assert pd.crosstab(images["dataset"], split).gt(0).all(axis=None)
    alone = patient_split(small, seed=3)
    assert split[images["dataset"] == "small"].tolist() == alone.tolist()
    with pytest.raises(ValueError, match="more than one dataset"):
        patient_split(images.assign(patient_id="pt-0"), group_col="dataset")


def test_three_patients() -> None:
    # 3 images, targets 2.1 / .45 / .45: train, train (deficit 1.1), then val (tie with test).
    images = pd.DataFrame(
        {"patient_id": ["a", "b", "c"], "pathology": ["B", "B", "B"], "abnormality_types": [[]] * 3}
    )
    assert sorted(patient_split(images, seed=0)) == ["train", "train", "val"]


def test_patient_labels_take_the_most_frequent_image_label() -> None:
    images = pd.DataFrame(
        {
            "patient_id": ["a", "a", "a", "b"],
            "pathology": ["BENIGN", "MALIGNANT", "MALIGNANT", "NORMAL"],
            "abnormality_types": [
                ["mass"],
                ["mass", "calcification"],
                ["calcification", "mass"],
                [],
            ],
        }
    )
    labels = patient_labels(images, ("pathology", "abnormality_types"))
    assert labels["a"] == "MALIGNANT|calcification+mass"
    assert labels["b"] == "NORMAL|none"


def test_split_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="patient_id"):
        patient_split(pd.DataFrame({"case_id": ["x"]}))
    with pytest.raises(ValueError, match="no patient_id"):
        patient_split(
            pd.DataFrame(
                {"patient_id": ["a", None], "pathology": ["x", "y"], "abnormality_types": [[], []]}
            )
        )
    with pytest.raises(ValueError, match="< 1"):
        patient_split(image_table(5), val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match="stratify"):
        patient_split(image_table(5), stratify_cols=("birads",))


# --- dataset ------------------------------------------------------------------------------

tf = pytest.importorskip("tensorflow")

from mammoseg.training.augment import AugmentConfig
from mammoseg.training.dataset import DatasetError, make_dataset

S = 64


def npz_bytes(image: np.ndarray, mask: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(
        buf, image=image, mask=mask, transform=json.dumps({"output_size": int(image.shape[0])})
    )
    return buf.getvalue()


def write_cases(store: ObjectStore, n: int, lesion_every: int = 2) -> pd.DataFrame:
    """Case i: image filled with 1000·(i+1) (uint16), a 4×4 lesion when i % lesion_every == 0."""
    rows = []
    for i in range(n):
        image = np.full((S, S), 1000 * (i + 1), np.uint16)
        mask = np.zeros((S, S), np.uint8)
        if i % lesion_every == 0:
            mask[10:14, 20:24] = 1
        key = f"preprocessed/p/{i:02d}.npz"
        store.write_bytes(key, npz_bytes(image, mask))
        rows.append(
            {
                "case_id": f"cs-{i:02d}",
                "patient_id": f"pt-{i:02d}",
                "npz_key": key,
                "lesion_fraction": float(mask.mean()),
            }
        )
    return pd.DataFrame(rows)


def case_numbers(ds) -> list[int]:
    """Recover the case index of each sample from its constant image level."""
    out = []
    for images, _ in ds:
        out += [round(float(v) * 65535 / 1000) - 1 for v in images.numpy()[:, 0, 0, 0]]
    return out


@pytest.fixture()
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def test_validation_dataset_values_shapes_and_order(store: LocalStore) -> None:
    manifest = write_cases(store, 5)
    ds = make_dataset(store, manifest, batch_size=2, training=False)
    batches = list(ds)
    assert [b[0].shape[0] for b in batches] == [2, 2, 1]
    images, masks = batches[0]
    assert images.shape == masks.shape == (2, S, S, 1)
    assert images.dtype == masks.dtype == tf.float32
    assert float(images[1, 0, 0, 0]) == pytest.approx(2000 / 65535)
    np.testing.assert_array_equal(masks[0, 10:14, 20:24, 0], np.ones((4, 4)))
    assert float(tf.reduce_sum(masks[0])) == 16 and float(tf.reduce_sum(masks[1])) == 0
    assert case_numbers(ds) == [0, 1, 2, 3, 4]
    assert set(store.read_log) == set(manifest["npz_key"])


def test_training_dataset_shuffles_per_epoch_and_is_reproducible(store: LocalStore) -> None:
    manifest = write_cases(store, 12)
    ds = make_dataset(store, manifest, batch_size=4, training=True, shuffle_seed=5)
    first, second = case_numbers(ds), case_numbers(ds)
    assert sorted(first) == sorted(second) == list(range(12))
    assert first != second and first != list(range(12))
    again = make_dataset(store, manifest, batch_size=4, training=True, shuffle_seed=5)
    assert case_numbers(again) == first


def test_augmented_dataset_is_reproducible_and_mask_binary(store: LocalStore) -> None:
    manifest = write_cases(store, 4, lesion_every=1)
    cfg = AugmentConfig(seed=11, rotate_deg=30)

    def masks_of(ds) -> np.ndarray:
        return np.concatenate([m.numpy() for _, m in ds])

    a = masks_of(make_dataset(store, manifest, batch_size=2, training=True, augment=cfg))
    b = masks_of(make_dataset(store, manifest, batch_size=2, training=True, augment=cfg))
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) <= {0.0, 1.0}
    plain = masks_of(make_dataset(store, manifest, batch_size=2, training=False))
    assert not np.array_equal(
        np.sort(a.reshape(4, -1), axis=0), np.sort(plain.reshape(4, -1), axis=0)
    )


def test_lesion_oversampling_raises_the_lesion_share(store: LocalStore) -> None:
    manifest = write_cases(store, 16, lesion_every=8)  # cases 0 and 8: natural share 1/8
    ds = make_dataset(store, manifest, batch_size=8, training=True, lesion_oversample=0.5)
    drawn = [c for _ in range(10) for c in case_numbers(ds)]
    assert len(drawn) == 160  # an epoch keeps len(manifest) samples
    share = np.isin(drawn, [0, 8]).mean()
    # expected 0.5 + 0.5 · 1/8 = 0.5625
    assert 0.4 < share < 0.72


def test_dataset_balance_evens_out_a_large_and_a_small_dataset(store: LocalStore) -> None:
    manifest = write_cases(store, 20)
    manifest.insert(0, "dataset", ["big"] * 16 + ["small"] * 4)  # cases 16..19 are the small set
    drawn = {}
    for balance in (0.0, 1.0):
        ds = make_dataset(store, manifest, batch_size=10, training=True, dataset_balance=balance)
        drawn[balance] = [c for _ in range(10) for c in case_numbers(ds)]
        assert len(drawn[balance]) == 200  # an epoch keeps len(manifest) samples
    # 0: each image once an epoch, share 4/20; 1: each dataset half the draws
    assert np.isin(drawn[0.0], [16, 17, 18, 19]).mean() == pytest.approx(0.2)
    assert 0.38 < np.isin(drawn[1.0], [16, 17, 18, 19]).mean() < 0.62
    assert set(drawn[1.0]) == set(range(20))


def test_uncached_dataset_reads_from_the_store_each_time(store: LocalStore) -> None:
    manifest = write_cases(store, 3)
    ds = make_dataset(store, manifest, batch_size=3, training=False, cache=False)
    assert case_numbers(ds) == [0, 1, 2]
    store.read_log.clear()
    assert case_numbers(ds) == [0, 1, 2]
    assert set(store.read_log) == set(manifest["npz_key"])


def test_uncached_dataset_over_s3(s3_bucket: str) -> None:
    s3 = S3Store(s3_bucket, "runs")
    manifest = write_cases(s3, 4)
    ds = make_dataset(s3, manifest, batch_size=2, training=True, cache=False, lesion_oversample=0.3)
    assert len(case_numbers(ds)) == 4


def test_bad_manifest_and_bad_npz_raise_dataset_error(store: LocalStore) -> None:
    manifest = write_cases(store, 2)
    with pytest.raises(DatasetError, match="npz_key"):
        make_dataset(store, manifest.drop(columns="npz_key"), batch_size=1, training=False)
    with pytest.raises(DatasetError, match="empty"):
        make_dataset(store, manifest.iloc[:0], batch_size=1, training=False)

    store.write_bytes(
        "bad/truncated.npz",
        npz_bytes(np.zeros((S, S), np.uint16), np.zeros((S, S), np.uint8))[:100],
    )
    store.write_bytes(
        "bad/mask2.npz", npz_bytes(np.zeros((S, S), np.uint16), np.full((S, S), 2, np.uint8))
    )
    store.write_bytes(
        "bad/small.npz", npz_bytes(np.zeros((32, 32), np.uint16), np.zeros((32, 32), np.uint8))
    )
    store.write_bytes(
        "bad/float.npz", npz_bytes(np.zeros((S, S), np.float32), np.zeros((S, S), np.uint8))
    )
    cases = {
        "truncated": "cs-bad.*not a readable NPZ",
        "mask2": "only 0 and 1",
        "small": "first image of the manifest",
        "float": "uint8 or uint16",
    }
    for name, message in cases.items():
        bad = pd.concat(
            [
                manifest,
                pd.DataFrame(
                    [{"case_id": "cs-bad", "patient_id": "pt-x", "npz_key": f"bad/{name}.npz"}]
                ),
            ],
            ignore_index=True,
        )
        with pytest.raises(DatasetError, match=message):
            make_dataset(store, bad, batch_size=1, training=False)


def test_bad_arguments(store: LocalStore) -> None:
    manifest = write_cases(store, 2)
    with pytest.raises(ValueError, match="training datasets only"):
        make_dataset(store, manifest, batch_size=1, training=False, augment=AugmentConfig())
    with pytest.raises(ValueError, match="lesion_oversample"):
        make_dataset(store, manifest, batch_size=1, training=True, lesion_oversample=1.0)
    with pytest.raises(ValueError, match="dataset_balance"):
        make_dataset(store, manifest, batch_size=1, training=True, dataset_balance=1.5)
    with pytest.raises(ValueError, match="training datasets only"):
        make_dataset(store, manifest, batch_size=1, training=False, dataset_balance=0.5)
    with pytest.raises(ValueError, match="batch_size"):
        make_dataset(store, manifest, batch_size=0, training=True)
