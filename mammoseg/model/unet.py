"""The U-Net: a classic encoder–decoder with skip connections, built from ``keras.layers`` only.

Backend-agnostic (TensorFlow, JAX, PyTorch): no TensorFlow-specific call in here; no I/O.
Input: ``[batch, S, S, channels]`` float images in 0..1. Output: ``[batch, S, S, 1]`` per-pixel
lesion probability from a sigmoid computed in float32 (so a ``mixed_float16`` policy is safe).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # keras pulls a backend (TensorFlow here): import it only when building
    import keras


@dataclass(frozen=True)
class UNetConfig:
    """Shape of the network.

    ``input_size`` (pixels, square) must be divisible by ``2**depth`` (one 2×2 max-pool per
    level). Level ``i`` (0-based) has ``base_filters * 2**i`` filters; the bottleneck has
    ``base_filters * 2**depth``. ``dropout`` is applied after every conv block (0 = none).
    """

    input_size: int = 512
    channels: int = 1
    base_filters: int = 16
    depth: int = 4
    dropout: float = 0.1
    batch_norm: bool = True
    kernel_size: int = 3

    def __post_init__(self) -> None:
        problems = []
        if self.depth < 1:
            problems.append(f"depth must be >= 1 (got {self.depth})")
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


def _conv_block(x: Any, filters: int, config: UNetConfig, name: str) -> Any:
    """Two (Conv2D → [BatchNorm] → ReLU) then Dropout; 'same' padding keeps the size."""
    from keras import layers

    for i in (1, 2):
        x = layers.Conv2D(
            filters,
            config.kernel_size,
            padding="same",
            use_bias=not config.batch_norm,
            kernel_initializer="he_normal",
            name=f"{name}_conv{i}",
        )(x)
        if config.batch_norm:
            x = layers.BatchNormalization(name=f"{name}_bn{i}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
    if config.dropout > 0:
        x = layers.Dropout(config.dropout, name=f"{name}_dropout")(x)
    return x


def build_unet(config: UNetConfig | None = None) -> keras.Model:
    """Build (not compile) a U-Net for ``config``.

    Layers are named ``enc{i}_*``, ``pool{i}``, ``bottleneck_*``, ``up{i}``, ``skip{i}``,
    ``dec{i}_*`` and ``mask`` (the final 1×1 conv + sigmoid, float32). The dtype policy in force
    (``keras.config.set_dtype_policy``) applies to every layer except ``mask``.
    """
    import keras
    from keras import layers

    config = config or UNetConfig()
    inputs = keras.Input(
        shape=(config.input_size, config.input_size, config.channels), name="image"
    )
    x = inputs
    skips = []
    for level in range(config.depth):
        x = _conv_block(x, config.base_filters * 2**level, config, f"enc{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = _conv_block(x, config.base_filters * 2**config.depth, config, "bottleneck")
    for level in reversed(range(config.depth)):
        filters = config.base_filters * 2**level
        x = layers.Conv2DTranspose(filters, 2, strides=2, padding="same", name=f"up{level}")(x)
        x = layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        x = _conv_block(x, filters, config, f"dec{level}")
    outputs = layers.Conv2D(1, 1, activation="sigmoid", dtype="float32", name="mask")(x)
    return keras.Model(inputs, outputs, name=f"unet_d{config.depth}_f{config.base_filters}")
