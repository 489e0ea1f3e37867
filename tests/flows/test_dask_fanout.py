"""The preprocess fan-out on a real Dask cluster (two worker processes) gives the same manifest
and quarantine as the flow's default thread runner."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from flows.data_pipeline import data_pipeline_flow
from mammoseg.layout import SYNTH_CBIS_PREFIX, new_run_id
from mammoseg.preprocess.params import PreprocessParams
from mammoseg.runreport import read_quarantine
from mammoseg.settings import get_settings
from mammoseg.storage import open_store, open_uri
from mammoseg.synth import DEFECT_KINDS, CbisSynthParams, generate_cbis

PREP64 = PreprocessParams(size=64)


def _pipeline(store_url: str):
    """Synthetic CBIS data (same seed: same cases) in ``store_url``, then the data pipeline."""
    store = open_store(store_url, get_settings())
    generate_cbis(store, CbisSynthParams(n_patients=3, height=128, width=96, seed=5, n_bad=2, prefix=SYNTH_CBIS_PREFIX))
    source_url = store.uri(SYNTH_CBIS_PREFIX).rstrip("/")
    run_id = new_run_id()
    result = data_pipeline_flow("cbis-ddsm", source_url, store_url, run_id, PREP64)
    s, k = open_uri(result.manifest_uri, get_settings())
    manifest = pd.read_csv(io.BytesIO(s.read_bytes(k))).sort_values("case_id").reset_index(drop=True)
    quarantine = sorted((q.stage, q.case_id or "", q.reason) for q in read_quarantine(store, run_id))
    return result, manifest, quarantine


@pytest.fixture(scope="module")
def two_worker_cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield cluster


def _transitions(cluster) -> dict[str, int]:
    from distributed import Client

    with Client(cluster) as client:
        return client.run(lambda dask_worker: dask_worker.state.transition_counter)


def test_dask_cluster_gives_the_default_runners_manifest(tmp_path, monkeypatch, two_worker_cluster) -> None:
    monkeypatch.setenv("MAMMOSEG_FANOUT_RUNNER", "thread")
    ref, ref_manifest, ref_quarantine = _pipeline(str(tmp_path / "threads"))

    before = _transitions(two_worker_cluster)
    monkeypatch.setenv("MAMMOSEG_FANOUT_RUNNER", "auto")  # an address alone selects Dask
    monkeypatch.setenv("MAMMOSEG_DASK_ADDRESS", two_worker_cluster.scheduler_address)
    got, manifest, quarantine = _pipeline(str(tmp_path / "dask"))
    after = _transitions(two_worker_cluster)

    # the case tasks ran in the cluster's two worker processes, not in this one
    assert len(after) == 2
    assert all(after[w] > before.get(w, 0) for w in after), (before, after)
    # the same cases, the same content-addressed arrays, the same quarantine with its reasons
    assert got.counts == ref.counts
    assert got.counts["preprocess_computed"] == got.counts["cases_preprocessed"] > 0
    pd.testing.assert_frame_equal(manifest, ref_manifest)
    assert quarantine == ref_quarantine
    assert len(quarantine) == 2 and {q[0] for q in quarantine} <= {"ingest", "preprocess", "pairing"}
    assert len(DEFECT_KINDS) >= 2


def test_the_cache_probe_answers_unchanged_cases_and_only_them(tmp_path, monkeypatch) -> None:
    from tasks.preprocess import plan_cases, probe_cache

    monkeypatch.setenv("MAMMOSEG_FANOUT_RUNNER", "thread")
    store_url = str(tmp_path / "store")
    result, manifest, _ = _pipeline(store_url)
    store = open_store(store_url, get_settings())
    source_url = store.uri(SYNTH_CBIS_PREFIX).rstrip("/")
    plan = plan_cases.fn(result.lesions_uri, source_url)
    assert len(plan.specs) > 2
    objects_before = sorted(o.key for o in store.list())

    hits = probe_cache.fn(plan.specs, source_url, store_url, PREP64)
    found = {h.case_id: h.record["npz_key"] for h in hits if h is not None}
    assert found == dict(zip(manifest["case_id"], manifest["npz_key"]))  # every good case, same arrays
    assert all(h.record["cached"] for h in hits if h is not None)
    # the quarantined cases are no hits: their task reports them again
    assert sum(h is None for h in hits) == len(plan.specs) - len(manifest)

    # a changed image (new ETag) is a miss; an empty output store has no hit at all
    changed = next(s for s, h in zip(plan.specs, hits) if h is not None)
    source = open_store(source_url, get_settings())
    source.write_bytes(changed.image_key, source.read_bytes(changed.image_key) + b"\0")
    again = probe_cache.fn(plan.specs, source_url, store_url, PREP64)
    assert [h is None for h in again] == [h is None or s is changed for s, h in zip(plan.specs, hits)]
    assert probe_cache.fn(plan.specs, source_url, str(tmp_path / "empty"), PREP64) == [None] * len(plan.specs)
    # the probe wrote nothing
    assert sorted(o.key for o in store.list() if not o.key.startswith(SYNTH_CBIS_PREFIX)) == [
        k for k in objects_before if not k.startswith(SYNTH_CBIS_PREFIX)
    ]
