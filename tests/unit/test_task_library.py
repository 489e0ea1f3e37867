"""The library behind the thin tasks (no Prefect): the GX gates with reuse, the end of
preprocessing, the infer-on-arrival report, the catalog's new readers and writers.

Nothing of mammoseg is faked: Great Expectations runs the real suites of ``expectations/`` on
small hand-made tables, and the end of preprocessing gets real :func:`preprocess_case` results
(small phantom PNGs) and draws its real contact sheet. The first GX run of the session pays
GX's import (several seconds); every later suite run here takes a fraction of a second.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from mammoseg import catalog as cat
from mammoseg.arrival import ArrivalRun, InstanceOutcome, StudyOutcome
from mammoseg.casetable import circle_geometry, conform, to_csv_bytes
from mammoseg.catalog import RunCatalog
from mammoseg.gate import GateDecision
from mammoseg.layout import validation_reuse_key
from mammoseg.preprocess import MaskRef, PreprocessError, PreprocessParams, finish, preprocess_case
from mammoseg.preprocess.finish import PreprocessedCase, pairing_table
from mammoseg.runreport import QuarantineRecord
from mammoseg.settings import Settings
from mammoseg.storage import LocalStore, ObjectStore
from mammoseg.validation import gates
from mammoseg.validation.reuse import record_validation, validation_digest

#: The reasons the real suites give (``<suite>: <rule text>``), as the suite files word them.
PATHOLOGY_RULE = "lesion_metadata: pathology must be one of MALIGNANT, BENIGN, BENIGN_WITHOUT_CALLBACK, NORMAL, UNKNOWN"
VIEW_RULE = "lesion_metadata: view must be one of CC, MLO, ML, LM, XCCL, FB, OTHER"
BINARY_RULE = "pairing: mask_binary must be true (where lesion_id > 0)"


@pytest.fixture(autouse=True)
def _fresh_cache(fresh_catalog_cache):
    """Every test here starts with an empty catalog cache (tests/unit/conftest.py)."""


@pytest.fixture()
def run(tmp_path: Path) -> RunCatalog:
    return RunCatalog(LocalStore(tmp_path / "store"), "r2", Settings(work_dir=tmp_path / "work"))


def _lesions(uri: str = "file:///src", **broken: tuple[int, str, object]) -> pd.DataFrame:
    """Three images, four rows, that pass the real ``lesion_metadata`` suite: cs-aa01 with two
    lesions (a mask file and a circle), cs-bb02 one lesion (a mask file), cs-cc03 without lesion.
    ``broken``: name → (row, column, value) changes that break a rule."""
    base = {"source_dataset": "synthetic-test", "source_split": "", "image_type": "FFDM", "density": 2}
    rows = [
        dict(base, case_id="cs-aa01", patient_id="pt-1", lesion_id=1, laterality="R", view="CC",
             image_uri=f"{uri}/a1.png", mask_uri=f"{uri}/a1_m1.png", abnormality_type="mass",
             pathology="MALIGNANT", birads=5, subtlety=4),
        dict(base, case_id="cs-aa01", patient_id="pt-1", lesion_id=2, laterality="R", view="CC",
             image_uri=f"{uri}/a1.png", mask_geometry=circle_geometry(105, 70, 6),
             abnormality_type="calcification", pathology="BENIGN", birads=2, subtlety=1),
        dict(base, case_id="cs-bb02", patient_id="pt-2", lesion_id=1, laterality="R", view="MLO",
             image_uri=f"{uri}/b2.png", mask_uri=f"{uri}/b2_m1.png", abnormality_type="mass",
             pathology="BENIGN_WITHOUT_CALLBACK", birads=3, subtlety=3),
        dict(base, case_id="cs-cc03", patient_id="pt-3", lesion_id=0, laterality="R", view="MLO",
             image_uri=f"{uri}/c3.png", abnormality_type="normal", pathology="NORMAL", birads=1),
    ]
    for row, column, value in broken.values():
        rows[row][column] = value
    return conform(pd.DataFrame(rows))


def _recorded(store: ObjectStore, suite: str) -> list[str]:
    """The keys of the recorded clean passes of ``suite`` (``cache/validation/<suite>/``)."""
    return sorted(o.key for o in store.list(f"cache/validation/{suite}/"))


def _report(run: RunCatalog, suite: str) -> dict:
    return json.loads(run.store.read_bytes(f"runs/{run.run_id}/validation/{suite}.json"))


# -- validate_or_reuse -------------------------------------------------------------------------
def test_a_clean_pass_is_recorded_and_reused_by_the_next_run(run: RunCatalog, tmp_path: Path) -> None:
    table = _lesions()
    raw = to_csv_bytes(table)
    first = gates.validate_or_reuse(run, "lesion_metadata", table, raw, max_fraction=0.2,
                                    data_docs_dir=tmp_path / "docs-r2")
    assert first.success and first.reused_from is None and first.decision == GateDecision()
    doc = _report(run, "lesion_metadata")
    assert doc["success"] is True and (doc["evaluated_rows"], doc["evaluated_ids"]) == (4, 3)
    assert "reused" not in doc and all(r["success"] for r in doc["results"])
    assert (tmp_path / "docs-r2" / "index.html").is_file()  # GX built its Data Docs
    assert first.data_docs_uri == run.uri("runs/r2/data_docs/index.html") and run.exists("runs/r2/data_docs/index.html")
    digest = validation_digest("lesion_metadata", raw, max_fraction=0.2)
    assert _recorded(run.store, "lesion_metadata") == [validation_reuse_key("lesion_metadata", digest)]

    later = RunCatalog(run.store, "r3", run.settings)
    second = gates.validate_or_reuse(later, "lesion_metadata", table, raw, max_fraction=0.2,
                                     data_docs_dir=tmp_path / "docs-r3")
    assert second.reused_from == "r2" and second.success and second.decision == GateDecision()
    # GX did not run: it would have created the Data Docs folder; the docs are r2's
    assert not (tmp_path / "docs-r3").exists() and second.data_docs_index is None
    assert second.data_docs_uri == first.data_docs_uri and second.summary_text == first.summary_text
    again = _report(later, "lesion_metadata")
    assert again["run_name"] == "r3" and again["reused"] == {"from_run": "r2", "digest": digest}
    assert again["results"] == doc["results"]

    # another quarantine limit is another digest: GX runs again, and records a second pass
    third = gates.validate_or_reuse(RunCatalog(run.store, "r4", run.settings), "lesion_metadata", table, raw,
                                    max_fraction=0.5, data_docs_dir=tmp_path / "docs-r4")
    assert third.reused_from is None and third.success and (tmp_path / "docs-r4" / "index.html").is_file()
    assert "reused" not in json.loads(run.store.read_bytes("runs/r4/validation/lesion_metadata.json"))
    assert len(_recorded(run.store, "lesion_metadata")) == 2


def test_a_pass_that_quarantines_cases_is_not_recorded(run: RunCatalog, tmp_path: Path) -> None:
    table = _lesions(bad=(2, "pathology", "NOT_A_PATHOLOGY"))  # cs-bb02: an unknown pathology
    raw = to_csv_bytes(table)
    got = gates.validate_or_reuse(run, "lesion_metadata", table, raw, max_fraction=0.5)
    assert not got.success and got.reused_from is None
    assert got.decision.reasons == {"cs-bb02": PATHOLOGY_RULE}
    assert not got.decision.stopped and got.decision.failing_fraction == pytest.approx(1 / 3)
    doc = _report(run, "lesion_metadata")
    assert doc["success"] is False and doc["evaluated_ids"] == 3
    assert _recorded(run.store, "lesion_metadata") == []  # nothing to reuse

    # so the next run validates the same table for real again (its Data Docs get built)
    later = gates.validate_or_reuse(RunCatalog(run.store, "r3", run.settings), "lesion_metadata", table, raw,
                                    max_fraction=0.5, data_docs_dir=tmp_path / "docs-r3")
    assert later.reused_from is None and later.decision.reasons == {"cs-bb02": PATHOLOGY_RULE}
    assert (tmp_path / "docs-r3" / "index.html").is_file()
    assert _recorded(run.store, "lesion_metadata") == []


# -- the metadata gate -------------------------------------------------------------------------
def test_metadata_gate_quarantines_and_writes_the_validated_table(run: RunCatalog) -> None:
    # one of cs-aa01's two lesions has an unknown pathology: the whole image goes
    lesions_uri = run.write_lesions(_lesions(bad=(1, "pathology", "NOT_A_PATHOLOGY")), "ingest")
    gate = gates.metadata_gate(run, lesions_uri, max_fraction=0.5, data_docs_dir=run.settings.work_dir / "docs")
    assert (gate.cases_in, gate.cases_passed) == (3, 2)
    assert gate.records == [QuarantineRecord(stage="validate", reason=PATHOLOGY_RULE, case_id="cs-aa01")]
    assert run.read_quarantine("validate") == gate.records
    assert gate.checked.report_uri == run.uri("runs/r2/validation/lesion_metadata.json")
    assert run.exists("runs/r2/data_docs/index.html")
    assert gate.validated_uri == run.uri("runs/r2/lesions-validated.csv")
    validated = run.read_lesions("validated")
    assert validated["case_id"].tolist() == ["cs-bb02", "cs-cc03"]
    assert validated["pathology"].tolist() == ["BENIGN_WITHOUT_CALLBACK", "NORMAL"]


def test_metadata_gate_that_stops_writes_no_validated_table(run: RunCatalog) -> None:
    # cs-aa01 (unknown pathology) and cs-cc03 (unknown view) fail: 2 of 3 cases, above a limit of 50 %
    broken = _lesions(p=(0, "pathology", "NOT_A_PATHOLOGY"), v=(3, "view", "AP"))
    gate = gates.metadata_gate(run, run.write_lesions(broken, "ingest"), max_fraction=0.5,
                               data_docs_dir=run.settings.work_dir / "docs")
    assert gate.checked.decision.stop_reason == (
        "2 of 3 cases (67%) fail suite 'lesion_metadata', above the limit of 50% (MAMMOSEG_QUARANTINE_MAX_FRACTION)"
    )
    assert gate.validated_uri is None and not run.exists(run.lesions_key("validated"))
    assert run.read_quarantine("validate") == [
        QuarantineRecord(stage="validate", reason=PATHOLOGY_RULE, case_id="cs-aa01"),
        QuarantineRecord(stage="validate", reason=VIEW_RULE, case_id="cs-cc03"),
    ]
    assert (gate.cases_in, gate.cases_passed) == (3, 1)
    assert _recorded(run.store, "lesion_metadata") == []


def test_read_lesions_and_bytes_gives_the_stored_bytes(run: RunCatalog) -> None:
    uri = run.write_lesions(_lesions(), "ingest")
    table, raw = cat.read_lesions_and_bytes(uri, run.settings)
    assert raw == run.store.read_bytes(run.lesions_key("ingest"))
    assert table["case_id"].tolist() == ["cs-aa01", "cs-aa01", "cs-bb02", "cs-cc03"]


# -- the end of preprocessing ------------------------------------------------------------------
H, W = 200, 120  # a small phantom: a half-ellipse breast on the right edge, a label top left
PARAMS = PreprocessParams(size=64)


def _png(arr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    return buf.tobytes()


def _disc(cy: int, cx: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _phantom(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    breast = ((yy - 100) / 60) ** 2 + ((xx - (W - 1)) / 50) ** 2 <= 1.0
    depth = 1.0 - np.abs(xx - (W - 1)) / 50
    tissue = (0.35 + 0.3 * depth + 0.05 * rng.standard_normal((H, W))) * 65535
    img = np.where(breast, np.clip(tissue, 6553, 52428), 0.0)
    img[5:20, 0:30] = 65535
    return img.astype(np.uint16)


def _preprocess(source_dir: Path, out: ObjectStore) -> tuple[list[PreprocessedCase], list[QuarantineRecord], str]:
    """Real :func:`preprocess_case` runs, turned into outcomes as the preprocess task does:
    cs-aa01 (a binary mask and a circle; preprocessed before, so a cache hit), cs-bb02 (a grey
    mask: preprocessing goes through, the pairing suite refuses it), cs-cc03 (no lesion), and
    cs-dd04 (a mask on the film label, outside the breast: refused by preprocessing).
    Returns (done, failed, the source folder's URI)."""
    src = LocalStore(source_dir)
    lesion = _disc(100, 95, 12).astype(np.uint8)
    on_label = np.zeros((H, W), np.uint8)
    on_label[6:18, 2:25] = 255
    objects = {"a1.png": _phantom(1), "a1_m1.png": lesion * 255, "b2.png": _phantom(2), "b2_m1.png": lesion * 128,
               "c3.png": _phantom(3), "d4.png": _phantom(4), "d4_m1.png": on_label}
    for key, arr in objects.items():
        src.write_bytes(key, _png(arr))
    a1_masks = [MaskRef(key="a1_m1.png"), MaskRef(geometry=circle_geometry(105, 70, 6))]
    preprocess_case(src, "a1.png", a1_masks, out, PARAMS, laterality="R")  # an earlier run's
    specs = {"cs-aa01": ("a1.png", a1_masks), "cs-bb02": ("b2.png", [MaskRef(key="b2_m1.png")]),
             "cs-cc03": ("c3.png", []), "cs-dd04": ("d4.png", [MaskRef(key="d4_m1.png")])}
    done, failed = [], []
    for case_id, (image_key, masks) in specs.items():
        try:
            result = preprocess_case(src, image_key, masks, out, PARAMS, laterality="R")
        except PreprocessError as exc:
            failed.append(QuarantineRecord(stage="preprocess", reason=str(exc), case_id=case_id, source=image_key))
            continue
        done.append(PreprocessedCase(case_id, result.to_record(), result.pairing_records()))
    return done, failed, src.uri("a1.png").rsplit("/", 1)[0]


def test_pairing_table_has_one_row_per_lesion() -> None:
    done = [
        PreprocessedCase("C1", {"npz_key": "pre/1.npz"}, [{"lesion_id": 1}, {"lesion_id": 2}]),
        PreprocessedCase("C2", {"npz_key": "pre/2.npz"}, [{"lesion_id": 1}]),
        PreprocessedCase("C3", {"npz_key": "pre/3.npz"}, []),
    ]
    assert pairing_table(done).to_dict("records") == [
        {"case_id": "C1", "lesion_id": 1}, {"case_id": "C1", "lesion_id": 2}, {"case_id": "C2", "lesion_id": 1},
    ]
    assert pairing_table([PreprocessedCase("C3", {})]).empty


def test_no_pairing_rows_no_suite_and_an_empty_quarantine(run: RunCatalog) -> None:
    gate = finish.pairing_gate(run, [PreprocessedCase("cs-cc03", {})])
    assert gate == finish.PairingGate()
    assert not run.exists("runs/r2/validation/pairing.json")  # GX never ran
    assert run.exists(run.quarantine_key("pairing")) and run.read_quarantine("pairing") == []


def test_finish_preprocess_counts_only_the_cases_that_passed_pairing(run: RunCatalog, tmp_path: Path) -> None:
    done, failed, source_uri = _preprocess(tmp_path / "src", run.store)
    assert [c.case_id for c in done] == ["cs-aa01", "cs-bb02", "cs-cc03"]
    assert [r.case_id for r in failed] == ["cs-dd04"] and "inside the detected breast" in failed[0].reason
    assert [len(c.pairing) for c in done] == [2, 1, 1]  # per lesion; one lesion_id 0 row for cs-cc03
    lesions_uri = run.write_lesions(_lesions(source_uri), "validated")

    got = finish.finish_preprocess(run, lesions_uri, done, failed)
    # the pairing suite refuses cs-bb02's grey mask; cs-aa01 was a cache hit, cs-cc03 computed
    assert (got.preprocessed, got.computed, got.cached) == (2, 1, 1)
    assert got.pairing.records == [QuarantineRecord(stage="pairing", reason=BINARY_RULE, case_id="cs-bb02")]
    assert run.read_quarantine("pairing") == got.pairing.records
    assert run.read_quarantine("preprocess") == failed
    assert got.pairing.report_uri == run.uri("runs/r2/validation/pairing.json")
    doc = _report(run, "pairing")
    assert doc["success"] is False and (doc["evaluated_rows"], doc["evaluated_ids"]) == (4, 3)
    assert got.pairing.reused_from is None and _recorded(run.store, "pairing") == []  # a failed pass

    manifest = run.read_manifest()
    assert manifest["case_id"].tolist() == ["cs-aa01", "cs-cc03"]
    assert manifest["patient_id"].tolist() == ["pt-1", "pt-3"]  # from the lesion table
    assert manifest["n_lesions"].tolist() == [2, 0]
    assert got.manifest_uri == run.uri("runs/r2/preprocessed.csv")

    # the real contact sheet: two 128 px tiles, the lesion contour (yellow) on cs-aa01's only
    assert got.contact_sheet_uri == run.uri("runs/r2/contact_sheet.png")
    sheet = cv2.imdecode(np.frombuffer(run.store.read_bytes("runs/r2/contact_sheet.png"), np.uint8), cv2.IMREAD_COLOR)
    assert sheet.shape == (128, 256, 3)
    yellow = np.all(sheet == (0, 255, 255), axis=2)
    assert yellow[:, :128].any() and not yellow[:, 128:].any()


def test_a_clean_pairing_table_is_recorded_and_reused_by_the_next_run(run: RunCatalog, tmp_path: Path) -> None:
    done, _, _ = _preprocess(tmp_path / "src", run.store)
    clean = [c for c in done if c.case_id != "cs-bb02"]  # cs-aa01 (2 lesions), cs-cc03 (none)
    first = finish.pairing_gate(run, clean)
    assert first == finish.PairingGate(report_uri=run.uri("runs/r2/validation/pairing.json"))
    doc = _report(run, "pairing")
    assert doc["success"] is True and (doc["evaluated_rows"], doc["evaluated_ids"]) == (3, 2)
    assert len(_recorded(run.store, "pairing")) == 1

    later = RunCatalog(run.store, "r3", run.settings)
    second = finish.pairing_gate(later, clean)
    assert second.reused_from == "r2" and second.records == []
    assert _report(later, "pairing")["reused"]["from_run"] == "r2"
    # with cs-bb02 back the table differs: validated for real, cs-bb02 quarantined
    third = finish.pairing_gate(RunCatalog(run.store, "r4", run.settings), done)
    assert third.reused_from is None and [r.case_id for r in third.records] == ["cs-bb02"]


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
