"""The run catalog: every artifact round-trips with its schema; a second read downloads nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from mammoseg import catalog as cat
from mammoseg.catalog import CatalogError, RunCatalog, catalog_of
from mammoseg.plan import ModelPlan
from mammoseg.preprocess.params import PreprocessParams
from mammoseg.runreport import QuarantineRecord, RunReport
from mammoseg.settings import Settings
from mammoseg.storage import LocalStore


class CountingStore(LocalStore):
    """A real local store that counts downloads (GETs) per key."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gets: dict[str, int] = {}

    def _open(self, key: str):
        self.gets[key] = self.gets.get(key, 0) + 1
        return super()._open(key)


@pytest.fixture(autouse=True)
def _fresh_cache(fresh_catalog_cache):
    """Every test here starts with an empty catalog cache (tests/unit/conftest.py)."""


@pytest.fixture()
def run(tmp_path: Path) -> RunCatalog:
    return RunCatalog(CountingStore(tmp_path / "store"), "r1", Settings(work_dir=tmp_path / "work"))


def _manifest() -> pd.DataFrame:
    # ids and digests that look like numbers must come back as text
    return pd.DataFrame({
        "case_id": ["0012", "C2"], "patient_id": ["007", "P2"], "npz_key": ["pre/a.npz", "pre/b.npz"],
        "npz_etag": ["123", "abc"], "params_digest": ["0042", "0042"], "n_lesions": [1, 0],
    })


def test_keys_are_layouts(run: RunCatalog) -> None:
    assert run.manifest_key() == "runs/r1/preprocessed.csv"
    assert run.split_key() == "runs/r1/split.csv"
    assert run.model_key() == "runs/r1/model/model.keras"
    assert run.plan_key() == "runs/r1/model/plan.json"
    assert run.metrics_key("heldout-x") == "runs/r1/evaluation/heldout-x.json"
    assert run.overlays_key("heldout-x") == "runs/r1/evaluation/heldout-x-overlays.png"
    assert run.report_key() == "runs/r1/report.json"
    assert run.report_key("ingest") == "runs/r1/report-ingest.json"
    assert run.quarantine_key("preprocess") == "runs/r1/quarantine/preprocess.jsonl"
    assert run.lesions_key("validated") == "runs/r1/lesions-validated.csv"


def test_manifest_round_trip_keeps_text_columns(run: RunCatalog) -> None:
    uri = run.write_manifest(_manifest())
    assert uri == run.uri("runs/r1/preprocessed.csv")
    back = run.read_manifest()
    assert back["case_id"].tolist() == ["0012", "C2"]
    assert back["patient_id"].tolist() == ["007", "P2"]
    assert back["params_digest"].tolist() == ["0042", "0042"]
    assert back["n_lesions"].tolist() == [1, 0]
    assert [r.npz_etag for r in cat.manifest_rows(back)] == ["123", "abc"]


def test_second_read_downloads_nothing_and_returns_a_copy(run: RunCatalog) -> None:
    run.write_manifest(_manifest())
    first = run.read_manifest()
    first.loc[0, "case_id"] = "changed by the caller"
    second = run.read_manifest()
    assert second["case_id"].tolist() == ["0012", "C2"]  # the cache was not changed by the caller
    assert run.store.gets["runs/r1/preprocessed.csv"] == 1
    # by URI (as tasks pass them), the same cache
    cat.read_manifest(run.uri(run.manifest_key()))
    assert run.store.gets["runs/r1/preprocessed.csv"] == 1


def test_a_changed_object_is_read_again(run: RunCatalog) -> None:
    run.write_manifest(_manifest())
    run.read_manifest()
    # rewritten behind the catalog's back (another process): the ETag differs, so it is read again
    run.store.write_bytes(run.manifest_key(), _manifest().head(1).to_csv(index=False).encode())
    assert len(run.read_manifest()) == 1
    assert run.store.gets["runs/r1/preprocessed.csv"] == 2


def test_split_round_trip_and_bad_split(run: RunCatalog) -> None:
    table = pd.DataFrame({"case_id": ["1", "2", "3"], "patient_id": ["p", "q", "r"], "dataset": ["d"] * 3,
                          "split": ["train", "val", "test"]})
    run.write_split(table)
    pd.testing.assert_frame_equal(run.read_split(), table)
    run.read_split()
    assert run.store.gets["runs/r1/split.csv"] == 1
    with pytest.raises(CatalogError, match="not \\['train', 'val', 'test'\\]"):
        run.write_split(table.assign(split=["train", "holdout", "test"]))


def test_manifest_without_its_columns_is_refused(run: RunCatalog) -> None:
    with pytest.raises(CatalogError, match=r"lacks column\(s\) \['npz_etag'\]"):
        run.write_manifest(_manifest().drop(columns=["npz_etag"]))
    run.store.write_bytes(run.manifest_key(), b"case_id,patient_id\n1,2\n")
    with pytest.raises(CatalogError, match="lacks column"):
        run.read_manifest()


def test_model_and_plan_round_trip_download_once(run: RunCatalog, tmp_path: Path) -> None:
    model = tmp_path / "m.keras"
    model.write_bytes(b"not really a model, but bytes to keep")
    plan = ModelPlan(preprocess=PreprocessParams(size=64), threshold=0.35)
    model_uri, plan_uri = run.write_model(model, plan)
    assert model_uri.endswith("runs/r1/model/model.keras") and plan_uri.endswith("runs/r1/model/plan.json")
    assert run.read_plan() == plan
    a, b = run.model_file(), run.model_file()
    assert a == b and a.read_bytes() == model.read_bytes()
    _, _, c = cat.model_file(model_uri, run.settings)  # by URI, from another store object
    assert c.read_bytes() == model.read_bytes()
    assert run.store.gets["runs/r1/model/model.keras"] == 1
    model.write_bytes(b"a new model")
    run.write_model(model, plan)
    assert run.model_file().read_bytes() == b"a new model"


def test_metrics_report_quarantine_lesions_round_trip(run: RunCatalog) -> None:
    metrics = {"dice_mean": 0.5, "ci95": {"dice_mean": [0.4, 0.6]}, "n_cases": 3}
    run.write_metrics("heldout-x", metrics)
    assert run.read_metrics("heldout-x") == metrics
    records = [QuarantineRecord(stage="preprocess", reason="truncated PNG", case_id="C1", source="raw/a.png")]
    run.write_quarantine("preprocess", records)
    assert run.read_quarantine("preprocess") == records
    assert run.read_quarantine("pairing") == []
    report = RunReport(run_id="r1", dataset="d", source_url="s", store_url="t", cases_found=2, quarantined=records)
    run.write_report(report)
    back = run.read_report()
    assert back.cases_found == 2 and back.quarantined[0].reason == "truncated PNG"
    assert back.quarantined[0].source is None  # the shareable report keeps no source key
    with pytest.raises(CatalogError, match="does not belong"):
        run.write_report(RunReport(run_id="r2", dataset="d", source_url="s", store_url="t"))
    lesions = pd.DataFrame({"case_id": ["C1"], "patient_id": ["P1"], "lesion_id": [1], "image_uri": ["file:///x.png"]})
    from mammoseg.casetable import conform

    run.write_lesions(conform(lesions), "validated")
    assert run.read_lesions("validated")["case_id"].tolist() == ["C1"]
    assert cat.read_lesions(run.uri(run.lesions_key("validated")))["patient_id"].tolist() == ["P1"]
    assert run.store.gets["runs/r1/lesions-validated.csv"] == 1
    assert json.loads(run.store.read_bytes(run.metrics_key("heldout-x"))) == metrics


@pytest.mark.parametrize("uri", [
    "file:///tmp/x/preprocessed.csv", "file:///tmp/runs/", "s3://bucket/runs//split.csv", "file:///tmp/runs/r1",
])
def test_a_uri_outside_any_run_is_refused(uri: str) -> None:
    with pytest.raises(CatalogError, match="names no run"):
        catalog_of(uri)


def test_catalog_of_finds_store_and_run(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    catalog, key = catalog_of(store.uri("runs/2026-x/evaluation/trained-on.csv"))
    assert catalog.run_id == "2026-x" and key == "runs/2026-x/evaluation/trained-on.csv"
    assert catalog.store.uri("") == store.uri("")


def test_patient_index_needs_only_ids(run: RunCatalog) -> None:
    run.store.write_bytes(run.manifest_key(), b"case_id,patient_id\n0001,007\n0001,007\nC2,P2\n")
    assert run.read_patients().to_dict() == {"0001": "007", "C2": "P2"}


def test_build_manifest_keeps_no_source_uri(run: RunCatalog) -> None:
    images = pd.DataFrame({"case_id": ["C1", "C2"], "patient_id": ["P1", "P2"], "image_uri": ["s3://b/Mass_P_00001/x.dcm"] * 2,
                           "mask_uris": [["s3://b/m.png"], []], "mask_geometries": [[], ['{"type": "circle"}']],
                           "abnormality_types": [["mass"], []], "pathology": ["BENIGN", "NORMAL"]})
    records = pd.DataFrame({"case_id": ["C2"], "npz_key": ["pre/2.npz"], "npz_etag": ["e2"], "params_digest": ["d"],
                            "pathology": ["ignored: the image table's"]})
    manifest = cat.build_manifest(images, records)
    assert manifest.to_dict("records") == [{
        "case_id": "C2", "patient_id": "P2", "mask_geometries": '["{\\"type\\": \\"circle\\"}"]',
        "abnormality_types": "[]", "pathology": "NORMAL", "npz_key": "pre/2.npz", "npz_etag": "e2", "params_digest": "d",
    }]
    assert "image_uri" in images.columns  # the caller's table is unchanged
    run.write_manifest(manifest)
    assert run.read_manifest()["patient_id"].tolist() == ["P2"]


def test_cache_on_a_real_s3_endpoint(s3_bucket: str, tmp_path: Path) -> None:
    """Same on S3 (the moto server over HTTP): the second read is a HEAD, not a GET."""
    from mammoseg.settings import get_settings
    from mammoseg.storage import S3Store

    class CountingS3(S3Store):
        gets = 0

        def _open(self, key: str):
            CountingS3.gets += 1
            return super()._open(key)

    settings = get_settings(work_dir=tmp_path / "work")
    run = RunCatalog(CountingS3(s3_bucket, "pipeline", settings=settings), "r1", settings)
    run.write_manifest(_manifest())
    assert run.read_manifest()["case_id"].tolist() == ["0012", "C2"]
    assert run.read_manifest()["case_id"].tolist() == ["0012", "C2"]
    model = tmp_path / "m.keras"
    model.write_bytes(b"bytes of a model")
    run.write_model(model, ModelPlan(preprocess=PreprocessParams(size=64)))
    assert run.model_file().read_bytes() == run.model_file().read_bytes() == b"bytes of a model"
    assert CountingS3.gets == 2  # one manifest, one model


def test_the_model_cache_is_bounded_least_recently_used_first(tmp_path: Path) -> None:
    import os
    import time

    store = CountingStore(tmp_path / "store")
    settings = Settings(work_dir=tmp_path / "work", object_cache_mib=1)  # room for two 400 KiB models
    paths = []
    for i in range(2):
        store.write_bytes(f"models/v{i}/model.keras", bytes([i]) * 400 * 1024)
        paths.append(cat.cached_file(store, f"models/v{i}/model.keras", settings))
        old = time.time() - 3600 + i  # v0 used longest ago; both outside the grace period
        os.utime(paths[-1].parent, (old, old))
    assert cat.cached_file(store, "models/v0/model.keras", settings) == paths[0]  # a hit: v0 is now the newest
    store.write_bytes("models/v2/model.keras", b"\x02" * 400 * 1024)
    newest = cat.cached_file(store, "models/v2/model.keras", settings)  # 1.2 MiB > 1 MiB: one must go
    assert newest.exists() and paths[0].exists()
    assert not paths[1].parent.exists()  # the least recently used
    assert store.gets["models/v0/model.keras"] == 1


def test_eviction_keeps_what_was_used_recently(tmp_path: Path) -> None:
    root = tmp_path / "objects"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        (root / name / "model.keras").write_bytes(b"x" * 1000)
    assert cat.evict_objects(root, 0) == []  # both used just now: kept
    assert sorted(p.name for p in cat.evict_objects(root, 0, now=time_in(3600))) == ["a", "b"]
    assert cat.evict_objects(root, 10_000, now=time_in(3600)) == []


def time_in(seconds: float) -> float:
    import time

    return time.time() + seconds
