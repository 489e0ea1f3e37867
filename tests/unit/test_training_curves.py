"""Training progress for people: the per-epoch table and the curves picture."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mammoseg.runreport import QuarantineRecord, RunReport
from mammoseg.training.curves import curves_png, progress_markdown

ROWS = [
    {"epoch": 1.0, "loss": 0.91234, "val_loss": 0.8, "dice": 0.1, "val_dice": 0.2},
    {"epoch": 2.0, "loss": 0.5, "val_loss": 0.6, "dice": 0.3, "val_dice": 0.45678},
    {"epoch": 3.0, "loss": 0.4, "val_loss": 0.7, "dice": 0.35, "val_dice": float("nan")},
]


def test_progress_markdown_by_hand() -> None:
    md = progress_markdown(ROWS, 10)
    assert md.startswith("## Training: epoch 3 of 10\n")
    # the last epoch's loss; its val Dice is NaN ("n/a"); the best is epoch 2's 0.457
    assert "Last epoch: loss 0.400, validation Dice n/a. Best validation Dice so far: 0.457 (epoch 2)." in md
    assert "| 1 | 0.912 | 0.800 | 0.100 | 0.200 |" in md
    assert "| 3 | 0.400 | 0.700 | 0.350 | n/a |" in md
    assert progress_markdown([], 4).startswith("## Training: epoch 0 of 4")
    folds = progress_markdown([ROWS[0] | {"fold": 1.0}], 4)
    assert "| 2.1 |" in folds  # fold 2 (0-based 1), epoch 1


def test_curves_png_draws_both_series() -> None:
    img = cv2.imdecode(np.frombuffer(curves_png(ROWS), np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (300, 720, 3)
    blue = np.all(img == (180, 90, 30), axis=-1)
    orange = np.all(img == (20, 130, 240), axis=-1)
    assert blue[:, :360].sum() > 50 and orange[:, :360].sum() > 50  # loss panel
    assert blue[:, 360:].sum() > 50 and orange[:, 360:].sum() > 50  # Dice panel
    with pytest.raises(ValueError, match="no epochs"):
        curves_png([])
    # one epoch, constant values: still a picture (no division by zero)
    assert curves_png([{"loss": 1.0, "val_loss": 1.0, "dice": 0.0, "val_dice": 0.0}])


def test_run_report_round_trips_through_its_json() -> None:
    report = RunReport(run_id="r", dataset="d", source_url="s", store_url="t", cases_found=3, cases_preprocessed=2,
                       quarantined=[QuarantineRecord(stage="ingest", reason="bad", case_id="cs-1", source="P_1.dcm")],
                       outputs={"manifest": "file:///m.csv"})  # fmt: skip
    back = RunReport.from_dict(report.to_dict())
    assert back.cases_found == 3 and back.quarantined == [QuarantineRecord(stage="ingest", reason="bad", case_id="cs-1")]
    assert "[**manifest**](http://x/m.csv)" in back.markdown(link=lambda u: "http://x/m.csv")
    assert "- **manifest**: `file:///m.csv`" in back.markdown()
