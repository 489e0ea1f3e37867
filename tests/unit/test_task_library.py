"""The library behind the thin tasks (no Prefect): the GX gates with reuse, the end of
preprocessing, the infer-on-arrival report, the catalog's new readers and writers."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from mammoseg import catalog as cat
from mammoseg.arrival import ArrivalRun, InstanceOutcome, StudyOutcome
from mammoseg.catalog import RunCatalog
from mammoseg.casetable import conform, to_csv_bytes
from mammoseg.gate import GateDecision
from mammoseg.preprocess import finish
from mammoseg.preprocess.finish import PreprocessedCase, pairing_table
from mammoseg.runreport import QuarantineRecord
from mammoseg.settings import Settings
from mammoseg.storage import LocalStore
from mammoseg.validation import ExpectationOutcome, ValidationReport
from mammoseg.validation import gates
from mammoseg.validation.reuse import find_reusable, record_validation, validation_digest


@pytest.fixture(autouse=True)
def _fresh_cache():
    cat.CACHE.clear()
    yield
    cat.CACHE.clear()


@pytest.fixture()
def run(tmp_path: Path) -> RunCatalog:
    return RunCatalog(LocalStore(tmp_path / "store"), "r2", Settings(work_dir=tmp_path / "work"))


def _lesions() -> pd.DataFrame:
    return conform(pd.DataFrame({
        "case_id": ["C1", "C1", "C2", "C3"], "patient_id": ["P1", "P1", "P2", "P3"], "lesion_id": [1, 2, 1, 1],
        "image_uri": ["file:///a.png", "file:///a.png", "file:///b.png", "file:///c.png"],
    }))


def _report(suite: str, failing: dict[str, tuple[str, ...]], *, evaluated: int, table_error: bool = False) -> ValidationReport:
    """A report whose row-level expectations ``failing`` (description → case ids) failed."""
    results = [
        ExpectationOutcome(name=d, expectation_type="t", columns=("case_id",), success=not ids, description=d,
                           row_level=True, failing_ids=ids)
        for d, ids in failing.items()
    ]
    if table_error:
        results.append(ExpectationOutcome(name="cols", expectation_type="t", columns=(), success=False,
                                          description="columns present"))
    success = all(r.success for r in results)
    return ValidationReport(suite=suite, success=success, results=results, evaluated_rows=evaluated,
                            id_column="case_id", evaluated_ids=evaluated, run_name="r2")


def _fake_gx(monkeypatch: pytest.MonkeyPatch, report: ValidationReport) -> list[str]:
    calls: list[str] = []

    def validate_frame(table, suite, *, data_docs_dir=None, run_name=None):
        calls.append(suite)
        return report

    monkeypatch.setattr("mammoseg.validation.validate_frame", validate_frame)
    return calls


# -- validate_or_reuse -------------------------------------------------------------------------
def test_a_clean_pass_is_recorded_and_reused_by_the_next_run(run: RunCatalog, monkeypatch, tmp_path) -> None:
    table = _lesions()
    raw = to_csv_bytes(table)
    calls = _fake_gx(monkeypatch, _report("lesion_metadata", {"ok": ()}, evaluated=3))
    first = gates.validate_or_reuse(run, "lesion_metadata", table, raw, max_fraction=0.2)
    assert calls == ["lesion_metadata"] and first.success and first.reused_from is None
    assert json.loads(run.store.read_bytes("runs/r2/validation/lesion_metadata.json"))["success"] is True
    assert find_reusable(run.store, "lesion_metadata", validation_digest("lesion_metadata", raw, max_fraction=0.2))

    later = RunCatalog(run.store, "r3", run.settings)
    second = gates.validate_or_reuse(later, "lesion_metadata", table, raw, max_fraction=0.2)
    assert calls == ["lesion_metadata"]  # GX did not run again
    assert second.reused_from == "r2" and second.success and second.decision == GateDecision()
    doc = json.loads(later.store.read_bytes("runs/r3/validation/lesion_metadata.json"))
    assert doc["run_name"] == "r3" and doc["reused"]["from_run"] == "r2"
    # another quarantine limit is another digest: GX runs again
    gates.validate_or_reuse(later, "lesion_metadata", table, raw, max_fraction=0.5)
    assert calls == ["lesion_metadata", "lesion_metadata"]


def test_a_pass_that_quarantines_cases_is_not_recorded(run: RunCatalog, monkeypatch) -> None:
    table = _lesions()
    _fake_gx(monkeypatch, _report("lesion_metadata", {"pathology known": ("C2",)}, evaluated=3))
    got = gates.validate_or_reuse(run, "lesion_metadata", table, to_csv_bytes(table), max_fraction=0.5)
    assert not got.success and got.decision.reasons == {"C2": "lesion_metadata: pathology known"}
    assert not got.decision.stopped
    digest = validation_digest("lesion_metadata", to_csv_bytes(table), max_fraction=0.5)
    assert find_reusable(run.store, "lesion_metadata", digest) is None


# -- the metadata gate -------------------------------------------------------------------------
def test_metadata_gate_quarantines_and_writes_the_validated_table(run: RunCatalog, monkeypatch) -> None:
    lesions_uri = run.write_lesions(_lesions(), "ingest")
    _fake_gx(monkeypatch, _report("lesion_metadata", {"pathology known": ("C1",)}, evaluated=3))
    gate = gates.metadata_gate(run, lesions_uri, max_fraction=0.5, data_docs_dir=run.settings.work_dir / "docs")
    assert (gate.cases_in, gate.cases_passed) == (3, 2)
    assert gate.records == [QuarantineRecord(stage="validate", reason="lesion_metadata: pathology known", case_id="C1")]
    assert run.read_quarantine("validate") == gate.records
    assert gate.validated_uri == run.uri("runs/r2/lesions-validated.csv")
    assert run.read_lesions("validated")["case_id"].tolist() == ["C2", "C3"]


def test_metadata_gate_that_stops_writes_no_validated_table(run: RunCatalog, monkeypatch) -> None:
    lesions_uri = run.write_lesions(_lesions(), "ingest")
    # 2 of 3 cases fail: above a limit of 50 %
    _fake_gx(monkeypatch, _report("lesion_metadata", {"pathology known": ("C1", "C2")}, evaluated=3))
    gate = gates.metadata_gate(run, lesions_uri, max_fraction=0.5, data_docs_dir=run.settings.work_dir / "docs")
    assert gate.checked.decision.stopped and gate.validated_uri is None
    assert not run.exists(run.lesions_key("validated"))
    assert len(run.read_quarantine("validate")) == 2


def test_read_lesions_and_bytes_gives_the_stored_bytes(run: RunCatalog) -> None:
    uri = run.write_lesions(_lesions(), "ingest")
    table, raw = cat.read_lesions_and_bytes(uri, run.settings)
    assert raw == run.store.read_bytes(run.lesions_key("ingest"))
    assert table["case_id"].tolist() == ["C1", "C1", "C2", "C3"]


# -- the end of preprocessing ------------------------------------------------------------------
def _done() -> list[PreprocessedCase]:
    return [
        PreprocessedCase("C1", {"npz_key": "pre/1.npz", "cached": True}, [{"lesion_id": 1}, {"lesion_id": 2}]),
        PreprocessedCase("C2", {"npz_key": "pre/2.npz", "cached": False}, [{"lesion_id": 1}]),
        PreprocessedCase("C3", {"npz_key": "pre/3.npz"}, []),
    ]


def test_pairing_table_has_one_row_per_lesion() -> None:
    table = pairing_table(_done())
    assert table.to_dict("records") == [
        {"case_id": "C1", "lesion_id": 1}, {"case_id": "C1", "lesion_id": 2}, {"case_id": "C2", "lesion_id": 1},
    ]
    assert pairing_table([PreprocessedCase("C3", {})]).empty


def test_no_pairing_rows_no_suite_and_an_empty_quarantine(run: RunCatalog, monkeypatch) -> None:
    calls = _fake_gx(monkeypatch, _report("pairing", {}, evaluated=0))
    gate = finish.pairing_gate(run, [PreprocessedCase("C3", {})])
    assert calls == [] and gate == finish.PairingGate()
    assert run.exists(run.quarantine_key("pairing")) and run.read_quarantine("pairing") == []


def test_finish_preprocess_counts_only_the_cases_that_passed_pairing(run: RunCatalog, monkeypatch) -> None:
    lesions_uri = run.write_lesions(_lesions(), "validated")
    _fake_gx(monkeypatch, _report("pairing", {"mask inside the image": ("C2",)}, evaluated=2))
    sheets: list[list[str]] = []
    monkeypatch.setattr(finish, "run_contact_sheet",
                        lambda store, run_id, manifest: sheets.append(manifest["case_id"].tolist()) or "file:///sheet.png")
    records = {"patient_id": "x", "npz_etag": "e", "params_digest": "d"}
    done = [PreprocessedCase(c.case_id, {**c.record, **records}, c.pairing) for c in _done()]
    failed = [QuarantineRecord(stage="preprocess", reason="truncated", case_id="C9", source="raw/9.png")]
    got = finish.finish_preprocess(run, lesions_uri, done, failed)
    # C2 quarantined by the pairing suite; C1 was a cache hit, C3 computed
    assert (got.preprocessed, got.computed, got.cached) == (2, 1, 1)
    assert [r.case_id for r in got.pairing.records] == ["C2"]
    assert run.read_quarantine("preprocess")[0].case_id == "C9"
    assert run.read_manifest()["case_id"].tolist() == ["C1", "C3"]
    assert run.read_manifest()["patient_id"].tolist() == ["P1", "P3"]  # the lesion table's, not the record's
    assert sheets == [["C1", "C3"]] and got.contact_sheet_uri == "file:///sheet.png"
    assert got.pairing.report_uri == run.uri("runs/r2/validation/pairing.json")


# -- infer on arrival --------------------------------------------------------------------------
def test_arrival_run_lists_quarantine_and_renders_one_row_per_instance() -> None:
    outcome = StudyOutcome("st-1", "v7", (
        InstanceOutcome("cs-a", "segmented", lesion_pixels=40, n_lesions=2),
        InstanceOutcome("cs-b", "quarantined", reason="no breast"),
        InstanceOutcome("cs-c", "already-segmented"),
    ))
    done = ArrivalRun(outcome=outcome, model_uri="file:///m.keras", report_uri="file:///r.json")
    assert done.quarantine == [{"case_id": "cs-b", "reason": "no breast"}]
    assert done.markdown() == (
        "## Study st-1, model v7\n\n| case | status | lesions | lesion px | reason |\n|---|---|---|---|---|\n"
        "| cs-a | segmented | 2 | 40 |  |\n| cs-b | quarantined | 0 | 0 | no breast |\n"
        "| cs-c | already-segmented | 0 | 0 |  |"
    )
    unversioned = ArrivalRun(outcome=StudyOutcome("st-2", None, ()), model_uri="m", report_uri="r")
    assert unversioned.markdown().startswith("## Study st-2, model unversioned\n")


def test_inference_report_goes_to_report_infer(run: RunCatalog) -> None:
    uri = run.write_inference_report({"study_id": "st-1", "segmented": 1})
    assert uri == run.uri("runs/r2/report-infer.json")
    assert json.loads(run.store.read_bytes("runs/r2/report-infer.json")) == {"study_id": "st-1", "segmented": 1}


def test_record_validation_of_a_failed_report_records_nothing(run: RunCatalog) -> None:
    # the reuse module's contract the gates rely on
    assert record_validation(run.store, "pairing", "d" * 64, run_id="r2", report={"success": False},
                             summary_text="", data_docs_uri=None) is None
