"""Typed parameters of a retrain run, in one place (they appear as a form in the Prefect UI)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class RetrainParams(BaseModel):
    """Model, training and evaluation knobs. Defaults suit the synthetic demo on a CPU."""

    size: int = Field(default=128, ge=32, le=1024, description="Model input size (px).")
    base_filters: int = Field(default=16, ge=2)
    depth: int = Field(default=4, ge=1, le=6)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    batch_norm: bool = True
    epochs: int = Field(default=60, ge=1)
    batch_size: int = Field(default=8, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    loss: Literal["focal", "dice", "focal_dice"] = "focal_dice"
    focal_alpha: float = Field(
        default=0.75, gt=0.0, lt=1.0,
        description="Weight of the lesion class in the focal term; > 0.5 because lesions are ~1% of pixels.",
    )
    lesion_oversample: float = Field(default=0.0, ge=0.0, lt=1.0)
    early_stopping_patience: int = Field(default=15, ge=1)
    lr_patience: int = Field(default=8, ge=1, description="Epochs without val Dice gain before the LR halves.")
    augment: bool = True
    aug_rotate_deg: float = Field(default=8.0, ge=0.0, le=45.0)
    aug_shift: float = Field(default=0.05, ge=0.0, le=0.5)
    aug_zoom: float = Field(default=0.05, ge=0.0, le=0.5)
    aug_intensity: float = Field(default=0.05, ge=0.0, le=0.5, description="brightness and contrast range")
    val_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    test_fraction: float = Field(default=0.15, ge=0.0, lt=1.0)
    n_boot: int = Field(default=1000, ge=100)
    seed: int = 0
    promote_metric: str = "dice_mean"
