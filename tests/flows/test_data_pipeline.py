"""ingest → validate → preprocess as real Prefect flow runs, on the local store and on S3 over HTTP."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from flows.data_pipeline import GateClosed, data_pipeline_flow
from flows.preprocess import preprocess_flow
from flows.validate import validate_flow
from mammoseg.casetable import from_csv_bytes, to_csv_bytes
from mammoseg.dicom import phi_values
from mammoseg.layout import SYNTH_CBIS_PREFIX, lesions_key, new_run_id
from mammoseg.preprocess.params import PreprocessParams
from mammoseg.runreport import read_quarantine
from mammoseg.settings import get_settings
from mammoseg.storage import open_store, open_uri
from mammoseg.synth import DEFECT_KINDS, CbisSynthParams, generate_cbis

PATIENTS = 4
PREP64 = PreprocessParams(size=64)


def _synth(store_url: str):
    store = open_store(store_url, get_settings())
    summary = generate_cbis(
        store,
        CbisSynthParams(n_patients=PATIENTS, height=128, width=96, seed=3, n_bad=len(DEFECT_KINDS), prefix=SYNTH_CBIS_PREFIX),
    )
    source_url = store.uri(SYNTH_CBIS_PREFIX).rstrip("/")
    return store, summary, source_url


def _run_and_check(store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    store, summary, source_url = _synth(store_url)
    source = open_store(source_url, get_settings())
    before = {o.key: o.etag for o in source.list()}
    run_id = new_run_id()

    result = data_pipeline_flow("cbis-ddsm", source_url, store_url, run_id, PREP64)

    # every defect kind is quarantined with a readable reason, nothing else is lost
    quarantined = read_quarantine(store, run_id)
    reasons = " | ".join(q.reason for q in quarantined)
    for expected in (
        "truncated DICOM",
        "no pixel data",
        "no ROI mask",
        "but the image is",
        "is not an integer",
        "escapes the dataset",
    ):
        assert expected in reasons, f"{expected!r} not among quarantine reasons: {reasons}"
    assert len(quarantined) == len(DEFECT_KINDS)
    good_images = summary.n_images - len(DEFECT_KINDS)
    assert result.counts["cases_preprocessed"] == good_images
    assert result.counts["quarantined"] == len(DEFECT_KINDS)

    # the source is untouched: same objects, same ETags
    assert {o.key: o.etag for o in source.list()} == before

    # the manifest lists exactly the good cases with their content-addressed arrays
    s, k = open_uri(result.manifest_uri, get_settings())
    manifest = pd.read_csv(pd.io.common.BytesIO(s.read_bytes(k)))
    assert len(manifest) == good_images
    assert manifest["npz_key"].str.startswith("preprocessed/").all()
    assert all(store.exists(key) for key in manifest["npz_key"])

    # the report adds up and is in the store; the contact sheet is a PNG
    report = json.loads(store.read_bytes(f"runs/{run_id}/report.json"))
    assert report["quarantined_total"] == len(DEFECT_KINDS)
    assert report["cases_ingested"] + report["quarantine_counts"]["ingest"] == report["cases_found"]
    assert store.read_bytes(f"runs/{run_id}/contact_sheet.png")[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.data_docs_uri and store.exists(f"runs/{run_id}/data_docs/index.html")

    # no DICOM header PHI anywhere in what the run wrote
    phi = set()
    for o in source.list():
        if o.key.endswith(".dcm"):
            try:
                phi |= phi_values(source.read_bytes(o.key))
            except Exception:  # noqa: BLE001, S112 - the deliberately broken files have no readable header
                continue
    assert any("SYNTH" in p for p in phi), "the synthetic headers should carry fake PHI"
    # quarantine reasons, even in the source index, name no header value, case folder (= the
    # PatientID) or CSV patient id: cases are named by pseudonym only
    for q in quarantined:
        leaked = [p for p in phi if len(p) >= 6 and p in q.reason]
        assert not leaked and not re.search(r"P_\d{5}", q.reason), f"{q.stage} reason quotes {leaked}: {q.reason}"
    # Everything derived is checked, except the run's source index (lesion tables and
    # quarantine records), which by design maps pseudonyms back to the source objects.
    for o in list(store.list("runs/")) + list(store.list("preprocessed/")):
        if o.key.rsplit("/", 1)[-1].startswith("lesions-") or "/quarantine/" in o.key:
            continue
        text = store.read_bytes(o.key).decode("latin-1")
        leaked = [p for p in phi if len(p) >= 6 and p in text]
        assert not leaked, f"{o.key} contains header values {leaked}"
    logged = caplog.text
    assert "quarantined at preprocessing" in logged  # the logs were captured
    leaked = [p for p in phi if len(p) >= 6 and p in logged]
    assert not leaked, f"the run's logs contain header values {leaked}"


def test_pipeline_on_the_local_store(tmp_path, caplog) -> None:
    _run_and_check(str(tmp_path / "store"), caplog)


def test_pipeline_on_s3_over_http(s3_bucket: str, caplog) -> None:
    _run_and_check(f"s3://{s3_bucket}/pipeline", caplog)


def test_second_preprocess_run_is_all_cache_hits(tmp_path) -> None:
    store_url = str(tmp_path / "store")
    _, _, source_url = _synth(store_url)
    first = data_pipeline_flow("cbis-ddsm", source_url, store_url, new_run_id(), PREP64)
    assert first.counts["preprocess_computed"] == first.counts["cases_preprocessed"] > 0
    validated = first.report_uri.replace("report.json", "lesions-validated.csv")
    second = preprocess_flow(validated, source_url, store_url, new_run_id(), PREP64)
    assert second.computed == 0
    assert second.cached == first.counts["cases_preprocessed"]


def test_gate_quarantines_failing_cases_or_stops(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    store_url = str(tmp_path / "store")
    store, _, source_url = _synth(store_url)
    run_id = new_run_id()
    from flows.ingest import ingest_flow

    ingest = ingest_flow("cbis-ddsm", source_url, store_url, run_id)
    s, k = open_uri(ingest.lesions_uri, get_settings())
    table = from_csv_bytes(s.read_bytes(k))
    bad_case = table["case_id"].iloc[0]
    table.loc[table["case_id"] == bad_case, "density"] = 9
    store.write_bytes(lesions_key(run_id, "ingest"), to_csv_bytes(table))

    monkeypatch.setenv("MAMMOSEG_QUARANTINE_MAX_FRACTION", "0.5")
    state = validate_flow(ingest.lesions_uri, store_url, run_id, return_state=True)
    # the failed suite shows in the run list as such, and the run still completes with its gate
    assert state.is_completed() and state.name == "Expectations failed", state
    gate = state.result()
    assert gate.stop_reason is None and gate.cases_quarantined == 1 and not gate.success
    (record,) = [q for q in read_quarantine(store, run_id) if q.stage == "validate"]
    assert record.case_id == bad_case and "density" in record.reason

    monkeypatch.setenv("MAMMOSEG_QUARANTINE_MAX_FRACTION", "0.0")
    gate = validate_flow(ingest.lesions_uri, store_url, run_id)
    assert gate.stop_reason and gate.validated_uri is None


def test_pipeline_raises_gate_closed_and_still_writes_the_report(tmp_path, monkeypatch) -> None:
    store_url = str(tmp_path / "store")
    store, _, source_url = _synth(store_url)
    # break the metadata of every case: the gate must close
    key = f"{SYNTH_CBIS_PREFIX}/csv/mass_case_description_train_set.csv"
    text = store.read_bytes(key).decode()
    store.write_bytes(key, text.replace(",MALIGNANT,", ",MAYBE,").replace(",BENIGN,", ",MAYBE,").encode())
    monkeypatch.setenv("MAMMOSEG_QUARANTINE_MAX_FRACTION", "0.0")
    run_id = new_run_id()
    with pytest.raises(GateClosed, match="above the limit"):
        data_pipeline_flow("cbis-ddsm", source_url, store_url, run_id, PREP64)
    assert store.exists(f"runs/{run_id}/report.json")
