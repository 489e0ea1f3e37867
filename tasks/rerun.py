"""Tasks of the data pipeline's "no new data" path (see mammoseg/rerun.py)."""

from __future__ import annotations

import json
from collections.abc import Iterable

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from mammoseg.catalog import read_manifest
from mammoseg.layout import data_run_reuse_key, run_prefix
from mammoseg.preprocess.params import PreprocessParams
from mammoseg.rerun import RecordedRun, key_tag, run_fingerprint
from mammoseg.settings import get_settings, require_pseudonym_key
from mammoseg.storage import ObjectNotFound, ObjectStore, join_key, open_store
from tasks.retry import IO_RETRIES

#: Settings that change where and how fast a run executes, never what it writes.
_EXECUTION_ONLY = ("work_dir", "dask_", "fanout_")


@task(name="fingerprint-inputs", cache_policy=NO_CACHE, **IO_RETRIES)
def fingerprint_inputs(dataset: str, source_url: str, params: PreprocessParams | None) -> str:
    """The fingerprint of everything this run would read: the source listing (keys, sizes,
    ETags), dataset, preprocess parameters, output-shaping settings, pseudonym key, code."""
    settings = get_settings()
    params = params or PreprocessParams.from_settings(settings)
    shaping = {
        k: v for k, v in settings.model_dump(mode="json").items() if not k.startswith(_EXECUTION_ONLY)
    }
    return run_fingerprint(
        dataset, open_store(source_url, settings).list(), params_digest=params.digest(),
        settings_json=json.dumps(shaping, sort_keys=True, default=str),
        key_tag=key_tag(require_pseudonym_key(settings)),
    )


@task(name="find-previous-run", cache_policy=NO_CACHE, **IO_RETRIES)
def find_previous_run(store_url: str, fingerprint: str) -> RecordedRun | None:
    """The completed run recorded under ``fingerprint``, or None (none, or unreadable)."""
    store = open_store(store_url, get_settings())
    try:
        raw = store.read_bytes(data_run_reuse_key(fingerprint))
    except ObjectNotFound:
        return None
    try:
        recorded = RecordedRun.model_validate_json(raw)
    except ValueError:
        get_run_logger().warning("ignored an unreadable record of a previous run: running in full")
        return None
    return recorded if recorded.fingerprint == fingerprint else None


@task(name="copy-previous-run", cache_policy=NO_CACHE, **IO_RETRIES)
def copy_previous_run(store_url: str, previous: RecordedRun, run_id: str) -> bool:
    """Copy the previous run's small outputs (tables, quarantine records, validation reports,
    manifest, contact sheet: not its reports or Data Docs) into this run's folder. False when
    the previous run's folder lost its manifest (then the run goes in full)."""
    settings = get_settings()
    store = open_store(store_url, settings)
    old = run_prefix(previous.run_id) + "/"
    keys = [o.key for o in store.list(old)]
    skip = (join_key(run_prefix(previous.run_id), "data_docs") + "/",)
    wanted = [
        k for k in keys
        if not k.startswith(skip) and not k[len(old):].startswith("report")
    ]
    manifest = previous.result.get("manifest_uri")
    if manifest:
        key = next((k for k in wanted if manifest.endswith("/" + k)), None)
        if key is None or not _arrays_present(store, read_manifest(store.uri(key), settings)["npz_key"]):
            get_run_logger().info("run %s lost its manifest or some of its arrays: running in full", previous.run_id)
            return False
    for key in wanted:
        store.write_bytes(join_key(run_prefix(run_id), key[len(old):]), store.read_bytes(key))
    get_run_logger().info(
        "no input changed since run %s (same source objects, parameters, settings and code): "
        "its %d outputs copied, nothing listed, validated or preprocessed again", previous.run_id, len(wanted),
    )
    return True


@task(name="record-run", cache_policy=NO_CACHE, **IO_RETRIES)
def record_run(store_url: str, fingerprint: str, run_id: str, result: dict) -> str:
    """Record a completed run (gate open) under its inputs' fingerprint, for later re-runs."""
    store = open_store(store_url, get_settings())
    body = RecordedRun(fingerprint=fingerprint, run_id=run_id, result=result).model_dump_json(indent=1)
    return store.write_bytes(data_run_reuse_key(fingerprint), body.encode(), "application/json").uri



def _arrays_present(store: ObjectStore, npz_keys: Iterable[object]) -> bool:
    """Every content-addressed array the manifest names (``npz_keys``) is still in the store
    (someone may have pruned the cache since): checked in parallel (HEAD requests on S3)."""
    from concurrent.futures import ThreadPoolExecutor

    keys = [str(k) for k in npz_keys]
    with ThreadPoolExecutor(max_workers=16) as pool:
        return all(pool.map(store.exists, keys))
