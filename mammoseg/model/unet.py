"""The U-Net: a classic encoder–decoder with skip connections, built from ``keras.layers`` only.

Backend-agnostic (TensorFlow, JAX, PyTorch): no TensorFlow-specific call in here; no I/O.
Input: ``[batch, S, S, channels]`` float images in 0..1. Output: ``[batch, S, S, 1]`` per-pixel
lesion probability from a sigmoid computed in float32 (so a ``mixed_float16`` policy is safe).
Optionally the first layer standardises every image over its breast pixels
(:class:`mammoseg.model.layers.BreastNormalization`), so the input scaling travels with the model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # keras pulls a backend (TensorFlow here): import it only when building
    import keras


Norm = Literal["batch", "group", "instance", "none"]
InputNorm = Literal["none", "breast", "breast_robust"]
_NORMS = ("batch", "group", "instance", "none")
_INPUT_NORMS = ("none", "breast", "breast_robust")


@dataclass(frozen=True)
class UNetConfig:
    """Shape of the network.

    ``input_size`` (pixels, square) must be divisible by ``2**depth`` (one 2×2 max-pool per
    level). Level ``i`` (0-based) has ``base_filters * 2**i`` filters; the bottleneck has
    ``base_filters * 2**depth``. ``dropout`` is applied after every conv block (0 = none).

    * ``norm``: normalisation after every conv. ``"batch"`` (BatchNormalization, the default),
      ``"group"`` (GroupNormalization with the largest divisor of the layer's filters that is
      ``<= norm_groups`` as group count: independent of the batch, so it behaves the same with
      the small batches 512-px images force), ``"instance"`` (GroupNormalization with one group
      per filter), ``"none"``. Convs carry a bias only with ``"none"``.
    * ``batch_norm``: the legacy switch, kept so configs written before ``norm`` existed load and
      build the same model. ``False`` means "no normalisation": it turns ``norm="batch"`` into
      ``"none"`` and contradicts ``"group"`` / ``"instance"`` (an error).
      :attr:`normalization` is the normalisation actually built.
    * ``input_norm``: ``"breast"`` puts :class:`~mammoseg.model.layers.BreastNormalization`
      right after the input (per-image standardisation over the breast pixels, the pixels > 0),
      so digital and scanned-film images reach the first conv on one scale;
      ``"breast_robust"`` the same layer on the breast's median and interquartile range
      (``statistic="median_iqr"``: a large lesion no longer darkens the rest of its image);
      ``"none"`` feeds the 0..1 image as is.

    * ``deep_supervision``: ``k`` auxiliary heads (0: none) on the decoder levels 1..k (1/2,
      1/4, ... of the input side), each a 1×1 conv brought back to the input size (bilinear,
      on the logits) then a sigmoid. The training model's output then has ``1 + k`` channels,
      the mask first (``DeepSupervisionLoss`` scores every head against the same truth; the
      metrics score channel 0); :func:`inference_model` drops the heads.

    Fields added later default to the earlier behaviour, so :meth:`from_dict` accepts the dicts
    older versions wrote.
    """

    input_size: int = 512
    channels: int = 1
    base_filters: int = 16
    depth: int = 4
    dropout: float = 0.1
    batch_norm: bool = True
    kernel_size: int = 3
    norm: Norm = "batch"
    norm_groups: int = 8
    input_norm: InputNorm = "none"
    deep_supervision: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.norm not in _NORMS:
            problems.append(f"norm must be one of {', '.join(_NORMS)} (got {self.norm!r})")
        elif not self.batch_norm and self.norm in ("group", "instance"):
            problems.append(
                f"batch_norm=False (legacy: no normalisation) contradicts norm={self.norm!r}; "
                "drop batch_norm and set norm alone"
            )
        if self.norm_groups < 1:
            problems.append(f"norm_groups must be >= 1 (got {self.norm_groups})")
        if self.input_norm not in _INPUT_NORMS:
            problems.append(
                f"input_norm must be one of {', '.join(_INPUT_NORMS)} (got {self.input_norm!r})"
            )
        if self.depth < 1:
            problems.append(f"depth must be >= 1 (got {self.depth})")
        if not 0 <= self.deep_supervision < max(self.depth, 1):
            problems.append(f"deep_supervision must be in [0, depth) (got {self.deep_supervision})")
        if self.input_size < 1 or (self.depth >= 1 and self.input_size % (2**self.depth)):
            problems.append(
                f"input_size {self.input_size} must be a positive multiple of 2**depth "
                f"= {2 ** max(self.depth, 0)}"
            )
        if self.channels < 1:
            problems.append(f"channels must be >= 1 (got {self.channels})")
        if self.base_filters < 1:
            problems.append(f"base_filters must be >= 1 (got {self.base_filters})")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1) (got {self.dropout})")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            problems.append(f"kernel_size must be a positive odd number (got {self.kernel_size})")
        if problems:
            raise ValueError("invalid UNetConfig: " + "; ".join(problems))

    @property
    def normalization(self) -> Norm:
        """The normalisation :func:`build_unet` builds (``norm``, or ``"none"`` for the legacy
        ``batch_norm=False``)."""
        return self.norm if self.batch_norm else "none"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UNetConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a typo must not pass silently)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown UNetConfig field(s): {', '.join(unknown)}")
        return cls(**data)


def _groups(filters: int, most: int) -> int:
    """The largest divisor of ``filters`` that is ``<= most`` (GroupNormalization needs one)."""
    return max(g for g in range(1, min(most, filters) + 1) if filters % g == 0)


def _norm_layer(filters: int, config: UNetConfig, block: str, i: int) -> Any:
    """The normalisation after conv ``i`` of ``block`` (``{block}_bn|gn|in{i}``), or None."""
    from keras import layers

    kind = config.normalization
    if kind == "batch":
        return layers.BatchNormalization(name=f"{block}_bn{i}")
    if kind == "group":
        groups = _groups(filters, config.norm_groups)
        return layers.GroupNormalization(groups=groups, name=f"{block}_gn{i}")
    if kind == "instance":
        return layers.GroupNormalization(groups=filters, name=f"{block}_in{i}")
    return None


def _conv_block(x: Any, filters: int, config: UNetConfig, name: str) -> Any:
    """Two (Conv2D → [normalisation] → ReLU) then Dropout; 'same' padding keeps the size."""
    from keras import layers

    for i in (1, 2):
        x = layers.Conv2D(
            filters,
            config.kernel_size,
            padding="same",
            use_bias=config.normalization == "none",
            kernel_initializer="he_normal",
            name=f"{name}_conv{i}",
        )(x)
        norm = _norm_layer(filters, config, name, i)
        if norm is not None:
            x = norm(x)
        x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
    if config.dropout > 0:
        x = layers.Dropout(config.dropout, name=f"{name}_dropout")(x)
    return x


def build_unet(config: UNetConfig | None = None) -> keras.Model:
    """Build (not compile) a U-Net for ``config``.

    Layers are named ``input_norm`` (with ``input_norm="breast"``), ``enc{i}_*``, ``pool{i}``,
    ``bottleneck_*``, ``up{i}``, ``skip{i}``, ``dec{i}_*`` and ``mask`` (the final 1×1 conv +
    sigmoid, float32); with deep supervision also ``aux{i}_*`` and ``deep_supervision`` (the
    mask and the auxiliary heads concatenated, the model's output). The dtype policy in force (``keras.config.set_dtype_policy``) applies to
    every layer except ``input_norm`` and ``mask``, which compute in float32.
    """
    import keras
    from keras import layers

    config = config or UNetConfig()
    inputs = keras.Input(
        shape=(config.input_size, config.input_size, config.channels), name="image"
    )
    x = inputs
    if config.input_norm != "none":
        from mammoseg.model.layers import BreastNormalization

        statistic = "median_iqr" if config.input_norm == "breast_robust" else "mean_std"
        x = BreastNormalization(statistic=statistic, dtype="float32", name="input_norm")(x)
    skips = []
    for level in range(config.depth):
        x = _conv_block(x, config.base_filters * 2**level, config, f"enc{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = _conv_block(x, config.base_filters * 2**config.depth, config, "bottleneck")
    aux = []
    for level in reversed(range(config.depth)):
        filters = config.base_filters * 2**level
        x = layers.Conv2DTranspose(filters, 2, strides=2, padding="same", name=f"up{level}")(x)
        x = layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        x = _conv_block(x, filters, config, f"dec{level}")
        if 0 < level <= config.deep_supervision:
            a = layers.Conv2D(1, 1, dtype="float32", name=f"aux{level}_logits")(x)
            a = layers.UpSampling2D(2**level, interpolation="bilinear", dtype="float32", name=f"aux{level}_up")(a)
            aux.insert(0, layers.Activation("sigmoid", dtype="float32", name=f"aux{level}_prob")(a))
    outputs = layers.Conv2D(1, 1, activation="sigmoid", dtype="float32", name="mask")(x)
    if aux:
        outputs = layers.Concatenate(dtype="float32", name="deep_supervision")([outputs, *aux])
    return keras.Model(inputs, outputs, name=f"unet_d{config.depth}_f{config.base_filters}")


def inference_model(model: keras.Model) -> keras.Model:
    """``model`` without its deep-supervision heads (the mask alone); other models as they are."""
    import keras

    if not any(layer.name == "deep_supervision" for layer in model.layers):
        return model
    return keras.Model(model.inputs, model.get_layer("mask").output, name=model.name)
