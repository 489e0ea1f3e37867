"""Training progress as people read it: a per-epoch table (Markdown) and loss / Dice curves (PNG).

Pure functions of the Keras history rows (``{"epoch", "loss", "val_loss", "dice", "val_dice",
…}``); OpenCV draws the curves (no plotting library needed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import cv2
import numpy as np

#: Table columns: history key → header.
_COLUMNS = (("loss", "loss"), ("val_loss", "val loss"), ("dice", "Dice"), ("val_dice", "val Dice"))


def _num(v: object, digits: int = 3) -> str:
    if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(float(v)):
        return "n/a"
    return f"{float(v):.{digits}f}"


def progress_markdown(rows: Sequence[Mapping[str, float]], total_epochs: int, *, title: str = "Training") -> str:
    """``rows``: one per finished epoch (``fold`` optional, 0-based). The last epoch first in a
    one-line summary, then the table (newest epoch last)."""
    lines = [f"## {title}: epoch {len(rows)} of {total_epochs}", ""]
    if rows:
        last = rows[-1]
        scored = [(float(r["val_dice"]), i) for i, r in enumerate(rows)
                  if isinstance(r.get("val_dice"), int | float) and math.isfinite(float(r["val_dice"]))]
        top = max(scored, default=None)
        best = f"{top[0]:.3f} (epoch {_epoch_label(rows[top[1]], top[1])})" if top else "n/a"
        summary = (f"Last epoch: loss {_num(last.get('loss'))}, validation Dice {_num(last.get('val_dice'))}. "
                   f"Best validation Dice so far: {best}.")
        lines += [summary, ""]
    header = "| epoch | " + " | ".join(h for _, h in _COLUMNS) + " |"
    lines += [header, "|---:|" + "---:|" * len(_COLUMNS)]
    for i, r in enumerate(rows):
        lines.append(f"| {_epoch_label(r, i)} | " + " | ".join(_num(r.get(k)) for k, _ in _COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def _epoch_label(row: Mapping[str, float], index: int) -> str:
    """``epoch`` (1-based) of the row, else its position; ``fold.epoch`` with folds."""
    epoch = int(row["epoch"]) if "epoch" in row else index + 1
    return f"{int(row['fold']) + 1}.{epoch}" if "fold" in row else str(epoch)


def curves_png(rows: Sequence[Mapping[str, float]], *, width: int = 720, height: int = 300) -> bytes:
    """Two panels: loss and validation loss (left), Dice and validation Dice (right), by epoch.
    Training curves blue, validation curves orange. ``rows`` must not be empty."""
    if not rows:
        raise ValueError("no epochs to plot")
    img = np.full((height, width, 3), 255, np.uint8)
    half = width // 2
    _panel(img, (0, 0, half, height), rows, ("loss", "val_loss"), "loss")
    _panel(img, (half, 0, width - half, height), rows, ("dice", "val_dice"), "Dice")
    ok, png = cv2.imencode(".png", img)
    if not ok:  # pragma: no cover - OpenCV failure
        raise RuntimeError("could not encode the training curves")
    return png.tobytes()


_TRAIN, _VAL = (180, 90, 30), (20, 130, 240)  # BGR: blue, orange
_INK = (60, 60, 60)


def _panel(img: np.ndarray, box: tuple[int, int, int, int], rows: Sequence[Mapping[str, float]],
           keys: tuple[str, str], name: str) -> None:
    x0, y0, w, h = box
    left, right, top, bottom = x0 + 48, x0 + w - 12, y0 + 28, y0 + h - 30
    values = [float(r[k]) for r in rows for k in keys if k in r and math.isfinite(float(r[k]))]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    cv2.rectangle(img, (left, top), (right, bottom), _INK, 1)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(img, name, (left, top - 10), font, 0.5, _INK, 1, cv2.LINE_AA)
    cv2.putText(img, f"{hi:.3g}", (x0 + 2, top + 5), font, 0.35, _INK, 1, cv2.LINE_AA)
    cv2.putText(img, f"{lo:.3g}", (x0 + 2, bottom), font, 0.35, _INK, 1, cv2.LINE_AA)
    cv2.putText(img, "epoch", ((left + right) // 2 - 20, bottom + 20), font, 0.4, _INK, 1, cv2.LINE_AA)
    n = len(rows)
    for key, colour, label_x in ((keys[0], _TRAIN, right - 150), (keys[1], _VAL, right - 75)):
        pts = [
            (left + (right - left) * (i / max(n - 1, 1)), bottom - (bottom - top) * (float(r[key]) - lo) / (hi - lo))
            for i, r in enumerate(rows) if key in r and math.isfinite(float(r[key]))
        ]
        if pts:
            arr = np.round(np.array(pts)).astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(img, [arr], False, colour, 2, cv2.LINE_AA)
            for p in arr[:, 0]:
                cv2.circle(img, (int(p[0]), int(p[1])), 3, colour, -1, cv2.LINE_AA)
        # the legend on the title line, clear of the curves
        cv2.putText(img, key.replace("_", " "), (label_x, top - 10), font, 0.4, colour, 1, cv2.LINE_AA)
