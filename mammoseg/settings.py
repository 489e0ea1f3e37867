"""Typed settings, read from the environment (prefix ``MAMMOSEG_``) and an optional ``.env``.

Nothing is read at import time: call :func:`get_settings` (or build ``Settings(...)`` in tests).
Credentials are never defaults in the repo; S3 ones come from ``MAMMOSEG_S3_ACCESS_KEY_ID`` /
``MAMMOSEG_S3_SECRET_ACCESS_KEY``, or from boto3's own chain (``AWS_ACCESS_KEY_ID``, profiles,
instance roles) when those are unset.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every tunable of the pipeline in one place."""

    model_config = SettingsConfigDict(
        env_prefix="MAMMOSEG_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # --- where things live -------------------------------------------------------------
    store_url: str = Field(
        default=".mammoseg/store",
        description="Root of the object store: a local path, file:// URL or s3://bucket/prefix.",
    )
    work_dir: Path = Field(
        default=Path(".mammoseg"), description="Local scratch space (Data Docs, reports)."
    )

    # --- S3 / MinIO ----------------------------------------------------------------------
    s3_endpoint_url: str | None = Field(
        default=None, description="e.g. http://127.0.0.1:9000 for MinIO; unset for AWS."
    )
    s3_region: str = "us-east-1"
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_multipart_threshold_mb: int = Field(default=8, ge=5)

    # --- pseudonymisation ----------------------------------------------------------------
    pseudonym_key: SecretStr = Field(
        default=SecretStr("mammoseg-public-demo-key"),
        description="HMAC key for case/patient pseudonyms. Set a private one for real data.",
    )

    # --- preprocessing -------------------------------------------------------------------
    image_size: int = Field(default=512, ge=16, le=4096)
    clahe_clip_limit: float = Field(default=2.0, gt=0)
    clahe_tile_grid: int = Field(default=8, ge=1)
    canonical_side: str = Field(default="L", pattern="^[LR]$")

    # --- validation gate -----------------------------------------------------------------
    quarantine_max_fraction: float = Field(
        default=0.25,
        ge=0.0,
        le=1.0,
        description="The run stops at the gate if more than this fraction of cases is quarantined.",
    )

    # --- synthetic data ------------------------------------------------------------------
    seed: int = 0

    # --- service: deployments, schedule, event trigger (``mammoseg serve``) ---------------
    retrain_cron: str = Field(
        default="0 3 * * 1",
        description="Cron of the `retrain-weekly` deployment (UTC; default Mondays 03:00).",
    )
    retrain_dataset: str = Field(
        default="cbis-ddsm", description="Adapter of the training dataset for served retrains."
    )
    retrain_source_url: str | None = Field(
        default=None,
        description=(
            "Training dataset root for served retrains. When set, only uploads under this root "
            "trigger `new-data`; unset: any dataset root in the events does."
        ),
    )
    heldout_dataset: str = Field(
        default="mini-mias", description="Adapter of the held-out dataset for served retrains."
    )
    heldout_source_url: str | None = Field(
        default=None, description="Held-out dataset root for served retrains (required by them)."
    )
    trigger_threshold: int = Field(
        default=1,
        ge=1,
        description=(
            "Debounce: `new-data` starts once fewer than this many further uploads arrive "
            "within `trigger_within_s` of the last one."
        ),
    )
    trigger_within_s: int = Field(
        default=60,
        ge=10,
        description="Debounce quiet period in seconds (Prefect needs >= 10 s for it).",
    )


def get_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides (CLI flags) on top."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**clean)  # type: ignore[arg-type]
