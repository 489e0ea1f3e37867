"""The ingest and preprocess flows, run on their own (and by the CLI), write a run report of
their own (``runs/<id>/report-<stage>.json``); inside the data pipeline they do too, beside the
pipeline's ``report.json``, which stays as it was."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.data_pipeline import data_pipeline_flow
from flows.ingest import ingest_flow
from flows.preprocess import preprocess_flow
from mammoseg.cli import app
from mammoseg.layout import SYNTH_CBIS_PREFIX, new_run_id
from mammoseg.preprocess.params import PreprocessParams
from mammoseg.settings import get_settings
from mammoseg.storage import open_store
from mammoseg.synth import DEFECT_KINDS, CbisSynthParams, generate_cbis

PREP64 = PreprocessParams(size=64)
MASS_TRAIN = "mass_case_description_train_set.csv"


@pytest.fixture()
def synth(tmp_path):
    store_url = str(tmp_path / "store")
    store = open_store(store_url, get_settings())
    summary = generate_cbis(
        store,
        CbisSynthParams(
            n_patients=3,
            height=128,
            width=96,
            seed=3,
            n_bad=len(DEFECT_KINDS),
            prefix=SYNTH_CBIS_PREFIX,
        ),
    )
    return store, store_url, summary, store.uri(SYNTH_CBIS_PREFIX).rstrip("/")


def _report(store, run_id: str, name: str) -> dict:
    return json.loads(store.read_bytes(f"runs/{run_id}/{name}"))


def test_standalone_ingest_and_preprocess_write_their_reports(synth) -> None:
    store, store_url, summary, source_url = synth
    run_id = new_run_id()
    ingest = ingest_flow("cbis-ddsm", source_url, store_url, run_id)
    assert ingest.report_uri == store.uri(f"runs/{run_id}/report-ingest.json")
    report = _report(store, run_id, "report-ingest.json")
    assert (
        report["stage"] == "ingest"
        and report["dataset"] == "cbis-ddsm"
        and report["run_id"] == run_id
    )
    assert report["objects_found"] == ingest.objects_found > 0
    assert report["cases_ingested"] == ingest.cases
    assert report["quarantine_counts"]["ingest"] == ingest.rejected > 0
    # every image the data set lists is counted: found = ingested + quarantined at ingest
    assert report["cases_found"] == ingest.cases + ingest.rejected == summary.n_images
    assert report["outputs"] == {"lesions": ingest.lesions_uri, "quarantine": ingest.quarantine_uri}
    assert all(
        "source" not in q and q["stage"] in ("ingest", "skipped") for q in report["quarantined"]
    )
    assert not store.exists(f"runs/{run_id}/report.json")  # the pipeline's key is left alone

    prep_run = new_run_id()
    prep = preprocess_flow(ingest.lesions_uri, source_url, store_url, prep_run, PREP64)
    assert prep.report_uri == store.uri(f"runs/{prep_run}/report-preprocess.json")
    report = _report(store, prep_run, "report-preprocess.json")
    assert report["stage"] == "preprocess" and report["dataset"] == "cbis-ddsm"
    q = report["quarantine_counts"]
    assert report["cases_found"] == prep.cases_in == ingest.cases
    assert report["cases_preprocessed"] == prep.cases_preprocessed > 0
    assert report["cases_found"] == report["cases_preprocessed"] + q["preprocess"] + q["pairing"]
    assert report["quarantined_total"] == prep.quarantined > 0  # the broken DICOMs
    assert (report["preprocess_computed"], report["preprocess_cached"]) == (
        prep.computed,
        prep.cached,
    )
    assert (
        report["outputs"]["manifest"] == prep.manifest_uri
        and report["outputs"]["lesions"] == ingest.lesions_uri
    )


def test_the_pipeline_report_stays_and_the_stage_reports_sit_beside_it(synth) -> None:
    store, store_url, summary, source_url = synth
    run_id = new_run_id()
    result = data_pipeline_flow("cbis-ddsm", source_url, store_url, run_id, PREP64)
    assert result.report_uri == store.uri(f"runs/{run_id}/report.json")
    pipeline = _report(store, run_id, "report.json")
    ingest = _report(store, run_id, "report-ingest.json")
    prep = _report(store, run_id, "report-preprocess.json")
    assert (
        "stage" not in pipeline and pipeline["gate"]["suite"]
    )  # the pipeline's own, with the GX gate
    assert pipeline["cases_found"] == ingest["cases_found"] == summary.n_images
    assert (
        pipeline["cases_preprocessed"]
        == prep["cases_preprocessed"]
        == result.counts["cases_preprocessed"]
    )
    assert pipeline["quarantined_total"] == result.counts["quarantined"]
    assert (ingest["stage"], prep["stage"]) == ("ingest", "preprocess")


def test_cli_ingest_and_preprocess_show_the_report(synth) -> None:
    store, store_url, _, source_url = synth
    runner = CliRunner()
    out = runner.invoke(app, ["ingest", "--source", source_url, "--store", store_url, "--json"])
    assert out.exit_code == 0, out.output
    payload = json.loads(out.stdout.strip().splitlines()[-1])
    assert payload["report_uri"].endswith(f"runs/{payload['run_id']}/report-ingest.json")
    assert store.exists(f"runs/{payload['run_id']}/report-ingest.json")

    out = runner.invoke(
        app,
        [
            "preprocess",
            "--lesions",
            payload["lesions_uri"],
            "--source",
            source_url,
            "--store",
            store_url,
            "--size",
            "64",
        ],
    )
    assert out.exit_code == 0, out.output
    (line,) = [x for x in out.stdout.splitlines() if x.startswith("run report: ")]
    assert line.endswith("/report-preprocess.json")
    key = line.removeprefix("run report: ").split("/runs/", 1)[1]
    assert store.exists(f"runs/{key}")


def test_a_csv_missing_a_column_counts_each_of_its_cases_in_the_report(synth) -> None:
    store, store_url, summary, source_url = synth
    key = f"{SYNTH_CBIS_PREFIX}/csv/{MASS_TRAIN}"
    frame = pd.read_csv(io.BytesIO(store.read_bytes(key)), dtype=str, keep_default_na=False)
    n_cases = frame["image file path"].str.split("/").str[0].nunique()
    assert n_cases >= 2  # the fault this guards against: many cases collapsed into one reject
    store.write_bytes(
        key, frame.drop(columns=["pathology"]).to_csv(index=False).encode(), "text/csv"
    )

    run_id = new_run_id()
    ingest = ingest_flow("cbis-ddsm", source_url, store_url, run_id)
    report = _report(store, run_id, "report-ingest.json")
    assert report["cases_found"] == summary.n_images
    whole_file = [q for q in report["quarantined"] if MASS_TRAIN in q["reason"]]
    assert len(whole_file) == n_cases
    assert all(q["case_id"].startswith("cs-") and "'pathology'" in q["reason"] for q in whole_file)
    assert ingest.rejected >= n_cases
