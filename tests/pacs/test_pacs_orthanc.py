"""A real Orthanc over DICOMweb: QIDO/WADO/STOW, the PACS as an ingest source, the changes-feed
watcher, and inference on arrival storing DICOM SEGs back — compared with `mammoseg predict`."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from mammoseg.dicom import phi_values
from mammoseg.orthanc_local import LocalOrthanc
from mammoseg.pacs import Pacs, PacsError, PacsUnavailable
from mammoseg.settings import Settings
from mammoseg.synth.pacs import synthetic_study


def _pacs(orthanc: LocalOrthanc, **kw) -> Pacs:
    return Pacs(orthanc.pacs_url, Settings(**kw))


def _upload(pacs: Pacs, blobs: list[bytes]) -> None:
    for b in blobs:
        pacs.store(b)


def _study_uid(blob: bytes) -> str:
    import io

    import pydicom

    return str(pydicom.dcmread(io.BytesIO(blob), stop_before_pixels=True).StudyInstanceUID)


def _settled(orthanc: LocalOrthanc, timeout: float = 60.0) -> None:
    """Wait until every study already in Orthanc is stable, so that a study an earlier test
    uploaded cannot turn stable after a watcher's baseline and look like a new arrival."""
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        studies = requests.get(f"{orthanc.rest_url}/studies?expand", timeout=10).json()
        if all(s.get("IsStable") for s in studies):
            return
        time.sleep(0.3)
    raise AssertionError("Orthanc's studies did not all turn stable")


def _wait_stable(pacs: Pacs, since: int, timeout: float = 30.0) -> list:
    """StableStudy changes after ``since`` (Orthanc's StableAge is 1 s here)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page = pacs.changes(since, limit=1000)
        stable = [c for c in page.changes if c.change_type == "StableStudy"]
        if stable:
            return stable
        time.sleep(0.3)
    raise AssertionError("Orthanc announced no stable study")


def test_qido_pages_and_wado_returns_the_uploaded_bytes(orthanc: LocalOrthanc) -> None:
    pacs = _pacs(orthanc, pacs_page_size=1)  # every QIDO level has to page
    blobs = synthetic_study(1, images=3, tag="qido")
    _upload(pacs, blobs)
    study = _study_uid(blobs[0])
    assert study in set(pacs.studies())
    (series,) = pacs.image_series(study)
    sops = pacs.instances(study, series)
    assert len(sops) == 3
    got = {pacs.retrieve(study, series, s) for s in sops}
    import io

    import pydicom

    def px(b: bytes) -> bytes:
        return pydicom.dcmread(io.BytesIO(b)).PixelData

    assert {px(b) for b in got} == {px(b) for b in blobs}


def test_an_unreachable_pacs_is_transient_and_a_bad_url_is_not(orthanc: LocalOrthanc) -> None:
    from mammoseg.orthanc_local import _free_port
    from tasks.retry import is_transient

    dead = Pacs(f"dicomweb://127.0.0.1:{_free_port()}/dicom-web", Settings(pacs_timeout_s=2))
    with pytest.raises(PacsUnavailable) as info:
        list(dead.studies())
    assert is_transient(info.value)
    with pytest.raises(PacsError, match="answered 404"):
        Pacs(orthanc.pacs_url.replace("/dicom-web", "/no-such-root"), Settings()).series("1.2.3")
    with pytest.raises(PacsError, match="credentials do not belong"):
        Pacs("dicomweb://user:secret@127.0.0.1:1/dicom-web", Settings())


def test_ingest_through_dicomweb_reads_only_image_series(orthanc: LocalOrthanc, prefect_harness, tmp_path, monkeypatch) -> None:
    from flows.ingest import ingest_flow
    from mammoseg.casetable import from_csv_bytes
    from mammoseg.seg import build_seg
    from mammoseg.storage import open_store, open_uri

    monkeypatch.setenv("MAMMOSEG_PSEUDONYM_KEY", "pacs-test-key")
    pacs = _pacs(orthanc)
    blobs = synthetic_study(2, images=2, tag="ingest")
    _upload(pacs, blobs)
    study = _study_uid(blobs[0])
    # a SEG in the study must not be ingested as an image (only the needed series are fetched)
    pacs.store(build_seg(blobs[0], np.zeros((150, 100), bool), model_version="x", pseudonym_key="k").data)
    source = f"{orthanc.pacs_url}/{study}"
    src = open_store(source)
    assert [i.key.count("/") for i in src.list()] == [1, 1]  # <series>/<sop>.dcm below the study
    result = ingest_flow(dataset="dicom", source_url=source, store_url=str(tmp_path / "store"), run_id="r1")
    assert (result.cases, result.rejected, result.objects_found) == (2, 0, 2)
    store, key = open_uri(result.lesions_uri)
    table = from_csv_bytes(store.read_bytes(key))
    assert sorted(table["laterality"]) == ["L", "R"] and set(table["view"]) == {"CC"}
    assert set(table["image_uri"].str.startswith(source + "/")) == {True}
    # the lesion table's URIs are readable like any store's: the bytes come back by WADO-RS
    img_store, img_key = open_uri(table["image_uri"].iloc[0])
    assert img_store.read_bytes(img_key)[128:132] == b"DICM"
    text = store.read_bytes(key).decode()
    assert not any(v in text for v in phi_values(blobs[0]))


def test_watcher_announces_each_stable_study_once(orthanc: LocalOrthanc, tmp_path) -> None:
    from mammoseg.events.pacs_watcher import STUDY_ARRIVED, PacsWatcher

    pacs = _pacs(orthanc)
    sent: list[tuple] = []

    def emit(event, resource, *, payload, occurred, id):
        sent.append((event, resource, payload, id))

    watcher = PacsWatcher(pacs, name="t-watch", pseudonym_key="k", state_file=tmp_path / "w.json", emit=emit)
    _settled(orthanc)
    assert watcher.poll_once() == [] and sent == []  # baseline: what is already there is not new
    base = watcher.load_state()
    blobs = synthetic_study(3, images=2, tag="watch")
    _upload(pacs, blobs)
    _wait_stable(pacs, base)
    announced = watcher.poll_once()
    assert len(announced) == 1 and len(sent) == 1
    event, resource, payload, _ = sent[0]
    assert payload["change_seq"] > base and payload["orthanc_study"] == announced[0].orthanc_study
    assert event == STUDY_ARRIVED and resource["mammoseg.pacs_url"] == orthanc.pacs_url
    assert resource["mammoseg.orthanc_study"] == announced[0].orthanc_study
    assert pacs.study_uid(announced[0].orthanc_study) == _study_uid(blobs[0])
    flat = repr(sent)
    assert _study_uid(blobs[0]) not in flat and not any(v in flat for v in phi_values(blobs[0]))
    assert watcher.poll_once() == [] and len(sent) == 1  # nothing new: nothing announced


def test_watcher_keeps_an_unsent_study_for_the_next_poll(orthanc: LocalOrthanc, tmp_path) -> None:
    from mammoseg.events import EventEmitError
    from mammoseg.events.pacs_watcher import PacsWatcher

    pacs = _pacs(orthanc)
    sent: list = []
    fail = {"on": True}

    def emit(event, resource, *, payload, occurred, id):
        if fail["on"]:
            raise EventEmitError("Prefect down")
        sent.append(id)

    watcher = PacsWatcher(pacs, name="t-retry", pseudonym_key="k", state_file=tmp_path / "w.json", emit=emit)
    _settled(orthanc)
    watcher.poll_once()
    base = watcher.load_state()
    _upload(pacs, synthetic_study(4, tag="retry"))
    _wait_stable(pacs, base)
    with pytest.raises(EventEmitError):
        watcher.poll_once()
    fail["on"] = False
    assert len(watcher.poll_once()) == 1 and len(sent) == 1


def test_inference_on_arrival_stores_a_seg_equal_to_the_png_mask_and_never_a_second(
    orthanc: LocalOrthanc, prefect_harness, tmp_path, monkeypatch
) -> None:
    import cv2

    from flows.infer_on_arrival import infer_on_arrival_flow
    from mammoseg.events.pacs_watcher import PacsWatcher
    from mammoseg.seg import read_seg
    from mammoseg.synth.pacs import publish_spot_model

    monkeypatch.setenv("MAMMOSEG_PSEUDONYM_KEY", "pacs-test-key")
    store_url = str(tmp_path / "store")
    model_uri = publish_spot_model(store_url)
    pacs = _pacs(orthanc)
    events: list[dict] = []
    watcher = PacsWatcher(pacs, name="t-infer", pseudonym_key="k", state_file=tmp_path / "w.json",
                          emit=lambda e, r, **kw: events.append(r))
    _settled(orthanc)
    watcher.poll_once()
    base = watcher.load_state()
    blobs = synthetic_study(5, images=2, tag="infer")
    _upload(pacs, blobs)
    _wait_stable(pacs, base)
    watcher.poll_once()
    (resource,) = [r for r in events]
    params = {"orthanc_study": resource["mammoseg.orthanc_study"], "pacs_url": resource["mammoseg.pacs_url"]}

    first = infer_on_arrival_flow(**params, store_url=store_url)
    assert (first.segmented, first.already_segmented, first.quarantined) == (2, 0, 0)
    assert first.model_version == "20250102T030405Z-5a0b1c2d"
    study = _study_uid(blobs[0])
    segs = [s for s, m in pacs.series(study) if m == "SEG"]
    assert len(segs) == 2  # found in Orthanc by study, one SEG series per image
    # the pseudonymous SEGs form a study of their own in Orthanc: stable, but not announced
    _wait_stable(pacs, watcher.load_state())
    assert watcher.poll_once() == [] and len(events) == 1

    # read back each SEG and compare with what `mammoseg predict` writes for the same image
    from typer.testing import CliRunner

    from mammoseg.cli import app

    src = tmp_path / "in"
    src.mkdir()
    for i, b in enumerate(blobs):
        (src / f"img{i}.dcm").write_bytes(b)
    res = CliRunner().invoke(app, ["predict", "--model", model_uri, "--input", str(src), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    import io

    import pydicom

    by_sop = {str(pydicom.dcmread(io.BytesIO(b)).SOPInstanceUID): i for i, b in enumerate(blobs)}
    for seg_series in segs:
        (sop,) = pacs.instances(study, seg_series)
        back = read_seg(pacs.retrieve(study, seg_series, sop))
        (ref,) = back.referenced
        i = by_sop[ref[2]]
        png = cv2.imread(str(tmp_path / "out" / f"img{i}_mask.png"), cv2.IMREAD_UNCHANGED) > 0
        assert png.any() and not png.all()
        assert np.array_equal(back.mask, png)
        assert ref[0] == study and back.study_uid == study and back.segment_labels == ("lesion",)
        assert back.algorithm == ("mammoseg", "20250102T030405Z-5a0b1c2d")
        local = read_seg((tmp_path / "out" / f"img{i}_seg.dcm").read_bytes())
        assert np.array_equal(local.mask, back.mask)

    # the study is announced again: a second run stores no second SEG
    again = infer_on_arrival_flow(**params, store_url=store_url)
    assert (again.segmented, again.already_segmented) == (0, 2)
    assert len([s for s, m in pacs.series(study) if m == "SEG"]) == 2
    report = Path(again.report_uri.removeprefix("file://")).read_text()
    assert study not in report and not any(v in report for v in phi_values(blobs[0]))


def test_a_bad_instance_is_quarantined_and_the_study_goes_on(orthanc: LocalOrthanc, prefect_harness, tmp_path, monkeypatch) -> None:
    from flows.infer_on_arrival import infer_on_arrival_flow
    from mammoseg.dicom import write_dicom
    from mammoseg.synth.pacs import publish_spot_model

    monkeypatch.setenv("MAMMOSEG_PSEUDONYM_KEY", "pacs-test-key")
    store_url = str(tmp_path / "store")
    publish_spot_model(store_url)
    pacs = _pacs(orthanc)
    base = pacs.last_change()
    good = synthetic_study(6, tag="bad")
    study = _study_uid(good[0])
    import io

    import pydicom

    ds = pydicom.dcmread(io.BytesIO(good[0]))
    # same study and series, no pixel data: a header-only object the PACS accepts but we cannot use
    header_only = write_dicom(np.zeros((4, 4), np.uint16), study_uid=study, series_uid=str(ds.SeriesInstanceUID),
                              instance_number=9, modality="MG", with_pixel_data=False,
                              patient_id=str(ds.PatientID), patient_name=str(ds.PatientName))
    _upload(pacs, [*good, header_only])
    deadline = time.monotonic() + 30
    mine: list = []
    while not mine and time.monotonic() < deadline:
        mine = [c for c in _wait_stable(pacs, base) if pacs.study_uid(c.resource_id) == study]
        time.sleep(0.3)
    (stable,) = mine
    result = infer_on_arrival_flow(orthanc_study=stable.resource_id, pacs_url=orthanc.pacs_url, store_url=store_url)
    assert (result.segmented, result.quarantined) == (1, 1)
    assert "no pixel data" in result.quarantine[0]["reason"] and result.quarantine[0]["case_id"].startswith("cs-")
    assert len(pacs.instances(study, str(ds.SeriesInstanceUID))) == 2  # the source is untouched


def test_predict_reads_a_pacs_study_and_names_outputs_by_pseudonym(orthanc: LocalOrthanc, tmp_path, monkeypatch) -> None:
    import json

    from typer.testing import CliRunner

    from mammoseg.cli import app
    from mammoseg.seg import read_seg
    from mammoseg.synth.pacs import publish_spot_model

    monkeypatch.setenv("MAMMOSEG_PSEUDONYM_KEY", "pacs-test-key")
    model = publish_spot_model(str(tmp_path / "store"))
    pacs = _pacs(orthanc)
    blobs = synthetic_study(7, images=2, tag="predict")
    _upload(pacs, blobs)
    study = _study_uid(blobs[0])
    res = CliRunner().invoke(app, ["predict", "--model", model, "--source", f"{orthanc.pacs_url}/{study}",
                                   "--out", str(tmp_path / "out"), "--json"])
    assert res.exit_code == 0, res.output
    results = json.loads(res.stdout)["results"]
    assert len(results) == 2 and all(Path(r["image"]).name.startswith("cs-") for r in results)
    assert study not in res.stdout and not any(study in p.name for p in (tmp_path / "out").iterdir())
    assert {read_seg(Path(r["seg"]).read_bytes()).study_uid for r in results} == {study}
    dead = CliRunner().invoke(app, ["predict", "--model", model, "--source", "dicomweb://127.0.0.1:1/dicom-web",
                                    "--out", str(tmp_path / "o2")])
    assert dead.exit_code == 2 and "cannot read --source dicomweb://127.0.0.1:1/dicom-web" in dead.stderr
