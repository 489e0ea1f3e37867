"""Paired image/mask augmentation for the tf.data input pipeline.

One random affine map (flip, rotation, zoom, shift) is drawn per sample and applied **once** to
the image and the mask stacked as two channels of one tensor (``ImageProjectiveTransformV3``,
bilinear, zeros outside), so the two can never drift apart. The mask channel is re-thresholded
at 0.5 afterwards, so it stays exactly 0/1. Brightness and contrast touch the image channel only.

Randomness is *stateless*: the same ``seed`` tensor gives the same output, on any machine.
:class:`AugmentConfig` imports nothing heavy; TensorFlow is imported inside the functions.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import tensorflow as tf

FlipAxis = Literal["vertical", "horizontal", "both"]


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random augmentation (each drawn uniformly, independently per sample).

    * ``flip``: flip with probability 0.5 along ``flip_axis`` (for ``"both"``, each axis
      independently). The default is ``"vertical"`` (up/down): preprocessing puts every breast
      on the same canonical side, so a left/right flip would show the model chest walls on the
      side it never sees at inference.
    * ``rotate_deg``: rotation angle in ``[-rotate_deg, +rotate_deg]`` degrees, about the centre.
    * ``shift``: translation in ``[-shift, +shift]`` × image size, per axis.
    * ``zoom``: scale factor in ``[1 - zoom, 1 + zoom]`` (> 1 enlarges the content).
    * ``brightness``: additive offset in ``[-brightness, +brightness]`` (image in 0..1).
    * ``contrast``: factor in ``[1 - contrast, 1 + contrast]`` about the image mean.
    * ``seed``: seed of the per-sample random stream in :func:`mammoseg.training.dataset`.

    The image is clipped to 0..1 afterwards; pixels moved in from outside are 0 (background).
    """

    flip: bool = True
    flip_axis: FlipAxis = "vertical"
    rotate_deg: float = 15.0
    shift: float = 0.1
    zoom: float = 0.1
    brightness: float = 0.1
    contrast: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.flip_axis not in ("vertical", "horizontal", "both"):
            problems.append(
                f"flip_axis must be vertical, horizontal or both (got {self.flip_axis!r})"
            )
        if not 0 <= self.rotate_deg <= 180:
            problems.append(f"rotate_deg must be in [0, 180] (got {self.rotate_deg})")
        if not 0 <= self.shift < 1:
            problems.append(f"shift must be in [0, 1) (got {self.shift})")
        if not 0 <= self.zoom < 1:
            problems.append(f"zoom must be in [0, 1) (got {self.zoom})")
        if not 0 <= self.brightness <= 1:
            problems.append(f"brightness must be in [0, 1] (got {self.brightness})")
        if not 0 <= self.contrast < 1:
            problems.append(f"contrast must be in [0, 1) (got {self.contrast})")
        if problems:
            raise ValueError("invalid AugmentConfig: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AugmentConfig:
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown AugmentConfig field(s): {', '.join(unknown)}")
        return cls(**data)


# Positions in the per-sample uniform draw.
_FLIP_X, _FLIP_Y, _ANGLE, _ZOOM, _SHIFT_X, _SHIFT_Y, _BRIGHT, _CONTRAST = range(8)


def _uniforms(seed: tf.Tensor) -> tf.Tensor:
    import tensorflow as tf

    return tf.random.stateless_uniform([8], seed=tf.cast(seed, tf.int64), dtype=tf.float32)


def affine_transform(config: AugmentConfig, size: int, seed: tf.Tensor) -> tf.Tensor:
    """The random affine map for one sample as the 8-vector ``ImageProjectiveTransformV3`` takes.

    The vector maps *output* pixel ``(x, y)`` (x = column, y = row, origin at the top-left pixel
    centre) to the *input* location it samples: ``x_in = a0·x + a1·y + a2``,
    ``y_in = b0·x + b1·y + b2`` (the last two entries, the projective part, are 0).
    """
    import tensorflow as tf

    u = _uniforms(seed)
    one = tf.constant(1.0)
    fx, fy = one, one
    if config.flip and config.flip_axis in ("horizontal", "both"):
        fx = tf.where(u[_FLIP_X] < 0.5, -one, one)
    if config.flip and config.flip_axis in ("vertical", "both"):
        fy = tf.where(u[_FLIP_Y] < 0.5, -one, one)
    theta = (2.0 * u[_ANGLE] - 1.0) * (config.rotate_deg * math.pi / 180.0)
    zoom = 1.0 + (2.0 * u[_ZOOM] - 1.0) * config.zoom
    tx = (2.0 * u[_SHIFT_X] - 1.0) * config.shift * size
    ty = (2.0 * u[_SHIFT_Y] - 1.0) * config.shift * size

    # Forward (content) map: out = c + Z·R(θ)·F·(in - c) + t. Its inverse: in = M·out + off with
    # M = F·R(-θ)/Z and off = c - M·(c + t).
    cos, sin = tf.cos(theta), tf.sin(theta)
    m00, m01 = fx * cos / zoom, fx * sin / zoom
    m10, m11 = -fy * sin / zoom, fy * cos / zoom
    c = (size - 1) / 2.0
    off_x = c - (m00 * (c + tx) + m01 * (c + ty))
    off_y = c - (m10 * (c + tx) + m11 * (c + ty))
    zero = tf.constant(0.0)
    return tf.stack([m00, m01, off_x, m10, m11, off_y, zero, zero])


def augment_pair(
    image: tf.Tensor, mask: tf.Tensor, config: AugmentConfig, seed: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Augment one sample: ``image`` float32 ``[S, S, 1]`` in 0..1, ``mask`` float32 0/1 same shape.

    ``seed`` is an int tensor of shape ``[2]`` (stateless randomness). Returns new tensors of the
    same shapes; the mask is exactly 0/1; the inputs are not modified.
    """
    import tensorflow as tf

    size = int(image.shape[0])
    stacked = tf.concat([tf.cast(image, tf.float32), tf.cast(mask, tf.float32)], axis=-1)
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=stacked[tf.newaxis],
        transforms=affine_transform(config, size, seed)[tf.newaxis],
        output_shape=tf.constant([size, size], tf.int32),
        fill_value=tf.constant(0.0),
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )[0]
    out_image = warped[..., :1]
    out_mask = tf.cast(warped[..., 1:] >= 0.5, tf.float32)

    u = _uniforms(seed)
    if config.contrast > 0:
        factor = 1.0 + (2.0 * u[_CONTRAST] - 1.0) * config.contrast
        mean = tf.reduce_mean(out_image)
        out_image = (out_image - mean) * factor + mean
    if config.brightness > 0:
        out_image = out_image + (2.0 * u[_BRIGHT] - 1.0) * config.brightness
    out_image = tf.clip_by_value(out_image, 0.0, 1.0)
    out_image.set_shape(image.shape)
    out_mask.set_shape(mask.shape)
    return out_image, out_mask
