"""Paired image/mask augmentation for the tf.data input pipeline.

One random affine map (flip, rotation, zoom, shift) is drawn per sample and applied **once** to
the image and the mask stacked as two channels of one tensor (``ImageProjectiveTransformV3``,
bilinear, zeros outside), so the two can never drift apart. The mask channel is re-thresholded
at 0.5 afterwards, so it stays exactly 0/1.

Intensity augmentation then touches the image only, never the mask: gamma, contrast, brightness,
Gaussian blur, Gaussian noise. It imitates the spread between scanners and between digitised film
and digital detectors. Gamma, blur and noise act only on the breast (the pixels > 0 after the
warp; preprocessing blanks the background to exactly 0), so the background stays exactly 0 and a
per-breast input normalisation (``UNetConfig.input_norm="breast"``) still finds the breast;
contrast and brightness do so too with ``keep_background=True``.

Randomness is *stateless*: the same ``seed`` tensor gives the same output, on any machine.
:class:`AugmentConfig` imports nothing heavy; TensorFlow is imported inside the functions.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import tensorflow as tf

FlipAxis = Literal["vertical", "horizontal", "both"]

_MAX_GAMMA = 4.0  # γ up to 5 or down to 1/5: far beyond any real detector response
_MAX_BLUR_SIGMA = 16.0  # pixels; the kernel spans ±3σ


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
    * ``contrast``: factor in ``[1 - contrast, 1 + contrast]`` about the image mean (the breast
      mean with ``keep_background``).
    * ``keep_background``: apply contrast and brightness to the breast only, so the background
      stays exactly 0 (set it with ``UNetConfig.input_norm="breast"``: a brightened background
      would count as breast there). ``False`` (the default) keeps the original whole-image
      behaviour of these two.
    * ``gamma`` = g: with probability ``gamma_prob``, breast pixels ``x`` (0..1) become
      ``x**γ``, γ drawn log-uniformly in ``[1/(1+g), 1+g]`` (γ < 1 brightens the dense tissue
      band, γ > 1 darkens it: a film / detector response curve).
    * ``blur_sigma``: with probability ``blur_prob``, a Gaussian blur of the breast, sigma drawn
      in ``[0, blur_sigma]`` pixels (the unsharpness of scanned film). The blur is normalised by
      the blurred breast mask, so the breast edge does not darken from the black background.
    * ``noise_std``: with probability ``noise_prob``, additive Gaussian noise on the breast, its
      std drawn in ``[0, noise_std]`` (image in 0..1).
    * ``seed``: seed of the per-sample random stream in :func:`mammoseg.training.dataset`.

    Order: warp, gamma, contrast, brightness, blur, noise, clip to 0..1. Pixels moved in from
    outside are 0 (background). Every magnitude at 0 switches its op off (the ``*_prob``
    fields only matter once it is on), and the defaults of the later fields (``gamma``,
    ``blur_sigma``, ``noise_std``, ``keep_background``) leave the output bit-identical to the
    version before them; :meth:`from_dict` accepts the dicts older versions wrote.
    """

    flip: bool = True
    flip_axis: FlipAxis = "vertical"
    rotate_deg: float = 15.0
    shift: float = 0.1
    zoom: float = 0.1
    brightness: float = 0.1
    contrast: float = 0.1
    seed: int = 0
    keep_background: bool = False
    gamma: float = 0.0
    gamma_prob: float = 1.0
    blur_sigma: float = 0.0
    blur_prob: float = 1.0
    noise_std: float = 0.0
    noise_prob: float = 1.0

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
        if not 0 <= self.gamma <= _MAX_GAMMA:
            problems.append(f"gamma must be in [0, {_MAX_GAMMA}] (got {self.gamma})")
        if not 0 <= self.blur_sigma <= _MAX_BLUR_SIGMA:
            problems.append(f"blur_sigma must be in [0, {_MAX_BLUR_SIGMA}] (got {self.blur_sigma})")
        if not 0 <= self.noise_std <= 1:
            problems.append(f"noise_std must be in [0, 1] (got {self.noise_std})")
        for name in ("gamma_prob", "blur_prob", "noise_prob"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"{name} must be in [0, 1] (got {getattr(self, name)})")
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
# Positions in the second draw (a stream of its own: the first one stays as it always was).
_GAMMA, _GAMMA_ON, _BLUR, _BLUR_ON, _NOISE, _NOISE_ON = range(6)
_INTENSITY_STREAM, _NOISE_STREAM = 1, 2


def _uniforms(seed: tf.Tensor) -> tf.Tensor:
    import tensorflow as tf

    return tf.random.stateless_uniform([8], seed=tf.cast(seed, tf.int64), dtype=tf.float32)


def _substream(seed: tf.Tensor, stream: int) -> tf.Tensor:
    """A seed derived from ``seed`` for an independent stateless stream number ``stream``."""
    import tensorflow as tf

    return tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), stream)


def _intensity_uniforms(seed: tf.Tensor) -> tf.Tensor:
    import tensorflow as tf

    return tf.random.stateless_uniform(
        [6], seed=_substream(seed, _INTENSITY_STREAM), dtype=tf.float32
    )


def affine_transform(config: AugmentConfig, size: int, seed: tf.Tensor) -> tf.Tensor:
    """The random affine map for one sample as the 8-vector ``ImageProjectiveTransformV3`` takes.

    The vector maps *output* pixel ``(x, y)`` (x = column, y = row, origin at the top-left pixel
    centre) to the *input* location it samples: ``x_in = a0·x + a1·y + a2``,
    ``y_in = b0·x + b1·y + b2`` (the last two entries, the projective part, are 0).
    """
    return _affine_from_uniforms(config, size, _uniforms(seed))


def _affine_from_uniforms(config: AugmentConfig, size: int, u: tf.Tensor) -> tf.Tensor:
    """:func:`affine_transform` from the draws ``u`` (``[8]``, or ``[b, 8]`` for a batch → ``[b, 8]``)."""
    import tensorflow as tf

    one = tf.ones_like(u[..., _FLIP_X])
    fx, fy = one, one
    if config.flip and config.flip_axis in ("horizontal", "both"):
        fx = tf.where(u[..., _FLIP_X] < 0.5, -one, one)
    if config.flip and config.flip_axis in ("vertical", "both"):
        fy = tf.where(u[..., _FLIP_Y] < 0.5, -one, one)
    theta = (2.0 * u[..., _ANGLE] - 1.0) * (config.rotate_deg * math.pi / 180.0)
    zoom = 1.0 + (2.0 * u[..., _ZOOM] - 1.0) * config.zoom
    tx = (2.0 * u[..., _SHIFT_X] - 1.0) * config.shift * size
    ty = (2.0 * u[..., _SHIFT_Y] - 1.0) * config.shift * size

    # Forward (content) map: out = c + Z·R(θ)·F·(in - c) + t. Its inverse: in = M·out + off with
    # M = F·R(-θ)/Z and off = c - M·(c + t).
    cos, sin = tf.cos(theta), tf.sin(theta)
    m00, m01 = fx * cos / zoom, fx * sin / zoom
    m10, m11 = -fy * sin / zoom, fy * cos / zoom
    c = (size - 1) / 2.0
    off_x = c - (m00 * (c + tx) + m01 * (c + ty))
    off_y = c - (m10 * (c + tx) + m11 * (c + ty))
    zero = tf.zeros_like(m00)
    return tf.stack([m00, m01, off_x, m10, m11, off_y, zero, zero], axis=-1)


def _gaussian_kernel(sigma: tf.Tensor, radius: int) -> tf.Tensor:
    """1-D Gaussian weights over ``[-radius, radius]``, summing to 1; ``sigma`` -> 0 is a delta."""
    import tensorflow as tf

    k = tf.range(-radius, radius + 1, dtype=tf.float32)
    sigma = tf.maximum(sigma, 1e-3)
    w = tf.exp(-0.5 * tf.square(k / sigma))
    return w / tf.reduce_sum(w)


def breast_blur(
    image: tf.Tensor, breast: tf.Tensor, sigma: tf.Tensor, max_sigma: float
) -> tf.Tensor:
    """Gaussian blur (``sigma`` px) of ``image`` ``[S, S, 1]`` within the bool ``breast`` mask.

    Normalised convolution: ``blur(image·breast) / blur(breast)``, so background pixels do not
    leak into the breast (no dark rim at the skin line). ``max_sigma`` fixes the kernel size
    (``±ceil(3·max_sigma)``). Values outside the breast are meaningless; callers select.
    """
    import tensorflow as tf

    radius = max(1, math.ceil(3.0 * max_sigma))
    w = _gaussian_kernel(sigma, radius)
    weight = tf.cast(breast, tf.float32)
    both = tf.concat([image * weight, weight], axis=-1)[tf.newaxis]  # [1, S, S, 2]
    ones = tf.ones([1, 1, 2, 1], tf.float32)
    both = tf.nn.depthwise_conv2d(
        both, tf.reshape(w, [-1, 1, 1, 1]) * ones, strides=[1, 1, 1, 1], padding="SAME"
    )
    both = tf.nn.depthwise_conv2d(
        both, tf.reshape(w, [1, -1, 1, 1]) * ones, strides=[1, 1, 1, 1], padding="SAME"
    )[0]
    return both[..., :1] / tf.maximum(both[..., 1:], 1e-12)


Warp = Literal["tf", "opencv"]


def _warp_opencv(stacked: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """``stacked`` float32 ``[S, S, C]`` sampled at ``transform`` (the output→input 8-vector of
    :func:`affine_transform`) with OpenCV: bilinear, zeros outside, like the TF op."""
    import cv2

    size = stacked.shape[0]
    matrix = np.asarray(transform[:6], np.float64).reshape(2, 3)
    out = cv2.warpAffine(
        stacked, matrix, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )
    return out.reshape(stacked.shape).astype(np.float32, copy=False)


def augment_pair(
    image: tf.Tensor, mask: tf.Tensor, config: AugmentConfig, seed: tf.Tensor, warp: Warp = "tf"
) -> tuple[tf.Tensor, tf.Tensor]:
    """Augment one sample: ``image`` float32 ``[S, S, 1]`` in 0..1, ``mask`` float32 0/1 same shape.

    ``seed`` is an int tensor of shape ``[2]`` (stateless randomness). Returns new tensors of the
    same shapes; the mask is exactly 0/1 and only warped (never touched by an intensity op); the
    inputs are not modified. ``warp``: the same affine map sampled by TensorFlow's
    ``ImageProjectiveTransformV3`` (``"tf"``, bit-stable across versions) or by OpenCV's
    ``warpAffine`` (``"opencv"``: ~8x faster on a CPU, bilinear weights quantised to 1/32 px, so
    results differ from ``"tf"`` by interpolation rounding only; the training input pipeline's
    choice, see ``benchmarks/train.py``).
    """
    import tensorflow as tf

    size = int(image.shape[0])
    stacked = tf.concat([tf.cast(image, tf.float32), tf.cast(mask, tf.float32)], axis=-1)
    transform = affine_transform(config, size, seed)
    if warp == "opencv":
        warped = tf.numpy_function(_warp_opencv, [stacked, transform], tf.float32, stateful=False)
        warped = tf.reshape(warped, [size, size, 2])
    elif warp == "tf":
        warped = tf.raw_ops.ImageProjectiveTransformV3(
            images=stacked[tf.newaxis],
            transforms=transform[tf.newaxis],
            output_shape=tf.constant([size, size], tf.int32),
            fill_value=tf.constant(0.0),
            interpolation="BILINEAR",
            fill_mode="CONSTANT",
        )[0]
    else:
        raise ValueError(f"warp must be 'tf' or 'opencv' (got {warp!r})")
    out_image = warped[..., :1]
    out_mask = tf.cast(warped[..., 1:] >= 0.5, tf.float32)
    out_image = _intensity(out_image, config, seed)
    out_image.set_shape(image.shape)
    out_mask.set_shape(mask.shape)
    return out_image, out_mask


def _intensity(image: tf.Tensor, config: AugmentConfig, seed: tf.Tensor) -> tf.Tensor:
    """The intensity part of :func:`augment_pair` on the warped image; see :class:`AugmentConfig`.

    An op whose magnitude is 0 is not even built, so the result is bit-identical to the
    pipeline without it.
    """
    v = _intensity_uniforms(seed) if _needs_second_draw(config) else None
    return _intensity_core(image, config, _uniforms(seed), v, seed, batched=False)


def _needs_second_draw(config: AugmentConfig) -> bool:
    return config.gamma > 0 or config.blur_sigma > 0 or config.noise_std > 0


def _intensity_core(
    image: tf.Tensor, config: AugmentConfig, u: tf.Tensor, v: tf.Tensor | None, seed: tf.Tensor, *, batched: bool
) -> tf.Tensor:
    """Intensity ops on one image ``[S, S, 1]`` (draws ``u [8]``, ``v [6]``, ``seed [2]``) or on a
    batch ``[b, S, S, 1]`` (``u [b, 8]``, ``v [b, 6]``, ``seed [b, 2]``): the same ops, each
    per-sample scalar broadcast over its own image."""
    import tensorflow as tf

    def col(x: tf.Tensor) -> tf.Tensor:  # a per-sample scalar, broadcast over its image
        return tf.reshape(x, [-1, 1, 1, 1]) if batched else x

    breast = image > 0.0  # before any intensity op: the region they may touch
    if config.gamma > 0:
        exponent = col(tf.exp((2.0 * v[..., _GAMMA] - 1.0) * math.log1p(config.gamma)))
        on = col(v[..., _GAMMA_ON] < config.gamma_prob)
        powered = tf.pow(tf.clip_by_value(image, 0.0, 1.0), exponent)
        image = tf.where(breast & on, powered, image)
    if config.contrast > 0:
        factor = col(1.0 + (2.0 * u[..., _CONTRAST] - 1.0) * config.contrast)
        axes = [1, 2, 3] if batched else None
        if config.keep_background:
            weight = tf.cast(breast, tf.float32)
            total = tf.reduce_sum(weight, axis=axes, keepdims=batched)
            mean = tf.reduce_sum(image * weight, axis=axes, keepdims=batched) / tf.maximum(total, 1.0)
        else:
            mean = tf.reduce_mean(image, axis=axes, keepdims=batched)
        image = (image - mean) * factor + mean
    if config.brightness > 0:
        image = image + col((2.0 * u[..., _BRIGHT] - 1.0) * config.brightness)
    if config.blur_sigma > 0:
        sigma = v[..., _BLUR] * config.blur_sigma
        on = col(v[..., _BLUR_ON] < config.blur_prob)
        if batched:  # the kernel differs per sample
            blurred = tf.map_fn(
                lambda a: breast_blur(a[0], a[1], a[2], config.blur_sigma), (image, breast, sigma),
                fn_output_signature=tf.float32,
            )
        else:
            blurred = breast_blur(image, breast, sigma, config.blur_sigma)
        image = tf.where(breast & on, blurred, image)
    if config.noise_std > 0:
        std = col(v[..., _NOISE] * config.noise_std)
        on = col(v[..., _NOISE_ON] < config.noise_prob)
        shape = tf.shape(image)[1:] if batched else tf.shape(image)

        def normal(s: tf.Tensor) -> tf.Tensor:
            return tf.random.stateless_normal(shape, seed=_substream(s, _NOISE_STREAM), dtype=tf.float32)

        noise = tf.map_fn(normal, seed, fn_output_signature=tf.float32) if batched else normal(seed)
        image = tf.where(breast & on, image + std * noise, image)
    image = tf.clip_by_value(image, 0.0, 1.0)
    if config.keep_background:
        image = tf.where(breast, image, tf.zeros_like(image))
    return image


def _warp_opencv_batch(stacked: np.ndarray, transforms: np.ndarray) -> np.ndarray:
    """:func:`_warp_opencv` on each sample of ``stacked`` ``[b, S, S, C]`` with its own map."""
    out = np.empty(stacked.shape, np.float32)
    for i in range(stacked.shape[0]):
        out[i] = _warp_opencv(stacked[i], transforms[i])
    return out


def augment_batch(
    images: tf.Tensor, masks: tf.Tensor, config: AugmentConfig, seeds: tf.Tensor, warp: Warp = "opencv"
) -> tuple[tf.Tensor, tf.Tensor]:
    """:func:`augment_pair` on a whole batch at once: ``images``/``masks`` float32 ``[b, S, S, 1]``,
    ``seeds`` int ``[b, 2]``, one seed per sample.

    Sample ``i`` gets exactly the map and the intensity draws ``augment_pair(images[i], masks[i],
    config, seeds[i], warp)`` gives it (the same stateless draws from the same seed), so the
    distribution is unchanged and the image and its mask share one warp (stacked as two
    channels, as there). Only the op count changes: one op per batch instead of one per sample
    (the per-sample TensorFlow dispatch was ~1 ms per image, whatever its size). Results equal
    the per-sample path's up to float rounding (a per-image mean reduced along other axes).
    """
    import tensorflow as tf

    size = int(images.shape[1])
    seeds = tf.cast(seeds, tf.int64)
    u = _batched_draws(seeds, 8, None)
    v = _batched_draws(seeds, 6, _INTENSITY_STREAM) if _needs_second_draw(config) else None
    stacked = tf.concat([tf.cast(images, tf.float32), tf.cast(masks, tf.float32)], axis=-1)
    transforms = _affine_from_uniforms(config, size, u)
    if warp == "opencv":
        warped = tf.numpy_function(_warp_opencv_batch, [stacked, transforms], tf.float32, stateful=False)
        warped = tf.reshape(warped, [-1, size, size, 2])
    elif warp == "tf":
        warped = tf.raw_ops.ImageProjectiveTransformV3(
            images=stacked,
            transforms=transforms,
            output_shape=tf.constant([size, size], tf.int32),
            fill_value=tf.constant(0.0),
            interpolation="BILINEAR",
            fill_mode="CONSTANT",
        )
    else:
        raise ValueError(f"warp must be 'tf' or 'opencv' (got {warp!r})")
    out_mask = tf.cast(warped[..., 1:] >= 0.5, tf.float32)
    out_image = _intensity_core(warped[..., :1], config, u, v, seeds, batched=True)
    out_image.set_shape([None, size, size, 1])
    out_mask.set_shape([None, size, size, 1])
    return out_image, out_mask


def _batched_draws(seeds: tf.Tensor, n: int, stream: int | None) -> tf.Tensor:
    """``[b, n]``: row ``i`` is the stateless uniform draw of ``seeds[i]`` (on ``stream``'s
    sub-seed when given), exactly what :func:`_uniforms` / :func:`_intensity_uniforms` give."""
    import tensorflow as tf

    def draw(s: tf.Tensor) -> tf.Tensor:
        seed = s if stream is None else _substream(s, stream)
        return tf.random.stateless_uniform([n], seed=seed, dtype=tf.float32)

    return tf.map_fn(draw, seeds, fn_output_signature=tf.float32)
