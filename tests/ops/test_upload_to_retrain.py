"""Issue 4's chain, for real: new DICOMs land in the bucket (S3 server over HTTP) → the watcher
announces them → the debounced trigger on a real Prefect server starts ONE run of the served
`new-data` deployment → ingest + retrain complete and publish a model."""

from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from mammoseg.settings import get_settings
from mammoseg.storage import open_store
from ops.test_deployments import REPO, WITHIN_S, _runs_of, _wait, prefect_api, served  # noqa: F401

pytestmark = pytest.mark.slow

SERVE_REAL = textwrap.dedent('''
    """Serve the real new-data flow with the real trigger; tiny training for the test."""
    import json, sys

    from prefect import serve

    from flows.deployments import new_data_trigger, one_at_a_time
    from flows.new_data import new_data_flow
    from mammoseg.settings import Settings

    root, heldout, store = sys.argv[1], sys.argv[2], sys.argv[3]
    settings = Settings(trigger_within_s={within}, retrain_source_url=root)
    tiny = dict(size=64, base_filters=4, depth=2, epochs=2, batch_size=4, n_boot=200,
                early_stopping_patience=2, test_fraction=0.0)
    serve(new_data_flow.to_deployment(
        "e2e", triggers=[new_data_trigger(settings)], concurrency_limit=one_at_a_time(),
        parameters=dict(params=tiny, heldout_dataset="mini-mias", heldout_source_url=heldout,
                        store_url=store, dataset="cbis-ddsm"),
    ))
''')


def test_uploading_new_dicoms_retrains_once_and_publishes(prefect_api: str, s3_bucket: str, tmp_path: Path) -> None:  # noqa: F811 - the fixture, imported
    from mammoseg.events import Watcher
    from mammoseg.publish import read_pointer
    from tasks.synth import synthesize

    bucket = f"s3://{s3_bucket}"
    root, store_url = f"{bucket}/raw/cbis", f"{bucket}/pipeline"
    # the held-out set is there before the service starts; the training data is not yet
    held = synthesize(store_url=f"{bucket}/heldout", patients=1, height=96, width=64, mias_images=4, mias_size=64)
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PYTHONPATH": str(REPO),
           "MAMMOSEG_WORK_DIR": str(tmp_path / "work"), "MAMMOSEG_PSEUDONYM_KEY": "e2e"}
    args = (root, held["mias_source_url"], store_url)
    with served(SERVE_REAL.format(within=WITHIN_S), "new-data/e2e", tmp_path, env, args) as dep:
        # Events go straight to this test's server over HTTP: Prefect's EventsWorker is a
        # process-wide singleton that earlier tests in the session bound to another server.
        def emit(event, resource, *, payload, occurred, id):
            body = [{"id": str(id), "occurred": occurred.isoformat(), "event": event,
                     "resource": resource, "payload": payload, "related": []}]
            httpx.post(f"{prefect_api}/events", json=body, timeout=10).raise_for_status()
            return id

        watcher = Watcher(root, name="e2e", state_store_url=store_url, emit=emit)
        assert watcher.poll_once() == []  # baseline of an empty root

        # new DICOMs (and their CSVs) arrive; the watcher announces each object
        t_upload = time.monotonic()
        synthesize(store_url=f"{bucket}/staging", out_url=f"{bucket}/staging", patients=3, height=96, width=64,
                   mias_images=0, seed=5)
        staging = open_store(f"{bucket}/staging/raw/synthetic-cbis-ddsm", get_settings())
        target = open_store(root, get_settings())
        for obj in staging.list():
            target.write_bytes(obj.key, staging.read_bytes(obj.key))
        announced = watcher.poll_once()
        assert len(announced) == len(list(target.list())) > 10

        run = _wait(lambda: [r for r in _runs_of(dep.id) if r.state and r.state.is_final()], 300,
                    "the new-data run to finish", step=2)
        elapsed = time.monotonic() - t_upload
        assert len(_runs_of(dep.id)) == 1, "a burst of uploads must start one run"
        assert run[0].state.is_completed(), (run[0].state, (tmp_path / "serve.log").read_text()[-4000:])
        assert run[0].parameters["source_url"].rstrip("/") == root
        pointer = read_pointer(open_store(store_url, get_settings()))
        assert pointer is not None  # a model was published and promoted
        metrics = json.loads(open_store(store_url, get_settings()).read_bytes(f"models/versions/{pointer.version}/metrics.json"))
        assert "dice_mean" in metrics
        print(f"\n[ops] {len(announced)} uploaded objects → 1 run, completed {elapsed:.0f} s after the upload began")
