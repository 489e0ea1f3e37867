"""An incremental re-run redoes exactly what changed: nothing when nothing changed (the GX
suites' passed results and the contact sheet are reused, every case is a cache hit), one case
when one image changed, the metadata suite when one CSV row changed."""

from __future__ import annotations

import io
import json

import pandas as pd

from flows.data_pipeline import data_pipeline_flow
from flows.preprocess import preprocess_flow
from mammoseg.layout import SYNTH_CBIS_PREFIX, new_run_id
from mammoseg.preprocess.params import PreprocessParams
from mammoseg.settings import get_settings
from mammoseg.storage import open_store
from mammoseg.synth import CbisSynthParams, generate_cbis

PREP = PreprocessParams(size=64)


def _report(store, run_id: str, name: str) -> dict:
    return json.loads(store.read_bytes(f"runs/{run_id}/{name}"))


def test_a_rerun_reuses_what_did_not_change_and_redoes_what_did(tmp_path) -> None:
    store = open_store(str(tmp_path / "store"), get_settings())
    summary = generate_cbis(
        store, CbisSynthParams(n_patients=2, height=128, width=96, seed=5, n_bad=0, prefix=SYNTH_CBIS_PREFIX)
    )
    source_url = store.uri(SYNTH_CBIS_PREFIX).rstrip("/")
    source = open_store(source_url, get_settings())
    run = lambda: (rid := new_run_id(), data_pipeline_flow("cbis-ddsm", source_url, store.url, rid, PREP))

    first_id, first = run()
    n = first.counts["cases_preprocessed"]
    assert n == summary.n_images and first.counts["preprocess_computed"] == n
    assert "reused_from" not in _report(store, first_id, "report.json")["gate"]
    assert "reused" not in _report(store, first_id, "validation/lesion_metadata.json")

    # 1. nothing changed: the run is recognised as the first one's (same source objects,
    # parameters, settings, code), its outputs copied to this run's folder, nothing recomputed
    again_id, again = run()
    assert (again.counts["preprocess_computed"], again.counts["preprocess_cached"]) == (0, n)
    report = _report(store, again_id, "report.json")
    assert report["gate"]["reused_from"] == first_id and report["gate"]["success"]
    assert report["extra"]["reused_from"] == first_id
    assert report["cases_preprocessed"] == n and report["quarantined_total"] == 0
    assert not store.exists(f"runs/{again_id}/report-ingest.json")  # no stage flow ran
    assert again.manifest_uri == store.uri(f"runs/{again_id}/preprocessed.csv")
    for name in ("preprocessed.csv", "contact_sheet.png", "lesions-validated.csv", "lesions-ingest.csv"):
        assert store.read_bytes(f"runs/{again_id}/{name}") == store.read_bytes(f"runs/{first_id}/{name}")
    assert again.data_docs_uri == first.data_docs_uri
    assert report["outputs"]["gx_data_docs"] == first.data_docs_uri

    # 1b. a damaged record of the previous run is no reason to skip work: the run goes in full
    # (the stages still find their caches: GX reused, every case a cache hit)
    records = [o.key for o in store.list("cache/data-runs/")]
    assert len(records) == 1
    store.write_bytes(records[0], b"{damaged")
    full_id, full = run()
    assert store.exists(f"runs/{full_id}/report-ingest.json")  # the stage flows ran
    assert (full.counts["preprocess_computed"], full.counts["preprocess_cached"]) == (0, n)
    assert _report(store, full_id, "report.json")["gate"]["reused_from"] == first_id  # GX result reused

    # 1c. an array of the recorded run was pruned from the store: no reuse, that case recomputed
    manifest = pd.read_csv(io.BytesIO(store.read_bytes(f"runs/{full_id}/preprocessed.csv")))
    store.delete(manifest["npz_key"].iloc[0])
    pruned_id, pruned = run()
    assert store.exists(f"runs/{pruned_id}/report-ingest.json")
    assert (pruned.counts["preprocess_computed"], pruned.counts["preprocess_cached"]) == (1, n - 1)

    # 2. one full mammogram's pixels changed: exactly that case is recomputed
    images = sorted(
        o.key for o in source.list()
        if o.key.endswith("000000.dcm") and not o.key.split("/")[0].rsplit("_", 1)[-1].isdigit()
    )
    data = bytearray(source.read_bytes(images[0]))
    mid = len(data) - 4000  # inside the pixel data, the last element of the file
    data[mid:mid + 64] = bytes(b ^ 0x10 for b in data[mid:mid + 64])
    source.write_bytes(images[0], bytes(data))
    changed_id, changed = run()
    assert (changed.counts["preprocess_computed"], changed.counts["preprocess_cached"]) == (1, n - 1)
    assert _report(store, changed_id, "report.json")["gate"]["reused_from"] == first_id  # same table

    # 3. one CSV row changed (a valid subtlety): the metadata suite runs again on the new table
    csv_key = next(o.key for o in source.list() if o.key.endswith("_train_set.csv") and o.size > 500)
    lines = source.read_bytes(csv_key).decode().splitlines()
    header = lines[0].split(",")
    row = lines[1].split(",")
    col = header.index("subtlety")
    row[col] = "1" if row[col] != "1" else "2"
    source.write_bytes(csv_key, ("\n".join([lines[0], ",".join(row), *lines[2:]]) + "\n").encode())
    csv_id, csv_run = run()
    assert "reused_from" not in _report(store, csv_id, "report.json")["gate"]
    assert "reused" not in _report(store, csv_id, "validation/lesion_metadata.json")
    assert store.exists(f"runs/{csv_id}/data_docs/index.html")
    assert csv_run.counts["cases_validated"] == n
    assert csv_run.counts["preprocess_computed"] == 0  # no image changed


def test_a_rerun_of_a_stage_reuses_the_pairing_suite_and_the_contact_sheet(tmp_path) -> None:
    store = open_store(str(tmp_path / "store"), get_settings())
    generate_cbis(store, CbisSynthParams(n_patients=1, height=128, width=96, seed=2, n_bad=0, prefix=SYNTH_CBIS_PREFIX))
    source_url = store.uri(SYNTH_CBIS_PREFIX).rstrip("/")
    first_id = new_run_id()
    first = data_pipeline_flow("cbis-ddsm", source_url, store.url, first_id, PREP)
    again_id = new_run_id()
    again = preprocess_flow(first.lesions_uri, source_url, store.url, again_id, PREP)
    assert again.computed == 0 and again.cached == first.counts["cases_preprocessed"]
    pairing = _report(store, again_id, "validation/pairing.json")
    assert pairing["reused"]["from_run"] == first_id and pairing["success"]
    assert store.read_bytes(f"runs/{again_id}/contact_sheet.png") == store.read_bytes(f"runs/{first_id}/contact_sheet.png")
