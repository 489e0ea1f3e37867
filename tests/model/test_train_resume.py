"""Training: the model can learn (overfits one batch), and an interrupted run resumes."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

keras = pytest.importorskip("keras")

from mammoseg.model.metrics import dice_per_image
from mammoseg.model.unet import UNetConfig
from mammoseg.storage import LocalStore
from mammoseg.training.augment import AugmentConfig
from mammoseg.training.dataset import make_dataset
from mammoseg.training.train import (
    TrainConfig,
    TrainingStateError,
    build_compiled_model,
    gpu_visible,
    poly_learning_rate,
    resolve_precision,
    train,
)

S = 64
TINY = UNetConfig(input_size=S, base_filters=4, depth=2)
DISCS = [
    (20, 20, 7),
    (40, 30, 9),
    (30, 45, 6),
    (45, 15, 8),
    (15, 45, 5),
    (50, 50, 7),
    (25, 35, 8),
    (40, 44, 6),
]


def disc_data(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images 64×64: a brighter noisy disc (the lesion) on a noisy background."""
    yy, xx = np.mgrid[:S, :S]
    masks = np.array(
        [(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r for cy, cx, r in DISCS[:n]], "float32"
    )
    rng = np.random.default_rng(0)
    images = (masks * 0.5 + 0.25 + rng.normal(0, 0.05, masks.shape)).clip(0, 1)
    return images[..., None].astype("float32"), masks[..., None]


def test_overfits_one_small_batch() -> None:
    x, y = disc_data(4)
    keras.utils.set_random_seed(0)
    model = build_compiled_model(
        UNetConfig(input_size=S, base_filters=8, depth=2, dropout=0.0),
        TrainConfig(learning_rate=3e-3, loss="focal_dice", mixed_precision="float32"),
    )
    model.fit(x, y, batch_size=4, epochs=150, verbose=0)  # 150 steps on the same batch
    dice = keras.ops.convert_to_numpy(dice_per_image(y, model.predict(x, verbose=0)))
    assert dice.mean() > 0.9, dice


def test_precision_modes() -> None:
    assert resolve_precision("float32") == "float32"
    assert resolve_precision("auto") == ("mixed_float16" if gpu_visible() else "float32")
    model = build_compiled_model(TINY, TrainConfig(mixed_precision="mixed_float16"))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert keras.config.dtype_policy().name == "float32"  # global policy restored
    x, y = disc_data(2)
    logs = model.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss"])


def test_train_config_round_trip_and_validation() -> None:
    cfg = TrainConfig(epochs=3, loss="focal", augment=AugmentConfig(rotate_deg=5, seed=2))
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert TrainConfig.from_dict(TrainConfig(augment=None).to_dict()).augment is None
    with pytest.raises(ValueError, match="loss"):
        TrainConfig(loss="bce")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown TrainConfig"):
        TrainConfig.from_dict({"epoch": 3})


# --- resume -------------------------------------------------------------------------------


def write_manifest(store: LocalStore, n: int) -> pd.DataFrame:
    x, y = disc_data(n)
    rows = []
    for i in range(n):
        buf = io.BytesIO()
        np.savez(
            buf,
            image=(x[i, ..., 0] * 65535).astype(np.uint16),
            mask=y[i, ..., 0].astype(np.uint8),
            transform="{}",
        )
        key = f"preprocessed/p/{i}.npz"
        store.write_bytes(key, buf.getvalue())
        rows.append({"case_id": f"cs-{i}", "patient_id": f"pt-{i}", "npz_key": key})
    return pd.DataFrame(rows)


class Interrupted(Exception):
    pass


@pytest.fixture()
def data(tmp_path: Path):
    store = LocalStore(tmp_path / "store")
    manifest = write_manifest(store, 8)
    cfg = TrainConfig(
        epochs=5,
        batch_size=4,
        learning_rate=3e-3,
        early_stopping_patience=10,
        lr_patience=10,
        augment=AugmentConfig(seed=1),
        mixed_precision="float32",
    )
    train_ds = make_dataset(store, manifest, batch_size=4, training=True, augment=cfg.augment)
    val_ds = make_dataset(store, manifest, batch_size=4, training=False)
    return cfg, train_ds, val_ds


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_interrupted_training_resumes_from_its_last_epoch(tmp_path: Path, data) -> None:
    cfg, train_ds, val_ds = data
    work = tmp_path / "work"
    seen: list[int] = []

    def crash_after_two(epoch: int, logs: dict) -> None:
        seen.append(epoch)
        assert {"loss", "dice", "iou", "val_loss", "val_dice", "val_iou", "learning_rate"} <= set(
            logs
        )
        if epoch == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        train(TINY, cfg, train_ds, val_ds, work, on_epoch_end=crash_after_two)
    assert seen == [1, 2]
    assert (work / "backup").is_dir()
    assert [
        e["logs"]["epoch"] for e in json.loads((work / "state.json").read_text())["epochs"]
    ] == [1, 2]

    result = train(TINY, cfg, train_ds, val_ds, work, on_epoch_end=lambda e, logs: seen.append(e))
    assert seen == [1, 2, 3, 4, 5]  # continued at epoch 3
    assert result.resumed_from_epoch == 2
    assert result.epochs_run == 5 and not result.stopped_early
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4, 5]
    # 8 images / batch 4 = 2 steps per epoch; the optimizer state (step count) carried over.
    assert [h["iterations"] for h in result.history] == [2, 4, 6, 8, 10]
    assert not (work / "backup").exists()  # removed once training finished
    assert len(pd.read_csv(work / "history.csv")) == 5

    # best.keras is the model of the best epoch: it reproduces that epoch's val_dice.
    scores = [h["val_dice"] for h in result.history]
    assert result.best_epoch == int(np.argmax(scores)) + 1
    best = keras.saving.load_model(result.best_model_path)
    evaluated = best.evaluate(val_ds, return_dict=True, verbose=0)
    assert evaluated["dice"] == pytest.approx(result.best_val_dice, abs=1e-6)

    # A finished run is not trained again; a different configuration is refused.
    def must_not_train(epoch: int, logs: dict) -> None:
        raise AssertionError("a finished run trained again")

    again = train(TINY, cfg, train_ds, val_ds, work, on_epoch_end=must_not_train)
    assert again.history == result.history and again.resumed_from_epoch == 5
    with pytest.raises(TrainingStateError, match="different configuration"):
        train(TINY, TrainConfig(epochs=6), train_ds, val_ds, work)


def test_resume_keeps_the_better_checkpoint_of_before_the_interruption(
    tmp_path: Path, data
) -> None:
    cfg, train_ds, val_ds = data
    cfg = dataclasses.replace(cfg, epochs=2)
    work = tmp_path / "work"

    def crash(epoch: int, logs: dict) -> None:
        raise Interrupted

    with pytest.raises(Interrupted):
        train(TINY, cfg, train_ds, val_ds, work, on_epoch_end=crash)
    # Pretend epoch 1 scored a val_dice no later epoch can beat (Dice <= 1).
    state = json.loads((work / "state.json").read_text())
    state["epochs"][0]["callbacks"].update(best=1.5, es_best=1.5, lr_best=1.5)
    (work / "state.json").write_text(json.dumps(state))
    before = _sha(work / "best.keras")
    result = train(TINY, cfg, train_ds, val_ds, work)
    assert result.resumed_from_epoch == 1 and result.epochs_run == 2
    assert _sha(work / "best.keras") == before  # not overwritten by a worse epoch


def test_poly_learning_rate_by_hand() -> None:
    assert poly_learning_rate(1e-3, 0.0, 0.9) == 1e-3
    assert poly_learning_rate(1e-3, 0.5, 1.0) == pytest.approx(5e-4)
    assert poly_learning_rate(1e-3, 0.75, 2.0) == pytest.approx(1e-3 * 0.0625)
    assert poly_learning_rate(1e-3, 1.0, 0.9, floor=1e-6) == 1e-6  # never below the floor
    assert poly_learning_rate(1e-3, 1.7, 0.9) == 0.0 and poly_learning_rate(1e-3, -1.0, 0.9) == 1e-3  # clipped
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="cosine")  # type: ignore[arg-type]


def test_poly_schedule_sets_each_epochs_rate_and_survives_a_resume(tmp_path: Path, data) -> None:
    cfg, train_ds, val_ds = data
    cfg = dataclasses.replace(cfg, epochs=4, lr_schedule="poly", poly_exponent=1.0, min_learning_rate=0.0)

    def crash_after_two(epoch: int, logs: dict) -> None:
        if epoch == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        train(TINY, cfg, train_ds, val_ds, tmp_path / "a", on_epoch_end=crash_after_two)
    result = train(TINY, cfg, train_ds, val_ds, tmp_path / "a")
    # epoch e (1-based) runs at 3e-3 * (1 - (e - 1) / 4)
    assert [h["learning_rate"] for h in result.history] == pytest.approx([3e-3, 2.25e-3, 1.5e-3, 0.75e-3])
    # a caller's progress (e.g. the share of a time budget spent) decides instead of epochs
    shares = {0: 0.0, 1: 0.6, 2: 0.9}
    short = train(TINY, dataclasses.replace(cfg, epochs=3), train_ds, val_ds, tmp_path / "b",
                  progress=shares.__getitem__)
    assert [h["learning_rate"] for h in short.history] == pytest.approx([3e-3, 1.2e-3, 0.3e-3])


def test_tensorboard_flag_without_the_package_fails_before_training(tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("tensorboard") is not None:
        pytest.skip("tensorboard is installed here")
    with pytest.raises(RuntimeError, match="'tensorboard' package is not installed"):
        train(TINY, TrainConfig(tensorboard=True), [], [], tmp_path / "work")
    assert not (tmp_path / "work").exists()
