"""Typed settings, read from the environment (prefix ``MAMMOSEG_``) and an optional ``.env``.

Nothing is read at import time: call :func:`get_settings` (or build ``Settings(...)`` in tests).
Credentials are never defaults in the repo; S3 ones come from ``MAMMOSEG_S3_ACCESS_KEY_ID`` /
``MAMMOSEG_S3_SECRET_ACCESS_KEY``, or from boto3's own chain (``AWS_ACCESS_KEY_ID``, profiles,
instance roles) when those are unset.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Largest image (width x height x frames) any decoder may allocate, in pixels, unless
#: ``MAMMOSEG_MAX_IMAGE_PIXELS`` says otherwise. Full-field mammograms are at most ~35 Mpx
#: (7000x5000); 100 Mpx (200 MB at 16 bits) leaves room and refuses decompression bombs.
DEFAULT_MAX_IMAGE_PIXELS: int = 100_000_000


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
    pseudonym_key: SecretStr | None = Field(
        default=None,
        description=(
            "HMAC key for case/patient pseudonyms; required for every run but the demo (see "
            "require_pseudonym_key). Keep it private: with it, pseudonyms can be reversed."
        ),
    )

    # --- preprocessing -------------------------------------------------------------------
    image_size: int = Field(default=512, ge=16, le=4096)
    clahe_clip_limit: float = Field(default=2.0, gt=0)
    clahe_tile_grid: int = Field(default=8, ge=1)
    canonical_side: str = Field(default="L", pattern="^[LR]$")
    max_image_pixels: int = Field(
        default=DEFAULT_MAX_IMAGE_PIXELS,
        ge=1,
        description=(
            "Pixel budget of one decoded image: a file whose header declares more pixels is "
            "refused (ImageDecodeError) before any pixel is decoded."
        ),
    )

    # --- fan-out of per-case work (ingest/preprocess) on Dask: see mammoseg/fanout.py -----
    fanout_runner: Literal["auto", "thread", "dask"] = Field(
        default="auto",
        description=(
            "Task runner of the per-case fan-out. 'dask': a Dask cluster (MAMMOSEG_DASK_ADDRESS, "
            "else a LocalCluster of worker processes); 'thread': Prefect's thread pool in the "
            "flow's process; 'auto': dask when MAMMOSEG_DASK_ADDRESS is set or the run has at "
            "least `dask_min_cases` cases, else thread (a cluster costs seconds to start)."
        ),
    )
    dask_address: str | None = Field(
        default=None, description="Scheduler of an existing Dask cluster, e.g. tcp://10.0.0.5:8786."
    )
    dask_workers: int | None = Field(
        default=None, ge=1, description="LocalCluster worker processes (None: one per CPU core)."
    )
    dask_threads_per_worker: int = Field(default=1, ge=1)
    dask_memory_limit: str = Field(
        default="auto",
        description="Memory limit per LocalCluster worker ('auto': the machine's memory / workers; "
        "or e.g. '4GiB'); Dask spills, pauses and restarts workers beyond it.",
    )
    dask_min_cases: int = Field(
        default=200, ge=1, description="'auto' runner: fewest cases for which a cluster is worth its start."
    )

    # --- training hardware (mammoseg/training/train.py: TrainConfig) ----------------------
    train_precision: Literal["auto", "float32", "mixed_float16", "mixed_bfloat16"] = Field(
        default="auto",
        description="Keras dtype policy of training ('auto': mixed_float16 when a GPU is visible, "
        "else float32); the sigmoid output is float32 in every policy.",
    )
    train_jit_compile: Literal["auto", "on", "off"] = Field(
        default="auto", description="XLA for the train step ('auto': where it helps: JAX, or TF on a GPU)."
    )
    train_distribution: Literal["auto", "none", "data_parallel"] = Field(
        default="auto",
        description="'data_parallel': one replica per visible GPU (keras.distribution on JAX, "
        "tf.distribute on TensorFlow); 'auto': data_parallel with more than one GPU.",
    )
    inference_batch_size: int = Field(
        default=8, ge=1, description="Images, or sliding windows, per forward pass at inference (larger on a GPU)."
    )
    object_cache_mib: int = Field(
        default=2048, ge=0,
        description="Size above which the local copies of models (<work_dir>/cache/objects) are evicted, least "
        "recently used first (a copy used in the last 10 minutes is kept).",
    )

    # --- work pools of the deployments (unset: `mammoseg serve` runs everything itself) ----
    cpu_work_pool: str | None = Field(
        default=None, description="Work pool of the ingest / preprocess / evaluate deployments."
    )
    gpu_work_pool: str | None = Field(
        default=None, description="Work pool of the training deployment."
    )

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

    # --- links in the Prefect UI (pictures, models, Data Docs) -------------------------------
    files_url: str | None = Field(
        default=None,
        description=(
            "Base URL of the loopback file server of a local store (set by `mammoseg serve`), "
            "so UI artifacts link to images and files a browser can open; unset: no links."
        ),
    )
    files_port: int = Field(default=4210, ge=0, le=65535, description="Port of that file server (0: any free one).")
    s3_browser_endpoint_url: str | None = Field(
        default=None,
        description=(
            "S3 endpoint as the user's browser reaches it, for presigned links (e.g. "
            "http://127.0.0.1:9000 when the pipeline reaches MinIO as http://minio:9000); unset: "
            "the pipeline's own endpoint."
        ),
    )
    link_expiry_s: int = Field(
        default=7 * 24 * 3600, ge=60, le=7 * 24 * 3600,
        description="Lifetime of presigned S3 URLs in UI artifacts (SigV4 allows 7 days at most).",
    )

    # --- PACS (DICOMweb) and DICOM SEG output (issue 10) ---------------------------------
    pacs_url: str | None = Field(
        default=None,
        description=(
            "dicomweb://host:port/dicom-web (https: dicomwebs://) of the PACS that "
            "`infer-on-arrival` watches and stores DICOM SEG results into (Orthanc)."
        ),
    )
    pacs_username: str | None = Field(default=None, description="PACS HTTP basic-auth user.")
    pacs_password: SecretStr | None = Field(default=None, description="PACS HTTP basic-auth password.")
    pacs_page_size: int = Field(default=100, ge=1, le=10000, description="QIDO-RS / changes page size.")
    pacs_poll_s: float = Field(default=5.0, gt=0, description="Seconds between polls of the PACS changes feed.")
    pacs_timeout_s: float = Field(default=30.0, gt=0, description="HTTP timeout of one PACS request.")
    seg_patient_module: Literal["pseudonymous", "copy"] = Field(
        default="pseudonymous",
        description=(
            "Patient module of DICOM SEG outputs: the keyed pseudonym (default), or copied from "
            "the source image (for a PACS that must file the SEG under the patient's record)."
        ),
    )


#: The key every install used to share; refused, since anyone can reverse pseudonyms made with it.
_PUBLIC_KEYS = frozenset({"mammoseg-public-demo-key"})
#: File (under ``work_dir``) holding the demo's per-install random key.
DEMO_KEY_FILE = "pseudonym.key"


class PseudonymKeyMissing(RuntimeError):
    """No private pseudonym key is configured for a run that needs one."""


def require_pseudonym_key(settings: Settings) -> str:
    """The configured pseudonym key; :class:`PseudonymKeyMissing` (one line) when it is unset,
    blank or the old public default. Every run on real data goes through this."""
    value = settings.pseudonym_key.get_secret_value().strip() if settings.pseudonym_key else ""
    if not value:
        raise PseudonymKeyMissing(
            "MAMMOSEG_PSEUDONYM_KEY is not set: set a private key (e.g. the output of "
            "`python -c 'import secrets; print(secrets.token_hex(32))'`) before running on real data"
        )
    if value in _PUBLIC_KEYS:
        raise PseudonymKeyMissing(
            "MAMMOSEG_PSEUDONYM_KEY is the old public demo key, which anyone can use to reverse "
            "pseudonyms: set a private one"
        )
    return value


def demo_pseudonym_key(settings: Settings) -> str:
    """The demo's key: the configured one if set, else a random key made once per install
    (``secrets.token_hex(32)``) and kept in ``<work_dir>/pseudonym.key`` (mode 0600)."""
    if settings.pseudonym_key is not None:
        return require_pseudonym_key(settings)
    path = Path(settings.work_dir) / DEMO_KEY_FILE
    try:
        key = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        key = ""
    if key:
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first (or it is empty): use theirs
        key = path.read_text(encoding="ascii").strip()
        if key:
            return key
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(key + "\n")
    os.chmod(path, 0o600)
    return key


def get_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides (CLI flags) on top."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**clean)  # type: ignore[arg-type]
