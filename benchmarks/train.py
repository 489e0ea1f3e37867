"""Training throughput: our tf.data pipeline vs a seed-style ImageDataGenerator feed, same model.

Default mode (TensorFlow backend, CPU is fine, ~1–3 min):
  writes synthetic 128-px NPZs to a temporary local store, then measures for each feed
  (1) input only: images/s produced by the augmenting input pipeline, and
  (2) input + train steps of one U-Net (base 16, depth 4): images/s through ``model.fit``.
  "ours"      = ``make_dataset`` (in-memory NPZs, shuffle, paired affine augmentation in one
                op on the stacked image+mask, brightness/contrast, batch, prefetch);
  "seed-style"= two ``ImageDataGenerator.flow`` iterators (image and mask, same seed), zipped
                in Python, per-sample scipy affine — what the original seed did. Keras 3.15
                keeps ImageDataGenerator only under ``tf.keras`` (legacy); ``keras.preprocessing``
                no longer has it. Its brightness_range needs PIL, which we do not ship, so the
                reference does no brightness/contrast (that favours the reference).

``--backend-check`` mode (for a GPU box, e.g. ``KERAS_BACKEND=jax``): builds the model, losses
and metrics, and times ``model.fit`` on in-memory numpy arrays (512 px, mixed precision where a
GPU is visible) without any TensorFlow-specific code; it reports whether TensorFlow got imported.

    .venv/bin/python benchmarks/train.py [--size 128 --steps 12 --json out.json]
    KERAS_BACKEND=jax python benchmarks/train.py --backend-check [--size 512 --batch 8]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))


def synthetic(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` float32 images in 0..1 with 1–3 bright discs each, and their 0/1 masks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((n, size, size), np.float32)
    for i in range(n):
        for _ in range(int(rng.integers(1, 4))):
            cy, cx = rng.uniform(0.2, 0.8, 2) * size
            r = rng.uniform(0.03, 0.1) * size
            masks[i] = np.maximum(masks[i], ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r))
    images = (0.3 + 0.4 * masks + rng.normal(0, 0.05, masks.shape)).clip(0, 1).astype(np.float32)
    return images[..., None], masks[..., None]


def _rate(n_images: int, seconds: float) -> float:
    return n_images / seconds if seconds > 0 else float("nan")


# --- default mode -------------------------------------------------------------------------


def run_comparison(args: argparse.Namespace) -> dict[str, float]:
    import keras
    import tensorflow as tf

    from mammoseg.model.unet import UNetConfig
    from mammoseg.storage import LocalStore
    from mammoseg.training.augment import AugmentConfig
    from mammoseg.training.dataset import make_dataset
    from mammoseg.training.train import TrainConfig, build_compiled_model

    keras.utils.set_random_seed(0)
    images, masks = synthetic(args.images, args.size)
    batch, steps = args.batch, args.steps
    aug = AugmentConfig(flip_axis="vertical", seed=0)
    if args.recipe_augment:
        from mammoseg.params import RetrainParams
        from mammoseg.training.recipe import configs

        aug = configs(RetrainParams(), args.size)[1].augment

    tmp = tempfile.TemporaryDirectory()  # kept until the end: the streamed feed reads from it
    store = LocalStore(tmp.name)
    rows = []
    for i in range(len(images)):
        buf = io.BytesIO()
        np.savez(
            buf,
            image=(images[i, ..., 0] * 65535).astype(np.uint16),
            mask=masks[i, ..., 0].astype(np.uint8),
            transform="{}",
        )
        key = f"preprocessed/bench/{i:04d}.npz"
        store.write_bytes(key, buf.getvalue())
        rows.append({"case_id": f"cs-{i:04d}", "patient_id": f"pt-{i:04d}", "npz_key": key})
    import pandas as pd

    manifest = pd.DataFrame(rows)
    t0 = time.perf_counter()
    ours = make_dataset(store, manifest, batch_size=batch, training=True, augment=aug, cache=True).repeat()
    load_s = time.perf_counter() - t0
    # the same pipeline streaming every NPZ from the store each time it is drawn
    streamed = make_dataset(store, manifest, batch_size=batch, training=True, augment=aug, cache=False).repeat()

    # Seed-style reference: two legacy generators with the same seed, zipped in Python.
    Gen = tf.keras.preprocessing.image.ImageDataGenerator
    gen_args = {
        "rotation_range": aug.rotate_deg,
        "width_shift_range": aug.shift,
        "height_shift_range": aug.shift,
        "zoom_range": aug.zoom,
        "vertical_flip": True,
        "fill_mode": "constant",
        "cval": 0.0,
    }
    image_gen, mask_gen = Gen(**gen_args), Gen(**gen_args)

    def seed_style():
        imgs = image_gen.flow(images, batch_size=batch, seed=1)
        msks = mask_gen.flow(masks, batch_size=batch, seed=1)
        for x, y in zip(imgs, msks):
            yield x, (y > 0.5).astype(np.float32)

    results: dict[str, float] = {"ours_npz_load_s": load_s}

    # (1) input only: the model removed from the loop. Interleaved repeats, best of each.
    feeds_in = (("ours", lambda: iter(ours)), ("stream", lambda: iter(streamed)), ("seed", seed_style))
    for _ in range(args.repeats):
        for name, make in feeds_in:
            it = make()
            next(it)  # warm-up
            t = time.perf_counter()
            for _ in range(steps * 2):
                next(it)
            key = f"{name}_input_img_s"
            results[key] = max(results.get(key, 0.0), _rate(steps * 2 * batch, time.perf_counter() - t))
    results["input_ratio"] = results["ours_input_img_s"] / results["seed_input_img_s"]
    results["stream_input_ratio"] = results["stream_input_img_s"] / results["seed_input_img_s"]
    header = (f"{args.size}px, batch {batch}, {steps * 2} timed batches (best of {args.repeats}), "
              f"augmentation {'as trained (recipe)' if args.recipe_augment else 'affine + brightness/contrast'}")
    print(header)
    print(f"  ours       input only : {results['ours_input_img_s']:9.1f} images/s (in memory)")
    print(f"  ours       input only : {results['stream_input_img_s']:9.1f} images/s (streamed from the store)")
    print(f"  seed-style input only : {results['seed_input_img_s']:9.1f} images/s")
    print(f"  ratio ours/seed-style, input only: {results['input_ratio']:.2f}x in memory, "
          f"{results['stream_input_ratio']:.2f}x streamed")
    if args.input_only:
        tmp.cleanup()
        return results

    # (2) input + training steps, one model for both feeds
    model = build_compiled_model(
        UNetConfig(input_size=args.size, base_filters=args.base_filters, depth=args.depth),
        TrainConfig(mixed_precision=args.precision or "auto"),
    )
    feeds = (("ours", lambda: ours), ("seed", seed_style))
    for _, make in feeds:  # warm-up / tracing for each feed
        model.fit(make(), steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)
    # Interleaved repeats, best of each: the machine may be shared, order must not favour one.
    for _ in range(args.repeats):
        for name, make in feeds:
            data = make()
            t = time.perf_counter()
            model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
            rate = _rate(steps * batch, time.perf_counter() - t)
            key = f"{name}_train_img_s"
            results[key] = max(results.get(key, 0.0), rate)

    print(
        f"U-Net {args.size}px base {args.base_filters} depth {args.depth}, batch {batch}, "
        f"{steps} timed steps (best of {args.repeats}), backend {keras.config.backend()}, "
        f"policy {model.dtype_policy.name}"
    )
    print(f"  ours       input+train: {results['ours_train_img_s']:9.1f} images/s")
    print(f"  seed-style input+train: {results['seed_train_img_s']:9.1f} images/s")
    results["train_ratio"] = results["ours_train_img_s"] / results["seed_train_img_s"]
    print(f"  ratio ours/seed-style : input+train {results['train_ratio']:.2f}x")
    tmp.cleanup()
    print(f"  (ours read + decoded {len(images)} NPZs into memory in {load_s:.2f} s)")
    return results


# --- backend check ------------------------------------------------------------------------


def run_backend_check(args: argparse.Namespace) -> dict[str, float]:
    import keras

    from mammoseg.model.metrics import PooledDice
    from mammoseg.model.unet import UNetConfig
    from mammoseg.training.train import TrainConfig, build_compiled_model, resolve_precision

    keras.utils.set_random_seed(0)
    precision = args.precision or "auto"
    model = build_compiled_model(
        UNetConfig(input_size=args.size, base_filters=args.base_filters, depth=args.depth),
        TrainConfig(loss="focal_dice", mixed_precision=precision),
    )
    # PooledDice (not compiled in) is run once on predictions, so every metric meets this backend.
    x, y = synthetic(args.batch * 2, args.size)
    model.fit(x, y, batch_size=args.batch, epochs=1, verbose=0)  # warm-up / compilation
    n = args.steps * args.batch
    xs, ys = np.resize(x, (n, *x.shape[1:])), np.resize(y, (n, *y.shape[1:]))
    t = time.perf_counter()
    hist = model.fit(xs, ys, batch_size=args.batch, epochs=1, verbose=0, shuffle=False)
    seconds = time.perf_counter() - t
    pooled = PooledDice()
    pooled.update_state(y, model.predict(x, batch_size=args.batch, verbose=0))
    tf_loaded = "tensorflow" in sys.modules
    result = {
        "train_img_s": _rate(n, seconds),
        "loss": float(hist.history["loss"][-1]),
        "pooled_dice": float(keras.ops.convert_to_numpy(pooled.result())),
        "tensorflow_imported": float(tf_loaded),
    }
    print(
        f"backend {keras.config.backend()}, policy {model.dtype_policy.name} "
        f"(requested {precision} -> {resolve_precision(precision)}), "
        f"U-Net {args.size}px base {args.base_filters} depth {args.depth}, batch {args.batch}"
    )
    print(
        f"  train: {result['train_img_s']:.1f} images/s over {args.steps} steps; "
        f"loss {result['loss']:.4f}; pooled dice {result['pooled_dice']:.3f}"
    )
    print(f"  tensorflow imported: {tf_loaded}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--backend-check",
        action="store_true",
        help="backend-agnostic model+loss+metrics train-step timing",
    )
    parser.add_argument(
        "--size", type=int, default=None, help="image size (128; 512 with --backend-check)"
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--steps", type=int, default=None, help="timed steps (12; 20 with --backend-check)"
    )
    parser.add_argument(
        "--images", type=int, default=64, help="synthetic images in the default mode"
    )
    parser.add_argument(
        "--repeats", type=int, default=2, help="interleaved timed repeats, best kept"
    )
    parser.add_argument("--base-filters", type=int, default=16)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument(
        "--precision", default=None, choices=["auto", "float32", "mixed_float16", "mixed_bfloat16"]
    )
    parser.add_argument("--input-only", action="store_true", help="only the input pipelines, no model")
    parser.add_argument(
        "--recipe-augment", action="store_true",
        help="ours with the training recipe's augmentation (gamma, noise, blur too) instead of the seed's affine set",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.backend_check:
        args.size = args.size or 512
        args.steps = args.steps or 20
        results = run_backend_check(args)
    else:
        args.size = args.size or 128
        args.steps = args.steps or 12
        results = run_comparison(args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
