"""tf.data input pipeline over the preprocessed NPZs of a manifest.

Each NPZ (written by ``mammoseg.preprocess``) holds ``image`` (uint16 S×S), ``mask`` (uint8 S×S,
0/1) and ``transform`` (JSON). The dataset yields batches of ``(image, mask)``, both float32
``[batch, S, S, 1]``: the image divided by its dtype's maximum (65535 for uint16) so it lies in
0..1, the mask 0/1.

Only the ``npz_key`` column (plus ``case_id`` for error messages, and optionally
``lesion_fraction``) is read from the manifest; nothing from it reaches the tensors.
TensorFlow is imported inside :func:`make_dataset`, never at module import.
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from mammoseg.storage import ObjectStore
from mammoseg.training.augment import AugmentConfig, Warp, augment_batch, augment_pair

if TYPE_CHECKING:
    import tensorflow as tf

#: ``cache="auto"``: decoded arrays up to this size are read once and kept in memory; a larger
#: training set streams from the store (each NPZ read when drawn, every epoch).
CACHE_BUDGET_BYTES: int = 2 * 1024**3
#: Batches read and augmented in parallel, and batches prefetched, by the per-batch pipeline.
BATCHES_IN_FLIGHT: int = 4


class DatasetError(ValueError):
    """A manifest or an NPZ cannot feed the training pipeline; the message says which and why."""


@dataclass(frozen=True)
class Sample:
    """One decoded NPZ: ``image`` 2-D uint8/uint16, ``mask`` 2-D uint8 0/1, same shape."""

    image: np.ndarray
    mask: np.ndarray


def decode_npz(data: bytes, *, label: str = "NPZ") -> Sample:
    """Decode and check one preprocessed NPZ; ``label`` names it in error messages.

    Raises :class:`DatasetError` if the bytes are not an NPZ, ``image``/``mask`` are missing,
    not 2-D, not square or of different shapes, the image is not uint8/uint16, or the mask holds
    values other than 0 and 1.
    """
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            if "image" not in npz.files or "mask" not in npz.files:
                raise DatasetError(f"{label}: NPZ lacks 'image' and/or 'mask' (has {npz.files})")
            image, mask = npz["image"], npz["mask"]
    except DatasetError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DatasetError(f"{label}: not a readable NPZ ({exc})") from None
    if image.ndim != 2 or image.shape[0] != image.shape[1]:
        raise DatasetError(f"{label}: image must be a square 2-D array, got shape {image.shape}")
    if mask.shape != image.shape:
        raise DatasetError(f"{label}: mask shape {mask.shape} != image shape {image.shape}")
    if image.dtype not in (np.uint8, np.uint16):
        raise DatasetError(f"{label}: image dtype must be uint8 or uint16, got {image.dtype}")
    if mask.dtype == np.bool_:
        mask = mask.astype(np.uint8)
    # uint8 is 0/1 iff its maximum is <= 1 (50x cheaper than np.isin on a 128-px mask)
    if not (mask.max(initial=0) <= 1 if mask.dtype == np.uint8 else np.isin(mask, (0, 1)).all()):
        raise DatasetError(f"{label}: mask must hold only 0 and 1")
    return Sample(image=image, mask=mask.astype(np.uint8, copy=False))


def _labels(manifest: pd.DataFrame) -> list[str]:
    if "case_id" in manifest.columns:
        return [f"case {c} ({k})" for c, k in zip(manifest["case_id"], manifest["npz_key"])]
    return [f"object {k}" for k in manifest["npz_key"]]


def _check_manifest(manifest: pd.DataFrame) -> list[str]:
    if "npz_key" not in manifest.columns:
        raise DatasetError("manifest has no 'npz_key' column (is it the preprocessed manifest?)")
    if len(manifest) == 0:
        raise DatasetError("manifest is empty: nothing to train or validate on")
    keys = manifest["npz_key"]
    bad = [i for i, k in enumerate(keys) if not isinstance(k, str) or not k]
    if bad:
        raise DatasetError(f"manifest rows {bad[:10]} have no npz_key")
    return list(keys)


def load_samples(store: ObjectStore, manifest: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Read every NPZ of ``manifest`` into memory: ``(images [N,S,S], masks [N,S,S] uint8)``.

    All images must share one size and one dtype, else :class:`DatasetError`.
    """
    keys = _check_manifest(manifest)
    labels = _labels(manifest)
    first = decode_npz(store.read_bytes(keys[0]), label=labels[0])
    n, size = len(keys), first.image.shape[0]
    images = np.empty((n, size, size), dtype=first.image.dtype)
    masks = np.empty((n, size, size), dtype=np.uint8)
    images[0], masks[0] = first.image, first.mask
    for i in range(1, n):
        s = decode_npz(store.read_bytes(keys[i]), label=labels[i])
        _check_like(s, first, labels[i])
        images[i], masks[i] = s.image, s.mask
    return images, masks


def _check_like(sample: Sample, first: Sample, label: str) -> None:
    if sample.image.shape != first.image.shape or sample.image.dtype != first.image.dtype:
        raise DatasetError(
            f"{label}: image is {sample.image.dtype} {sample.image.shape}, but the first image of "
            f"the manifest is {first.image.dtype} {first.image.shape}; preprocess all with one size"
        )


def make_dataset(
    store: ObjectStore,
    manifest: pd.DataFrame,
    *,
    batch_size: int,
    training: bool,
    augment: AugmentConfig | None = None,
    cache: bool | Literal["auto"] = "auto",
    cache_budget_bytes: int = CACHE_BUDGET_BYTES,
    shuffle_seed: int = 0,
    lesion_oversample: float = 0.0,
    dataset_balance: float = 0.0,
    warp: Warp = "opencv",
    per_batch: bool = True,
) -> tf.data.Dataset:
    """Batches of ``(image, mask)`` float32 ``[b, S, S, 1]`` for ``model.fit``.

    * ``training=True``: a new shuffle every epoch (seeded by ``shuffle_seed``), optional
      augmentation (:func:`mammoseg.training.augment.augment_pair`, per-sample seeds drawn from
      ``augment.seed``) and optional lesion oversampling. ``training=False``: manifest order,
      no augmentation, no oversampling (``augment`` must then be None).
    * ``lesion_oversample = p`` in ``[0, 1)``: each sample is drawn from the lesion-bearing images
      with probability ``p`` and from all images otherwise, so the expected share of
      lesion-bearing samples becomes ``p + (1 - p)·f`` (``f`` their natural share). An epoch
      keeps ``len(manifest)`` samples. Ignored when no image has a lesion. Lesion-bearing means a
      non-empty mask (``lesion_fraction > 0`` in the manifest when ``cache=False``).
    * ``dataset_balance = b`` in ``[0, 1]`` (training, manifest with a ``dataset`` column): the
      "all images" stream draws dataset ``d`` (``n_d`` images) with weight ``n_d ** (1 - b)``,
      shuffled within each dataset: 0 is the natural mix, 1 gives every dataset the same share of
      an epoch, so a small dataset is not drowned by a large one. An epoch keeps ``len(manifest)``
      samples.
    * ``warp``: how the augmentation's affine map is sampled (:func:`augment_pair`): OpenCV
      (default; ~8x faster than TensorFlow's op on a CPU) or ``"tf"``.
    * ``per_batch=True`` (default): samples are read and augmented a batch at a time (one
      reader call and :func:`~mammoseg.training.augment.augment_batch` per batch: the same
      draws from the same per-sample seeds, so the same augmentation, with one op dispatch per
      batch instead of per image); ``False``: the per-sample path (``augment_pair`` per image).
    * ``cache=True`` reads and decodes every NPZ once, now, and keeps them in memory (small:
      ~0.75 MB per 512-px image); ``cache=False`` streams: each NPZ is read from the store when
      it is drawn, every epoch, by parallel readers (``num_parallel_calls=AUTOTUNE``) ahead of
      the model (``prefetch``), so memory holds a few batches whatever the data set's size (for
      data sets that do not fit in memory). ``cache="auto"`` (default) caches when the decoded
      arrays (estimated from the first NPZ) fit in ``cache_budget_bytes``, else streams.

    The store's ``read_log`` records every NPZ read. Raises :class:`DatasetError` on a bad
    manifest or NPZ, ``ValueError`` on bad arguments.
    """
    import tensorflow as tf

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 (got {batch_size})")
    if not 0.0 <= lesion_oversample < 1.0:
        raise ValueError(f"lesion_oversample must be in [0, 1) (got {lesion_oversample})")
    if not 0.0 <= dataset_balance <= 1.0:
        raise ValueError(f"dataset_balance must be in [0, 1] (got {dataset_balance})")
    if not training and (augment is not None or lesion_oversample > 0 or dataset_balance > 0):
        raise ValueError("augment, lesion_oversample and dataset_balance apply to training datasets only")
    keys = _check_manifest(manifest)
    labels = _labels(manifest)
    n = len(keys)
    first = decode_npz(store.read_bytes(keys[0]), label=labels[0])
    if cache == "auto":
        cache = n * (first.image.nbytes + first.mask.nbytes) <= cache_budget_bytes

    if cache:
        images, masks = load_samples(store, manifest)
        has_lesion = masks.reshape(n, -1).any(axis=1)
        size, image_dtype = images.shape[1], images.dtype

        def lookup(i: np.int64) -> tuple[np.ndarray, np.ndarray]:
            return images[i], masks[i]

    else:
        size, image_dtype = first.image.shape[0], first.image.dtype
        has_lesion = _lesion_flags(store, manifest, keys, labels) if lesion_oversample > 0 else None

        def lookup(i: np.int64) -> tuple[np.ndarray, np.ndarray]:
            s = decode_npz(store.read_bytes(keys[i]), label=labels[i])
            _check_like(s, first, labels[i])
            return s.image, s.mask

    scale = float(np.iinfo(image_dtype).max)
    tf_image_dtype = tf.as_dtype(image_dtype)

    def load(i: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image, mask = tf.numpy_function(lookup, [i], (tf_image_dtype, tf.uint8), stateful=False)
        image = tf.cast(tf.reshape(image, (size, size, 1)), tf.float32) / scale
        mask = tf.cast(tf.reshape(mask, (size, size, 1)), tf.float32)
        return image, mask

    if cache:

        def lookup_batch(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return images[idx], masks[idx]

    else:

        def lookup_batch(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            out_i = np.empty((idx.size, size, size), image_dtype)
            out_m = np.empty((idx.size, size, size), np.uint8)
            for j, i in enumerate(idx):
                out_i[j], out_m[j] = lookup(i)
            return out_i, out_m

    def load_batch(idx: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image, mask = tf.numpy_function(lookup_batch, [idx], (tf_image_dtype, tf.uint8), stateful=False)
        image = tf.cast(tf.reshape(image, (-1, size, size, 1)), tf.float32) / scale
        mask = tf.cast(tf.reshape(mask, (-1, size, size, 1)), tf.float32)
        return image, mask

    if training:
        order = tf.data.Dataset.range(n).shuffle(
            n, seed=shuffle_seed, reshuffle_each_iteration=True
        )
        groups = _dataset_groups(manifest) if dataset_balance > 0 else []
        if len(groups) > 1:
            order = tf.data.Dataset.sample_from_datasets(
                [
                    tf.data.Dataset.from_tensor_slices(idx.astype(np.int64))
                    .shuffle(idx.size, seed=shuffle_seed + 2 + j, reshuffle_each_iteration=True)
                    .repeat()
                    for j, idx in enumerate(groups)
                ],
                weights=[float(idx.size) ** (1.0 - dataset_balance) for idx in groups],
                seed=shuffle_seed,
            ).take(n)
        lesion_idx = np.flatnonzero(has_lesion) if has_lesion is not None else np.array([])
        if lesion_oversample > 0 and lesion_idx.size:
            everyone = order.repeat()
            lesions = (
                tf.data.Dataset.from_tensor_slices(lesion_idx.astype(np.int64))
                .shuffle(lesion_idx.size, seed=shuffle_seed + 1, reshuffle_each_iteration=True)
                .repeat()
            )
            order = tf.data.Dataset.sample_from_datasets(
                [everyone, lesions],
                weights=[1.0 - lesion_oversample, lesion_oversample],
                seed=shuffle_seed,
            ).take(n)
    else:
        order = tf.data.Dataset.range(n)

    augmenting = training and augment is not None
    if augmenting:  # one [2] seed per sample, the k-th sample drawn gets the k-th seed
        seeds = tf.data.Dataset.random(seed=augment.seed, rerandomize_each_iteration=True).batch(2)
    if per_batch:
        # a fixed number of batches in flight: AUTOTUNE would size a map over *batches* like
        # one over images (up to one call per core), holding batch_size times the memory
        parallel = min(BATCHES_IN_FLIGHT, os.cpu_count() or 1)
        if augmenting:
            ds = tf.data.Dataset.zip(order, seeds).batch(batch_size).map(
                lambda idx, seed: augment_batch(*load_batch(idx), augment, seed, warp),
                num_parallel_calls=parallel,
            )
        else:
            ds = order.batch(batch_size).map(load_batch, num_parallel_calls=parallel)
        return ds.prefetch(BATCHES_IN_FLIGHT)
    ds = order.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    if augmenting:
        ds = tf.data.Dataset.zip(ds, seeds).map(
            lambda pair, seed: augment_pair(pair[0], pair[1], augment, seed, warp),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _dataset_groups(manifest: pd.DataFrame) -> list[np.ndarray]:
    """Row positions of each dataset (sorted by name); one group when there is no ``dataset`` column."""
    if "dataset" not in manifest.columns:
        return [np.arange(len(manifest))]
    codes = manifest["dataset"].astype(str).to_numpy()
    return [np.flatnonzero(codes == name) for name in sorted(set(codes))]


def _lesion_flags(
    store: ObjectStore, manifest: pd.DataFrame, keys: list[str], labels: list[str]
) -> np.ndarray:
    """Lesion-bearing flags from ``lesion_fraction`` when present, else by reading the masks."""
    if "lesion_fraction" in manifest.columns:
        frac = pd.to_numeric(manifest["lesion_fraction"], errors="coerce")
        if frac.isna().any():
            raise DatasetError(
                "manifest column 'lesion_fraction' has missing or non-numeric values"
            )
        return frac.to_numpy() > 0
    return np.array(
        [decode_npz(store.read_bytes(k), label=lb).mask.any() for k, lb in zip(keys, labels)]
    )
