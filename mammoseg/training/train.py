"""``model.fit`` with checkpoints, early stopping, LR schedule and resume after interruption.

Everything a run writes lives in ``workdir``:

* ``best.keras`` — the full model (with optimizer) at the epoch of the best ``val_dice``;
* ``state.json`` — the configuration, per-epoch history and callback state (written atomically
  at the end of every epoch; ``finished`` once ``fit`` returns);
* ``backup/`` — ``keras.callbacks.BackupAndRestore``: weights + optimizer state of the last
  completed epoch, deleted when training finishes;
* ``history.csv`` (``CSVLogger``, appended across resumes; ``state.json`` is authoritative when
  an interruption fell between the two) and, optionally, ``tb/`` (TensorBoard).

Calling :func:`train` again with the same ``workdir`` and the same configuration continues an
interrupted run from its last completed epoch (optimizer state included), or returns the result
of a finished one without training. A different configuration is refused
(:class:`TrainingStateError`).

The data sets are built by the caller (``mammoseg.training.dataset.make_dataset`` with
``batch_size``, ``augment``, ``lesion_oversample`` and ``seed`` of :class:`TrainConfig`).
Keras is imported inside the functions, so :class:`TrainConfig` can be used without it.

The learning rate (``TrainConfig.lr_schedule``): ``"plateau"`` halves it after ``lr_patience``
epochs without a validation gain (``ReduceLROnPlateau``); ``"poly"`` sets it at the start of every
epoch to ``learning_rate · (1 − p)^poly_exponent`` (nnU-Net's schedule), ``p`` the share of the
training done before that epoch: ``epoch / epochs``, or what the caller's ``progress`` says (the
share of a time budget spent, so that the rate reaches ~0 when the budget ends).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mammoseg.model.unet import UNetConfig
from mammoseg.training.augment import AugmentConfig

if TYPE_CHECKING:
    import keras

LossName = Literal["focal", "dice", "focal_dice"]
PrecisionMode = Literal["auto", "float32", "mixed_float16", "mixed_bfloat16"]
JitMode = Literal["auto", "on", "off"]
DistributionMode = Literal["auto", "none", "data_parallel"]
LrSchedule = Literal["plateau", "poly"]
#: TrainConfig fields that say *how* to run, not *what* to train: a run interrupted on one
#: machine may resume on another (more GPUs, XLA off) without being refused.
HARDWARE_FIELDS = ("jit_compile", "distribution")

MONITOR = "val_dice"
STATE_FILE = "state.json"
BEST_FILE = "best.keras"


class TrainingStateError(RuntimeError):
    """``workdir`` holds a training run that cannot be resumed with the given configuration."""


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    ``loss``: ``"focal"`` (:class:`~mammoseg.model.losses.BinaryFocalLoss`), ``"dice"`` or
    ``"focal_dice"`` (focal + ``dice_weight`` · Dice; the default, because focal alone tends to
    collapse to empty predictions on small lesions). ``mixed_precision="auto"`` uses
    ``mixed_float16`` only when the Keras backend sees a GPU, else float32. ``threshold`` is the
    probability cut-off of the monitoring metrics. ``lr_schedule`` / ``poly_exponent``: see the
    module docstring (``lr_patience`` and ``lr_factor`` apply to ``"plateau"`` only). ``batch_size``, ``augment`` (None = no
    augmentation) and ``lesion_oversample`` are for building the training data set.
    ``tensorboard`` writes ``workdir/tb`` and needs the ``tensorboard`` package (not a
    dependency of the project).

    GPU knobs (see :func:`resolve_distribution`): ``jit_compile`` ``"auto"`` lets Keras compile
    the train step with XLA where it helps (JAX always; TensorFlow on a GPU without
    ``tf.distribute``; never on a CPU, where XLA is slower), ``"on"``/``"off"`` force it.
    ``distribution`` ``"data_parallel"`` replicates the model on every visible GPU and splits
    each batch between them (``keras.distribution.DataParallel`` on JAX,
    ``tf.distribute.MirroredStrategy`` on TensorFlow); ``"auto"`` does so when more than one GPU
    is visible; ``batch_size`` stays the global batch.
    """

    epochs: int = 20
    batch_size: int = 8
    learning_rate: float = 1e-3
    loss: LossName = "focal_dice"
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    dice_weight: float = 1.0
    early_stopping_patience: int = 5
    lr_patience: int = 2
    lr_factor: float = 0.5
    min_learning_rate: float = 1e-6
    lr_schedule: LrSchedule = "plateau"
    poly_exponent: float = 0.9
    mixed_precision: PrecisionMode = "auto"
    seed: int = 0
    lesion_oversample: float = 0.0
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    threshold: float = 0.5
    tensorboard: bool = False
    jit_compile: JitMode = "auto"
    distribution: DistributionMode = "auto"

    def __post_init__(self) -> None:
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1 (got {self.epochs})")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1 (got {self.batch_size})")
        if not self.learning_rate > 0:
            problems.append(f"learning_rate must be > 0 (got {self.learning_rate})")
        if self.loss not in ("focal", "dice", "focal_dice"):
            problems.append(f"loss must be focal, dice or focal_dice (got {self.loss!r})")
        if self.mixed_precision not in ("auto", "float32", "mixed_float16", "mixed_bfloat16"):
            problems.append(f"unknown mixed_precision mode {self.mixed_precision!r}")
        if self.early_stopping_patience < 1 or self.lr_patience < 1:
            problems.append("early_stopping_patience and lr_patience must be >= 1")
        if not 0 < self.lr_factor < 1:
            problems.append(f"lr_factor must be in (0, 1) (got {self.lr_factor})")
        if self.lr_schedule not in ("plateau", "poly"):
            problems.append(f"lr_schedule must be plateau or poly (got {self.lr_schedule!r})")
        if not self.poly_exponent > 0:
            problems.append(f"poly_exponent must be > 0 (got {self.poly_exponent})")
        if not 0 <= self.lesion_oversample < 1:
            problems.append(f"lesion_oversample must be in [0, 1) (got {self.lesion_oversample})")
        if not 0 < self.threshold < 1:
            problems.append(f"threshold must be in (0, 1) (got {self.threshold})")
        if self.jit_compile not in ("auto", "on", "off"):
            problems.append(f"jit_compile must be auto, on or off (got {self.jit_compile!r})")
        if self.distribution not in ("auto", "none", "data_parallel"):
            problems.append(f"distribution must be auto, none or data_parallel (got {self.distribution!r})")
        if problems:
            raise ValueError("invalid TrainConfig: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict` (``augment`` may be a dict or None); unknown keys refused."""
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s): {', '.join(unknown)}")
        values = dict(data)
        if isinstance(values.get("augment"), dict):
            values["augment"] = AugmentConfig.from_dict(values["augment"])
        return cls(**values)


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train`.

    ``history``: one dict per completed epoch (all epochs, also those before a resume) with
    ``epoch`` (1-based), ``iterations`` (optimizer steps so far), ``seconds``, ``loss``,
    ``dice``, ``iou``, ``val_loss``, ``val_dice``, ``val_iou``, ``learning_rate``.
    ``resumed_from_epoch``: epochs already completed when this call started (0 = fresh start).
    ``best_epoch``: 1-based epoch of ``best_model_path`` (highest ``val_dice``, first if tied).
    """

    best_model_path: Path
    history: list[dict[str, float]]
    epochs_run: int
    resumed_from_epoch: int
    best_epoch: int
    best_val_dice: float
    stopped_early: bool


# --- precision ---------------------------------------------------------------------------


def gpu_visible() -> bool:
    """Whether the active Keras backend sees a GPU."""
    import keras

    backend = keras.config.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    if backend == "torch":
        import torch

        return bool(torch.cuda.is_available())
    return False


def visible_gpus() -> int:
    """How many GPUs the active Keras backend sees."""
    import keras

    backend = keras.config.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return len(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return sum(1 for d in jax.devices() if d.platform == "gpu")
    if backend == "torch":
        import torch

        return int(torch.cuda.device_count())
    return 0


def resolve_distribution(mode: DistributionMode, gpus: int | None = None) -> Literal["none", "data_parallel"]:
    """``"auto"``: data-parallel when more than one GPU is visible (``gpus``, counted when None)."""
    if mode == "auto":
        return "data_parallel" if (visible_gpus() if gpus is None else gpus) > 1 else "none"
    return mode


@contextmanager
def distribution_scope(mode: DistributionMode) -> Iterator[None]:
    """Build, compile and fit inside this block to train data-parallel over the visible GPUs
    (or every visible device when there is no GPU); a no-op for ``"none"``."""
    import keras

    if resolve_distribution(mode) == "none":
        yield
        return
    backend = keras.config.backend()
    if backend == "jax":
        devices = keras.distribution.list_devices("gpu") if visible_gpus() else keras.distribution.list_devices()
        with keras.distribution.DataParallel(devices=devices).scope():
            yield
    elif backend == "tensorflow":
        import tensorflow as tf

        with tf.distribute.MirroredStrategy().scope():
            yield
    else:
        raise ValueError(f"distribution='data_parallel' needs the jax or tensorflow backend (this is {backend})")


def resolve_precision(mode: PrecisionMode) -> str:
    """The Keras dtype policy name for ``mode`` (``"auto"``: mixed_float16 on GPU, else float32)."""
    if mode == "auto":
        return "mixed_float16" if gpu_visible() else "float32"
    return mode


@contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Set the global Keras dtype policy for the block, then restore the previous one."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


# --- model ------------------------------------------------------------------------------


def make_loss(config: TrainConfig, heads: int = 0) -> keras.losses.Loss:
    """The configured loss; wrapped in :class:`~mammoseg.model.losses.DeepSupervisionLoss` for a
    model with ``heads`` auxiliary outputs."""
    from mammoseg.model.losses import DeepSupervisionLoss, deep_supervision_weights

    inner = _base_loss(config)
    return DeepSupervisionLoss(inner, deep_supervision_weights(heads)) if heads else inner


def _base_loss(config: TrainConfig) -> keras.losses.Loss:
    from mammoseg.model.losses import BinaryFocalLoss, DiceLoss, FocalDiceLoss

    if config.loss == "focal":
        return BinaryFocalLoss(alpha=config.focal_alpha, gamma=config.focal_gamma)
    if config.loss == "dice":
        return DiceLoss()
    return FocalDiceLoss(
        focal_weight=1.0,
        dice_weight=config.dice_weight,
        alpha=config.focal_alpha,
        gamma=config.focal_gamma,
    )


def build_compiled_model(model_config: UNetConfig, train_config: TrainConfig) -> keras.Model:
    """U-Net compiled with Adam, the configured loss and the ``dice`` / ``iou`` metrics.

    Built under the resolved precision policy (restored afterwards); with ``mixed_float16``
    Keras wraps the optimizer in a ``LossScaleOptimizer``.
    """
    import keras

    from mammoseg.model.metrics import DiceScore, IoUScore
    from mammoseg.model.unet import build_unet

    with dtype_policy(resolve_precision(train_config.mixed_precision)):
        model = build_unet(model_config)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=train_config.learning_rate),
        loss=make_loss(train_config, model_config.deep_supervision),
        metrics=[
            DiceScore(threshold=train_config.threshold, name="dice"),
            IoUScore(threshold=train_config.threshold, name="iou"),
        ],
        jit_compile={"auto": "auto", "on": True, "off": False}[train_config.jit_compile],
    )
    return model


# --- state ------------------------------------------------------------------------------


def _fingerprint(model_config: UNetConfig, train_config: TrainConfig) -> dict[str, Any]:
    train = {k: v for k, v in train_config.to_dict().items() if k not in HARDWARE_FIELDS}
    return json.loads(json.dumps({"model": model_config.to_dict(), "train": train}))


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_state(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise TrainingStateError(f"{path} is unreadable ({exc}); use a fresh workdir") from None


def _backup_epoch(backup_dir: Path) -> int:
    """Epochs completed according to ``BackupAndRestore``'s metadata (0 when there is none)."""
    meta = backup_dir / "training_metadata.json"
    if not meta.exists():
        return 0
    try:
        return int(json.loads(meta.read_text(encoding="utf-8"))["epoch"])
    except (OSError, ValueError, KeyError) as exc:
        raise TrainingStateError(f"{meta} is unreadable ({exc}); delete {backup_dir}") from None


def _to_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _finite_or_none(value: Any) -> float | None:
    """A monitor's ``best`` as JSON: None while unset (or ±inf)."""
    if value is None:
        return None
    f = _to_float(value)
    return f if math.isfinite(f) else None


def _result(
    workdir: Path, history: list[dict[str, float]], epochs: int, resumed: int
) -> TrainResult:
    if not history:
        raise TrainingStateError(f"no completed epoch recorded in {workdir}")
    if not (workdir / BEST_FILE).exists():
        raise TrainingStateError(
            f"no checkpoint {BEST_FILE} in {workdir}: val_dice was never logged or never finite"
        )
    scores = [h.get(MONITOR, math.nan) for h in history]
    valid = [i for i, s in enumerate(scores) if not math.isnan(s)]
    best = max(valid, key=lambda i: (scores[i], -i)) if valid else len(history) - 1
    return TrainResult(
        best_model_path=workdir / BEST_FILE,
        history=history,
        epochs_run=len(history),
        resumed_from_epoch=resumed,
        best_epoch=int(history[best]["epoch"]),
        best_val_dice=scores[best],
        stopped_early=len(history) < epochs,
    )


# --- callbacks --------------------------------------------------------------------------


def poly_learning_rate(learning_rate: float, progress: float, exponent: float, floor: float = 0.0) -> float:
    """nnU-Net's poly schedule: ``learning_rate · (1 − progress)^exponent``, ``progress`` clipped
    to [0, 1], never below ``floor``."""
    share = min(max(float(progress), 0.0), 1.0)
    return max(learning_rate * (1.0 - share) ** exponent, floor)


def _callback_classes() -> tuple[type, type, type]:
    """Define the callback classes on first use (they subclass a Keras class)."""
    import keras

    class RunState(keras.callbacks.Callback):
        """Writes ``state.json`` each epoch; on resume puts back history and callback state."""

        def __init__(
            self,
            path: Path,
            state: dict[str, Any],
            checkpoint: Any,
            early_stopping: Any,
            reduce_lr: Any,
            best_path: Path,
        ) -> None:
            super().__init__()
            self.path, self.state, self.best_path = path, state, best_path
            self.checkpoint, self.early_stopping, self.reduce_lr = (
                checkpoint,
                early_stopping,
                reduce_lr,
            )
            self._epoch_start = time.monotonic()

        def on_train_begin(self, logs: dict | None = None) -> None:
            # Runs after the other callbacks' on_train_begin, which reset their state.
            if not self.state["epochs"]:
                return
            saved = self.state["epochs"][-1]["callbacks"]
            es, rl = self.early_stopping, self.reduce_lr
            self.checkpoint.best = saved["best"]
            es.best, es.wait, es.best_epoch = (
                saved["es_best"],
                saved["es_wait"],
                saved["best_epoch"],
            )
            rl.best, rl.wait = saved["lr_best"], saved["lr_wait"]
            rl.cooldown_counter = saved["lr_cooldown"]
            if saved["es_best"] is not None and self.best_path.exists():
                best = keras.saving.load_model(self.best_path, compile=False)
                es.best_weights = best.get_weights()

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self._epoch_start = time.monotonic()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            row: dict[str, float] = {
                "epoch": epoch + 1,
                "iterations": int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)),
                "seconds": round(time.monotonic() - self._epoch_start, 3),
            }
            row.update({k: _to_float(v) for k, v in (logs or {}).items()})
            es, rl = self.early_stopping, self.reduce_lr
            self.state["epochs"].append(
                {
                    "logs": row,
                    "callbacks": {
                        "best": _finite_or_none(self.checkpoint.best),
                        "es_best": _finite_or_none(es.best),
                        "lr_best": _finite_or_none(rl.best),
                        "best_epoch": int(es.best_epoch),
                        "es_wait": int(es.wait),
                        "lr_wait": int(rl.wait),
                        "lr_cooldown": int(rl.cooldown_counter),
                    },
                }
            )
            _write_json_atomic(self.path, self.state)

        def on_train_end(self, logs: dict | None = None) -> None:
            self.state["finished"] = True
            _write_json_atomic(self.path, self.state)

    class PolyLR(keras.callbacks.Callback):
        """Sets the optimizer's rate from :func:`poly_learning_rate` at the start of each epoch
        (``progress(epoch_0_based)`` the share of training done) and logs it as ``learning_rate``."""

        def __init__(self, config: TrainConfig, progress: Callable[[int], float]) -> None:
            super().__init__()
            self.config, self.progress, self.rate = config, progress, config.learning_rate

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            c = self.config
            self.rate = poly_learning_rate(c.learning_rate, self.progress(epoch), c.poly_exponent, c.min_learning_rate)
            self.model.optimizer.learning_rate = self.rate

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if logs is not None:
                logs["learning_rate"] = self.rate

    class EpochHook(keras.callbacks.Callback):
        """Calls ``fn(epoch_1_based, logs_as_floats)`` after each epoch (after the backup); a
        ``True`` return value stops training after this epoch (e.g. a time budget)."""

        def __init__(self, fn: Callable[[int, dict], bool | None]) -> None:
            super().__init__()
            self.fn = fn

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if self.fn(epoch + 1, {k: _to_float(v) for k, v in (logs or {}).items()}):
                self.model.stop_training = True

    return RunState, EpochHook, PolyLR


# --- entry point ------------------------------------------------------------------------


def train(
    model_config: UNetConfig,
    train_config: TrainConfig,
    train_ds: Any,
    val_ds: Any,
    workdir: Path,
    *,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    progress: Callable[[int], float] | None = None,
    verbose: int = 0,
) -> TrainResult:
    """Train a U-Net, resuming an interrupted run in ``workdir`` (see the module docstring).

    ``train_ds`` / ``val_ds``: anything ``model.fit`` accepts yielding ``(image, mask)`` batches
    (a ``tf.data.Dataset`` from :func:`~mammoseg.training.dataset.make_dataset`).
    ``on_epoch_end(epoch, logs)`` is called with the 1-based epoch number and the epoch's logs
    (``loss``, ``dice``, ``iou``, ``val_*``, ``learning_rate``) once the epoch is backed up, so
    an exception raised from it interrupts training resumably. ``progress(epoch)``: the share
    of the training done before the 0-based ``epoch``, for the ``"poly"`` schedule (default
    ``epoch / epochs``). Sets the global random seeds
    (``keras.utils.set_random_seed``). Returns paths and history only, never the model.
    """
    import keras

    if val_ds is None:
        raise ValueError("train() needs a validation data set: checkpoints are chosen on val_dice")
    if train_config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise RuntimeError(
            "TrainConfig.tensorboard is set but the 'tensorboard' package is not installed; "
            "install it or turn the flag off"
        )
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    state_path, backup_dir = workdir / STATE_FILE, workdir / "backup"

    fingerprint = _fingerprint(model_config, train_config)
    state = _read_state(state_path)
    if state is not None and state.get("config") != fingerprint:
        raise TrainingStateError(
            f"{workdir} holds a training run with a different configuration; "
            "use a fresh workdir (or delete this one) to train with the new one"
        )
    if state is not None and state.get("finished"):
        history = [e["logs"] for e in state["epochs"]]
        return _result(workdir, history, train_config.epochs, resumed=len(history))

    resumed = _backup_epoch(backup_dir)
    if state is None:
        state = {"config": fingerprint, "finished": False, "epochs": []}
    # The state may be one epoch ahead of the backup (interrupted between the two writes):
    # keep only the epochs the backup holds, they are the ones training continues from.
    state["epochs"] = [e for e in state["epochs"] if e["logs"]["epoch"] <= resumed]
    _write_json_atomic(state_path, state)

    keras.utils.set_random_seed(train_config.seed)
    with distribution_scope(train_config.distribution):
        return _fit(model_config, train_config, train_ds, val_ds, workdir, state, resumed, on_epoch_end,
                    progress or (lambda epoch: epoch / train_config.epochs), verbose)


def _fit(
    model_config: UNetConfig, train_config: TrainConfig, train_ds: Any, val_ds: Any, workdir: Path,
    state: dict[str, Any], resumed: int, on_epoch_end: Callable[[int, dict], None] | None,
    progress: Callable[[int], float], verbose: int,
) -> TrainResult:
    import keras

    state_path, best_path, backup_dir = workdir / STATE_FILE, workdir / BEST_FILE, workdir / "backup"
    model = build_compiled_model(model_config, train_config)

    checkpoint = keras.callbacks.ModelCheckpoint(
        best_path, monitor=MONITOR, mode="max", save_best_only=True
    )
    early_stopping = keras.callbacks.EarlyStopping(
        monitor=MONITOR,
        mode="max",
        patience=train_config.early_stopping_patience,
        restore_best_weights=True,
    )
    reduce_lr = keras.callbacks.ReduceLROnPlateau(
        monitor=MONITOR,
        mode="max",
        factor=train_config.lr_factor,
        patience=train_config.lr_patience,
        min_lr=train_config.min_learning_rate,
    )
    run_state_cls, hook_cls, poly_cls = _callback_classes()
    # Order matters: the LR callback adds learning_rate to the logs before CSVLogger and
    # RunState record them; RunState restores after the others reset in on_train_begin; the
    # backup is written before the user's hook can interrupt. (RunState keeps the plateau
    # callback's state with either schedule, so a state file has one shape.)
    callbacks: list[Any] = [
        checkpoint,
        early_stopping,
        reduce_lr if train_config.lr_schedule == "plateau" else poly_cls(train_config, progress),
        keras.callbacks.CSVLogger(str(workdir / "history.csv"), append=True),
        run_state_cls(state_path, state, checkpoint, early_stopping, reduce_lr, best_path),
        keras.callbacks.BackupAndRestore(str(backup_dir), double_checkpoint=True),
    ]
    if train_config.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(str(workdir / "tb")))
    if on_epoch_end is not None:
        callbacks.append(hook_cls(on_epoch_end))

    model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=train_config.epochs,
        callbacks=callbacks,
        shuffle=False,  # the data set shuffles itself (make_dataset)
        verbose=verbose,
    )
    history = [e["logs"] for e in state["epochs"]]
    return _result(workdir, history, train_config.epochs, resumed=resumed)
