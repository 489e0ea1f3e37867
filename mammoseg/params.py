"""Typed parameters of a retrain run, in one place (they appear as a form in the Prefect UI)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

#: An evaluated set is the internal test split of a training dataset (in-domain) or a whole
#: held-out dataset the model never saw (cross-dataset).
SetKind = Literal["internal_test", "heldout"]
_SET_PREFIX: dict[str, str] = {"internal_test": "internal-test", "heldout": "heldout"}


class DatasetSource(BaseModel):
    """One dataset of a run: its adapter name and its root (path, ``file://`` or ``s3://``)."""

    dataset: str = Field(description="Adapter: cbis-ddsm | cdd-cesm-dm | cdd-cesm | inbreast | mini-mias | mini-mias-masses")
    source_url: str = Field(min_length=1, description="Dataset root: path, file:// or s3://bucket/prefix.")

    @field_validator("dataset")
    @classmethod
    def _known(cls, name: str) -> str:
        from mammoseg.adapters.registry import ADAPTERS

        if name not in ADAPTERS:
            raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(ADAPTERS)}")
        return name

    @classmethod
    def parse(cls, spec: str) -> DatasetSource:
        """``NAME=SOURCE`` (the command line's form) → a :class:`DatasetSource`."""
        name, sep, source = spec.partition("=")
        if not sep or not name.strip() or not source.strip():
            raise ValueError(f"{spec!r} is not NAME=SOURCE (e.g. inbreast=s3://bucket/INbreast)")
        return cls(dataset=name.strip(), source_url=source.strip())


def eval_set_name(kind: SetKind, dataset: str) -> str:
    """``internal-test-<dataset>`` or ``heldout-<dataset>``: the name of an evaluated set in
    metrics files, artifacts, overlays and the model card."""
    return f"{_SET_PREFIX[kind]}-{dataset}"


def check_datasets(train: Sequence[DatasetSource], heldout: Sequence[DatasetSource]) -> None:
    """At least one training set; no dataset twice in one list (names key every output)."""
    if not train:
        raise ValueError("give at least one training dataset")
    for what, sets in (("training", train), ("held-out", heldout)):
        names = [d.dataset for d in sets]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"{what} dataset(s) {twice} given more than once; merge their roots into one")


def resolve_primary(train: Sequence[DatasetSource], heldout: Sequence[DatasetSource], primary: str | None) -> str:
    """The name of the evaluated set that gates the champion.

    ``primary`` may name a held-out dataset (``mini-mias``: its held-out set), a training dataset
    that is not also held out (``cbis-ddsm``: its internal test split) or any evaluated set
    (``heldout-mini-mias``, ``internal-test-cbis-ddsm``). Default: the first held-out set, or,
    with none, the internal test split of the first training set.
    """
    held = {d.dataset: eval_set_name("heldout", d.dataset) for d in heldout}
    held |= {d.dataset: eval_set_name("internal_test", d.dataset) for d in train if d.dataset not in held}
    names = list(held.values()) + [eval_set_name("internal_test", d.dataset) for d in train]
    if primary is None:
        return names[0]
    if primary in held:
        return held[primary]
    if primary in names:
        return primary
    raise ValueError(f"primary {primary!r} names no evaluated set of this run; choose one of {list(held) + names}")


class RetrainParams(BaseModel):
    """Model, training and evaluation knobs, one default each.

    The recipe defaults (``base_filters`` and ``depth``, ``input_norm``, the intensity
    augmentation, ``tta_mirror``, ``suppress_pectoral``) are the
    ``new`` recipe of ``benchmarks/quality.py``, which beat today's former defaults (the ``seed``
    recipe) on every real dataset's out-of-fold Dice (benchmarks/README.md). The demo keeps its
    own overrides in flows/demo.py.
    """

    size: int = Field(default=128, ge=32, le=1024, description="Model input size (px).")
    base_filters: int = Field(
        default=8, ge=2,
        description="Filters of the first level (doubled per level). 8 x 5 levels: the parameters of 16 x 4, twice "
        "the receptive field, 2.4x the training images/s on a CPU (benchmarks/quality.py, recipe 'new' vs 'new-16x4').",
    )
    depth: int = Field(default=5, ge=1, le=6, description="Levels (2x2 poolings): size and patch_size divisible by 2**depth.")
    deep_supervision: int = Field(
        default=0, ge=0, le=5,
        description="Auxiliary heads on the k coarser decoder levels during training (nnU-Net's deep "
        "supervision, loss weights 1, 1/2, 1/4, ...); the published model has the mask head only. 0: off.",
    )
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    batch_norm: bool = Field(
        default=True, description="Legacy switch: False (with norm not given) means no normalisation layers."
    )
    norm: Literal["batch", "group", "instance", "none"] = Field(
        default="instance",
        description="Normalisation after every conv: instance (per image and channel, nnU-Net's; no moving "
        "statistics, so validation and inference run the layers as training did: +0.03 / +0.08 / +0.10 "
        "out-of-fold Dice over batch on CDD-CESM / INbreast / mini-MIAS, benchmarks/README.md run 9), "
        "batch, group (8 groups), none.",
    )
    input_norm: Literal["none", "breast", "breast_robust"] = Field(
        default="breast",
        description="'breast': per-image standardisation (mean, std) over the breast pixels inside the model; "
        "'breast_robust': on the breast's median and interquartile range (a large lesion does not shift them).",
    )
    epochs: int = Field(default=60, ge=1)
    batch_size: int = Field(default=8, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    loss: Literal["focal", "dice", "focal_dice"] = "focal_dice"
    focal_alpha: float = Field(
        default=0.75, gt=0.0, lt=1.0,
        description="Weight of the lesion class in the focal term; > 0.5 because lesions are ~1% of pixels.",
    )
    lesion_oversample: float = Field(default=0.0, ge=0.0, lt=1.0)
    dataset_balance: float = Field(
        default=0.0, ge=0.0, le=1.0,
        description="Whole-image training on several datasets: draw dataset d with weight n_d**(1-b) "
        "(0: as many as it has images; 0.5: by square root; 1: every dataset equally).",
    )
    early_stopping_patience: int = Field(default=15, ge=1)
    lr_patience: int = Field(default=8, ge=1, description="Epochs without val Dice gain before the LR halves (plateau).")
    lr_schedule: Literal["plateau", "poly"] = Field(
        default="plateau",
        description="plateau: halve the LR after lr_patience epochs without a val Dice gain. poly: "
        "learning_rate * (1 - p)**0.9, p the share of epochs, or of max_train_minutes, already spent.",
    )
    augment: bool = True
    aug_rotate_deg: float = Field(default=8.0, ge=0.0, le=45.0)
    aug_shift: float = Field(default=0.05, ge=0.0, le=0.5)
    aug_zoom: float = Field(default=0.05, ge=0.0, le=0.5)
    aug_intensity: float = Field(default=0.15, ge=0.0, le=0.5, description="brightness and contrast range")
    aug_gamma: float = Field(
        default=0.4, ge=0.0, le=2.0, description="gamma exponent in [1/(1+g), 1+g] on the breast (0: off)"
    )
    aug_noise: float = Field(default=0.03, ge=0.0, le=0.2, description="largest Gaussian noise std (0: off)")
    aug_blur: float = Field(default=1.5, ge=0.0, le=5.0, description="largest Gaussian blur sigma, px (0: off)")
    folds: int = Field(
        default=1, ge=1, le=10,
        description="1: one model, validated on the val split. k > 1: k-fold cross-validation by patient over "
        "train + val; the k fold models are averaged into the published model (nnU-Net's ensemble).",
    )
    max_train_minutes: float | None = Field(
        default=None, gt=0.0, description="Time budget per trained model (None: epochs and early stopping only)."
    )
    budget_clock: Literal["wall", "cpu"] = Field(
        default="wall",
        description="What max_train_minutes counts: wall-clock minutes, or this process's CPU minutes (all "
        "threads; the same work on an idle or a busy machine, so runs sharing a machine stay comparable).",
    )
    patch_size: int | None = Field(
        default=None, ge=16, le=1024,
        description="Train on patches of this side and predict with a sliding window (None: whole images).",
    )
    patch_lesion_share: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Share of training patches centred on a lesion (patch training)."
    )
    patch_hard_negative_share: float = Field(
        default=0.2, ge=0.0, le=1.0,
        description="Share of training patches centred on a hard negative (pectoral zone, dense tissue); "
        "the rest are random in the breast.",
    )
    tta_mirror: bool = Field(
        default=True, description="Average each prediction with that of the up/down mirrored image (plan.json)."
    )
    suppress_pectoral: bool = Field(
        default=True, description="Zero the prediction inside the pectoral muscle found in MLO views (plan.json)."
    )
    postprocess: Literal["choose", "top_components", "none"] = Field(
        default="choose",
        description="'choose': pick on validation, with the threshold, a score cut-off below which a component "
        "is dropped (plan.json min_score) and whether the mask keeps only its 1, 2 or 3 highest-scoring "
        "components or all of them (keep_components); 'top_components': only the latter (no cut-off); "
        "'none': keep all.",
    )
    val_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    test_fraction: float = Field(default=0.15, ge=0.0, lt=1.0)
    n_boot: int = Field(default=1000, ge=100)
    seed: int = 0
    promote_metric: str = "dice_mean"

    @model_validator(mode="before")
    @classmethod
    def _legacy_batch_norm(cls, data: Any) -> Any:
        """Parameters written before ``norm`` existed: ``batch_norm=False`` meant no normalisation.
        ``norm`` is then the one field that says what the network gets (and survives a dump/reload)."""
        if isinstance(data, dict) and data.get("batch_norm") is False:
            norm = data.get("norm", "batch")
            if norm not in ("batch", "none"):
                raise ValueError(f"batch_norm=False (no normalisation) contradicts norm={norm!r}: set norm alone")
            data = {**data, "norm": "none"}
        return data

    @model_validator(mode="after")
    def _patch_fits(self) -> RetrainParams:
        if self.patch_size is not None and self.patch_size > self.size:
            raise ValueError(f"patch_size {self.patch_size} is larger than the image size {self.size}")
        step = 2**self.depth
        network = self.patch_size or self.size
        if network % step:
            raise ValueError(
                f"the network input ({'patch_size' if self.patch_size else 'size'} {network}) must be divisible "
                f"by 2**depth = {step} (depth {self.depth}): choose a multiple of {step} or a smaller depth"
            )
        if self.patch_lesion_share + self.patch_hard_negative_share > 1.0:
            raise ValueError("patch_lesion_share + patch_hard_negative_share must be <= 1")
        if self.deep_supervision >= self.depth:
            raise ValueError(f"deep_supervision ({self.deep_supervision}) must be below depth ({self.depth})")
        return self
