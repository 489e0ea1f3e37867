"""The `dicom` adapter (unlabelled DICOMs, e.g. a PACS via dicomweb://) on a local folder."""

from __future__ import annotations

from mammoseg.adapters.registry import load_dataset
from mammoseg.storage import open_store
from mammoseg.synth.pacs import synthetic_study


def test_one_case_per_image_and_a_junk_file_rejected_without_uids(tmp_path) -> None:
    root = tmp_path / "pacs" / "1.2.3"
    root.mkdir(parents=True)
    a, b = synthetic_study(21, images=2, tag="adapter")
    (root / "a.dcm").write_bytes(a)
    (root / "b.dcm").write_bytes(b)
    (root / "junk.dcm").write_bytes(b"not a dicom at all" * 20)
    (root / "notes.txt").write_text("ignored")
    result = load_dataset("dicom", open_store(str(tmp_path / "pacs")), pseudonym_key="k")
    t = result.lesions
    assert len(t) == 2 and set(t["lesion_id"]) == {0} and set(t["pathology"]) == {"UNKNOWN"}
    assert sorted(t["laterality"]) == ["L", "R"] and t["patient_id"].nunique() == 1  # one study, one patient id
    assert t["case_id"].str.startswith("cs-").all()
    (reject,) = result.rejects
    assert reject.reason.startswith("unreadable DICOM: not a DICOM file") and reject.source == f"image {reject.case_id}"
