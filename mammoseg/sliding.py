"""Sliding-window inference: predict a large image window by window and blend the windows.

A network trained on ``window × window`` patches (see :mod:`mammoseg.training.patches`) is run
over an image of any size, as nnU-Net and MONAI do:

* windows start at evenly spaced positions per axis (:func:`window_positions`): as many as a
  step of ``round(window·(1 - overlap))`` needs, spread evenly so the first window is flush
  with the top/left edge and the last with the bottom/right edge (the actual step is never
  larger than the requested one, so the overlap is never smaller);
* an image smaller than the window is zero-padded at the bottom/right and cropped back;
* each pixel's result is the weighted average of every window covering it, the weights an
  importance map (:func:`importance_map`): a Gaussian (σ = window/8, peak 1, floored at
  :data:`GAUSSIAN_FLOOR`) that trusts window centres more than borders, where a convolutional
  network sees zero padding instead of context; or a constant.

Pure numpy: the network enters only as ``predict_fn``, so nothing here imports Keras.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import numpy as np

Blend = Literal["gaussian", "constant"]
PredictFn = Callable[[np.ndarray], np.ndarray]

#: Gaussian σ as a fraction of the window size (nnU-Net and MONAI use 1/8).
GAUSSIAN_SIGMA_SCALE = 1.0 / 8.0
#: Smallest Gaussian weight: window corners (e^-16 of the peak) must still count, else a pixel
#: covered only by window borders (image corners) would be a near 0/0.
GAUSSIAN_FLOOR = 1e-3

_BLENDS = ("gaussian", "constant")


def _check_window(window: int, overlap: float) -> None:
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window must be a positive integer (got {window!r})")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1) (got {overlap})")


def _axis_starts(size: int, window: int, overlap: float) -> list[int]:
    """Start offsets along one axis of length ``size`` (``size <= window`` → ``[0]``)."""
    if size <= window:
        return [0]
    step = max(1, round(window * (1.0 - overlap)))
    span = size - window
    count = math.ceil(span / step) + 1
    # count - 1 <= span, so the evenly spread starts are distinct integers.
    return [round(i * span / (count - 1)) for i in range(count)]


def window_positions(h: int, w: int, window: int, overlap: float = 0.5) -> list[tuple[int, int]]:
    """Top-left corners ``(y, x)`` of the windows covering an ``h × w`` image, row by row.

    Every pixel is covered; windows stay inside ``max(h, window) × max(w, window)`` (the image
    after zero-padding to at least one window). Raises ``ValueError`` on bad arguments.
    """
    _check_window(window, overlap)
    if h < 1 or w < 1:
        raise ValueError(f"image size must be positive (got {h}×{w})")
    ys = _axis_starts(h, window, overlap)
    xs = _axis_starts(w, window, overlap)
    return [(y, x) for y in ys for x in xs]


def importance_map(window: int, blend: Blend = "gaussian") -> np.ndarray:
    """Per-pixel weight of a window's prediction, float64 ``[window, window]``, maximum 1.

    ``"gaussian"``: ``exp(-d²/2σ²)`` about the window centre, σ = ``window`` ×
    :data:`GAUSSIAN_SIGMA_SCALE`, normalised to peak 1 and floored at :data:`GAUSSIAN_FLOOR`.
    ``"constant"``: all ones (a plain average of the overlapping windows).
    """
    _check_window(window, 0.0)
    if blend not in _BLENDS:
        raise ValueError(f"blend must be one of {_BLENDS} (got {blend!r})")
    if blend == "constant":
        return np.ones((window, window), dtype=np.float64)
    sigma = window * GAUSSIAN_SIGMA_SCALE
    d = (np.arange(window, dtype=np.float64) - (window - 1) / 2.0) / sigma
    g = np.exp(-0.5 * d * d)
    weights = np.outer(g, g)
    weights /= weights.max()
    return np.maximum(weights, GAUSSIAN_FLOOR)


def _check_prediction(pred: object, n: int, window: int) -> np.ndarray:
    """``predict_fn``'s output as float64 ``[n, window, window]`` (a trailing channel of 1 is
    dropped), else ``ValueError``."""
    arr = np.asarray(pred)
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.shape != (n, window, window):
        raise ValueError(
            f"predict_fn returned shape {np.shape(pred)} for a batch of {n} windows; "
            f"expected ({n}, {window}, {window})"
        )
    return arr.astype(np.float64, copy=False)


def sliding_window_predict(
    predict_fn: PredictFn,
    image: np.ndarray,
    *,
    window: int,
    overlap: float = 0.5,
    blend: Blend = "gaussian",
    batch_size: int = 8,
) -> np.ndarray:
    """Probabilities float32 ``(H, W)`` for a 2-D ``image`` of any size, window by window.

    ``image`` is already normalised as the network expects (e.g. uint16 / 65535); it is not
    modified. ``predict_fn`` takes float32 ``[N, window, window]`` (``N <= batch_size``) and
    returns probabilities ``[N, window, window]`` (or ``[N, window, window, 1]``). With one
    window (the image no larger than the window) the result is exactly ``predict_fn``'s on the
    zero-padded image, cropped. Raises ``ValueError`` on bad arguments or a badly shaped
    prediction.
    """
    _check_window(window, overlap)
    if blend not in _BLENDS:
        raise ValueError(f"blend must be one of {_BLENDS} (got {blend!r})")
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive integer (got {batch_size!r})")
    img = np.asarray(image)
    if img.ndim != 2 or img.size == 0:
        raise ValueError(f"image must be a non-empty 2-D array (got shape {img.shape})")
    if not np.issubdtype(img.dtype, np.number) or np.iscomplexobj(img):
        raise ValueError(f"image must hold real numbers (got dtype {img.dtype})")
    h, w = img.shape
    ph, pw = max(h, window), max(w, window)
    padded = np.zeros((ph, pw), dtype=np.float32)
    padded[:h, :w] = img

    weights = importance_map(window, blend)
    total = np.zeros((ph, pw), dtype=np.float64)
    weight_sum = np.zeros((ph, pw), dtype=np.float64)
    positions = window_positions(ph, pw, window, overlap)
    for start in range(0, len(positions), batch_size):
        chunk = positions[start : start + batch_size]
        batch = np.stack([padded[y : y + window, x : x + window] for y, x in chunk])
        pred = _check_prediction(predict_fn(batch), len(chunk), window)
        for (y, x), p in zip(chunk, pred):
            total[y : y + window, x : x + window] += p * weights
            weight_sum[y : y + window, x : x + window] += weights
    return (total[:h, :w] / weight_sum[:h, :w]).astype(np.float32)
